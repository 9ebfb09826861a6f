/**
 * Programmable routing from the user's side: a custom plugin in one TypeScript file, YAML and
 * TypeScript configs, plugins that fail, and every loader error named by its key.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { loadConfig } from '../src/core/config/load.ts';
import { startRouter } from '../src/core/router.ts';
import { definePlugin, deliver, reject, tempfail } from '../src/index.ts';
import { explain, sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { BIN, startChildRouter } from './helpers/child-router.ts';
import { capturingLogger, router, sink, tempDir } from './helpers/fixtures.ts';

const SRC = new URL('../src/index.ts', import.meta.url).pathname;

/** A plugin file as a user writes it: one file, no build step, state kept across messages. */
const CUSTOM_PLUGIN = `
import { writeFileSync } from 'node:fs';

interface Options { to: string; perSenderLimit: number; markers: string }

export default function limiter(options: Options) {
  const seen = new Map<string, number>();
  return {
    name: 'limiter',
    setup(ctx: { log: { info(o: object, m: string): void }; destination(ref: string): unknown }) {
      ctx.destination(options.to); // unknown names fail at start-up
      ctx.log.info({ limit: options.perSenderLimit }, 'limiter ready');
      writeFileSync(options.markers + '/setup', 'ok');
    },
    mail(ctx: { sender: string }) {
      const count = (seen.get(ctx.sender) ?? 0) + 1;
      seen.set(ctx.sender, count);
      if (count > options.perSenderLimit) {
        return { kind: 'refuse', reply: { code: 451, enhanced: '4.7.1', text: 'Sender over its limit, try later' } };
      }
      return { kind: 'deliver', to: [options.to], copies: [] };
    },
    close() {
      writeFileSync(options.markers + '/close', 'ok');
    },
  };
}
`;

function cli(args: string[], cwd: string): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd, timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('custom plugins', () => {
  test('one TypeScript file, loaded by path with options: long-lived state, setup, close, logger', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    await writeFile(join(dir, 'limiter.ts'), CUSTOM_PLUGIN);
    const capture = capturingLogger();
    const r = await router(t, {
      config: {
        destinations: { main: primary.label },
        plugins: [{ './limiter.ts': { to: 'main', perSenderLimit: 2, markers: dir } }],
      },
      baseDir: dir,
      logger: capture.logger,
    });
    const codes: number[] = [];
    for (let i = 0; i < 3; i++) codes.push((await sendMail(r.port, { from: 'busy@example.com', to: ['x@example.net'], body: sampleMessage(`${i}`) })).mail.code);
    assert.deepEqual(codes, [250, 250, 451]);
    assert.equal((await sendMail(r.port, { from: 'other@example.com', to: ['x@example.net'], body: sampleMessage('other') })).data?.code, 250);
    assert.equal(primary.messages.length, 3);
    assert.ok(capture.lines.some((l) => l.msg === 'limiter ready' && l.plugin === 'limiter'), 'the plugin got a logger');
    assert.ok(existsSync(join(dir, 'setup')));
    await r.close();
    assert.ok(existsSync(join(dir, 'close')), 'close ran at shutdown');
  });

  test('a plugin that throws is a 451 for that command; the session and the router go on', async (t) => {
    const primary = await sink(t);
    const r = await router(t, {
      plugins: [
        definePlugin({
          name: 'flaky',
          rcpt(ctx) {
            if (ctx.recipient.startsWith('boom')) throw new Error('database unreachable');
            return deliver({ to: primary.label });
          },
        }),
      ],
    });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    const boom = await client.command('RCPT TO:<boom@example.net>');
    assert.deepEqual([boom.code, boom.enhanced], [451, '4.3.0']);
    assert.doesNotMatch(boom.text, /database/, 'the cause goes to the log, not to the client');
    assert.equal((await client.command('RCPT TO:<fine@example.net>')).code, 250);
    assert.equal((await client.data(sampleMessage())).code, 250);
  });

  test('a plugin that never answers is a 451 within relay.timeout_seconds', async (t) => {
    const r = await router(t, {
      config: { relay: { timeout_seconds: 0.3 } },
      plugins: [definePlugin({ name: 'stuck', mail: () => new Promise(() => undefined) })],
    });
    const started = Date.now();
    const result = await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
    assert.equal(result.mail.code, 451);
    assert.ok(Date.now() - started < 3000);
  });

  test('a refusal\'s reply class is checked at run time: a tempfail never bounces, a refusal never says 2xx', async (t) => {
    // What a JavaScript plugin (or a cast) can hand over; TypeScript's types cannot stop it.
    assert.throws(() => tempfail('later', { code: 550 as 451 }), /tempfail\(\): reply code 550 is not a 4xx/);
    assert.throws(() => reject('no', { enhanced: '4.1.1' as '5.1.1' }), /does not match reply code 550/);
    const bad: Record<string, unknown> = {
      'permanent.example': { code: 250, text: 'fake success' },
      'multiline.example': { code: 550, text: 'no\r\n250 smuggled' },
      'mismatch.example': { code: 451, enhanced: '5.7.1', text: 'mixed classes' },
    };
    const r = await router(t, {
      plugins: [
        definePlugin({
          name: 'handmade',
          rcpt: (ctx) => ({ kind: 'refuse', reply: bad[ctx.recipient.split('@')[1]!] ?? { code: 550, enhanced: '5.7.1', text: 'Handmade no' } }) as never,
        }),
      ],
    });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    for (const domain of Object.keys(bad)) {
      const reply = await client.command(`RCPT TO:<x@${domain}>`);
      assert.deepEqual([reply.code, reply.enhanced], [451, '4.3.0'], domain);
    }
    const good = await client.command('RCPT TO:<x@fine.example>');
    assert.deepEqual([good.code, good.enhanced, good.text], [550, '5.7.1', 'Handmade no']);
  });

  test('a plugin\'s forgotten promise that rejects is logged; the router goes on serving', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    await writeFile(
      join(dir, 'stray.ts'),
      `export default (o: { to: string }) => ({ name: 'stray', mail() { void Promise.reject(new Error('notification failed')); return { kind: 'deliver', to: [o.to], copies: [] }; } });\n`,
    );
    const child = await startChildRouter(t, dir, { smtp: { listen: '127.0.0.1:0' }, queue: { dir: join(dir, 'spool') }, plugins: [{ './stray.ts': { to: primary.label } }] });
    for (const n of [1, 2]) {
      const result = await sendMail(child.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage(`${n}`) });
      assert.equal(result.data?.code, 250);
    }
    const logged = await child.waitForLine((l) => typeof l.msg === 'string' && l.msg.startsWith('unhandled promise rejection'));
    assert.match(String(logged.err), /notification failed/);
    assert.equal(child.proc.exitCode, null, 'still running');
    assert.equal(primary.messages.length, 2);
  });

  test('no plugin deciding is a 451 (fail closed), never a silent drop', async (t) => {
    const r = await router(t, { plugins: [definePlugin({ name: 'undecided', rcpt: () => undefined })] });
    const result = await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
    assert.deepEqual([result.rcpt[0]!.code, result.rcpt[0]!.enhanced], [451, '4.4.0']);
  });
});

describe('configuration of plugins', () => {
  test('YAML: built-ins by name with options, nested in route, over real sockets', async (t) => {
    const dir = await tempDir(t);
    const old = await sink(t, { name: 'old' });
    const next = await sink(t, { name: 'new' });
    const main = await sink(t, { name: 'main' });
    await writeFile(
      join(dir, 'config.yaml'),
      stringify({
        smtp: { listen: '127.0.0.1:0' },
        destinations: { old: old.label, new: next.label, main: main.label },
        plugins: [{ route: { rules: [{ recipient: '@example.com', use: { duplicate: { primary: 'old', backups: ['new'] } } }], default: { failover: { destinations: ['main'] } } } }],
        queue: { dir: join(dir, 'spool') },
        log: { level: 'silent' },
      }),
    );
    const { config, source } = await loadConfig({ cwd: dir, env: {} });
    const r = await startRouter({ config, source, baseDir: dir });
    t.after(() => r.close());
    await sendMail(r.address.port, { from: 'a@corp.example', to: ['x@example.com'], body: sampleMessage('yaml 1') });
    await sendMail(r.address.port, { from: 'a@corp.example', to: ['y@elsewhere.example'], body: sampleMessage('yaml 2') });
    await next.waitFor(1);
    assert.deepEqual([old.messages.length, next.messages.length, main.messages.length], [1, 1, 1]);
  });

  test('TypeScript: gosmtp-dup.config.ts with defineConfig and imported plugins', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'gosmtp-dup.config.ts'),
      `import { defineConfig, duplicate, failover, route } from ${JSON.stringify(SRC)};
const archive = process.env.NO_ARCHIVE ? false : undefined;
export default defineConfig({
  destinations: { old: 'old.example:25', new: 'new.example:25', main: 'main.example:25' },
  plugins: [
    archive,
    [route({ rules: [{ recipient: /@example\\.com$/, use: duplicate({ primary: 'old', backups: ['new'] }) }], default: failover({ destinations: ['main'] }) })],
  ],
});
`,
    );
    const { config } = await loadConfig({ cwd: dir, env: {} });
    const routes = await explain({ config: config as never }, { from: 'a@b.example', to: ['x@example.com', 'y@other.example'] });
    assert.deepEqual(
      routes.map((r) => r.route.kind === 'deliver' && r.route.to[0]!.label),
      ['old.example:25', 'main.example:25'],
    );
    const check = await cli(['check'], dir);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /plugins: route/);
  });

  const badConfigs: Array<[what: string, plugins: unknown, expected: RegExp, files?: Record<string, string>]> = [
    ['an unknown plugin name', ['nope'], /^plugins\[0\]: unknown plugin "nope" \(built-ins: duplicate, failover, round-robin, route/],
    ['a path that does not exist', ['./missing.ts'], /^plugins\[0\]: plugin file not found: .*missing\.ts$/],
    ['a module without a default export', ['./nodefault.ts'], /^plugins\[0\]: \.\/nodefault\.ts has no default export/, { 'nodefault.ts': 'export const x = 1;\n' }],
    ['a default export that is not a plugin', ['./number.ts'], /^plugins\[0\]: expected a plugin object, got 42/, { 'number.ts': 'export default 42;\n' }],
    ['a plugin with an unknown hook', ['./hooks.ts'], /^plugins\[0\] \(hooky\): unknown hook "data" \(hooks are setup, mail, rcpt, close\)/, { 'hooks.ts': "export default { name: 'hooky', mail() {}, data() {} };\n" }],
    ['a rule with an invalid RegExp', [{ route: { rules: [{ recipient: '/[a-/', use: { failover: { destinations: ['a.example:25'] } } }], default: { failover: { destinations: ['a.example:25'] } } } }], /^plugins\[0\]\.route: rules\[0\]: invalid regular expression \/\[a-\//],
    ['a route to an undefined destination', [{ route: { rules: [], default: { duplicate: { primary: 'nowhere' } } } }], /^plugins\[0\] \(route\): unknown destination "nowhere"/],
    ['bad options for a built-in', [{ failover: { destinations: [] } }], /^plugins\[0\]\.failover\.destinations: /],
    ['a rule without a strategy', [{ route: { rules: [{ recipient: '@a.example' }], default: 'failover' } }], /^plugins\[0\]\.route\.rules\.0\.use: required/],
  ];
  for (const [what, plugins, expected, files] of badConfigs) {
    test(`${what} is a configuration error naming the key, before listening`, async (t) => {
      const dir = await tempDir(t);
      for (const [name, text] of Object.entries(files ?? {})) await writeFile(join(dir, name), text);
      await writeFile(join(dir, 'config.yaml'), stringify({ plugins, queue: { dir: join(dir, 'spool') } }));
      const run = await cli(['start'], dir);
      assert.equal(run.code, 78, run.stderr);
      const problem = run.stderr.split('\n')[1]?.trim() ?? '';
      assert.match(problem, expected);
      assert.doesNotMatch(run.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(run.stdout, '', 'nothing started');
    });
  }

  test('the seed relay: block and plugins together: relay (duplicate) routes what the plugins leave', async () => {
    const newOnly = definePlugin({ name: 'new-only', rcpt: (ctx) => (ctx.recipient.endsWith('@new.example') ? deliver({ to: 'new.example:25' }) : undefined) });
    const routes = await explain(
      { config: { relay: { destination_primary: 'legacy.example:25', destination_backups: ['copy.example:25'] }, plugins: [newOnly] } },
      { from: 'a@b.example', to: ['x@new.example', 'y@old.example'] },
    );
    assert.deepEqual(
      routes.map((r) => [r.route.decidedBy, r.route.kind === 'deliver' && r.route.to[0]!.label]),
      [
        ['new-only', 'new.example:25'],
        ['duplicate', 'legacy.example:25'],
      ],
    );
  });
});

describe('gosmtp-dup route', () => {
  test('prints each recipient, its destinations, and the rule that decided', async (t) => {
    const dir = await tempDir(t);
    await writeFile(
      join(dir, 'config.yaml'),
      stringify({
        destinations: { old: 'old.example:25', new: 'new.example:25', a: 'a.example:25', b: 'b.example:25' },
        plugins: [{ route: { rules: [{ recipient: '@example.com', use: { duplicate: { primary: 'old', backups: ['new'] } } }], default: { failover: { destinations: ['a', 'b'] } } } }],
      }),
    );
    const run = await cli(['route', '--from', 'x@corp.example', '--to', 'u@example.com', '--to', 'w@other.example'], dir);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /<u@example\.com>\s+deliver to old\.example:25 \(synchronous\); copies to new\.example:25 \(asynchronous, spooled\)\n\s+decided by route: rule 1 \(recipient @example\.com\) -> duplicate/);
    assert.match(run.stdout, /<w@other\.example>\s+deliver to a\.example:25, then b\.example:25 \(synchronous, failover in this order\)\n\s+decided by route: default -> failover\n\s+routes elsewhere than the first recipient: answered 452 4\.5\.3/);
    const json = JSON.parse((await cli(['route', '--json', '--from', '<>', '--to', 'u@example.com'], dir)).stdout);
    assert.equal(json[0].route.decidedBy, 'route: rule 1 (recipient @example.com) -> duplicate');
    const usage = await cli(['route', '--from', 'x@y.z'], dir);
    assert.equal(usage.code, 64);
  });
});
