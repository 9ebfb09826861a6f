/**
 * The router: configuration in, a listening SMTP relay out. Wires the listener, the plugin
 * driver, the upstream pool, the spool and its worker, and takes them down in the right order.
 */
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { PluginDriver } from '../plugins/driver.ts';
import type { TransactionDeps } from './inbound/transaction.ts';
import { loadPlugins } from '../plugins/loader.ts';
import type { RouterPlugin } from '../plugins/types.ts';
import { ConfigError } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { deliveryStack, timeoutsOf, type DeliveryStack } from './delivery-stack.ts';
import { DestinationRegistry } from './destinations.ts';
import { parseDestination, type SmtpDestination } from './destination.ts';
import { Authenticator } from './auth/authenticator.ts';
import { AccessPolicy } from './inbound/access.ts';
import { readTlsFiles, watchTlsFiles } from './inbound/tls-files.ts';
import { InboundListener } from './inbound/listener.ts';
import { startOpsListener, type OpsListener } from './observability/http.ts';
import { fanOut } from './observability/events.ts';
import { Metrics } from './observability/metrics.ts';
import { Journal } from './report/journal.ts';
import { createLogger } from './logger.ts';
import { LogSpool } from './spool/log-spool.ts';
import { acquireSpoolLock } from './spool/lock.ts';
import { CopyWorker } from './spool/worker.ts';

export interface Router {
  /** Where the router listens (the real port when the config said 0). */
  readonly address: AddressInfo;
  /** The implicit-TLS listener's address, when `smtp.implicit_tls_listen` is set. */
  readonly tlsAddress?: AddressInfo;
  /** The LMTP listener's address, when `smtp.lmtp_listen` is set. */
  readonly lmtpAddress?: AddressInfo;
  /** Where /metrics, /healthz and /readyz are served, when `metrics.listen` is set. */
  readonly opsAddress?: AddressInfo;
  readonly spool: LogSpool;
  /**
   * Applies a new configuration's routing (plugins, destinations, relay, timeouts, bare line
   * endings) and log level to new transactions; open ones finish on the old. Throws (a
   * ConfigError) without changing anything if the new plugins do not load. Settings that need a
   * restart (listen addresses, queue.dir, ...) are reported in the returned list.
   */
  reload(config: Config, options?: { baseDir?: string; source?: string }): Promise<{ needsRestart: string[] }>;
  /** Stops accepting, finishes in-flight transactions, stops the worker. Idempotent. */
  close(): Promise<void>;
}

/** Keys a reload cannot apply to a running router. */
const RESTART_KEYS = ['smtp.listen', 'smtp.tls', 'smtp.implicit_tls_listen', 'smtp.lmtp_listen', 'smtp.require_tls', 'smtp.allowed_networks', 'smtp.allowed_recipient_domains', 'auth', 'smtp.max_connections', 'smtp.max_connections_per_client', 'smtp.max_recipients', 'smtp.idle_timeout_seconds', 'smtp.max_errors', 'smtp.greeting_delay_ms', 'smtp.domain', 'smtp.max_message_bytes', 'queue.dir', 'queue.concurrency', 'queue.destination_concurrency', 'metrics.listen', 'health.failure_threshold', 'health.cooldown_seconds'] as const;

function valueAt(config: Config, key: string): unknown {
  return key.split('.').reduce<unknown>((node, part) => (node as Record<string, unknown> | undefined)?.[part], config);
}

export interface StartOptions {
  config: Config;
  /** Replaces the plugins the config describes (the test kit and embedders use this). */
  plugins?: readonly RouterPlugin[];
  /** Where plugin paths in the config are relative to (the config file's folder). */
  baseDir?: string;
  /** The config file, named in configuration errors. */
  source?: string;
  logger?: Logger;
}

/** A listen address the schema has already validated. */
export function listenAddress(text: string): SmtpDestination {
  const parsed = parseDestination(text, { listen: true });
  if (typeof parsed === 'string' || parsed.kind !== 'smtp') throw new Error(`invalid listen address "${text}"`);
  return parsed;
}

/** The plugin driver for a configuration, set up: what the router and `gosmtp-dup route` use. */
export async function createDriver(
  config: Config,
  stack: ReturnType<typeof deliveryStack>,
  log: Logger,
  options: { plugins?: readonly RouterPlugin[]; baseDir?: string; source?: string } = {},
): Promise<PluginDriver> {
  try {
    const plugins = options.plugins ?? (await loadPlugins(config, options.baseDir ?? process.cwd()));
    const driver = new PluginDriver(plugins, {
      hookTimeoutMs: stack.timeouts.timeoutMs,
      log: log.child({ component: 'plugins' }),
      destinations: stack.destinations,
      health: stack.health,
    });
    await driver.setup();
    return driver;
  } catch (err) {
    // Plugin problems are configuration problems: name the file they came from.
    if (err instanceof ConfigError && options.source) throw new ConfigError(err.problems, options.source);
    throw err;
  }
}

export async function startRouter(options: StartOptions): Promise<Router> {
  const { config } = options;
  const log = options.logger ?? createLogger(config.log.level);
  const stack = deliveryStack(config, log);

  await mkdir(config.queue.dir, { recursive: true, mode: 0o700 });
  const lock = await acquireSpoolLock(config.queue.dir);
  const cleanups: Array<() => unknown> = [() => lock.release(), () => stack.pool.close()];
  const undo = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  let closing: Promise<void> | undefined;
  try {
    const spool = new LogSpool(config.queue.dir, log.child({ component: 'spool' }));
    await spool.open({ owner: true });
    cleanups.push(() => spool.close());

    let driver = await createDriver(config, stack, log, options);
    cleanups.push(() => driver.close());

    // Counted only when something can read them: without `metrics.listen` there is no /metrics,
    // and no reason for per-message counting or the event-loop monitor's wake-ups 100 times a second.
    const metrics = config.metrics.listen ? new Metrics() : undefined;
    const journal = new Journal(config.queue.dir);
    cleanups.push(() => journal.close());
    const events = metrics ? fanOut(metrics, journal) : journal;
    // Copies resolve their destinations through the current configuration, reloads included.
    let registry = stack.destinations;
    const worker = new CopyWorker(spool, stack.pool, { ...stack.worker, resolve: (copy) => registry.forCopy(copy) }, log.child({ component: 'copies' }), events);
    cleanups.push(() => worker.stop());

    const tls = config.smtp.tls ? await readTlsFiles(config.smtp.tls) : undefined;
    const depsFor = (cfg: Config, drv: PluginDriver, timeouts: DeliveryStack['timeouts']): TransactionDeps => ({
      driver: drv,
      pool: stack.pool,
      spool,
      timeouts,
      maxMessageBytes: cfg.smtp.max_message_bytes,
      bareLineEndings: cfg.smtp.bare_line_endings,
      log: log.child({ component: 'smtp' }),
      events,
    });
    const listener = new InboundListener(
      depsFor(config, driver, stack.timeouts),
      {
        listen: listenAddress(config.smtp.listen),
        domain: config.smtp.domain,
        maxMessageBytes: config.smtp.max_message_bytes,
        shutdownTimeoutMs: config.smtp.shutdown_timeout_seconds * 1000,
        greetingDelayMs: config.smtp.greeting_delay_ms,
        access: new AccessPolicy({ allowedNetworks: config.smtp.allowed_networks, allowedRecipientDomains: config.smtp.allowed_recipient_domains }),
        maxConnections: config.smtp.max_connections,
        maxConnectionsPerClient: config.smtp.max_connections_per_client,
        maxRecipients: config.smtp.max_recipients,
        idleTimeoutMs: config.smtp.idle_timeout_seconds * 1000,
        maxErrors: config.smtp.max_errors,
        tls,
        implicitTlsListen: config.smtp.implicit_tls_listen === undefined ? undefined : listenAddress(config.smtp.implicit_tls_listen),
        lmtpListen: config.smtp.lmtp_listen === undefined ? undefined : listenAddress(config.smtp.lmtp_listen),
        requireTls: config.smtp.require_tls,
        authenticator: new Authenticator({ users: config.auth.users, maxFailures: config.auth.max_failures, windowMs: config.auth.failure_window_seconds * 1000 }),
        allowPlaintextAuthOnLoopback: config.auth.allow_plaintext_on_loopback,
      },
    );
    const { smtp: address, tls: tlsAddress, lmtp: lmtpAddress } = await listener.listen();
    cleanups.push(() => listener.drain());
    if (config.smtp.tls && tls) {
      const files = config.smtp.tls;
      const stopWatching = watchTlsFiles(
        files,
        tls,
        (material) => {
          listener.updateTls(material);
          log.info({ cert: files.cert }, 'TLS certificate reloaded');
        },
        (err) => log.error({ err: err.message }, 'TLS certificate reload failed: keeping the current one'),
      );
      cleanups.push(stopWatching);
    }
    worker.start();
    let ops: OpsListener | undefined;
    if (config.metrics.listen && metrics) {
      metrics.attach({
        pendingCopies: () => spool.pending().map((job) => ({ destination: job.record.copies[job.index]!.destination, createdAt: job.record.createdAt })),
        deadLetters: () => spool.deadLetters(),
        circuits: () => stack.health.snapshot(),
        openConnections: () => listener.connectionCount(),
      });
      ops = await startOpsListener(listenAddress(config.metrics.listen), metrics, {
        checks: async () => ({ listening: !closing, spoolWritable: await spool.writable(), configLoaded: true }),
      });
      // Closed last, so /readyz says "not ready" while the SMTP side drains.
      cleanups.splice(1, 0, () => ops?.close());
    }
    log.info(
      {
        listen: `${address.address}:${address.port}`,
        config: options.source,
        queue: config.queue.dir,
        pending: spool.pending().length,
        plugins: driver.plugins.map((p) => p.name),
      },
      'gosmtp-dup listening',
    );
    log.flush?.(); // whoever waits for this line (systemd, a script) sees it now, not with the next batch

    return {
      address,
      tlsAddress,
      lmtpAddress,
      opsAddress: ops?.address,
      async reload(next, reloadOptions = {}) {
        // Everything that can fail is done before anything changes.
        const material = next.smtp.tls ? await readTlsFiles(next.smtp.tls) : undefined;
        // Same health and pool (their state stays valid); new names, plugins and timeouts.
        const timeouts = timeoutsOf(next);
        const nextRegistry = new DestinationRegistry(next.destinations);
        const reloaded = await createDriver(next, { ...stack, destinations: nextRegistry, timeouts }, log, reloadOptions);
        const previous = driver;
        driver = reloaded;
        registry = nextRegistry;
        // Against the configuration the router started with: those settings never change while it runs.
        const needsRestart = RESTART_KEYS.filter((key) => JSON.stringify(valueAt(config, key)) !== JSON.stringify(valueAt(next, key)));
        log.level = next.log.level;
        if (material) listener.updateTls(material);
        // Open transactions finish on the previous plugins, which are closed once they are done.
        void listener.swap(depsFor(next, reloaded, timeouts)).then(() => previous.close());
        return { needsRestart };
      },
      spool,
      close: () => (closing ??= undo().then(() => log.info({ maxRssBytes: process.resourceUsage().maxRSS * 1024 }, 'gosmtp-dup stopped'))),
    };
  } catch (err) {
    await undo();
    throw err;
  }
}
