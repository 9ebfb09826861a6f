/**
 * The listener's certificate and key: read at start (a missing or unreadable file is a
 * configuration error naming the key), and read again when either file changes or on reload.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../config/load.ts';

export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
}

export async function readTlsFiles(files: { cert: string; key: string }): Promise<TlsMaterial> {
  const problems: string[] = [];
  const read = (key: 'cert' | 'key') =>
    readFile(files[key]).catch((err: NodeJS.ErrnoException) => {
      problems.push(`smtp.tls.${key}: cannot read ${files[key]}: ${err.code ?? err.message}`);
      return Buffer.alloc(0);
    });
  const material = { cert: await read('cert'), key: await read('key') };
  if (problems.length) throw new ConfigError(problems, 'smtp.tls');
  try {
    createSecureContext(material); // a key that does not match the certificate fails here, not at the first client
  } catch (err) {
    throw new ConfigError([`smtp.tls: the certificate and key do not work together: ${(err as Error).message}`], 'smtp.tls');
  }
  return material;
}

function fingerprint(material: TlsMaterial): string {
  return material.cert.toString('base64') + material.key.toString('base64');
}

/**
 * Calls `onChange` with fresh material when the files change from `current` (debounced);
 * returns a stop function. The folders are watched, not the files: renewals replace files by
 * rename or swap a symlink (certbot), which a watch on the old file would never see.
 */
export function watchTlsFiles(
  files: { cert: string; key: string },
  current: TlsMaterial,
  onChange: (material: TlsMaterial) => void,
  onError: (err: Error) => void,
): () => void {
  let timer: NodeJS.Timeout | undefined;
  // What is in use now, known before the first event (a read of its own here could finish after
  // a renewal and take the new files for the old ones).
  let last = fingerprint(current);
  const reload = () => {
    clearTimeout(timer);
    // Certificate renewals write two files; wait for both, and act only if the content changed.
    timer = setTimeout(() => {
      readTlsFiles(files).then((material) => {
        const seen = fingerprint(material);
        if (seen === last) return;
        last = seen;
        onChange(material);
      }, onError);
    }, 200);
  };
  const folders = [...new Set([dirname(files.cert), dirname(files.key)])];
  const watchers: FSWatcher[] = folders.map((folder) => watch(folder, reload));
  for (const w of watchers) w.on('error', onError);
  return () => {
    clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}
