/**
 * The `duplicate` plugin: its decision, and the whole job end to end through the router.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../../src/core/config/load.ts';
import { explain, sampleMessage, sendMail } from '../../../src/testkit/index.ts';
import { router, sink } from '../../../test/helpers/fixtures.ts';
import { duplicate } from '../index.ts';

describe('duplicate plugin', () => {
  test('decides at MAIL FROM: primary synchronous, backups as copies, names resolved', async () => {
    const routes = await explain(
      { config: { destinations: { old: 'old.example.com:25' } }, plugins: [duplicate({ primary: 'old', backups: ['new.example.com:2525', '[::1]:25'] })] },
      { from: 'a@example.com', to: ['b@example.net', 'c@example.org'] },
    );
    for (const { route, separateTransaction } of routes) {
      assert.equal(route.kind, 'deliver');
      assert.equal(separateTransaction, false);
      if (route.kind !== 'deliver') continue;
      assert.deepEqual(route.to.map((d) => d.label), ['old.example.com:25']);
      assert.deepEqual(route.copies.map((d) => d.label), ['new.example.com:2525', '[::1]:25']);
      assert.equal(route.decidedBy, 'duplicate');
    }
  });

  test('an unknown destination name is a configuration error at start-up', async () => {
    await assert.rejects(
      explain({ plugins: [duplicate({ primary: 'nowhere' })] }, { from: '', to: ['x@example.net'] }),
      (err) => err instanceof ConfigError && /plugins\[0\] \(duplicate\): unknown destination "nowhere"/.test(err.problems[0]!),
    );
  });

  test('given as a plugin object, it drives the router like the relay: block', async (t) => {
    const primary = await sink(t, { name: 'old' });
    const backup = await sink(t, { name: 'new' });
    const r = await router(t, { plugins: [duplicate({ primary: primary.label, backups: [backup.label] })] });
    const body = sampleMessage('migration');
    assert.equal((await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body })).data?.code, 250);
    const [copy] = await backup.waitFor(1);
    assert.equal(copy!.body.toString(), body);
    assert.equal(primary.messages[0]!.body.toString(), body);
  });
});
