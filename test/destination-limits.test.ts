/**
 * Per-destination max_connections and rate: a provider's quota is never exceeded; copies wait,
 * synchronous deliveries get 451 4.7.0 (or fail over) unless told to wait.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError, validateConfig } from '../src/core/config/load.ts';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { router, sink } from './helpers/fixtures.ts';

describe('destination limits', () => {
  test('rate: copies to a "3/second" destination are spread out, none lost', async (t) => {
    const primary = await sink(t);
    const quota = await sink(t, { name: 'quota' });
    const r = await router(t, {
      config: { destinations: { quota: { url: quota.label, rate: '3/second' } }, relay: { destination_primary: primary.label, destination_backups: ['quota'] } },
    });
    for (let i = 0; i < 6; i++) await sendMail(r.port, { from: 'a@example.com', to: [`r${i}@example.net`], body: sampleMessage(`${i}`) });
    const copies = await quota.waitFor(6, 15_000);
    const times = copies.map((m) => m.receivedAt).sort((a, b) => a - b);
    // A bucket of 3 refilling at 3/s: the 4th copy cannot come sooner than ~1/3 s after the 1st,
    // the 6th not sooner than ~1 s.
    assert.ok(times[5]! - times[0]! >= 900, `6 copies within ${times[5]! - times[0]!} ms`);
  });

  test('max_connections: a synchronous delivery over the limit is 451 4.7.0; it fails over when it can', async (t) => {
    const limited = await sink(t, { name: 'limited' });
    const spare = await sink(t, { name: 'spare' });
    const r = await router(t, {
      config: { destinations: { limited: { url: limited.label, max_connections: 1 } }, relay: { destination_primary: 'limited' } },
    });
    const first = await SmtpTestClient.connect(r.port);
    t.after(() => first.destroy());
    await first.command('EHLO a');
    assert.equal((await first.command('MAIL FROM:<a@example.com>')).code, 250); // holds the only slot
    const second = await sendMail(r.port, { from: 'b@example.com', to: ['x@example.net'], body: sampleMessage() });
    assert.deepEqual([second.mail.code, second.mail.enhanced], [451, '4.7.0']);
    await first.command('RCPT TO:<x@example.net>');
    assert.equal((await first.data(sampleMessage())).code, 250);
    assert.equal((await sendMail(r.port, { from: 'c@example.com', to: ['x@example.net'], body: sampleMessage() })).data?.code, 250, 'the slot is free again');

    const withSpare = await router(t, {
      config: { destinations: { limited: { url: limited.label, max_connections: 1 }, spare: spare.label }, plugins: [{ failover: { destinations: ['limited', 'spare'] } }] },
    });
    const holder = await SmtpTestClient.connect(withSpare.port);
    t.after(() => holder.destroy());
    await holder.command('EHLO a');
    await holder.command('MAIL FROM:<a@example.com>');
    assert.equal((await sendMail(withSpare.port, { from: 'd@example.com', to: ['x@example.net'], body: sampleMessage() })).data?.code, 250);
    assert.equal(spare.messages.length, 1, 'the busy destination was passed over');
  });

  test('a bad rate is a configuration error naming the key', () => {
    assert.throws(
      () => validateConfig({ destinations: { q: { url: 'mx:25', rate: 'fast' } }, relay: { destination_primary: 'q' } }, 't'),
      (err) => err instanceof ConfigError && /^destinations\.q(\.rate)?: /.test(err.problems[0]!),
    );
  });
});
