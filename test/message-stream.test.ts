import assert from 'node:assert/strict';
import { Readable, type Transform } from 'node:stream';
import { describe, test } from 'node:test';
import { CanonicalBody, DotStuffer } from '../src/core/message-stream.ts';
import { isGsdError } from '../src/core/errors.ts';

/** Runs `input` through `transform`, split into chunks at every given offset. */
async function through(transform: Transform, input: string, cuts: number[] = []): Promise<string> {
  const bytes = Buffer.from(input, 'latin1');
  const chunks: Buffer[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    chunks.push(bytes.subarray(start, cut));
    start = cut;
  }
  const out: Buffer[] = [];
  await new Promise<void>((resolve, reject) => {
    Readable.from(chunks).pipe(transform).on('data', (c: Buffer) => out.push(c)).on('end', resolve).on('error', reject);
  });
  return Buffer.concat(out).toString('latin1');
}

/** Every way of cutting `input` into two chunks, plus one chunk per byte. */
function cutsOf(input: string): number[][] {
  const all: number[][] = [[]];
  for (let i = 1; i < input.length; i++) all.push([i]);
  all.push([...Array(input.length).keys()].slice(1));
  return all;
}

describe('CanonicalBody', () => {
  const normalize = () => new CanonicalBody({ policy: 'normalize', maxBytes: 1 << 20 });
  const reject = () => new CanonicalBody({ policy: 'reject', maxBytes: 1 << 20 });

  test('leaves CRLF text byte-exact, wherever the chunks are cut', async () => {
    const input = 'Subject: x\r\n\r\n.dot line\r\n\xe9 8-bit\r\n';
    for (const cuts of cutsOf(input)) assert.equal(await through(normalize(), input, cuts), input, `cuts ${cuts}`);
  });

  test('normalizes bare LF and bare CR to CRLF, wherever the chunks are cut', async () => {
    const cases: Array<[string, string]> = [
      ['a\nb\r\n', 'a\r\nb\r\n'],
      ['a\rb\r\n', 'a\r\nb\r\n'],
      ['a\r\n.\nMAIL FROM:<x>\n', 'a\r\n.\r\nMAIL FROM:<x>\r\n'],
      ['a\r', 'a\r\n'],
      ['\n\r\r\n\n', '\r\n\r\n\r\n\r\n'],
    ];
    for (const [input, expected] of cases) {
      for (const cuts of cutsOf(input)) assert.equal(await through(normalize(), input, cuts), expected, `${JSON.stringify(input)} cuts ${cuts}`);
    }
  });

  test('reject policy fails on any bare CR or LF and passes clean text', async () => {
    for (const input of ['a\nb\r\n', 'a\rb\r\n', 'x\r\n.\r', 'x\r\n.\n']) {
      await assert.rejects(through(reject(), input), (err) => isGsdError(err, 'GSD_BARE_LINE_ENDING'), JSON.stringify(input));
    }
    assert.equal(await through(reject(), 'ok\r\nfine\r\n', [3]), 'ok\r\nfine\r\n');
  });

  test('fails as soon as the size limit is passed', async () => {
    await assert.rejects(through(new CanonicalBody({ policy: 'normalize', maxBytes: 10 }), 'x'.repeat(11)), (err) => isGsdError(err, 'GSD_MESSAGE_TOO_BIG'));
    assert.equal(await through(new CanonicalBody({ policy: 'normalize', maxBytes: 10 }), 'x'.repeat(10)), 'x'.repeat(10));
  });
});

/** What a DotStuffer gives out for `input` cut at every given offset: each call's group of pieces. */
function stuffed(stuffer: DotStuffer, input: Buffer, cuts: number[]): Buffer[][] {
  const groups: Buffer[][] = [];
  let start = 0;
  for (const cut of [...cuts, input.length]) {
    groups.push([...stuffer.push(input.subarray(start, cut))]);
    start = cut;
  }
  groups.push(stuffer.end());
  return groups;
}

describe('DotStuffer', () => {
  test('doubles leading dots and terminates, wherever the chunks are cut', async () => {
    const cases: Array<[string, string]> = [
      ['', '.\r\n'],
      ['a\r\n', 'a\r\n.\r\n'],
      ['a', 'a\r\n.\r\n'],
      ['.\r\n', '..\r\n.\r\n'],
      ['.a\r\n.\r\n..b\r\nc.d\r\n', '..a\r\n..\r\n...b\r\nc.d\r\n.\r\n'],
    ];
    for (const [input, expected] of cases) {
      for (const cuts of cutsOf(input)) {
        const bytes = Buffer.from(input, 'latin1');
        assert.equal(Buffer.concat(stuffed(new DotStuffer(), bytes, cuts).flat()).toString('latin1'), expected, `${JSON.stringify(input)} cuts ${cuts}`);
        assert.equal(Buffer.concat(stuffed(new DotStuffer(3), bytes, cuts).flat()).toString('latin1'), expected, `block 3: ${JSON.stringify(input)} cuts ${cuts}`);
      }
    }
  });

  test('gives out a small message in one group with its terminator, a large one as it comes, nothing copied', () => {
    const groups = (input: Buffer, chunkBytes: number) => {
      const cuts: number[] = [];
      for (let i = chunkBytes; i < input.length; i += chunkBytes) cuts.push(i);
      return stuffed(new DotStuffer(64 * 1024), input, cuts).filter((group) => group.length > 0);
    };
    const line = Buffer.from(`${'x'.repeat(78)}\r\n`);
    const smallBody = Buffer.concat(Array(128).fill(line));
    const small = groups(smallBody, 4096); // 10 KB in three chunks
    assert.equal(small.length, 1, 'one group: one write');
    assert.equal(Buffer.concat(small[0]!).toString('latin1'), `${smallBody.toString('latin1')}.\r\n`);
    assert.ok(small[0]!.slice(0, -1).every((piece) => piece.buffer === smallBody.buffer), 'the body pieces are views of the input');
    const largeBody = Buffer.concat(Array(10_000).fill(line)); // 800 KB
    const large = groups(largeBody, 16 * 1024);
    assert.equal(Buffer.concat(large[0]!).length, 64 * 1024, 'the first block, gathered');
    assert.ok(large.slice(1, -2).every((group) => group.length === 1 && group[0]!.length === 16 * 1024), 'then each chunk as it came');
    assert.equal(Buffer.concat(large.at(-1)!).toString('latin1').slice(-3), '.\r\n');
    assert.equal(Buffer.concat(large.flat()).length, 800_000 + 3);
  });
});
