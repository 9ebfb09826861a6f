/**
 * Decision helpers: the only way plugins build decisions. The helper fixes the reply class, so a
 * temporary failure cannot carry a 5xx and a rejection cannot carry a 4xx.
 */
import type { DestinationRef } from '../core/destinations.ts';
import type { DeliverDecision, RefuseDecision, RouterPlugin } from './types.ts';

/** A destination: a name from the config's `destinations:`, a `host:port`, or a parsed one. */
export type DestinationInput = DestinationRef;

export interface DeliverOptions {
  /** Synchronous destination(s); several are tried in order (failover). */
  to: DestinationInput | readonly DestinationInput[];
  /** Destinations that get durable asynchronous copies of what `to` accepted. */
  copies?: readonly DestinationInput[];
  decidedBy?: string;
}

export function deliver(options: DeliverOptions): DeliverDecision {
  const to = (Array.isArray(options.to) ? options.to : [options.to]) as readonly DestinationInput[];
  if (to.length === 0) throw new TypeError('deliver() needs at least one destination in "to"');
  return { kind: 'deliver', to, copies: options.copies ?? [], decidedBy: options.decidedBy };
}

function refuse(code: number, enhanced: string, text: string, decidedBy: string | undefined): RefuseDecision {
  return { kind: 'refuse', reply: { code, enhanced, text }, decidedBy };
}

/** Permanent refusal (5xx): the sender bounces the message. */
export function reject(text = 'Rejected', options: { code?: 550 | 551 | 552 | 553 | 554; enhanced?: `5.${number}.${number}`; decidedBy?: string } = {}): RefuseDecision {
  return refuse(options.code ?? 550, options.enhanced ?? '5.7.1', text, options.decidedBy);
}

/** Temporary refusal (4xx): the sender keeps the message and retries. */
export function tempfail(text = 'Try again later', options: { code?: 421 | 450 | 451 | 452; enhanced?: `4.${number}.${number}`; decidedBy?: string } = {}): RefuseDecision {
  return refuse(options.code ?? 451, options.enhanced ?? '4.7.1', text, options.decidedBy);
}

/** Identity function for type inference when writing a plugin in its own file. */
export function definePlugin<P extends RouterPlugin>(plugin: P): P {
  return plugin;
}
