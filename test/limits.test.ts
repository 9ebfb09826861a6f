/**
 * Limits and bad input (behaviour 8): size, SMTP smuggling, broken clients, streaming memory.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { startChildRouter } from './helpers/child-router.ts';
import { rawServer, router, sink } from './helpers/fixtures.ts';

const FROM = 'sender@example.com';

describe('message size', () => {
  test('an over-size message is refused with 552 5.3.4 and reaches no destination', async (t) => {
    const primary = await sink(t);
    const backup = await sink(t, { name: 'backup' });
    const r = await router(t, { config: { smtp: { max_message_bytes: 2000 }, relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('big', 'x'.repeat(5000)) });
    assert.equal(result.data?.code, 552);
    assert.equal(result.data?.enhanced, '5.3.4');
    // One that fits goes through on the same router, and is the only one anywhere.
    assert.equal((await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('small') })).data?.code, 250);
    await backup.waitFor(1);
    assert.equal(primary.messages.length, 1);
    assert.equal(backup.messages.length, 1);
    assert.match(primary.messages[0]!.body.toString(), /Subject: small/);
  });

  test('a declared SIZE over the limit is refused at MAIL FROM', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { max_message_bytes: 2000 }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    const mail = await client.command(`MAIL FROM:<${FROM}> SIZE=5000`);
    assert.equal(mail.code, 552);
    assert.equal(mail.enhanced, '5.3.4');
  });
});

describe('SMTP smuggling (bare CR / LF)', () => {
  // Each variant ends the first message "early" for a lenient server, then smuggles a second one.
  const variants: Record<string, string> = {
    '<LF>.<LF>': '\n.\n',
    '<CR><LF>.<LF>': '\r\n.\n',
    '<LF>.<CR><LF>': '\n.\r\n',
    '<CR>.<CR>': '\r.\r',
    '<CR><LF>.<CR>': '\r\n.\r',
  };
  const smuggled = (end: string) =>
    `Subject: innocent\r\n\r\nhello${end}MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@example.net>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n`;

  for (const [name, end] of Object.entries(variants)) {
    test(`normalize: ${name} never becomes two messages at a lenient upstream`, async (t) => {
      const lenient = await rawServer(t, 'lenient');
      const r = await router(t, { config: { smtp: { bare_line_endings: 'normalize' }, relay: { destination_primary: lenient.label } } });
      const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: smuggled(end) });
      assert.equal(result.data?.code, 250);
      assert.equal(lenient.messages.length, 1, JSON.stringify(lenient.messages));
      assert.deepEqual(lenient.messages[0]!.to, ['<a@example.net>']);
      assert.doesNotMatch(lenient.messages[0]!.body, /[^\r]\n|\r[^\n]/, 'only CRLF line endings upstream');
    });

    test(`reject: ${name} is refused with 550 5.6.11 and nothing is delivered`, async (t) => {
      const lenient = await rawServer(t, 'lenient');
      const r = await router(t, { config: { smtp: { bare_line_endings: 'reject' }, relay: { destination_primary: lenient.label } } });
      const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: smuggled(end) });
      assert.equal(result.data?.code, 550);
      assert.equal(result.data?.enhanced, '5.6.11');
      assert.equal(lenient.messages.length, 0);
    });
  }
});

describe('broken clients', () => {
  test('a client that resets mid-DATA hurts nobody: the router and other sessions go on', async (t) => {
    const primary = await sink(t);
    const backup = await sink(t, { name: 'backup' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    const healthy = await SmtpTestClient.connect(r.port);
    t.after(() => healthy.destroy());
    await healthy.command('EHLO healthy');
    await healthy.command(`MAIL FROM:<${FROM}>`);

    for (let i = 0; i < 5; i++) {
      const rude = await SmtpTestClient.connect(r.port);
      await rude.command('EHLO rude');
      await rude.command(`MAIL FROM:<${FROM}>`);
      await rude.command('RCPT TO:<a@example.net>');
      await rude.command('DATA');
      rude.write('Subject: cut\r\n\r\n' + 'y'.repeat(50_000));
      // RST instead of FIN, like a crashed client.
      rude.destroy();
    }
    const garbage = net.connect(r.port, '127.0.0.1');
    garbage.on('error', () => undefined);
    garbage.end('\x00\xff\r\nGET / HTTP/1.1\r\n\r\n');

    await healthy.command('RCPT TO:<b@example.net>');
    assert.equal((await healthy.data(sampleMessage('healthy'))).code, 250);
    await backup.waitFor(1);
    assert.equal(primary.messages.length, 1);
    assert.match(primary.messages[0]!.body.toString(), /Subject: healthy/);
    assert.deepEqual(await readdir(join(r.queueDir, 'tmp')), [], 'cut-off messages leave nothing in the spool');
  });

  test('unknown commands and bad sequences get 5xx and the session continues', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command('XYZZY')).code, 500);
    assert.equal((await client.command('RCPT TO:<a@example.net>')).code, 503);
    assert.equal((await client.command('DATA')).code, 503);
    assert.equal((await client.command('MAIL FROM:<not an address')).code, 501);
    const result = await client.send({ from: FROM, to: ['a@example.net'], body: sampleMessage(), ehlo: false });
    assert.equal(result.data?.code, 250);
  });
});

describe('streaming', () => {
  test('a 60 MiB message streams through with peak RSS well under 150 MiB', { timeout: 180_000 }, async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'gosmtp-dup-rss-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const primary = await sink(t, { name: 'primary', discard: true });
    const backup = await sink(t, { name: 'backup', discard: true });
    const child = await startChildRouter(t, dir, {
      smtp: { listen: '127.0.0.1:0', max_message_bytes: 100 * 1024 * 1024 },
      relay: { destination_primary: primary.label, destination_backups: [backup.label] },
      queue: { dir: join(dir, 'spool') },
    });
    const client = await SmtpTestClient.connect(child.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command(`MAIL FROM:<${FROM}>`);
    await client.command('RCPT TO:<a@example.net>');
    assert.equal((await client.command('DATA')).code, 354);
    const line = Buffer.from('x'.repeat(998) + '\r\n');
    const total = 60 * 1024 * 1024;
    let sent = 0;
    const chunk = Buffer.concat(Array(64).fill(line));
    while (sent < total) {
      await client.writeAndDrain(chunk);
      sent += chunk.length;
    }
    client.write('.\r\n');
    const final = await client.next(120_000);
    assert.equal(final.code, 250);
    assert.equal(primary.messages[0]!.size, sent);
    await backup.waitFor(1, 60_000);
    assert.equal(backup.messages[0]!.sha256, primary.messages[0]!.sha256);
    child.proc.kill('SIGTERM');
    const stopped = await child.waitForLine((l) => l.msg === 'gosmtp-dup stopped');
    const rssMiB = Number(stopped.maxRssBytes) / 1024 / 1024;
    t.diagnostic(`peak RSS of the router for a ${(sent / 1024 / 1024).toFixed(0)} MiB message: ${rssMiB.toFixed(1)} MiB`);
    assert.ok(rssMiB < 150, `peak RSS ${rssMiB.toFixed(1)} MiB`);
  });
});
