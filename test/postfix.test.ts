/**
 * A real Postfix in front (issue: operations and Postfix integration): a private Postfix
 * instance routes example.com through gosmtp-dup with transport_maps, exactly as docs/postfix.md
 * says, and we check what reaches the primary and the backups, and what Postfix does with our
 * 4xx and 5xx replies.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { definePlugin, deliver } from '../src/index.ts';
import { sampleMessage, SmtpTestClient, type Sink } from '../src/testkit/index.ts';
import { eventually, rawServer, router, sink, tempDir } from './helpers/fixtures.ts';
import { postfixAvailable, startPostfix, type PostfixInstance } from './helpers/postfix.ts';

const available = await postfixAvailable();

/** Sends one message into Postfix over SMTP, as any mail client would. */
async function submit(postfix: PostfixInstance, message: { from: string; to: string[]; body: string }): Promise<void> {
  const client = await SmtpTestClient.connect(postfix.port);
  try {
    const result = await client.send(message);
    assert.equal(result.data?.code, 250, `postfix took the message: ${JSON.stringify(result)}`);
  } finally {
    await client.quit();
  }
}

/** Postfix adds its own Received: header on top; the rest must be our bytes exactly. */
function withoutPostfixTrace(body: Buffer): string {
  const text = body.toString('utf8');
  return text.replace(/^Received: from [^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n/, '');
}

async function setup(t: TestContext, options: { primaryBehaviour?: Parameters<Sink['behave']>[0] } = {}) {
  const dir = await tempDir(t, 'gosmtp-dup-postfix-');
  const primary = await sink(t, { name: 'primary', behaviour: options.primaryBehaviour });
  const backups = [await sink(t, { name: 'backup1' }), await sink(t, { name: 'backup2' })];
  const bounces = await sink(t, { name: 'bounces' });
  const r = await router(t, {
    config: { relay: { destination_primary: primary.label, destination_backups: backups.map((b) => b.label) } },
  });
  const postfix = await startPostfix(t, dir, {
    'example.com': `smtp:[127.0.0.1]:${r.port}`,
    'senders.test': `smtp:[127.0.0.1]:${bounces.port}`,
  });
  return { primary, backups, bounces, router: r, postfix };
}

describe('Postfix in front', { skip: available ? false : 'Postfix is not installed (apt-get install postfix); .ci/run installs it' }, () => {
  test('mail through Postfix reaches the primary and both backups byte-exactly', async (t) => {
    const { primary, backups, postfix } = await setup(t);
    const body = sampleMessage('through postfix', 'line with a leading dot follows\r\n.dot\r\n');
    await submit(postfix, { from: 'alice@senders.test', to: ['bob@example.com', 'carol@example.com'], body });
    const [atPrimary] = await primary.waitFor(1, 20_000);
    assert.deepEqual(atPrimary!.to, ['bob@example.com', 'carol@example.com']);
    assert.equal(withoutPostfixTrace(atPrimary!.body), body);
    for (const backup of backups) {
      const [copy] = await backup.waitFor(1, 20_000);
      assert.ok(copy!.body.equals(atPrimary!.body), 'the backup has the same bytes as the primary');
      assert.deepEqual(copy!.to, atPrimary!.to);
    }
  });

  test('primary down: Postfix keeps the mail deferred (our 4xx) and delivers it once the primary is back', async (t) => {
    const placeholder = await rawServer(t, 'silent');
    const primaryPort = placeholder.port;
    await placeholder.close();
    const dir = await tempDir(t, 'gosmtp-dup-postfix-');
    const r = await router(t, { config: { relay: { destination_primary: `127.0.0.1:${primaryPort}` } } });
    const postfix = await startPostfix(t, dir, { 'example.com': `smtp:[127.0.0.1]:${r.port}` });
    await submit(postfix, { from: 'alice@senders.test', to: ['bob@example.com'], body: sampleMessage('deferred') });
    await eventually(async () => /status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.4\.1/.test(await postfix.log()), 20_000, 'postfix deferral');
    assert.equal((await postfix.queue()).length, 1, 'the message waits in the Postfix queue');

    const primary = await sink(t, { name: 'primary', port: primaryPort });
    await postfix.flush();
    const [message] = await primary.waitFor(1, 20_000);
    assert.deepEqual(message!.to, ['bob@example.com']);
    await eventually(async () => (await postfix.queue()).length === 0, 20_000, 'empty postfix queue');
  });

  test('a 5xx from the primary makes Postfix bounce the message to its sender', async (t) => {
    const { bounces, postfix, backups } = await setup(t, { primaryBehaviour: { rcpt: () => ({ code: 550, enhanced: '5.1.1', text: 'No such mailbox here' }) } });
    await submit(postfix, { from: 'alice@senders.test', to: ['nobody@example.com'], body: sampleMessage('bounce me') });
    const [bounce] = await bounces.waitFor(1, 20_000);
    assert.equal(bounce!.from, '', 'bounces use the null sender');
    assert.deepEqual(bounce!.to, ['alice@senders.test']);
    assert.match(bounce!.body.toString(), /550 5\.1\.1 No such mailbox here/);
    assert.equal(backups[0]!.messages.length, 0, 'no copy of a refused message');
  });

  test('Postfix reuses one connection for several messages', async (t) => {
    const dir = await tempDir(t, 'gosmtp-dup-postfix-');
    const primary = await sink(t, { name: 'primary' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const postfix = await startPostfix(
      t,
      dir,
      { 'example.com': `smtp:[127.0.0.1]:${r.port}` },
      { smtp_connection_cache_destinations: `[127.0.0.1]:${r.port}`, default_destination_concurrency_limit: '1' },
    );
    for (let i = 0; i < 4; i++) await submit(postfix, { from: 'alice@senders.test', to: [`r${i}@example.com`], body: sampleMessage(`cached ${i}`) });
    await primary.waitFor(4, 20_000);
    await eventually(async () => /conn_use=[2-9]/.test(await postfix.log()), 10_000, 'a reused connection in the Postfix log');
    assert.match(await postfix.log(), /status=sent \(250 2\.0\.0 Ok: queued as primary-\d\)/);
  });

  async function splitSetup(t: TestContext, extraMain: Record<string, string> = {}) {
    const dir = await tempDir(t, 'gosmtp-dup-postfix-');
    const east = await sink(t, { name: 'east' });
    const west = await sink(t, { name: 'west' });
    const byRegion = definePlugin({
      name: 'by-region',
      rcpt: (ctx) => deliver({ to: ctx.recipient.startsWith('east') ? east.label : west.label }),
    });
    const r = await router(t, { plugins: [byRegion] });
    const postfix = await startPostfix(t, dir, { 'example.com': `smtp:[127.0.0.1]:${r.port}` }, extraMain);
    await submit(postfix, { from: 'alice@senders.test', to: ['east1@example.com', 'west1@example.com', 'east2@example.com'], body: sampleMessage('split') });
    return { east, west, postfix };
  }

  test('recipients routed to different servers: the 452 one is deferred by Postfix and delivered on its next queue run', async (t) => {
    const { east, west, postfix } = await splitSetup(t);
    await east.waitFor(1, 20_000);
    assert.deepEqual(east.messages.flatMap((m) => m.to), ['east1@example.com', 'east2@example.com']);
    await eventually(async () => /to=<west1@example\.com>.*dsn=4\.5\.3, status=deferred/.test(await postfix.log()), 20_000, 'west1 deferred with 4.5.3');
    await postfix.flush(); // what Postfix's own queue run does after minimal_backoff_time
    const [message] = await west.waitFor(1, 20_000);
    assert.deepEqual(message!.to, ['west1@example.com']);
    await eventually(async () => (await postfix.queue()).length === 0, 20_000, 'empty postfix queue');
  });

  test('with one recipient per delivery (as docs/postfix.md advises for split routes) nothing waits', async (t) => {
    const { east, west, postfix } = await splitSetup(t, { smtp_destination_recipient_limit: '1' });
    await east.waitFor(2, 20_000);
    await west.waitFor(1, 20_000);
    assert.doesNotMatch(await postfix.log(), /status=deferred/);
  });
});
