/**
 * The command line as a user meets it: help, version, check, queue tools, demo, and clean errors.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { selfSigned } from './helpers/certs.ts';
import { BIN } from './helpers/child-router.ts';
import { rawServer, router, sink, tempDir } from './helpers/fixtures.ts';

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `code` is -1 when it did not exit by itself (killed at `timeout`), so that a hang never passes for a failure exit. */
function cli(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Run> {
  return new Promise((resolve) => {
    const env = { ...process.env, ...options.env };
    execFile(process.execPath, [BIN, ...args], { cwd: options.cwd, env, timeout: options.timeout ?? 60_000 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof err.code === 'number' ? err.code : -1;
      resolve({ code, stdout, stderr });
    });
  });
}

describe('cli', () => {
  test('--help and --version', async () => {
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /gosmtp-dup start \[--config FILE\]/);
    assert.match(help.stdout, /gosmtp-dup queue list/);
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'));
    const version = await cli(['--version']);
    assert.equal(version.stdout.trim(), `gosmtp-dup ${pkg.version}`);
  });

  test('the prebuilt bundle and the sources behave alike', async () => {
    const fromBundle = await cli(['--version']);
    const fromSource = await cli(['--version'], { env: { GOSMTP_DUP_FROM_SOURCE: '1' } });
    assert.equal(fromBundle.stdout, fromSource.stdout);
    assert.equal(fromBundle.code, 0);
  });

  test('unknown commands and options are usage errors', async () => {
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.code, 64);
    assert.match(unknown.stderr, /unknown command "frobnicate"/);
    const option = await cli(['start', '--bogus']);
    assert.equal(option.code, 64);
    assert.match(option.stderr, /--bogus/);
  });

  test('a queue or demo command called wrongly is a usage error (64) that touches no spool', async (t) => {
    const dir = await tempDir(t);
    const env = { SMTP_DUP_RELAY_DESTINATION_PRIMARY: 'mx.example.com:25', SMTP_DUP_QUEUE_DIR: join(dir, 'spool') };
    const cases: Array<[string[], RegExp]> = [
      [['queue'], /queue: which action\? usage: gosmtp-dup queue list/],
      [['queue', 'bogus'], /queue: unknown action "bogus"; usage: gosmtp-dup queue list/],
      [['queue', 'delete'], /queue delete: which message\? usage: gosmtp-dup queue list/],
      [['demo', '--port', 'abc'], /--port: expected a port number \(0-65535\), got "abc"/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(args, { cwd: dir, env });
      assert.equal(run.code, 64, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message);
      assert.equal(run.stderr.trim().split('\n').length, 1, 'one short line');
    }
    assert.deepEqual(await readdir(dir), [], 'no spool and no demo folder were created');
  });

  test('check prints the resolved configuration with defaults', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), 'relay:\n  destination_primary: mx.example.com:25\n');
    const run = await cli(['check'], { cwd: dir, env: { SMTP_DUP_RELAY_TIMEOUT_SECONDS: '7' } });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /configuration OK/);
    assert.match(run.stdout, /timeout_seconds: 7/);
    assert.match(run.stdout, /max_message_bytes: 10485760/);
  });

  test('a bad configuration exits non-zero before listening, one line per key, no stack trace', async (t) => {
    const dir = await tempDir(t);
    await writeFile(join(dir, 'config.yaml'), stringify({ relay: { destination_primary: 'mx:25', timeout_seconds: 'soon' } }));
    const run = await cli(['start'], { cwd: dir });
    assert.equal(run.code, 78);
    assert.equal(run.stderr.trim().split('\n').at(-1), '  relay.timeout_seconds: expected a positive number, got "soon"');
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(run.stdout, '', 'nothing was started, not even the log');
  });

  test('a config that does not parse says what is wrong and where (YAML, JSON, TypeScript)', async (t) => {
    const dir = await tempDir(t);
    const files: Array<[string, string, string]> = [
      ['bad.yaml', 'relay:\n  destination_primary: mx.example.com:25\n   timeout_seconds: 5\n', 'bad indentation of a mapping entry at line 3, column 19'],
      ['bad.json', '{\n  "relay": {\n    "destination_primary": "mx.example.com:25",\n  }\n}\n', 'Expected double-quoted property name at line 4, column 3'],
      ['tru.json', '{ "smtp": { "require_tls": tru} }\n', `Unexpected token '}'`],
      ['bad.ts', 'const port: number = ;\nexport default { relay: { destination_primary: `mx.example.com:${port}` } };\n', 'Unexpected ";" at line 1, column 22'],
    ];
    for (const [name, text, problem] of files) {
      await writeFile(join(dir, name), text);
      const run = await cli(['check', '--config', name], { cwd: dir });
      assert.equal(run.code, 78, run.stderr);
      assert.equal(run.stderr, `gosmtp-dup: invalid configuration (${join(dir, name)}):\n  cannot read ${join(dir, name)}: ${problem}\n`);
    }
  });

  test('check refuses smtp.tls files that start would refuse, naming the key, and says the same as start', async (t) => {
    const dir = await tempDir(t);
    const good = await selfSigned(dir);
    const junk = join(dir, 'junk.pem');
    await writeFile(junk, 'not a certificate\n');
    const cases: Array<[{ cert: string; key: string }, RegExp]> = [
      [{ cert: join(dir, 'missing-cert.pem'), key: good.key }, /^ {2}smtp\.tls\.cert: cannot read .*missing-cert\.pem: ENOENT$/m],
      [{ cert: good.cert, key: join(dir, 'missing-key.pem') }, /^ {2}smtp\.tls\.key: cannot read .*missing-key\.pem: ENOENT$/m],
      [{ cert: junk, key: good.key }, /^ {2}smtp\.tls\.cert: .*junk\.pem is not a PEM certificate/m],
      [{ cert: good.cert, key: junk }, /^ {2}smtp\.tls\.key: .*junk\.pem is not a PEM private key/m],
    ];
    const file = join(dir, 'config.yaml');
    for (const [tls, problem] of cases) {
      await writeFile(file, stringify({ smtp: { listen: '127.0.0.1:0', tls }, relay: { destination_primary: 'mx:25' }, queue: { dir: join(dir, 'q') } }));
      const check = await cli(['check', '--config', file]);
      assert.equal(check.code, 78, check.stderr);
      assert.match(check.stderr, new RegExp(`^gosmtp-dup: invalid configuration \\(${file.replace(/[.]/g, '\\.')}\\):\n`));
      assert.match(check.stderr, problem);
      const start = await cli(['start', '--config', file], { timeout: 20_000 });
      assert.equal(start.code, 78, start.stderr);
      assert.equal(start.stderr, check.stderr, 'check says what start says');
    }
  });

  test('unknown keys and SMTP_DUP_ variables get a "did you mean"; a bad variable is named, not the file', async (t) => {
    const dir = await tempDir(t);
    const file = join(dir, 'config.yaml');
    await writeFile(file, 'relay:\n  destination_primray: mx.example.com:25\n');
    const typo = await cli(['check', '--config', file], { env: { SMTP_DUP_RELAY_DESTINATION_PRIMARY: 'mx:25' } });
    assert.equal(typo.code, 78);
    assert.equal(typo.stderr, `gosmtp-dup: invalid configuration (${file}):\n  relay.destination_primray: unknown key "destination_primray" (did you mean "destination_primary"?)\n`);

    await writeFile(file, 'relay:\n  destination_primary: mx.example.com:25\n');
    const variable = await cli(['check', '--config', file], { env: { SMTP_DUP_RELAY_DESTINATON_PRIMARY: 'mx:25' } });
    assert.equal(variable.code, 78);
    assert.equal(
      variable.stderr,
      `gosmtp-dup: invalid configuration (${file}):\n  SMTP_DUP_RELAY_DESTINATON_PRIMARY: unknown environment variable (did you mean "SMTP_DUP_RELAY_DESTINATION_PRIMARY"?)\n`,
    );

    const value = await cli(['check', '--config', file], { env: { SMTP_DUP_RELAY_TIMEOUT_SECONDS: 'soon' } });
    assert.equal(value.code, 78);
    assert.match(value.stderr, /^ {2}relay\.timeout_seconds \(from SMTP_DUP_RELAY_TIMEOUT_SECONDS\): expected a positive number, got "soon"$/m);

    // The project's own variables that are not keys (bin/gosmtp-dup.mjs) are not problems.
    assert.equal((await cli(['check', '--config', file], { env: { GOSMTP_DUP_FROM_SOURCE: '1' } })).code, 0);
  });

  test('queue list, report and check on a spool that does not exist say so and create nothing', async (t) => {
    const dir = await tempDir(t);
    const queueDir = join(dir, 'no-such-spool');
    const file = join(dir, 'config.yaml');
    await writeFile(file, stringify({ relay: { destination_primary: 'mx:25' }, queue: { dir: queueDir } }));
    const listed = await cli(['queue', 'list', '--config', file]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.equal(listed.stdout, `queue is empty: no spool at ${queueDir}\n`);
    assert.deepEqual(JSON.parse((await cli(['queue', 'list', '--json', '--config', file])).stdout), { pending: [], dead: [] });
    const deleted = await cli(['queue', 'delete', 'abc', '--config', file]);
    assert.equal(deleted.code, 1);
    assert.match(deleted.stderr, /no message abc in the queue: no spool at/);
    assert.equal((await cli(['check', '--config', file])).code, 0);
    const report = await cli(['report', '--config', file]);
    assert.equal(report.code, 0, report.stderr);
    assert.equal(report.stdout, `gosmtp-dup migration report: no spool at ${queueDir}, nothing recorded\n`);
    assert.deepEqual(JSON.parse((await cli(['report', '--json', '--config', file])).stdout).destinations, []);
    assert.deepEqual(await readdir(dir), ['config.yaml'], 'no spool was created');
  });

  test('a port in use is one clear line and a non-zero exit', async (t) => {
    const dir = await tempDir(t);
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    t.after(() => busy.close());
    const port = (busy.address() as net.AddressInfo).port;
    await writeFile(join(dir, 'config.yaml'), stringify({ smtp: { listen: `127.0.0.1:${port}` }, relay: { destination_primary: 'mx:25' }, queue: { dir: join(dir, 'q') } }));
    const run = await cli(['start'], { cwd: dir });
    assert.equal(run.code, 1);
    assert.match(run.stderr, new RegExp(`gosmtp-dup: cannot listen on 127\\.0\\.0\\.1:${port}: .*EADDRINUSE`));
    assert.doesNotMatch(run.stderr, /\n\s+at /);
  });

  test('queue list, retry, delete and flush act on the spool', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const placeholder = await rawServer(t, 'silent');
    const backupPort = placeholder.port;
    await placeholder.close();
    const queueDir = join(dir, 'spool');
    const configFile = join(dir, 'config.yaml');
    const config = { relay: { destination_primary: primary.label, destination_backups: [`127.0.0.1:${backupPort}`], timeout_seconds: 1 }, queue: { dir: queueDir, retry_initial_seconds: 300 } };
    await writeFile(configFile, stringify(config));
    // A router takes two messages whose copies cannot be delivered yet, then stops.
    const r = await router(t, { config: { ...config, queue: { ...config.queue } } });
    for (const subject of ['one', 'two']) await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage(subject) });
    await r.close();

    const listed = await cli(['queue', 'list', '--config', configFile]);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, new RegExp(`127\\.0\\.0\\.1:${backupPort}: 2 pending`));
    const json = JSON.parse((await cli(['queue', 'list', '--json', '--config', configFile])).stdout);
    assert.equal(json.pending.length, 2);
    const [first, second] = json.pending;

    const deleted = await cli(['queue', 'delete', first.id, '--config', configFile]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal((await cli(['queue', 'delete', first.id, '--config', configFile])).code, 1);

    const retried = await cli(['queue', 'retry', '--config', configFile]);
    assert.match(retried.stdout, /1 copy due now/);
    assert.match(JSON.parse((await cli(['queue', 'list', '--json', '--config', configFile])).stdout).pending[0].nextAttempt, /^now/);

    const backup = await sink(t, { port: backupPort });
    const flushed = await cli(['queue', 'flush', '--config', configFile]);
    assert.equal(flushed.code, 0, flushed.stderr);
    assert.match(flushed.stdout, /attempted 1 copy: 1 finished, 0 still pending/);
    assert.equal(backup.messages.length, 1);
    assert.match(backup.messages[0]!.body.toString(), /Subject: two/);
    assert.notEqual(second.id, first.id);
    assert.match((await cli(['queue', 'list', '--config', configFile])).stdout, /queue is empty/);
  });

  test('hash-password reads the password from standard input and prints a verifiable hash', async () => {
    const { verifyPassword } = await import('../src/core/auth/password.ts');
    const hash = await new Promise<string>((resolve, reject) => {
      const child = execFile(process.execPath, [BIN, 'hash-password'], (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
      child.stdin!.end('s3cret\n');
    });
    assert.match(hash, /^scrypt\$16384\$8\$1\$/);
    assert.equal(await verifyPassword('s3cret', hash), true);
    assert.equal(await verifyPassword('s3cret\n', hash), false);
  });

  test('demo --once: router, three capture servers, one message in each folder', async (t) => {
    const dir = await tempDir(t);
    const run = await cli(['demo', '--once', '--port', '0'], { cwd: dir });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /sample message sent: 250/);
    for (const name of ['primary', 'backup-1', 'backup-2']) {
      const files = (await readdir(join(dir, 'gosmtp-dup-demo', name))).filter((f) => f.endsWith('.eml'));
      assert.equal(files.length, 1, name);
      assert.match(await readFile(join(dir, 'gosmtp-dup-demo', name, files[0]!), 'utf8'), /Subject: Hello through gosmtp-dup/);
    }
    assert.ok(existsSync(join(dir, 'gosmtp-dup-demo', 'queue')));
  });

  test('demo with its port taken says so and exits at once, capture servers closed', async (t) => {
    const dir = await tempDir(t);
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    t.after(() => busy.close());
    const port = (busy.address() as net.AddressInfo).port;
    // Before the fix the capture servers kept it running: killed at the timeout, code -1.
    const run = await cli(['demo', '--once', '--port', String(port)], { cwd: dir, timeout: 20_000 });
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, new RegExp(`^gosmtp-dup: cannot listen on 127\\.0\\.0\\.1:${port} \\(--port\\): .*EADDRINUSE`));
    assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
  });
});
