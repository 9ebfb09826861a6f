/**
 * One SMTP client connection to an upstream server, command by command.
 *
 * Written for a relay rather than taken from nodemailer's SMTPConnection: a relay must forward
 * each RCPT as the client sends it and hand back that recipient's own verdict, send the envelope
 * exactly as received (parameters included, no punycode or address rewriting), and bound every
 * step with its own timeout. nodemailer only sends whole envelopes.
 *
 * Replies are matched to commands in order, so commands may be pipelined.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import tls from 'node:tls';
import { ErrorCodes, GsdError } from '../errors.ts';
import type { SmtpDestination } from '../destination.ts';
import { DotStuffer, type BodyFilter } from '../message-stream.ts';
import { ReplyReader, type UpstreamReply } from './reply-reader.ts';

export interface ConnectOptions {
  /** Bounds connect, greeting and each command. */
  timeoutMs: number;
  /** Name sent with EHLO/HELO. */
  heloName: string;
  /** Told when opportunistic TLS fails and delivery goes on without it. */
  log?: Pick<Logger, 'warn'>;
}

/** An opportunistic STARTTLS failed after the server agreed to it: try again without TLS. */
class TlsFallback extends Error {
  override readonly cause: Error;
  constructor(cause: Error) {
    super(`opportunistic TLS failed: ${cause.message}`);
    this.cause = cause;
  }
}

interface Pending {
  step: string;
  timeoutMs: number;
  /** A pipelined command's clock starts when the reply before it arrives, not when it is sent. */
  armAtHead?: boolean;
  /** Unset while the reply cannot come yet (the final reply, while the body is still flowing). */
  timer?: NodeJS.Timeout;
  resolve: (reply: UpstreamReply) => void;
  reject: (err: Error) => void;
}

export class UpstreamConnection {
  readonly destination: SmtpDestination;
  /** EHLO keywords, upper case, with their parameters (`SIZE` -> `10240000`). */
  readonly extensions = new Map<string, string>();
  #socket: net.Socket;
  #reader = new ReplyReader();
  #pending: Pending[] = [];
  #failure: GsdError | undefined;
  /** Set when a transaction was interrupted; the connection needs RSET before reuse. */
  dirty = false;
  /** When the connection was last used, for idle expiry in the pool. */
  lastUsed = Date.now();

  #detach: () => void = () => undefined;
  /** The connection is encrypted (implicit TLS or after STARTTLS). */
  secure = false;

  private constructor(destination: SmtpDestination, socket: net.Socket) {
    this.destination = destination;
    this.#socket = socket;
    this.#attach(socket);
  }

  #attach(socket: net.Socket): void {
    this.#socket = socket;
    socket.setNoDelay(true);
    // A plain socket's bytes come through `onread` (connectSocket); a TLS socket's as events.
    const onData = (chunk: Buffer) => this.#onData(chunk);
    const onError = (err: Error) => this.#fail(new GsdError(ErrorCodes.UPSTREAM_LOST, err.message, { cause: err }));
    const onClose = () => this.#fail(new GsdError(ErrorCodes.UPSTREAM_LOST, 'connection closed'));
    const events = socket instanceof tls.TLSSocket;
    if (events) socket.on('data', onData);
    socket.on('error', onError);
    socket.on('close', onClose);
    this.#detach = () => {
      if (events) socket.off('data', onData);
      socket.off('error', onError);
      socket.off('close', onClose);
    };
  }

  /**
   * Connects (TLS from the first byte for `smtps://`), reads the greeting, says EHLO (LHLO for
   * LMTP; HELO if EHLO is refused), upgrades with STARTTLS when offered or required, and
   * authenticates when the destination has credentials, only ever over TLS.
   *
   * Opportunistic TLS (plain `host:port`, unverified) is a bonus, never a reason not to deliver,
   * as with Postfix's `smtp_tls_security_level = may`: a refused STARTTLS continues in plain text
   * on the same connection, and a failed handshake (which leaves the connection unusable) is
   * retried once on a new connection without STARTTLS.
   */
  static async open(destination: SmtpDestination, options: ConnectOptions): Promise<UpstreamConnection> {
    try {
      return await UpstreamConnection.#open(destination, options, true);
    } catch (err) {
      if (!(err instanceof TlsFallback)) throw err;
      options.log?.warn({ destination: destination.label, reason: err.cause.message }, 'opportunistic TLS failed; delivering without TLS');
      return await UpstreamConnection.#open(destination, options, false);
    }
  }

  static async #open(destination: SmtpDestination, options: ConnectOptions, tryTls: boolean): Promise<UpstreamConnection> {
    let conn: UpstreamConnection | undefined;
    const early: Buffer[] = [];
    const socket = await connectSocket(destination, options.timeoutMs, (chunk) => {
      if (!conn) return void early.push(Buffer.from(chunk));
      // After STARTTLS the bytes are the TLS socket's; none are expected here any more.
      if (conn.#socket === socket) conn.#onData(chunk);
    });
    conn = new UpstreamConnection(destination, socket);
    for (const chunk of early) conn.#onData(chunk);
    conn.secure = destination.tls === 'implicit';
    const unavailable = (message: string, step: string) => new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${destination.label} ${message}`, { step });
    const mode = destination.tls ?? 'opportunistic';
    const optional = mode === 'opportunistic' && !verifies(destination);
    let handshaking = false;
    try {
      const greeting = await conn.#expect('greeting', options.timeoutMs);
      if (greeting.code !== 220) throw unavailable(`greeted with ${greeting.code} ${greeting.text}`, 'greeting');
      const helo = destination.helo ?? options.heloName;
      await conn.#hello(helo, options.timeoutMs, unavailable);
      if (!conn.secure && (mode === 'required' || (mode === 'opportunistic' && tryTls && conn.extensions.has('STARTTLS')))) {
        if (!conn.extensions.has('STARTTLS')) throw unavailable('does not offer STARTTLS, which this destination requires', 'STARTTLS');
        // From here a connection that breaks (even with bytes that are not a reply, sent with or
        // after the 220: the server's TLS) is a failed upgrade, for which a plain retry is due.
        handshaking = true;
        const go = await conn.command('STARTTLS', 'STARTTLS', options.timeoutMs);
        if (go.code !== 220) {
          handshaking = false;
          if (!optional) throw unavailable(`refused STARTTLS with ${go.code} ${go.text}`, 'STARTTLS');
          options.log?.warn({ destination: destination.label, reply: `${go.code} ${go.text}` }, 'STARTTLS refused; delivering without TLS');
        } else {
          await conn.#upgrade(options.timeoutMs);
          await conn.#hello(helo, options.timeoutMs, unavailable);
          handshaking = false;
        }
      }
      if (destination.auth) await conn.#authenticate(destination.auth, options.timeoutMs, unavailable);
      return conn;
    } catch (err) {
      conn.destroy();
      if (handshaking && optional) throw new TlsFallback(err as Error);
      throw err instanceof GsdError && err.code === ErrorCodes.UPSTREAM_LOST
        ? new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${destination.label} closed the connection before it was ready`, { cause: err })
        : err;
    }
  }

  async #hello(name: string, timeoutMs: number, unavailable: (message: string, step: string) => GsdError): Promise<void> {
    const lmtp = this.destination.protocol === 'lmtp';
    let hello = await this.command(`${lmtp ? 'LHLO' : 'EHLO'} ${name}`, lmtp ? 'LHLO' : 'EHLO', timeoutMs);
    if (hello.code >= 500 && !lmtp) hello = await this.command(`HELO ${name}`, 'HELO', timeoutMs);
    if (hello.code !== 250) throw unavailable(`refused EHLO/HELO with ${hello.code} ${hello.text}`, 'EHLO');
    this.extensions.clear();
    for (const line of hello.lines.slice(1)) {
      const [keyword, ...rest] = line.trim().split(/\s+/);
      if (keyword) this.extensions.set(keyword.toUpperCase(), rest.join(' '));
    }
  }

  /** Hands the socket to TLS after the server said 220 to STARTTLS. */
  async #upgrade(timeoutMs: number): Promise<void> {
    const plain = this.#socket;
    this.#detach();
    const secure = await new Promise<tls.TLSSocket>((resolve, reject) => {
      // A server that closed right after its 220 leaves nothing to shake hands with; TLS would
      // only notice at the timeout.
      if (plain.destroyed || plain.readableEnded) {
        return reject(new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${this.destination.label}: closed the connection after agreeing to STARTTLS`, { step: 'STARTTLS' }));
      }
      const socket = tls.connect({ socket: plain, ...tlsOptions(this.destination) });
      plain.once('close', () => socket.destroy(new Error('connection closed during the TLS handshake')));
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new GsdError(ErrorCodes.UPSTREAM_TIMEOUT, `${this.destination.label}: TLS handshake timed out`, { step: 'STARTTLS' }));
      }, timeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${this.destination.label}: TLS failed: ${err.message}`, { cause: err, step: 'STARTTLS' }));
      });
    });
    this.#reader = new ReplyReader();
    this.#attach(secure);
    this.secure = true;
  }

  /** AUTH PLAIN (or LOGIN when only that is offered); credentials never travel in plain text. */
  async #authenticate(auth: { user: string; pass: string }, timeoutMs: number, unavailable: (message: string, step: string) => GsdError): Promise<void> {
    // Encrypted is not enough: an unverified peer could be anyone. Credentials need the server's
    // certificate verified (smtp+starttls:// or smtps://, or tls.verify: true).
    if (!this.secure || !verifies(this.destination)) throw unavailable('would receive credentials without a verified TLS connection: refused (use smtp+starttls:// or smtps://)', 'AUTH');
    const methods = (this.extensions.get('AUTH') ?? '').toUpperCase().split(/\s+/);
    let reply: UpstreamReply;
    if (methods.includes('PLAIN') || !methods.includes('LOGIN')) {
      reply = await this.command(`AUTH PLAIN ${Buffer.from(`\0${auth.user}\0${auth.pass}`).toString('base64')}`, 'AUTH', timeoutMs);
    } else {
      reply = await this.command('AUTH LOGIN', 'AUTH', timeoutMs);
      if (reply.code === 334) reply = await this.command(Buffer.from(auth.user).toString('base64'), 'AUTH', timeoutMs);
      if (reply.code === 334) reply = await this.command(Buffer.from(auth.pass).toString('base64'), 'AUTH', timeoutMs);
    }
    // Neither the credentials nor the user name go into the error (it can reach the client).
    if (reply.code !== 235) throw unavailable(`refused our credentials: ${reply.code} ${reply.text}`, 'AUTH');
  }

  get usable(): boolean {
    return this.#failure === undefined && !this.#socket.destroyed;
  }

  /** Sends one command line and resolves with its reply (any code: the caller judges it). */
  command(line: string, step: string, timeoutMs: number): Promise<UpstreamReply> {
    const reply = this.#expect(step, timeoutMs);
    this.#write(`${line}\r\n`);
    return reply;
  }

  /**
   * Sends command lines in one write (RFC 2920 pipelining; only for a server that offers
   * PIPELINING) and returns one promise per reply, in order. Every promise must be observed.
   */
  commands(lines: ReadonlyArray<readonly [line: string, step: string]>, timeoutMs: number): Array<Promise<UpstreamReply>> {
    // Each reply gets the whole timeout from the moment the server can start on its command.
    const replies = lines.map(([, step], index) => this.#expect(step, timeoutMs, index === 0, index > 0));
    this.#write(lines.map(([line]) => `${line}\r\n`).join(''));
    return replies;
  }

  /**
   * Sends DATA and, on 354, the body: dot-stuffed and terminated here. Resolves with the reply to
   * DATA if it refused (4xx/5xx), else with the final reply, waited for up to `finalTimeoutMs`.
   * `body` may be a factory, called only once the upstream said 354 (a spooled file is then
   * opened only when it is needed); `filter` sees every chunk first (canonical line endings and
   * the size limit, without a stream stage). If the body fails (the client went away, a policy
   * error, a throw from `filter`) the connection is destroyed before the terminating dot, so the
   * upstream never accepts a partial message. A body made by the factory is destroyed if it was
   * not read to its end; a stream passed in stays its owner's, who reads it to its end.
   */
  async data(
    source: Readable | (() => Readable | Buffer),
    timeoutMs: number,
    finalTimeoutMs: number,
    options: { finalReplies?: number; sent?: Promise<UpstreamReply>; filter?: BodyFilter } = {},
  ): Promise<UpstreamReply> {
    const { finalReplies = 1, sent, filter } = options;
    const go = await (sent ?? this.command('DATA', 'DATA', timeoutMs));
    if (go.code !== 354) {
      // A 2xx to DATA would be taken for a success although no message was sent.
      if (go.code < 400) {
        const failure = new GsdError(ErrorCodes.UPSTREAM_PROTOCOL, `${this.destination.label} answered DATA with ${go.code}`, { step: 'DATA' });
        this.destroy(failure);
        throw failure;
      }
      return go;
    }
    const owned = typeof source === 'function';
    const made = owned ? source() : source;
    // The final reply cannot come before the terminator is written, so its clock starts then.
    // LMTP answers once per accepted recipient; one verdict is made of them (the worst).
    const final =
      finalReplies <= 1
        ? this.#expect('final', finalTimeoutMs, false)
        : Promise.all(Array.from({ length: finalReplies }, () => this.#expect('final', finalTimeoutMs, false))).then((replies) => ({ ...worstReply(replies), perRecipient: replies }));
    final.catch(() => undefined); // observed below; a failed body must not leave it unhandled
    const stuffer = new DotStuffer();
    const socket = this.#socket;
    // Through the filter, dot-stuffed, straight to the socket (no stream stage); `filter` may throw.
    const send = (chunk: Buffer) => writeTogether(socket, stuffer.push(filter ? filter.push(chunk) : chunk));
    const finish = () => {
      if (filter) writeTogether(socket, stuffer.push(filter.end()));
      writeTogether(socket, stuffer.end());
    };
    try {
      if (Buffer.isBuffer(made)) {
        // Already in memory (a spooled copy): out at once.
        send(made);
        finish();
      } else {
        await this.#stream(made, send, finish);
      }
    } catch (err) {
      if (owned && !Buffer.isBuffer(made)) made.destroy();
      const failure = err instanceof GsdError ? err : new GsdError(ErrorCodes.UPSTREAM_LOST, (err as Error).message, { cause: err, step: 'body' });
      this.destroy(failure); // before the terminator: the upstream discards the partial message
      throw failure;
    }
    this.#armHeadTimer();
    return final;
  }

  /**
   * Reads `body` to its end into `send`, then `finish`es, with backpressure: the body pauses
   * while the socket's buffer is full. Rejects if the body or the connection fails first.
   */
  #stream(body: Readable, send: (chunk: Buffer) => boolean, finish: () => void): Promise<void> {
    const socket = this.#socket;
    return new Promise<void>((resolve, reject) => {
      let draining = false;
      const onData = (chunk: Buffer) => {
        try {
          if (send(chunk) || draining) return;
        } catch (err) {
          return fail(err as Error);
        }
        draining = true;
        body.pause();
        socket.once('drain', onDrain);
      };
      const onDrain = () => {
        draining = false;
        body.resume();
      };
      const onEnd = () => {
        settle();
        try {
          finish();
          resolve();
        } catch (err) {
          reject(err as Error);
        }
      };
      const onClose = () => fail(this.#failure ?? new GsdError(ErrorCodes.UPSTREAM_LOST, 'connection closed', { step: 'body' }));
      const settle = () => {
        body.off('data', onData);
        body.off('end', onEnd);
        body.off('error', fail);
        socket.off('close', onClose);
        socket.off('drain', onDrain);
      };
      function fail(this: void, err: Error): void {
        settle();
        reject(err);
      }
      // A body that failed before we got here (while DATA was on its way) fails now, not never.
      if (body.errored || body.destroyed) return fail(body.errored ?? new GsdError(ErrorCodes.UPSTREAM_LOST, 'message body ended early', { step: 'body' }));
      body.once('error', fail);
      body.once('end', onEnd);
      socket.once('close', onClose);
      body.on('data', onData);
      body.resume(); // this is the body's only reader
    });
  }

  /** Ends the connection politely: QUIT, then close, without waiting long. */
  quit(): void {
    if (!this.usable) return this.destroy();
    this.#expect('QUIT', 2000).catch(() => undefined).finally(() => this.destroy());
    this.#write('QUIT\r\n');
  }

  destroy(reason?: GsdError): void {
    this.#fail(reason ?? new GsdError(ErrorCodes.UPSTREAM_LOST, 'connection closed by router'));
    this.#socket.destroy();
  }

  #write(data: string): void {
    if (this.#failure) return; // the pending promise is rejected already
    this.lastUsed = Date.now();
    // Commands are UTF-8: ASCII, or SMTPUTF8 addresses exactly as the client sent them.
    this.#socket.write(data, 'utf8');
  }

  #expect(step: string, timeoutMs: number, armNow = true, armAtHead = false): Promise<UpstreamReply> {
    return new Promise<UpstreamReply>((resolve, reject) => {
      if (this.#failure) return reject(this.#failure);
      const pending: Pending = { step, timeoutMs, resolve, reject, armAtHead };
      if (armNow) pending.timer = this.#timer(step, timeoutMs);
      this.#pending.push(pending);
    });
  }

  #armHeadTimer(): void {
    // Every reply that was waiting for the body (one, or one per LMTP recipient) starts its clock.
    for (const pending of this.#pending) if (pending.timer === undefined) pending.timer = this.#timer(pending.step, pending.timeoutMs);
  }

  #timer(step: string, timeoutMs: number): NodeJS.Timeout {
    return setTimeout(() => {
      this.destroy(
        new GsdError(ErrorCodes.UPSTREAM_TIMEOUT, `${this.destination.label}: no reply to ${step} within ${timeoutMs} ms`, { step }),
      );
    }, timeoutMs);
  }

  #onData(chunk: Buffer): void {
    let replies: UpstreamReply[];
    try {
      replies = this.#reader.push(chunk);
    } catch (err) {
      const step = this.#pending[0]?.step;
      this.destroy(new GsdError(ErrorCodes.UPSTREAM_PROTOCOL, `${this.destination.label}: ${(err as Error).message}`, { step }));
      return;
    }
    for (const reply of replies) {
      const pending = this.#pending.shift();
      if (!pending) {
        // A reply nobody asked for: the dialogue is out of step and cannot be trusted again.
        this.destroy(new GsdError(ErrorCodes.UPSTREAM_PROTOCOL, `${this.destination.label}: unexpected reply ${reply.code}`));
        return;
      }
      clearTimeout(pending.timer);
      pending.resolve(reply);
      const next = this.#pending[0];
      if (next?.armAtHead && next.timer === undefined) next.timer = this.#timer(next.step, next.timeoutMs);
    }
    if (replies.length > 0) this.lastUsed = Date.now();
  }

  #fail(err: GsdError): void {
    if (this.#failure) return;
    this.#failure = err;
    for (const pending of this.#pending.splice(0)) {
      clearTimeout(pending.timer);
      pending.reject(err.step ? err : new GsdError(err.code, err.message, { cause: err.cause, step: pending.step }));
    }
    this.#socket.destroy();
  }
}

/**
 * Writes pieces in one system call (`writev` under cork): a small body and its terminator go out
 * together without being copied into one buffer. False when the socket wants a pause.
 */
function writeTogether(socket: net.Socket, pieces: readonly Buffer[]): boolean {
  if (pieces.length === 0) return true;
  if (pieces.length === 1) return socket.write(pieces[0]!);
  socket.cork();
  let ok = true;
  for (const piece of pieces) ok = socket.write(piece);
  socket.uncork();
  return ok;
}

/** Of several replies (LMTP), a temporary failure if any, else a rejection if any, else the first. */
function worstReply(replies: UpstreamReply[]): UpstreamReply {
  return replies.find((r) => r.code >= 400 && r.code < 500) ?? replies.find((r) => r.code >= 500) ?? replies[0]!;
}

/** Whether the server's certificate is verified: by default for smtp+starttls:// and smtps://. */
function verifies(destination: SmtpDestination): boolean {
  return destination.verify ?? (destination.tls ?? 'opportunistic') !== 'opportunistic';
}

/** TLS client options for a destination: SNI for host names, verification, CA and client certificate. */
function tlsOptions(destination: SmtpDestination): tls.ConnectionOptions {
  return {
    servername: net.isIP(destination.host) ? undefined : destination.host,
    rejectUnauthorized: verifies(destination),
    ...(destination.ca && { ca: readFileSync(destination.ca) }),
    ...(destination.cert && { cert: readFileSync(destination.cert) }),
    ...(destination.key && { key: readFileSync(destination.key) }),
  };
}

/**
 * Plain upstream sockets read into this one buffer and hand each read straight to their
 * connection (net's `onread`): no buffer allocated per read and no stream stage. Sharing it is
 * safe because every read is consumed before the next can land: the reply reader decodes the
 * complete lines and copies the rest.
 */
const SHARED_READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

function connectSocket(destination: SmtpDestination, timeoutMs: number, onBytes: (chunk: Buffer) => void): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const implicit = destination.tls === 'implicit';
    const socket = implicit
      ? tls.connect({ host: destination.host, port: destination.port, ...tlsOptions(destination) })
      : net.connect({
          host: destination.host,
          port: destination.port,
          onread: {
            buffer: SHARED_READ_BUFFER,
            callback: (length: number, buffer: Uint8Array) => {
              onBytes((buffer as Buffer).subarray(0, length));
              return true; // keep reading: replies are small, and each is consumed at once
            },
          },
        });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new GsdError(ErrorCodes.UPSTREAM_TIMEOUT, `${destination.label}: connect timed out after ${timeoutMs} ms`, { step: 'connect' }));
    }, timeoutMs);
    socket.once(implicit ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, `${destination.label}: ${err.message}`, { cause: err, step: 'connect' }));
    });
  });
}
