/**
 * Logs (behaviour 9): one JSON line per transaction and per copy attempt; never a body or secret;
 * human-readable on a terminal.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { BIN, startChildRouter } from './helpers/child-router.ts';
import { capturingLogger, eventually, router, sink } from './helpers/fixtures.ts';

describe('logs', () => {
  test('a transaction line and copy attempt lines with the facts an admin needs, and no body', async (t) => {
    const primary = await sink(t);
    let deferOnce = true;
    const backup = await sink(t, {
      name: 'backup',
      behaviour: {
        data: () => {
          if (!deferOnce) return undefined;
          deferOnce = false;
          return { code: 451, enhanced: '4.3.0', text: 'not now' };
        },
      },
    });
    const capture = capturingLogger();
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] }, queue: { retry_initial_seconds: 0.1 } },
      logger: capture.logger,
    });
    const secret = 'BODY-SECRET-' + Math.random().toString(36).slice(2);
    await sendMail(r.port, { from: 'alice@example.com', to: ['bob@example.net', 'carol@example.net'], body: sampleMessage('logged', secret) });
    await backup.waitFor(1);
    await eventually(() => capture.lines.some((l) => l.msg === 'copy delivered'), 5000, 'delivery log line');

    const tx = capture.lines.find((l) => l.msg === 'transaction')!;
    assert.equal(tx.from, 'alice@example.com');
    assert.equal(tx.recipients, 2);
    assert.equal(typeof tx.id, 'string');
    assert.ok(Number(tx.size) > 100);
    assert.match(String(tx.verdict), /^250 2\.0\.0/);
    assert.equal(tx.primary, primary.label);
    assert.equal(typeof tx.latencyMs, 'number');

    const deferred = capture.lines.find((l) => l.msg === 'copy deferred')!;
    assert.equal(deferred.id, tx.id);
    assert.equal(deferred.destination, backup.label);
    assert.equal(deferred.attempt, 1);
    assert.match(String(deferred.verdict), /451 4\.3\.0 not now/);
    assert.ok(!Number.isNaN(Date.parse(String(deferred.nextRetry))));
    const delivered = capture.lines.find((l) => l.msg === 'copy delivered')!;
    assert.equal(delivered.attempt, 2);

    assert.ok(!capture.text().includes(secret), 'no message body in the logs');
    assert.ok(!capture.text().includes('Hello from the test suite'), 'no message body in the logs');
  });

  test("piped logs go out in batches, yet an idle router's last line shows within a moment", async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'gosmtp-dup-logpipe-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const primary = await sink(t);
    const child = await startChildRouter(t, dir, {
      smtp: { listen: '127.0.0.1:0' },
      relay: { destination_primary: primary.label },
      queue: { dir: join(dir, 'q') },
      log: { level: 'info' },
    });
    await sendMail(child.port, { from: 'alice@example.com', to: ['bob@example.net'], body: sampleMessage('one line') });
    // One short line is far below the batch size: only the periodic flush can bring it out.
    const line = await child.waitForLine((l) => l.msg === 'transaction', 3000);
    assert.match(String(line.verdict), /^250 /);
    child.proc.kill('SIGTERM');
    assert.equal(await child.exited, 0);
    assert.ok(child.lines.some((l) => l.msg === 'gosmtp-dup stopped'), 'the last lines are flushed at exit');
  });

  test('on a terminal the logs are human-readable, not JSON', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'gosmtp-dup-tty-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const primary = await sink(t);
    const file = join(dir, 'config.yaml');
    await writeFile(file, stringify({ smtp: { listen: '127.0.0.1:0' }, relay: { destination_primary: primary.label }, queue: { dir: join(dir, 'q') } }));
    // `script` gives the router a pseudo-terminal as stdout.
    const proc = spawn('script', ['-qfec', `${process.execPath} ${BIN} start --config ${file}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    t.after(() => proc.kill('SIGKILL'));
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line: ${output}`)), 15_000);
      proc.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString('utf8');
        if (output.includes('gosmtp-dup listening')) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    const line = output.split('\n').find((l) => l.includes('gosmtp-dup listening'))!;
    assert.ok(!line.trim().startsWith('{'), `pretty, not JSON: ${line}`);
    assert.match(line, /INFO/);
  });
});
