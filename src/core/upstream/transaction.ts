/**
 * The one delivery primitive every strategy is built on: an SMTP transaction with one upstream,
 * opened against an ordered list of candidate destinations (failover before anything was said),
 * then driven recipient by recipient and finished with the message stream.
 */
import type { Readable } from 'node:stream';
import type { Destination, SmtpDestination } from '../destination.ts';
import { MaildirTransaction } from './maildir.ts';
import { mailCommand, rcptCommand, type EnvelopeAddress } from '../envelope.ts';
import { ErrorCodes, GsdError } from '../errors.ts';
import { Replies } from '../replies.ts';
import type { UpstreamConnection } from './connection.ts';
import type { Permit } from './limits.ts';
import type { UpstreamPool } from './pool.ts';
import type { UpstreamReply } from './reply-reader.ts';
import type { BodyFilter } from '../message-stream.ts';

export interface TransactionTimeouts {
  /** Each command, connect and greeting. */
  timeoutMs: number;
  /** The final reply after the message body. */
  finalTimeoutMs: number;
}

/** Errors that mean "this server is not there": the next candidate may take the transaction. */
const FAILOVER_CODES = new Set<string>([ErrorCodes.UPSTREAM_UNAVAILABLE, ErrorCodes.UPSTREAM_TIMEOUT]);
/** Errors that count against a destination's health. */
const UNHEALTHY_CODES = new Set<string>([...FAILOVER_CODES, ErrorCodes.UPSTREAM_LOST, ErrorCodes.UPSTREAM_PROTOCOL]);

/** RCPT TO for each recipient, one after another (no pipelining): the verdicts in order. */
async function rcptInTurn(recipients: readonly EnvelopeAddress[], rcpt: (recipient: EnvelopeAddress) => Promise<UpstreamReply>): Promise<UpstreamReply[]> {
  const verdicts: UpstreamReply[] = [];
  for (const recipient of recipients) verdicts.push(await rcpt(recipient));
  return verdicts;
}

/** An open transaction with one destination: SMTP or a Maildir. */
export interface DeliveryTransaction {
  readonly destination: Destination;
  rcpt(recipient: EnvelopeAddress): Promise<UpstreamReply>;
  /**
   * Every recipient at once (a spooled copy's are all known): one verdict each. With a server that
   * pipelines, MAIL FROM, every RCPT TO and DATA go in one write.
   */
  rcptAll(recipients: readonly EnvelopeAddress[]): Promise<UpstreamReply[]>;
  /**
   * Sends the body (or opens it, when the destination is ready for it) and returns the final
   * reply. A body already in memory may come as a Buffer.
   */
  data(body: Readable | (() => Readable | Buffer)): Promise<UpstreamReply>;
  /** Abandons the transaction; the connection (if any) is reset before reuse. */
  abort(): void;
  /** Abandons the transaction and its connection. */
  destroy(): void;
}

export class UpstreamTransaction implements DeliveryTransaction {
  #conn: UpstreamConnection | undefined;
  readonly #pool: UpstreamPool;
  readonly #timeouts: TransactionTimeouts;
  readonly destination: SmtpDestination;

  readonly #permit: Permit;
  /** The sender, while MAIL FROM waits to be pipelined with the first RCPT TO. */
  #pendingMail: { sender: EnvelopeAddress; reused: boolean } | undefined;
  /** The upstream refused the pipelined MAIL FROM: the answer to every RCPT of this transaction. */
  #mailRefused: UpstreamReply | undefined;
  /** DATA went out pipelined behind the last RCPT TO: its reply. */
  #dataSent: Promise<UpstreamReply> | undefined;

  private constructor(pool: UpstreamPool, conn: UpstreamConnection, timeouts: TransactionTimeouts, permit: Permit, pendingMail?: { sender: EnvelopeAddress; reused: boolean }) {
    this.#permit = permit;
    this.#pool = pool;
    this.#conn = conn;
    this.#timeouts = timeouts;
    this.destination = conn.destination;
    this.#pendingMail = pendingMail;
  }

  /**
   * Sends MAIL FROM to the first candidate that answers. Connection failures and timeouts before
   * MAIL move on to the next candidate; a reply to MAIL, whatever it is, is the verdict.
   * Resolves with the transaction (only when MAIL was accepted) and the reply; throws when no
   * candidate could be reached (a GsdError saying why the last one failed).
   */
  static async begin(
    pool: UpstreamPool,
    candidates: readonly Destination[],
    sender: EnvelopeAddress,
    timeouts: TransactionTimeouts,
    options: { onFailover?: (destination: Destination, err: GsdError) => void } = {},
  ): Promise<{ tx: DeliveryTransaction | undefined; reply: UpstreamReply; destination: Destination }> {
    let lastError: unknown;
    const skipped: string[] = [];
    for (const [position, destination] of candidates.entries()) {
      if (destination.kind === 'maildir') return { ...MaildirTransaction.begin(destination, sender), destination };
      // Over its limits (and not waiting): the next candidate, or 451 4.7.0. Not a health failure.
      const permit = await pool.limits.acquire(destination, destination.onLimit === 'wait');
      if (!permit) {
        lastError = new GsdError(ErrorCodes.DESTINATION_BUSY, `${destination.label} is at its connection or rate limit`, { step: 'connect' });
        continue;
      }
      // A circuit that is not closed needs a real answer to MAIL (a probe ends with one).
      const healthy = pool.health.state(destination) === 'closed';
      // An open circuit is not tried: answering 451 now beats waiting for a timeout.
      if (!pool.health.tryAcquire(destination)) {
        permit.release();
        skipped.push(destination.label);
        continue;
      }
      try {
        let { conn, reused } = await pool.acquire(destination);
        // RFC 6531: mail that needs SMTPUTF8 cannot go to a server without it; a clear 553, not a mangled message.
        if (sender.params.some((p) => p.toUpperCase() === 'SMTPUTF8') && !conn.extensions.has('SMTPUTF8')) {
          permit.release();
          pool.release(conn);
          pool.health.success(destination);
          return { tx: undefined, reply: { ...Replies.smtputf8Unsupported(destination.label), lines: [] }, destination };
        }
        if (conn.extensions.has('PIPELINING') && healthy && position === candidates.length - 1) {
          // MAIL FROM waits for the first RCPT TO and goes out with it: one write and one round
          // trip fewer per message. Only with the last candidate: a server that stalls at MAIL
          // must still leave room to fail over to the next one, which needs MAIL's answer now.
          return { tx: new UpstreamTransaction(pool, conn, timeouts, permit, { sender, reused }), reply: { ...Replies.senderOk(), lines: [] }, destination };
        }
        let reply: UpstreamReply | undefined = await conn.command(mailCommand(sender, conn.extensions), 'MAIL', timeouts.timeoutMs).catch((err: unknown) => {
          if (!reused) throw err;
          return undefined;
        });
        if (reply === undefined || (reused && reply.code === 421)) {
          // A pooled connection the server closed while idle, or will not use again: one fresh
          // try, nothing was sent yet.
          conn.destroy();
          ({ conn, reused } = await pool.acquire(destination, true));
          reply = await conn.command(mailCommand(sender, conn.extensions), 'MAIL', timeouts.timeoutMs);
        }
        // Any reply to MAIL is a server that works (this also ends a half-open probe).
        pool.health.success(destination);
        if (reply.code >= 200 && reply.code < 300) return { tx: new UpstreamTransaction(pool, conn, timeouts, permit), reply, destination };
        permit.release();
        pool.release(conn); // no transaction open: nothing to reset
        return { tx: undefined, reply, destination };
      } catch (err) {
        permit.release();
        lastError = err;
        // Every failed attempt is recorded, so a claimed probe is always released.
        pool.health.failure(destination, (err as Error).message);
        if (!(err instanceof GsdError && FAILOVER_CODES.has(err.code))) throw err;
        options.onFailover?.(destination, err);
      }
    }
    if (lastError) throw lastError;
    if (skipped.length > 0) throw new GsdError(ErrorCodes.CIRCUIT_OPEN, `circuit open for ${skipped.join(', ')}`, { step: 'connect' });
    throw new GsdError(ErrorCodes.UPSTREAM_UNAVAILABLE, 'no destination to deliver to', { step: 'connect' });
  }

  #connection(): UpstreamConnection {
    if (!this.#conn) throw new GsdError(ErrorCodes.UPSTREAM_LOST, 'transaction already finished');
    return this.#conn;
  }

  /** Recipients the upstream accepted: an LMTP server answers DATA once for each. */
  #accepted = 0;

  async rcpt(recipient: EnvelopeAddress): Promise<UpstreamReply> {
    if (this.#mailRefused) return this.#mailRefused;
    const reply = await (this.#pendingMail ? this.#mailAndRcpt(this.#pendingMail, [recipient], false).then(([first]) => first!) : this.#rcpt(recipient)).catch((err: unknown) =>
      this.#lost(err),
    );
    if (reply.code >= 200 && reply.code < 300) this.#accepted++;
    return reply;
  }

  async rcptAll(recipients: readonly EnvelopeAddress[]): Promise<UpstreamReply[]> {
    if (!this.#pendingMail || recipients.length === 0) return rcptInTurn(recipients, (recipient) => this.rcpt(recipient));
    const verdicts = await this.#mailAndRcpt(this.#pendingMail, recipients, true).catch((err: unknown) => this.#lost(err));
    for (const reply of verdicts) if (reply.code >= 200 && reply.code < 300) this.#accepted++;
    return verdicts;
  }

  #rcpt(recipient: EnvelopeAddress): Promise<UpstreamReply> {
    const conn = this.#connection();
    return conn.command(rcptCommand(recipient, conn.extensions), 'RCPT', this.#timeouts.timeoutMs);
  }

  /**
   * MAIL FROM and the RCPT TOs in one write, and DATA behind them when `withData` (RFC 2920 lets
   * DATA end a group). A refused MAIL is the verdict for every recipient, now and later (the
   * client hears it at RCPT, as from Postfix with smtpd_delay_reject), and frees the connection.
   */
  async #mailAndRcpt(pending: { sender: EnvelopeAddress; reused: boolean }, recipients: readonly EnvelopeAddress[], withData: boolean): Promise<UpstreamReply[]> {
    const conn = this.#connection();
    this.#pendingMail = undefined; // said: from now on, an abandoned transaction needs RSET
    const mailLine = mailCommand(pending.sender, conn.extensions);
    let mail: Promise<UpstreamReply>;
    let rcpts: Array<Promise<UpstreamReply>> = [];
    let data: Promise<UpstreamReply> | undefined;
    // A fresh connection (below) is asked again whether it may pipeline.
    if (conn.extensions.has('PIPELINING')) {
      const lines: Array<readonly [string, string]> = [[mailLine, 'MAIL'], ...recipients.map((r) => [rcptCommand(r, conn.extensions), 'RCPT'] as const)];
      if (withData) lines.push(['DATA', 'DATA']);
      const replies = conn.commands(lines, this.#timeouts.timeoutMs);
      mail = replies[0]!;
      rcpts = replies.slice(1, 1 + recipients.length);
      data = withData ? replies.at(-1) : undefined;
    } else {
      mail = conn.command(mailLine, 'MAIL', this.#timeouts.timeoutMs);
    }
    const later = data ? [...rcpts, data] : rcpts;
    for (const reply of later) reply.catch(() => undefined); // observed below, unless MAIL failed first
    const mailReply = await mail.catch((err: unknown) => {
      if (!pending.reused) throw err;
      return err as Error;
    });
    if (pending.reused && this.#conn === conn && (mailReply instanceof Error || mailReply.code === 421)) {
      // A pooled connection the server closed while idle, or will not use again (421): one
      // fresh try, nothing was accepted.
      conn.destroy();
      const fresh = (await this.#pool.acquire(this.destination, true)).conn;
      if (this.#conn !== conn) {
        fresh.quit(); // abandoned (abort) while reconnecting
        throw new GsdError(ErrorCodes.UPSTREAM_LOST, 'transaction abandoned', { step: 'MAIL' });
      }
      this.#conn = fresh;
      this.#pendingMail = { ...pending, reused: false };
      return this.#mailAndRcpt(this.#pendingMail, recipients, withData);
    }
    if (mailReply instanceof Error) throw mailReply;
    // Any reply to MAIL is a server that works.
    this.#pool.health.success(this.destination);
    if (mailReply.code >= 200 && mailReply.code < 300) {
      if (rcpts.length === 0) return rcptInTurn(recipients, (recipient) => this.#rcpt(recipient));
      const verdicts = await Promise.all(rcpts);
      this.#dataSent = data;
      return verdicts;
    }
    await Promise.allSettled(later); // 503s: no transaction is open upstream
    this.#mailRefused = { ...mailReply, command: 'MAIL' };
    if (this.#conn === conn) {
      this.#conn = undefined;
      this.#permit.release();
      this.#pool.release(conn);
    }
    return recipients.map(() => this.#mailRefused!);
  }

  /** A connection lost or timed out mid-dialogue counts against the destination's health. */
  #lost(err: unknown): never {
    if (err instanceof GsdError && UNHEALTHY_CODES.has(err.code)) this.#pool.health.failure(this.destination, err.message);
    throw err;
  }

  /**
   * Sends the body (or opens it, on 354); the connection goes back to the pool after a final
   * reply, or is closed. `filter` sees every chunk on the way and may throw to fail the message
   * (before the dot); the body is then left unread for its owner to drain.
   */
  async data(body: Readable | (() => Readable | Buffer), filter?: BodyFilter): Promise<UpstreamReply> {
    const conn = this.#connection();
    this.#conn = undefined;
    try {
      const lmtp = conn.destination.protocol === 'lmtp';
      const reply = await conn.data(body, this.#timeouts.timeoutMs, this.#timeouts.finalTimeoutMs, { finalReplies: lmtp ? this.#accepted : 1, sent: this.#dataSent, filter });
      // A refused DATA (not 354) leaves the transaction open upstream.
      if (reply.code !== 250) conn.dirty = true;
      this.#pool.release(conn);
      return reply;
    } catch (err) {
      conn.destroy();
      // A failed body (the client went away, a policy error) says nothing about the upstream.
      if (err instanceof GsdError && err.step !== 'body') this.#lost(err);
      throw err;
    } finally {
      this.#permit.release(); // the slot is free once the final reply is in
    }
  }

  /** Abandons the transaction: the connection is RSET before it is reused. */
  abort(): void {
    const conn = this.#conn;
    if (!conn) return;
    this.#conn = undefined;
    const dataSent = this.#dataSent;
    if (dataSent) {
      // DATA went out with the envelope: its reply decides. A refusal leaves the transaction
      // open (RSET before reuse); a 354 (no recipient was accepted, yet the server waits for a
      // body) is ended by closing the connection, so that no empty message is delivered.
      void dataSent.then(
        (reply) => {
          if (reply.code === 354) conn.destroy();
          else conn.dirty = true;
          this.#pool.release(conn);
        },
        () => conn.destroy(),
      ).finally(() => this.#permit.release());
      return;
    }
    this.#permit.release();
    // Nothing was said yet when MAIL FROM was still waiting: the connection is clean.
    if (!this.#pendingMail) conn.dirty = true;
    this.#pool.release(conn);
  }

  /** Abandons the transaction and the connection, e.g. when the message must not complete. */
  destroy(): void {
    this.#conn?.destroy();
    this.#conn = undefined;
    this.#permit.release();
  }
}
