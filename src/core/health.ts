/**
 * Destination health, shared by every plugin and by the copy worker: a circuit breaker per
 * destination. `threshold` consecutive failures (refused or timed-out connections, bad greetings,
 * connections lost mid-dialogue) open the circuit for `cooldownMs`; then one probe is let through
 * (half-open): its success closes the circuit, its failure opens it again.
 */
import type { Logger } from 'pino';
import type { Destination } from './destination.ts';

export type CircuitState = 'closed' | 'open' | 'half-open';

interface Circuit {
  failures: number;
  openedAt?: number;
  probing: boolean;
  lastError?: string;
}

export interface HealthOptions {
  threshold: number;
  cooldownMs: number;
}

export class HealthRegistry {
  readonly #circuits = new Map<string, Circuit>();
  readonly #options: HealthOptions;
  readonly #log: Logger;

  constructor(options: HealthOptions, log: Logger) {
    this.#options = options;
    this.#log = log;
  }

  #circuit(destination: Destination): Circuit {
    let circuit = this.#circuits.get(destination.label);
    if (!circuit) this.#circuits.set(destination.label, (circuit = { failures: 0, probing: false }));
    return circuit;
  }

  state(destination: Destination): CircuitState {
    const circuit = this.#circuits.get(destination.label);
    if (!circuit || circuit.openedAt === undefined) return 'closed';
    return Date.now() - circuit.openedAt >= this.#options.cooldownMs ? 'half-open' : 'open';
  }

  /** When an open circuit lets its probe through (now, if it is not open). */
  probeAt(destination: Destination): number {
    const openedAt = this.#circuits.get(destination.label)?.openedAt;
    return openedAt === undefined ? Date.now() : Math.max(Date.now(), openedAt + this.#options.cooldownMs);
  }

  /** Whether a new attempt may go to `destination` now. Claims the probe of a half-open circuit. */
  tryAcquire(destination: Destination): boolean {
    const state = this.state(destination);
    if (state === 'closed') return true;
    if (state === 'open') return false;
    const circuit = this.#circuit(destination);
    if (circuit.probing) return false;
    circuit.probing = true;
    return true;
  }

  /** Whether `destination` would take an attempt now, without claiming anything (for ordering). */
  available(destination: Destination): boolean {
    const state = this.state(destination);
    return state === 'closed' || (state === 'half-open' && !this.#circuit(destination).probing);
  }

  success(destination: Destination): void {
    const circuit = this.#circuits.get(destination.label);
    if (!circuit) return;
    if (circuit.openedAt !== undefined) this.#log.info({ destination: destination.label }, 'circuit closed: destination is back');
    this.#circuits.delete(destination.label);
  }

  failure(destination: Destination, error: string): void {
    const circuit = this.#circuit(destination);
    circuit.failures++;
    circuit.lastError = error;
    const wasOpen = circuit.openedAt !== undefined;
    circuit.probing = false;
    if (wasOpen || circuit.failures >= this.#options.threshold) {
      circuit.openedAt = Date.now();
      this.#log.warn(
        { destination: destination.label, failures: circuit.failures, cooldownSeconds: this.#options.cooldownMs / 1000, error },
        wasOpen ? 'circuit re-opened: probe failed' : 'circuit opened: destination failing',
      );
    }
  }

  /** A snapshot for logs, `route` explanations and metrics. */
  snapshot(): Array<{ destination: string; state: CircuitState; failures: number; lastError?: string }> {
    return [...this.#circuits.entries()].map(([label, c]) => ({
      destination: label,
      state: this.state({ label } as Destination),
      failures: c.failures,
      lastError: c.lastError,
    }));
  }
}
