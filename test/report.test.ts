/**
 * The migration report: does the new server accept what the old one accepts?
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { Journal } from '../src/core/report/journal.ts';
import { BIN } from './helpers/child-router.ts';
import { eventually, router, sink, tempDir } from './helpers/fixtures.ts';

describe('migration report', () => {
  test('counts per destination and lists the messages where the new server disagreed', async (t) => {
    const dir = await tempDir(t);
    const old = await sink(t, { name: 'old', behaviour: { rcpt: (to) => (to.startsWith('gone') ? { code: 550, enhanced: '5.1.1', text: 'unknown at old' } : undefined) } });
    let deferOnce = true;
    const next = await sink(t, {
      name: 'new',
      behaviour: {
        rcpt: (to) => (to.startsWith('legacy') ? { code: 550, enhanced: '5.1.1', text: 'no such mailbox at new' } : undefined),
        data: () => {
          if (!deferOnce) return undefined;
          deferOnce = false;
          return { code: 451, enhanced: '4.3.0', text: 'warming up' };
        },
      },
    });
    const queueDir = join(dir, 'spool');
    const config = { relay: { destination_primary: old.label, destination_backups: [next.label] }, queue: { dir: queueDir, retry_initial_seconds: 0.1 } };
    const r = await router(t, { config });
    for (const to of ['a@example.com', 'b@example.com', 'legacy-only@example.com', 'gone@example.com']) {
      await sendMail(r.port, { from: 'sender@example.org', to: [to], body: sampleMessage(to) });
    }
    await eventually(() => r.router.spool.pending().length === 0, 10_000, 'copies settled');
    await r.close();

    const configFile = join(dir, 'config.yaml');
    await writeFile(configFile, stringify(config));
    const run = (args: string[]) =>
      new Promise<string>((resolve, reject) => execFile(process.execPath, [BIN, ...args, '--config', configFile], (err, stdout, stderr) => (err ? reject(new Error(stderr)) : resolve(stdout))));
    const report = JSON.parse(await run(['report', '--json']));
    const row = (kind: string, destination: string) => report.destinations.find((d: { kind: string; destination: string }) => d.kind === kind && d.destination === destination);
    assert.deepEqual(row('sync', old.label), { destination: old.label, kind: 'sync', accepted: 3, deferred: 0, rejected: 0 });
    assert.deepEqual(row('copy', next.label), { destination: next.label, kind: 'copy', accepted: 2, deferred: 1, rejected: 1 });
    assert.equal(report.disagreements.length, 1);
    assert.deepEqual(report.disagreements[0].recipients.map((x: { address: string }) => x.address), ['legacy-only@example.com']);
    assert.match(report.disagreements[0].reason, /550 5\.1\.1 no such mailbox at new/);

    const text = await run(['report']);
    assert.match(text, new RegExp(`${next.label}: accepted 2 of 3 messages the synchronous side accepted \\(66\\.7%\\), refused 1 for good`));
    assert.match(text, /Disagreements \(accepted synchronously, refused for good by a copy destination\): 1/);
    assert.match(text, /<legacy-only@example\.com>/);
    assert.match(text, /Pending copies: 0/);
  });

  test('a client that leaves mid-message is not counted against the primary', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const queueDir = join(dir, 'spool');
    const config = { relay: { destination_primary: primary.label }, queue: { dir: queueDir } };
    const r = await router(t, { config });
    const leaver = await SmtpTestClient.connect(r.port);
    await leaver.command('EHLO leaver');
    await leaver.command('MAIL FROM:<a@example.org>');
    await leaver.command('RCPT TO:<b@example.com>');
    assert.equal((await leaver.command('DATA')).code, 354);
    leaver.write('Subject: half\r\n\r\nthe first half of a mess');
    leaver.destroy();
    await sendMail(r.port, { from: 'a@example.org', to: ['c@example.com'], body: sampleMessage('whole') });
    await r.close();
    assert.equal(primary.messages.length, 1);
    const configFile = join(dir, 'config.yaml');
    await writeFile(configFile, stringify(config));
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [BIN, 'report', '--json', '--config', configFile], (err, out, stderr) => (err ? reject(new Error(stderr)) : resolve(out))),
    );
    const sync = JSON.parse(stdout).destinations.find((d: { kind: string }) => d.kind === 'sync');
    assert.deepEqual(sync, { destination: primary.label, kind: 'sync', accepted: 1, deferred: 0, rejected: 0 });
  });

  test('journal lines are written in batches, without waiting for the router to stop', async (t) => {
    const dir = await tempDir(t);
    const journal = new Journal(dir);
    t.after(() => journal.close());
    for (let i = 0; i < 3; i++) journal.delivery({ id: `Q${i}`, destination: 'mx:25', kind: 'sync', outcome: 'delivered' });
    const file = join(dir, 'journal', `${new Date().toISOString().slice(0, 10)}.jsonl`);
    const lines = async () => (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);
    await eventually(async () => (await lines()).length === 3, 5000, 'the batch on disk');
    assert.deepEqual((await lines()).map((l) => JSON.parse(l).id), ['Q0', 'Q1', 'Q2']);
  });

  test('journal lines still waiting for their batch are written when the process exits', async (t) => {
    const dir = await tempDir(t);
    const journal = new URL('../src/core/report/journal.ts', import.meta.url).pathname;
    const script = `import('${journal}').then(({ Journal }) => { new Journal(process.argv[1]).delivery({ id: 'LAST', destination: 'mx:25', kind: 'copy', outcome: 'delivered' }); process.exit(0); })`;
    await new Promise<void>((resolve, reject) => execFile(process.execPath, ['--import', 'tsx', '-e', script, dir], (err) => (err ? reject(err) : resolve())));
    const text = await readFile(join(dir, 'journal', `${new Date().toISOString().slice(0, 10)}.jsonl`), 'utf8');
    assert.equal(JSON.parse(text.trim()).id, 'LAST');
  });
});
