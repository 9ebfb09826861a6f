/**
 * Inbound TLS (STARTTLS, implicit TLS, certificate reload) and AUTH (hashed users, TLS only,
 * rate-limited failures), with nodemailer as a real client.
 */
import assert from 'node:assert/strict';
import { copyFileSync } from 'node:fs';
import { copyFile } from 'node:fs/promises';
import tls from 'node:tls';
import { describe, test } from 'node:test';
import nodemailer from 'nodemailer';
import { hashPassword } from '../src/core/auth/password.ts';
import { ConfigError, validateConfig } from '../src/core/config/load.ts';
import { readTlsFiles, watchTlsFiles, type TlsMaterial } from '../src/core/inbound/tls-files.ts';
import { sampleMessage, SmtpTestClient } from '../src/testkit/index.ts';
import { selfSigned } from './helpers/certs.ts';
import { capturingLogger, eventually, router, sink, tempDir } from './helpers/fixtures.ts';

const PASSWORD = 'correct horse battery staple';

function send(port: number, options: { secure?: boolean; requireTLS?: boolean; ignoreTLS?: boolean; auth?: { user: string; pass: string }; localAddress?: string }) {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, tls: { rejectUnauthorized: false }, ...options });
  return transport.sendMail({ envelope: { from: 'a@example.com', to: ['b@example.net'] }, raw: sampleMessage('tls') }).finally(() => transport.close());
}

describe('inbound TLS and AUTH', async () => {
  test('STARTTLS is offered with a certificate; AUTH only after it', async (t) => {
    const dir = await tempDir(t);
    const files = await selfSigned(dir);
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { tls: files }, relay: { destination_primary: primary.label }, auth: { users: [{ user: 'alice', password_hash: await hashPassword(PASSWORD) }] } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    const ehlo = await client.command('EHLO c');
    assert.ok(ehlo.lines.includes('STARTTLS'));
    assert.ok(!ehlo.lines.some((l) => l.startsWith('AUTH')), 'no AUTH in plain text');
    assert.notEqual((await client.command('AUTH PLAIN AGFsaWNlAHg=')).code, 235);

    const info = await send(r.port, { requireTLS: true, auth: { user: 'alice', pass: PASSWORD } });
    assert.match(info.response, /^250 /);
    assert.equal(primary.messages.length, 1);
  });

  test('smtp.require_tls: MAIL before STARTTLS is 530 5.7.0', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { tls: await selfSigned(dir), require_tls: true }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    const mail = await client.command('MAIL FROM:<a@example.com>');
    assert.deepEqual([mail.code, mail.enhanced], [530, '5.7.0']);
    assert.match((await send(r.port, { requireTLS: true })).response, /^250 /);
  });

  test('the implicit-TLS listener speaks TLS from the first byte', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { tls: await selfSigned(dir), implicit_tls_listen: '127.0.0.1:0' }, relay: { destination_primary: primary.label } } });
    assert.match((await send(r.router.tlsAddress!.port, { secure: true })).response, /^250 /);
    assert.equal(primary.messages.length, 1);
  });

  test('an authenticated client may relay from outside smtp.allowed_networks; wrong passwords are rate-limited', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const capture = capturingLogger();
    const r = await router(t, {
      config: {
        smtp: { tls: await selfSigned(dir), allowed_networks: ['127.0.0.1/32'] },
        relay: { destination_primary: primary.label },
        auth: { users: [{ user: 'alice', password_hash: await hashPassword(PASSWORD) }], max_failures: 2 },
      },
      logger: capture.logger,
    });
    // Outsider without AUTH: refused.
    await assert.rejects(send(r.port, { requireTLS: true, localAddress: '127.0.0.2' }), (err: Error & { responseCode?: number }) => err.responseCode === 554);
    // Outsider with AUTH: relayed.
    assert.match((await send(r.port, { requireTLS: true, localAddress: '127.0.0.2', auth: { user: 'alice', pass: PASSWORD } })).response, /^250 /);
    // Wrong passwords: 535, then 454 for everything from that address, even the right password.
    for (let i = 0; i < 2; i++) {
      await assert.rejects(send(r.port, { requireTLS: true, localAddress: '127.0.0.3', auth: { user: 'alice', pass: 'wrong' } }), (err: Error & { responseCode?: number }) => err.responseCode === 535);
    }
    await assert.rejects(send(r.port, { requireTLS: true, localAddress: '127.0.0.3', auth: { user: 'alice', pass: PASSWORD } }), (err: Error & { responseCode?: number }) => err.responseCode === 454);
    // Another address is not affected.
    assert.match((await send(r.port, { requireTLS: true, localAddress: '127.0.0.4', auth: { user: 'alice', pass: PASSWORD } })).response, /^250 /);
    assert.ok(!capture.text().includes(PASSWORD) && !capture.text().includes('wrong'), 'passwords are never logged');
  });

  test('per-user allowed senders: an authenticated user may only send as its own addresses', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const r = await router(t, {
      config: {
        smtp: { tls: await selfSigned(dir) },
        relay: { destination_primary: primary.label },
        auth: { users: [{ user: 'sales', password_hash: await hashPassword(PASSWORD), allowed_senders: ['@sales.example.com', 'ceo@example.com'] }] },
      },
    });
    const transport = nodemailer.createTransport({ host: '127.0.0.1', port: r.port, requireTLS: true, tls: { rejectUnauthorized: false }, auth: { user: 'sales', pass: PASSWORD } });
    t.after(() => transport.close());
    const sendAs = (from: string) => transport.sendMail({ envelope: { from, to: ['x@example.net'] }, raw: sampleMessage('as') });
    assert.match((await sendAs('rep@sales.example.com')).response, /^250 /);
    assert.match((await sendAs('ceo@example.com')).response, /^250 /);
    await assert.rejects(sendAs('someone@else.example'), (err: Error & { responseCode?: number; response?: string }) => err.responseCode === 553 && /5\.7\.1 Sender address not allowed for sales/.test(err.response ?? ''));
  });

  test('plain-text AUTH from loopback only when auth.allow_plaintext_on_loopback is set', async (t) => {
    const primary = await sink(t);
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label }, auth: { users: [{ user: 'alice', password_hash: await hashPassword(PASSWORD) }], allow_plaintext_on_loopback: true } },
    });
    assert.match((await send(r.port, { ignoreTLS: true, auth: { user: 'alice', pass: PASSWORD } })).response, /^250 /);
  });

  test('a new certificate is picked up without a restart when the files change', async (t) => {
    const dir = await tempDir(t);
    const first = await selfSigned(dir, 'first');
    const second = await selfSigned(dir, 'second');
    const live = { cert: `${dir}/live-cert.pem`, key: `${dir}/live-key.pem` };
    await copyFile(first.cert, live.cert);
    await copyFile(first.key, live.key);
    const primary = await sink(t);
    const capture = capturingLogger();
    const r = await router(t, { config: { smtp: { tls: live, implicit_tls_listen: '127.0.0.1:0' }, relay: { destination_primary: primary.label } }, logger: capture.logger });
    const peerName = () =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({ port: r.router.tlsAddress!.port, host: '127.0.0.1', rejectUnauthorized: false }, () => {
          resolve(String(socket.getPeerCertificate().subject.CN));
          socket.destroy();
        });
        socket.on('error', reject);
      });
    assert.equal(await peerName(), 'first');
    await copyFile(second.key, live.key);
    await copyFile(second.cert, live.cert);
    await eventually(() => capture.lines.some((l) => l.msg === 'TLS certificate reloaded'), 5000, 'certificate reload');
    assert.equal(await peerName(), 'second');
  });

  test('files replaced the moment the watch starts are still picked up', async (t) => {
    const dir = await tempDir(t);
    const first = await selfSigned(dir, 'first');
    const second = await selfSigned(dir, 'second');
    const live = { cert: `${dir}/live-cert.pem`, key: `${dir}/live-key.pem` };
    copyFileSync(first.cert, live.cert);
    copyFileSync(first.key, live.key);
    const inUse = await readTlsFiles(live);
    const changed: TlsMaterial[] = [];
    const stop = watchTlsFiles(live, inUse, (material) => changed.push(material), (err) => assert.fail(err));
    t.after(stop);
    // Before the watcher could read anything itself: what is in use is what it compares with.
    copyFileSync(second.key, live.key);
    copyFileSync(second.cert, live.cert);
    await eventually(() => changed.length > 0, 5000, 'the renewal noticed');
    assert.ok(changed[0]!.cert.equals((await readTlsFiles({ cert: second.cert, key: second.key })).cert));
  });

  test('TLS misconfiguration is a configuration error naming the key', async (t) => {
    assert.throws(
      () => validateConfig({ smtp: { implicit_tls_listen: '127.0.0.1:465' }, relay: { destination_primary: 'mx:25' } }, 't'),
      (err) => err instanceof ConfigError && err.problems[0] === 'smtp.implicit_tls_listen: needs smtp.tls (cert and key), got "127.0.0.1:465"',
    );
    assert.throws(
      () => validateConfig({ relay: { destination_primary: 'mx:25' }, auth: { users: [{ user: 'a', password_hash: 'plaintext!' }] } }, 't'),
      (err) => err instanceof ConfigError && /^auth\.users\.0\.password_hash: expected a hash from "gosmtp-dup hash-password"/.test(err.problems[0]!),
    );
    const dir = await tempDir(t);
    const primary = await sink(t);
    await assert.rejects(
      router(t, { config: { smtp: { tls: { cert: `${dir}/missing.pem`, key: `${dir}/missing-key.pem` } }, relay: { destination_primary: primary.label } } }),
      (err) => err instanceof ConfigError && /^smtp\.tls\.cert: cannot read .*missing\.pem: ENOENT$/.test(err.problems[0]!),
    );
  });
});
