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

const REPLY_LINE = /^(\d{3})([ -]|$)(.*)$/;

export class ReplyReader {
  #buffer = '';
  readonly #decoder = new StringDecoder('utf8');
  /** The lines so far of a multi-line reply, and their length. */
  #lines: string[] = [];
  #bytes = 0;
  #code = 0;

  /**
   * Feeds bytes, returns the replies completed by them. Throws on input that is not SMTP.
   * Replies are UTF-8 (RFC 6531), decoded across chunk boundaries.
   */
  push(chunk: Buffer): UpstreamReply[] {
    const buffer = this.#buffer + this.#decoder.write(chunk);
    const replies: UpstreamReply[] = [];
    let start = 0;
    for (let newline = buffer.indexOf('\n'); newline !== -1; newline = buffer.indexOf('\n', start)) {
      const end = newline > start && buffer.charCodeAt(newline - 1) === 13 ? newline - 1 : newline;
      const reply = this.#line(buffer.slice(start, end));
      start = newline + 1;
      if (reply) replies.push(reply);
    }
    this.#buffer = start === 0 ? buffer : buffer.slice(start);
    if (this.#buffer.length > MAX_REPLY_BYTES) throw new Error('reply line too long');
    return replies;
  }

  #line(line: string): UpstreamReply | undefined {
    const match = REPLY_LINE.exec(line);
    if (!match) throw new Error(`not an SMTP reply: ${JSON.stringify(line.slice(0, 80))}`);
    const code = Number(match[1]);
    const text = match[3]!;
    if (this.#lines.length === 0 && match[2] !== '-') {
      // One line: most replies.
      const reply = splitEnhanced(code, text);
      return { code, enhanced: reply.enhanced, text: reply.text.trim(), lines: [reply.text] };
    }
    if (this.#lines.length > 0 && code !== this.#code) throw new Error('multi-line reply changed its code');
    this.#code = code;
    this.#lines.push(text);
    this.#bytes += text.length;
    if (this.#bytes > MAX_REPLY_BYTES) throw new Error('reply too long');
    if (match[2] === '-') return undefined;
    const lines = this.#lines.map((each) => splitEnhanced(code, each).text);
    const first = splitEnhanced(code, this.#lines[0]!);
    this.#lines = [];
    this.#bytes = 0;
    return { code, enhanced: first.enhanced, text: lines.join(' ').trim(), lines };
  }
}
