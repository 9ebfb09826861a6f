/**
 * Decision helpers: the only way plugins build decisions. The helper fixes the reply class, so a
 * temporary failure cannot carry a 5xx and a rejection cannot carry a 4xx (checked when the
 * decision is made, and again by the driver for decisions built by hand).
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

/**
 * What is wrong with a refusal's reply, if anything. Types only help TypeScript plugins that
 * use the helpers; this is checked at run time for every plugin, so a temporary failure never
 * reaches a sender as a permanent bounce (or a "refusal" as a 2xx that delivered nothing).
 */
export function refusalProblem(reply: { code?: unknown; enhanced?: unknown; text?: unknown }, expected?: 4 | 5): string | undefined {
  const { code, enhanced, text } = reply;
  if (typeof code !== 'number' || !Number.isInteger(code) || code < 400 || code > 599) return `reply code ${String(code)} is not a 4xx or 5xx`;
  const klass = Math.floor(code / 100);
  if (expected !== undefined && klass !== expected) return `reply code ${code} is not a ${expected}xx`;
  if (enhanced !== undefined && (typeof enhanced !== 'string' || !/^[45]\.\d{1,3}\.\d{1,3}$/.test(enhanced) || enhanced[0] !== String(klass))) {
    return `enhanced code ${JSON.stringify(enhanced)} does not match reply code ${code} (expected ${klass}.x.y)`;
  }
  if (typeof text !== 'string' || /[\r\n]/.test(text)) return 'reply text must be a string of one line';
  return undefined;
}

function refuse(expected: 4 | 5, code: number, enhanced: string, text: string, decidedBy: string | undefined): RefuseDecision {
  const reply = { code, enhanced, text };
  const problem = refusalProblem(reply, expected);
  if (problem) throw new TypeError(`${expected === 4 ? 'tempfail' : 'reject'}(): ${problem}`);
  return { kind: 'refuse', reply, decidedBy };
}

/** Permanent refusal (5xx): the sender bounces the message. */
export function reject(text = 'Rejected', options: { code?: 550 | 551 | 552 | 553 | 554; enhanced?: `5.${number}.${number}`; decidedBy?: string } = {}): RefuseDecision {
  return refuse(5, options.code ?? 550, options.enhanced ?? '5.7.1', text, options.decidedBy);
}

/** Temporary refusal (4xx): the sender keeps the message and retries. */
export function tempfail(text = 'Try again later', options: { code?: 421 | 450 | 451 | 452; enhanced?: `4.${number}.${number}`; decidedBy?: string } = {}): RefuseDecision {
  return refuse(4, options.code ?? 451, options.enhanced ?? '4.7.1', text, options.decidedBy);
}

/** Identity function for type inference when writing a plugin in its own file. */
export function definePlugin<P extends RouterPlugin>(plugin: P): P {
  return plugin;
}
