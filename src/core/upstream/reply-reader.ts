/**
 * Reads SMTP replies from a byte stream: `250-first`, `250-more`, `250 last`.
 * Pure and synchronous so that it can be fed from any socket and tested without one.
 */
import { StringDecoder } from 'node:string_decoder';
import { splitEnhanced, type SmtpReply } from '../replies.ts';

export interface UpstreamReply extends SmtpReply {
  /** Every line's text, without codes; EHLO keywords live here. */
  readonly lines: readonly string[];
  /** Set on the reply to a MAIL FROM that was pipelined with the first RCPT TO (and refused). */
  readonly command?: 'MAIL';
}

/** A reply longer than this is a broken or hostile server, not SMTP. */
const MAX_REPLY_BYTES = 64 * 1024;

export class ReplyReader {
  #buffer = '';
  readonly #decoder = new StringDecoder('utf8');
  #lines: string[] = [];
  #code = 0;

  /**
   * Feeds bytes, returns the replies completed by them. Throws on input that is not SMTP.
   * Replies are UTF-8 (RFC 6531), decoded across chunk boundaries.
   */
  push(chunk: Buffer): UpstreamReply[] {
    this.#buffer += this.#decoder.write(chunk);
    const replies: UpstreamReply[] = [];
    let newline: number;
    while ((newline = this.#buffer.indexOf('\n')) !== -1) {
      const line = this.#buffer.slice(0, newline).replace(/\r$/, '');
      this.#buffer = this.#buffer.slice(newline + 1);
      const reply = this.#line(line);
      if (reply) replies.push(reply);
    }
    if (this.#buffer.length > MAX_REPLY_BYTES) throw new Error('reply line too long');
    return replies;
  }

  #line(line: string): UpstreamReply | undefined {
    const match = /^(\d{3})([ -]|$)(.*)$/.exec(line);
    if (!match) throw new Error(`not an SMTP reply: ${JSON.stringify(line.slice(0, 80))}`);
    const code = Number(match[1]);
    if (this.#lines.length > 0 && code !== this.#code) throw new Error('multi-line reply changed its code');
    this.#code = code;
    this.#lines.push(match[3]!);
    if (this.#lines.reduce((n, l) => n + l.length, 0) > MAX_REPLY_BYTES) throw new Error('reply too long');
    if (match[2] === '-') return undefined;
    const lines = this.#lines.map((text) => splitEnhanced(code, text).text);
    const first = splitEnhanced(code, this.#lines[0]!);
    this.#lines = [];
    return { code, enhanced: first.enhanced, text: lines.join(' ').trim(), lines };
  }
}
