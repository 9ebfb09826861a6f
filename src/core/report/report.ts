/**
 * The migration report: per destination, what it accepted, deferred and refused (from the
 * journal), the messages where a copy destination refused for good what the primary accepted
 * (the dead letters, with the reason), and what is still pending. What tells an administrator
 * whether the new server accepts what the old one accepts.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { DeliveryKind } from '../observability/events.ts';
import type { DeadLetter, Spool } from '../spool/types.ts';
import type { JournalLine } from './journal.ts';

export interface DestinationStats {
  destination: string;
  kind: DeliveryKind;
  /** Messages accepted (a copy counts once, however many attempts it took). */
  accepted: number;
  /** Temporary failures (attempts for copies, transactions for the synchronous side). */
  deferred: number;
  /** Permanent refusals. */
  rejected: number;
}

export interface MigrationReport {
  since: number | undefined;
  destinations: DestinationStats[];
  disagreements: DeadLetter[];
  pending: Array<{ destination: string; count: number; oldest: number }>;
}

export async function buildReport(queueDir: string, spool: Spool, options: { sinceDays?: number } = {}): Promise<MigrationReport> {
  const since = options.sinceDays === undefined ? undefined : Date.now() - options.sinceDays * 86_400_000;
  const stats = new Map<string, DestinationStats>();
  const dir = join(queueDir, 'journal');
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.jsonl')).sort();
  for (const file of files) {
    for (const text of (await readFile(join(dir, file), 'utf8')).split('\n')) {
      if (!text) continue;
      let line: JournalLine;
      try {
        line = JSON.parse(text) as JournalLine;
      } catch {
        continue; // a line cut short by a crash
      }
      if (since !== undefined && line.at < since) continue;
      const key = `${line.kind} ${line.destination}`;
      const entry = stats.get(key) ?? { destination: line.destination, kind: line.kind, accepted: 0, deferred: 0, rejected: 0 };
      if (line.outcome === 'delivered') entry.accepted++;
      else if (line.outcome === 'deferred') entry.deferred++;
      else entry.rejected++;
      stats.set(key, entry);
    }
  }
  const pending = new Map<string, { destination: string; count: number; oldest: number }>();
  for (const job of spool.pending()) {
    const destination = job.record.copies[job.index]!.destination;
    const entry = pending.get(destination) ?? { destination, count: 0, oldest: job.record.createdAt };
    entry.count++;
    entry.oldest = Math.min(entry.oldest, job.record.createdAt);
    pending.set(destination, entry);
  }
  const disagreements = (await spool.deadLetters()).filter((d) => since === undefined || d.deadAt >= since);
  return {
    since,
    destinations: [...stats.values()].sort((a, b) => (a.kind === b.kind ? a.destination.localeCompare(b.destination) : a.kind === 'sync' ? -1 : 1)),
    disagreements,
    pending: [...pending.values()],
  };
}
