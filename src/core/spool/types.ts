/**
 * The spool: durable storage of asynchronous copies. The core talks only to this interface, so a
 * shared backend for several router instances can replace the file-system one.
 *
 * Life of a message: `begin` (body written while it streams) → `prepare` (body and envelope
 * durable, not yet visible) → `commit` (visible to the worker, atomically) or `abort`.
 * Life of a copy: due → attempted → delivered | retry later | dead-lettered with a reason.
 */
import type { Readable, Writable } from 'node:stream';
import type { EnvelopeAddress } from '../envelope.ts';

export interface SpoolCopy {
  /** The destination's label (`host:port`, a URL, `maildir:/path`), for people and metrics. */
  readonly destination: string;
  /** The name in `destinations:` it was routed by, so its own credentials and TLS settings apply. */
  readonly name?: string;
  readonly recipients: readonly EnvelopeAddress[];
}

/** Everything needed to deliver a message's copies, written once at commit and never changed. */
export interface SpoolRecord {
  readonly version: 1;
  readonly id: string;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly sender: EnvelopeAddress;
  readonly client: { readonly address: string; readonly helo: string };
  readonly size: number;
  readonly copies: readonly SpoolCopy[];
}

/** Mutable per-copy delivery state. */
export interface CopyState {
  readonly attempts: number;
  /** Epoch milliseconds; 0 means due now. */
  readonly nextAttemptAt: number;
  readonly lastAttemptAt?: number;
  readonly lastError?: string;
  /** Recipients still to deliver, when a previous attempt delivered or dead-lettered some. */
  readonly remaining?: readonly EnvelopeAddress[];
}

/** A copy's slot in its message: its state, or finished (delivered or dead-lettered). */
export type CopySlot = CopyState | 'done';

export interface CopyJob {
  readonly record: SpoolRecord;
  /** Index into `record.copies`. */
  readonly index: number;
  readonly state: CopyState;
}

export const copyRecipients = (job: CopyJob): readonly EnvelopeAddress[] =>
  job.state.remaining ?? job.record.copies[job.index]!.recipients;

/** The result of one attempt. Recipients in neither list were delivered. */
export interface CopyOutcome {
  /** Refused for good (5xx, or too old): written to the dead-letter folder with the reason. */
  readonly dead?: { readonly recipients: readonly EnvelopeAddress[]; readonly reason: string };
  /** To try again later; absent when the copy is finished. */
  readonly retry?: { readonly recipients: readonly EnvelopeAddress[]; readonly error: string; readonly nextAttemptAt: number };
}

export interface SpoolWriter {
  /** Write the canonical message body here while it streams. */
  readonly body: Writable;
  /**
   * Writes body and record, still invisible to the worker. A spool that cannot take them (a full
   * disk) fails here, before the primary gets the final dot.
   */
  prepare(record: SpoolRecord): Promise<void>;
  /**
   * Makes the message durable (body, record and commit fsync'd) and visible to the worker,
   * atomically. Only after this may the client hear 250.
   */
  commit(): Promise<void>;
  /** Forgets the message (primary refused it, or the client went away). Never throws. */
  abort(): Promise<void>;
}

export interface DeadLetter {
  readonly id: string;
  readonly destination: string;
  /** The name in `destinations:` it was routed by (absent in letters written before 2026-12-03). */
  readonly name?: string;
  readonly recipients: readonly EnvelopeAddress[];
  readonly reason: string;
  readonly attempts: number;
  readonly deadAt: number;
}

export interface Spool {
  /** Creates folders, clears half-written messages, loads pending copies. */
  open(options?: { owner?: boolean }): Promise<void>;
  begin(id: string): SpoolWriter;
  /** Copies not yet finished, with their state. */
  pending(): readonly CopyJob[];
  /** The same, live and without a copy of the list: for a scan that does not change the spool. */
  jobs(): Iterable<CopyJob>;
  /** The stored body of a message. */
  openBody(id: string): Readable;
  /** The body, when it is held in memory (most small messages): sent from there without a stream. */
  cachedBody(id: string): Buffer | undefined;
  /** Whether the job's message is still on disk; forgets it if not (deleted by an administrator). */
  stillQueued(job: CopyJob): Promise<boolean>;
  /** Moves a copy's next attempt (in memory only: after a restart it is due at once). */
  postpone(job: CopyJob, nextAttemptAt: number): void;
  /** Records the result of an attempt durably; a finished message's files are removed. */
  settle(job: CopyJob, outcome: CopyOutcome): Promise<void>;
  /**
   * Makes every pending copy (or the copies of one message) due now, here and in a router running
   * on the same spool (which picks the request up within a second). Returns how many.
   */
  retryNow(id?: string): Promise<number>;
  /** Dead letters (all, or one message's) back in the queue, due now. Returns how many copies. */
  requeueDead(id?: string): Promise<number>;
  /** Drops a message and all its pending copies. Returns whether it existed. */
  remove(id: string): Promise<boolean>;
  deadLetters(): Promise<DeadLetter[]>;
  /** Subscribes to "something new is due" (a commit, a retry request). */
  onDue(listener: () => void): void;
  close(): Promise<void>;
}
