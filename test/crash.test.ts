/**
 * Crash safety with a real child process and `kill -9` (behaviour 6).
 */
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { crashRouterConfig as routerConfig, startChildRouter, unusedPort as freePort } from './helpers/child-router.ts';
import { eventually, sink, spoolFiles, tempDir } from './helpers/fixtures.ts';

describe('crash safety (kill -9)', () => {
  test('every copy pending at the crash is delivered after restart, exactly once', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t, { name: 'primary' });
    const backupPort = await freePort(t);
    const config = routerConfig(dir, primary.label, [`127.0.0.1:${backupPort}`]);

    const first = await startChildRouter(t, dir, config);
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const body = sampleMessage(`crash ${i}`);
      bodies.push(body);
      const result = await sendMail(first.port, { from: 'a@example.com', to: [`r${i}@example.net`], body });
      assert.equal(result.data?.code, 250);
    }
    first.proc.kill('SIGKILL');
    assert.equal(await first.exited, 'SIGKILL');

    const backup = await sink(t, { name: 'backup', port: backupPort });
    const second = await startChildRouter(t, dir, config);
    const copies = await backup.waitFor(5, 15_000);
    assert.deepEqual(copies.map((m) => m.body.toString()).sort(), [...bodies].sort());
    // Settled: the spool empties, and nothing more arrives.
    await eventually(async () => (await spoolFiles(join(dir, 'spool'))).length === 0, 10_000, 'empty spool');
    assert.equal(backup.messages.length, 5);
    second.proc.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });

  test('a copy the backup already accepted is not sent again after a crash', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t, { name: 'primary' });
    const backup = await sink(t, { name: 'backup' });
    const config = routerConfig(dir, primary.label, [backup.label]);
    const first = await startChildRouter(t, dir, config);
    for (let i = 0; i < 3; i++) await sendMail(first.port, { from: 'a@example.com', to: ['r@example.net'], body: sampleMessage(`${i}`) });
    await backup.waitFor(3);
    await eventually(async () => (await spoolFiles(join(dir, 'spool'))).length === 0, 10_000, 'empty spool');
    first.proc.kill('SIGKILL');
    await first.exited;

    const second = await startChildRouter(t, dir, config);
    const listening = second.lines.find((l) => l.msg === 'gosmtp-dup listening')!;
    assert.equal(listening.pending, 0);
    // Prove the worker is running: a new message arrives as the 4th and only new copy.
    await sendMail(second.port, { from: 'a@example.com', to: ['r@example.net'], body: sampleMessage('after') });
    await backup.waitFor(4);
    await eventually(async () => (await spoolFiles(join(dir, 'spool'))).length === 0, 10_000, 'empty spool');
    assert.equal(backup.messages.length, 4);
  });

  test('a message cut off by a crash mid-DATA leaves no copy behind (the client never heard 250)', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t, { name: 'primary' });
    const backup = await sink(t, { name: 'backup' });
    const config = routerConfig(dir, primary.label, [backup.label]);
    const first = await startChildRouter(t, dir, config);
    const client = await SmtpTestClient.connect(first.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    await client.command('RCPT TO:<r@example.net>');
    assert.equal((await client.command('DATA')).code, 354);
    client.write('Subject: half\r\n\r\n' + 'x'.repeat(200_000));
    await eventually(async () => (await readdir(join(dir, 'spool', 'tmp'))).length > 0, 10_000, 'body being spooled');
    first.proc.kill('SIGKILL');
    await first.exited;

    const second = await startChildRouter(t, dir, config);
    assert.equal(second.lines.find((l) => l.msg === 'gosmtp-dup listening')!.pending, 0);
    assert.deepEqual(await readdir(join(dir, 'spool', 'tmp')), []);
    await sendMail(second.port, { from: 'a@example.com', to: ['r@example.net'], body: sampleMessage('whole') });
    const [copy] = await backup.waitFor(1);
    assert.match(copy!.body.toString(), /Subject: whole/);
    assert.equal(primary.messages.length, 1, 'the primary never accepted the cut-off message');
  });
});
