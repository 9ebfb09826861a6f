/**
 * The migration journal: one JSON line per delivery outcome (synchronous verdicts and copy
 * attempts) in `queue.dir/journal/YYYY-MM-DD.jsonl`, the raw material of `gosmtp-dup report`.
 * Statistics, not mail: written in batches (at most 200 ms late), without fsync, off the reply path.
 */
import { appendFileSync, createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { DeliveryEvent, DeliveryEvents } from '../observability/events.ts';

export interface JournalLine extends DeliveryEvent {
  /** Epoch milliseconds. */
  readonly at: number;
}

/** Lines wait at most this long, or until this many bytes are waiting, before they are written. */
const FLUSH_MS = 200;
const DAY_MS = 24 * 60 * 60 * 1000;
const FLUSH_BYTES = 64 * 1024;

/** Journals holding lines not yet handed to their stream: written synchronously if the process exits first. */
const waiting = new Set<Journal>();
let exitHooked = false;
function flushAtExit(journal: Journal): void {
  waiting.add(journal);
  if (exitHooked) return;
  exitHooked = true;
  process.once('exit', () => {
    for (const each of waiting) each.flushSync();
  });
}

export class Journal implements DeliveryEvents {
  readonly #dir: string;
  #day = '';
  /** When the current day (UTC) began, in ms. */
  #dayStart = -Infinity;
  #stream: WriteStream | undefined;
  /** Lines not yet handed to the stream: one write per batch instead of one per delivery. */
  #pending = '';
  #timer: NodeJS.Timeout | undefined;

  constructor(queueDir: string) {
    this.#dir = join(queueDir, 'journal');
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
  }

  transaction(): void {}

  delivery(event: DeliveryEvent): void {
    const at = Date.now();
    // The file is per UTC day; its name is worked out again only when the day changes.
    if (at < this.#dayStart || at >= this.#dayStart + DAY_MS) {
      const day = new Date(at).toISOString().slice(0, 10);
      this.#dayStart = at - (at % DAY_MS);
      this.#flush();
      this.#stream?.end();
      this.#day = day;
      this.#stream = createWriteStream(join(this.#dir, `${day}.jsonl`), { flags: 'a', mode: 0o600 });
      this.#stream.on('error', () => undefined); // statistics must never take the router down
    }
    const line: JournalLine = { at, ...event };
    if (this.#pending === '') flushAtExit(this);
    this.#pending += `${JSON.stringify(line)}\n`;
    if (this.#pending.length >= FLUSH_BYTES) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), FLUSH_MS).unref();
  }

  #flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    waiting.delete(this);
    if (this.#pending === '') return;
    this.#stream?.write(this.#pending);
    this.#pending = '';
  }

  /** At exit: the waiting lines, written before the process is gone. */
  flushSync(): void {
    if (this.#pending === '' || !this.#day) return;
    try {
      appendFileSync(join(this.#dir, `${this.#day}.jsonl`), this.#pending, { mode: 0o600 });
    } catch {
      // statistics must never take the router down, not even on its way out
    }
    this.#pending = '';
  }

  close(): Promise<void> {
    this.#flush();
    return new Promise((resolve) => (this.#stream ? this.#stream.end(resolve) : resolve()));
  }
}
