/**
 * The migration journal: one JSON line per delivery outcome (synchronous verdicts and copy
 * attempts) in `queue.dir/journal/YYYY-MM-DD.jsonl`, the raw material of `gosmtp-dup report`.
 * Statistics, not mail: written without fsync, off the reply path.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DeliveryEvent, DeliveryEvents } from '../observability/events.ts';

export interface JournalLine extends DeliveryEvent {
  /** Epoch milliseconds. */
  readonly at: number;
}

export class Journal implements DeliveryEvents {
  readonly #dir: string;
  #day = '';
  #stream: WriteStream | undefined;

  constructor(queueDir: string) {
    this.#dir = join(queueDir, 'journal');
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
  }

  transaction(): void {}

  delivery(event: DeliveryEvent): void {
    const at = Date.now();
    const day = new Date(at).toISOString().slice(0, 10);
    if (day !== this.#day) {
      this.#stream?.end();
      this.#day = day;
      this.#stream = createWriteStream(join(this.#dir, `${day}.jsonl`), { flags: 'a', mode: 0o600 });
      this.#stream.on('error', () => undefined); // statistics must never take the router down
    }
    const line: JournalLine = { at, ...event };
    this.#stream!.write(`${JSON.stringify(line)}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.#stream ? this.#stream.end(resolve) : resolve()));
  }
}
