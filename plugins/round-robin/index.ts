/**
 * `round-robin`: true rotation over the healthy destinations, with optional weights (smooth
 * weighted round robin, as nginx does it: a 3:1 pair goes a a b a, never a a a b). The chosen
 * destination comes first and the others follow as failover, so a failure still finds a home.
 */
import { definePlugin, deliver, type DestinationInput } from '../../src/plugins/decisions.ts';
import type { Destination, HealthView, RouterPlugin } from '../../src/plugins/types.ts';

export interface WeightedDestination {
  destination: DestinationInput;
  /** Relative share of transactions; default 1. */
  weight?: number;
}

export interface RoundRobinOptions {
  destinations: readonly (DestinationInput | WeightedDestination)[];
  copies?: readonly DestinationInput[];
}

interface Slot {
  destination: Destination;
  weight: number;
  current: number;
}

const isWeighted = (entry: DestinationInput | WeightedDestination): entry is WeightedDestination =>
  typeof entry === 'object' && entry !== null && 'destination' in entry;

export function roundRobin(options: RoundRobinOptions): RouterPlugin {
  if (!options || !Array.isArray(options.destinations) || options.destinations.length === 0) {
    throw new Error('round-robin: "destinations" must list at least one destination');
  }
  for (const entry of options.destinations) {
    const weight = isWeighted(entry) ? (entry.weight ?? 1) : 1;
    if (!(Number.isFinite(weight) && weight > 0)) throw new Error(`round-robin: weight must be a positive number, got ${String(weight)}`);
  }
  let slots: Slot[] = [];
  let copies: Destination[] = [];
  let health: HealthView | undefined;

  /** Smooth weighted round robin over the slots that are available now (all, if none is). */
  function next(): Destination[] {
    const healthy = slots.filter((slot) => health?.available(slot.destination) ?? true);
    const candidates = healthy.length > 0 ? healthy : slots;
    const total = candidates.reduce((sum, slot) => sum + slot.weight, 0);
    let best = candidates[0]!;
    for (const slot of candidates) {
      slot.current += slot.weight;
      if (slot.current > best.current) best = slot;
    }
    best.current -= total;
    const start = slots.indexOf(best);
    // The chosen one, then the rest in rotation order, as failover.
    return [...slots.slice(start), ...slots.slice(0, start)].map((slot) => slot.destination);
  }

  return definePlugin({
    name: 'round-robin',
    setup(ctx) {
      health = ctx.health;
      slots = options.destinations.map((entry) => ({
        destination: ctx.destination(isWeighted(entry) ? entry.destination : entry),
        weight: isWeighted(entry) ? (entry.weight ?? 1) : 1,
        current: 0,
      }));
      copies = (options.copies ?? []).map((ref) => ctx.destination(ref));
    },
    mail: () => deliver({ to: next(), copies, decidedBy: 'round-robin' }),
  });
}

export default roundRobin;
