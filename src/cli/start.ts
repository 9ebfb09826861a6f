import { configDir, loadConfig } from '../core/config/load.ts';
import { createLogger } from '../core/logger.ts';
import { startRouter } from '../core/router.ts';

/** Runs the router until SIGTERM or SIGINT, then drains and exits 0. */
export async function startCommand(options: { configFile?: string }): Promise<number> {
  const { config, source } = await loadConfig({ file: options.configFile });
  const log = createLogger(config.log.level);
  let router;
  try {
    router = await startRouter({ config, logger: log, baseDir: configDir(source), source });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') throw new Error(`cannot listen on ${config.smtp.listen}: ${e.message}`);
    throw err;
  }
  await waitForSignal(log);
  await router.close();
  log.flush?.();
  return 0;
}

/** Resolves on the first SIGTERM/SIGINT; a second one exits at once. */
export function waitForSignal(log: { info(obj: object, msg: string): void }): Promise<void> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      log.info({ signal }, 'shutting down: finishing transactions in progress');
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(1));
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
}
