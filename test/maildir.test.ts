/**
 * Maildir destinations (`maildir:/path`): an archive copy of every message, written atomically.
 */
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, validateConfig } from '../src/core/config/load.ts';
import { definePlugin, deliver } from '../src/index.ts';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { eventually, router, sink, tempDir } from './helpers/fixtures.ts';

describe('maildir destinations', () => {
  test('as a backup: each accepted message lands in new/, whole, with its envelope on record', async (t) => {
    const dir = await tempDir(t);
    const archive = join(dir, 'archive');
    const primary = await sink(t);
    const r = await router(t, { config: { destinations: { archive: `maildir:${archive}` }, relay: { destination_primary: primary.label, destination_backups: ['maildir:' + archive] } } });
    const body = sampleMessage('archived');
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<alice@example.com>');
    await client.command('RCPT TO:<bob@example.net>');
    await client.command('RCPT TO:<hidden@example.net>');
    assert.equal((await client.data(body)).code, 250);
    await eventually(async () => (await readdir(join(archive, 'new')).catch(() => [])).length === 1, 5000, 'archived file');
    const [name] = await readdir(join(archive, 'new'));
    const stored = await readFile(join(archive, 'new', name!), 'utf8');
    assert.equal(stored, `Return-Path: <alice@example.com>\r\nX-Original-To: bob@example.net\r\nX-Original-To: hidden@example.net\r\n${body}`);
    assert.deepEqual(await readdir(join(archive, 'tmp')), []);
  });

  test('as the synchronous destination: 250 only once the file is in new/', async (t) => {
    const dir = await tempDir(t);
    const archive = join(dir, 'sync');
    const r = await router(t, { plugins: [definePlugin({ name: 'to-maildir', mail: () => deliver({ to: `maildir:${archive}` }) })] });
    const result = await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage('sync') });
    assert.equal(result.data?.code, 250);
    assert.match(result.data!.text, /^Ok: stored as \d+\./);
    assert.equal((await readdir(join(archive, 'new'))).length, 1);
  });

  test('a relative Maildir path is a configuration error', () => {
    assert.throws(
      () => validateConfig({ relay: { destination_primary: 'mx.example.com:25', destination_backups: ['maildir:archive'] } }, 't'),
      (err) => err instanceof ConfigError && /relay\.destination_backups\.0: expected an absolute path after "maildir:"/.test(err.problems[0]!),
    );
  });
});
