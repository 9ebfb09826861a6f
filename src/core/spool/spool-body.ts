/**
 * A message body on its way into the spool. Small bodies (most mail) stay in memory until
 * `prepare` writes them in one go, and the copy worker later sends them from that same buffer
 * instead of reading the file back. A body that grows past `memoryBytes` spills to its file and
 * streams from then on, so memory per transaction stays bounded whatever the message size.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { Writable } from 'node:stream';

export class SpoolBody extends Writable {
  /** The whole body, while it fits in memory; undefined once it went to the file. */
  #chunks: Buffer[] | undefined = [];
  #bytes = 0;
  #file: WriteStream | undefined;
  readonly #path: string;
  readonly #memoryBytes: number;

  constructor(path: string, memoryBytes: number) {
    super();
    this.#path = path;
    this.#memoryBytes = memoryBytes;
  }

  /** The body, if it stayed in memory (valid once the stream finished). */
  get inMemory(): Buffer | undefined {
    return this.#chunks ? Buffer.concat(this.#chunks, this.#bytes) : undefined;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.#bytes += chunk.length;
    if (this.#chunks && this.#bytes <= this.#memoryBytes) {
      this.#chunks.push(chunk);
      return done();
    }
    if (!this.#file) {
      // `flush`: the descriptor is fsync'd before it is closed, so 'close' means durable.
      this.#file = createWriteStream(this.#path, { flags: 'wx', mode: 0o600, flush: true });
      this.#file.once('error', (err) => this.destroy(err));
      for (const held of this.#chunks ?? []) this.#file.write(held);
      this.#chunks = undefined;
    }
    if (this.#file.write(chunk)) done();
    else this.#file.once('drain', () => done());
  }

  /** A spilled body is finished once its file is fsync'd and closed. */
  override _final(done: (err?: Error | null) => void): void {
    const file = this.#file;
    if (!file) return done();
    file.once('close', () => done(file.errored));
    file.end();
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    const file = this.#file;
    if (!file || file.closed) return done(err);
    // 'close' only once the file is closed: an abort then unlinks a file that exists.
    file.once('close', () => done(err));
    file.destroy();
  }
}
