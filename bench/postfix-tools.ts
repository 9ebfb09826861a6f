/**
 * Postfix's smtp-source and smtp-sink, the standard SMTP load tools. Found in $POSTFIX_TOOLS
 * (a folder holding usr/sbin and usr/lib/postfix), in an installed Postfix, or fetched once
 * into .bench-tools/ with `apt-get download postfix` + `dpkg -x` (nothing is installed).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { freePort, waitForPort } from '../src/testkit/raw-server.ts';

const run = promisify(execFile);

export interface PostfixTools {
  dir: string;
  sink(): Promise<{ label: string; stop(): Promise<void> }>;
  /** Sends and resolves with the elapsed milliseconds. */
  source(target: string, options: { messages: number; sessions: number; persistent: boolean }): Promise<number>;
}

async function locate(): Promise<string | undefined> {
  const candidates = [process.env.POSTFIX_TOOLS, resolve('.bench-tools/postfix'), '/'].filter(Boolean) as string[];
  for (const root of candidates) if (existsSync(join(root, 'usr/sbin/smtp-source')) && existsSync(join(root, 'usr/sbin/smtp-sink'))) return root;
  const target = resolve('.bench-tools/postfix');
  try {
    await mkdir('.bench-tools', { recursive: true });
    await run('apt-get', ['download', 'postfix'], { cwd: resolve('.bench-tools') });
    const deb = (await readdir('.bench-tools')).find((f) => f.startsWith('postfix_') && f.endsWith('.deb'));
    if (!deb) return undefined;
    await run('dpkg', ['-x', join('.bench-tools', deb), target]);
    return existsSync(join(target, 'usr/sbin/smtp-source')) ? target : undefined;
  } catch {
    return undefined;
  }
}


export async function findPostfixTools(): Promise<PostfixTools | undefined> {
  if (process.env.BENCH_NODE_TOOLS) return undefined;
  const root = await locate();
  if (!root) return undefined;
  const env = { ...process.env, LD_LIBRARY_PATH: join(root, 'usr/lib/postfix') };
  const bin = (name: string) => join(root, 'usr/sbin', name);
  return {
    dir: root,
    async sink() {
      const port = await freePort();
      const asRoot = process.getuid?.() === 0 ? ['-u', 'nobody'] : [];
      const proc = spawn(bin('smtp-sink'), [...asRoot, `127.0.0.1:${port}`, '1024'], { env, stdio: 'ignore' });
      if (!(await waitForPort(port))) throw new Error(`smtp-sink did not start on ${port}`);
      return {
        label: `127.0.0.1:${port}`,
        stop: async () => {
          proc.kill('SIGTERM');
        },
      };
    },
    async source(target, { messages, sessions, persistent }) {
      const args = [...(persistent ? ['-d'] : []), '-s', String(sessions), '-m', String(messages), '-l', '10240', '-f', 'bench@example.com', '-t', 'rcpt@example.net', target];
      const started = process.hrtime.bigint();
      await run(bin('smtp-source'), args, { env, maxBuffer: 64 * 1024 * 1024 });
      return Number(process.hrtime.bigint() - started) / 1e6;
    },
  };
}
