/**
 * What the smtp-server patches (src/core/inbound/smtp-server-patches.ts) rely on: if an upgrade
 * of smtp-server changes any of it, these fail.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { describe, test } from 'node:test';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
import { feedDataStream, isCheckedAddressParser, isCheckedScanner, patchSmtpServer, plainAddressCommand, rawAddressCommand } from '../src/core/inbound/smtp-server-patches.ts';
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

type Feed = (this: SMTPStream, chunk: Buffer, done: (err?: Error | null) => void) => void;
/** smtp-server's own scanner, taken before any router in this process patched it. */
const originalFeed = (SMTPStream.prototype as unknown as { _feedDataStream: Feed })._feedDataStream;

/**
 * Runs one DATA phase through an SMTPStream with `feed` as its scanner, the input cut into
 * `pieces`: what the data stream emitted, and the commands that followed the terminator.
 */
async function scan(feed: Feed, pieces: readonly Buffer[]): Promise<{ body: string; after: string[]; size: number }> {
  const stream = new SMTPStream();
  (stream as unknown as { _feedDataStream: Feed })._feedDataStream = feed;
  const after: string[] = [];
  stream.oncommand = (line, next) => {
    after.push(line.toString('latin1'));
    next?.();
  };
  const data = stream.startDataMode();
  const out: Buffer[] = [];
  data.on('data', (chunk: Buffer) => out.push(chunk));
  data.on('end', () => stream.continue());
  for (const piece of pieces) stream.write(piece);
  await new Promise((resolve) => stream.end(resolve));
  return { body: Buffer.concat(out).toString('latin1'), after, size: (data as unknown as { byteLength: number }).byteLength };
}

type Parse = (this: unknown, rawName: string, rawCommand: Buffer) => { address: string; args: unknown } | false;
/** smtp-server's own address parser, taken before any router in this process patched it. */
const originalParse = (SMTPConnection.prototype as unknown as { _parseAddressCommand: Parse })._parseAddressCommand;

/** A deterministic generator, so that a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    return state / 0x80000000;
  };
}

/** MAIL FROM / RCPT TO commands: plain ones, and near misses of every check a plain one passes. */
function addressCommands(count: number): string[] {
  const next = random(7);
  const pick = <T,>(items: readonly T[]): T => items[Math.floor(next() * items.length)]!;
  const text = (alphabet: string, max: number) => Array.from({ length: 1 + Math.floor(next() * max) }, () => pick([...alphabet])).join('');
  // Half of them plain-looking: characters a plain address may have, edges and doubles included.
  const plainLocal = () => pick([text("abcXYZ019!#$%&'*+/=?^_`{|}~.-", 12), 'user', 'first.last', 'a+tag', 'x'.repeat(64), 'x'.repeat(240)]);
  const plainDomain = () => pick([text('abcXY019-.', 16), 'example.com', 'mx-1.example.org', 'xn--bcher-kva.example', 'XN--BCHER-KVA.example', 'a.xn--p1ai', 'x'.repeat(250) + '.com']);
  const anyLocal = () => pick([plainLocal(), text('abc.. "\\(),:;<>[]@é\u0000\u200b', 12), '']);
  const anyDomain = () => pick([plainDomain(), text('abc-.._é ', 16), '[127.0.0.1]', '[IPv6:::1]', 'bücher.example', '']);
  const commands: string[] = [];
  for (let i = 0; i < count; i++) {
    if (next() < 0.5) {
      commands.push(`${pick(['MAIL FROM', 'RCPT TO', 'mail from', 'Rcpt To'])}:<${plainLocal()}@${plainDomain()}>`);
      continue;
    }
    const name = pick(['MAIL FROM', 'RCPT TO', 'mail from', 'MAIL TO', 'RCPT FROM', 'MAIL  FROM', 'MAILFROM', 'XMAIL FROM']);
    const address = pick([`${anyLocal()}@${anyDomain()}`, anyLocal(), `@relay.example:${anyLocal()}@${anyDomain()}`, `${anyLocal()}@${anyDomain()}@x`]);
    const bracketed = next() < 0.9 ? `<${address}>` : address;
    commands.push(`${name}${pick([':', ':', ': ', ' :', '::'])}${bracketed}${pick(['', ' ', ' SIZE=100', ' BODY=8BITMIME', '\t', ' NOTIFY=NEVER'])}`);
  }
  return commands;
}

describe('smtp-server patches', () => {
  test('the private methods patched still exist', () => {
    const proto = SMTPConnection.prototype as unknown as Record<string, unknown>;
    for (const name of ['init', '_setListeners', 'connectionReady', 'send', '_parseAddressCommand', '_resetSession']) {
      assert.equal(typeof proto[name], 'function', name);
    }
    const stream = SMTPStream.prototype as unknown as Record<string, unknown>;
    for (const name of ['_feedDataStream', '_endDataMode', '_countDataBytes']) assert.equal(typeof stream[name], 'function', name);
    assert.notEqual(originalFeed, feedDataStream, 'the original scanner was taken before patching');
  });

  test('the native body scanner replaces only the scanner it was checked against', () => {
    // Fails after an smtp-server upgrade: check feedDataStream against the new scanner (the test
    // below), then update CHECKED_SCANNER_SHA256. Until then the router runs smtp-server's own.
    assert.ok(isCheckedScanner(originalFeed), 'smtp-server\'s scanner is the one feedDataStream was checked against');
    assert.ok(!isCheckedScanner(function changed() {}), 'any other scanner is left in place');
    patchSmtpServer();
    assert.equal((SMTPStream.prototype as unknown as { _feedDataStream: Feed })._feedDataStream, feedDataStream);
  });

  test('the native body scanner does what smtp-server\'s does, however the input is cut', async () => {
    const inputs = [
      'Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n',
      '.\r\nQUIT\r\n', // an empty body
      '..\r\n.\r\n', // a body that is one dot
      '..leading\r\n...two\r\nmid.dle\r\n.\r\nRSET\r\nNOOP\r\n',
      'a\r\n.b\r\n..\r\n.\r\n', // a dot that is not an escape (lenient), then an escaped one
      'no terminator yet\r\n..still\r\n',
      'bare\n.\r\nsmuggled?\r\n.\r\nQUIT\r\n', // a bare LF before a dot line is not the end
      `${'x'.repeat(70)}\r\n`.repeat(40) + '..end\r\n.\r\n',
    ];
    for (const text of inputs) {
      const input = Buffer.from(text, 'latin1');
      const cuts: Buffer[][] = [[input]];
      for (let i = 1; i < input.length; i++) cuts.push([input.subarray(0, i), input.subarray(i)]);
      if (input.length < 80) {
        for (let i = 1; i < input.length; i++) for (let j = i + 1; j < input.length; j++) cuts.push([input.subarray(0, i), input.subarray(i, j), input.subarray(j)]);
        cuts.push([...input].map((byte) => Buffer.from([byte])));
      }
      for (const pieces of cuts) {
        const expected = await scan(originalFeed, pieces);
        assert.deepEqual(await scan(feedDataStream as Feed, pieces), expected, `${JSON.stringify(text)} cut at ${pieces.map((p) => p.length).join('+')}`);
      }
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

  test('plain MAIL FROM / RCPT TO: the result smtp-server\'s own parser gives, or left to it', () => {
    assert.ok(isCheckedAddressParser(originalParse), 'smtp-server\'s parser is the one plainAddressCommand was checked against');
    assert.ok(!isCheckedAddressParser(function changed() {}), 'any other parser is always called');
    let plain = 0;
    let valid = 0;
    for (const lenientAddressParsing of [false, true]) {
      const connection = { _server: { options: { lenientAddressParsing }, logger: { error: () => undefined } }, id: 'test', session: {} };
      for (const command of addressCommands(20_000)) {
        for (const rawName of ['mail from', 'rcpt to']) {
          const theirs = originalParse.call(connection, rawName, Buffer.from(command));
          if (theirs) valid++;
          const ours = plainAddressCommand(rawName, command);
          if (!ours) continue;
          plain++;
          assert.deepEqual({ address: ours.address, args: ours.args }, theirs, `${rawName}: ${JSON.stringify(command)}`);
          assert.deepEqual(ours.raw, rawAddressCommand(command), JSON.stringify(command));
        }
      }
    }
    // The comparison means something only if both kinds are common.
    assert.ok(plain > 5000, `${plain} plain commands`);
    assert.ok(valid > plain + 2000, `${valid} valid commands, ${plain} of them plain`);
    assert.deepEqual(plainAddressCommand('mail from', 'MAIL FROM:<user@example.com>'), { address: 'user@example.com', args: false, raw: { address: 'user@example.com', params: [] } });
    assert.equal(plainAddressCommand('mail from', 'MAIL FROM:<user@example.com> SIZE=10'), undefined);
    assert.equal(plainAddressCommand('rcpt to', 'MAIL FROM:<user@example.com>'), undefined);
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
