/**
 * Delivery events: what the listener and the copy worker report, and who listens (metrics, the
 * migration journal). One interface, so the hot path makes one call per event.
 */
import type { SmtpReply } from '../replies.ts';

export type DeliveryKind = 'sync' | 'copy';
export type DeliveryOutcome = 'delivered' | 'deferred' | 'failed';

export interface DeliveryEvent {
  readonly id: string;
  readonly destination: string;
  readonly kind: DeliveryKind;
  readonly outcome: DeliveryOutcome;
  readonly seconds?: number;
  /** The reply or error behind a deferral or failure. */
  readonly reason?: string;
  readonly recipients?: readonly string[];
}

export interface DeliveryEvents {
  /** A transaction ended with `reply` after `seconds` (from MAIL FROM). */
  transaction(reply: SmtpReply, seconds: number): void;
  delivery(event: DeliveryEvent): void;
}

export function fanOut(...listeners: DeliveryEvents[]): DeliveryEvents {
  return {
    transaction: (reply, seconds) => listeners.forEach((l) => l.transaction(reply, seconds)),
    delivery: (event) => listeners.forEach((l) => l.delivery(event)),
  };
}
