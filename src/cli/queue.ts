/**
 * `gosmtp-dup queue list|retry|delete|flush`: the spool as a mail administrator sees it, like
 * Postfix's mailq / postqueue -f / postsuper -d. Works beside a running router: the router owns
 * delivery, these commands read the spool and ask it (through the spool folder) to act.
 */
import { existsSync } from 'node:fs';
import { loadConfig } from '../core/config/load.ts';
import type { Config } from '../core/config/schema.ts';
import { silentLogger } from '../core/logger.ts';
import { LogSpool } from '../core/spool/log-spool.ts';
import { acquireSpoolLock, spoolOwner } from '../core/spool/lock.ts';
import { copyRecipients, type CopyJob } from '../core/spool/types.ts';
import { CopyWorker } from '../core/spool/worker.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { UsageError } from './usage.ts';

const USAGE = 'usage: gosmtp-dup queue list|retry [ID]|delete ID|requeue [ID]|flush [--config FILE]';
const ACTIONS = new Set(['list', 'retry', 'delete', 'requeue', 'flush']);

export async function queueCommand(args: string[], options: { configFile?: string; json: boolean }): Promise<number> {
  const [action, id] = args;
  checkUsage(action, id);
  const { config } = await loadConfig({ file: options.configFile });
  // Opening a spool creates it: a mistyped queue.dir (or a missing SMTP_DUP_QUEUE_DIR) must
  // show as "no spool here", not as a new empty one.
  if (!existsSync(config.queue.dir)) return noSpool(config.queue.dir, action, id, options.json);
  // Changes go through the running router, if there is one; otherwise this process takes the
  // spool's lock for them, so that no router starts meanwhile.
  const router = await spoolOwner(config.queue.dir);
  const lock = router === undefined && (action === 'delete' || action === 'requeue' || action === 'flush') ? await acquireSpoolLock(config.queue.dir) : undefined;
  const spool = new LogSpool(config.queue.dir, silentLogger());
  await spool.open({ owner: lock !== undefined });
  try {
    return await act(spool, config, action, id, router, options.json);
  } finally {
    await spool.close();
    await lock?.release();
  }
}

/** Before the configuration is read or the spool opened: a mistyped command must touch nothing. */
function checkUsage(action: string | undefined, id: string | undefined): void {
  if (action === undefined) throw new UsageError(`queue: which action? ${USAGE}`);
  if (!ACTIONS.has(action)) throw new UsageError(`queue: unknown action "${action}"; ${USAGE}`);
  if (action === 'delete' && !id) throw new UsageError(`queue delete: which message? ${USAGE}`);
}

async function act(spool: LogSpool, config: Config, action: string | undefined, id: string | undefined, router: number | undefined, json: boolean): Promise<number> {
  switch (action) {
    case 'list':
      return list(spool, json);
    case 'retry': {
      const count = await spool.retryNow(id);
      if (id !== undefined && count === 0) return fail(`no pending copies for message ${id}`);
      process.stdout.write(`${count} cop${count === 1 ? 'y' : 'ies'} due now\n`);
      return 0;
    }
    case 'delete': {
      // checkUsage has made sure there is an ID.
      if (!(await spool.remove(id!))) return fail(`no message ${id} in the queue`);
      process.stdout.write(`deleted ${id}\n`);
      return 0;
    }
    case 'requeue': {
      const count = await spool.requeueDead(id);
      if (id !== undefined && count === 0) return fail(`no dead letters for message ${id}`);
      const how = router === undefined ? 'the next start of the router delivers them' : `the running router (pid ${router}) delivers them now`;
      process.stdout.write(`requeued ${count} dead cop${count === 1 ? 'y' : 'ies'}; ${how}\n`);
      return 0;
    }
    default: // 'flush': checkUsage lets no other action through
      return flush(spool, config, router);
  }
}

/** Nothing queued, since there is no spool at all; says where it looked. */
function noSpool(dir: string, action: string | undefined, id: string | undefined, json: boolean): number {
  if (action === 'delete') return fail(`no message ${id} in the queue: no spool at ${dir}`);
  if (action === 'retry' && id !== undefined) return fail(`no pending copies for message ${id}: no spool at ${dir}`);
  if (action === 'requeue' && id !== undefined) return fail(`no dead letters for message ${id}: no spool at ${dir}`);
  if (json && action === 'list') process.stdout.write(`${JSON.stringify({ pending: [], dead: [] }, null, 2)}\n`);
  else process.stdout.write(`queue is empty: no spool at ${dir}\n`);
  return 0;
}

function fail(message: string): number {
  process.stderr.write(`gosmtp-dup: ${message}\n`);
  return 1;
}

function row(job: CopyJob) {
  const { record, state } = job;
  return {
    id: record.id,
    destination: record.copies[job.index]!.destination,
    sender: record.sender.address,
    recipients: copyRecipients(job).map((r) => r.address),
    size: record.size,
    queuedAt: new Date(record.createdAt).toISOString(),
    attempts: state.attempts,
    nextAttempt: state.nextAttemptAt > Date.now() ? new Date(state.nextAttemptAt).toISOString() : 'now',
    lastError: state.lastError ?? '',
  };
}

async function list(spool: LogSpool, json: boolean): Promise<number> {
  const retrying = await spool.retryRequested();
  const rows = spool.pending().map((job) => ({ ...row(job), ...(retrying && { nextAttempt: 'now (retry requested)' }) }));
  const dead = await spool.deadLetters();
  if (json) {
    process.stdout.write(`${JSON.stringify({ pending: rows, dead }, null, 2)}\n`);
    return 0;
  }
  if (rows.length === 0) process.stdout.write('queue is empty\n');
  for (const r of rows) {
    process.stdout.write(
      `${r.id}  ${r.destination}  ${r.size} bytes  queued ${r.queuedAt}\n` +
        `    from <${r.sender}> to ${r.recipients.map((a) => `<${a}>`).join(' ')}\n` +
        `    attempts ${r.attempts}, next ${r.nextAttempt}${r.lastError ? `, last error: ${r.lastError}` : ''}\n`,
    );
  }
  const byDestination = new Map<string, number>();
  for (const r of rows) byDestination.set(r.destination, (byDestination.get(r.destination) ?? 0) + 1);
  for (const [destination, count] of byDestination) process.stdout.write(`-- ${destination}: ${count} pending\n`);
  if (dead.length > 0) process.stdout.write(`-- ${dead.length} dead letter${dead.length === 1 ? '' : 's'} (see ${'queue.dir'}/dead)\n`);
  return 0;
}

/** With a router running: ask it to retry. Without: deliver here, holding the spool's lock. */
async function flush(spool: LogSpool, config: Config, router: number | undefined): Promise<number> {
  const keys = new Set(spool.pending().map((j) => `${j.record.id}.${j.index}`));
  const started = Date.now();
  await spool.retryNow();
  if (router !== undefined) {
    process.stdout.write(`asked the running router (pid ${router}) to deliver ${keys.size} pending cop${keys.size === 1 ? 'y' : 'ies'} now\n`);
    return 0;
  }
  const stack = deliveryStack(config, silentLogger());
  const worker = new CopyWorker(spool, stack.pool, stack.worker, silentLogger());
  const attempted = () => spool.pending().filter((j) => keys.has(`${j.record.id}.${j.index}`) && (j.state.lastAttemptAt ?? 0) < started).length === 0;
  worker.start();
  while (!attempted()) await new Promise((resolve) => setTimeout(resolve, 100));
  await worker.stop();
  stack.pool.close();
  const left = spool.pending().length;
  process.stdout.write(`attempted ${keys.size} cop${keys.size === 1 ? 'y' : 'ies'}: ${keys.size - Math.min(left, keys.size)} finished, ${left} still pending\n`);
  return 0;
}
