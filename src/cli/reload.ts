/**
 * `gosmtp-dup reload`: checks the configuration, then asks the router running on its spool to
 * reload it (SIGHUP), like `postfix reload`. An invalid configuration is reported here and the
 * router is not disturbed.
 *
 * The router re-reads the file it was started with, not the one given here: `start` records that
 * file next to the spool's `router.pid`, and reload refuses another one rather than check a file
 * the router will not read.
 */
import { existsSync, realpathSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../core/config/load.ts';
import { spoolOwner } from '../core/spool/lock.ts';
import { verifyConfig } from './check.ts';

const RECORD_FILE = 'router.config';

/** Called by `start` once it holds the spool: which configuration this router (pid) reloads. */
export async function recordConfig(queueDir: string, source: string): Promise<void> {
  await writeFile(join(queueDir, RECORD_FILE), `${JSON.stringify({ pid: process.pid, config: source })}\n`, { mode: 0o600 });
}

/** The configuration router `pid` recorded, if it did (a record left by an earlier router has another pid). */
async function recordedConfig(queueDir: string, pid: number): Promise<string | undefined> {
  try {
    const record = JSON.parse(await readFile(join(queueDir, RECORD_FILE), 'utf8')) as { pid?: unknown; config?: unknown };
    return record.pid === pid && typeof record.config === 'string' ? record.config : undefined;
  } catch {
    return undefined;
  }
}

function sameFile(a: string, b: string): boolean {
  return a === b || (existsSync(a) && existsSync(b) && realpathSync(a) === realpathSync(b));
}

export async function reloadCommand(options: { configFile?: string }): Promise<number> {
  // Also how the router is found: by the spool (queue.dir) this configuration names.
  const { config, source } = await loadConfig({ file: options.configFile });
  const pid = await spoolOwner(config.queue.dir);
  if (pid === undefined) {
    process.stderr.write(`gosmtp-dup: no router is running on ${config.queue.dir}\n`);
    return 1;
  }
  const routerReads = await recordedConfig(config.queue.dir, pid);
  if (routerReads !== undefined && !sameFile(routerReads, source)) {
    process.stderr.write(
      `gosmtp-dup: the router (pid ${pid}) reloads ${routerReads}, not ${source}; ` +
        `use --config ${routerReads}, or restart the router with --config ${source}\n`,
    );
    return 1;
  }
  await verifyConfig(config, source);
  process.kill(pid, 'SIGHUP');
  process.stdout.write(`configuration OK (${source}); asked gosmtp-dup (pid ${pid}) to reload it\n`);
  return 0;
}
