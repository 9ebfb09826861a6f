/**
 * Capture servers: strict SMTP servers (smtp-server) on loopback that record every message they
 * accept, byte for byte, and can be told to refuse, defer or hang at any step. Used by the
 * project's tests, the demo, and anyone testing their own plugins.
 */
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { SMTPServer, type SMTPServerAddress } from 'smtp-server';
import { patchSmtpServer } from '../core/inbound/smtp-server-patches.ts';
import { replyWords, type SmtpReply } from '../core/replies.ts';

export interface CapturedMessage {
  readonly from: string;
  readonly to: readonly string[];
  readonly mailParams: readonly string[];
  readonly rcptParams: readonly (readonly string[])[];
  /** The message exactly as received (dot-unstuffed); empty when the sink discards bodies. */
  readonly body: Buffer;
  readonly size: number;
  /** SHA-256 of the message as received, hex. */
  readonly sha256: string;
  /** The session was encrypted (STARTTLS or implicit TLS). */
  readonly secure: boolean;
  /** The user the client authenticated as, if it did. */
  readonly user?: string;
  /** The name the client gave with EHLO/HELO. */
  readonly helo: string;
  readonly receivedAt: number;
}

/** Decide a reply for a step; `undefined` accepts. Replies must be 4xx/5xx. */
export interface SinkBehaviour {
  mail?(from: string): SmtpReply | undefined;
  rcpt?(to: string): SmtpReply | undefined;
  /** May return a promise, to hold the final reply back (a slow server). */
  data?(message: CapturedMessage): SmtpReply | undefined | Promise<SmtpReply | undefined>;
  /** LMTP only: one recipient's own final reply (undefined: accepted). */
  finalFor?(recipient: string): SmtpReply | undefined;
}

export interface Sink {
  readonly name: string;
  readonly port: number;
  /** `127.0.0.1:port`, ready to use as a destination. */
  readonly label: string;
  readonly messages: CapturedMessage[];
  /** Replaces the behaviour (e.g. to bring a failing server back). */
  behave(behaviour: SinkBehaviour): void;
  /** Resolves once `count` messages have arrived; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs?: number): Promise<CapturedMessage[]>;
  close(): Promise<void>;
}

export interface SinkOptions {
  name?: string;
  behaviour?: SinkBehaviour;
  /** Also write each message as `<n>.eml` here. */
  dir?: string;
  host?: string;
  port?: number;
  /** Advertised SIZE limit. */
  size?: number;
  /** Keep only size and hash of each body (for very large messages). */
  discard?: boolean;
  /** Offer STARTTLS with this certificate and key (PEM). */
  tls?: { cert: Buffer | string; key: Buffer | string };
  /** TLS from the first byte (needs `tls`). */
  secure?: boolean;
  /** Require AUTH (PLAIN/LOGIN) with these user: password pairs. */
  users?: Record<string, string>;
  /** Speak LMTP (LHLO, one reply per recipient after DATA). */
  lmtp?: boolean;
  /** Announce PIPELINING (default true); without it, clients must wait for each reply. */
  pipelining?: boolean;
}

class ReplyError extends Error {
  readonly responseCode: number;
  constructor(reply: SmtpReply) {
    super(replyWords(reply));
    this.responseCode = reply.code;
  }
}

interface RawAware {
  raw?: { address: string; params: string[] };
}

export async function startSink(options: SinkOptions = {}): Promise<Sink> {
  patchSmtpServer(); // addresses as sent (no punycode decoding), enhanced codes as given
  let behaviour: SinkBehaviour = options.behaviour ?? {};
  const messages: CapturedMessage[] = [];
  const waiters: Array<() => void> = [];
  if (options.dir) await mkdir(options.dir, { recursive: true });
  const envelopes = new Map<string, { from: string; mailParams: string[]; to: string[]; rcptParams: string[][] }>();
  const raw = (address: SMTPServerAddress) => (address as unknown as RawAware).raw ?? { address: address.address, params: [] };

  const server = new SMTPServer({
    name: options.name ?? 'sink',
    authOptional: !options.users,
    disabledCommands: [...(options.users ? [] : ['AUTH']), ...(options.tls ? [] : ['STARTTLS'])],
    ...(options.tls && { key: options.tls.key, cert: options.tls.cert }),
    secure: Boolean(options.secure),
    lmtp: Boolean(options.lmtp),
    authMethods: ['PLAIN', 'LOGIN'],
    onAuth(auth, _session, callback) {
      if (options.users?.[auth.username ?? ''] === auth.password) return callback(null, { user: auth.username });
      callback(Object.assign(new Error('5.7.8 Authentication credentials invalid'), { responseCode: 535 }));
    },
    disableReverseLookup: true,
    logger: false,
    size: options.size ?? 100 * 1024 * 1024,
    hideENHANCEDSTATUSCODES: false,
    hideDSN: false,
    hidePIPELINING: options.pipelining === false,
    onMailFrom(address, session, callback) {
      const { address: from, params } = raw(address);
      const refusal = behaviour.mail?.(from);
      if (refusal) return callback(new ReplyError(refusal));
      envelopes.set(session.id, { from, mailParams: params, to: [], rcptParams: [] });
      callback();
    },
    onRcptTo(address, session, callback) {
      const { address: to, params } = raw(address);
      const refusal = behaviour.rcpt?.(to);
      if (refusal) return callback(new ReplyError(refusal));
      const envelope = envelopes.get(session.id)!;
      envelope.to.push(to);
      envelope.rcptParams.push(params);
      callback();
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      const hash = createHash('sha256');
      let size = 0;
      stream.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        size += chunk.length;
        if (!options.discard) chunks.push(chunk);
      });
      stream.on('end', () => {
        const envelope = envelopes.get(session.id)!;
        envelopes.delete(session.id);
        const message: CapturedMessage = {
          ...envelope,
          body: Buffer.concat(chunks),
          size,
          sha256: hash.digest('hex'),
          secure: Boolean(session.secure),
          helo: session.hostNameAppearsAs ?? '',
          user: typeof session.user === 'string' ? session.user : undefined,
          receivedAt: Date.now(),
        };
        if ((stream as unknown as { sizeExceeded?: boolean }).sizeExceeded) return callback(new Error('too big'));
        void Promise.resolve(behaviour.data?.(message)).then((refusal) => {
          if (refusal) return callback(new ReplyError(refusal));
          messages.push(message);
          const done = options.dir
            ? writeFile(join(options.dir, `${new Date(message.receivedAt).toISOString().replace(/[:.]/g, '-')}-${messages.length}.eml`), message.body)
            : Promise.resolve();
          done.then(
            () => {
              const ok = `2.0.0 Ok: queued as ${options.name ?? 'sink'}-${messages.length}`;
              if (options.lmtp) {
                const replies = message.to.map((to) => {
                  const own = behaviour.finalFor?.(to);
                  return own ? new ReplyError(own) : ok;
                });
                (callback as unknown as (err: null, replies: Array<string | Error>) => void)(null, replies);
              }
              else callback(null, ok);
              for (const wake of waiters.splice(0)) wake();
            },
            (err: Error) => callback(err),
          );
        });
      });
    },
  } as ConstructorParameters<typeof SMTPServer>[0]);
  server.on('error', () => undefined);

  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.server.once('error', reject);
    server.server.listen(options.port ?? 0, host, () => resolve());
  });
  const port = (server.server.address() as AddressInfo).port;

  return {
    name: options.name ?? 'sink',
    port,
    label: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`,
    messages,
    behave(next) {
      behaviour = next;
    },
    waitFor(count, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${options.name ?? 'sink'}: ${messages.length} of ${count} messages after ${timeoutMs} ms`)), timeoutMs);
        const check = () => {
          if (messages.length >= count) {
            clearTimeout(timer);
            resolve(messages.slice(0, count));
          } else waiters.push(check);
        };
        check();
      });
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const conn of (server as unknown as { connections: Set<{ close(): void }> }).connections) conn.close();
        server.close(() => resolve());
      }),
  };
}
