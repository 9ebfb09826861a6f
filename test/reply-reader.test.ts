import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ReplyReader, type UpstreamReply } from '../src/core/upstream/reply-reader.ts';

/** Feeds `input` cut at every offset in `cuts`; the replies in order. */
function read(input: string, cuts: number[] = []): UpstreamReply[] {
  const reader = new ReplyReader();
  const bytes = Buffer.from(input);
  const replies: UpstreamReply[] = [];
  let start = 0;
  for (const cut of [...cuts, bytes.length]) {
    replies.push(...reader.push(bytes.subarray(start, cut)));
    start = cut;
  }
  return replies;
}

describe('ReplyReader', () => {
  test('one-line replies, with and without an enhanced code, several in one chunk', () => {
    assert.deepEqual(read('250 2.1.0 Sender OK\r\n354 go ahead\r\n'), [
      { code: 250, enhanced: '2.1.0', text: 'Sender OK', lines: ['Sender OK'] },
      { code: 354, enhanced: undefined, text: 'go ahead', lines: ['go ahead'] },
    ]);
  });

  test('a multi-line reply is one reply with every line; its text joins them', () => {
    const [ehlo] = read('250-sink.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n');
    assert.deepEqual(ehlo, { code: 250, enhanced: undefined, text: 'sink.example PIPELINING SIZE 1000', lines: ['sink.example', 'PIPELINING', 'SIZE 1000'] });
    const [refused] = read('550-5.1.1 No such user\r\n550 5.1.1 here\r\n');
    assert.deepEqual(refused, { code: 550, enhanced: '5.1.1', text: 'No such user here', lines: ['No such user', 'here'] });
  });

  test('the same replies wherever the bytes are cut, CR LF and UTF-8 characters included', () => {
    const input = '250-héllo\r\n250 ok\r\n451 4.3.0 ünavailable\r\n';
    const whole = read(input);
    assert.equal(whole.length, 2);
    assert.equal(whole[1]!.text, 'ünavailable');
    for (let cut = 1; cut < Buffer.byteLength(input); cut++) assert.deepEqual(read(input, [cut]), whole, `cut at ${cut}`);
  });

  test('a bare LF ends a line too; a code alone is a reply', () => {
    assert.deepEqual(read('250 ok\n221\r\n').map((r) => [r.code, r.text]), [
      [250, 'ok'],
      [221, ''],
    ]);
  });

  test('what is not SMTP throws: a line without a code, a code that changes mid-reply, no end of line', () => {
    assert.throws(() => read('hello\r\n'), /not an SMTP reply/);
    assert.throws(() => read('25 ok\r\n'), /not an SMTP reply/);
    assert.throws(() => read('250ok\r\n'), /not an SMTP reply/);
    assert.throws(() => read('250 ok\rRCPT TO:<x@example.com>\r\n'), /not an SMTP reply/);
    assert.throws(() => read('250-a\r\n550 b\r\n'), /changed its code/);
    assert.throws(() => read('250 ' + 'x'.repeat(70 * 1024)), /too long/);
    assert.throws(() => read(`250-${'x'.repeat(100)}\r\n`.repeat(1000)), /too long/);
  });
});
