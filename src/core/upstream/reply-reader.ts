/**
 * Reads SMTP replies from a byte stream: `250-first`, `250-more`, `250 last`.
 * Pure and synchronous so that it can be fed from any socket and tested without one.
 */
import { splitEnhanced, type SmtpReply } from '../replies.ts';

export interface UpstreamReply extends SmtpReply {
  /** Every line's text, without codes; EHLO keywords live here. */
  readonly lines: readonly string[];
  /** Set on the reply to a MAIL FROM that was pipelined with the first RCPT TO (and refused). */
  readonly command?: 'MAIL';
  /** LMTP's final replies, one per accepted recipient in order (the reply itself is the worst). */
  readonly perRecipient?: readonly UpstreamReply[];
}

/** A reply longer than this is a broken or hostile server, not SMTP. */
const MAX_REPLY_BYTES = 64 * 1024;

const CR = 0x0d;
const LF = 0x0a;
const EMPTY = Buffer.alloc(0);

export class ReplyReader {
  /** The bytes of a line not yet complete. */
  #rest: Buffer = EMPTY;
  /** The lines so far of a multi-line reply, and their length. */
  #lines: string[] = [];
  #bytes = 0;
  #code = 0;

  /**
   * Feeds bytes, returns the replies completed by them. Throws on input that is not SMTP.
   * Replies are UTF-8 (RFC 6531). Only whole lines are decoded, and an LF is never part of a
   * multi-byte character, so a character cut between chunks is decoded whole.
   */
  push(chunk: Buffer): UpstreamReply[] {
    const bytes = this.#rest.length === 0 ? chunk : Buffer.concat([this.#rest, chunk]);
    const replies: UpstreamReply[] = [];
    let start = 0;
    for (let newline = bytes.indexOf(LF); newline !== -1; newline = bytes.indexOf(LF, start)) {
      const end = newline > start && bytes[newline - 1] === CR ? newline - 1 : newline;
      const reply = this.#line(bytes.toString('utf8', start, end));
      start = newline + 1;
      if (reply) replies.push(reply);
    }
    // Copied: a view would keep the socket's whole read buffer alive.
    this.#rest = start === bytes.length ? EMPTY : Buffer.from(bytes.subarray(start));
    if (this.#rest.length > MAX_REPLY_BYTES) throw new Error('reply line too long');
    return replies;
  }

  #line(line: string): UpstreamReply | undefined {
    // `ddd`, then a space, a hyphen (more lines follow) or nothing; no CR inside the line.
    const code = replyCode(line);
    const separator = line.charCodeAt(3); // NaN for a code alone
    if (code < 0 || !(line.length === 3 || separator === 0x20 || separator === 0x2d) || line.includes('\r')) {
      throw new Error(`not an SMTP reply: ${JSON.stringify(line.slice(0, 80))}`);
    }
    const text = line.slice(4);
    const more = separator === 0x2d;
    if (this.#lines.length === 0 && !more) {
      // One line: most replies.
      const reply = splitEnhanced(code, text);
      return { code, enhanced: reply.enhanced, text: reply.text.trim(), lines: [reply.text] };
    }
    if (this.#lines.length > 0 && code !== this.#code) throw new Error('multi-line reply changed its code');
    this.#code = code;
    this.#lines.push(text);
    this.#bytes += text.length;
    if (this.#bytes > MAX_REPLY_BYTES) throw new Error('reply too long');
    if (more) return undefined;
    const lines = this.#lines.map((each) => splitEnhanced(code, each).text);
    const first = splitEnhanced(code, this.#lines[0]!);
    this.#lines = [];
    this.#bytes = 0;
    return { code, enhanced: first.enhanced, text: lines.join(' ').trim(), lines };
  }
}

/** The three digits a line starts with, as a number; -1 if it does not start with three digits. */
function replyCode(line: string): number {
  let code = 0;
  for (let i = 0; i < 3; i++) {
    const digit = line.charCodeAt(i) - 0x30; // NaN past the end
    if (!(digit >= 0 && digit <= 9)) return -1;
    code = code * 10 + digit;
  }
  return code;
}
