/**
 * The SMTP listener: smtp-server configured for a relay, one InboundTransaction per client
 * transaction, and a graceful drain (idle sessions get 421 at once, sessions mid-transaction
 * finish first, all within a bound).
 */
import type { AddressInfo, Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { SMTPServer, type SMTPServerAddress, type SMTPServerSession } from 'smtp-server';
import type { SmtpDestination } from '../destination.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { isSuccess, Replies, replyClass, replyWords, SmtpReplyError, type SmtpReply } from '../replies.ts';
import type { ConnectionInfo } from '../../plugins/types.ts';
import { patchSmtpServer, type ParsedAddressWithRaw } from './smtp-server-patches.ts';
import type { Authenticator } from '../auth/authenticator.ts';
import type { AccessPolicy } from './access.ts';
import { drain, InboundTransaction, type TransactionDeps } from './transaction.ts';

export interface ListenerOptions {
  listen: SmtpDestination;
  domain: string;
  maxMessageBytes: number;
  shutdownTimeoutMs: number;
  greetingDelayMs: number;
  access: AccessPolicy;
  maxConnections: number;
  maxConnectionsPerClient: number;
  maxRecipients: number;
  idleTimeoutMs: number;
  maxErrors: number;
  /** PEM certificate and key: STARTTLS is offered, and the implicit-TLS listener can run. */
  tls?: { cert: Buffer; key: Buffer };
  implicitTlsListen?: SmtpDestination;
  /** An LMTP listener (Postfix's lmtp transport): one verdict per recipient after DATA. */
  lmtpListen?: SmtpDestination;
  requireTls: boolean;
  authenticator: Authenticator;
  allowPlaintextAuthOnLoopback: boolean;
}

/** The part of smtp-server's connection object the drain needs. */
interface LiveConnection {
  id: string;
  send(code: number, data: string): void;
  close(): void;
}

type Callback = (err?: Error | null, message?: string) => void;

/** Off for the whole server; each session's own list (#commandsOff) decides what it may use. */
const SERVER_COMMANDS_OFF: readonly string[] = ['AUTH', 'STARTTLS'];

const OUTCOME = { success: 'delivered', tempfail: 'deferred', reject: 'failed' } as const;

export class InboundListener {
  readonly #servers: Array<{ server: SMTPServer; at: SmtpDestination }>;
  /** What new transactions are built with; replaced on reload, while open ones keep theirs. */
  #deps: TransactionDeps;
  #waiters: Array<() => void> = [];
  readonly #log: Logger;
  readonly #options: ListenerOptions;
  /** The open transaction of each session, by session id. */
  readonly #transactions = new Map<string, InboundTransaction>();
  /** Open connections per client address, for `smtp.max_connections_per_client`. */
  readonly #perClient = new Map<string, number>();
  readonly #counted = new WeakSet<SMTPServerSession>();
  /** Sessions whose client is gone; a transaction that finishes opening after that is aborted. */
  readonly #closed = new WeakSet<SMTPServerSession>();
  #draining = false;
  #drained: (() => void) | undefined;

  constructor(deps: TransactionDeps, options: ListenerOptions) {
    patchSmtpServer();
    this.#deps = deps;
    this.#log = deps.log;
    this.#options = options;
    this.#servers = [{ server: this.#createServer(false, false), at: options.listen }];
    if (options.implicitTlsListen && options.tls) this.#servers.push({ server: this.#createServer(true, false), at: options.implicitTlsListen });
    if (options.lmtpListen) this.#servers.push({ server: this.#createServer(false, true), at: options.lmtpListen });
  }

  #createServer(implicitTls: boolean, lmtp: boolean): SMTPServer {
    const options = this.#options;
    const server = new SMTPServer({
      name: options.domain,
      banner: 'gosmtp-dup',
      size: options.maxMessageBytes,
      secure: implicitTls,
      // With LMTP, smtp-server repeats the one verdict for every accepted recipient.
      lmtp,
      ...(options.tls && { key: options.tls.key, cert: options.tls.cert }),
      authMethods: ['PLAIN', 'LOGIN'],
      authOptional: true,
      // Which commands a session may use is decided per session (#commandsOff); AUTH is then
      // gated here, not by smtp-server's one global switch.
      allowInsecureAuth: true,
      disabledCommands: [...SERVER_COMMANDS_OFF],
      // DSN parameters are accepted and passed on to upstreams that announce DSN.
      hideDSN: false,
      hideENHANCEDSTATUSCODES: false,
      disableReverseLookup: true,
      logger: false,
      greetingDelayMs: options.greetingDelayMs,
      maxClients: options.maxConnections,
      maxRecipients: options.maxRecipients,
      socketTimeout: options.idleTimeoutMs,
      maxErrors: options.maxErrors,
      limitReplies: { tooManyClients: Replies.tooManyClients(), tooManyErrors: Replies.tooManyErrors() },
      // Synchronous (smtp-server's default waits a tick), so that without a greeting delay the
      // greeting goes out before anything the client sent is read.
      onConnect: (session: SMTPServerSession, callback: (err?: Error) => void) => {
        const count = (this.#perClient.get(session.remoteAddress) ?? 0) + 1;
        this.#perClient.set(session.remoteAddress, count);
        this.#counted.add(session);
        this.#applyCommandsOff(session);
        callback(count > options.maxConnectionsPerClient ? new SmtpReplyError(Replies.tooManyConnections()) : undefined);
      },
      onSecure: (_socket: unknown, session: SMTPServerSession, callback: () => void) => {
        this.#applyCommandsOff(session);
        callback();
      },
      onAuth: (auth: { method: string; username?: string; password?: string }, session: SMTPServerSession, callback: (err: Error | null, result?: { user: string }) => void) =>
        void this.#auth(auth, session, callback),
      onReset: (session: SMTPServerSession) => this.#reset(session.id),
      onMailFrom: (address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) => void this.#mail(address, session, callback),
      onRcptTo: (address: SMTPServerAddress, session: SMTPServerSession, callback: Callback) => void this.#rcpt(address, session, callback),
      // smtp-server calls onData before it sends 354: the upstream's DATA and the body's
      // streams are set up right after, so the client's 354 does not wait for them.
      onData: (stream: Readable, session: SMTPServerSession, callback: Callback) => queueMicrotask(() => void this.#data(stream, session, callback)),
      onClose: (session: SMTPServerSession) => {
        this.#closed.add(session);
        if (this.#counted.delete(session)) {
          const left = (this.#perClient.get(session.remoteAddress) ?? 1) - 1;
          if (left > 0) this.#perClient.set(session.remoteAddress, left);
          else this.#perClient.delete(session.remoteAddress);
        }
        this.#reset(session.id);
        if (this.#draining) this.#checkDrained();
      },
    } as ConstructorParameters<typeof SMTPServer>[0]);
    // Replies are whole lines written once each: Nagle's algorithm could only hold them back.
    server.server.on('connection', (socket: Socket) => socket.setNoDelay(true));
    // smtp-server reports a client's connection reset as an 'error' on the server; without a
    // listener that would end the process.
    server.on('error', (err: NodeJS.ErrnoException) => this.#log.debug({ err: err.message, code: err.code }, 'client connection error'));
    return server;
  }

  /**
   * The session's own list replaces the server's. When the two are the same (no TLS, no AUTH:
   * the usual relay), the session gets none: smtp-server re-normalizes a session's list entry by
   * entry on every check, about three times per command, and the server's list it does not.
   */
  #applyCommandsOff(session: SMTPServerSession): void {
    const off = this.#commandsOff(session);
    const same = off.length === SERVER_COMMANDS_OFF.length && off.every((command) => SERVER_COMMANDS_OFF.includes(command));
    (session as { disabledCommands?: string[] }).disabledCommands = same ? undefined : off;
  }

  /** Commands this session may not use: STARTTLS without a certificate, AUTH without TLS. */
  #commandsOff(session: SMTPServerSession): string[] {
    const off: string[] = [];
    if (!this.#options.tls) off.push('STARTTLS');
    const loopback = this.#options.allowPlaintextAuthOnLoopback && (session.remoteAddress.startsWith('127.') || session.remoteAddress === '::1');
    if (!this.#options.authenticator.enabled || !(session.secure || loopback)) off.push('AUTH');
    return off;
  }

  async #auth(
    auth: { method: string; username?: string; password?: string },
    session: SMTPServerSession,
    callback: (err: Error | null, result?: { user: string }) => void,
  ): Promise<void> {
    if (this.#commandsOff(session).includes('AUTH')) return callback(new SmtpReplyError(Replies.authNeedsTls()));
    const user = auth.username ?? '';
    // A failure here is a temporary one for the client, never an unhandled rejection.
    const result = await this.#options.authenticator.check(session.remoteAddress, user, auth.password ?? '').catch(() => 'rate-limited' as const);
    // The user name is logged, the password never.
    this.#log.info({ user, client: session.remoteAddress, result }, 'authentication');
    if (result === 'ok') return callback(null, { user });
    callback(new SmtpReplyError(result === 'rate-limited' ? Replies.authRateLimited() : Replies.authFailed()));
  }

  /** Re-reads nothing itself: installs a new certificate and key on every TLS listener. */
  updateTls(tls: { cert: Buffer; key: Buffer }): void {
    for (const { server } of this.#servers) server.updateSecureContext({ key: tls.key, cert: tls.cert });
  }

  /** Open client connections, for metrics. */
  connectionCount(): number {
    return this.#live().length;
  }

  /** Listens on every configured address; resolves with them: SMTP, then implicit TLS, then LMTP. */
  async listen(): Promise<{ smtp: AddressInfo; tls?: AddressInfo; lmtp?: AddressInfo }> {
    const bound: AddressInfo[] = [];
    for (const { server, at } of this.#servers) {
      bound.push(
        await new Promise<AddressInfo>((resolve, reject) => {
          const net = server.server;
          net.once('error', reject);
          net.listen(at.port, at.host, () => {
            net.off('error', reject);
            resolve(net.address() as AddressInfo);
          });
        }),
      );
    }
    const find = (at: SmtpDestination | undefined) => (at ? bound[this.#servers.findIndex((s) => s.at === at)] : undefined);
    return { smtp: bound[0]!, tls: find(this.#options.implicitTlsListen), lmtp: find(this.#options.lmtpListen) };
  }

  #connection(session: SMTPServerSession): ConnectionInfo {
    return {
      id: session.id,
      remoteAddress: session.remoteAddress,
      remotePort: session.remotePort,
      heloName: session.hostNameAppearsAs ?? '',
      secure: Boolean(session.secure),
      user: sessionUser(session),
    };
  }

  /**
   * Builds new transactions with `deps` from now on; resolves once every transaction that was
   * open at the swap has ended (so what they use, e.g. the old plugin driver, can be closed).
   */
  swap(deps: TransactionDeps): Promise<void> {
    this.#deps = deps;
    const before = new Set(this.#transactions.values());
    return new Promise((resolve) => {
      const check = () => {
        for (const tx of this.#transactions.values()) if (before.has(tx)) return this.#waiters.push(check);
        resolve();
      };
      check();
    });
  }

  #ended(sessionId: string): void {
    this.#transactions.delete(sessionId);
    for (const wake of this.#waiters.splice(0)) wake();
  }

  #reset(sessionId: string): void {
    const tx = this.#transactions.get(sessionId);
    if (!tx) return;
    this.#ended(sessionId);
    tx.abort();
    this.#closeIfDraining(sessionId);
  }

  async #mail(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): Promise<void> {
    this.#reset(session.id);
    if (this.#draining) return answer(callback, Replies.shuttingDown());
    if (this.#options.requireTls && !session.secure) return answer(callback, Replies.tlsRequired());
    const connection = this.#connection(session);
    const sender = envelopeAddress(address);
    if (connection.user && !this.#options.authenticator.senderAllowed(connection.user, sender.address)) return answer(callback, Replies.senderNotAllowed(connection.user));
    const tx = new InboundTransaction(this.#deps, connection, sender);
    // Registered before the plugins run, so a reload waits for it before closing them.
    this.#transactions.set(session.id, tx);
    const reply = await tx.mail(this.#options.access.mayRelay(session.remoteAddress, connection.user));
    if (!isSuccess(reply) || this.#closed.has(session)) {
      if (this.#transactions.get(session.id) === tx) this.#ended(session.id);
      tx.abort();
      if (!isSuccess(reply)) this.#deps.events?.transaction(reply, (Date.now() - tx.startedAt) / 1000);
    }
    answer(callback, reply);
  }

  async #rcpt(address: SMTPServerAddress, session: SMTPServerSession, callback: Callback): Promise<void> {
    const tx = this.#transactions.get(session.id);
    if (!tx) return answer(callback, Replies.localError());
    const recipient = envelopeAddress(address);
    // Fail closed: nothing is routed, let alone forwarded, for a client that may not relay.
    if (!this.#options.access.mayRelay(session.remoteAddress, sessionUser(session)) || !this.#options.access.acceptsRecipient(recipient.address)) {
      return answer(callback, Replies.relayDenied());
    }
    const reply = await tx.rcpt(recipient);
    // The client left while the upstream answered: release what the recipient may have opened.
    if (this.#closed.has(session)) tx.abort();
    answer(callback, reply);
  }

  async #data(stream: Readable, session: SMTPServerSession, callback: Callback): Promise<void> {
    const tx = this.#transactions.get(session.id);
    if (!tx) {
      await drain(stream);
      return answer(callback, Replies.localError());
    }
    const reply = await tx.data(stream);
    this.#ended(session.id);
    // The client hears the verdict first; logging and accounting are not on its clock.
    answer(callback, reply);
    const summary = tx.summary(reply);
    // Gone: the session closed, or the body stream was cut off (smtp-server destroys it at once
    // when the client leaves mid-message; the session's close comes a moment later).
    const gone = this.#closed.has(session) || (stream.destroyed && !stream.readableEnded);
    if (gone) {
      // The client was gone (it left, or a shutdown that timed out sent it 421) before this
      // verdict: it never heard it, and will send the message again.
      this.#log.warn({ ...summary, clientGone: true }, isSuccess(reply) ? 'transaction: accepted after the client was gone; the sender will retry, the destinations may get it twice' : 'transaction: the client was gone');
    } else this.#log.info(summary, 'transaction');
    this.#deps.events?.transaction(reply, summary.latencyMs / 1000);
    // A client that left mid-message is no verdict on the primary: it was never given the whole message.
    if (summary.primary && !(gone && !isSuccess(reply))) {
      const outcome = OUTCOME[replyClass(reply)];
      this.#deps.events?.delivery({
        id: tx.id,
        destination: summary.primary,
        kind: 'sync',
        outcome,
        seconds: summary.latencyMs / 1000,
        ...(outcome !== 'delivered' && { reason: summary.verdict }),
      });
    }
    this.#closeIfDraining(session.id);
  }

  /** During a drain, a session whose transaction just ended is closed instead of reused. */
  #closeIfDraining(sessionId: string): void {
    if (!this.#draining) return;
    setImmediate(() => {
      const conn = this.#live().find((c) => c.id === sessionId);
      if (conn && !this.#transactions.has(sessionId)) this.#goodbye(conn);
      this.#checkDrained();
    });
  }

  #live(): LiveConnection[] {
    return this.#servers.flatMap(({ server }) => [...(server as unknown as { connections: Set<LiveConnection> }).connections]);
  }

  #goodbye(conn: LiveConnection): void {
    const reply = Replies.shuttingDown();
    conn.send(reply.code, `${reply.enhanced} ${reply.text}`);
    conn.close();
  }

  #checkDrained(): void {
    if (this.#drained && this.#live().length === 0) this.#drained();
  }

  /**
   * Stops accepting, says 421 to idle sessions, lets transactions in progress finish for up to
   * `shutdownTimeoutMs`, then cuts the rest off (their senders retry: nothing was accepted).
   */
  async drain(): Promise<void> {
    if (this.#draining) return;
    this.#draining = true;
    const closed = Promise.all(this.#servers.map(({ server }) => new Promise<void>((resolve) => server.server.close(() => resolve()))));
    const drained = new Promise<void>((resolve) => {
      this.#drained = resolve;
    });
    for (const conn of this.#live()) if (!this.#transactions.has(conn.id)) this.#goodbye(conn);
    this.#checkDrained();
    const timer = setTimeout(() => {
      for (const tx of this.#transactions.values()) {
        this.#log.warn({ id: tx.id }, 'shutdown timed out: transaction cut off with 421; the sender will retry');
      }
      for (const conn of this.#live()) this.#goodbye(conn);
      this.#drained?.();
    }, this.#options.shutdownTimeoutMs);
    await drained;
    clearTimeout(timer);
    for (const tx of this.#transactions.values()) tx.abort();
    await closed;
  }
}

function sessionUser(session: SMTPServerSession): string | undefined {
  return typeof session.user === 'string' ? session.user : undefined;
}

function envelopeAddress(address: SMTPServerAddress): EnvelopeAddress {
  const raw = (address as unknown as ParsedAddressWithRaw).raw;
  return raw ?? { address: address.address, params: [] };
}

function answer(callback: Callback, reply: SmtpReply): void {
  if (isSuccess(reply)) callback(null, replyWords(reply));
  else callback(new SmtpReplyError(reply));
}
