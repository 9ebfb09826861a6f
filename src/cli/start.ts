import { ConfigError, configDir, loadConfig } from '../core/config/load.ts';
import { createLogger } from '../core/logger.ts';
import { startRouter, type Router } from '../core/router.ts';
import { checkTlsFiles } from './check.ts';
import { recordConfig } from './reload.ts';

/** Runs the router until SIGTERM or SIGINT, then drains and exits 0. SIGHUP reloads the configuration. */
export async function startCommand(options: { configFile?: string }): Promise<number> {
  // Caught from the first moment: a SIGHUP (`systemctl reload`) while plugins are still being set
  // up would otherwise kill the process. It is applied once the router is up.
  let hangupEarly = false;
  const onEarlyHangup = () => void (hangupEarly = true);
  process.on('SIGHUP', onEarlyHangup);
  const { config, source } = await loadConfig({ file: options.configFile });
  // Before anything starts, and with the same words as `check`.
  await checkTlsFiles(config, source);
  const log = createLogger(config.log.level);
  let router: Router;
  try {
    router = await startRouter({ config, logger: log, baseDir: configDir(source), source });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') throw new Error(`cannot listen on ${config.smtp.listen}: ${e.message}`);
    throw err;
  }
  // Reloads re-read the file found now, even if a search would later find another; recorded
  // beside the spool's lock so that `gosmtp-dup reload` checks that very file.
  const file = source === 'environment' ? undefined : source;
  await recordConfig(config.queue.dir, source).catch(async (err: unknown) => {
    await router.close();
    throw err;
  });
  // A plugin's forgotten promise (a notification that failed, say) must not take every session
  // down with it: logged, and the router goes on. Thrown exceptions still end the process.
  const onRejection = (reason: unknown) => log.error({ err: reason instanceof Error ? reason.stack : String(reason) }, 'unhandled promise rejection (a plugin\'s?); going on');
  process.on('unhandledRejection', onRejection);
  // One reload at a time, in order: a slow one must not finish after, and undo, a later one.
  let reloading = Promise.resolve();
  const onHangup = () => void (reloading = reloading.then(() => reload(router, file, log)));
  process.off('SIGHUP', onEarlyHangup);
  process.on('SIGHUP', onHangup);
  if (hangupEarly) onHangup();
  await waitForSignal(log);
  process.off('SIGHUP', onHangup);
  await reloading;
  await router.close();
  process.off('unhandledRejection', onRejection);
  log.flush?.();
  return 0;
}

/** Re-reads the configuration and applies it; an invalid one is logged and the running one stays. */
async function reload(router: Router, configFile: string | undefined, log: ReturnType<typeof createLogger>): Promise<void> {
  try {
    const { config, source } = await loadConfig({ file: configFile });
    const { needsRestart } = await router.reload(config, { baseDir: configDir(source), source });
    log.info({ config: source, needsRestart }, 'configuration reloaded');
    if (needsRestart.length > 0) log.warn({ keys: needsRestart }, 'these settings changed but apply only after a restart');
  } catch (err) {
    const problems = err instanceof ConfigError ? err.problems : [(err as Error).message];
    log.error({ problems }, 'reload failed: keeping the running configuration');
  }
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
