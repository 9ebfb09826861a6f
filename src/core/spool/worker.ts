/**
 * Delivers spooled copies, each to its destination, independently of the others.
 * 4xx and connection trouble: retry with exponential backoff. 5xx, or a copy older than
 * `maxAgeMs`: dead letter with the reason. Each attempt's outcome is recorded before the next.
 */
import type { Logger } from 'pino';
import type { Destination } from '../destination.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { formatReply, replyClass } from '../replies.ts';
import { ErrorCodes, isGsdError } from '../errors.ts';
import { UpstreamTransaction, type DeliveryTransaction, type TransactionTimeouts } from '../upstream/transaction.ts';
import type { DeliveryEvents } from '../observability/events.ts';
import type { UpstreamPool } from '../upstream/pool.ts';
import { copyRecipients, type CopyJob, type CopyOutcome, type Spool } from './types.ts';

export interface WorkerOptions extends TransactionTimeouts {
  /** A copy's destination from the spool record (configured destinations keep their TLS, credentials, limits). */
  resolve: (copy: { destination: string; name?: string }) => Destination | string;
  retryInitialMs: number;
  retryMaxMs: number;
  maxAgeMs: number;
  /** Copies in flight at once, across destinations. */
  concurrency: number;
  /**
   * Copies in flight at once to any one destination: a slow or hanging backup can hold only
   * these, and the others keep theirs (as Postfix's per-destination concurrency limit).
   */
  destinationConcurrency: number;
}

/** The destination a copy goes to, as its record names it (a configured name, or host:port). */
function destinationOf(job: CopyJob): string {
  const copy = job.record.copies[job.index]!;
  return copy.name ?? copy.destination;
}

/** How soon a copy is tried again when its destination is at its connection or rate limit. */
const BUSY_RETRY_MS = 1000;

export class CopyWorker {
  readonly #spool: Spool;
  readonly #pool: UpstreamPool;
  readonly #options: WorkerOptions;
  readonly #log: Logger;
  readonly #inFlight = new Map<string, Promise<void>>();
  /** Copies in flight, by destination. */
  readonly #perDestination = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;

  readonly #events: DeliveryEvents | undefined;

  constructor(spool: Spool, pool: UpstreamPool, options: WorkerOptions, log: Logger, events?: DeliveryEvents) {
    this.#events = events;
    this.#spool = spool;
    this.#pool = pool;
    this.#options = options;
    this.#log = log;
    spool.onDue(() => this.kick());
  }

  start(): void {
    this.#stopped = false;
    this.kick();
  }

  /** Looks for due copies now. */
  kick(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#tick(), 0);
  }

  #tick(): void {
    if (this.#stopped) return;
    const now = Date.now();
    let nextDue = Infinity;
    const due: CopyJob[] = [];
    const perDestination = new Map(this.#perDestination);
    for (const job of this.#spool.jobs()) {
      const key = `${job.record.id}.${job.index}`;
      if (this.#inFlight.has(key)) continue;
      if (job.state.nextAttemptAt > now) {
        nextDue = Math.min(nextDue, job.state.nextAttemptAt);
        continue;
      }
      if (this.#inFlight.size + due.length >= this.#options.concurrency) break;
      // At its own limit, this destination waits; copies to the others go ahead of it.
      const destination = destinationOf(job);
      const busy = perDestination.get(destination) ?? 0;
      if (busy >= this.#options.destinationConcurrency) continue;
      perDestination.set(destination, busy + 1);
      due.push(job);
    }
    // Started after the scan: an attempt may change the spool's list.
    for (const job of due) {
      const key = `${job.record.id}.${job.index}`;
      const destination = destinationOf(job);
      this.#perDestination.set(destination, (this.#perDestination.get(destination) ?? 0) + 1);
      const run = this.#attempt(job).finally(() => {
        this.#inFlight.delete(key);
        const left = this.#perDestination.get(destination)! - 1;
        if (left > 0) this.#perDestination.set(destination, left);
        else this.#perDestination.delete(destination);
        this.kick();
      });
      this.#inFlight.set(key, run);
    }
    if (nextDue !== Infinity && this.#inFlight.size < this.#options.concurrency) {
      clearTimeout(this.#timer);
      // Timers beyond ~24 days overflow; the next tick re-arms.
      this.#timer = setTimeout(() => this.#tick(), Math.min(nextDue - now, 2 ** 30));
      this.#timer.unref();
    }
  }

  async #attempt(job: CopyJob): Promise<void> {
    const { record } = job;
    const copy = record.copies[job.index]!;
    const attempt = job.state.attempts + 1;
    // `gosmtp-dup queue delete` removes a message under the running router: forget it quietly.
    if (!(await this.#spool.stillQueued(job))) return;
    let outcome: CopyOutcome;
    const started = Date.now();
    try {
      outcome = await this.#deliver(job);
    } catch (err) {
      // At its connection or rate limit: try again shortly, without counting an attempt or
      // holding one of the worker's slots (other destinations go on meanwhile).
      if (isGsdError(err, ErrorCodes.DESTINATION_BUSY)) return this.#spool.postpone(job, Date.now() + BUSY_RETRY_MS);
      // Its circuit is open: nothing was tried, so no attempt is counted and the backoff does not
      // grow; the copy waits for the circuit's probe (or, while another copy probes, a moment).
      if (isGsdError(err, ErrorCodes.CIRCUIT_OPEN)) {
        const destination = this.#options.resolve(copy);
        const probeAt = typeof destination === 'string' ? 0 : this.#pool.health.probeAt(destination);
        return this.#spool.postpone(job, Math.max(probeAt, Date.now() + BUSY_RETRY_MS));
      }
      outcome = this.#retryAll(job, (err as Error).message);
    }
    const log = {
      id: record.id,
      destination: copy.destination,
      attempt,
      recipients: copyRecipients(job).length,
      dead: outcome.dead?.recipients.length ?? 0,
      retry: outcome.retry?.recipients.length ?? 0,
      verdict: outcome.retry?.error ?? outcome.dead?.reason ?? 'delivered',
      nextRetry: outcome.retry ? new Date(outcome.retry.nextAttemptAt).toISOString() : undefined,
    };
    if (outcome.retry) this.#log.warn(log, 'copy deferred');
    else if (outcome.dead) this.#log.warn(log, 'copy failed');
    else this.#log.info(log, 'copy delivered');
    const seconds = (Date.now() - started) / 1000;
    const event = { id: record.id, destination: copy.destination, kind: 'copy', seconds } as const;
    if (outcome.dead) this.#events?.delivery({ ...event, outcome: 'failed', reason: outcome.dead.reason, recipients: outcome.dead.recipients.map((r) => r.address) });
    if (outcome.retry) this.#events?.delivery({ ...event, outcome: 'deferred', reason: outcome.retry.error });
    const delivered = copyRecipients(job).length - (outcome.dead?.recipients.length ?? 0) - (outcome.retry?.recipients.length ?? 0);
    if (delivered > 0) this.#events?.delivery({ ...event, outcome: 'delivered' });
    try {
      await this.#spool.settle(job, outcome);
    } catch (err) {
      // The state stays as it was: the copy is attempted again (at-least-once, never lost), but
      // not at once: a spool that cannot be written would otherwise resend in a tight loop.
      this.#log.error({ id: record.id, destination: copy.destination, err: (err as Error).message }, 'cannot record copy outcome');
      this.#spool.postpone(job, Date.now() + this.#backoffMs(job.state.attempts + 1));
    }
  }

  async #deliver(job: CopyJob): Promise<CopyOutcome> {
    const { record } = job;
    const destination = this.#options.resolve(record.copies[job.index]!);
    if (typeof destination === 'string') return { dead: { recipients: copyRecipients(job), reason: `invalid destination: ${destination}` } };
    const recipients = copyRecipients(job);
    const { tx, reply } = await UpstreamTransaction.begin(this.#pool, [destination], record.sender, this.#options);
    if (!tx) return this.#classifyAll(job, recipients, `MAIL: ${formatReply(reply)}`, replyClass(reply) === 'reject');
    try {
      return await this.#send(job, tx, recipients);
    } catch (err) {
      tx.destroy(); // releases the destination's connection slot, whatever failed
      throw err;
    }
  }

  async #send(job: CopyJob, tx: DeliveryTransaction, recipients: readonly EnvelopeAddress[]): Promise<CopyOutcome> {
    const { record } = job;

    const accepted: EnvelopeAddress[] = [];
    const refused: EnvelopeAddress[] = [];
    const deferred: EnvelopeAddress[] = [];
    const refusedWhy: string[] = [];
    const deferredWhy: string[] = [];
    // All recipients at once: with a server that pipelines, MAIL, RCPTs and DATA are one write.
    const verdicts = await tx.rcptAll(recipients);
    for (const [index, recipient] of recipients.entries()) {
      const verdict = verdicts[index]!;
      if (verdict.command === 'MAIL') {
        // MAIL FROM went out with the first RCPT TO and was refused: it speaks for every recipient.
        tx.abort();
        return this.#classifyAll(job, recipients, `MAIL: ${formatReply(verdict)}`, replyClass(verdict) === 'reject');
      }
      const kind = replyClass(verdict);
      if (kind === 'success') accepted.push(recipient);
      else if (kind === 'reject') {
        refused.push(recipient);
        refusedWhy.push(`RCPT <${recipient.address}>: ${formatReply(verdict)}`);
      } else {
        deferred.push(recipient);
        deferredWhy.push(`RCPT <${recipient.address}>: ${formatReply(verdict)}`);
      }
    }
    if (accepted.length === 0) {
      tx.abort();
      return this.#outcome(job, refused, refusedWhy.join('; '), deferred, deferredWhy.join('; '));
    }
    let final;
    try {
      // Opened on 354 only, and always closed: a refused DATA must not leak a file descriptor.
      final = await tx.data(() => this.#spool.cachedBody(record.id) ?? this.#spool.openBody(record.id));
    } catch (err) {
      return this.#outcome(job, refused, refusedWhy.join('; '), [...accepted, ...deferred], (err as Error).message);
    }
    if (final.perRecipient?.length === accepted.length) {
      // LMTP: each accepted recipient has its own verdict; only those deferred are tried again.
      for (const [index, recipient] of accepted.entries()) {
        const verdict = final.perRecipient[index]!;
        const why = `DATA <${recipient.address}>: ${formatReply(verdict)}`;
        if (replyClass(verdict) === 'reject') {
          refused.push(recipient);
          refusedWhy.push(why);
        } else if (replyClass(verdict) === 'tempfail') {
          deferred.push(recipient);
          deferredWhy.push(why);
        }
      }
      return this.#outcome(job, refused, refusedWhy.join('; '), deferred, deferredWhy.join('; '));
    }
    const dataWhy = `DATA: ${formatReply(final)}`;
    switch (replyClass(final)) {
      case 'success':
        return this.#outcome(job, refused, refusedWhy.join('; '), deferred, deferredWhy.join('; '));
      case 'reject':
        return this.#outcome(job, [...refused, ...accepted], [...refusedWhy, dataWhy].join('; '), deferred, deferredWhy.join('; '));
      default:
        return this.#outcome(job, refused, refusedWhy.join('; '), [...accepted, ...deferred], dataWhy);
    }
  }

  /** Builds an outcome; retries that exceeded the maximum age become dead letters. */
  #outcome(job: CopyJob, dead: EnvelopeAddress[], deadReason: string, retry: EnvelopeAddress[], retryError: string): CopyOutcome {
    const age = Date.now() - job.record.createdAt;
    const outcome: { dead?: CopyOutcome['dead']; retry?: CopyOutcome['retry'] } = {};
    if (retry.length > 0 && age >= this.#options.maxAgeMs) {
      dead = [...dead, ...retry];
      deadReason = [deadReason, `expired after ${job.state.attempts + 1} attempts: ${retryError}`].filter(Boolean).join('; ');
      retry = [];
    }
    if (dead.length > 0) outcome.dead = { recipients: dead, reason: deadReason };
    if (retry.length > 0) outcome.retry = { recipients: retry, error: retryError, nextAttemptAt: Date.now() + this.#backoffMs(job.state.attempts + 1) };
    return outcome;
  }

  #classifyAll(job: CopyJob, recipients: readonly EnvelopeAddress[], reason: string, permanent: boolean): CopyOutcome {
    return permanent ? this.#outcome(job, [...recipients], reason, [], '') : this.#outcome(job, [], '', [...recipients], reason);
  }

  #retryAll(job: CopyJob, error: string): CopyOutcome {
    return this.#outcome(job, [], '', [...copyRecipients(job)], error);
  }

  #backoffMs(attempts: number): number {
    const { retryInitialMs, retryMaxMs } = this.#options;
    return Math.min(retryMaxMs, retryInitialMs * 2 ** Math.min(attempts - 1, 30));
  }

  /** Stops taking new copies and waits for the ones in flight. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await Promise.allSettled(this.#inFlight.values());
  }
}
