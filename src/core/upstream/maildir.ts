/**
 * Delivery into a local Maildir (`maildir:/path`), for archives and backups: the message is
 * written to tmp/, fsync'd, renamed into new/, and the folder fsync'd, so a crash leaves either
 * no message or a whole one. The file is the message as received, preceded by the trace lines a
 * final delivery adds (RFC 5321 §4.4): `Return-Path:` with the envelope sender, and one
 * `X-Original-To:` per envelope recipient (so BCC recipients are on record).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, rename } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { MaildirDestination } from '../destination.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { ErrorCodes, GsdError } from '../errors.ts';
import { Replies } from '../replies.ts';
import { fsyncDir, unlinkQuiet } from '../spool/durable-fs.ts';
import type { UpstreamReply } from './reply-reader.ts';

const ok = (text: string): UpstreamReply => ({ ...Replies.localDelivery(text), lines: [text] });

let sequence = 0;

export class MaildirTransaction {
  readonly destination: MaildirDestination;
  readonly #sender: EnvelopeAddress;
  readonly #recipients: string[] = [];

  constructor(destination: MaildirDestination, sender: EnvelopeAddress) {
    this.destination = destination;
    this.#sender = sender;
  }

  /** The MAIL FROM reply: a Maildir takes any sender. */
  static begin(destination: MaildirDestination, sender: EnvelopeAddress): { tx: MaildirTransaction; reply: UpstreamReply } {
    return { tx: new MaildirTransaction(destination, sender), reply: ok('Sender OK') };
  }

  /** Every recipient is taken (a Maildir has no per-recipient verdict). */
  rcptAll(recipients: readonly EnvelopeAddress[]): Promise<UpstreamReply[]> {
    return Promise.all(recipients.map((recipient) => this.rcpt(recipient)));
  }

  async rcpt(recipient: EnvelopeAddress): Promise<UpstreamReply> {
    this.#recipients.push(recipient.address);
    return ok('Recipient OK');
  }

  async data(source: Readable | (() => Readable | Buffer)): Promise<UpstreamReply> {
    const made = typeof source === 'function' ? source() : source;
    const body = Buffer.isBuffer(made) ? Readable.from([made]) : made;
    const name = `${Math.floor(Date.now() / 1000)}.M${process.hrtime.bigint() % 1000000n}P${process.pid}Q${++sequence}R${randomBytes(4).toString('hex')}.${hostname().replace(/[/:]/g, '_')}`;
    const tmp = join(this.destination.path, 'tmp', name);
    try {
      for (const sub of ['tmp', 'new', 'cur']) await mkdir(join(this.destination.path, sub), { recursive: true, mode: 0o700 });
      const handle = await open(tmp, 'wx', 0o600);
      try {
        const trace = [`Return-Path: <${this.#sender.address}>`, ...this.#recipients.map((r) => `X-Original-To: ${r}`)].join('\r\n') + '\r\n';
        await handle.write(trace);
        for await (const chunk of body) await handle.write(chunk as Buffer);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, join(this.destination.path, 'new', name));
      await fsyncDir(join(this.destination.path, 'new'));
      return ok(`Ok: stored as ${name}`);
    } catch (err) {
      body.destroy();
      await unlinkQuiet(tmp).catch(() => undefined);
      throw new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${this.destination.label}: ${(err as Error).message}`, { cause: err, step: 'body' });
    }
  }

  abort(): void {}

  destroy(): void {}
}
