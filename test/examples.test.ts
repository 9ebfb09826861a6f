/**
 * The examples under examples/ work as documented: each config is loaded as a user would load it
 * (with its destinations pointed at local capture servers) and mail is sent through it.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test, type TestContext } from 'node:test';
import { loadConfig } from '../src/core/config/load.ts';
import { startRouter } from '../src/core/router.ts';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { sink, tempDir } from './helpers/fixtures.ts';
import { silentLogger } from '../src/core/logger.ts';

const EXAMPLES = new URL('../examples/', import.meta.url).pathname;

/** Loads an example with the given environment, starts it on a free port with a temporary spool. */
async function startExample(t: TestContext, file: string, env: Record<string, string>, overrides: Record<string, unknown> = {}) {
  const saved = { ...process.env };
  Object.assign(process.env, env);
  t.after(() => {
    for (const key of Object.keys(env)) delete process.env[key];
    Object.assign(process.env, saved);
  });
  const { config, source } = await loadConfig({ file: join(EXAMPLES, file), env: {} });
  const dir = await tempDir(t);
  const router = await startRouter({
    config: { ...config, smtp: { ...config.smtp, listen: '127.0.0.1:0' }, queue: { ...config.queue, dir: join(dir, 'spool'), retry_initial_seconds: 0.2 }, ...overrides },
    source,
    baseDir: join(EXAMPLES, file, '..'),
    logger: silentLogger(),
  });
  t.after(() => router.close());
  return router.address.port;
}

describe('examples', () => {
  test('route-by-sender: each department through its own upstream, the rest through main', async (t) => {
    const sales = await sink(t, { name: 'sales' });
    const support = await sink(t, { name: 'support' });
    const main = await sink(t, { name: 'main' });
    const port = await startExample(t, 'route-by-sender/gosmtp-dup.config.ts', { SALES_RELAY: sales.label, SUPPORT_RELAY: support.label, MAIN_RELAY: main.label, FALLBACK_RELAY: main.label });
    for (const from of ['rep@sales.example.com', 'helpdesk@example.com', 'ceo@example.com']) {
      assert.equal((await sendMail(port, { from, to: ['customer@client.example'], body: sampleMessage(from) })).data?.code, 250);
    }
    assert.deepEqual([sales, support, main].map((s) => s.messages.map((m) => m.from)), [['rep@sales.example.com'], ['helpdesk@example.com'], ['ceo@example.com']]);
  });

  test('archive-one-domain: a durable copy of legal mail on the archive, nothing else archived', async (t) => {
    const main = await sink(t, { name: 'main' });
    const archive = await sink(t, { name: 'archive' });
    const { config } = await loadConfig({ file: join(EXAMPLES, 'archive-one-domain/gosmtp-dup.config.yaml'), env: {} });
    const port = await startExample(t, 'archive-one-domain/gosmtp-dup.config.yaml', {}, { destinations: { ...config.destinations, main: main.label, backup_mx: main.label, archive: archive.label } });
    await sendMail(port, { from: 'a@corp.example', to: ['counsel@legal.example.com'], body: sampleMessage('legal') });
    await sendMail(port, { from: 'a@corp.example', to: ['friend@other.example'], body: sampleMessage('other') });
    const [copy] = await archive.waitFor(1);
    assert.deepEqual(copy!.to, ['counsel@legal.example.com']);
    assert.equal(main.messages.length, 2);
    assert.equal(archive.messages.length, 1);
  });

  test('custom-plugin: business hours pick the desk or on-call, with a ticket copy; the relay block takes the rest', async (t) => {
    const desk = await sink(t, { name: 'desk' });
    const oncall = await sink(t, { name: 'oncall' });
    const tickets = await sink(t, { name: 'tickets' });
    const main = await sink(t, { name: 'main' });
    const port = await startExample(t, 'custom-plugin/gosmtp-dup.config.ts', {
      DESK: desk.label,
      ONCALL: oncall.label,
      TICKETS: tickets.label,
      MAIN: main.label,
      FAKE_NOW: '2026-11-23T22:00:00Z',
    });
    await sendMail(port, { from: 'user@client.example', to: ['helpdesk@example.com'], body: sampleMessage('night') });
    await sendMail(port, { from: 'user@client.example', to: ['sales@example.com'], body: sampleMessage('other') });
    await tickets.waitFor(1);
    assert.deepEqual([desk.messages.length, oncall.messages.length, main.messages.length], [0, 1, 1]);
  });
});
