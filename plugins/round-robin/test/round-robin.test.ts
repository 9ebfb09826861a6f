/**
 * `round-robin`: true rotation, weights, and failover when the chosen destination is down.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DestinationRegistry } from '../../../src/core/destinations.ts';
import { silentLogger } from '../../../src/core/logger.ts';
import type { Destination } from '../../../src/plugins/types.ts';
import { sampleMessage, SmtpTestClient } from '../../../src/testkit/index.ts';
import { rawServer, router, sink } from '../../../test/helpers/fixtures.ts';
import { roundRobin } from '../index.ts';

describe('round-robin plugin', () => {
  test('rotates in order over real sockets, one transaction after another', async (t) => {
    const sinks = [await sink(t, { name: 'a' }), await sink(t, { name: 'b' }), await sink(t, { name: 'c' })];
    const r = await router(t, { plugins: [roundRobin({ destinations: sinks.map((s) => s.label) })] });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    const order: string[] = [];
    for (let i = 0; i < 6; i++) {
      await client.command('MAIL FROM:<a@example.com>');
      await client.command(`RCPT TO:<r${i}@example.net>`);
      const reply = await client.data(sampleMessage(`rr ${i}`));
      order.push(reply.text.replace(/^Ok: queued as (\w)-\d+$/, '$1'));
    }
    assert.deepEqual(order, ['a', 'b', 'c', 'a', 'b', 'c']);
  });

  test('weights: smooth 3:1 interleaving, and unhealthy destinations are passed over', async () => {
    const plugin = roundRobin({ destinations: [{ destination: 'heavy.example:25', weight: 3 }, { destination: 'light.example:25', weight: 1 }] });
    const down = new Set<string>();
    const registry = new DestinationRegistry();
    await plugin.setup!({
      log: silentLogger(),
      destination: (ref) => registry.resolve(ref),
      health: { available: (d) => !down.has(d.label), state: (d) => (down.has(d.label) ? 'open' : 'closed') },
    });
    const next = async () => {
      const decision = await plugin.mail!({} as never);
      assert.equal(decision?.kind, 'deliver');
      return decision?.kind === 'deliver' ? (decision.to as Destination[]).map((d) => d.label[0]!.toUpperCase()).join('') : '';
    };
    const firsts: string[] = [];
    for (let i = 0; i < 8; i++) firsts.push((await next())[0]!);
    assert.equal(firsts.join(''), 'HHLHHHLH');
    // The chosen one first, the other after it as failover.
    assert.equal(await next(), 'HL');
    down.add('heavy.example:25');
    assert.equal((await next())[0], 'L');
    assert.equal((await next())[0], 'L');
  });

  test('a destination that is down does not lose the transaction: the next one takes it', async (t) => {
    const down = await rawServer(t, 'busy');
    const up = await sink(t, { name: 'up' });
    const r = await router(t, { plugins: [roundRobin({ destinations: [down.label, up.label] })] });
    for (let i = 0; i < 4; i++) {
      const client = await SmtpTestClient.connect(r.port);
      const result = await client.send({ from: 'a@example.com', to: ['b@example.net'], body: sampleMessage(`${i}`) });
      assert.equal(result.data?.code, 250);
      await client.quit();
    }
    assert.equal(up.messages.length, 4);
  });
});
