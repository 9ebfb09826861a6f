/**
 * Reuse of upstream connections, per destination. A connection returns to the pool only after a
 * clean end of transaction (a final reply to DATA) or after a successful RSET; anything else is
 * closed. Idle connections are closed after `idleMs`, well before a server's own idle timeout.
 */
import { poolKeyOf, type SmtpDestination } from '../destination.ts';
import type { HealthRegistry } from '../health.ts';
import { UpstreamConnection, type ConnectOptions } from './connection.ts';
import { DestinationLimits } from './limits.ts';

export interface PoolOptions extends ConnectOptions {
  /** How long an unused connection is kept open. */
  idleMs: number;
  /** At most this many idle connections per destination. */
  maxIdlePerDestination: number;
  /** Destination health, recorded by the transactions that use the pool. */
  health: HealthRegistry;
}

export class UpstreamPool {
  /** Per-destination max_connections and rate. */
  readonly limits = new DestinationLimits();
  readonly #idle = new Map<string, UpstreamConnection[]>();
  readonly #options: PoolOptions;
  #sweeper: NodeJS.Timeout;
  #closed = false;

  constructor(options: PoolOptions) {
    this.#options = options;
    this.#sweeper = setInterval(() => this.#sweep(), Math.max(250, Math.min(options.idleMs, 5000)));
    this.#sweeper.unref();
  }

  get health(): HealthRegistry {
    return this.#options.health;
  }

  /** An idle connection to `destination` if one is usable, else a new one. */
  async acquire(destination: SmtpDestination, fresh = false): Promise<{ conn: UpstreamConnection; reused: boolean }> {
    if (!fresh) {
      const idle = this.#idle.get(poolKeyOf(destination));
      while (idle && idle.length > 0) {
        const conn = idle.pop()!;
        if (conn.usable) return { conn, reused: true };
      }
    }
    return { conn: await UpstreamConnection.open(destination, this.#options), reused: false };
  }

  /** Takes a connection back after its transaction; a dirty one is RSET first, a broken one closed. */
  release(conn: UpstreamConnection): void {
    if (!conn.usable || this.#closed) return conn.quit();
    if (!conn.dirty) return this.#park(conn);
    conn
      .command('RSET', 'RSET', this.#options.timeoutMs)
      .then((reply) => {
        if (reply.code !== 250) return conn.quit();
        conn.dirty = false;
        this.#park(conn);
      })
      .catch(() => conn.destroy());
  }

  #park(conn: UpstreamConnection): void {
    if (this.#closed) return conn.quit(); // an RSET that finished after close()
    const idle = this.#idle.get(poolKeyOf(conn.destination)) ?? [];
    // Idle connections count against a destination's max_connections too: keep at most that many.
    const max = Math.min(this.#options.maxIdlePerDestination, conn.destination.maxConnections ?? Infinity);
    if (idle.length >= max) return conn.quit();
    conn.lastUsed = Date.now();
    idle.push(conn);
    this.#idle.set(poolKeyOf(conn.destination), idle);
  }

  #sweep(): void {
    const cutoff = Date.now() - this.#options.idleMs;
    for (const [label, idle] of this.#idle) {
      const keep = idle.filter((conn) => {
        if (conn.usable && conn.lastUsed > cutoff) return true;
        conn.quit();
        return false;
      });
      if (keep.length > 0) this.#idle.set(label, keep);
      else this.#idle.delete(label);
    }
  }

  /** Closes every idle connection; connections in use close when released. */
  close(): void {
    this.#closed = true;
    clearInterval(this.#sweeper);
    for (const idle of this.#idle.values()) for (const conn of idle) conn.quit();
    this.#idle.clear();
  }
}
