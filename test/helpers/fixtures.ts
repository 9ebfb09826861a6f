/**
 * Test fixtures: sinks and routers that close themselves when the test ends.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import {
  startRawServer,
  startSink,
  startTestRouter,
  type RawServer,
  type RawServerMode,
  type Sink,
  type SinkOptions,
  type TestRouter,
} from '../../src/testkit/index.ts';

/** A temporary folder, removed after the test (retrying while a child router lets go of it). */
export async function tempDir(t: TestContext, prefix = 'gosmtp-dup-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 }));
  return dir;
}

export async function sink(t: TestContext, options: SinkOptions = {}): Promise<Sink> {
  const s = await startSink(options);
  t.after(() => s.close());
  return s;
}

export async function rawServer(t: TestContext, mode: RawServerMode): Promise<RawServer> {
  const s = await startRawServer(mode);
  t.after(() => s.close());
  return s;
}

export async function router(t: TestContext, options: Parameters<typeof startTestRouter>[0]): Promise<TestRouter> {
  const r = await startTestRouter(options);
  t.after(() => r.close());
  return r;
}

/** A logger whose JSON lines are kept for assertions. */
export function capturingLogger(): { logger: Logger; lines: Array<Record<string, unknown>>; text: () => string } {
  const raw: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      raw.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  const logger = pino({ level: 'debug' }, stream);
  return {
    logger,
    get lines() {
      return raw.map((line) => JSON.parse(line) as Record<string, unknown>);
    },
    text: () => raw.join('\n'),
  };
}

/** Polls `check` until it holds; for conditions no event announces (files on disk). */
/** Files the spool holds for pending copies (log segments, large bodies, bodies arriving): none once all are delivered. */
export async function spoolFiles(queueDir: string): Promise<string[]> {
  const files: string[] = [];
  for (const sub of ['log', 'bodies', 'tmp']) {
    try {
      for (const name of await readdir(join(queueDir, sub))) files.push(`${sub}/${name}`);
    } catch {
      // not created yet
    }
  }
  return files;
}

export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
