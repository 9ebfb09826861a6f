/**
 * The listener's certificate and key: read at start (a missing or unreadable file is a
 * configuration error naming the key), and read again when either file changes or on reload.
 */
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
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

/** Calls `onChange` with fresh material when either file changes (debounced); returns a stop function. */
export function watchTlsFiles(files: { cert: string; key: string }, onChange: (material: TlsMaterial) => void, onError: (err: Error) => void): () => void {
  let timer: NodeJS.Timeout | undefined;
  const reload = () => {
    clearTimeout(timer);
    // Certificate renewals write two files; wait for both.
    timer = setTimeout(() => readTlsFiles(files).then(onChange, onError), 200);
  };
  const watchers: FSWatcher[] = [files.cert, files.key].map((file) => watch(file, reload));
  for (const w of watchers) w.on('error', onError);
  return () => {
    clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}
