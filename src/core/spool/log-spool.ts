/**
 * The spool: a segment log (segment-log.ts) of what happened to each message, and a few folders
 * beside it. Layout under `queue.dir`:
 *
 *   log/<seq>.log            entries: M message (record and body), C committed, S copy state,
 *                            D copy done, X message removed; replayed in order at start-up
 *   bodies/<id>.eml          a body over 128 KiB: streamed in, fsync'd before its M entry
 *   tmp/<id>.eml             such a body while it arrives (cleared at start-up)
 *   dead/<id>.<n>.json, dead/<id>.eml   dead letters with their reason, and the body
 *   retry-now, delete-<id>, requeue-<id>|requeue-all
 *                            requests from `gosmtp-dup queue` to the running router
 *
 * A message is prepared (M, written before the final dot goes to the primary, so that a full disk
 * is found before the primary can accept) and committed (C; M and C fsync'd before the client
 * hears 250); one without C is discarded at start-up, since its client never heard 250. Every entry goes through the log's group commit, so concurrent transactions
 * share their writes and fsyncs. A segment is deleted once none of its messages has a copy left
 * and no older segment its entries speak about remains; a sealed segment that is mostly finished
 * has its remaining messages rewritten at the head of the log, so one slow backup cannot pin the
 * traffic of days to the disk.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Logger } from 'pino';
import { ErrorCodes, GsdError } from '../errors.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { DirSync, unlinkQuiet, writeFileDurable } from './durable-fs.ts';
import { readLegacyQueue } from './legacy-queue.ts';
import { readSegment, segmentName, SegmentLog, segmentSeq, type Segment } from './segment-log.ts';
import { SpoolBody } from './spool-body.ts';
import { type CopyJob, type CopyOutcome, type CopySlot, type CopyState, type DeadLetter, type Spool, type SpoolRecord, type SpoolWriter } from './types.ts';

const ID_RE = /^[0-9A-Za-z]{6,40}$/;
const RETRY_FILE = 'retry-now';
const DELETE_PREFIX = 'delete-';
const REQUEUE_PREFIX = 'requeue-';
/** `<id>.<copy>.json` or `<id>.<copy>.<n>.json`: one dead letter. */
const DEAD_LETTER_RE = /^([0-9A-Za-z]+)\.\d+(?:\.\d+)?\.json$/;
/** The router's answer to a delete request, beside it: one of these, or `failed: <why>`. */
const RESULT_SUFFIX = '.result';
const DELETED = 'deleted';
const NOT_QUEUED = 'not queued';
const FRESH: CopyState = { attempts: 0, nextAttemptAt: 0 };
/** A body up to this size goes into the log with its record; larger ones get their own file. */
const MEMORY_BODY_BYTES = 128 * 1024;
/** At most this much of such bodies is kept in memory for the copies still to send. */
const BODY_CACHE_BYTES = 64 * 1024 * 1024;
/**
 * A sealed segment is compacted only once it is this old. Until then its live messages are mostly
 * copies still on their way (a backlog of seconds under load), which finish by themselves and
 * leave the segment to be deleted whole; rewriting them would write every body twice.
 */
const COMPACT_AFTER_MS = 30_000;
/** How long `queue delete` waits for a running router to act on its request. */
const REQUEST_WAIT_MS = 10_000;

/** What an M entry's JSON part holds (the body follows it, unless it has its own file). */
interface MessageEntry {
  readonly record: SpoolRecord;
  readonly body: 'inline' | 'file';
  /** Set on a message rewritten by compaction: committed, with its copies' states so far. */
  readonly committed?: true;
  readonly copies?: readonly CopySlot[];
}

interface StoredMessage {
  readonly record: SpoolRecord;
  /** The segment holding its current M entry. */
  segment: Segment;
  /** Size of that entry on disk. */
  bytes: number;
  /** Where the body is: inside that entry, or in `bodies/<id>.eml`. */
  body: { offset: number; length: number } | 'file';
  committed: boolean;
  readonly copies: CopySlot[];
  /** Until the commit: when the M entry is on disk. */
  prepared?: Promise<void>;
  /** While a compaction's rewrite is on its way to disk: the segment it goes to. */
  moving?: Segment;
}

/** Per segment: what keeps it on disk. */
interface SegmentUse {
  readonly segment: Segment;
  /** Messages whose M entry is here and which still have copies to deliver (or await commit). */
  readonly live: Set<string>;
  liveBytes: number;
  /** Older segments whose messages this one has entries about: it must outlive them. */
  readonly refs: Set<number>;
  /** Body streams open on it. */
  readers: number;
  /** When it stopped taking entries in this process's life (unset: sealed before a restart). */
  sealedAt?: number;
}

export class LogSpool implements Spool {
  readonly #dir: string;
  readonly #logDir: string;
  readonly #bodiesDir: string;
  readonly #tmp: string;
  readonly #dead: string;
  readonly #log: Logger;
  readonly #bodiesSync: DirSync;
  #writer: SegmentLog | undefined;
  readonly #messages = new Map<string, StoredMessage>();
  readonly #segments = new Map<number, SegmentUse>();
  /** Pending copies by `<id>.<n>`. */
  readonly #jobs = new Map<string, CopyJob>();
  readonly #listeners: Array<() => void> = [];
  #watcher: NodeJS.Timeout | undefined;
  /** Bodies of queued messages, for their copies: no file read per copy. */
  readonly #bodies = new Map<string, Buffer>();
  #bodyBytes = 0;
  #maintaining: Promise<void> | undefined;
  #maintainAgain = false;
  #checkingRequests: Promise<void> | undefined;
  #closed = false;
  readonly #segmentBytes: number | undefined;
  readonly #compactAfterMs: number;

  /**
   * `segmentBytes`: when the head segment is sealed; `compactAfterMs`: how old a sealed segment
   * must be to be compacted (tests use small and young ones to exercise compaction).
   */
  constructor(dir: string, log: Logger, options: { segmentBytes?: number; compactAfterMs?: number } = {}) {
    this.#segmentBytes = options.segmentBytes;
    this.#compactAfterMs = options.compactAfterMs ?? COMPACT_AFTER_MS;
    this.#dir = dir;
    this.#logDir = join(dir, 'log');
    this.#bodiesDir = join(dir, 'bodies');
    this.#tmp = join(dir, 'tmp');
    this.#dead = join(dir, 'dead');
    this.#bodiesSync = new DirSync(this.#bodiesDir);
    this.#log = log;
  }

  /**
   * `owner`: this process holds the spool lock (a router, or the CLI with no router running) and
   * may write. Others only read, and ask the owner through request files.
   */
  async open(options: { owner?: boolean } = {}): Promise<void> {
    for (const dir of [this.#dir, this.#logDir, this.#bodiesDir, this.#tmp, this.#dead]) await mkdir(dir, { recursive: true, mode: 0o700 });
    if (options.owner) {
      // Half-received messages: the client never got 250 for them and will send them again.
      await rm(this.#tmp, { recursive: true, force: true });
      await mkdir(this.#tmp, { mode: 0o700 });
    }
    const seqs = (await readdir(this.#logDir)).map(segmentSeq).filter((s): s is number => s !== undefined).sort((a, b) => a - b);
    for (const seq of seqs) {
      try {
        await this.#replay(seq);
      } catch (err) {
        // Deleted by the running router while this reader listed them: nothing left to deliver.
        if (options.owner || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        this.#segments.delete(seq);
      }
    }
    for (const [id, message] of this.#messages) {
      if (!message.committed || message.copies.every((c) => c === 'done')) this.#messages.delete(id);
      else this.#queue(id, message);
    }
    if (!options.owner) return;
    this.#writer = new SegmentLog(
      this.#logDir,
      (seqs.at(-1) ?? 0) + 1,
      (sealed) => {
        this.#use(sealed).sealedAt = Date.now();
        void this.#maintain();
      },
      this.#segmentBytes,
    );
    await this.#migrateLegacy();
    // Large bodies whose message was never committed, or finished just before a crash.
    for (const name of await readdir(this.#bodiesDir)) {
      if (!this.#messages.has(name.replace(/\.eml$/, ''))) await unlinkQuiet(join(this.#bodiesDir, name));
    }
    await this.#requests();
    this.#watcher = setInterval(() => {
      this.#sealIdle();
      void this.#requests();
      void this.#maintain(); // segments that came of age for compaction
    }, 1000);
    this.#watcher.unref();
    await this.#maintain();
  }

  async #replay(seq: number): Promise<void> {
    const path = join(this.#logDir, segmentName(seq));
    const size = (await stat(path)).size;
    const segment: Segment = { seq, path, size, retired: true, queued: 0, written: size };
    const use = this.#use(segment);
    for await (const entry of readSegment(path)) {
      if (entry.type === 'M') {
        const jsonLength = entry.payload.readUInt32BE(0);
        const json = JSON.parse(entry.payload.toString('utf8', 4, 4 + jsonLength)) as MessageEntry;
        const bodyOffset = entry.offset + 4 + jsonLength;
        this.#messages.set(json.record.id, {
          record: json.record,
          segment,
          bytes: entry.payload.length,
          body: json.body === 'file' ? 'file' : { offset: bodyOffset, length: entry.payload.length - 4 - jsonLength },
          committed: json.committed === true,
          copies: json.copies ? [...json.copies] : json.record.copies.map(() => FRESH),
        });
        continue;
      }
      const change = JSON.parse(entry.payload.toString('utf8')) as { id: string; index?: number; state?: CopyState };
      const message = this.#messages.get(change.id);
      if (!message) continue; // its segment is gone: the message finished long ago
      if (message.segment !== segment) use.refs.add(message.segment.seq);
      if (entry.type === 'C') message.committed = true;
      else if (entry.type === 'S' && message.copies[change.index!] !== 'done') message.copies[change.index!] = change.state!;
      else if (entry.type === 'D') message.copies[change.index!] = 'done';
      else if (entry.type === 'X') this.#messages.delete(change.id);
    }
  }

  #use(segment: Segment): SegmentUse {
    let use = this.#segments.get(segment.seq);
    if (!use) {
      use = { segment, live: new Set(), liveBytes: 0, refs: new Set(), readers: 0 };
      this.#segments.set(segment.seq, use);
    }
    return use;
  }

  /** A committed message: its segment holds it, and its unfinished copies are due. */
  #queue(id: string, message: StoredMessage): void {
    this.#hold(id, message);
    message.copies.forEach((slot, index) => {
      if (slot !== 'done') this.#jobs.set(`${id}.${index}`, { record: message.record, index, state: slot });
    });
  }

  /** The message keeps its segment on disk. */
  #hold(id: string, message: StoredMessage): void {
    const use = this.#use(message.segment);
    use.live.add(id);
    use.liveBytes += message.bytes;
  }

  #release(id: string, message: StoredMessage): void {
    const use = this.#segments.get(message.segment.seq);
    if (use?.live.delete(id)) use.liveBytes -= message.bytes;
  }

  /** Appends an entry about a message that is already in the log. */
  #append(type: 'C' | 'S' | 'D' | 'X', message: StoredMessage, change: object): Promise<void> {
    const writer = this.#requireWriter();
    // A copy's progress (S) and delivered mark (D) are not fsync'd on their own (as Postfix): a
    // crash of the process loses nothing, a power cut can only make a copy go out again. The
    // message (M), its commit (C) and an abort (X) are.
    const sync = type !== 'S' && type !== 'D';
    const { segment, durable } = writer.append(type, [Buffer.from(JSON.stringify({ id: message.record.id, ...change }))], sync);
    // Both places the message may be found at the next start-up must outlive this entry.
    for (const home of [message.segment, message.moving]) if (home && home !== segment) this.#use(segment).refs.add(home.seq);
    return durable;
  }

  /**
   * Queues a message's M entry. `moveNow`: its location switches at once (a new message, which
   * nobody reads yet); otherwise only once the entry is on disk (a compaction's rewrite: a body
   * opened meanwhile must still be read from where it is).
   */
  #appendMessage(message: StoredMessage, entry: MessageEntry, body: Buffer | undefined, moveNow: boolean): { durable: Promise<void>; written: Promise<void> } {
    const json = Buffer.from(JSON.stringify(entry));
    const length = Buffer.allocUnsafe(4);
    length.writeUInt32BE(json.length);
    const { segment, offset, durable, written } = this.#requireWriter().append('M', body ? [length, json, body] : [length, json]);
    const move = () => {
      message.segment = segment;
      message.bytes = 4 + json.length + (body?.length ?? 0);
      message.body = body ? { offset: offset + 4 + json.length, length: body.length } : 'file';
    };
    if (moveNow) {
      move();
      return { durable, written };
    }
    message.moving = segment;
    const moved = durable.finally(() => {
      if (message.moving === segment) message.moving = undefined;
    }).then(() => {
      const id = message.record.id;
      if (this.#messages.get(id) !== message) return; // finished or removed meanwhile
      this.#release(id, message);
      move();
      this.#hold(id, message);
    });
    return { durable: moved, written };
  }

  #requireWriter(): SegmentLog {
    if (!this.#writer) throw new GsdError(ErrorCodes.SPOOL_FAILED, 'the spool is open read-only (another process owns it)');
    return this.#writer;
  }

  begin(id: string): SpoolWriter {
    if (!ID_RE.test(id)) throw new GsdError(ErrorCodes.SPOOL_FAILED, `invalid queue id ${id}`);
    this.#requireWriter();
    return new LogSpoolWriter(this, id, join(this.#tmp, `${id}.eml`));
  }

  /** The writer's prepare: a large body's file durable, the M entry written; not yet committed. */
  async _prepare(record: SpoolRecord, body: Buffer | undefined, spilled: string | undefined): Promise<void> {
    const id = record.id;
    if (spilled) {
      await rename(spilled, join(this.#bodiesDir, `${id}.eml`));
      await this.#bodiesSync.sync();
    }
    const message: StoredMessage = { record, segment: this.#requireWriter().active, bytes: 0, body: 'file', committed: false, copies: record.copies.map(() => FRESH) };
    const { durable, written } = this.#appendMessage(message, { record, body: body ? 'inline' : 'file' }, body, true);
    durable.catch(() => undefined); // awaited by the commit
    message.prepared = durable;
    this.#messages.set(id, message);
    this.#hold(id, message); // its copies are not due before the commit
    // Written, not yet fsync'd: a full disk fails here, before the primary can accept. The fsync
    // that makes the commit durable makes this entry durable too (one wait instead of two).
    await written;
  }

  async _commit(id: string, body: Buffer | undefined): Promise<void> {
    const message = this.#messages.get(id);
    if (!message) throw new GsdError(ErrorCodes.SPOOL_FAILED, `message ${id} was not prepared`);
    await Promise.all([message.prepared, this.#append('C', message, {})]);
    message.committed = true;
    message.prepared = undefined;
    if (body && this.#bodyBytes + body.length <= BODY_CACHE_BYTES) {
      this.#bodies.set(id, body);
      this.#bodyBytes += body.length;
    }
    message.copies.forEach((_slot, index) => this.#jobs.set(`${id}.${index}`, { record: message.record, index, state: FRESH }));
    this.#emitDue();
  }

  /** The writer's abort. After a commit attempt its C entry may have reached the disk: undone. */
  async _abort(id: string, commitTried: boolean): Promise<void> {
    const message = this.#messages.get(id);
    if (!message) return;
    this.#forget(id, message);
    if (commitTried) await this.#append('X', message, {}).catch(() => undefined);
    if (message.body === 'file') await unlinkQuiet(join(this.#bodiesDir, `${id}.eml`)).catch(() => undefined);
    this.#maintain();
  }

  #jobKeys(message: StoredMessage): string[] {
    return message.copies.map((_slot, index) => `${message.record.id}.${index}`);
  }

  /** Drops a message from memory: its copies, its hold on its segment, its cached body. */
  #forget(id: string, message: StoredMessage): void {
    for (const key of this.#jobKeys(message)) this.#jobs.delete(key);
    this.#messages.delete(id);
    this.#release(id, message);
    const body = this.#bodies.get(id);
    if (body) {
      this.#bodies.delete(id);
      this.#bodyBytes -= body.length;
    }
  }

  pending(): readonly CopyJob[] {
    return [...this.#jobs.values()];
  }

  jobs(): Iterable<CopyJob> {
    return this.#jobs.values();
  }

  cachedBody(id: string): Buffer | undefined {
    return this.#bodies.get(id);
  }

  openBody(id: string): Readable {
    const cached = this.#bodies.get(id);
    if (cached) return Readable.from([cached]);
    const message = this.#messages.get(id);
    if (!message) return Readable.from((async function* () {
      throw new GsdError(ErrorCodes.SPOOL_FAILED, `message ${id} is no longer queued`);
    })());
    if (message.body === 'file') return createReadStream(join(this.#bodiesDir, `${id}.eml`));
    const { offset, length } = message.body;
    if (length === 0) return Readable.from([]);
    // The segment stays on disk while it is read, even if the message moves meanwhile.
    const use = this.#use(message.segment);
    use.readers++;
    const stream = createReadStream(message.segment.path, { start: offset, end: offset + length - 1 });
    stream.once('close', () => {
      use.readers--;
      this.#maintain();
    });
    return stream;
  }

  async stillQueued(job: CopyJob): Promise<boolean> {
    const slot = this.#messages.get(job.record.id)?.copies[job.index];
    if (slot !== undefined && slot !== 'done') return true;
    this.#jobs.delete(`${job.record.id}.${job.index}`);
    return false;
  }

  postpone(job: CopyJob, nextAttemptAt: number): void {
    const key = `${job.record.id}.${job.index}`;
    const current = this.#jobs.get(key);
    if (current) this.#jobs.set(key, { ...current, state: { ...current.state, nextAttemptAt } });
  }

  async settle(job: CopyJob, outcome: CopyOutcome): Promise<void> {
    const { record, index } = job;
    const key = `${record.id}.${index}`;
    const message = this.#messages.get(record.id);
    if (!message || message.copies[index] === 'done') return; // removed meanwhile
    const attempts = job.state.attempts + 1;
    // Recipients that will never be delivered are written down before anything else changes.
    if (outcome.dead && outcome.dead.recipients.length > 0) await this.#writeDead(job, outcome.dead.recipients, outcome.dead.reason, attempts);
    const retry = outcome.retry;
    if (retry && retry.recipients.length > 0) {
      const state: CopyState = { attempts, nextAttemptAt: retry.nextAttemptAt, lastAttemptAt: Date.now(), lastError: retry.error, remaining: retry.recipients };
      message.copies[index] = state;
      this.#jobs.set(key, { record, index, state });
      return this.#append('S', message, { index, state });
    }
    // Finished. Memory changes at once, in the same tick as the entry is queued, so that an entry
    // queued later (a compaction's rewrite) carries this change too.
    message.copies[index] = 'done';
    this.#jobs.delete(key);
    const last = message.copies.every((slot) => slot === 'done');
    if (last) this.#forget(record.id, message);
    await this.#append('D', message, { index });
    if (!last) return;
    if (message.body === 'file') await unlinkQuiet(join(this.#bodiesDir, `${record.id}.eml`));
    this.#maintain();
  }

  async #writeDead(job: CopyJob, recipients: readonly EnvelopeAddress[], reason: string, attempts: number): Promise<void> {
    const { record, index } = job;
    const copy = record.copies[index]!;
    const letter: DeadLetter = { id: record.id, destination: copy.destination, ...(copy.name !== undefined && { name: copy.name }), recipients, reason, attempts, deadAt: Date.now() };
    await this.#writeDeadBody(record.id);
    // Several dead-letter events for one copy (partial failures) each get their own file.
    let name = `${record.id}.${index}.json`;
    for (let n = 1; await exists(join(this.#dead, name)); n++) name = `${record.id}.${index}.${n}.json`;
    await writeFileDurable(join(this.#dead, name), JSON.stringify({ ...letter, sender: record.sender, createdAt: record.createdAt }, null, 2));
    this.#log.warn({ id: record.id, destination: letter.destination, recipients: recipients.length, reason }, 'copy dead-lettered');
  }

  /** The body beside its dead letters, once per message. */
  async #writeDeadBody(id: string): Promise<void> {
    const path = join(this.#dead, `${id}.eml`);
    if (await exists(path)) return;
    if (this.#messages.get(id)?.body === 'file') {
      try {
        await link(join(this.#bodiesDir, `${id}.eml`), path);
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') return;
        throw err;
      }
    }
    const tmp = `${path}.${process.pid}.${++deadBodyTmp}.tmp`; // two copies may die at once
    await pipeline(this.openBody(id), createWriteStream(tmp, { mode: 0o600, flush: true }));
    await rename(tmp, path);
  }

  async retryNow(id?: string): Promise<number> {
    const count = this.#markDue(id);
    if (this.#writer) {
      this.#emitDue();
      return count;
    }
    // Not the owner: a request file, picked up by the running router (or the next one).
    await writeFileDurable(join(this.#dir, RETRY_FILE), `${id ?? '*'}\n`, false);
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

  /** Acts on request files written by `gosmtp-dup queue` in another process, one check at a time. */
  #requests(): Promise<void> {
    if (this.#closed) return Promise.resolve();
    this.#checkingRequests ??= this.#checkRequests()
      .catch((err: Error) => this.#log.error({ err: err.message }, 'cannot read queue requests'))
      .finally(() => {
        this.#checkingRequests = undefined;
      });
    return this.#checkingRequests;
  }

  async #checkRequests(): Promise<void> {
    for (const name of await readdir(this.#dir)) {
      if (this.#closed) return;
      // Each request on its own: one that cannot be served (a folder by that name, say) must
      // not hold up the others.
      try {
        if (name === RETRY_FILE) await this.#retryRequest();
        else if (name.startsWith(DELETE_PREFIX) && ID_RE.test(name.slice(DELETE_PREFIX.length))) await this.#answerRequest(name, async (id) => ((await this.remove(id)) ? DELETED : NOT_QUEUED));
        else if (name.startsWith(REQUEUE_PREFIX) && /^(?:all|[0-9A-Za-z]{6,40})$/.test(name.slice(REQUEUE_PREFIX.length))) await this.#answerRequest(name, async (target) => String(await this.requeueDead(target === 'all' ? undefined : target)));
      } catch (err) {
        this.#log.error({ request: name, err: (err as Error).message }, 'cannot serve queue request');
      }
    }
  }

  async #retryRequest(): Promise<void> {
    // Taken under a name of its own first: a request written meanwhile is a new file.
    const taken = join(this.#dir, `${RETRY_FILE}.${process.pid}.taken`);
    await rm(taken, { recursive: true, force: true });
    await rename(join(this.#dir, RETRY_FILE), taken);
    try {
      const id = (await readFile(taken, 'utf8')).trim();
      this.#markDue(id === '*' || id === '' ? undefined : id);
      this.#emitDue();
    } finally {
      await rm(taken, { recursive: true, force: true });
    }
  }

  /**
   * Serves a request that `gosmtp-dup queue` waits on (see #ask): its answer is written beside it,
   * `failed: <why>` when `act` throws, then the request goes.
   */
  async #answerRequest(name: string, act: (target: string) => Promise<string>): Promise<void> {
    const request = join(this.#dir, name);
    if (!(await stat(request)).isFile()) throw new Error('not a file');
    let result: string;
    try {
      result = await act(name.slice(name.indexOf('-') + 1));
    } catch (err) {
      result = `failed: ${(err as Error).message}`;
      this.#log.error({ request: name, err: (err as Error).message }, 'cannot serve queue request');
    }
    await writeFileDurable(`${request}${RESULT_SUFFIX}`, result, false);
    await unlinkQuiet(request);
  }

  /**
   * Drops a message and all its pending copies. Returns whether it existed. Not the owner: asks
   * the running router and waits until it has done so.
   */
  async remove(id: string): Promise<boolean> {
    if (!ID_RE.test(id)) return false;
    const message = this.#messages.get(id);
    if (!this.#writer) {
      if (!message) return false;
      const answer = await this.#ask(`${DELETE_PREFIX}${id}`, `${id}\n`);
      if (answer !== DELETED && answer !== NOT_QUEUED) throw new GsdError(ErrorCodes.SPOOL_FAILED, `the running router could not delete ${id}: ${answer}`);
      this.#forget(id, message);
      return answer === DELETED;
    }
    if (!message) return false;
    // Forgotten at once, in the tick the entry is queued, so that no later entry revives it.
    this.#forget(id, message);
    try {
      await this.#append('X', message, {});
    } catch (err) {
      this.#messages.set(id, message); // not deleted: it stays queued, as on disk
      this.#queue(id, message);
      throw err;
    }
    if (message.body === 'file') await unlinkQuiet(join(this.#bodiesDir, `${id}.eml`));
    this.#log.info({ id }, 'message removed from the queue; its copies are dropped');
    this.#maintain();
    return true;
  }

  /** Leaves a request file for the running router and waits for its one-line answer. */
  async #ask(name: string, content: string): Promise<string> {
    const request = join(this.#dir, name);
    const result = `${request}${RESULT_SUFFIX}`;
    await unlinkQuiet(result);
    await writeFileDurable(request, content, false);
    for (const started = Date.now(); !(await exists(result)); ) {
      if (Date.now() - started > REQUEST_WAIT_MS) throw new GsdError(ErrorCodes.SPOOL_FAILED, `the running router did not act on the request within ${REQUEST_WAIT_MS / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const answer = (await readFile(result, 'utf8')).trim();
    await unlinkQuiet(result);
    return answer;
  }

  /**
   * Puts dead letters (all, or one message's) back in the queue, due now, as a new message with
   * one copy per dead letter: once the destination's problem is fixed (the mailboxes exist on the
   * new server), like Postfix's `postsuper -r`. Returns how many copies. A dead letter leaves the
   * dead folder only after its copy is committed. Not the owner: asks the running router.
   */
  async requeueDead(id?: string): Promise<number> {
    if (id !== undefined && !ID_RE.test(id)) return 0;
    if (!this.#writer) {
      const answer = await this.#ask(`${REQUEUE_PREFIX}${id ?? 'all'}`, '');
      if (!/^\d+$/.test(answer)) throw new GsdError(ErrorCodes.SPOOL_FAILED, `the running router could not requeue: ${answer}`);
      return Number(answer);
    }
    const byMessage = new Map<string, string[]>();
    for (const name of await readdir(this.#dead)) {
      const messageId = DEAD_LETTER_RE.exec(name)?.[1];
      if (messageId === undefined || (id !== undefined && messageId !== id)) continue;
      byMessage.set(messageId, [...(byMessage.get(messageId) ?? []), name]);
    }
    let count = 0;
    for (const [messageId, names] of byMessage) {
      const letters = await Promise.all(names.map(async (name) => JSON.parse(await readFile(join(this.#dead, name), 'utf8')) as StoredDeadLetter));
      const copies = letters.map((letter) => ({ destination: letter.destination, ...(letter.name !== undefined && { name: letter.name }), recipients: letter.recipients }));
      // A new id (the original may still have copies queued): the original's (queue ids are upper
      // case), then `r`, the time and a counter; an earlier `r...` suffix is replaced, not grown.
      const newId = `${messageId.replace(/r[0-9a-z]+$/, '')}r${Date.now().toString(36)}${(requeueCounter++ % 36).toString(36)}`;
      const body = join(this.#dead, `${messageId}.eml`);
      const writer = this.begin(newId);
      try {
        for await (const chunk of createReadStream(body)) if (!writer.body.write(chunk)) await once(writer.body, 'drain');
        const size = (await stat(body)).size;
        await writer.prepare({ version: 1, id: newId, createdAt: Date.now(), sender: letters[0]!.sender, client: { address: '', helo: 'requeued' }, size, copies });
        await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
      for (const name of names) await unlinkQuiet(join(this.#dead, name));
      if (!(await readdir(this.#dead)).some((name) => DEAD_LETTER_RE.exec(name)?.[1] === messageId)) await unlinkQuiet(body);
      this.#log.info({ id: messageId, requeuedAs: newId, copies: copies.length }, 'dead letters requeued');
      count += copies.length;
    }
    return count;
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

  /** An idle head segment holding only finished messages is sealed, so that it can go. */
  #sealIdle(): void {
    const writer = this.#writer;
    if (!writer) return;
    const head = writer.active;
    if (head.size > 0 && head.queued === 0 && (this.#segments.get(head.seq)?.live.size ?? 0) === 0) writer.seal();
  }

  /** Compacts and deletes segments; runs one at a time, again if asked meanwhile. */
  #maintain(): Promise<void> {
    if (!this.#writer || this.#closed) return Promise.resolve();
    if (this.#maintaining) {
      this.#maintainAgain = true;
      return this.#maintaining;
    }
    this.#maintaining = (async () => {
      do {
        this.#maintainAgain = false;
        await this.#compact();
        await this.#deleteFinished();
      } while (this.#maintainAgain);
    })()
      .catch((err: Error) => this.#log.error({ err: err.message }, 'spool maintenance failed'))
      .finally(() => {
        this.#maintaining = undefined;
      });
    return this.#maintaining;
  }

  /** Sealed segments at most half live (and old enough): their live messages are rewritten at the head. */
  async #compact(): Promise<void> {
    const head = this.#writer!.active.seq;
    const now = Date.now();
    // Finished segments kept only because their entries speak about a segment's messages.
    const pinned = new Map<number, number>();
    for (const other of this.#segments.values()) {
      if (other.live.size > 0 || other.segment.seq >= head) continue;
      for (const seq of other.refs) pinned.set(seq, (pinned.get(seq) ?? 0) + other.segment.size);
    }
    for (const use of [...this.#segments.values()]) {
      const { segment } = use;
      if (segment.seq >= head || use.live.size === 0) continue;
      if (use.sealedAt !== undefined && now - use.sealedAt < this.#compactAfterMs) continue;
      // Rewritten when at most half of it is live, or when rewriting it frees more than it
      // costs: a slow copy must not keep finished segments on disk, one after another.
      if (use.liveBytes * 2 > segment.size && use.liveBytes > (pinned.get(segment.seq) ?? 0)) continue;
      const ids = [...use.live];
      if (ids.some((id) => !this.#messages.get(id)?.committed)) continue; // a commit in progress: later
      const writes: Promise<void>[] = [];
      for (const id of ids) {
        const message = this.#messages.get(id);
        if (!message || !use.live.has(id)) continue; // finished meanwhile
        const body = message.body === 'file' ? undefined : (this.#bodies.get(id) ?? (await this.#readInline(message)));
        if (this.#messages.get(id) !== message || !use.live.has(id)) continue; // finished while reading
        writes.push(this.#appendMessage(message, { record: message.record, body: body ? 'inline' : 'file', committed: true, copies: [...message.copies] }, body, false).durable);
      }
      await Promise.all(writes);
      this.#log.info({ segment: segment.seq, moved: writes.length }, 'spool segment compacted');
    }
  }

  async #readInline(message: StoredMessage): Promise<Buffer> {
    const { offset, length } = message.body as { offset: number; length: number };
    const handle = await open(message.segment.path, 'r');
    try {
      const buffer = Buffer.allocUnsafe(length);
      const { bytesRead } = await handle.read(buffer, 0, length, offset);
      if (bytesRead !== length) throw new Error(`short read in ${message.segment.path}`);
      return buffer;
    } finally {
      await handle.close();
    }
  }

  /**
   * Deletes segments with nothing left to deliver, oldest dependencies first: a segment whose
   * entries speak about an older segment's messages goes only once that one is gone for good
   * (folder fsync'd), or a restart would find those messages without their commits or marks.
   */
  async #deleteFinished(): Promise<void> {
    const head = this.#writer!.active.seq;
    for (;;) {
      const gone = [...this.#segments.values()].filter(
        (use) => use.segment.seq < head && use.segment.queued === 0 && use.live.size === 0 && use.readers === 0 && [...use.refs].every((seq) => !this.#segments.has(seq)),
      );
      if (gone.length === 0) return;
      for (const use of gone) await unlinkQuiet(use.segment.path);
      await this.#writer!.syncDir();
      for (const use of gone) this.#segments.delete(use.segment.seq);
    }
  }

  /** Imports copies queued by a version that kept one file per message (`queue/`). */
  async #migrateLegacy(): Promise<void> {
    const legacy = await readLegacyQueue(join(this.#dir, 'queue'), this.#bodiesDir, MEMORY_BODY_BYTES);
    if (!legacy) return;
    await this.#bodiesSync.sync(); // large bodies moved into bodies/
    let writes: Promise<void>[] = [];
    let pendingBytes = 0;
    for (const { record, copies, inlineBody } of legacy.messages) {
      const body = inlineBody ? await readFile(inlineBody) : undefined;
      const replayed = this.#messages.get(record.id); // an import interrupted before: replaced
      if (replayed) this.#forget(record.id, replayed);
      const message: StoredMessage = { record, segment: this.#writer!.active, bytes: 0, body: 'file', committed: true, copies };
      writes.push(this.#appendMessage(message, { record, body: body ? 'inline' : 'file', committed: true, copies }, body, true).durable);
      this.#messages.set(record.id, message);
      this.#queue(record.id, message);
      // On disk in batches: memory holds at most one batch of old bodies.
      pendingBytes += body?.length ?? 0;
      if (pendingBytes >= BODY_CACHE_BYTES) {
        await Promise.all(writes);
        writes = [];
        pendingBytes = 0;
      }
    }
    await Promise.all(writes);
    await legacy.remove();
    this.#log.info({ messages: legacy.messages.length }, 'copies queued by an earlier version imported into the spool log');
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#watcher) clearInterval(this.#watcher);
    await this.#checkingRequests;
    await this.#maintaining;
    await this.#writer?.close();
    await this.#bodiesSync.close();
  }
}

class LogSpoolWriter implements SpoolWriter {
  readonly body: SpoolBody;
  #record: SpoolRecord | undefined;
  #inMemory: Buffer | undefined;
  #commitTried = false;
  #finished = false;
  /** The prepare in progress: an abort waits for it, or the message would be registered after. */
  #preparing: Promise<void> | undefined;

  constructor(
    private readonly spool: LogSpool,
    private readonly id: string,
    private readonly bodyPath: string,
  ) {
    this.body = new SpoolBody(bodyPath, MEMORY_BODY_BYTES);
  }

  prepare(record: SpoolRecord): Promise<void> {
    this.#preparing = this.#prepare(record);
    return this.#preparing;
  }

  async #prepare(record: SpoolRecord): Promise<void> {
    try {
      await new Promise<void>((resolve, reject) => {
        if (this.body.writableFinished) return resolve();
        if (this.body.errored || this.body.destroyed) return reject(this.body.errored ?? new Error('message body abandoned'));
        this.body.once('error', reject);
        this.body.once('finish', resolve);
        // Destroyed by an abort while it was still being written: never finishes.
        this.body.once('close', () => reject(new Error('message body abandoned')));
        this.body.end();
      });
      this.#inMemory = this.body.inMemory;
      await this.spool._prepare(record, this.#inMemory, this.#inMemory ? undefined : this.bodyPath);
      this.#record = record;
    } catch (err) {
      throw new GsdError(ErrorCodes.SPOOL_FAILED, `cannot store message ${this.id}: ${(err as Error).message}`, { cause: err });
    }
  }

  async commit(): Promise<void> {
    if (!this.#record) throw new GsdError(ErrorCodes.SPOOL_FAILED, 'commit before prepare');
    this.#commitTried = true;
    try {
      await this.spool._commit(this.id, this.#inMemory);
      this.#finished = true;
    } catch (err) {
      throw new GsdError(ErrorCodes.SPOOL_FAILED, `cannot commit message ${this.id}: ${(err as Error).message}`, { cause: err });
    }
  }

  async abort(): Promise<void> {
    if (this.#finished) return;
    this.#finished = true;
    this.body.destroy();
    await this.#preparing?.catch(() => undefined);
    // A body file still being opened is closed first, or it would appear after the unlink.
    if (!this.body.closed) await new Promise((resolve) => this.body.once('close', resolve));
    await unlinkQuiet(this.bodyPath).catch(() => undefined);
    await this.spool._abort(this.id, this.#commitTried);
  }
}

let deadBodyTmp = 0;
let requeueCounter = 0;

/** A dead letter as its file holds it: enough to queue the copy again. */
interface StoredDeadLetter extends DeadLetter {
  readonly sender: EnvelopeAddress;
  readonly createdAt: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
