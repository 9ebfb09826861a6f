/**
 * The plugin contract. A routing plugin decides where mail goes; the core does everything else
 * (SMTP, reply codes, streaming, durability). Plugins are plain objects with a `name` and
 * optional hooks, in SMTP order; every hook is async-capable and returns a decision or nothing.
 *
 * Hook semantics (run by the driver, `driver.ts`):
 * - `mail` and `rcpt` are *first-wins*: plugins are asked in configured order and the first
 *   decision returned is used; `undefined` defers to the next plugin.
 * - A `mail` decision routes the whole transaction (MAIL FROM is forwarded at once); any
 *   `rcpt` decision overrides it for that recipient.
 * - No decision at all for a recipient is a temporary failure (451 4.4.0): the router fails closed.
 * - A hook that throws or exceeds its time limit is a 451 for that command, never a crash.
 * - `setup` and `close` are sequential, in order, once per plugin instance (not per message).
 */
import type { Logger } from 'pino';
import type { Destination } from '../core/destination.ts';
import type { DestinationRef } from '../core/destinations.ts';
import type { CircuitState } from '../core/health.ts';
import type { SmtpReply } from '../core/replies.ts';

export type { Destination, DestinationRef };

export type Awaitable<T> = T | Promise<T>;

/** What the core knows about the client connection. */
export interface ConnectionInfo {
  readonly id: string;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** The name the client gave with EHLO/HELO. */
  readonly heloName: string;
  readonly secure: boolean;
  /** The authenticated user, when the client authenticated. */
  readonly user?: string;
}

/** Per-transaction context: the sender, and a notes map plugins may share state through. */
export interface MailContext {
  readonly connection: ConnectionInfo;
  /** The queue id of this transaction, as it appears in logs and the spool. */
  readonly transactionId: string;
  /** The envelope sender exactly as the client sent it; `''` is the null sender `<>`. */
  readonly sender: string;
  /** Free-form per-transaction notes, shared by all plugins. */
  readonly notes: Map<string, unknown>;
  readonly log: Logger;
}

export interface RcptContext extends MailContext {
  /** The recipient being routed, exactly as the client sent it. */
  readonly recipient: string;
  /** Recipients accepted so far in this transaction. */
  readonly acceptedRecipients: readonly string[];
}

/**
 * Deliver: `to` is tried in order until one answers (failover); `copies` get durable async copies.
 * Destinations are names from the config's `destinations:` or literal `host:port`.
 */
export interface DeliverDecision {
  readonly kind: 'deliver';
  /** Synchronous destinations, in failover order: the first reachable one's verdict is the client's. */
  readonly to: readonly DestinationRef[];
  /** Asynchronous destinations: each gets a durable copy of what `to` accepted. */
  readonly copies: readonly DestinationRef[];
  /** Who decided, for logs and `route` explanations (e.g. `route: rule 2`); the driver fills in the plugin name. */
  readonly decidedBy?: string;
}

/** Refuse with this reply (a temporary 4xx or permanent 5xx, fixed by the helper that built it). */
export interface RefuseDecision {
  readonly kind: 'refuse';
  readonly reply: SmtpReply;
  readonly decidedBy?: string;
}

export type RouteDecision = DeliverDecision | RefuseDecision;

export interface PluginSetupContext {
  readonly log: Logger;
  /** Resolves a destination name or `host:port`; throws (a config error at start-up) if unknown. */
  destination(ref: DestinationRef): Destination;
  /** Destination health, shared by all plugins (circuit breakers fed by every delivery). */
  readonly health: HealthView;
}

/** Read-only view of destination health. */
export interface HealthView {
  /** Whether the destination would take an attempt now (its circuit is closed or ready to probe). */
  available(destination: Destination): boolean;
  state(destination: Destination): CircuitState;
}

export interface RouterPlugin {
  /** Unique name, used in logs and error messages. */
  readonly name: string;
  /** Runs once when the router starts, before it listens. */
  setup?(ctx: PluginSetupContext): Awaitable<void>;
  /** At MAIL FROM: route the whole transaction, or `undefined` to decide per recipient. */
  mail?(ctx: MailContext): Awaitable<RouteDecision | undefined>;
  /** At RCPT TO: route this recipient, or `undefined` to defer to the next plugin. */
  rcpt?(ctx: RcptContext): Awaitable<RouteDecision | undefined>;
  /** Runs once at shutdown. */
  close?(): Awaitable<void>;
}
