/**
 * What the smtp-server patches (src/core/inbound/smtp-server-patches.ts) rely on: if an upgrade
 * of smtp-server changes any of it, these fail.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { rawAddressCommand } from '../src/core/inbound/smtp-server-patches.ts';
import { SmtpTestClient } from '../src/testkit/index.ts';
import { router, sink } from './helpers/fixtures.ts';

/** Connects and sends EHLO at once, before any greeting could arrive. */
async function talkFirst(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write('EHLO early\r\n'));
    let text = '';
    socket.on('data', (chunk) => {
      text += chunk.toString();
      if (/\r\n(?:421|250) /.test(text) || /^421 /.test(text)) {
        socket.destroy();
        resolve(text);
      }
    });
    socket.on('error', reject);
  });
}

describe('smtp-server patches', () => {
  test('the private methods patched still exist', () => {
    const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
    for (const name of ['init', '_setListeners', 'connectionReady', 'send', '_parseAddressCommand', '_resetSession']) {
      assert.equal(typeof proto[name], 'function', name);
    }
  });

  test('no greeting delay by default: a client that talks at once is served', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    assert.match(await talkFirst(r.port), /^220 .*\r\n250[- ]/);
  });

  test('smtp.greeting_delay_ms brings early-talker protection back', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { smtp: { greeting_delay_ms: 300 }, relay: { destination_primary: primary.label } } });
    assert.match(await talkFirst(r.port), /421 .*too soon/i);
    // A patient client is served normally.
    const client = await SmtpTestClient.connect(r.port);
    t.after(() => client.destroy());
    assert.equal((await client.command('EHLO patient')).code, 250);
  });

  test('raw addresses and parameters are kept as written', () => {
    assert.deepEqual(rawAddressCommand('MAIL FROM:<a@xn--bcher-kva.example> BODY=8BITMIME  SIZE=10'), { address: 'a@xn--bcher-kva.example', params: ['BODY=8BITMIME', 'SIZE=10'] });
    assert.deepEqual(rawAddressCommand('RCPT TO:<@relay.example:user@host.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;user+2Bx@host.example'), {
      address: 'user@host.example',
      params: ['NOTIFY=SUCCESS,FAILURE', 'ORCPT=rfc822;user+2Bx@host.example'],
    });
    assert.deepEqual(rawAddressCommand('MAIL FROM:<>'), { address: '', params: [] });
  });
});
