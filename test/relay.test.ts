/**
 * Primary pass-through (behaviour 4) and fidelity (behaviour 7), over real sockets.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail, SmtpTestClient } from '../src/testkit/index.ts';
import { eventually, rawServer, router, sink } from './helpers/fixtures.ts';

const FROM = 'sender@example.com';

describe('primary pass-through', () => {
  test('the primary verdict per recipient reaches the client, code, enhanced code and text', async (t) => {
    const primary = await sink(t, {
      behaviour: {
        rcpt: (to) =>
          to.startsWith('unknown') ? { code: 550, enhanced: '5.1.1', text: 'No such user here' } : to.startsWith('full') ? { code: 452, enhanced: '4.2.2', text: 'Mailbox full' } : undefined,
      },
    });
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const result = await sendMail(r.port, { from: FROM, to: ['ok@example.net', 'unknown@example.net', 'full@example.net'], body: sampleMessage() });
    assert.equal(result.mail.code, 250);
    assert.deepEqual(
      result.rcpt.map((x) => [x.code, x.enhanced, x.text]),
      [
        [250, '2.1.5', 'Accepted'],
        [550, '5.1.1', 'No such user here'],
        [452, '4.2.2', 'Mailbox full'],
      ],
    );
    assert.equal(result.data?.code, 250);
    assert.equal(result.data?.enhanced, '2.0.0');
    assert.match(result.data!.text, /queued as sink-1/);
    assert.deepEqual(primary.messages[0]!.to, ['ok@example.net']);
  });

  test('quoted local parts are relayed as written, with their backup copies', async (t) => {
    const primary = await sink(t);
    const backup = await sink(t, { name: 'backup' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    const to = ['"john doe"@example.net', '"john..doe"@example.net', '"a\\"b@c"@example.net'];
    const result = await sendMail(r.port, { from: '"odd sender"@example.com', to, body: sampleMessage('quoted') });
    assert.equal(result.mail.code, 250);
    assert.deepEqual(result.rcpt.map((x) => x.code), [250, 250, 250]);
    assert.equal(result.data?.code, 250);
    for (const server of [primary, backup]) {
      const [message] = await server.waitFor(1);
      assert.equal(message!.from, '"odd sender"@example.com');
      assert.deepEqual(message!.to, to);
    }
    // Still refused: a control character, angle brackets inside the quotes.
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com>');
    for (const bad of ['RCPT TO:<"a\tb"@example.net>', 'RCPT TO:<"a<b>"@example.net>']) {
      assert.equal((await client.command(bad)).code, 501, bad);
    }
  });

  test('a sender the primary refuses: its exact reply reaches the client at RCPT TO, MAIL FROM having gone out with the first recipient', async (t) => {
    const primary = await sink(t, { behaviour: { mail: () => ({ code: 553, enhanced: '5.7.1', text: 'Sender not allowed' }) } });
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command(`MAIL FROM:<${FROM}>`)).code, 250);
    for (const to of ['a@example.net', 'b@example.net']) {
      const rcpt = await client.command(`RCPT TO:<${to}>`);
      assert.deepEqual([rcpt.code, rcpt.enhanced, rcpt.text], [553, '5.7.1', 'Sender not allowed'], to);
    }
    assert.equal((await client.command('DATA')).code, 503, 'no recipient, no message');
    // The session goes on: after RSET, a new MAIL is a new attempt on a clean upstream connection.
    assert.equal((await client.command('RSET')).code, 250);
    primary.behave({});
    assert.equal((await client.send({ from: FROM, to: ['a@example.net'], body: sampleMessage(), ehlo: false })).data?.code, 250);
    assert.equal(primary.messages.length, 1);
  });

  test('a sender refused by a primary without PIPELINING is refused at MAIL FROM', async (t) => {
    const primary = await sink(t, { pipelining: false, behaviour: { mail: () => ({ code: 553, enhanced: '5.7.1', text: 'Sender not allowed' }) } });
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    const mail = await client.command(`MAIL FROM:<${FROM}>`);
    assert.deepEqual([mail.code, mail.enhanced, mail.text], [553, '5.7.1', 'Sender not allowed']);
    primary.behave({});
    assert.equal((await client.send({ from: FROM, to: ['a@example.net'], body: sampleMessage(), ehlo: false })).data?.code, 250);
  });

  test('5xx and 4xx after DATA are passed through, never turned into 250', async (t) => {
    let verdict = { code: 554, enhanced: '5.7.1', text: 'Spam detected' };
    const primary = await sink(t, { behaviour: { data: () => verdict } });
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    let result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.deepEqual([result.data?.code, result.data?.enhanced, result.data?.text], [554, '5.7.1', 'Spam detected']);
    verdict = { code: 451, enhanced: '4.7.1', text: 'Greylisted' };
    result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.deepEqual([result.data?.code, result.data?.enhanced, result.data?.text], [451, '4.7.1', 'Greylisted']);
  });

  test('an unreachable primary is 451 4.4.1, never 5xx', async (t) => {
    const gone = await rawServer(t, 'silent');
    const port = gone.port;
    await gone.close(); // nothing listens there any more
    const r = await router(t, { config: { relay: { destination_primary: `127.0.0.1:${port}` } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.mail.code, 451);
    assert.equal(result.mail.enhanced, '4.4.1');
  });

  test('a primary that never greets times out with 451 4.4.2 within relay.timeout_seconds', async (t) => {
    const silent = await rawServer(t, 'silent');
    const r = await router(t, { config: { relay: { destination_primary: silent.label, timeout_seconds: 0.5 } } });
    const started = Date.now();
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.mail.code, 451);
    assert.equal(result.mail.enhanced, '4.4.2');
    assert.ok(Date.now() - started < 4000, 'the timeout was used');
  });

  for (const dropAt of ['RCPT', 'DATA', 'BODY'] as const) {
    test(`a primary that closes the connection at ${dropAt} yields 451, never 250`, async (t) => {
      const broken = await rawServer(t, { dropAt });
      const r = await router(t, { config: { relay: { destination_primary: broken.label } } });
      const client = await SmtpTestClient.connect(r.port);
      t.after(() => client.destroy());
      const result = await client.send({ from: FROM, to: ['a@example.net'], body: sampleMessage('x', 'y'.repeat(100_000)) });
      const last = result.data ?? result.rcpt[0]!;
      assert.equal(last.code, 451, JSON.stringify(last));
      assert.match(last.enhanced ?? '', /^4\.4\./);
      // The session survives and can go on.
      assert.equal((await client.command('NOOP')).code, 250);
      assert.equal((await client.command('RSET')).code, 250);
    });
  }

  test('a primary that greets but stalls at MAIL opens its circuit: later senders get 451 at once, without a connection', async (t) => {
    const stalled = await rawServer(t, { replyDelayMs: { MAIL: Infinity } });
    const r = await router(t, { config: { relay: { timeout_seconds: 0.3, destination_primary: stalled.label }, health: { failure_threshold: 2, cooldown_seconds: 60 } } });
    for (let i = 0; i < 2; i++) {
      const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
      assert.equal((result.data ?? result.rcpt[0] ?? result.mail).code, 451);
    }
    const asked = stalled.commands.filter((c) => c.startsWith('MAIL')).length;
    const later = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.deepEqual([later.mail.code, later.mail.enhanced?.slice(0, 4)], [451, '4.4.'], 'the open circuit answers at MAIL');
    assert.equal(stalled.commands.filter((c) => c.startsWith('MAIL')).length, asked, 'nothing more reached the stalled server');
  });

  test('pipelined MAIL and RCPT each get the whole command timeout', async (t) => {
    const slow = await rawServer(t, { replyDelayMs: { MAIL: 600, RCPT: 600 } });
    const r = await router(t, { config: { relay: { timeout_seconds: 1, destination_primary: slow.label } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.rcpt[0]?.code, 250, JSON.stringify(result.rcpt[0]));
    assert.equal(result.data?.code, 250);
  });

  test('a pooled upstream connection the server dropped while idle is replaced, not a 451', async (t) => {
    const forgetful = await rawServer(t, 'dropOnReuse');
    const r = await router(t, { config: { relay: { destination_primary: forgetful.label } } });
    for (const n of [1, 2, 3]) {
      const result = await sendMail(r.port, { from: FROM, to: [`r${n}@example.net`], body: sampleMessage(`${n}`) });
      assert.equal(result.data?.code, 250, JSON.stringify(result));
    }
    assert.equal(forgetful.messages.length, 3);
    assert.equal(forgetful.connections(), 3, 'each reuse found the connection gone and opened a new one');
  });

  test('a pooled connection answered 421 at MAIL (a per-connection message limit) is replaced, not a 451', async (t) => {
    // Alone, MAIL goes out pipelined with RCPT; first of two candidates, it goes out on its own.
    for (const pipelined of [true, false]) {
      const limited = await rawServer(t, 'refuseReuse');
      const spare = await sink(t);
      const config = pipelined
        ? { relay: { destination_primary: limited.label } }
        : { plugins: [{ failover: { destinations: [limited.label, spare.label] } }] };
      const r = await router(t, { config });
      for (const n of [1, 2, 3]) {
        const result = await sendMail(r.port, { from: FROM, to: [`r${n}@example.net`], body: sampleMessage(`${n}`) });
        assert.equal(result.data?.code, 250, JSON.stringify(result));
      }
      assert.equal(limited.messages.length, 3, `pipelined: ${pipelined}`);
      assert.equal(limited.connections(), 3);
      assert.equal(spare.messages.length, 0, 'no failover: the destination works');
    }
  });

  test('twenty senders at once keep their upstream connections: a second wave opens none', async (t) => {
    // The final reply waits a moment, so that all twenty transactions are open at the same time.
    const upstream = await rawServer(t, { replyDelayMs: { BODY: 150 } });
    const r = await router(t, { config: { relay: { destination_primary: upstream.label } } });
    const wave = async (name: string) => {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sendMail(r.port, { from: FROM, to: [`${name}${i}@example.net`], body: sampleMessage(`${name}${i}`) })));
      for (const result of results) assert.equal(result.data?.code, 250, JSON.stringify(result));
    };
    await wave('first');
    const opened = upstream.connections();
    assert.equal(opened, 20, 'twenty transactions at once, twenty upstream connections');
    await wave('second');
    assert.equal(upstream.connections(), opened, 'the second wave reused the first one\'s connections');
    assert.equal(upstream.messages.length, 40);
  });

  test('a primary that never answers the final dot yields 451 after relay.data_timeout_seconds', async (t) => {
    const hang = await rawServer(t, 'hangAfterBody');
    const r = await router(t, { config: { relay: { destination_primary: hang.label, data_timeout_seconds: 0.5 } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.data?.code, 451);
    assert.equal(result.data?.enhanced, '4.4.2');
  });
});

describe('fidelity', () => {
  test('bytes are relayed exactly: 8-bit, long lines, leading dots, no trailing newline', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const body = Buffer.concat([
      Buffer.from('From: a@example.com\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n\r\n', 'latin1'),
      Buffer.from('.leading dot\r\n..two dots\r\n.\r\n', 'latin1'),
      Buffer.from([0xe2, 0x82, 0xac, 0x20, 0xff, 0x0d, 0x0a]),
      Buffer.from('x'.repeat(5000) + '\r\n', 'latin1'),
    ]);
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body });
    assert.equal(result.data?.code, 250);
    assert.ok(primary.messages[0]!.body.equals(body), 'primary got the exact bytes');
  });

  test('null sender, BCC recipients and addresses as sent (punycode untouched)', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command('MAIL FROM:<>')).code, 250);
    assert.equal((await client.command('RCPT TO:<visible@example.net>')).code, 250);
    assert.equal((await client.command('RCPT TO:<hidden@xn--bcher-kva.example>')).code, 250);
    // The header names one recipient; the envelope decides.
    assert.equal((await client.data('To: visible@example.net\r\n\r\nhi\r\n')).code, 250);
    const [message] = primary.messages;
    assert.equal(message!.from, '');
    assert.deepEqual(message!.to, ['visible@example.net', 'hidden@xn--bcher-kva.example']);
  });

  test('several transactions in one session are independent; RSET clears the envelope', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    for (let i = 1; i <= 3; i++) {
      await client.command(`MAIL FROM:<s${i}@example.com>`);
      await client.command(`RCPT TO:<r${i}@example.net>`);
      assert.equal((await client.data(`Subject: ${i}\r\n\r\nbody ${i}\r\n`)).code, 250);
    }
    await client.command('MAIL FROM:<abandoned@example.com>');
    await client.command('RCPT TO:<never@example.net>');
    assert.equal((await client.command('RSET')).code, 250);
    await client.command('MAIL FROM:<s4@example.com>');
    await client.command('RCPT TO:<r4@example.net>');
    assert.equal((await client.data('Subject: 4\r\n\r\nbody 4\r\n')).code, 250);
    assert.deepEqual(
      primary.messages.map((m) => [m.from, m.to.join(','), m.body.toString()]),
      [1, 2, 3, 4].map((i) => [`s${i}@example.com`, `r${i}@example.net`, `Subject: ${i}\r\n\r\nbody ${i}\r\n`]),
    );
  });

  test('EHLO announces the domain, SIZE, PIPELINING, 8BITMIME, SMTPUTF8, ENHANCEDSTATUSCODES', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { domain: 'relay.example.org', max_message_bytes: 123456 }, relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    assert.match(client.greeting.text, /^relay\.example\.org ESMTP/);
    const ehlo = await client.command('EHLO c');
    assert.match(ehlo.lines[0]!, /^relay\.example\.org/);
    for (const keyword of ['SIZE 123456', 'PIPELINING', '8BITMIME', 'SMTPUTF8', 'ENHANCEDSTATUSCODES']) assert.ok(ehlo.lines.includes(keyword), `${keyword} in ${ehlo.lines}`);
  });

  test('pipelined commands get their replies in order', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    client.write('MAIL FROM:<p@example.com>\r\nRCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n');
    const replies = [await client.next(), await client.next(), await client.next(), await client.next()];
    assert.deepEqual(replies.map((x) => x.code), [250, 250, 250, 354]);
    client.write('Subject: p\r\n\r\npipelined\r\n.\r\n');
    assert.equal((await client.next()).code, 250);
    assert.deepEqual(primary.messages[0]!.to, ['a@example.net', 'b@example.net']);
  });
});

describe('regressions found in review', () => {
  test('a 2xx answer to DATA (no 354) is a 451, never a 250 without a message', async (t) => {
    const broken = await rawServer(t, { dataReply: '250 2.0.0 sure' });
    const r = await router(t, { config: { relay: { destination_primary: broken.label } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.data?.code, 451);
  });

  test('SMTPUTF8 addresses reach the upstream byte for byte', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    assert.equal((await client.command('MAIL FROM:<jöran@exämple.se> SMTPUTF8')).code, 250);
    assert.equal((await client.command('RCPT TO:<日本@例え.jp>')).code, 250);
    assert.equal((await client.data('Subject: utf8\r\n\r\nhi\r\n')).code, 250);
    assert.equal(primary.messages[0]!.from, 'jöran@exämple.se');
    assert.deepEqual(primary.messages[0]!.to, ['日本@例え.jp']);
  });

  test('a client that leaves while the upstream answers MAIL and RCPT does not leave the upstream transaction open', async (t) => {
    const slow = await rawServer(t, { replyDelayMs: 300 });
    const r = await router(t, { config: { relay: { destination_primary: slow.label } } });
    const client = await SmtpTestClient.connect(r.port);
    client.write('EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.net>\r\n');
    await client.next(); // EHLO
    await eventually(() => slow.commands.some((c) => c.startsWith('RCPT')), 5000, 'the upstream to see it');
    client.destroy();
    // The router resets (RSET) the upstream transaction once RCPT is answered, or closes it.
    await eventually(() => slow.commands.some((c) => /^(RSET|QUIT)/.test(c)), 5000, 'the upstream to see it');
  });

  for (const [name, policy, body] of [
    ['drops mid-body', 'normalize', 'Subject: x\r\n\r\n' + 'y'.repeat(10_000)],
    ['sends a bare LF under the reject policy', 'reject', 'Subject: x\n\nbare\n'],
  ] as const) {
    test(`a client that ${name} while DATA is still on its way upstream does not crash the router`, async (t) => {
      const slow = await rawServer(t, { replyDelayMs: 200 });
      const r = await router(t, { config: { smtp: { bare_line_endings: policy }, relay: { destination_primary: slow.label } } });
      const client = await SmtpTestClient.connect(r.port);
      await client.command('EHLO c');
      await client.command('MAIL FROM:<a@example.com>');
      await client.command('RCPT TO:<b@example.net>');
      assert.equal((await client.command('DATA')).code, 354); // the router answers at once
      client.write(body);
      if (policy === 'normalize') client.destroy();
      else client.write('\r\n.\r\n');
      if (policy === 'reject') assert.equal((await client.next()).code, 550);
      // The router still works.
      const next = await SmtpTestClient.connect(r.port);
      t.after(() => next.destroy());
      assert.equal((await next.command('NOOP')).code, 250);
      client.destroy();
    });
  }
});

describe('envelope parameters', () => {
  test('DSN parameters (RET, ENVID, NOTIFY, ORCPT), BODY and SIZE reach an upstream that announces them, exactly', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    const ehlo = await client.command('EHLO c');
    assert.ok(ehlo.lines.includes('DSN'));
    assert.equal((await client.command('MAIL FROM:<a@example.com> RET=HDRS ENVID=QQ314159 BODY=8BITMIME SIZE=120')).code, 250);
    assert.equal((await client.command('RCPT TO:<b@example.net> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;b@example.net')).code, 250);
    assert.equal((await client.data('Subject: dsn\r\n\r\nhi\r\n')).code, 250);
    assert.deepEqual(primary.messages[0]!.mailParams, ['RET=HDRS', 'ENVID=QQ314159', 'BODY=8BITMIME', 'SIZE=120']);
    assert.deepEqual(primary.messages[0]!.rcptParams, [['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;b@example.net']]);
  });

  test('parameters an upstream does not announce are not sent to it', async (t) => {
    const plain = await rawServer(t, 'lenient'); // EHLO: PIPELINING only
    const r = await router(t, { config: { relay: { destination_primary: plain.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    await client.command('MAIL FROM:<a@example.com> RET=FULL BODY=8BITMIME');
    await client.command('RCPT TO:<b@example.net> NOTIFY=NEVER');
    assert.equal((await client.data('Subject: plain\r\n\r\nhi\r\n')).code, 250);
    assert.ok(plain.commands.includes('MAIL FROM:<a@example.com>'), plain.commands.join(' | '));
    assert.ok(plain.commands.includes('RCPT TO:<b@example.net>'));
  });

  test('SMTPUTF8 mail for an upstream without SMTPUTF8 is a clear 553 5.6.7, nothing is sent', async (t) => {
    const plain = await rawServer(t, 'lenient');
    const r = await router(t, { config: { relay: { destination_primary: plain.label } } });
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    await client.command('EHLO c');
    const mail = await client.command('MAIL FROM:<jöran@exämple.se> SMTPUTF8');
    assert.deepEqual([mail.code, mail.enhanced], [553, '5.6.7']);
    assert.ok(!plain.commands.some((c) => c.startsWith('MAIL')));
  });
});
