/**
 * `duplicate`: the primary's verdict is the client's verdict; every backup gets a durable
 * asynchronous copy of what the primary accepted. The decision is the same for every message,
 * so it is made once and returned at MAIL FROM (the core forwards MAIL FROM at once).
 */
import { definePlugin, deliver, type DestinationInput } from '../../src/plugins/decisions.ts';
import type { RouterPlugin } from '../../src/plugins/types.ts';

export interface DuplicateOptions {
  /** Synchronous destination. */
  primary: DestinationInput;
  /** Destinations that each get a durable copy. */
  backups?: readonly DestinationInput[];
}

export function duplicate(options: DuplicateOptions): RouterPlugin {
  const decision = deliver({ to: options.primary, copies: options.backups ?? [], decidedBy: 'duplicate' });
  return definePlugin({
    name: 'duplicate',
    mail: () => decision,
  });
}

export default duplicate;
