/**
 * The `duplicate` plugin: its decision, and the whole job end to end through the router.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail } from '../../../src/testkit/index.ts';
import { router, sink } from '../../../test/helpers/fixtures.ts';
import { duplicate } from '../index.ts';

describe('duplicate plugin', () => {
  test('decides at MAIL FROM: primary synchronous, backups as copies', async () => {
    const plugin = duplicate({ primary: 'old.example.com:25', backups: ['new.example.com:2525', '[::1]:25'] });
    const decision = await plugin.mail!({} as never);
    assert.equal(decision?.kind, 'deliver');
    assert.deepEqual(
      decision?.kind === 'deliver' && [decision.to.map((d) => d.label), decision.copies.map((d) => d.label), decision.decidedBy],
      [['old.example.com:25'], ['new.example.com:2525', '[::1]:25'], 'duplicate'],
    );
  });

  test('rejects an invalid destination when it is created, not per message', () => {
    assert.throws(() => duplicate({ primary: 'bad host:25' }), /invalid destination "bad host:25"/);
  });

  test('given as a plugin object, it drives the router like the relay: block', async (t) => {
    const primary = await sink(t, { name: 'old' });
    const backup = await sink(t, { name: 'new' });
    const r = await router(t, {
      config: { relay: { destination_primary: '127.0.0.1:9' } }, // replaced by the plugins below
      plugins: [duplicate({ primary: primary.label, backups: [backup.label] })],
    });
    const body = sampleMessage('migration');
    assert.equal((await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body })).data?.code, 250);
    const [copy] = await backup.waitFor(1);
    assert.equal(copy!.body.toString(), body);
    assert.equal(primary.messages[0]!.body.toString(), body);
  });
});
