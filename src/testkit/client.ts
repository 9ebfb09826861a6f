/**
 * A test SMTP client on a raw socket: every command and every reply visible, and bytes sent
 * exactly as given (so tests can send what a broken or hostile client would).
 */
import net from 'node:net';
import { ReplyReader, type UpstreamReply } from '../core/upstream/reply-reader.ts';

export type Reply = UpstreamReply;

export class SmtpTestClient {
  readonly #socket: net.Socket;
  readonly #reader = new ReplyReader();
  readonly #replies: Reply[] = [];
  readonly #waiting: Array<{ resolve: (reply: Reply) => void; reject: (err: Error) => void }> = [];
  #closed = false;
  greeting!: Reply;

  private constructor(socket: net.Socket) {
    this.#socket = socket;
    socket.on('data', (chunk: Buffer) => {
      for (const reply of this.#reader.push(chunk)) {
        const waiter = this.#waiting.shift();
        if (waiter) waiter.resolve(reply);
        else this.#replies.push(reply);
      }
    });
    const end = () => {
      this.#closed = true;
      for (const waiter of this.#waiting.splice(0)) waiter.reject(new Error('connection closed'));
    };
    socket.on('close', end);
    socket.on('error', end);
  }

  static async connect(port: number, host = '127.0.0.1'): Promise<SmtpTestClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ port, host }, () => resolve(s));
      s.once('error', reject);
    });
    const client = new SmtpTestClient(socket);
    client.greeting = await client.next();
    return client;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** The next reply from the server. */
  next(timeoutMs = 15_000): Promise<Reply> {
    const queued = this.#replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no reply within ${timeoutMs} ms`)), timeoutMs);
      this.#waiting.push({
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  write(data: string | Buffer): void {
    this.#socket.write(data);
  }

  /** Writes respecting backpressure, for large bodies. */
  async writeAndDrain(data: Buffer): Promise<void> {
    if (!this.#socket.write(data)) await new Promise((resolve) => this.#socket.once('drain', resolve));
  }

  async command(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.next();
  }

  /** Sends DATA and, on 354, the body dot-stuffed and terminated; returns the final reply (or the reply to DATA). */
  async data(body: string | Buffer): Promise<Reply> {
    const go = await this.command('DATA');
    if (go.code !== 354) return go;
    this.write(dotStuff(Buffer.isBuffer(body) ? body : Buffer.from(body, 'utf8')));
    return this.next();
  }

  /** A whole transaction; returns every reply in order. */
  async send(message: { from: string; to: readonly string[]; body: string | Buffer; ehlo?: boolean }): Promise<{ mail: Reply; rcpt: Reply[]; data?: Reply }> {
    if (message.ehlo !== false) await this.command('EHLO client.test');
    const mail = await this.command(`MAIL FROM:<${message.from}>`);
    const rcpt: Reply[] = [];
    for (const to of message.to) rcpt.push(await this.command(`RCPT TO:<${to}>`));
    if (mail.code !== 250 || !rcpt.some((r) => r.code === 250)) return { mail, rcpt };
    return { mail, rcpt, data: await this.data(message.body) };
  }

  async quit(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.command('QUIT');
    } catch {
      // already gone
    }
    this.#socket.destroy();
  }

  destroy(): void {
    this.#socket.destroy();
  }
}

/** Dot-stuffs a CRLF message and appends the terminator (adds a final CRLF if missing). */
export function dotStuff(body: Buffer): Buffer {
  const text = body.toString('latin1');
  const stuffed = text.replace(/(^|\r\n)\./g, '$1..');
  return Buffer.from(stuffed + (stuffed.length === 0 || stuffed.endsWith('\r\n') ? '' : '\r\n') + '.\r\n', 'latin1');
}

/** One message in one connection, for tests that only care about the outcome. */
export async function sendMail(port: number, message: { from: string; to: readonly string[]; body: string | Buffer }) {
  const client = await SmtpTestClient.connect(port);
  try {
    return await client.send(message);
  } finally {
    await client.quit();
  }
}

/** A small well-formed message. */
export function sampleMessage(subject = 'test', extraBody = ''): string {
  return [
    'From: Sender <sender@example.com>',
    'To: Rcpt <rcpt@example.net>',
    `Subject: ${subject}`,
    'Date: Mon, 23 Nov 2026 12:00:00 +0000',
    'Message-ID: <' + Math.random().toString(36).slice(2) + '@example.com>',
    'MIME-Version: 1.0',
    'Content-Type: text/plain; charset=utf-8',
    '',
    'Hello from the test suite.',
    extraBody,
    '',
  ].join('\r\n');
}
