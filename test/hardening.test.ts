/**
 * Regressions for what a security and operations review found: each of these failed before.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { Authenticator } from '../src/core/auth/authenticator.ts';
import { hashPassword } from '../src/core/auth/password.ts';
import { ConfigError, validateConfig } from '../src/core/config/load.ts';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { selfSigned } from './helpers/certs.ts';
import { eventually, rawServer, router, sink, tempDir } from './helpers/fixtures.ts';

describe('hardening', () => {
  test('a copy whose connection drops at RCPT releases its connection slot (max_connections: 1)', async (t) => {
    const primary = await sink(t);
    const dropping = await rawServer(t, { dropAt: 'RCPT' });
    const r = await router(t, {
      config: {
        destinations: { backup: { url: dropping.label, max_connections: 1 } },
        relay: { destination_primary: primary.label, destination_backups: ['backup'] },
        queue: { retry_initial_seconds: 0.05, retry_max_seconds: 0.1 },
        health: { failure_threshold: 1000 },
      },
    });
    await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
    await eventually(() => dropping.connections() >= 3, 10_000, 'retries on new connections');
  });

  test('credentials are not sent to an unverified TLS peer (opportunistic STARTTLS)', async (t) => {
    const dir = await tempDir(t);
    const files = await selfSigned(dir);
    const upstream = await sink(t, { tls: { cert: await readFile(files.cert), key: await readFile(files.key) }, users: { relay: 'pw' } });
    const r = await router(t, { config: { destinations: { up: { url: upstream.label, auth: { user: 'relay', pass: 'pw' } } }, plugins: [{ failover: { destinations: ['up'] } }] } });
    const result = await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
    assert.equal(result.mail.code, 451);
    assert.doesNotMatch(result.mail.text, /relay/, 'no user name in the reply');
    assert.equal(upstream.messages.length, 0);
  });

  test('parallel wrong guesses cannot slip under the AUTH failure limit; a success does not reset it', async () => {
    const auth = new Authenticator({ users: [{ user: 'alice', password_hash: await hashPassword('right') }, { user: 'mallory', password_hash: await hashPassword('mine') }], maxFailures: 2, windowMs: 60_000 });
    const results = await Promise.all(Array.from({ length: 10 }, () => auth.check('192.0.2.1', 'alice', 'wrong')));
    assert.ok(results.filter((r) => r === 'invalid').length <= 2, results.join(','));
    const other = new Authenticator({ users: [{ user: 'alice', password_hash: await hashPassword('right') }, { user: 'mallory', password_hash: await hashPassword('mine') }], maxFailures: 2, windowMs: 60_000 });
    assert.equal(await other.check('192.0.2.2', 'alice', 'guess1'), 'invalid');
    assert.equal(await other.check('192.0.2.2', 'mallory', 'mine'), 'ok');
    assert.equal(await other.check('192.0.2.2', 'alice', 'guess2'), 'invalid');
    assert.equal(await other.check('192.0.2.2', 'alice', 'guess3'), 'rate-limited');
  });

  test('password hashes with unaffordable cost parameters are configuration errors, not crashes', () => {
    const huge = 'scrypt$1048576$64$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=';
    assert.throws(
      () => validateConfig({ relay: { destination_primary: 'mx:25' }, auth: { users: [{ user: 'a', password_hash: huge }] } }, 't'),
      (err) => err instanceof ConfigError && /^auth\.users\.0\.password_hash: expected a hash/.test(err.problems[0]!),
    );
  });

  test('configuration errors never print a secret', () => {
    for (const raw of [
      { destinations: { up: { url: 'mx:25', auth: { user: 'u', password: 'S3cr3t-value' } } }, relay: { destination_primary: 'up' } },
      { relay: { destination_primary: 'mx:25' }, auth: { users: [{ user: 'a', password_hash: 'S3cr3t-value' }] } },
    ]) {
      try {
        validateConfig(raw, 't');
        assert.fail('expected an error');
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        assert.doesNotMatch(err.problems.join('\n'), /S3cr3t-value/);
      }
    }
  });
});
