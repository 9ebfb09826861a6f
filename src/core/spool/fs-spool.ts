/**
 * The file-system spool. Layout under `queue.dir`:
 *
 *   tmp/<id>.eml, tmp/<id>.json     a message being received (discarded at start-up)
 *   queue/<id>.eml                  committed body, shared by all copies of the message
 *   queue/<id>.json                 committed record; its presence *is* the commit
 *   queue/<id>.<n>.state.json       delivery state of copy n (absent: never attempted)
 *   queue/<id>.<n>.done             copy n finished (delivered or dead) while other copies are pending
 *   dead/<id>.<n>.json, dead/<id>.eml   dead letters with their reason, and the body
 *   retry-now                       written by `gosmtp-dup queue retry` to wake a running router
 *
 * Commit = rename body, then rename record, then fsync the folder: a crash before the record's
 * rename leaves an orphan body that start-up removes; the client never heard 250 for it.
 */
import { createReadStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { ErrorCodes, GsdError } from '../errors.ts';
import { DirSync, fsyncDir, unlinkQuiet, writeFileDurable, writeFileSynced } from './durable-fs.ts';
import { SpoolBody } from './spool-body.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { copyRecipients, type CopyJob, type CopyOutcome, type CopyState, type DeadLetter, type Spool, type SpoolRecord, type SpoolWriter } from './types.ts';

const ID_RE = /^[0-9A-Za-z]{6,40}$/;
const RETRY_FILE = 'retry-now';
const FRESH: CopyState = { attempts: 0, nextAttemptAt: 0 };
/** A body up to this size is written in one go and its copies are sent from memory. */
const MEMORY_BODY_BYTES = 128 * 1024;
/** At most this much of such bodies is kept for the copies still to send (the rest read their file). */
const BODY_CACHE_BYTES = 64 * 1024 * 1024;

export class FsSpool implements Spool {
  readonly #dir: string;
  readonly #tmp: string;
  readonly #queue: string;
  readonly #dead: string;
  readonly #log: Logger;
  readonly #queueSync: DirSync;
  /** Pending copies by `<id>.<n>`. */
  readonly #jobs = new Map<string, CopyJob>();
  readonly #listeners: Array<() => void> = [];
  #watcher: NodeJS.Timeout | undefined;
  /** Bodies of queued messages, for their copies: no file read per copy. */
  readonly #bodies = new Map<string, Buffer>();
  #bodyBytes = 0;
  /** Per message, the state and marker files written for its copies (removed with it). */
  readonly #extras = new Map<string, Set<string>>();
  /** Per message, the settlement in progress: copies of one message settle one after another. */
  readonly #settling = new Map<string, Promise<void>>();

  constructor(dir: string, log: Logger) {
    this.#dir = dir;
    this.#tmp = join(dir, 'tmp');
    this.#queue = join(dir, 'queue');
    this.#dead = join(dir, 'dead');
    this.#queueSync = new DirSync(this.#queue);
    this.#log = log;
  }

  /**
   * `owner`: this process holds the spool lock (a router). Only the owner clears half-received
   * messages and orphans and watches for retry requests; the CLI reads and edits alongside it.
   */
  async open(options: { owner?: boolean } = {}): Promise<void> {
    for (const dir of [this.#dir, this.#tmp, this.#queue, this.#dead]) await mkdir(dir, { recursive: true, mode: 0o700 });
    if (options.owner) {
      // Half-received messages: the client never got 250 for them and will send them again.
      await rm(this.#tmp, { recursive: true, force: true });
      await mkdir(this.#tmp, { mode: 0o700 });
    }
    await this.#load(Boolean(options.owner));
    if (options.owner) {
      await this.#checkRetryFile();
      this.#watcher = setInterval(() => void this.#checkRetryFile(), 1000);
      this.#watcher.unref();
    }
  }

  async #load(owner: boolean): Promise<void> {
    this.#jobs.clear();
    const names = new Set(await readdir(this.#queue));
    for (const name of names) {
      const match = /^(.+)\.json$/.exec(name);
      if (!match || name.endsWith('.state.json')) continue;
      const id = match[1]!;
      let record: SpoolRecord;
      try {
        record = JSON.parse(await readFile(join(this.#queue, name), 'utf8')) as SpoolRecord;
      } catch (err) {
        this.#log.error({ id, err: (err as Error).message }, 'unreadable spool record left in place');
        continue;
      }
      let open = 0;
      for (let index = 0; index < record.copies.length; index++) {
        for (const extra of [`${id}.${index}.state.json`, `${id}.${index}.done`]) if (names.has(extra)) this.#extra(id, extra);
        if (names.has(`${id}.${index}.done`)) continue;
        open++;
        let state = FRESH;
        if (names.has(`${id}.${index}.state.json`)) {
          try {
            state = JSON.parse(await readFile(join(this.#queue, `${id}.${index}.state.json`), 'utf8')) as CopyState;
          } catch {
            state = FRESH; // a torn state file only loses the attempt count: deliver again
          }
        }
        this.#jobs.set(`${id}.${index}`, { record, index, state });
      }
      if (open === 0 && owner) await this.#removeFiles(id, record.copies.length);
    }
    if (!owner) return;
    for (const name of names) {
      // A state or marker file a crash interrupted before its rename: the old version stands.
      if (name.endsWith('.tmp')) await unlinkQuiet(join(this.#queue, name));
      // Bodies without a record were never committed; state and markers without one are leftovers.
      const owned = /^([0-9A-Za-z]+)\.(?:eml|\d+\.state\.json|\d+\.done)$/.exec(name);
      if (owned && !names.has(`${owned[1]}.json`)) await unlinkQuiet(join(this.#queue, name));
    }
  }

  begin(id: string): SpoolWriter {
    if (!ID_RE.test(id)) throw new GsdError(ErrorCodes.SPOOL_FAILED, `invalid queue id ${id}`);
    return new FsSpoolWriter(this, id, join(this.#tmp, `${id}.eml`), join(this.#tmp, `${id}.json`));
  }

  /** Called by the writer once its files are durable in `tmp/`: renames them into `queue/`. */
  async _committed(id: string, tmpBody: string, tmpRecord: string, record: SpoolRecord, body: Buffer | undefined): Promise<void> {
    try {
      await rename(tmpBody, join(this.#queue, `${id}.eml`));
      await rename(tmpRecord, join(this.#queue, `${id}.json`));
      await this.#queueSync.sync();
    } catch (err) {
      // The client will hear 451 and send the message again: this copy must not survive too.
      await this.#removeFiles(id, record.copies.length, true).catch(() => undefined);
      await fsyncDir(this.#queue).catch(() => undefined);
      throw err;
    }
    if (body && this.#bodyBytes + body.length <= BODY_CACHE_BYTES) {
      this.#bodies.set(id, body);
      this.#bodyBytes += body.length;
    }
    record.copies.forEach((_copy, index) => this.#jobs.set(`${id}.${index}`, { record, index, state: FRESH }));
    this.#emitDue();
  }

  #extra(id: string, name: string): void {
    const extras = this.#extras.get(id) ?? new Set<string>();
    extras.add(name);
    this.#extras.set(id, extras);
  }

  #forgetBody(id: string): void {
    const body = this.#bodies.get(id);
    if (!body) return;
    this.#bodies.delete(id);
    this.#bodyBytes -= body.length;
  }

  pending(): readonly CopyJob[] {
    return [...this.#jobs.values()];
  }

  jobs(): Iterable<CopyJob> {
    return this.#jobs.values();
  }

  openBody(id: string): Readable {
    const body = this.#bodies.get(id);
    return body ? Readable.from([body]) : createReadStream(join(this.#queue, `${id}.eml`));
  }

  async stillQueued(job: CopyJob): Promise<boolean> {
    if (await exists(join(this.#queue, `${job.record.id}.json`))) return true;
    for (const key of [...this.#jobs.keys()]) if (this.#jobs.get(key)!.record.id === job.record.id) this.#jobs.delete(key);
    // Whatever is left of it (markers its copies wrote) goes too, and its body leaves the cache.
    await this.#removeFiles(job.record.id, job.record.copies.length, true);
    this.#log.info({ id: job.record.id }, 'message removed from the queue; its copies are dropped');
    return false;
  }

  postpone(job: CopyJob, nextAttemptAt: number): void {
    const key = `${job.record.id}.${job.index}`;
    const current = this.#jobs.get(key);
    if (current) this.#jobs.set(key, { ...current, state: { ...current.state, nextAttemptAt } });
  }

  settle(job: CopyJob, outcome: CopyOutcome): Promise<void> {
    // One at a time per message: whichever copy finishes last removes the message, and it must
    // see the others' files.
    const id = job.record.id;
    const run = (this.#settling.get(id) ?? Promise.resolve()).catch(() => undefined).then(() => this.#settle(job, outcome));
    const tail = run.catch(() => undefined).then(() => {
      if (this.#settling.get(id) === tail) this.#settling.delete(id);
    });
    this.#settling.set(id, tail);
    return run;
  }

  async #settle(job: CopyJob, outcome: CopyOutcome): Promise<void> {
    const { record, index } = job;
    const key = `${record.id}.${index}`;
    const attempts = job.state.attempts + 1;
    // Recipients that will never be delivered are written down before anything else changes.
    if (outcome.dead && outcome.dead.recipients.length > 0) await this.#writeDead(job, outcome.dead.recipients, outcome.dead.reason, attempts);
    const retry = outcome.retry;
    if (retry && retry.recipients.length > 0) {
      const state: CopyState = {
        attempts,
        nextAttemptAt: retry.nextAttemptAt,
        lastAttemptAt: Date.now(),
        lastError: retry.error,
        remaining: retry.recipients,
      };
      // The folder is fsync'd only when the recipient list shrank (some were delivered): a lost
      // attempt count merely brings the next try forward, a lost list would repeat deliveries.
      const shrank = retry.recipients.length < copyRecipients(job).length;
      this.#extra(record.id, `${key}.state.json`);
      await writeFileDurable(join(this.#queue, `${key}.state.json`), JSON.stringify(state), shrank);
      this.#jobs.set(key, { record, index, state });
      return;
    }
    // Finished. What says so is written before we forget, or a restart would send it again: for
    // the last copy, the record's removal (the message is gone); for the others, a marker whose
    // name is all it says. Not fsync'd, as Postfix does not fsync a delivered recipient's mark: a
    // crashed process loses nothing (the kernel has it), and a power cut within the file system's
    // commit interval can only make a copy go out twice, never lose one.
    const last = !record.copies.some((_c, i) => i !== index && this.#jobs.has(`${record.id}.${i}`));
    if (last) {
      await unlinkQuiet(join(this.#queue, `${record.id}.json`));
    } else {
      this.#extra(record.id, `${key}.done`);
      await (await open(join(this.#queue, `${key}.done`), 'w', 0o600)).close();
    }
    this.#jobs.delete(key);
    if (last) await this.#removeFiles(record.id, record.copies.length, false, true);
  }

  async #writeDead(job: CopyJob, recipients: readonly EnvelopeAddress[], reason: string, attempts: number): Promise<void> {
    const { record, index } = job;
    const letter: DeadLetter = {
      id: record.id,
      destination: record.copies[index]!.destination,
      recipients,
      reason,
      attempts,
      deadAt: Date.now(),
    };
    try {
      await link(join(this.#queue, `${record.id}.eml`), join(this.#dead, `${record.id}.eml`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    // Several dead-letter events for one copy (partial failures) each get their own file.
    let name = `${record.id}.${index}.json`;
    for (let n = 1; await exists(join(this.#dead, name)); n++) name = `${record.id}.${index}.${n}.json`;
    await writeFileDurable(join(this.#dead, name), JSON.stringify({ ...letter, sender: record.sender, createdAt: record.createdAt }, null, 2));
    this.#log.warn({ id: record.id, destination: letter.destination, recipients: recipients.length, reason }, 'copy dead-lettered');
  }

  /**
   * Removes a message's files. `everyName`: also files this process did not see written (another
   * process's, e.g. the CLI's), by every name they could have.
   */
  async #removeFiles(id: string, copies: number, everyName = false, recordGone = false): Promise<void> {
    // Record first: once it is gone the message no longer exists, whatever else remains.
    if (!recordGone) await unlinkQuiet(join(this.#queue, `${id}.json`));
    const names = new Set([`${id}.eml`, ...(this.#extras.get(id) ?? [])]);
    if (everyName) for (let index = 0; index < copies; index++) names.add(`${id}.${index}.state.json`).add(`${id}.${index}.done`);
    await Promise.all([...names].map((name) => unlinkQuiet(join(this.#queue, name))));
    this.#extras.delete(id);
    this.#forgetBody(id);
  }

  async retryNow(id?: string): Promise<number> {
    const count = this.#markDue(id);
    // Only a request file: the router owns the state files, and rewriting them from this
    // process's snapshot could undo what it recorded meanwhile.
    await writeFileDurable(join(this.#dir, RETRY_FILE), `${id ?? '*'}\n`, false);
    this.#emitDue();
    return count;
  }

  /** Whether `gosmtp-dup queue retry` asked for a retry the router has not picked up yet. */
  async retryRequested(): Promise<boolean> {
    return exists(join(this.#dir, RETRY_FILE));
  }

  #markDue(id: string | undefined): number {
    let count = 0;
    for (const [key, job] of this.#jobs) {
      if (id !== undefined && job.record.id !== id) continue;
      this.#jobs.set(key, { ...job, state: { ...job.state, nextAttemptAt: 0 } });
      count++;
    }
    return count;
  }

  async #checkRetryFile(): Promise<void> {
    let request: string;
    try {
      request = await readFile(join(this.#dir, RETRY_FILE), 'utf8');
    } catch {
      return;
    }
    await unlinkQuiet(join(this.#dir, RETRY_FILE));
    const id = request.trim();
    this.#markDue(id === '*' || id === '' ? undefined : id);
    this.#emitDue();
  }

  async remove(id: string): Promise<boolean> {
    if (!ID_RE.test(id)) return false;
    const exists_ = await exists(join(this.#queue, `${id}.json`));
    let copies = 0;
    for (const [key, job] of this.#jobs) {
      if (job.record.id !== id) continue;
      copies = Math.max(copies, job.record.copies.length);
      this.#jobs.delete(key);
    }
    await this.#removeFiles(id, Math.max(copies, 64), true);
    return exists_;
  }

  async deadLetters(): Promise<DeadLetter[]> {
    const letters: DeadLetter[] = [];
    for (const name of await readdir(this.#dead)) {
      if (!name.endsWith('.json') || name.includes('.tmp')) continue;
      letters.push(JSON.parse(await readFile(join(this.#dead, name), 'utf8')) as DeadLetter);
    }
    return letters.sort((a, b) => a.deadAt - b.deadAt);
  }

  /** Whether a file can be created in the spool now (for readiness checks). */
  async writable(): Promise<boolean> {
    const probe = join(this.#tmp, `.probe-${process.pid}`);
    try {
      await writeFileDurable(probe, 'ok', false);
      await unlinkQuiet(probe);
      return true;
    } catch {
      return false;
    }
  }

  onDue(listener: () => void): void {
    this.#listeners.push(listener);
  }

  #emitDue(): void {
    for (const listener of this.#listeners) listener();
  }

  async close(): Promise<void> {
    if (this.#watcher) clearInterval(this.#watcher);
    await this.#queueSync.close();
  }
}

class FsSpoolWriter implements SpoolWriter {
  readonly body: SpoolBody;
  #record: SpoolRecord | undefined;
  #inMemory: Buffer | undefined;
  #finished = false;

  constructor(
    private readonly spool: FsSpool,
    private readonly id: string,
    private readonly bodyPath: string,
    private readonly recordPath: string,
  ) {
    this.body = new SpoolBody(bodyPath, MEMORY_BODY_BYTES);
  }

  async prepare(record: SpoolRecord): Promise<void> {
    try {
      const bodyDurable = new Promise<void>((resolve, reject) => {
        if (this.body.writableFinished) return resolve();
        if (this.body.errored) return reject(this.body.errored);
        this.body.once('error', reject);
        this.body.once('finish', resolve);
        this.body.end();
      }).then(async () => {
        // Kept in memory so far: written (and fsync'd) now, in one go.
        this.#inMemory = this.body.inMemory;
        if (this.#inMemory) await writeFileSynced(this.bodyPath, this.#inMemory);
      });
      // Both files are fsync'd at the same time; neither is visible before the commit's renames.
      await Promise.all([bodyDurable, writeFileSynced(this.recordPath, JSON.stringify(record))]);
      this.#record = record;
    } catch (err) {
      throw new GsdError(ErrorCodes.SPOOL_FAILED, `cannot store message ${this.id}: ${(err as Error).message}`, { cause: err });
    }
  }

  async commit(): Promise<void> {
    if (!this.#record) throw new GsdError(ErrorCodes.SPOOL_FAILED, 'commit before prepare');
    try {
      await this.spool._committed(this.id, this.bodyPath, this.recordPath, this.#record, this.#inMemory);
      this.#finished = true;
    } catch (err) {
      throw new GsdError(ErrorCodes.SPOOL_FAILED, `cannot commit message ${this.id}: ${(err as Error).message}`, { cause: err });
    }
  }

  async abort(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.body.destroy();
    await unlinkQuiet(this.bodyPath).catch(() => undefined);
    await unlinkQuiet(this.recordPath).catch(() => undefined);
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
