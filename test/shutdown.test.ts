/**
 * Graceful shutdown on SIGTERM / SIGINT (behaviour 10), with the router as a child process.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { startChildRouter } from './helpers/child-router.ts';
import { rawServer, sink, tempDir } from './helpers/fixtures.ts';

function connectionRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

describe('shutdown', () => {
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal}: stop accepting, 421 to idle sessions, finish the transaction in flight, exit 0`, async (t) => {
      const dir = await tempDir(t);
      let release!: () => void;
      const gate = new Promise<undefined>((resolve) => (release = () => resolve(undefined)));
      let arrived!: () => void;
      const bodyArrived = new Promise<void>((resolve) => (arrived = resolve));
      const primary = await sink(t, {
        behaviour: {
          data: () => {
            arrived();
            return gate;
          },
        },
      });
      const child = await startChildRouter(t, dir, {
        smtp: { listen: '127.0.0.1:0' },
        relay: { destination_primary: primary.label },
        queue: { dir: join(dir, 'spool') },
      });
      const idle = await SmtpTestClient.connect(child.port);
      t.after(() => idle.destroy());
      await idle.command('EHLO idle');

      const busy = await SmtpTestClient.connect(child.port);
      t.after(() => busy.destroy());
      await busy.command('EHLO busy');
      await busy.command('MAIL FROM:<a@example.com>');
      await busy.command('RCPT TO:<b@example.net>');
      const finalReply = busy.data(sampleMessage('in flight'));
      await bodyArrived;

      child.proc.kill(signal);
      const goodbye = await idle.next();
      assert.equal(goodbye.code, 421);
      await child.waitForLine((l) => l.msg === 'shutting down: finishing transactions in progress');
      assert.ok(await connectionRefused(child.port), 'no new connections');

      release();
      assert.equal((await finalReply).code, 250);
      assert.equal(await child.exited, 0);
      assert.equal(primary.messages.length, 1);
    });
  }

  test('a shutdown that times out says 421 and logs the cut-off transaction; a later 250 is not logged as its verdict', async (t) => {
    const dir = await tempDir(t);
    let release!: () => void;
    const gate = new Promise<undefined>((resolve) => (release = () => resolve(undefined)));
    let arrived!: () => void;
    const bodyArrived = new Promise<void>((resolve) => (arrived = resolve));
    const primary = await sink(t, { behaviour: { data: () => (arrived(), gate) } });
    const child = await startChildRouter(t, dir, {
      smtp: { listen: '127.0.0.1:0', shutdown_timeout_seconds: 0.3 },
      relay: { destination_primary: primary.label },
      queue: { dir: join(dir, 'spool') },
    });
    const busy = await SmtpTestClient.connect(child.port);
    t.after(() => busy.destroy());
    await busy.command('EHLO busy');
    await busy.command('MAIL FROM:<a@example.com>');
    await busy.command('RCPT TO:<b@example.net>');
    const finalReply = busy.data(sampleMessage('cut off'));
    await bodyArrived;
    child.proc.kill('SIGTERM');
    assert.equal((await finalReply).code, 421, 'the client hears 421, not a verdict');
    const cut = await child.waitForLine((l) => l.msg === 'shutdown timed out: transaction cut off with 421; the sender will retry');
    release(); // the primary answers after all, while the router winds down
    await child.exited;
    const verdicts = child.lines.filter((l) => l.id === cut.id && typeof l.msg === 'string' && l.msg.startsWith('transaction'));
    assert.equal(verdicts.length, 1, JSON.stringify(child.lines.slice(-5)));
    assert.equal(verdicts[0]!.clientGone, true);
    assert.equal(verdicts[0]!.level, 40, 'a warning, not the info line of a normal transaction');
  });

  test('copies still pending at shutdown are delivered on the next start', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const placeholder = await rawServer(t, 'silent');
    const backupPort = placeholder.port;
    await placeholder.close();
    const config = {
      smtp: { listen: '127.0.0.1:0' },
      relay: { destination_primary: primary.label, destination_backups: [`127.0.0.1:${backupPort}`] },
      queue: { dir: join(dir, 'spool'), retry_initial_seconds: 0.2 },
    };
    const first = await startChildRouter(t, dir, config);
    assert.equal((await sendMail(first.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage('pending') })).data?.code, 250);
    first.proc.kill('SIGTERM');
    assert.equal(await first.exited, 0);

    const backup = await sink(t, { port: backupPort });
    const second = await startChildRouter(t, dir, config);
    assert.equal(second.lines.find((l) => l.msg === 'gosmtp-dup listening')!.pending, 1);
    const [copy] = await backup.waitFor(1);
    assert.match(copy!.body.toString(), /Subject: pending/);
  });
});
