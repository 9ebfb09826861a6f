/**
 * File-system steps with the durability the spool promises: data is fsync'd before it is renamed
 * into place, and the folder is fsync'd after the rename so the new name survives a power cut.
 */
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Writes `data` to `path` so that after return either the old or the new content is on disk. */
export async function writeFileDurable(path: string, data: string | Buffer, syncDir = true): Promise<void> {
  const tmp = `${path}.${process.pid}.tmp`;
  await unlinkQuiet(tmp); // a leftover from an interrupted write by this pid
  await writeFileSynced(tmp, data);
  await rename(tmp, path);
  if (syncDir) await fsyncDir(dirname(path));
}

/** Writes and fsyncs a new file (no rename: for files that are not visible until renamed later). */
export async function writeFileSynced(path: string, data: string | Buffer): Promise<void> {
  const handle = await open(path, 'wx', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Group commit for folder fsyncs: callers that ask while a sync is running share the next one,
 * which starts after the running one (whose start may predate their renames). Concurrent commits
 * then cost one fsync between them instead of one each, without weakening any of them. The folder
 * stays open between syncs, so a sync is one call, not open + fsync + close.
 */
export class DirSync {
  readonly #dir: string;
  #handle: Promise<FileHandle> | undefined;
  #running: Promise<void> | undefined;
  #next: Promise<void> | undefined;

  constructor(dir: string) {
    this.#dir = dir;
  }

  sync(): Promise<void> {
    if (!this.#running) return this.#start();
    this.#next ??= this.#running.catch(() => undefined).then(() => {
      this.#next = undefined;
      return this.#start();
    });
    return this.#next;
  }

  #start(): Promise<void> {
    const run = this.#fsync().finally(() => {
      if (this.#running === run) this.#running = undefined;
    });
    this.#running = run;
    return run;
  }

  async #fsync(): Promise<void> {
    this.#handle ??= open(this.#dir, 'r');
    const handle = this.#handle;
    try {
      await (await handle).sync();
    } catch (err) {
      // Opened afresh next time (the folder may have been replaced, the descriptor gone bad).
      if (this.#handle === handle) this.#handle = undefined;
      void handle.then((h) => h.close()).catch(() => undefined);
      throw err;
    }
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await (await handle?.catch(() => undefined))?.close().catch(() => undefined);
  }
}

export async function unlinkQuiet(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}
