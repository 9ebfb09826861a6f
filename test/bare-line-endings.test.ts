import assert from 'node:assert/strict';
import { test } from 'node:test';
import { bareLineScanner, hasBareLineEnding, hasBareLineEndingByIndexOf } from '../src/core/bare-line-endings.ts';
import { BARE_LINE_ENDINGS_WASM } from '../src/core/bare-line-endings.wasm.ts';
// @ts-expect-error: a plain .mjs script without types
import { compileBareLineEndings, generatedSource } from '../bin/build-wasm.mjs';

const CR = 0x0d;
const LF = 0x0a;

/** The definition, byte by byte: what both implementations must agree with. */
function byDefinition(buf: Buffer): boolean {
  for (let i = 0; i < buf.length; i++) {
    if (buf[i] === LF && (i === 0 || buf[i - 1] !== CR)) return true;
    if (buf[i] === CR && buf[i + 1] !== LF) return true;
  }
  return false;
}

/** A deterministic generator, so that a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    return state / 0x80000000;
  };
}

test('the SIMD scanner is the one that runs on this Node', () => {
  assert.equal(bareLineScanner, 'simd');
});

test('SIMD and indexOf agree with the definition on random short texts of CR, LF, dots and letters', () => {
  const next = random(42);
  const alphabet = [CR, LF, 0x2e, 0x61, 0x00];
  for (let round = 0; round < 20_000; round++) {
    const text = Buffer.alloc(Math.floor(next() * 70));
    // Mostly CRLF pairs, so that clean texts are common too.
    for (let i = 0; i < text.length; i++) {
      if (next() < 0.3 && i + 1 < text.length) {
        text[i++] = CR;
        text[i] = LF;
      } else {
        text[i] = alphabet[Math.floor(next() * alphabet.length)]!;
      }
    }
    const expected = byDefinition(text);
    assert.equal(hasBareLineEnding(text), expected, `SIMD on ${JSON.stringify(text.toString('latin1'))}`);
    assert.equal(hasBareLineEndingByIndexOf(text), expected, `indexOf on ${JSON.stringify(text.toString('latin1'))}`);
  }
});

test('texts larger than one 64 KiB window: every position near the window edges', () => {
  const clean = Buffer.from('a line of mail, as most are.\r\n'.repeat(8000)); // 240 000 bytes
  assert.equal(hasBareLineEnding(clean), false);
  const edges = [0, 1, 15, 16, 17, 65534, 65535, 65536, 65537, 65551, 65552, 131070, 131071, 131072, 131073, clean.length - 2, clean.length - 1];
  for (const at of edges) {
    for (const byte of [CR, LF]) {
      const text = Buffer.from(clean);
      text[at] = byte;
      // Over a letter: bare. Over one half of a CRLF pair: the pair is broken, also bare, unless
      // the byte is the same one.
      assert.equal(hasBareLineEnding(text), byDefinition(text), `${byte === CR ? 'CR' : 'LF'} at ${at}`);
    }
  }
  // A CRLF pair split across the edge of a window is not bare.
  for (const at of [65534, 65535, 65536]) {
    const text = Buffer.alloc(200_000, 0x61);
    text[at] = CR;
    text[at + 1] = LF;
    assert.equal(hasBareLineEnding(text), false, `CRLF at ${at}`);
    text[at + 1] = 0x61;
    assert.equal(hasBareLineEnding(text), true, `bare CR at ${at}`);
  }
  // A text ending in CR: bare (the Canonicalizer holds such a CR back until the next chunk).
  assert.equal(hasBareLineEnding(Buffer.concat([clean, Buffer.from('\r')])), true);
  // After a large text, a short one is judged on its own bytes only.
  assert.equal(hasBareLineEnding(Buffer.from('x\r\n')), false);
});

test('the embedded module is bare-line-endings.wat compiled (run node bin/build-wasm.mjs after editing it)', async () => {
  const bytes: Buffer = await compileBareLineEndings();
  assert.equal(BARE_LINE_ENDINGS_WASM, bytes.toString('base64'));
  assert.match(generatedSource(bytes), new RegExp(BARE_LINE_ENDINGS_WASM.replace(/[+/]/g, '\\$&')));
});
