/**
 * Configuration (behaviours 1-3): seed keys and defaults, where config comes from, env overrides,
 * and errors that name the key.
 */
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, loadConfig, validateConfig } from '../src/core/config/load.ts';
import { parseDestination } from '../src/core/destination.ts';
import { tempDir } from './helpers/fixtures.ts';

// The seed's own example, unchanged (GoSMTP-dup README).
const SEED_YAML = `smtp:
  listen: "127.0.0.1:2525"
  domain: "localhost"

relay:
  destination_primary: "mailprimary.example.com:25"
  destination_backups:
    - "mail_backup1.example.com:25"
    - "mail_backup2.example.com:25"
  timeout_seconds: 10
`;

async function problemsOf(promise: Promise<unknown>): Promise<string[]> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected a configuration error');
}

describe('configuration', () => {
  test('defaults for every key but the primary', () => {
    const config = validateConfig({ relay: { destination_primary: 'mx.example.com:25' } }, 'test');
    assert.deepEqual(config.smtp, {
      listen: '127.0.0.1:2525',
      domain: 'localhost',
      max_message_bytes: 10485760,
      bare_line_endings: 'normalize',
      require_tls: false,
      allowed_networks: ['127.0.0.0/8', '::1/128'],
      max_connections: 500,
      max_connections_per_client: 50,
      max_recipients: 1000,
      idle_timeout_seconds: 300,
      max_errors: 20,
      greeting_delay_ms: 0,
      shutdown_timeout_seconds: 30,
    });
    assert.equal(config.relay.timeout_seconds, 10);
    assert.deepEqual(config.relay.destination_backups, []);
    assert.equal(config.queue.retry_initial_seconds, 60);
    assert.equal(config.queue.retry_max_seconds, 3600);
    assert.equal(config.queue.max_age_hours, 120);
  });

  test('the seed config.yaml is found in the current folder and read unchanged', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), SEED_YAML);
    const { config, source } = await loadConfig({ cwd: dir, env: {} });
    assert.equal(source, join(dir, 'config.yaml'));
    assert.equal(config.relay.destination_primary, 'mailprimary.example.com:25');
    assert.deepEqual(config.relay.destination_backups, ['mail_backup1.example.com:25', 'mail_backup2.example.com:25']);
  });

  test('--config reads YAML, JSON and TypeScript files', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'a.yaml'), SEED_YAML);
    await writeFile(join(dir, 'b.json'), JSON.stringify({ relay: { destination_primary: 'json.example.com:25' } }));
    await writeFile(join(dir, 'c.ts'), `const port: number = 2526;\nexport default { relay: { destination_primary: \`ts.example.com:\${port}\` } };\n`);
    assert.equal((await loadConfig({ cwd: dir, file: 'a.yaml', env: {} })).config.relay.destination_primary, 'mailprimary.example.com:25');
    assert.equal((await loadConfig({ cwd: dir, file: 'b.json', env: {} })).config.relay.destination_primary, 'json.example.com:25');
    assert.equal((await loadConfig({ cwd: dir, file: 'c.ts', env: {} })).config.relay.destination_primary, 'ts.example.com:2526');
  });

  test('gosmtp-dup.config.ts is found by the search and wins over config.yaml', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), SEED_YAML);
    await writeFile(join(dir, 'gosmtp-dup.config.ts'), `export default { relay: { destination_primary: 'searched.example.com:25' } };\n`);
    const { config, source } = await loadConfig({ cwd: dir, env: {} });
    assert.equal(source, join(dir, 'gosmtp-dup.config.ts'));
    assert.equal(config.relay.destination_primary, 'searched.example.com:25');
  });

  test('environment variables override the file; lists are comma-separated', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), SEED_YAML);
    const { config } = await loadConfig({
      cwd: dir,
      env: {
        SMTP_DUP_SMTP_LISTEN: '127.0.0.1:2600',
        SMTP_DUP_RELAY_DESTINATION_BACKUPS: 'b1.example.com:25, [::1]:2525',
        SMTP_DUP_RELAY_TIMEOUT_SECONDS: '3',
        SMTP_DUP_QUEUE_DIR: '/var/spool/x',
      },
    });
    assert.equal(config.smtp.listen, '127.0.0.1:2600');
    assert.equal(config.smtp.domain, 'localhost');
    assert.deepEqual(config.relay.destination_backups, ['b1.example.com:25', '[::1]:2525']);
    assert.equal(config.relay.timeout_seconds, 3);
    assert.equal(config.queue.dir, '/var/spool/x');
    assert.equal(config.relay.destination_primary, 'mailprimary.example.com:25');
  });

  test('environment variables alone are a complete configuration', async (t) => {
    const dir = await tempDir(t);
    const { config, source } = await loadConfig({ cwd: dir, env: { SMTP_DUP_RELAY_DESTINATION_PRIMARY: '[::1]:25' } });
    assert.equal(source, 'environment');
    assert.equal(config.relay.destination_primary, '[::1]:25');
  });

  test('every problem is reported on its own line naming the key', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'config.yaml'),
      `smtp:\n  listen: "nowhere"\n  max_message_bytes: -1\n  bare_line_endings: maybe\nrelay:\n  destination_primary: "mx.example.com:99999"\n  timeout_seconds: soon\n  destination_primay: typo\n`,
    );
    const problems = await problemsOf(loadConfig({ cwd: dir, env: {} }));
    assert.deepEqual(problems, [
      'smtp.listen: expected "host:port" with an explicit port, got "nowhere"',
      'smtp.max_message_bytes: expected a positive whole number, got -1',
      'smtp.bare_line_endings: expected "normalize" or "reject", got "maybe"',
      'relay.destination_primary: expected a port between 1 and 65535, got "mx.example.com:99999"',
      'relay.timeout_seconds: expected a positive number, got "soon"',
      'relay.destination_primay: unknown key "destination_primay" (did you mean "destination_primary"?)',
    ]);
  });

  test('unknown keys suggest a close match at any depth, and only a close one', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'config.yaml'),
      `qeue: {}\nsmtp:\n  tls: { cert: a.pem, key: b.pem, kye: c }\n  frobnicate: 1\nrelay:\n  destination_primary: mx:25\nauth:\n  users: [{ user: a, password_hsh: x }]\n`,
    );
    assert.deepEqual(await problemsOf(loadConfig({ cwd: dir, env: {} })), [
      'smtp.tls.kye: unknown key "kye" (did you mean "key"?)',
      'smtp.frobnicate: unknown key "frobnicate"',
      'auth.users.0.password_hash: required',
      'auth.users.0.password_hsh: unknown key "password_hsh" (did you mean "password_hash"?)',
      'qeue: unknown key "qeue" (did you mean "queue"?)',
    ]);
  });

  test('an SMTP_DUP_ variable a typo away from a key is a problem (others may be the deployment\'s own); a bad value names its variable', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), SEED_YAML);
    const env = { SMTP_DUP_RELAY_DESTINATON_PRIMARY: 'x:25', SMTP_DUP_UPSTREAM_PASSWORD: 'secret', GOSMTP_DUP_FROM_SOURCE: '1' };
    assert.deepEqual(await problemsOf(loadConfig({ cwd: dir, env })), [
      'SMTP_DUP_RELAY_DESTINATON_PRIMARY: unknown environment variable (did you mean "SMTP_DUP_RELAY_DESTINATION_PRIMARY"?)',
    ]);
    assert.deepEqual(await problemsOf(loadConfig({ cwd: dir, env: { SMTP_DUP_RELAY_TIMEOUT_SECONDS: 'soon', SMTP_DUP_RELAY_DESTINATION_BACKUPS: 'a:25, b:0' } })), [
      'relay.destination_backups.1 (from SMTP_DUP_RELAY_DESTINATION_BACKUPS): expected a port between 1 and 65535, got "b:0"',
      'relay.timeout_seconds (from SMTP_DUP_RELAY_TIMEOUT_SECONDS): expected a positive number, got "soon"',
    ]);
  });

  test('a missing primary names the key and its environment variable', async (t) => {
    const dir = await tempDir(t);
    assert.deepEqual(await problemsOf(loadConfig({ cwd: dir, env: {} })), ['relay.destination_primary: required (or SMTP_DUP_RELAY_DESTINATION_PRIMARY)']);
  });

  test('a file that does not parse is one clear problem', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'broken.yaml'), 'relay: [unclosed\n');
    const [problem] = await problemsOf(loadConfig({ cwd: dir, file: 'broken.yaml', env: {} }));
    assert.match(problem!, /^cannot read .*broken\.yaml: unexpected end of the stream within a flow collection at line 2, column 1$/);
    await mkdir(join(dir, 'sub'));
    assert.deepEqual(await problemsOf(loadConfig({ cwd: dir, file: 'missing.yaml', env: {} })), [`--config: file not found: ${join(dir, 'missing.yaml')}`]);
  });

  test('destinations: host:port, [IPv6]:port, and clear errors', () => {
    assert.deepEqual(parseDestination('[::1]:2525'), { kind: 'smtp', host: '::1', port: 2525, label: '[::1]:2525' });
    assert.deepEqual(parseDestination('mx.example.com'), { kind: 'smtp', host: 'mx.example.com', port: 25, label: 'mx.example.com:25' });
    assert.deepEqual(parseDestination('maildir:/var/mail/../archive'), { kind: 'maildir', path: '/var/archive', label: 'maildir:/var/archive' });
    assert.match(String(parseDestination('::1:25')), /IPv6 addresses need brackets/);
    assert.match(String(parseDestination('host:0')), /port between 1 and 65535/);
  });
});
