/**
 * One inbound mail transaction (MAIL … RCPT … DATA), relayed as it happens:
 *
 * - MAIL: plugins may route the whole transaction; then MAIL FROM goes upstream at once and the
 *   upstream's reply is the client's reply.
 * - RCPT: each recipient is routed, forwarded, and answered with its destination's verdict. One
 *   transaction has one synchronous destination; a recipient that routes elsewhere gets 452 and
 *   the sender's MTA sends it in its own transaction (that is what 452 at RCPT asks of it).
 * - DATA: the body streams, canonicalized (bare CR/LF policy, size limit), to the upstream and,
 *   when copies are due, to the spool at the same time. The spool has the message *before* the
 *   terminating dot goes upstream, and has it durably committed before the client hears 250.
 */
import { randomBytes } from 'node:crypto';
import { PassThrough, type Readable } from 'node:stream';
import type { Logger } from 'pino';
import { poolKeyOf, type Destination } from '../destination.ts';
import type { EnvelopeAddress } from '../envelope.ts';
import { replyForError } from '../errors.ts';
import { CanonicalBody, Canonicalizer, type BareLineEndingPolicy } from '../message-stream.ts';
import { isSuccess, passThrough, Replies, type SmtpReply } from '../replies.ts';
import type { DeliveryEvents } from '../observability/events.ts';
import type { Spool, SpoolRecord, SpoolWriter } from '../spool/types.ts';
import type { UpstreamPool } from '../upstream/pool.ts';
import { UpstreamTransaction, type DeliveryTransaction, type TransactionTimeouts } from '../upstream/transaction.ts';
import { routeKey, type PluginDriver, type Route } from '../../plugins/driver.ts';
import type { ConnectionInfo, MailContext, RcptContext } from '../../plugins/types.ts';

type DeliverRoute = Extract<Route, { kind: 'deliver' }>;

/** Per copy destination, the recipients it gets. */
type CopyPlan = Array<{ destination: Destination; recipients: EnvelopeAddress[] }>;

export interface TransactionDeps {
  readonly driver: PluginDriver;
  readonly pool: UpstreamPool;
  readonly spool: Spool;
  readonly timeouts: TransactionTimeouts;
  readonly maxMessageBytes: number;
  readonly bareLineEndings: BareLineEndingPolicy;
  readonly log: Logger;
  readonly events?: DeliveryEvents;
}

/** The synchronous side of the transaction, once a recipient or MAIL routed it. */
interface Primary {
  readonly key: string;
  readonly decision: DeliverRoute;
  tx?: DeliveryTransaction;
  destination?: Destination;
  /** Why the upstream transaction is unusable; every later command gets this reply. */
  failure?: SmtpReply;
}

interface AcceptedRecipient {
  readonly recipient: EnvelopeAddress;
  readonly copies: readonly Destination[];
}

/** A summary for the one log line per transaction. */
export interface TransactionSummary {
  id: string;
  from: string;
  recipients: number;
  size: number;
  primary: string | undefined;
  copies: number;
  verdict: string;
  latencyMs: number;
}

/**
 * Queue ids: time-ordered, unique, safe as file names. A random prefix drawn once per process and
 * a counter keep them unique across restarts and instances without a random draw per message.
 */
const ID_PREFIX = randomBytes(3).toString('hex').toUpperCase();
let idCounter = 0;
export const newQueueId = (): string => `${Date.now().toString(36).toUpperCase()}${ID_PREFIX}${(idCounter++ % 0x100000).toString(36).toUpperCase().padStart(4, '0')}`;


export class InboundTransaction {
  readonly id = newQueueId();
  readonly startedAt = Date.now();
  readonly #deps: TransactionDeps;
  readonly #ctx: MailContext;
  readonly #sender: EnvelopeAddress;
  #mailDecision: DeliverRoute | undefined;
  #primary: Primary | undefined;
  readonly #accepted: AcceptedRecipient[] = [];
  #size = 0;

  constructor(deps: TransactionDeps, connection: ConnectionInfo, sender: EnvelopeAddress) {
    this.#deps = deps;
    this.#sender = sender;
    const id = this.id;
    let log: Logger | undefined;
    this.#ctx = {
      connection,
      transactionId: id,
      sender: sender.address,
      notes: new Map(),
      // Made when first used: most transactions log one summary line, through the listener.
      get log() {
        return (log ??= deps.log.child({ id }));
      },
    };
  }

  #fail(err: unknown): SmtpReply {
    const reply = replyForError(err, { maxMessageBytes: this.#deps.maxMessageBytes });
    this.#ctx.log.warn({ err: (err as Error)?.message, reply: reply.code }, 'transaction step failed');
    return reply;
  }

  /** `mayRelay: false` (an outsider): nothing is routed or forwarded; RCPT will refuse. */
  async mail(mayRelay = true): Promise<SmtpReply> {
    if (!mayRelay) return Replies.senderOk();
    let decision;
    try {
      decision = await this.#deps.driver.mail(this.#ctx);
    } catch (err) {
      return this.#fail(err);
    }
    if (decision?.kind === 'refuse') return decision.reply;
    if (decision?.kind === 'deliver') {
      this.#mailDecision = decision;
      return this.#openPrimary(decision);
    }
    return Replies.senderOk();
  }

  async #openPrimary(decision: DeliverRoute): Promise<SmtpReply> {
    const primary: Primary = { key: routeKey(decision)!, decision };
    try {
      const { tx, reply, destination } = await UpstreamTransaction.begin(
        this.#deps.pool,
        decision.to,
        this.#sender,
        this.#deps.timeouts,
        { onFailover: (dest, err) => this.#ctx.log.warn({ destination: dest.label, err: err.message }, 'destination unavailable, trying the next') },
      );
      primary.destination = destination;
      if (tx) primary.tx = tx;
      else primary.failure = passThrough(reply);
      this.#primary = primary;
      return passThrough(reply);
    } catch (err) {
      // Nothing was opened: a later command may try again.
      return this.#fail(err);
    }
  }

  async rcpt(recipient: EnvelopeAddress): Promise<SmtpReply> {
    let decision;
    try {
      // Not a spread of the transaction's context: that would make its logger, through the getter.
      const base = this.#ctx;
      const ctx: RcptContext = {
        connection: base.connection,
        transactionId: base.transactionId,
        sender: base.sender,
        notes: base.notes,
        get log() {
          return base.log;
        },
        recipient: recipient.address,
        acceptedRecipients: this.#accepted.map((a) => a.recipient.address),
      };
      decision = await this.#deps.driver.routeRecipient(ctx, this.#mailDecision);
    } catch (err) {
      return this.#fail(err);
    }
    if (!decision) return Replies.noRoute();
    if (decision.kind === 'refuse') return decision.reply;

    if (this.#primary && this.#primary.key !== routeKey(decision)) {
      // The first accepted recipient fixes the transaction's destination. Until then, a MAIL-level
      // route (opened at MAIL FROM) gives way to the recipient's own route.
      if (this.#accepted.length > 0) return Replies.separateTransaction();
      this.#primary.tx?.abort();
      this.#primary = undefined;
    }
    if (!this.#primary) {
      const opened = await this.#openPrimary(decision);
      if (!this.#primary) return opened;
    }
    const primary = this.#primary!;
    const tx = primary.tx;
    if (primary.failure || !tx) return primary.failure ?? Replies.localError();
    // An LMTP server gives each recipient its own final verdict, but the client hears one: with
    // one recipient per transaction that verdict is exactly that recipient's (the sender sends
    // the next one in a new transaction, as for a recipient that routes elsewhere).
    if (this.#accepted.length > 0 && tx.destination.kind === 'smtp' && tx.destination.protocol === 'lmtp') return Replies.oneRecipientPerTransaction();
    try {
      const verdict = passThrough(await tx.rcpt(recipient));
      if (isSuccess(verdict)) this.#accepted.push({ recipient, copies: decision.copies });
      return verdict;
    } catch (err) {
      tx.destroy(); // the transaction may have been abandoned meanwhile (tx is then already released)
      primary.failure = this.#fail(err);
      return primary.failure;
    }
  }

  /** Relays the body. Always consumes `input` to its end, whatever happens upstream. */
  async data(input: Readable): Promise<SmtpReply> {
    const primary = this.#primary;
    const tx = primary?.tx;
    if (!primary || !tx || primary.failure) {
      await drain(input);
      return primary?.failure ?? Replies.localError();
    }
    primary.tx = undefined; // the upstream transaction ends with this DATA, whatever happens

    const copies = this.#copies();
    let writer: SpoolWriter | undefined;
    try {
      if (copies.length > 0) writer = this.#deps.spool.begin(this.id);
    } catch (err) {
      tx.abort();
      await drain(input);
      return this.#fail(err);
    }

    const options = { policy: this.#deps.bareLineEndings, maxBytes: this.#deps.maxMessageBytes };
    let reply: SmtpReply;
    if (!writer && tx instanceof UpstreamTransaction) {
      // No copies, an SMTP primary: the client's stream is read by the upstream connection itself
      // and canonicalized chunk by chunk on the way, with no stream stage in between. (A Maildir
      // primary reads with `for await`, which would destroy the client's stream on a failure.)
      const canonical = new Canonicalizer(options);
      try {
        reply = passThrough(await tx.data(input, canonical));
      } catch (err) {
        reply = this.#fail(err);
      } finally {
        this.#size = canonical.bytes;
        await drain(input);
      }
    } else {
      reply = await this.#dataThroughStreams(input, tx, new CanonicalBody(options), writer, copies);
    }
    if (!isSuccess(reply)) {
      await writer?.abort();
      return reply;
    }
    if (writer) {
      try {
        await writer.commit();
      } catch (err) {
        // The primary has the message but its copies are not safe: not a 250. The sender retries;
        // the primary may see it twice, which is better than a backup never seeing it.
        this.#ctx.log.error({ err: (err as Error).message }, 'primary accepted but the spool commit failed');
        await writer.abort();
        return this.#fail(err);
      }
    }
    return reply;
  }

  /**
   * The body as streams: canonicalized once, then to the upstream and, with copies, to the spool
   * at the same time. The spool has the message before the terminating dot goes upstream.
   */
  async #dataThroughStreams(input: Readable, tx: DeliveryTransaction, canonical: CanonicalBody, writer: SpoolWriter | undefined, copies: CopyPlan): Promise<SmtpReply> {
    input.once('error', (err) => canonical.destroy(err));
    let settled = false;
    let toUpstream: Readable = canonical;
    // The body may fail while DATA is still on its way upstream, before anyone reads it; the
    // upstream connection sees the failure through `errored` then, so it must not throw here.
    if (!writer) {
      // A Maildir primary without copies.
      canonical.on('error', () => undefined);
      canonical.once('end', () => {
        this.#size = canonical.bytes;
      });
    } else {
      const spooled = writer;
      const held = new PassThrough();
      toUpstream = held;
      held.on('error', () => undefined);
      canonical.once('error', (err) => held.destroy(err));
      spooled.body.once('error', (err) => held.destroy(err));
      canonical.once('end', () => {
        this.#size = canonical.bytes;
        if (settled) return; // the upstream already failed; the writer is being aborted
        // Copies are written before the upstream can accept (the dot waits): a spool that cannot
        // store them fails the message before the primary has it. The commit makes them durable.
        spooled.prepare(this.#record(copies)).then(
          () => held.end(),
          (err: unknown) => held.destroy(err as Error),
        );
      });
      canonical.pipe(held, { end: false });
      canonical.pipe(spooled.body, { end: false });
    }
    input.pipe(canonical);
    try {
      return passThrough(await tx.data(toUpstream));
    } catch (err) {
      return this.#fail(err);
    } finally {
      settled = true;
      input.unpipe(canonical);
      canonical.unpipe();
      canonical.destroy(); // whatever it still holds is not going anywhere
      await drain(input);
    }
  }

  /** Copies due for this message: per destination, the recipients the primary accepted. */
  #copies(): CopyPlan {
    if (!this.#accepted.some((a) => a.copies.length > 0)) return []; // pass-through: most mail
    const byDestination = new Map<string, { destination: Destination; recipients: EnvelopeAddress[] }>();
    for (const { recipient, copies } of this.#accepted) {
      for (const destination of copies) {
        const key = destination.kind === 'smtp' ? poolKeyOf(destination) : destination.label;
        const entry = byDestination.get(key) ?? { destination, recipients: [] };
        entry.recipients.push(recipient);
        byDestination.set(key, entry);
      }
    }
    return [...byDestination.values()];
  }

  #record(copies: CopyPlan): SpoolRecord {
    return {
      version: 1,
      id: this.id,
      createdAt: Date.now(),
      sender: this.#sender,
      client: { address: this.#ctx.connection.remoteAddress, helo: this.#ctx.connection.heloName },
      size: this.#size,
      copies: copies.map((c) => ({
        destination: c.destination.label,
        ...(c.destination.kind === 'smtp' && c.destination.name !== undefined && { name: c.destination.name }),
        recipients: c.recipients,
      })),
    };
  }

  /** The client abandoned the transaction (RSET, a new MAIL, QUIT, a dropped connection). */
  abort(): void {
    this.#primary?.tx?.abort();
    if (this.#primary) this.#primary.tx = undefined;
  }

  summary(verdict: SmtpReply): TransactionSummary {
    return {
      id: this.id,
      from: this.#sender.address,
      recipients: this.#accepted.length,
      size: this.#size,
      primary: this.#primary?.destination?.label,
      copies: this.#copies().length,
      verdict: `${verdict.code}${verdict.enhanced ? ' ' + verdict.enhanced : ''} ${verdict.text}`,
      latencyMs: Date.now() - this.startedAt,
    };
  }
}

/** Reads a stream to its end, discarding: smtp-server waits for the whole message. */
export function drain(stream: Readable): Promise<void> {
  return new Promise((resolve) => {
    if (stream.readableEnded || stream.destroyed) return resolve();
    stream.once('end', resolve);
    stream.once('close', resolve);
    stream.once('error', () => resolve());
    stream.resume();
  });
}
