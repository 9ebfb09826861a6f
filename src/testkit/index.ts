/**
 * The test kit: start a router from a config object with in-process capture servers, send it
 * mail, look at what each server received. The project's own tests use exactly this.
 *
 *   const primary = await startSink({ name: 'primary' });
 *   const router = await startTestRouter({ config: { relay: { destination_primary: primary.label } } });
 *   await sendMail(router.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
 *   assert.equal(primary.messages.length, 1);
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { validateConfig } from '../core/config/load.ts';
import type { Config, ConfigInput } from '../core/config/schema.ts';
import { silentLogger } from '../core/logger.ts';
import { createDriver, startRouter, type Router } from '../core/router.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { explainRoute, type RecipientRoute } from '../plugins/explain.ts';
import type { ConnectionInfo, RouterPlugin } from '../plugins/types.ts';

export { startSink, type CapturedMessage, type Sink, type SinkBehaviour, type SinkOptions } from './sink.ts';
export { freePort, startRawServer, waitForPort, type RawServer, type RawServerMode } from './raw-server.ts';
export { SmtpTestClient, sendMail, sampleMessage, dotStuff, type Reply } from './client.ts';
export type { RecipientRoute } from '../plugins/explain.ts';

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

export interface TestRouter {
  readonly router: Router;
  readonly port: number;
  readonly config: Config;
  /** The spool folder (a fresh temporary folder unless the config named one). */
  readonly queueDir: string;
  close(): Promise<void>;
}

/**
 * Where would this envelope go? Sets the plugins up (from `plugins`, or from the config's
 * `plugins:`/`relay:`) and asks them, as a live transaction would, without sending anything.
 */
export async function explain(
  options: { config?: DeepPartial<ConfigInput>; plugins?: readonly RouterPlugin[]; baseDir?: string },
  envelope: { from: string; to: readonly string[]; connection?: Partial<ConnectionInfo> },
): Promise<RecipientRoute[]> {
  // Plugins given as objects stand in for the config's; an empty list satisfies its schema.
  const config = validateConfig({ ...(options.plugins && { plugins: [] }), ...options.config, queue: { dir: tmpdir() } }, 'test');
  const stack = deliveryStack(config, silentLogger());
  try {
    const driver = await createDriver(config, stack, silentLogger(), options);
    try {
      return await explainRoute(driver, envelope);
    } finally {
      await driver.close();
    }
  } finally {
    stack.pool.close();
  }
}

/** Test-friendly defaults: loopback on a free port, a temporary spool, fast retries, silent logs. */
export async function startTestRouter(
  options: { config?: DeepPartial<ConfigInput>; plugins?: readonly RouterPlugin[]; logger?: Logger; baseDir?: string } = {},
): Promise<TestRouter> {
  const input = options.config ?? {};
  const ownDir = input.queue?.dir === undefined;
  const queueDir = input.queue?.dir ?? (await mkdtemp(join(tmpdir(), 'gosmtp-dup-test-')));
  const config = validateConfig(
    {
      ...(options.plugins && { plugins: [] }),
      ...input,
      smtp: { listen: '127.0.0.1:0', shutdown_timeout_seconds: 5, ...input.smtp },
      relay: { timeout_seconds: 5, ...input.relay },
      queue: { retry_initial_seconds: 0.2, retry_max_seconds: 1, ...input.queue, dir: queueDir },
      log: { level: 'silent', ...input.log },
    },
    'test',
  );
  const router = await startRouter({ config, plugins: options.plugins, baseDir: options.baseDir, logger: options.logger ?? silentLogger() });
  return {
    router,
    port: router.address.port,
    config,
    queueDir,
    close: async () => {
      await router.close();
      if (ownDir) await rm(queueDir, { recursive: true, force: true });
    },
  };
}
