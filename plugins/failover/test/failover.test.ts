/**
 * `failover` over real sockets: the next destination takes over before the client is answered,
 * verdicts about the message are not failures, and circuits keep a failing server out.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail } from '../../../src/testkit/index.ts';
import { capturingLogger, rawServer, router, sink } from '../../../test/helpers/fixtures.ts';
import { failover } from '../index.ts';

const message = (subject: string) => ({ from: 'a@example.com', to: ['b@example.net'], body: sampleMessage(subject) });

describe('failover plugin', () => {
  test('a refused connection moves on to the next destination before the client is answered', async (t) => {
    const gone = await rawServer(t, 'silent');
    await gone.close();
    const second = await sink(t, { name: 'second' });
    const r = await router(t, { plugins: [failover({ destinations: [gone.label, second.label] })] });
    const result = await sendMail(r.port, message('refused'));
    assert.equal(result.mail.code, 250);
    assert.equal(result.data?.code, 250);
    assert.equal(second.messages.length, 1);
  });

  test('a 4xx greeting and a silent server (timeout) also move on', async (t) => {
    const busy = await rawServer(t, 'busy');
    const silent = await rawServer(t, 'silent');
    const third = await sink(t, { name: 'third' });
    const r = await router(t, { config: { relay: { timeout_seconds: 0.3 } }, plugins: [failover({ destinations: [busy.label, silent.label, third.label] })] });
    assert.equal((await sendMail(r.port, message('busy'))).data?.code, 250);
    assert.equal(third.messages.length, 1);
    assert.equal(busy.connections(), 1);
    assert.equal(silent.connections(), 1);
  });

  test('a 5xx about the message is the verdict, not a failure: no failover', async (t) => {
    const strict = await sink(t, { name: 'strict', behaviour: { rcpt: () => ({ code: 550, enhanced: '5.1.1', text: 'unknown user' }) } });
    const second = await sink(t, { name: 'second' });
    const r = await router(t, { plugins: [failover({ destinations: [strict.label, second.label] })] });
    const result = await sendMail(r.port, message('reject'));
    assert.deepEqual([result.rcpt[0]!.code, result.rcpt[0]!.enhanced], [550, '5.1.1']);
    assert.equal(second.messages.length, 0);
  });

  test('all destinations down is 451, never 5xx', async (t) => {
    const a = await rawServer(t, 'busy');
    const b = await rawServer(t, 'busy');
    const r = await router(t, { plugins: [failover({ destinations: [a.label, b.label] })] });
    const result = await sendMail(r.port, message('down'));
    assert.equal(result.mail.code, 451);
    assert.match(result.mail.enhanced ?? '', /^4\.4\./);
  });

  test('a server that greets but never answers MAIL is passed over for the next one', async (t) => {
    const stalled = await rawServer(t, { replyDelayMs: { MAIL: Infinity } });
    const second = await sink(t, { name: 'second' });
    const r = await router(t, { config: { relay: { timeout_seconds: 0.5 } }, plugins: [failover({ destinations: [stalled.label, second.label] })] });
    assert.equal((await sendMail(r.port, message('stalled'))).data?.code, 250);
    assert.equal(second.messages.length, 1);
    assert.ok(stalled.commands.some((c) => c.startsWith('MAIL')), 'the first server was asked');
  });

  test('consecutive failures open the circuit: the failing server is skipped, then probed after the cooldown', async (t) => {
    const busy = await rawServer(t, 'busy');
    const second = await sink(t, { name: 'second' });
    const capture = capturingLogger();
    const cooldownMs = 400;
    const r = await router(t, {
      config: { health: { failure_threshold: 2, cooldown_seconds: cooldownMs / 1000 } },
      plugins: [failover({ destinations: [busy.label, second.label] })],
      logger: capture.logger,
    });
    for (let i = 0; i < 2; i++) assert.equal((await sendMail(r.port, message(`open ${i}`))).data?.code, 250);
    assert.equal(busy.connections(), 2);
    const opened = capture.lines.find((l) => l.msg === 'circuit opened: destination failing');
    assert.equal(opened?.destination, busy.label);
    const openedAt = Date.now();

    // While open: not even a connection attempt.
    for (let i = 0; i < 3; i++) assert.equal((await sendMail(r.port, message(`skipped ${i}`))).data?.code, 250);
    assert.equal(busy.connections(), 2);

    // The cooldown is a span of time, so the test waits it out; then exactly one probe goes through.
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, openedAt + cooldownMs + 50 - Date.now())));
    assert.equal((await sendMail(r.port, message('probe'))).data?.code, 250);
    assert.equal(busy.connections(), 3);
    assert.ok(capture.lines.some((l) => l.msg === 'circuit re-opened: probe failed'));
    assert.equal(second.messages.length, 6);
  });
});
