/**
 * Who may relay, and limits (security issue): fail closed, bad clients never affect others.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { ReplyReader } from '../src/core/upstream/reply-reader.ts';
import { sampleMessage, SmtpTestClient } from '../src/testkit/index.ts';
import { rawServer, router, sink } from './helpers/fixtures.ts';

/** A client connecting from another loopback address (127.0.0.2): an outsider. */
async function fromAddress(port: number, localAddress: string): Promise<{ command(line: string): Promise<{ code: number; enhanced?: string }>; destroy(): void }> {
  const socket = net.connect({ port, host: '127.0.0.1', localAddress });
  const reader = new ReplyReader();
  const waiting: Array<(r: { code: number; enhanced?: string }) => void> = [];
  socket.on('data', (chunk: Buffer) => {
    for (const reply of reader.push(chunk)) waiting.shift()?.(reply);
  });
  await new Promise<void>((resolve) => waiting.push(() => resolve()));
  return {
    command: (line) =>
      new Promise((resolve) => {
        waiting.push(resolve);
        socket.write(`${line}\r\n`);
      }),
    destroy: () => socket.destroy(),
  };
}

describe('relay access', () => {
  test('a client outside smtp.allowed_networks gets 554 5.7.1 at RCPT and nothing reaches the upstream', async (t) => {
    const upstream = await rawServer(t, 'lenient');
    const r = await router(t, { config: { smtp: { allowed_networks: ['127.0.0.1/32'] }, relay: { destination_primary: upstream.label } } });
    const outsider = await fromAddress(r.port, '127.0.0.2');
    t.after(() => outsider.destroy());
    await outsider.command('EHLO outsider');
    assert.equal((await outsider.command('MAIL FROM:<spammer@example.org>')).code, 250);
    const rcpt = await outsider.command('RCPT TO:<victim@example.net>');
    assert.deepEqual([rcpt.code, rcpt.enhanced], [554, '5.7.1']);
    assert.equal(upstream.connections(), 0, 'not even MAIL FROM was forwarded');

    // The same router relays for an allowed client.
    const insider = await SmtpTestClient.connect(r.port);
    t.after(() => insider.destroy());
    assert.equal((await insider.send({ from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() })).data?.code, 250);
    assert.equal(upstream.messages.length, 1);
  });

  test('the default allows loopback only', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { allowed_networks: undefined }, relay: { destination_primary: primary.label } } });
    // 127.0.0.2 is loopback too: allowed by the default 127.0.0.0/8.
    const client = await fromAddress(r.port, '127.0.0.2');
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    assert.equal((await client.command('RCPT TO:<b@example.net>')).code, 250);
    assert.deepEqual(r.config.smtp.allowed_networks, ['127.0.0.0/8', '::1/128']);
  });

  test('smtp.allowed_recipient_domains refuses other domains', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { allowed_recipient_domains: ['example.net'] }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    assert.equal((await client.command('RCPT TO:<b@sub.example.net>')).code, 250);
    assert.equal((await client.command('RCPT TO:<b@elsewhere.example>')).code, 554);
  });
});

describe('limits', () => {
  test('max recipients: 452 4.5.3 beyond the limit', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { max_recipients: 2 }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    assert.equal((await client.command('RCPT TO:<1@example.net>')).code, 250);
    assert.equal((await client.command('RCPT TO:<2@example.net>')).code, 250);
    const third = await client.command('RCPT TO:<3@example.net>');
    assert.deepEqual([third.code, third.enhanced], [452, '4.5.3']);
    assert.equal((await client.data(sampleMessage())).code, 250);
    assert.deepEqual(primary.messages[0]!.to, ['1@example.net', '2@example.net']);
  });

  test('connections per client address are limited; other clients are unaffected', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { max_connections_per_client: 2 }, relay: { destination_primary: primary.label } } });
    const a = await fromAddress(r.port, '127.0.0.3');
    const b = await fromAddress(r.port, '127.0.0.3');
    t.after(() => (a.destroy(), b.destroy()));
    const third = await new Promise<string>((resolve) => {
      const s = net.connect({ port: r.port, host: '127.0.0.1', localAddress: '127.0.0.3' });
      s.once('data', (d) => {
        resolve(d.toString());
        s.destroy();
      });
    });
    assert.match(third, /^421 4\.7\.0 Too many connections/);
    const other = await SmtpTestClient.connect(r.port);
    t.after(() => other.destroy());
    assert.equal((await other.command('EHLO other')).code, 250);
  });

  test('a client that keeps causing errors is disconnected with 421 after smtp.max_errors', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { max_errors: 3 }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command('RCPT TO:<x@example.net>')).code, 503);
    assert.equal((await client.command('DATA')).code, 503);
    assert.equal((await client.command('MAIL FROM:<broken')).code, 501);
    const bye = await client.next();
    assert.deepEqual([bye.code, bye.enhanced], [421, '4.7.0']);
  });

  test('an idle client is disconnected after smtp.idle_timeout_seconds', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { idle_timeout_seconds: 0.3 }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    const timeout = await client.next(5000);
    assert.equal(timeout.code, 421);
  });
});

describe('LMTP listener', () => {
  test('smtp.lmtp_listen speaks LMTP: LHLO, and one reply per recipient after DATA', async (t) => {
    const primary = await sink(t, { behaviour: { rcpt: (to) => (to.startsWith('no') ? { code: 550, enhanced: '5.1.1', text: 'unknown' } : undefined) } });
    const r = await router(t, { config: { smtp: { lmtp_listen: '127.0.0.1:0' }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.router.lmtpAddress!.port);
    t.after(() => client.destroy());
    assert.match(client.greeting.text, /LMTP/);
    assert.equal((await client.command('LHLO c')).code, 250);
    await client.command('MAIL FROM:<a@example.com>');
    assert.equal((await client.command('RCPT TO:<one@example.net>')).code, 250);
    assert.equal((await client.command('RCPT TO:<no@example.net>')).code, 550);
    assert.equal((await client.command('RCPT TO:<two@example.net>')).code, 250);
    const first = await client.data(sampleMessage('lmtp'));
    const second = await client.next();
    assert.deepEqual([first.code, second.code], [250, 250], 'one verdict for each accepted recipient');
    assert.deepEqual(primary.messages[0]!.to, ['one@example.net', 'two@example.net']);
  });
});
