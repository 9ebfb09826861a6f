/**
 * `duplicate`: the primary's verdict is the client's verdict; every backup gets a durable
 * asynchronous copy of what the primary accepted. The decision is the same for every message,
 * so it is made once at setup and returned at MAIL FROM (the core forwards MAIL FROM at once).
 */
import { definePlugin, deliver, type DestinationInput } from '../../src/plugins/decisions.ts';
import type { DeliverDecision, RouterPlugin } from '../../src/plugins/types.ts';

export interface DuplicateOptions {
  /** Synchronous destination: a name from `destinations:` or `host:port`. */
  primary: DestinationInput;
  /** Destinations that each get a durable copy. */
  backups?: readonly DestinationInput[];
}

export function duplicate(options: DuplicateOptions): RouterPlugin {
  let decision: DeliverDecision | undefined;
  return definePlugin({
    name: 'duplicate',
    setup(ctx) {
      // Resolving here makes an unknown name a start-up error, not a per-message one.
      const primary = ctx.destination(options.primary);
      const backups = (options.backups ?? []).map((ref) => ctx.destination(ref));
      decision = deliver({ to: primary, copies: backups, decidedBy: 'duplicate' });
    },
    mail: () => decision,
  });
}

export default duplicate;
