import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { compileMatcher, compileMatchers } from '../../../src/core/address-patterns.ts';

describe('route matchers', () => {
  const cases: Array<[pattern: string | RegExp, address: string, matches: boolean]> = [
    ['alice@example.com', 'alice@example.com', true],
    ['alice@example.com', 'ALICE@Example.COM', true],
    ['alice@example.com', 'bob@example.com', false],
    ['@example.com', 'bob@example.com', true],
    ['@example.com', 'bob@mail.example.com', true],
    ['@example.com', 'bob@notexample.com', false],
    ['example.com', 'bob@deep.sub.example.com', true],
    ['example.com', 'example.com@evil.org', false],
    ['*@*.example.org', 'x@a.example.org', true],
    ['*@*.example.org', 'x@example.org', false],
    ['sales-?@example.com', 'sales-1@example.com', true],
    ['sales-?@example.com', 'sales-12@example.com', false],
    ['/^bob\\+.*@/', 'bob+tag@example.com', true],
    ['/^BOB/i', 'bob@example.com', true],
    ['/^BOB/', 'bob@example.com', false],
    [/@legacy\./, 'x@legacy.example.com', true],
    ['<>', '', true],
    ['<>', 'a@b.c', false],
    ['@example.com', '', false],
  ];
  for (const [pattern, address, matches] of cases) {
    test(`${String(pattern)} ${matches ? 'matches' : 'does not match'} "${address}"`, () => {
      assert.equal(compileMatcher(pattern)(address), matches);
    });
  }

  test('a list matches if any pattern does', () => {
    const match = compileMatchers(['@a.example', '@b.example']);
    assert.equal(match('x@b.example'), true);
    assert.equal(match('x@c.example'), false);
  });

  test('invalid patterns are errors at compile time', () => {
    assert.throws(() => compileMatcher('/[unclosed/'), /invalid regular expression \/\[unclosed\//);
    assert.throws(() => compileMatcher('not a domain!'), /expected an address, @domain, glob or \/regexp\//);
    assert.throws(() => compileMatchers([]), /at least one/);
  });
});
