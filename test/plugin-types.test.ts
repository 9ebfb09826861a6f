/**
 * The plugin API's types document the contract: these lines are checked by `npm run typecheck`
 * (part of `npm test`), and each `@ts-expect-error` fails the build if the mistake it shows
 * ever type-checks. The runtime assertions check the helpers build what the types promise.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineConfig, definePlugin, deliver, reject, tempfail, type RouteDecision, type RouterPlugin } from '../src/index.ts';

test('decision helpers fix the reply class', () => {
  assert.deepEqual(tempfail('later').reply, { code: 451, enhanced: '4.7.1', text: 'later' });
  assert.deepEqual(reject('no', { code: 554, enhanced: '5.7.1' }).reply, { code: 554, enhanced: '5.7.1', text: 'no' });
  assert.deepEqual(deliver({ to: 'a.example:25', copies: ['b'] }), { kind: 'deliver', to: ['a.example:25'], copies: ['b'], decidedBy: undefined });
  assert.throws(() => deliver({ to: [] }), /at least one destination/);

  // The types refuse these, and so does the helper at run time (for JavaScript plugins).
  // @ts-expect-error a temporary failure cannot carry a 5xx
  assert.throws(() => tempfail('x', { code: 550 }), TypeError);
  // @ts-expect-error a rejection cannot carry a 4xx
  assert.throws(() => reject('x', { code: 451 }), TypeError);
  // @ts-expect-error an enhanced code must match the class
  assert.throws(() => tempfail('x', { enhanced: '5.7.1' }), TypeError);
  // @ts-expect-error deliver needs "to"
  deliver({ copies: ['a:25'] });
});

test('plugins are typed objects with known hooks', () => {
  const plugin = definePlugin({
    name: 'typed',
    mail(ctx) {
      const sender: string = ctx.sender;
      const client: string = ctx.connection.remoteAddress;
      return sender && client ? undefined : tempfail('x');
    },
    rcpt(ctx): RouteDecision | undefined {
      const recipient: string = ctx.recipient;
      return recipient.endsWith('@example.com') ? deliver({ to: 'mx.example.com:25' }) : undefined;
    },
  });
  assert.equal(plugin.name, 'typed');

  // @ts-expect-error a plugin needs a name
  definePlugin({ mail: () => undefined });
  // @ts-expect-error hooks return decisions, not strings
  definePlugin({ name: 'bad', rcpt: () => 'mx.example.com:25' });

  const config = defineConfig({ smtp: { listen: '127.0.0.1:2525' }, plugins: [plugin, false, [{ failover: { destinations: ['a:25'] } }]] });
  assert.equal((config.plugins[0] as RouterPlugin).name, 'typed');
  // @ts-expect-error unknown config sections are caught by the types (and by the schema at run time)
  defineConfig({ smpt: {} });
});
