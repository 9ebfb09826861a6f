/**
 * `failover`: ordered destinations; the first healthy one takes the transaction. A refused or
 * timed-out connection, or a 4xx greeting, moves on to the next *before* the client is answered;
 * a verdict about the message itself (a 5xx to MAIL, RCPT or DATA) is passed through, since it is
 * not a server failure. Destinations whose circuit is open (see `health:`) are skipped until their
 * cooldown ends; every delivery in the router feeds that health state.
 */
import { definePlugin, deliver, type DestinationInput } from '../../src/plugins/decisions.ts';
import type { DeliverDecision, RouterPlugin } from '../../src/plugins/types.ts';

export interface FailoverOptions {
  /** In order of preference. */
  destinations: readonly DestinationInput[];
  /** Destinations that each get a durable copy of what was accepted. */
  copies?: readonly DestinationInput[];
}

export function failover(options: FailoverOptions): RouterPlugin {
  if (!options || !Array.isArray(options.destinations) || options.destinations.length === 0) {
    throw new Error('failover: "destinations" must list at least one destination');
  }
  let decision: DeliverDecision | undefined;
  return definePlugin({
    name: 'failover',
    setup(ctx) {
      decision = deliver({
        to: options.destinations.map((ref) => ctx.destination(ref)),
        copies: (options.copies ?? []).map((ref) => ctx.destination(ref)),
        decidedBy: 'failover',
      });
    },
    // The core tries `to` in order and skips open circuits, so the decision never changes.
    mail: () => decision,
  });
}

export default failover;
