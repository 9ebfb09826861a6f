/**
 * Reload (SIGHUP and `gosmtp-dup reload`): new transactions use the new configuration, the one in
 * flight finishes on the old, an invalid configuration changes nothing, no connection is dropped.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { BIN, startChildRouter } from './helpers/child-router.ts';
import { eventually, sink, tempDir } from './helpers/fixtures.ts';

describe('reload', () => {
  test('SIGHUP: new transactions route by the new config, the open one by the old; a bad config is refused', async (t) => {
    const dir = await tempDir(t);
    const a = await sink(t, { name: 'a' });
    const b = await sink(t, { name: 'b' });
    const base = { smtp: { listen: '127.0.0.1:0' }, queue: { dir: join(dir, 'spool') } };
    const child = await startChildRouter(t, dir, { ...base, relay: { destination_primary: a.label } });
    const file = String(child.lines.find((l) => l.msg === 'gosmtp-dup listening')!.config);

    // A transaction opened before the reload, on a connection that must survive it.
    const open = await SmtpTestClient.connect(child.port);
    t.after(() => open.destroy());
    await open.command('EHLO c');
    await open.command('MAIL FROM:<before@example.com>');
    await open.command('RCPT TO:<x@example.net>');

    await writeFile(file, stringify({ ...base, destinations: { next: b.label }, plugins: [{ failover: { destinations: ['next'] } }] }));
    child.proc.kill('SIGHUP');
    await child.waitForLine((l) => l.msg === 'configuration reloaded');

    assert.equal((await sendMail(child.port, { from: 'after@example.com', to: ['y@example.net'], body: sampleMessage('after') })).data?.code, 250);
    assert.equal((await open.data(sampleMessage('before'))).code, 250);
    // The old connection goes on, now with the new configuration.
    await open.command('MAIL FROM:<later@example.com>');
    await open.command('RCPT TO:<z@example.net>');
    assert.equal((await open.data(sampleMessage('later'))).code, 250);
    assert.deepEqual(a.messages.map((m) => m.from), ['before@example.com']);
    assert.deepEqual(b.messages.map((m) => m.from), ['after@example.com', 'later@example.com']);

    // An invalid configuration is logged and changes nothing.
    await writeFile(file, stringify({ ...base, plugins: [{ failover: { destinations: ['nowhere'] } }] }));
    child.proc.kill('SIGHUP');
    const failed = await child.waitForLine((l) => l.msg === 'reload failed: keeping the running configuration');
    assert.match(JSON.stringify(failed.problems), /unknown destination \\"nowhere\\"/);
    assert.equal((await sendMail(child.port, { from: 'still@example.com', to: ['y@example.net'], body: sampleMessage() })).data?.code, 250);
    assert.equal(b.messages.at(-1)!.from, 'still@example.com');
  });

  test('a SIGHUP while plugins are still being set up is applied once the router is up, not fatal', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    // setup waits until the test has sent its SIGHUP (a marker file), as a slow plugin would.
    await writeFile(
      join(dir, 'slow.ts'),
      `import { existsSync } from 'node:fs';\nexport default (o: { to: string; marker: string }) => ({ name: 'slow', async setup() { while (!existsSync(o.marker)) await new Promise((r) => setTimeout(r, 20)); }, mail: () => ({ kind: 'deliver', to: [o.to], copies: [] }) });\n`,
    );
    const marker = join(dir, 'hup-sent');
    const file = join(dir, 'config.yaml');
    await writeFile(file, stringify({ smtp: { listen: '127.0.0.1:0' }, queue: { dir: join(dir, 'spool') }, plugins: [{ './slow.ts': { to: primary.label, marker } }] }));
    const proc = spawn(process.execPath, [BIN, 'start', '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    t.after(() => proc.kill('SIGKILL'));
    let out = '';
    const seen = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const check = () => out.includes(text) && resolve();
        proc.stdout.on('data', (chunk: Buffer) => ((out += chunk.toString()), check()));
        proc.once('exit', (code, signal) => reject(new Error(`the router died (${code ?? signal}) before "${text}"`)));
        check();
      });
    // The CLI is loaded and reading its configuration once the spool lock exists.
    await eventually(() => existsSync(join(dir, 'spool', 'router.pid')), 20_000, 'router starting');
    proc.kill('SIGHUP');
    await writeFile(marker, 'sent');
    await seen('configuration reloaded');
    assert.equal(proc.exitCode, null, 'still running');
    assert.match(out, /gosmtp-dup listening/);
  });

  test('gosmtp-dup reload checks the config, then signals the running router', async (t) => {
    const dir = await tempDir(t);
    const a = await sink(t, { name: 'a' });
    const b = await sink(t, { name: 'b' });
    const base = { smtp: { listen: '127.0.0.1:0' }, queue: { dir: join(dir, 'spool') } };
    const child = await startChildRouter(t, dir, { ...base, relay: { destination_primary: a.label } });
    const file = String(child.lines.find((l) => l.msg === 'gosmtp-dup listening')!.config);
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [BIN, ...args], (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr })),
      );

    await writeFile(file, stringify({ ...base, relay: { destination_primary: 'not a destination' } }));
    const bad = await cli(['reload', '--config', file]);
    assert.equal(bad.code, 78);
    assert.match(bad.stderr, /relay\.destination_primary/);

    await writeFile(file, stringify({ ...base, relay: { destination_primary: b.label } }));
    const good = await cli(['reload', '--config', file]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, new RegExp(`asked gosmtp-dup \\(pid ${child.proc.pid}\\) to reload`));
    await child.waitForLine((l) => l.msg === 'configuration reloaded');
    await sendMail(child.port, { from: 'x@example.com', to: ['y@example.net'], body: sampleMessage() });
    assert.equal(b.messages.length, 1);
  });
  test('gosmtp-dup reload checks the file the router reloads: another --config is refused, TLS files are read', async (t) => {
    const dir = await tempDir(t);
    const a = await sink(t, { name: 'a' });
    const b = await sink(t, { name: 'b' });
    const base = { smtp: { listen: '127.0.0.1:0' }, queue: { dir: join(dir, 'spool') } };
    const child = await startChildRouter(t, dir, { ...base, relay: { destination_primary: a.label } });
    const routerFile = String(child.lines.find((l) => l.msg === 'gosmtp-dup listening')!.config);
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [BIN, ...args], (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr })),
      );

    // A valid file on the same spool, but not the one the router reads: before, this printed OK
    // and the router reloaded its own file instead.
    const other = join(dir, 'other.yaml');
    await writeFile(other, stringify({ ...base, relay: { destination_primary: b.label } }));
    const refused = await cli(['reload', '--config', other]);
    assert.equal(refused.code, 1, refused.stderr);
    assert.equal(refused.stderr, `gosmtp-dup: the router (pid ${child.proc.pid}) reloads ${routerFile}, not ${other}; use --config ${routerFile}, or restart the router with --config ${other}\n`);

    // The router's own file with a certificate it could not read: refused here, the router not signalled.
    await writeFile(routerFile, stringify({ ...base, smtp: { ...base.smtp, tls: { cert: join(dir, 'none.pem'), key: join(dir, 'none.pem') } }, relay: { destination_primary: b.label } }));
    const tls = await cli(['reload', '--config', routerFile]);
    assert.equal(tls.code, 78);
    assert.match(tls.stderr, /^ {2}smtp\.tls\.cert: cannot read .*none\.pem: ENOENT$/m);

    await sendMail(child.port, { from: 'x@example.com', to: ['y@example.net'], body: sampleMessage() });
    assert.equal(a.messages.length, 1, 'still the configuration it started with');
    assert.equal(b.messages.length, 0);
    assert.ok(!child.lines.some((l) => l.msg === 'configuration reloaded' || l.msg === 'reload failed: keeping the running configuration'), 'never signalled');
  });
});

describe('reload, in process', () => {
  test('settings that need a restart are reported on every reload until the router restarts', async (t) => {
    const { router } = await import('./helpers/fixtures.ts');
    const { validateConfig } = await import('../src/core/config/load.ts');
    const a = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: a.label } } });
    const next = validateConfig({ ...r.config, smtp: { ...r.config.smtp, max_errors: 3 }, plugins: undefined }, 'test');
    assert.deepEqual((await r.router.reload(next)).needsRestart, ['smtp.max_errors']);
    assert.deepEqual((await r.router.reload(next)).needsRestart, ['smtp.max_errors'], 'still not applied');
    assert.deepEqual((await r.router.reload(r.config)).needsRestart, []);
  });
});
