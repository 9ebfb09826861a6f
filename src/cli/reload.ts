/**
 * `gosmtp-dup reload`: checks the configuration, then asks the router running on its spool to
 * reload it (SIGHUP), like `postfix reload`. An invalid configuration is reported here and the
 * router is not disturbed.
 */
import { configDir, loadConfig } from '../core/config/load.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { silentLogger } from '../core/logger.ts';
import { createDriver } from '../core/router.ts';
import { spoolOwner } from '../core/spool/lock.ts';

export async function reloadCommand(options: { configFile?: string }): Promise<number> {
  const { config, source } = await loadConfig({ file: options.configFile });
  const stack = deliveryStack(config, silentLogger());
  try {
    await (await createDriver(config, stack, silentLogger(), { baseDir: configDir(source), source })).close();
  } finally {
    stack.pool.close();
  }
  const pid = await spoolOwner(config.queue.dir);
  if (pid === undefined) {
    process.stderr.write(`gosmtp-dup: no router is running on ${config.queue.dir}\n`);
    return 1;
  }
  process.kill(pid, 'SIGHUP');
  process.stdout.write(`configuration OK; asked gosmtp-dup (pid ${pid}) to reload it\n`);
  return 0;
}
