/**
 * What delivering needs, built once from the configuration: named destinations, their health,
 * the upstream connection pool, and the settings of the copy worker. Used by the router and by
 * `gosmtp-dup queue flush`, which delivers without one.
 */
import type { Logger } from 'pino';
import type { Config } from './config/schema.ts';
import { DestinationRegistry } from './destinations.ts';
import { HealthRegistry } from './health.ts';
import type { WorkerOptions } from './spool/worker.ts';
import { UpstreamPool } from './upstream/pool.ts';
import type { TransactionTimeouts } from './upstream/transaction.ts';

export interface DeliveryStack {
  readonly destinations: DestinationRegistry;
  readonly health: HealthRegistry;
  readonly pool: UpstreamPool;
  readonly timeouts: TransactionTimeouts;
  readonly worker: WorkerOptions;
}

export function timeoutsOf(config: Config): TransactionTimeouts {
  return { timeoutMs: config.relay.timeout_seconds * 1000, finalTimeoutMs: config.relay.data_timeout_seconds * 1000 };
}

export function deliveryStack(config: Config, log: Logger): DeliveryStack {
  const timeouts = timeoutsOf(config);
  const destinations = new DestinationRegistry(config.destinations);
  const health = new HealthRegistry(
    { threshold: config.health.failure_threshold, cooldownMs: config.health.cooldown_seconds * 1000 },
    log.child({ component: 'health' }),
  );
  return {
    destinations,
    health,
    timeouts,
    // Up to 100 idle connections per destination (its max_connections caps them too): while
    // senders are busy, one closed on release is opened again for the next message. The sweeper
    // closes any left unused for 10 s.
    pool: new UpstreamPool({
      timeoutMs: timeouts.timeoutMs,
      heloName: config.smtp.domain,
      idleMs: 10_000,
      maxIdlePerDestination: 100,
      health,
      log: log.child({ component: 'upstream' }),
    }),
    worker: {
      ...timeouts,
      retryInitialMs: config.queue.retry_initial_seconds * 1000,
      retryMaxMs: config.queue.retry_max_seconds * 1000,
      maxAgeMs: config.queue.max_age_hours * 3600_000,
      concurrency: config.queue.concurrency,
      destinationConcurrency: config.queue.destination_concurrency,
      resolve: (copy) => destinations.forCopy(copy),
    },
  };
}
