/**
 * Message bodies, with O(1) state between chunks, as plain per-chunk calls (used inline where
 * the body is read) and, where a stream is needed, as a transform:
 *
 * - `Canonicalizer` (`CanonicalBody` as a stream): what arrives from the client (already
 *   dot-unstuffed by smtp-server) becomes the canonical body stored and relayed: bare CR / bare
 *   LF either normalized to CRLF or rejected (SMTP smuggling, CVE-2023-51764: a lenient upstream
 *   must never see `<LF>.<LF>`), and the size limit enforced while bytes flow, so nothing over
 *   the limit reaches anyone.
 * - `DotStuffer`: a canonical body as it goes on the wire after DATA: leading dots doubled,
 *   a final CRLF guaranteed, and the `.` terminator appended.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { hasBareLineEnding } from './bare-line-endings.ts';
import { ErrorCodes, GsdError } from './errors.ts';

export type BareLineEndingPolicy = 'normalize' | 'reject';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const EMPTY = Buffer.alloc(0);

export interface CanonicalBodyOptions {
  policy: BareLineEndingPolicy;
  maxBytes: number;
}

/** A body's bytes on their way somewhere, chunk by chunk: what goes on, or a throw that fails the message. */
export interface BodyFilter {
  push(chunk: Buffer): Buffer;
  /** What is left once the body has ended. */
  end(): Buffer;
}

/** Fixes or rejects bare CR and LF, and counts bytes against the limit (throws a GsdError). */
export class Canonicalizer implements BodyFilter {
  /** Bytes of canonical output so far. */
  bytes = 0;
  /** The previous chunk ended in CR, whose meaning depends on the next byte. */
  #pendingCR = false;
  readonly #options: CanonicalBodyOptions;

  constructor(options: CanonicalBodyOptions) {
    this.#options = options;
  }

  push(chunk: Buffer): Buffer {
    return this.#count(this.#canonical(chunk, false));
  }

  end(): Buffer {
    return this.#count(this.#canonical(EMPTY, true));
  }

  #count(out: Buffer): Buffer {
    this.bytes += out.length;
    if (this.bytes > this.#options.maxBytes) {
      throw new GsdError(ErrorCodes.MESSAGE_TOO_BIG, `message exceeds ${this.#options.maxBytes} bytes`);
    }
    return out;
  }

  #canonical(chunk: Buffer, final: boolean): Buffer {
    let input = chunk;
    if (this.#pendingCR) {
      input = Buffer.concat([Buffer.from([CR]), chunk]);
      this.#pendingCR = false;
    }
    // Fast path: no CR or LF out of pairs. Most chunks of a well-formed message end here.
    let last = input.length;
    if (!final && input.length > 0 && input[input.length - 1] === CR) {
      this.#pendingCR = true;
      last -= 1;
    }
    const body = last === input.length ? input : input.subarray(0, last);
    if (!hasBareLineEnding(body)) return body;
    if (this.#options.policy === 'reject') {
      throw new GsdError(ErrorCodes.BARE_LINE_ENDING, 'message contains a bare CR or LF');
    }
    return normalizeLineEndings(body);
  }
}

/** `Canonicalizer` as a stream, where the body goes to more than one place (the spool too). */
export class CanonicalBody extends Transform {
  readonly #canonicalizer: Canonicalizer;

  constructor(options: CanonicalBodyOptions) {
    super();
    this.#canonicalizer = new Canonicalizer(options);
  }

  /** Bytes of canonical output so far. */
  get bytes(): number {
    return this.#canonicalizer.bytes;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, done: TransformCallback): void {
    this.#pass(() => this.#canonicalizer.push(chunk), done);
  }

  override _flush(done: TransformCallback): void {
    this.#pass(() => this.#canonicalizer.end(), done);
  }

  #pass(next: () => Buffer, done: TransformCallback): void {
    let out: Buffer;
    try {
      out = next();
    } catch (err) {
      return done(err as Error);
    }
    if (out.length > 0) this.push(out);
    done();
  }
}

/** CR LF stays; a lone CR or lone LF becomes CR LF. `buf` never ends in a CR awaiting its LF. */
function normalizeLineEndings(buf: Buffer): Buffer {
  const out: number[] = [];
  for (let i = 0; i < buf.length; i++) {
    const byte = buf[i]!;
    if (byte === CR) {
      out.push(CR, LF);
      if (buf[i + 1] === LF) i++;
    } else if (byte === LF) {
      out.push(CR, LF);
    } else {
      out.push(byte);
    }
  }
  return Buffer.from(out);
}

/**
 * A body up to this size is written upstream in one piece with its terminator: on loopback and
 * LANs each socket write is a system call that also wakes the receiver, and most mail is small.
 */
const WIRE_BLOCK_BYTES = 64 * 1024;

/**
 * Dot-stuffs a canonical (CRLF-only) body and terminates it for the DATA phase, as plain calls
 * (the upstream connection writes what comes out straight to its socket: no stream stage). Out
 * come groups of pieces, each group to be written at once (one `writev`, nothing copied): a body
 * up to `blockBytes` is one group from `end()`, terminator included; a larger one flows on from
 * `push()` as it arrives once the first block is out (memory stays flat).
 */
export class DotStuffer {
  #atLineStart = true;
  /** The body's last two bytes so far; CR LF before any (an empty body needs no extra CRLF). */
  #beforeLast = CR;
  #last = LF;
  readonly #blockBytes: number;
  #block: Buffer[] = [];
  #blockLength = 0;
  /** Past the first block: pieces go out as they come. */
  #flowing = false;

  constructor(blockBytes = WIRE_BLOCK_BYTES) {
    this.#blockBytes = blockBytes;
  }

  /** The pieces ready to go out for `chunk` (often none yet: they wait for the block). */
  push(chunk: Buffer): readonly Buffer[] {
    if (chunk.length === 0) return NOTHING;
    const out: Buffer[] = this.#flowing ? [] : this.#block;
    let start = 0;
    let i = this.#atLineStart ? 0 : chunk.indexOf('\n.') + 1;
    if (!this.#atLineStart && i === 0) i = -1;
    while (i !== -1 && i < chunk.length) {
      if (chunk[i] === DOT) {
        // `i` is the first byte of a line and it is a dot: send it twice.
        out.push(chunk.subarray(start, i + 1));
        start = i; // the dot goes out again with the rest
      }
      const next = chunk.indexOf('\n.', i);
      i = next === -1 ? -1 : next + 1;
    }
    out.push(start === 0 ? chunk : chunk.subarray(start));
    this.#atLineStart = chunk[chunk.length - 1] === LF;
    this.#beforeLast = chunk.length >= 2 ? chunk[chunk.length - 2]! : this.#last;
    this.#last = chunk[chunk.length - 1]!;
    if (this.#flowing) return out;
    this.#blockLength += chunk.length;
    if (this.#blockLength < this.#blockBytes) return NOTHING;
    this.#flowing = true;
    return this.#takeBlock();
  }

  /** The rest: whatever waited, a final CRLF if the body lacked one, and the `.` terminator. */
  end(): Buffer[] {
    const out = this.#takeBlock();
    out.push(this.#beforeLast === CR && this.#last === LF ? TERMINATOR : CRLF_TERMINATOR);
    return out;
  }

  #takeBlock(): Buffer[] {
    const block = this.#block;
    this.#block = [];
    this.#blockLength = 0;
    return block;
  }
}

/** What `push` gives when nothing is ready (never written to). */
const NOTHING: readonly Buffer[] = Object.freeze([]);

const TERMINATOR = Buffer.from('.\r\n');
const CRLF_TERMINATOR = Buffer.from('\r\n.\r\n');
