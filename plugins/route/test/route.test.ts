/**
 * `route`: rules composing strategies, per-recipient verdicts, envelope splitting, explanations.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ConfigError } from '../../../src/core/config/load.ts';
import { explain, sampleMessage, SmtpTestClient } from '../../../src/testkit/index.ts';
import { router, sink } from '../../../test/helpers/fixtures.ts';
import { duplicate } from '../../duplicate/index.ts';
import { failover } from '../../failover/index.ts';
import { route } from '../index.ts';

describe('route plugin', () => {
  test('first matching rule wins; the default takes the rest; explanations name the rule', async () => {
    const routes = await explain(
      {
        config: { destinations: { old: 'old.example:25', new: 'new.example:25', main: 'main.example:25', vip: 'vip.example:25' } },
        plugins: [
          route({
            rules: [
              { sender: 'ceo@corp.example', use: failover({ destinations: ['vip', 'main'] }) },
              { recipient: ['@example.com', '/^archive-/'], use: duplicate({ primary: 'old', backups: ['new'] }) },
            ],
            default: failover({ destinations: ['main'] }),
          }),
        ],
      },
      { from: 'someone@else.example', to: ['a@example.com', 'b@sub.example.com', 'archive-x@any.example', 'c@other.example'] },
    );
    const summary = routes.map(({ recipient, route: r, separateTransaction }) => [
      recipient,
      r.kind === 'deliver' ? r.to.map((d) => d.label).join('|') : r.kind,
      r.kind === 'deliver' ? r.copies.map((d) => d.label).join('|') : '',
      r.decidedBy,
      separateTransaction,
    ]);
    assert.deepEqual(summary, [
      ['a@example.com', 'old.example:25', 'new.example:25', 'route: rule 2 (recipient @example.com,/^archive-/) -> duplicate', false],
      ['b@sub.example.com', 'old.example:25', 'new.example:25', 'route: rule 2 (recipient @example.com,/^archive-/) -> duplicate', false],
      ['archive-x@any.example', 'old.example:25', 'new.example:25', 'route: rule 2 (recipient @example.com,/^archive-/) -> duplicate', false],
      ['c@other.example', 'main.example:25', '', 'route: default -> failover', true],
    ]);
    const [ceo] = await explain(
      {
        config: { destinations: { main: 'main.example:25', vip: 'vip.example:25' } },
        plugins: [route({ rules: [{ sender: 'ceo@corp.example', use: failover({ destinations: ['vip', 'main'] }) }], default: failover({ destinations: ['main'] }) })],
      },
      { from: 'CEO@corp.example', to: ['x@y.example'] },
    );
    assert.equal(ceo!.route.kind === 'deliver' && ceo!.route.to.map((d) => d.label).join('|'), 'vip.example:25|main.example:25');
  });

  test('composition over real sockets: @example.com is duplicated old -> new, the rest fails over', async (t) => {
    const old = await sink(t, { name: 'old', behaviour: { rcpt: (to) => (to.startsWith('gone') ? { code: 550, enhanced: '5.1.1', text: 'no such user at old' } : undefined) } });
    const next = await sink(t, { name: 'new' });
    const main = await sink(t, { name: 'main' });
    const r = await router(t, {
      config: { destinations: { old: old.label, new: next.label, main: main.label } },
      plugins: [
        route({
          rules: [{ recipient: '@example.com', use: duplicate({ primary: 'old', backups: ['new'] }) }],
          default: failover({ destinations: ['main'] }),
        }),
      ],
    });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command('MAIL FROM:<sender@corp.example>')).code, 250);
    // Each recipient's verdict comes from the destination it routes to.
    const first = await client.command('RCPT TO:<alice@example.com>');
    const gone = await client.command('RCPT TO:<gone@example.com>');
    const elsewhere = await client.command('RCPT TO:<bob@other.example>');
    assert.equal(first.code, 250);
    assert.deepEqual([gone.code, gone.enhanced, gone.text], [550, '5.1.1', 'no such user at old']);
    assert.deepEqual([elsewhere.code, elsewhere.enhanced], [452, '4.5.3']);
    assert.equal((await client.data(sampleMessage('split'))).code, 250);
    // The sender sends the deferred recipient in its own transaction, as 452 asks.
    await client.command('MAIL FROM:<sender@corp.example>');
    assert.equal((await client.command('RCPT TO:<bob@other.example>')).code, 250);
    assert.equal((await client.data(sampleMessage('split'))).code, 250);

    const [copy] = await next.waitFor(1);
    assert.deepEqual(old.messages.map((m) => m.to), [['alice@example.com']]);
    assert.deepEqual(copy!.to, ['alice@example.com']);
    assert.deepEqual(main.messages.map((m) => m.to), [['bob@other.example']]);
  });

  test('bad rules are configuration errors: invalid RegExp, no condition, missing default', async () => {
    assert.throws(() => route({ rules: [{ recipient: '/(/', use: failover({ destinations: ['a:25'] }) }], default: failover({ destinations: ['a:25'] }) }), /rules\[0\]: invalid regular expression/);
    assert.throws(() => route({ rules: [{ use: failover({ destinations: ['a:25'] }) }], default: failover({ destinations: ['a:25'] }) }), /rules\[0\] needs "sender" or "recipient"/);
    assert.throws(() => route({ rules: [], default: undefined as never }), /"default" is required/);
    await assert.rejects(
      explain({ plugins: [route({ rules: [], default: failover({ destinations: ['nowhere'] }) })] }, { from: '', to: ['x@y.z'] }),
      (err) => err instanceof ConfigError && /unknown destination "nowhere"/.test(err.problems.join()),
    );
  });
});
