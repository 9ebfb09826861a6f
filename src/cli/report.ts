/**
 * `gosmtp-dup report [--days N] [--json]`: the migration report, from the spool and its journal.
 */
import { existsSync } from 'node:fs';
import { loadConfig } from '../core/config/load.ts';
import { silentLogger } from '../core/logger.ts';
import { buildReport } from '../core/report/report.ts';
import { LogSpool } from '../core/spool/log-spool.ts';

export async function reportCommand(options: { configFile?: string; days?: string; json: boolean }): Promise<number> {
  const days = options.days === undefined ? undefined : Number(options.days);
  if (days !== undefined && !(days > 0)) {
    process.stderr.write(`gosmtp-dup: --days: expected a positive number, got "${options.days}"\n`);
    return 64;
  }
  const { config } = await loadConfig({ file: options.configFile });
  // Opening a spool creates it: a mistyped queue.dir must show as "nothing here", not become one.
  if (!existsSync(config.queue.dir)) {
    if (options.json) process.stdout.write(`${JSON.stringify({ destinations: [], disagreements: [], pending: [] }, null, 2)}\n`);
    else process.stdout.write(`gosmtp-dup migration report: no spool at ${config.queue.dir}, nothing recorded\n`);
    return 0;
  }
  const spool = new LogSpool(config.queue.dir, silentLogger());
  await spool.open();
  const report = await buildReport(config.queue.dir, spool, { sinceDays: days });
  if (options.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return 0;
  }
  const out = (line = '') => process.stdout.write(`${line}\n`);
  out(`gosmtp-dup migration report (${config.queue.dir}${days ? `, last ${days} days` : ''})`);
  out();
  out(`${'destination'.padEnd(40)} ${'kind'.padEnd(5)} ${'accepted'.padStart(9)} ${'deferred'.padStart(9)} ${'rejected'.padStart(9)}`);
  for (const d of report.destinations) {
    out(`${d.destination.padEnd(40)} ${d.kind.padEnd(5)} ${String(d.accepted).padStart(9)} ${String(d.deferred).padStart(9)} ${String(d.rejected).padStart(9)}`);
  }
  if (report.destinations.length === 0) out('(no deliveries recorded yet)');
  out();
  const primaryAccepted = report.destinations.filter((d) => d.kind === 'sync').reduce((n, d) => n + d.accepted, 0);
  for (const copy of report.destinations.filter((d) => d.kind === 'copy')) {
    const share = primaryAccepted > 0 ? ((100 * copy.accepted) / primaryAccepted).toFixed(1) : '-';
    const refused = report.disagreements.filter((d) => d.destination === copy.destination).length;
    out(`${copy.destination}: accepted ${copy.accepted} of ${primaryAccepted} messages the synchronous side accepted (${share}%), refused ${refused} for good`);
  }
  out();
  out(`Disagreements (accepted synchronously, refused for good by a copy destination): ${report.disagreements.length}`);
  for (const d of report.disagreements) {
    out(`  ${d.id}  ${new Date(d.deadAt).toISOString()}  ${d.destination}  ${d.recipients.map((r) => `<${r.address}>`).join(' ')}`);
    out(`      ${d.reason}`);
  }
  out();
  const pending = report.pending.reduce((n, p) => n + p.count, 0);
  out(`Pending copies: ${pending}`);
  for (const p of report.pending) out(`  ${p.destination}: ${p.count}, oldest queued ${new Date(p.oldest).toISOString()}`);
  return 0;
}
