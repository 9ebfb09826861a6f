/**
 * Haraka as a comparison: `queue/smtp_forward` to the same sink, relaying for loopback. Found in
 * $HARAKA_DIR or .bench-tools/haraka (BENCH_HARAKA=1 installs it there with npm); never a
 * dependency of the project.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { freePort, waitForPort } from '../src/testkit/raw-server.ts';

const run = promisify(execFile);

export interface Haraka {
  version: string;
  start(sink: string): Promise<{ port: number; pid: number; stop(): Promise<void> }>;
}

export async function findHaraka(): Promise<Haraka | undefined> {
  const dir = process.env.HARAKA_DIR ?? resolve('.bench-tools/haraka');
  const bin = join(dir, 'node_modules', '.bin', 'haraka');
  if (!existsSync(bin) && process.env.BENCH_HARAKA) {
    await mkdir(dir, { recursive: true });
    await run('npm', ['install', '--no-audit', '--no-fund', '--prefix', dir, 'Haraka'], { maxBuffer: 64 * 1024 * 1024 });
  }
  if (!existsSync(bin)) return undefined;
  const version = (JSON.parse(await readFile(join(dir, 'node_modules', 'Haraka', 'package.json'), 'utf8')) as { version: string }).version;
  return {
    version,
    async start(sink) {
      const home = await mkdtemp(join(tmpdir(), 'haraka-'));
      await run(bin, ['-i', home]);
      const [host, sinkPort] = [sink.slice(0, sink.lastIndexOf(':')), sink.slice(sink.lastIndexOf(':') + 1)];
      const port = await freePort();
      const files: Record<string, string> = {
        plugins: 'relay\nqueue/smtp_forward\n',
        'relay.ini': '[relay]\nacl=true\n',
        relay_acl_allow: '127.0.0.0/8\n',
        'smtp_forward.ini': `host=${host}\nport=${sinkPort}\nenable_outbound=true\n`,
        'smtp.ini': `[main]\nlisten=127.0.0.1:${port}\n`,
        'log.ini': '[main]\nlevel=error\n',
        me: 'haraka.bench\n',
      };
      for (const [name, text] of Object.entries(files)) await writeFile(join(home, 'config', name), text);
      const proc: ChildProcess = spawn(bin, ['-c', home], { stdio: 'ignore' });
      if (!(await waitForPort(port, 30_000))) throw new Error('Haraka did not start');
      return {
        port,
        pid: proc.pid!,
        stop: async () => {
          proc.kill('SIGTERM');
          await rm(home, { recursive: true, force: true });
        },
      };
    },
  };
}
