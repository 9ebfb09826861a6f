/**
 * The router as a real child process (`bin/gosmtp-dup.mjs start`), for crash, signal and
 * memory tests. Its JSON log lines are parsed as they arrive.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { stringify } from 'yaml';
import { rawServer } from './fixtures.ts';

export const BIN = new URL('../../bin/gosmtp-dup.mjs', import.meta.url).pathname;

export interface ChildRouter {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly lines: Array<Record<string, unknown>>;
  /** Resolves with the first log line matching `predicate`. */
  waitForLine(predicate: (line: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>;
  /** Resolves with the exit code (or signal name). */
  exited: Promise<number | string>;
}

export async function startChildRouter(t: TestContext, dir: string, config: Record<string, unknown>, extraEnv: NodeJS.ProcessEnv = {}): Promise<ChildRouter> {
  const file = join(dir, `config-${Date.now()}.yaml`);
  await writeFile(file, stringify(config));
  const proc = spawn(process.execPath, [BIN, 'start', '--config', file], { env: { ...process.env, ...extraEnv }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  });
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  let stderr = '';
  let buffer = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let nl: number;
    while ((nl = buffer.indexOf('\n')) !== -1) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      try {
        lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        lines.push({ text: line });
      }
      for (const wake of waiters.splice(0)) wake();
    }
  });
  proc.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  const exited = once(proc, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  const waitForLine = (predicate: (line: Record<string, unknown>) => boolean, timeoutMs = 15_000) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching log line within ${timeoutMs} ms; stderr: ${stderr}; lines: ${JSON.stringify(lines).slice(-2000)}`)), timeoutMs);
      const check = () => {
        const found = lines.find(predicate);
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else if (proc.exitCode !== null) {
          clearTimeout(timer);
          reject(new Error(`router exited with ${proc.exitCode}; stderr: ${stderr}`));
        } else waiters.push(check);
      };
      check();
      proc.once('exit', () => setImmediate(check));
    });
  const listening = await waitForLine((line) => line.msg === 'gosmtp-dup listening');
  const port = Number(String(listening.listen).split(':').pop());
  return { proc, port, lines, waitForLine, exited };
}

/** A router relaying to `primary` with spooled copies to `backups`, retrying fast: for crash tests. */
export function crashRouterConfig(dir: string, primary: string, backups: string[]) {
  return {
    smtp: { listen: '127.0.0.1:0' },
    relay: { destination_primary: primary, destination_backups: backups, timeout_seconds: 2 },
    queue: { dir: join(dir, 'spool'), retry_initial_seconds: 0.2, retry_max_seconds: 0.5 },
    log: { level: 'info' },
  };
}

/** A loopback port with nothing listening on it (yet): a backup that is down until started there. */
export async function unusedPort(t: TestContext): Promise<number> {
  const placeholder = await rawServer(t, 'silent');
  await placeholder.close();
  return placeholder.port;
}
