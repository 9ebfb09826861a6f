/**
 * Copies queued by a version of gosmtp-dup that kept one file per message under `queue/`
 * (`<id>.json` record, `<id>.eml` body, `<id>.<n>.state.json` and `<id>.<n>.done` per copy). The
 * spool reads them once at start-up, appends them to its log and then removes the folder, so an
 * upgrade loses no copy a client heard 250 for. An interrupted import runs again: the same
 * message appended twice is one message (the later entry wins).
 */
import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncDir } from './durable-fs.ts';
import type { CopySlot, CopyState, SpoolRecord } from './types.ts';

export interface LegacyMessage {
  readonly record: SpoolRecord;
  readonly copies: CopySlot[];
  /**
   * A body small enough to go into the log: its file, read when it is imported (a large old queue
   * is not loaded into memory at once). Otherwise the body was moved to the bodies folder.
   */
  readonly inlineBody: string | undefined;
}

export async function readLegacyQueue(
  dir: string,
  bodiesDir: string,
  inlineMax: number,
): Promise<{ messages: LegacyMessage[]; remove(): Promise<void> } | undefined> {
  await rm(`${dir}.imported`, { recursive: true, force: true }); // imported, deletion interrupted
  let names: Set<string>;
  try {
    names = new Set(await readdir(dir));
  } catch {
    return undefined;
  }
  const messages: LegacyMessage[] = [];
  for (const name of names) {
    if (!/^[0-9A-Za-z]+\.json$/.test(name)) continue;
    const id = name.slice(0, -'.json'.length);
    let record: SpoolRecord;
    try {
      record = JSON.parse(await readFile(join(dir, name), 'utf8')) as SpoolRecord;
    } catch {
      continue; // torn: never committed
    }
    const copies = await Promise.all(
      record.copies.map(async (_copy, index): Promise<CopySlot> => {
        if (names.has(`${id}.${index}.done`)) return 'done';
        try {
          return JSON.parse(await readFile(join(dir, `${id}.${index}.state.json`), 'utf8')) as CopyState;
        } catch {
          return { attempts: 0, nextAttemptAt: 0 };
        }
      }),
    );
    if (copies.every((slot) => slot === 'done')) continue;
    const legacyBody = join(dir, `${id}.eml`);
    const movedBody = join(bodiesDir, `${id}.eml`);
    const path = names.has(`${id}.eml`) ? legacyBody : movedBody;
    let inlineBody: string | undefined;
    try {
      if ((await stat(path)).size <= inlineMax) inlineBody = path;
      else if (path === legacyBody) await rename(legacyBody, movedBody);
    } catch {
      continue; // no body: an administrator removed it, nothing can be delivered
    }
    messages.push({ record, copies, inlineBody });
  }
  return {
    messages,
    // Renamed away in one step first: a crash halfway through deleting must not leave records
    // without the marks of their delivered copies, to be imported again.
    remove: async () => {
      const gone = `${dir}.imported`;
      await rm(gone, { recursive: true, force: true });
      await rename(dir, gone);
      await fsyncDir(dirname(dir));
      await rm(gone, { recursive: true, force: true });
    },
  };
}
