/**
 * Fuzzing the SMTP listener: random and mutated command streams from several clients at once,
 * for a bounded time. The router must stay up, every reply it sends must be well-formed SMTP,
 * and a normal client must still get its mail through afterwards.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { router, sink } from './helpers/fixtures.ts';

const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
const DURATION_MS = Number(process.env.FUZZ_MS ?? 4000);

/** mulberry32: a small seeded PRNG, so a failure can be replayed with FUZZ_SEED. */
function prng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VALID = [
  'EHLO fuzz.example',
  'HELO fuzz.example',
  'MAIL FROM:<a@example.com>',
  'MAIL FROM:<> BODY=8BITMIME SIZE=100',
  'RCPT TO:<b@example.net>',
  'RCPT TO:<c@example.net> NOTIFY=SUCCESS,FAILURE',
  'DATA',
  'Subject: fuzz\r\n\r\nbody\r\n.',
  'RSET',
  'NOOP',
  'VRFY a',
  'STARTTLS',
  'AUTH PLAIN AGEAYg==',
  'QUIT',
  'BDAT 10 LAST',
  '.',
];

test(`fuzz: random and mutated SMTP streams (seed ${SEED}, ${DURATION_MS} ms)`, { timeout: 60_000 }, async (t) => {
  const upstream = await sink(t);
  const r = await router(t, { config: { smtp: { max_message_bytes: 100_000, max_errors: 50 }, relay: { destination_primary: upstream.label } } });
  const random = prng(SEED);
  const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
  const bad: string[] = [];
  let sessions = 0;

  const mutate = (line: string): Buffer => {
    const bytes = Buffer.from(line, 'latin1');
    switch (Math.floor(random() * 8)) {
      case 0: // flip a byte
        if (bytes.length) bytes[Math.floor(random() * bytes.length)] = Math.floor(random() * 256);
        return bytes;
      case 1: // truncate
        return bytes.subarray(0, Math.floor(random() * bytes.length));
      case 2: // random binary
        return Buffer.from(Array.from({ length: Math.floor(random() * 200) }, () => Math.floor(random() * 256)));
      case 3: // a very long line
        return Buffer.from(line + 'x'.repeat(Math.floor(random() * 20_000)));
      case 4: // bare LF / CR line endings
        return Buffer.from(line.replace(/\r\n/g, random() < 0.5 ? '\n' : '\r'));
      default:
        return bytes;
    }
  };

  const session = () =>
    new Promise<void>((resolve) => {
      sessions++;
      const socket = net.connect(r.port, '127.0.0.1');
      let text = '';
      socket.on('data', (chunk: Buffer) => {
        text += chunk.toString('latin1');
        let nl: number;
        while ((nl = text.indexOf('\n')) !== -1) {
          const line = text.slice(0, nl).replace(/\r$/, '');
          text = text.slice(nl + 1);
          if (!/^\d{3}([ -]|$)/.test(line)) bad.push(JSON.stringify(line.slice(0, 120)));
        }
      });
      socket.on('error', () => undefined);
      socket.on('close', () => resolve());
      let steps = 1 + Math.floor(random() * 25);
      const step = () => {
        if (socket.destroyed) return;
        if (steps-- <= 0) {
          // Leave politely, rudely, or not at all (the idle timeout is long; destroy to bound it).
          if (random() < 0.5) socket.end('QUIT\r\n');
          else socket.destroy();
          return;
        }
        const line = pick(VALID);
        socket.write(Buffer.concat([mutate(line), Buffer.from(random() < 0.9 ? '\r\n' : '')]));
        setTimeout(step, Math.floor(random() * 5));
      };
      socket.once('connect', step);
      setTimeout(() => socket.destroy(), 3000).unref();
    });

  const deadline = Date.now() + DURATION_MS;
  const workers = Array.from({ length: 8 }, async () => {
    while (Date.now() < deadline) await session();
  });
  await Promise.all(workers);
  t.diagnostic(`${sessions} fuzzed sessions`);

  assert.deepEqual(bad, [], 'every reply line is well-formed');
  const result = await sendMail(r.port, { from: 'after@example.com', to: ['ok@example.net'], body: sampleMessage('after the fuzz') });
  assert.equal(result.data?.code, 250);
  assert.ok(upstream.messages.some((m) => m.from === 'after@example.com'));
});
