/**
 * The router: configuration in, a listening SMTP relay out. Wires the listener, the plugin
 * driver, the upstream pool, the spool and its worker, and takes them down in the right order.
 */
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { duplicate } from '../../plugins/duplicate/index.ts';
import { PluginDriver } from '../plugins/driver.ts';
import type { RouterPlugin } from '../plugins/types.ts';
import type { Config } from './config/schema.ts';
import { parseDestination, type Destination } from './destination.ts';
import { InboundListener } from './inbound/listener.ts';
import { createLogger } from './logger.ts';
import { FsSpool } from './spool/fs-spool.ts';
import { acquireSpoolLock, type SpoolLock } from './spool/lock.ts';
import { CopyWorker } from './spool/worker.ts';
import { UpstreamPool } from './upstream/pool.ts';

export interface Router {
  /** Where the router listens (the real port when the config said 0). */
  readonly address: AddressInfo;
  readonly spool: FsSpool;
  /** Stops accepting, finishes in-flight transactions, stops the worker. Idempotent. */
  close(): Promise<void>;
}

export interface StartOptions {
  config: Config;
  /** Replaces the plugins the config describes (the test kit and embedders use this). */
  plugins?: readonly RouterPlugin[];
  logger?: Logger;
}

/** A `host:port` the schema has already validated. */
export function destinationOf(text: string, options: { listen?: boolean } = {}): Destination {
  const parsed = parseDestination(text, options);
  if (typeof parsed === 'string') throw new Error(`invalid destination "${text}": ${parsed}`);
  return parsed;
}

export function pluginsFromConfig(config: Config): RouterPlugin[] {
  return [duplicate({ primary: config.relay.destination_primary, backups: config.relay.destination_backups })];
}

export async function startRouter(options: StartOptions): Promise<Router> {
  const { config } = options;
  const log = options.logger ?? createLogger(config.log.level);
  const timeoutMs = config.relay.timeout_seconds * 1000;
  const timeouts = { timeoutMs, finalTimeoutMs: config.relay.data_timeout_seconds * 1000 };

  await mkdir(config.queue.dir, { recursive: true, mode: 0o700 });
  const lock: SpoolLock = await acquireSpoolLock(config.queue.dir);
  const cleanups: Array<() => unknown> = [() => lock.release()];
  const undo = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    const spool = new FsSpool(config.queue.dir, log.child({ component: 'spool' }));
    await spool.open({ owner: true });
    cleanups.push(() => spool.close());

    const pool = new UpstreamPool({ timeoutMs, heloName: config.smtp.domain, idleMs: 10_000, maxIdlePerDestination: 16 });
    cleanups.push(() => pool.close());

    const driver = new PluginDriver(options.plugins ?? pluginsFromConfig(config), { hookTimeoutMs: timeoutMs, log: log.child({ component: 'plugins' }) });
    await driver.setup();
    cleanups.push(() => driver.close());

    const worker = new CopyWorker(
      spool,
      pool,
      {
        ...timeouts,
        retryInitialMs: config.queue.retry_initial_seconds * 1000,
        retryMaxMs: config.queue.retry_max_seconds * 1000,
        maxAgeMs: config.queue.max_age_hours * 3600_000,
        concurrency: config.queue.concurrency,
        heloName: config.smtp.domain,
      },
      log.child({ component: 'copies' }),
    );
    cleanups.push(() => worker.stop());

    const listener = new InboundListener(
      {
        driver,
        pool,
        spool,
        timeouts,
        maxMessageBytes: config.smtp.max_message_bytes,
        bareLineEndings: config.smtp.bare_line_endings,
        log: log.child({ component: 'smtp' }),
      },
      {
        listen: destinationOf(config.smtp.listen, { listen: true }),
        domain: config.smtp.domain,
        maxMessageBytes: config.smtp.max_message_bytes,
        shutdownTimeoutMs: config.smtp.shutdown_timeout_seconds * 1000,
      },
    );
    const address = await listener.listen();
    cleanups.push(() => listener.drain());
    worker.start();
    log.info({ listen: `${address.address}:${address.port}`, queue: config.queue.dir, pending: spool.pending().length }, 'gosmtp-dup listening');

    let closing: Promise<void> | undefined;
    return {
      address,
      spool,
      close: () => (closing ??= undo().then(() => log.info({ maxRssBytes: process.resourceUsage().maxRSS * 1024 }, 'gosmtp-dup stopped'))),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}
