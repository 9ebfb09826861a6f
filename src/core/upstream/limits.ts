/**
 * Per-destination limits, so a provider's quota (say 30 messages a minute, 2 connections) is never
 * exceeded: at most `max_connections` transactions at once, and `rate` new transactions per
 * second/minute/hour (a token bucket). Copies wait for their turn; a synchronous delivery either
 * waits too or is refused at once with 451 4.7.0 (`on_limit`), so the sender retries.
 */
import { poolKeyOf, type SmtpDestination } from '../destination.ts';

export interface Permit {
  release(): void;
}

interface Slot {
  active: number;
  waiters: Array<() => void>;
  tokens: number;
  refilledAt: number;
}

const PER: Record<string, number> = { second: 1000, minute: 60_000, hour: 3_600_000 };

/** `"30/minute"` → 30 transactions per 60 000 ms. */
export function parseRate(text: string): { count: number; perMs: number } | string {
  const match = /^\s*(\d+(?:\.\d+)?)\s*\/\s*(second|minute|hour)\s*$/.exec(text);
  if (!match || Number(match[1]) <= 0) return 'expected "N/second", "N/minute" or "N/hour"';
  return { count: Number(match[1]), perMs: PER[match[2]!]! };
}

export class DestinationLimits {
  readonly #slots = new Map<string, Slot>();

  #slot(destination: SmtpDestination): Slot {
    let slot = this.#slots.get(poolKeyOf(destination));
    if (!slot) {
      const rate = destination.rate;
      this.#slots.set(poolKeyOf(destination), (slot = { active: 0, waiters: [], tokens: rate ? rate.count : Infinity, refilledAt: Date.now() }));
    }
    return slot;
  }

  /** Ms until a token is available (0: now), refilling first. */
  #tokenWait(destination: SmtpDestination, slot: Slot): number {
    const rate = destination.rate;
    if (!rate) return 0;
    const now = Date.now();
    slot.tokens = Math.min(rate.count, slot.tokens + ((now - slot.refilledAt) * rate.count) / rate.perMs);
    slot.refilledAt = now;
    return slot.tokens >= 1 ? 0 : Math.ceil(((1 - slot.tokens) * rate.perMs) / rate.count);
  }

  #free(destination: SmtpDestination, slot: Slot): boolean {
    return destination.maxConnections === undefined || slot.active < destination.maxConnections;
  }

  /**
   * A permit for one transaction, or `undefined` when `wait` is false and a limit is reached now.
   * With `wait`, resolves when both a connection slot and a rate token are available.
   */
  async acquire(destination: SmtpDestination, wait: boolean): Promise<Permit | undefined> {
    if (destination.maxConnections === undefined && !destination.rate) return { release: () => undefined };
    const slot = this.#slot(destination);
    for (;;) {
      const tokenWait = this.#tokenWait(destination, slot);
      if (this.#free(destination, slot) && tokenWait === 0) break;
      if (!wait) return undefined;
      if (!this.#free(destination, slot)) await new Promise<void>((resolve) => slot.waiters.push(resolve));
      else await new Promise((resolve) => setTimeout(resolve, tokenWait));
    }
    slot.active++;
    if (destination.rate) slot.tokens -= 1;
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        slot.active--;
        slot.waiters.shift()?.();
      },
    };
  }
}
