/**
 * One router per spool folder: two routers delivering the same copies would send them twice.
 * The lock is a pid file; a file left by a process that is gone is taken over.
 */
import { readFile, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface SpoolLock {
  release(): Promise<void>;
}

const LOCK_FILE = 'router.pid';

/** The pid of a live router using `dir`, if any. */
export async function spoolOwner(dir: string): Promise<number | undefined> {
  let pid: number;
  try {
    pid = Number((await readFile(join(dir, LOCK_FILE), 'utf8')).trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return undefined;
  try {
    process.kill(pid, 0);
    return pid;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' ? pid : undefined;
  }
}

export async function acquireSpoolLock(dir: string): Promise<SpoolLock> {
  const path = join(dir, LOCK_FILE);
  for (let attempt = 0; ; attempt++) {
    try {
      // Exclusive create: of two processes starting at once, exactly one gets the lock.
      await writeFile(path, `${process.pid}\n`, { mode: 0o600, flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) {
        const owner = await spoolOwner(dir);
        throw new Error(`queue.dir ${dir} is in use by another gosmtp-dup${owner ? ` (pid ${owner})` : ''}`);
      }
      const owner = await spoolOwner(dir);
      if (owner !== undefined) throw new Error(`queue.dir ${dir} is in use by another gosmtp-dup (pid ${owner})`);
      await unlink(path).catch(() => undefined); // left by a process that is gone
    }
  }
  return {
    release: async () => {
      try {
        if ((await readFile(path, 'utf8')).trim() === String(process.pid)) await unlink(path);
      } catch {
        // already gone
      }
    },
  };
}
