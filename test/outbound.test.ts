/**
 * Outbound per destination: TLS modes (opportunistic, required, implicit) with verification,
 * credentials only over TLS, secrets from the environment, LMTP.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { loadConfig } from '../src/core/config/load.ts';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { BIN } from './helpers/child-router.ts';
import { selfSigned } from './helpers/certs.ts';
import { capturingLogger, rawServer, router, sink, tempDir } from './helpers/fixtures.ts';

const message = () => ({ from: 'a@example.com', to: ['b@example.net'], body: sampleMessage('outbound') });

async function tlsSink(t: Parameters<typeof sink>[0], options: Parameters<typeof sink>[1] = {}) {
  const dir = await tempDir(t);
  const files = await selfSigned(dir);
  const material = { cert: await readFile(files.cert), key: await readFile(files.key) };
  return { sink: await sink(t, { ...options, tls: material }), ca: files.cert };
}

describe('outbound TLS and AUTH', () => {
  test('host:port upgrades with STARTTLS when offered (opportunistic, unverified)', async (t) => {
    const { sink: upstream } = await tlsSink(t);
    const r = await router(t, { config: { relay: { destination_primary: upstream.label } } });
    assert.equal((await sendMail(r.port, message())).data?.code, 250);
    assert.equal(upstream.messages[0]!.secure, true);
  });

  test('opportunistic TLS is never a reason not to deliver: STARTTLS refused, or a handshake that fails', async (t) => {
    // The third: plain text in the same write as the 220, where TLS should be.
    for (const answer of ['454 4.7.0 TLS not available due to local problem', '220 2.0.0 Ready to start TLS', '220 2.0.0 Ready to start TLS\r\nthis is not TLS at all']) {
      const upstream = await rawServer(t, { starttls: answer });
      const capture = capturingLogger();
      const r = await router(t, { config: { relay: { destination_primary: upstream.label } }, logger: capture.logger });
      const result = await sendMail(r.port, message());
      assert.equal(result.data?.code, 250, answer);
      assert.equal(upstream.messages.length, 1, answer);
      // Refused: the same connection goes on; a failed handshake: one new connection, without STARTTLS.
      const refused = answer.startsWith('454');
      assert.equal(upstream.connections(), refused ? 1 : 2, answer);
      assert.equal(upstream.commands.filter((c) => c === 'STARTTLS').length, 1, answer);
      assert.match(capture.text(), refused ? /STARTTLS refused; delivering without TLS/ : /opportunistic TLS failed; delivering without TLS/);
    }
  });

  test('required TLS does not fall back, and the 451 does not tell the sender our upstream\'s address or TLS errors', async (t) => {
    for (const answer of ['454 4.7.0 TLS not available', '220 2.0.0 Ready to start TLS']) {
      const upstream = await rawServer(t, { starttls: answer });
      const r = await router(t, { config: { relay: { destination_primary: `smtp+starttls://${upstream.label}` } } });
      const result = await sendMail(r.port, message());
      assert.equal(result.mail.code, 451, answer);
      assert.equal(result.mail.enhanced, '4.4.1');
      assert.equal(result.mail.text, 'Upstream not available (STARTTLS)');
      assert.equal(upstream.messages.length, 0);
      assert.equal(upstream.connections(), 1, 'no second try without TLS');
    }
  });

  test('smtp+starttls:// verifies the certificate: an untrusted one is a 451, a trusted CA works', async (t) => {
    const { sink: upstream, ca } = await tlsSink(t);
    const untrusted = await router(t, { config: { relay: { destination_primary: `smtp+starttls://${upstream.label}` } } });
    const refused = await sendMail(untrusted.port, message());
    assert.equal(refused.mail.code, 451, 'never 250, never 5xx');
    assert.equal(upstream.messages.length, 0);

    const trusted = await router(t, { config: { destinations: { up: { url: `smtp+starttls://${upstream.label}`, tls: { ca } } }, plugins: [{ failover: { destinations: ['up'] } }] } });
    assert.equal((await sendMail(trusted.port, message())).data?.code, 250);
    assert.equal(upstream.messages[0]!.secure, true);
  });

  test('smtps:// speaks TLS from the first byte', async (t) => {
    const { sink: upstream, ca } = await tlsSink(t, { secure: true });
    const r = await router(t, { config: { destinations: { up: { url: `smtps://${upstream.label}`, tls: { ca } } }, plugins: [{ failover: { destinations: ['up'] } }] } });
    assert.equal((await sendMail(r.port, message())).data?.code, 250);
    assert.equal(upstream.messages[0]!.secure, true);
  });

  test('credentials from ${ENV} authenticate over TLS and are never printed by check', async (t) => {
    const { sink: upstream, ca } = await tlsSink(t, { users: { relayuser: 's3cret-pass' } });
    const dir = await tempDir(t);
    const file = join(dir, 'config.yaml');
    await writeFile(
      file,
      stringify({
        destinations: { up: { url: `smtp+starttls://${upstream.label}`, tls: { ca }, auth: { user: 'relayuser', pass: '${UPSTREAM_PASS}' } } },
        plugins: [{ failover: { destinations: ['up'] } }],
      }),
    );
    const { config } = await loadConfig({ file, env: { UPSTREAM_PASS: 's3cret-pass' } });
    // The loaded config names the default queue folder; the test's spool lives in its temporary folder.
    const r = await router(t, { config: { ...config, queue: { ...config.queue, dir: join(dir, 'spool') } } as never });
    assert.equal((await sendMail(r.port, message())).data?.code, 250);
    assert.equal(upstream.messages[0]!.user, 'relayuser');

    const check = await new Promise<{ stdout: string; stderr: string }>((resolve) =>
      execFile(process.execPath, [BIN, 'check', '--config', file], { env: { ...process.env, UPSTREAM_PASS: 's3cret-pass' } }, (_e, stdout, stderr) => resolve({ stdout, stderr })),
    );
    assert.match(check.stdout, /pass: "\*{8}"/);
    assert.doesNotMatch(check.stdout + check.stderr, /s3cret-pass/);
    const missing = await loadConfig({ file, env: {} }).catch((err: Error) => err);
    assert.match(String((missing as { problems?: string[] }).problems), /destinations\.up\.auth\.pass: environment variable UPSTREAM_PASS is not set/);
  });

  test('copies to a configured destination use its TLS and credentials too', async (t) => {
    const primary = await sink(t);
    const { sink: backup, ca } = await tlsSink(t, { users: { copier: 'pw' } });
    const r = await router(t, {
      config: {
        destinations: { backup: { url: `smtp+starttls://${backup.label}`, tls: { ca }, auth: { user: 'copier', pass: 'pw' } } },
        relay: { destination_primary: primary.label, destination_backups: ['backup'] },
      },
    });
    assert.equal((await sendMail(r.port, message())).data?.code, 250);
    const [copy] = await backup.waitFor(1);
    assert.equal(copy!.user, 'copier');
    assert.equal(copy!.secure, true);
  });

  test('two named destinations with one URL and their own accounts never share a connection', async (t) => {
    const { sink: provider, ca } = await tlsSink(t, { users: { sales: 'ps', support: 'pt' } });
    const url = `smtp+starttls://${provider.label}`;
    const r = await router(t, {
      config: {
        destinations: { sales: { url, tls: { ca }, auth: { user: 'sales', pass: 'ps' } }, support: { url, tls: { ca }, auth: { user: 'support', pass: 'pt' } } },
        plugins: [{ route: { rules: [{ sender: '@sales.example', use: { failover: { destinations: ['sales'] } } }], default: { failover: { destinations: ['support'] } } } }],
      },
    });
    for (const from of ['a@sales.example', 'b@other.example', 'c@sales.example', 'd@other.example']) {
      assert.equal((await sendMail(r.port, { from, to: ['x@example.net'], body: sampleMessage(from) })).data?.code, 250);
    }
    assert.deepEqual(
      provider.messages.map((m) => [m.from, m.user]),
      [
        ['a@sales.example', 'sales'],
        ['b@other.example', 'support'],
        ['c@sales.example', 'sales'],
        ['d@other.example', 'support'],
      ],
    );
  });

  test('credentials are never sent without TLS', async (t) => {
    const upstream = await sink(t, { users: { relayuser: 'x' } }); // no STARTTLS offered
    const r = await router(t, { config: { destinations: { up: { url: upstream.label, auth: { user: 'relayuser', pass: 'x' } } }, plugins: [{ failover: { destinations: ['up'] } }] } });
    const result = await sendMail(r.port, message());
    assert.equal(result.mail.code, 451);
    assert.equal(upstream.messages.length, 0);
  });

  test('the HELO name is smtp.domain, or the destination\'s own helo', async (t) => {
    const a = await sink(t, { name: 'a' });
    const b = await sink(t, { name: 'b' });
    const r = await router(t, {
      config: { smtp: { domain: 'relay.example.org' }, destinations: { b: { url: b.label, helo: 'special.example.org' } }, relay: { destination_primary: a.label, destination_backups: ['b'] } },
    });
    await sendMail(r.port, message());
    const [copy] = await b.waitFor(1);
    assert.equal(a.messages[0]!.helo, 'relay.example.org');
    assert.equal(copy!.helo, 'special.example.org');
  });

  test('lmtp:// primary: one recipient per transaction, so its final verdict is the client\'s', async (t) => {
    // An LMTP server answers each recipient after the body; one SMTP reply could not carry a 250
    // for one and a 550 for another. The second recipient is asked to come in a new transaction.
    const upstream = await sink(t, { lmtp: true, behaviour: { data: (m) => (m.to.includes('full@example.net') ? { code: 552, enhanced: '5.2.2', text: 'Mailbox full' } : undefined) } });
    const r = await router(t, { config: { relay: { destination_primary: `lmtp://${upstream.label}` } } });
    const first = await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net', 'full@example.net'], body: sampleMessage('lmtp') });
    assert.deepEqual(first.rcpt.map((x) => [x.code, x.enhanced]), [[250, '2.1.5'], [452, '4.5.3']]);
    assert.equal(first.data?.code, 250);
    const second = await sendMail(r.port, { from: 'a@example.com', to: ['full@example.net'], body: sampleMessage('lmtp') });
    assert.equal(second.data?.code, 552, 'only the full mailbox bounces');
    assert.deepEqual(upstream.messages.map((m) => m.to), [['b@example.net']]);
  });

  test('unknown schemes and credentials in URLs are configuration errors', async () => {
    const { validateConfig, ConfigError } = await import('../src/core/config/load.ts');
    assert.throws(() => validateConfig({ relay: { destination_primary: 'ftp://x:21' } }, 't'), (e) => e instanceof ConfigError && /unknown scheme "ftp:\/\/"/.test(e.problems[0]!));
    assert.throws(() => validateConfig({ relay: { destination_primary: 'smtps://u:p@x:465' } }, 't'), (e) => e instanceof ConfigError && /credentials do not belong in the address/.test(e.problems[0]!));
  });
});
