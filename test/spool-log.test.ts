/**
 * The spool's segment log (log-spool.ts, segment-log.ts) through its public API, on real files:
 * restarts, torn and corrupted segments, deletion of finished segments, compaction.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFile, mkdir, open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test, type TestContext } from 'node:test';
import { silentLogger } from '../src/core/logger.ts';
import type { EnvelopeAddress } from '../src/core/envelope.ts';
import { ErrorCodes } from '../src/core/errors.ts';
import { LogSpool } from '../src/core/spool/log-spool.ts';
import { readSegment, segmentName, segmentSeq, type LogEntry } from '../src/core/spool/segment-log.ts';
import type { CopyJob, SpoolRecord } from '../src/core/spool/types.ts';
import { capturingLogger, eventually, spoolFiles, tempDir } from './helpers/fixtures.ts';

const KiB = 1024;
/** Bodies over this size get their own file (MEMORY_BODY_BYTES in log-spool.ts). */
const INLINE_MAX = 128 * KiB;

const rcpt = (address: string): EnvelopeAddress => ({ address, params: [] });

function makeRecord(id: string, copies: ReadonlyArray<readonly string[]>, size: number): SpoolRecord {
  return {
    version: 1,
    id,
    createdAt: 1_700_000_000_000,
    sender: rcpt('sender@example.com'),
    client: { address: '127.0.0.1', helo: 'client.test' },
    size,
    copies: copies.map((recipients, n) => ({ destination: `127.0.0.1:${2500 + n}`, name: `backup${n}`, recipients: recipients.map(rcpt) })),
  };
}

/** A body that is different at every byte position (binary included), so any mix-up shows. */
function makeBody(bytes: number): Buffer {
  return randomBytes(bytes);
}

/** Opens a spool on `dir`, closed when the test ends (closing twice is harmless). */
async function openSpool(t: TestContext, dir: string, options: { owner?: boolean; segmentBytes?: number } = {}): Promise<LogSpool> {
  // Small segments are for exercising deletion and compaction: compacted as soon as they qualify.
  const spool = new LogSpool(dir, silentLogger(), options.segmentBytes === undefined ? {} : { segmentBytes: options.segmentBytes, compactAfterMs: 0 });
  await spool.open(options.owner ? { owner: true } : {});
  t.after(() => spool.close().catch(() => undefined));
  return spool;
}

/** begin → body (in chunks, as it streams) → prepare → (commit). */
async function store(spool: LogSpool, id: string, body: Buffer, copies: ReadonlyArray<readonly string[]> = [['a@example.net']], commit = true): Promise<SpoolRecord> {
  const record = makeRecord(id, copies, body.length);
  const writer = spool.begin(id);
  for (let at = 0; at < body.length; at += 16 * KiB) writer.body.write(body.subarray(at, at + 16 * KiB));
  await writer.prepare(record);
  if (commit) await writer.commit();
  return record;
}

async function readBody(spool: LogSpool, id: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of spool.openBody(id)) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

function job(spool: LogSpool, id: string, index = 0): CopyJob {
  const found = spool.pending().find((j) => j.record.id === id && j.index === index);
  assert.ok(found, `copy ${id}.${index} is pending`);
  return found;
}

const pendingKeys = (spool: LogSpool): string[] => spool.pending().map((j) => `${j.record.id}.${j.index}`).sort();

async function segmentFiles(dir: string): Promise<string[]> {
  return (await readdir(join(dir, 'log'))).filter((name) => segmentSeq(name) !== undefined).sort();
}

async function entriesOf(path: string): Promise<LogEntry[]> {
  const entries: LogEntry[] = [];
  for await (const entry of readSegment(path)) entries.push({ ...entry, payload: Buffer.from(entry.payload) });
  return entries;
}

/**
 * `count` messages of 10 KiB (`<prefix><n>`, n from 1) written in one life of the spool, then
 * the spool opened again as owner, as after a restart: no body is cached, all are read from disk.
 */
async function restartedWith(t: TestContext, prefix: string, count: number) {
  const dir = await tempDir(t);
  const first = await openSpool(t, dir, { owner: true });
  const bodies = new Map<string, Buffer>();
  for (let i = 1; i <= count; i++) {
    const id = `${prefix}${i}`;
    bodies.set(id, makeBody(10 * KiB));
    await store(first, id, bodies.get(id)!);
  }
  await first.close();
  const captured = capturingLogger();
  const spool = new LogSpool(dir, captured.logger);
  await spool.open({ owner: true });
  t.after(() => spool.close().catch(() => undefined));
  return { dir, bodies, captured, spool };
}

describe('spool log: restarts', () => {
  test('committed messages survive a restart with record, body (inline and file) and copy states', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const small = makeBody(3000);
    const large = makeBody(INLINE_MAX + 70 * KiB + 13);
    const empty = Buffer.alloc(0);
    const recA = await store(first, 'MSGA0001', small, [['a1@example.net', 'a2@example.net', 'a3@example.net'], ['b@example.net']]);
    const recB = await store(first, 'MSGB0001', large);
    const recC = await store(first, 'MSGC0001', makeBody(500), [['c@example.net'], ['d@example.net']]);
    const largeDone = makeBody(INLINE_MAX + 1);
    await store(first, 'MSGD0001', largeDone);
    await store(first, 'MSGE0001', empty);
    assert.ok((await readdir(join(dir, 'bodies'))).includes('MSGB0001.eml'), 'a large body has its own file');
    assert.ok(!(await readdir(join(dir, 'bodies'))).includes('MSGA0001.eml'), 'a small body stays in the log');

    // A.0: a first attempt delivers a1 and defers a2 and a3; a second one delivers a3 and defers a2.
    await first.settle(job(first, 'MSGA0001', 0), { retry: { recipients: [rcpt('a2@example.net'), rcpt('a3@example.net')], error: '451 first', nextAttemptAt: 1_800_000_000_000 } });
    await first.settle(job(first, 'MSGA0001', 0), { retry: { recipients: [rcpt('a2@example.net')], error: '452 second', nextAttemptAt: 1_800_000_000_500 } });
    await first.settle(job(first, 'MSGA0001', 1), {}); // A.1 delivered
    await first.settle(job(first, 'MSGC0001', 0), {}); // C.0 delivered, C.1 not yet
    await first.settle(job(first, 'MSGD0001', 0), {}); // D finished entirely
    assert.ok(!(await readdir(join(dir, 'bodies'))).includes('MSGD0001.eml'), "a finished message's body file is removed");
    await first.close();

    const second = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(second), ['MSGA0001.0', 'MSGB0001.0', 'MSGC0001.1', 'MSGE0001.0']);
    const a0 = job(second, 'MSGA0001', 0);
    assert.deepEqual(a0.record, recA);
    assert.equal(a0.state.attempts, 2);
    assert.equal(a0.state.lastError, '452 second');
    assert.equal(a0.state.nextAttemptAt, 1_800_000_000_500);
    assert.deepEqual(a0.state.remaining, [rcpt('a2@example.net')]);
    assert.equal(typeof a0.state.lastAttemptAt, 'number');
    const b0 = job(second, 'MSGB0001', 0);
    assert.deepEqual(b0.record, recB);
    assert.deepEqual({ attempts: b0.state.attempts, nextAttemptAt: b0.state.nextAttemptAt, remaining: b0.state.remaining }, { attempts: 0, nextAttemptAt: 0, remaining: undefined });
    assert.deepEqual(job(second, 'MSGC0001', 1).record, recC);
    assert.equal(job(second, 'MSGC0001', 1).state.attempts, 0);

    assert.ok((await readBody(second, 'MSGA0001')).equals(small), 'inline body byte for byte');
    assert.ok((await readBody(second, 'MSGB0001')).equals(large), 'file body byte for byte');
    assert.equal((await readBody(second, 'MSGE0001')).length, 0, 'an empty body stays empty');
    assert.deepEqual((await readdir(join(dir, 'bodies'))).sort(), ['MSGB0001.eml']);
    await assert.rejects(readBody(second, 'MSGD0001'), /no longer queued/);

    // And once more: the restarted spool's own entries (none yet) and the old ones still replay.
    await second.settle(job(second, 'MSGB0001', 0), { retry: { recipients: [rcpt('a@example.net')], error: 'down', nextAttemptAt: 5 } });
    await second.close();
    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['MSGA0001.0', 'MSGB0001.0', 'MSGC0001.1', 'MSGE0001.0']);
    assert.equal(job(third, 'MSGB0001', 0).state.attempts, 1);
    assert.equal(job(third, 'MSGB0001', 0).state.lastError, 'down');
    assert.ok((await readBody(third, 'MSGB0001')).equals(large));
    assert.ok((await readBody(third, 'MSGA0001')).equals(small));
  });

  test('a prepared but never committed message is gone after a restart, with its body file', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const kept = makeBody(2000);
    await store(first, 'KEPT0001', kept);
    await store(first, 'HALF0001', makeBody(4000), [['a@example.net']], false);
    await store(first, 'HALF0002', makeBody(INLINE_MAX + 5000), [['a@example.net']], false);
    assert.deepEqual(pendingKeys(first), ['KEPT0001.0'], 'prepared messages are not due before their commit');
    assert.deepEqual(await readdir(join(dir, 'bodies')), ['HALF0002.eml'], 'the prepared large body is durable in bodies/');
    await first.close();

    const second = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(second), ['KEPT0001.0']);
    assert.deepEqual(await readdir(join(dir, 'bodies')), [], 'the uncommitted large body is removed');
    await assert.rejects(readBody(second, 'HALF0001'), /no longer queued/);
    assert.ok((await readBody(second, 'KEPT0001')).equals(kept));
    // The same id can be used again (the client sends the message again).
    const again = makeBody(INLINE_MAX + 10);
    await store(second, 'HALF0002', again);
    await second.close();
    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['HALF0002.0', 'KEPT0001.0']);
    assert.ok((await readBody(third, 'HALF0002')).equals(again));
  });

  test('a body arriving in tmp/ when the process died is cleared at start-up', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const writer = first.begin('TORN0001');
    writer.body.write(makeBody(INLINE_MAX + 20 * KiB));
    await eventually(async () => (await readdir(join(dir, 'tmp'))).includes('TORN0001.eml'), 5000, 'body spilled to tmp/');
    await writer.abort();
    await first.close();
    await writeFile(join(dir, 'tmp', 'LEFT0001.eml'), 'half a message'); // as left by a crash
    const second = await openSpool(t, dir, { owner: true });
    assert.deepEqual(await readdir(join(dir, 'tmp')), []);
    assert.deepEqual(second.pending(), []);
  });

  test('concurrent transactions (group commit across segment boundaries) are all durable', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true, segmentBytes: 32 * KiB });
    const bodies = new Map<string, Buffer>();
    for (let i = 0; i < 60; i++) bodies.set(`CONC${String(i).padStart(4, '0')}`, makeBody(i % 10 === 9 ? INLINE_MAX + i : 1000 + i * 97));
    await Promise.all([...bodies].map(([id, body]) => store(first, id, body)));
    assert.equal(first.pending().length, 60);
    assert.ok((await segmentFiles(dir)).length >= 3, 'several segments were written');
    await first.close();

    const second = await openSpool(t, dir, { owner: true, segmentBytes: 32 * KiB });
    assert.deepEqual(pendingKeys(second), [...bodies.keys()].map((id) => `${id}.0`).sort());
    for (const [id, body] of bodies) assert.ok((await readBody(second, id)).equals(body), `body of ${id}`);
  });
});

describe('spool log: torn and corrupted segments', () => {
  test('a torn tail is ignored: earlier entries are intact and the log goes on after it', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const a = makeBody(1500);
    const b = makeBody(INLINE_MAX + 3000);
    await store(first, 'TAIL000A', a);
    await store(first, 'TAIL000B', b);
    await first.close();

    // Second life: one more message, whose commit (the last entry) is torn by a crash.
    const second = await openSpool(t, dir, { owner: true });
    await store(second, 'TAIL000C', makeBody(800));
    await second.close();
    const segments = await segmentFiles(dir);
    assert.equal(segments.length, 2, 'each life writes its own segment');
    const newest = join(dir, 'log', segments.at(-1)!);
    const before = await entriesOf(newest);
    assert.deepEqual(before.map((e) => e.type), ['M', 'C']);
    await truncate(newest, (await stat(newest)).size - 3);
    assert.deepEqual((await entriesOf(newest)).map((e) => e.type), ['M'], 'readSegment drops the torn frame');

    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['TAIL000A.0', 'TAIL000B.0'], 'the message whose commit was torn never happened');
    assert.ok((await readBody(third, 'TAIL000A')).equals(a));
    assert.ok((await readBody(third, 'TAIL000B')).equals(b));
    const d = makeBody(INLINE_MAX + 777);
    const e = makeBody(2222);
    await store(third, 'TAIL000D', d);
    await store(third, 'TAIL000E', e);
    await third.settle(job(third, 'TAIL000A'), {});
    await third.close();

    const fourth = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(fourth), ['TAIL000B.0', 'TAIL000D.0', 'TAIL000E.0']);
    assert.ok((await readBody(fourth, 'TAIL000B')).equals(b));
    assert.ok((await readBody(fourth, 'TAIL000D')).equals(d));
    assert.ok((await readBody(fourth, 'TAIL000E')).equals(e));
  });

  test('garbage after the last whole frame (a half-written batch) is ignored', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const a = makeBody(4096);
    await store(first, 'JUNK000A', a);
    await first.close();
    const [segment] = await segmentFiles(dir);
    const path = join(dir, 'log', segment!);
    // A header announcing 40 bytes with a wrong CRC, the 40 bytes, then a header cut short.
    const header = Buffer.alloc(9);
    header.writeUInt32BE(40, 0);
    header.writeUInt32BE(0xdeadbeef, 4);
    header[8] = 'C'.charCodeAt(0);
    await appendFile(path, Buffer.concat([header, Buffer.from(JSON.stringify({ id: 'JUNK000A' }).padEnd(40)), Buffer.from([0, 0, 0])]));

    const second = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(second), ['JUNK000A.0']);
    assert.ok((await readBody(second, 'JUNK000A')).equals(a));
    const b = makeBody(5000);
    await store(second, 'JUNK000B', b);
    await second.close();
    // A header whose length runs past the end of the file.
    const newest = join(dir, 'log', (await segmentFiles(dir)).at(-1)!);
    const long = Buffer.alloc(9);
    long.writeUInt32BE(1_000_000, 0);
    await appendFile(newest, Buffer.concat([long, Buffer.from('partial')]));

    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['JUNK000A.0', 'JUNK000B.0']);
    assert.ok((await readBody(third, 'JUNK000A')).equals(a));
    assert.ok((await readBody(third, 'JUNK000B')).equals(b));
    const c = makeBody(INLINE_MAX + 1);
    await store(third, 'JUNK000C', c);
    await third.close();
    const fourth = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(fourth), ['JUNK000A.0', 'JUNK000B.0', 'JUNK000C.0']);
    assert.ok((await readBody(fourth, 'JUNK000C')).equals(c));
  });

  test('readSegment stops at a frame whose CRC does not match; the entries before it are returned', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const bodies = [makeBody(1000), makeBody(2000), makeBody(3000), makeBody(4000)];
    for (const [i, body] of bodies.entries()) await store(first, `CRCX000${i}`, body);
    await first.close();
    const [segment] = await segmentFiles(dir);
    const path = join(dir, 'log', segment!);
    const whole = await entriesOf(path);
    assert.deepEqual(whole.map((e) => e.type), ['M', 'C', 'M', 'C', 'M', 'C', 'M', 'C']);
    assert.equal(whole[0]!.offset, 9, 'the first payload follows its 9-byte header');

    // Flip one byte in the middle of the third message's M payload (its body).
    const target = whole[4]!;
    const data = await readFile(path);
    const at = target.offset + Math.floor(target.payload.length / 2);
    data[at] = data[at]! ^ 0xff;
    await writeFile(path, data);
    const damaged = await entriesOf(path);
    assert.equal(damaged.length, 4, 'reading stops at the damaged frame');
    for (const [i, entry] of damaged.entries()) {
      assert.equal(entry.type, whole[i]!.type);
      assert.equal(entry.offset, whole[i]!.offset);
      assert.ok(entry.payload.equals(whole[i]!.payload));
    }

    // A damaged frame header (its length) stops reading the same way.
    const data2 = await readFile(path);
    data2[whole[2]!.offset - 9 + 3] = data2[whole[2]!.offset - 9 + 3]! ^ 0x01;
    await writeFile(path, data2);
    assert.deepEqual((await entriesOf(path)).map((e) => e.type), ['M', 'C']);

    const second = await openSpool(t, dir, { owner: true });
    assert.ok(pendingKeys(second).includes('CRCX0000.0'), 'the messages before the damage are kept');
    assert.ok((await readBody(second, 'CRCX0000')).equals(bodies[0]!));
  });
});

describe('spool log: segments', () => {
  test('sealed segments are deleted once every copy in them is delivered', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true, segmentBytes: 64 * KiB });
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) {
      const id = `SEGD${String(i).padStart(4, '0')}`;
      ids.push(id);
      await store(spool, id, makeBody(10 * KiB));
    }
    const written = await segmentFiles(dir);
    assert.ok(written.length >= 6, `40 x 10 KiB in 64 KiB segments makes several segments, got ${written.length}`);

    // Half delivered: the segments holding the other half stay.
    for (const id of ids.slice(0, 20)) await spool.settle(job(spool, id), {});
    await eventually(async () => (await segmentFiles(dir)).length < written.length, 5000, 'the first finished segments to go');
    const remaining = await segmentFiles(dir);
    assert.ok(remaining.length >= 3, `segments holding undelivered copies are kept (left: ${remaining.join(', ')})`);
    for (const id of ids.slice(20)) assert.equal((await readBody(spool, id)).length, 10 * KiB);

    for (const id of ids.slice(20)) await spool.settle(job(spool, id), {});
    assert.deepEqual(spool.pending(), []);
    // The idle head segment is sealed by a one-second timer; then nothing at all is left.
    await eventually(async () => (await spoolFiles(dir)).length === 0, 8000, 'every segment deleted');
    await spool.close();
    const again = await openSpool(t, dir, { owner: true, segmentBytes: 64 * KiB });
    assert.deepEqual(again.pending(), []);
  });

  test('a message pinning an old segment is compacted to the head, so old segments go; it survives a restart intact', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true, segmentBytes: 64 * KiB });
    const pinned = makeBody(10 * KiB + 7);
    const pinnedLarge = makeBody(INLINE_MAX + 4321);
    await store(spool, 'PIN00001', pinned, [['p1@example.net', 'p2@example.net'], ['q@example.net']]);
    await store(spool, 'PIN00002', pinnedLarge);
    await spool.settle(job(spool, 'PIN00001', 0), { retry: { recipients: [rcpt('p2@example.net')], error: '451 4.3.0 later', nextAttemptAt: 1_900_000_000_000 } });
    await spool.settle(job(spool, 'PIN00001', 1), { retry: { recipients: [rcpt('q@example.net')], error: 'connection refused', nextAttemptAt: 1_900_000_000_001 } });
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      const id = `FILL${String(i).padStart(4, '0')}`;
      ids.push(id);
      await store(spool, id, makeBody(10 * KiB));
    }
    const written = await segmentFiles(dir);
    assert.ok(written.length >= 9, `60 x 10 KiB in 64 KiB segments makes many segments, got ${written.length}`);
    const firstSegment = written[0]!;

    for (const id of ids) await spool.settle(job(spool, id), {});
    await eventually(async () => (await segmentFiles(dir)).length <= 2, 8000, 'old segments deleted after compaction');
    const left = await segmentFiles(dir);
    assert.ok(!left.includes(firstSegment), `the first segment (${firstSegment}) was compacted away; left: ${left.join(', ')}`);
    assert.deepEqual(pendingKeys(spool), ['PIN00001.0', 'PIN00001.1', 'PIN00002.0']);
    assert.ok((await readBody(spool, 'PIN00001')).equals(pinned), 'the body reads from its new place');
    assert.ok((await readBody(spool, 'PIN00002')).equals(pinnedLarge));
    await spool.close();

    const again = await openSpool(t, dir, { owner: true, segmentBytes: 64 * KiB });
    assert.deepEqual(pendingKeys(again), ['PIN00001.0', 'PIN00001.1', 'PIN00002.0']);
    const p0 = job(again, 'PIN00001', 0);
    assert.equal(p0.state.attempts, 1);
    assert.equal(p0.state.lastError, '451 4.3.0 later');
    assert.equal(p0.state.nextAttemptAt, 1_900_000_000_000);
    assert.deepEqual(p0.state.remaining, [rcpt('p2@example.net')]);
    const p1 = job(again, 'PIN00001', 1);
    assert.equal(p1.state.lastError, 'connection refused');
    assert.deepEqual(p1.state.remaining, [rcpt('q@example.net')]);
    assert.equal(job(again, 'PIN00002', 0).state.attempts, 0);
    assert.deepEqual(p0.record.copies.map((c) => c.recipients.map((r) => r.address)), [['p1@example.net', 'p2@example.net'], ['q@example.net']]);
    assert.ok((await readBody(again, 'PIN00001')).equals(pinned), 'inline body intact after compaction and restart');
    assert.ok((await readBody(again, 'PIN00002')).equals(pinnedLarge), 'file body intact after compaction and restart');

    // Still a working spool: finishing the pinned messages empties it.
    await again.settle(job(again, 'PIN00001', 0), {});
    await again.settle(job(again, 'PIN00001', 1), {});
    await again.settle(job(again, 'PIN00002', 0), {});
    await eventually(async () => (await spoolFiles(dir)).length === 0, 8000, 'empty spool');
    await again.close();
    const last = await openSpool(t, dir, { owner: true, segmentBytes: 64 * KiB });
    assert.deepEqual(last.pending(), []);
  });

  test('a delivered mark is written without an fdatasync of its own; a commit is fsync\'d', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true });
    const ids = ['MARK0000', 'MARK0001', 'MARK0002'];
    for (const id of ids) await store(spool, id, makeBody(KiB), [['a@example.net'], ['b@example.net']]);
    // Every FileHandle shares one prototype: count the segment log's fdatasyncs from here on.
    const probe = await open(join(await tempDir(t), 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync(): Promise<void> };
    await probe.close();
    const datasync = proto.datasync;
    let calls = 0;
    proto.datasync = function (this: unknown) {
      calls++;
      return datasync.call(this);
    };
    t.after(() => {
      proto.datasync = datasync;
    });
    // The first copy of each delivered: marks only, the messages stay for their second copies.
    for (const id of ids) await spool.settle(job(spool, id, 0), {});
    assert.equal(calls, 0, 'delivered marks are not fsync\'d on their own');
    await store(spool, 'MARK0009', makeBody(KiB));
    assert.ok(calls >= 1, 'a new message is fsync\'d before its commit resolves');
    await spool.close();
    // Written all the same: a restart of the process finds the marks.
    const again = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(again).sort(), ['MARK0000.1', 'MARK0001.1', 'MARK0002.1', 'MARK0009.0']);
  });

  test('a young segment is not compacted: the copies still going out finish it by themselves', async (t) => {
    // Half of every segment delivered: each qualifies for compaction by what is live in it.
    const compactions = async (compactAfterMs: number) => {
      const dir = await tempDir(t);
      const captured = capturingLogger();
      const spool = new LogSpool(dir, captured.logger, { segmentBytes: 64 * KiB, compactAfterMs });
      await spool.open({ owner: true });
      t.after(() => spool.close().catch(() => undefined));
      const ids: string[] = [];
      for (let i = 0; i < 40; i++) {
        ids.push(`YOUNG${String(i).padStart(3, '0')}`);
        await store(spool, ids.at(-1)!, makeBody(10 * KiB));
      }
      for (const id of ids.filter((_id, i) => i % 2 === 0)) await spool.settle(job(spool, id), {});
      await spool.close(); // waits for the maintenance the deliveries started
      return captured.lines.filter((l) => l.msg === 'spool segment compacted').length;
    };
    assert.ok((await compactions(0)) > 0, 'the same segments are compacted once they are old enough');
    assert.equal(await compactions(60_000), 0, 'nothing is rewritten while the segments are young');
  });

  test('compaction copes with a message finishing while it reads another one from disk', async (t) => {
    // After a restart no body is cached: compaction reads them back from the old segment.
    const { dir, bodies, captured, spool: second } = await restartedWith(t, 'RACE000', 6);
    await second.settle(job(second, 'RACE0001'), {});
    await second.settle(job(second, 'RACE0002'), {});
    // Half of the segment finished: compaction starts, reading RACE0004's body from disk...
    await second.settle(job(second, 'RACE0003'), {});
    // ...while the worker finishes RACE0006, the last one on its list.
    await second.settle(job(second, 'RACE0006'), {});
    await second.close();
    const lines = captured.lines;
    const failures = lines.filter((l) => l.msg === 'spool maintenance failed');
    assert.deepEqual(failures, [], 'compaction did not fail');
    assert.ok(
      lines.some((l) => l.msg === 'spool segment compacted' && l.segment === 1 && l.moved === 2),
      `segment 1 was compacted (its two live messages moved): ${JSON.stringify(lines.filter((l) => /compact|maintenance/.test(String(l.msg))))}`,
    );

    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['RACE0004.0', 'RACE0005.0']);
    for (const id of ['RACE0004', 'RACE0005']) assert.ok((await readBody(third, id)).equals(bodies.get(id)!), id);
  });
});

describe('spool log: bodies read while compaction moves them', () => {
  /**
   * One restart's worth: eight messages written in one life; in the next (no body cached), half
   * of them are delivered, so compaction moves the other half to the head, while copies being
   * delivered keep reading those bodies and other traffic keeps the log's writer busy.
   */
  async function compactionRound(t: TestContext): Promise<{ wrong: string[]; reads: number; compacted: boolean }> {
    const { bodies, captured, spool: second } = await restartedWith(t, 'MOVE000', 8);
    const done = () => captured.lines.some((l) => l.msg === 'spool segment compacted' || l.msg === 'spool maintenance failed');
    let traffic = 0;
    const busy = Promise.all(
      Array.from({ length: 6 }, async () => {
        while (!done()) await store(second, `BUSY${String(traffic++).padStart(4, '0')}`, makeBody(300));
      }),
    );
    // A read of every moving body started at every turn of the event loop until compaction is over.
    const moving = ['MOVE0005', 'MOVE0006', 'MOVE0007', 'MOVE0008'];
    const reads: Array<Promise<string | undefined>> = [];
    const readers = new Promise<void>((resolve) => {
      const spray = () => {
        for (const id of moving) reads.push(readBody(second, id).then((got) => (got.equals(bodies.get(id)!) ? undefined : `${id}: ${got.length} bytes, expected ${bodies.get(id)!.length}`)));
        if (done()) resolve();
        else setImmediate(spray);
      };
      spray();
    });
    for (const id of ['MOVE0001', 'MOVE0002', 'MOVE0003', 'MOVE0004']) await second.settle(job(second, id), {});
    await eventually(done, 5000, 'compaction of the first segment');
    await Promise.all([busy, readers]);
    const wrong = (await Promise.all(reads)).filter((w): w is string => w !== undefined);
    const compacted = captured.lines.some((l) => l.msg === 'spool segment compacted' && l.segment === 1 && l.moved === 4);
    for (const id of moving) assert.ok((await readBody(second, id)).equals(bodies.get(id)!), `${id} once compaction is over`);
    await second.close();
    return { wrong, reads: reads.length, compacted };
  }

  test('a body opened while compaction moves its message reads the whole body', async (t) => {
    let reads = 0;
    for (let round = 1; round <= 5; round++) {
      const result = await compactionRound(t);
      reads += result.reads;
      assert.ok(result.compacted, `round ${round}: segment 1 was compacted, its four live messages moved`);
      assert.deepEqual(result.wrong, [], `round ${round}: every read of a moving body returned the whole body`);
    }
    t.diagnostic(`${reads} reads during compaction, all whole`);
  });
});

/**
 * Runs in a child process whose files may not grow past a limit (`ulimit -f`): a stand-in for a
 * full disk, where a write takes only part of what it was given. It fills the first segment to
 * just under the limit, then gets one batch written that crosses it: a large message's entry
 * followed by another message's commit. Prints every message whose commit() resolved.
 */
const DISK_FULL_CHILD = `
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
const [spoolModule, loggerModule, dir, limitArg] = process.argv.slice(2);
const { LogSpool } = await import(spoolModule);
const { silentLogger } = await import(loggerModule);
const limit = Number(limitArg);
const record = (id, size) => ({ version: 1, id, createdAt: 1, sender: { address: 's@example.com', params: [] }, client: { address: '127.0.0.1', helo: 'h' }, size, copies: [{ destination: '127.0.0.1:25', recipients: [{ address: 'r@example.net', params: [] }] }] });
const body = (id, size) => Buffer.from(\`\${id} \`.repeat(Math.ceil(size / (id.length + 1))).slice(0, size));
const spool = new LogSpool(dir, silentLogger());
await spool.open({ owner: true });
const acked = [];
let failures = 0;
const store = async (id, size) => {
  const w = spool.begin(id);
  w.body.write(body(id, size));
  try {
    await w.prepare(record(id, size));
    await w.commit();
    acked.push([id, size]);
  } catch {
    failures++;
    await w.abort();
  }
};
const firstSegment = () => statSync(join(dir, 'log', readdirSync(join(dir, 'log')).sort()[0])).size;
let n = 0;
const filler = () => \`FILL\${String(n++).padStart(4, '0')}\`;
await store(filler(), 1000);
while (firstSegment() < limit - 120000) await store(filler(), 100000);
while (firstSegment() < limit - 3000) await store(filler(), 1000);
// A prepared message whose commit will sit behind the large entry that crosses the limit.
const victim = spool.begin('VICTIM01');
victim.body.write(body('VICTIM01', 10));
await victim.prepare(record('VICTIM01', 10));
const large = spool.begin('CROSSES1');
await new Promise((resolve) => large.body.end(body('CROSSES1', 20000), resolve));
// One tick: the log's writer busy with a state entry, the large entry and the commit queued behind it.
const [job] = spool.pending();
const settled = spool.settle(job, { retry: { recipients: job.record.copies[0].recipients, error: 'later', nextAttemptAt: 0 } });
const prepared = large.prepare(record('CROSSES1', 20000));
for (let i = 0; i < 20; i++) await Promise.resolve();
const committed = victim.commit();
const [s, p, c] = await Promise.allSettled([settled, prepared, committed]);
if (c.status === 'fulfilled') acked.push(['VICTIM01', 10]);
else failures++;
if (p.status === 'fulfilled') {
  try {
    await large.commit();
    acked.push(['CROSSES1', 20000]);
  } catch {
    failures++;
  }
} else failures++;
// The spool goes on in a new segment.
for (let i = 0; i < 3; i++) await store(\`AFTER\${i}00\`, 500);
await spool.close().catch(() => undefined);
console.log(JSON.stringify({ acked, failures, settled: s.status }));
`;

describe('spool log: a full disk', () => {
  test('a batch the disk took only part of is not acknowledged: every commit that resolved survives a restart', async (t) => {
    const dir = await tempDir(t);
    const script = join(dir, 'disk-full-child.mts');
    await writeFile(script, DISK_FULL_CHILD);
    const root = fileURLToPath(new URL('..', import.meta.url));
    const limitKiB = 256;
    const { stdout } = await promisify(execFile)(
      'bash',
      [
        '-c',
        `ulimit -f ${limitKiB} && exec "$0" --import tsx "$@"`,
        process.execPath,
        script,
        fileURLToPath(new URL('../src/core/spool/log-spool.ts', import.meta.url)),
        fileURLToPath(new URL('../src/core/logger.ts', import.meta.url)),
        join(dir, 'spool'),
        String(limitKiB * KiB),
      ],
      { cwd: root },
    );
    const result = JSON.parse(stdout.trim().split('\n').at(-1)!) as { acked: Array<[string, number]>; failures: number };
    assert.ok(result.failures >= 1, 'the file size limit was hit');
    assert.ok(result.acked.some(([id]) => id.startsWith('AFTER')), 'the spool went on after the failed write');

    const spool = await openSpool(t, join(dir, 'spool'), { owner: true });
    const pending = new Set(spool.pending().map((j) => j.record.id));
    const lost = result.acked.filter(([id]) => !pending.has(id)).map(([id]) => id);
    assert.deepEqual(lost, [], 'no message whose commit resolved is lost');
    for (const [id, size] of result.acked) {
      const expected = Buffer.from(`${id} `.repeat(Math.ceil(size / (id.length + 1))).slice(0, size));
      assert.ok((await readBody(spool, id)).equals(expected), `body of ${id}`);
    }
  });
});

describe('spool log: removal and readers', () => {
  test('remove drops a message on the owner, and it stays gone after a restart', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const keep = makeBody(1234);
    await store(first, 'RMVKEEP1', keep);
    await store(first, 'RMVGONE1', makeBody(999), [['a@example.net'], ['b@example.net']]);
    await store(first, 'RMVGONE2', makeBody(INLINE_MAX + 99));
    await first.settle(job(first, 'RMVGONE1', 1), { retry: { recipients: [rcpt('b@example.net')], error: 'x', nextAttemptAt: 0 } });
    assert.equal(await first.remove('RMVGONE1'), true);
    assert.equal(await first.remove('RMVGONE2'), true);
    assert.deepEqual(pendingKeys(first), ['RMVKEEP1.0']);
    assert.deepEqual(await readdir(join(dir, 'bodies')), [], "a removed message's body file goes with it");
    await assert.rejects(readBody(first, 'RMVGONE1'), /no longer queued/);
    assert.equal(await first.remove('RMVGONE1'), false, 'removing twice');
    assert.equal(await first.remove('NOSUCHID'), false);
    assert.equal(await first.remove('../etc'), false, 'an invalid id');
    await first.close();

    const second = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(second), ['RMVKEEP1.0']);
    assert.ok((await readBody(second, 'RMVKEEP1')).equals(keep));
    await second.close();
    const third = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(third), ['RMVKEEP1.0']);
  });

  test('a reader that is not the owner sees committed messages only, and cannot write', async (t) => {
    const dir = await tempDir(t);
    const owner = await openSpool(t, dir, { owner: true });
    const small = makeBody(700);
    const large = makeBody(INLINE_MAX + 1000);
    const recA = await store(owner, 'READ000A', small);
    await store(owner, 'READ000B', large);
    await owner.settle(job(owner, 'READ000B'), { retry: { recipients: [rcpt('a@example.net')], error: 'later', nextAttemptAt: 42 } });
    const halfBody = makeBody(INLINE_MAX + 50);
    const half = owner.begin('READ000C');
    half.body.write(halfBody);
    await half.prepare(makeRecord('READ000C', [['c@example.net']], halfBody.length));

    const reader = await openSpool(t, dir);
    assert.deepEqual(pendingKeys(reader), ['READ000A.0', 'READ000B.0']);
    assert.deepEqual(job(reader, 'READ000A').record, recA);
    assert.equal(job(reader, 'READ000B').state.attempts, 1);
    assert.equal(job(reader, 'READ000B').state.lastError, 'later');
    assert.ok((await readBody(reader, 'READ000A')).equals(small));
    assert.ok((await readBody(reader, 'READ000B')).equals(large));
    assert.throws(() => reader.begin('READ000D'), (err: Error & { code?: string }) => err.code === ErrorCodes.SPOOL_FAILED && /read-only/.test(err.message));
    assert.ok((await readdir(join(dir, 'bodies'))).includes('READ000C.eml'), "a reader leaves the owner's prepared body alone");
    await reader.close();

    // The owner goes on: the commit of the prepared message, seen by the next reader.
    await half.commit();
    const later = await openSpool(t, dir);
    assert.deepEqual(pendingKeys(later), ['READ000A.0', 'READ000B.0', 'READ000C.0']);
    assert.ok((await readBody(later, 'READ000C')).equals(halfBody));
  });

  test('begin refuses an invalid id', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true });
    for (const id of ['short', '../../etc/passwd', 'has space1', 'x'.repeat(41)]) {
      assert.throws(() => spool.begin(id), (err: Error & { code?: string }) => err.code === ErrorCodes.SPOOL_FAILED, id);
    }
  });
});

/** `type id[.index]` of a log entry, to compare layouts. */
function entryLabel(entry: LogEntry): string {
  const json = entry.type === 'M' ? entry.payload.toString('utf8', 4, 4 + entry.payload.readUInt32BE(0)) : entry.payload.toString('utf8');
  const parsed = JSON.parse(json) as { id?: string; record?: { id: string }; index?: number };
  return `${entry.type} ${parsed.record?.id ?? parsed.id}${parsed.index === undefined ? '' : `.${parsed.index}`}`;
}

/** What `promise` settled to within `ms`, or 'still pending'. */
async function settledWithin<T>(promise: Promise<T>, ms: number): Promise<PromiseSettledResult<T> | 'still pending'> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'still pending'>((resolve) => {
    timer = setTimeout(() => resolve('still pending'), ms);
  });
  try {
    return await Promise.race([Promise.allSettled([promise]).then(([result]) => result!), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** `node:fs/promises` as the spool's modules import it; patched only to time a race, and restored. */
const fsPromises = createRequire(import.meta.url)('node:fs/promises') as { rename: (from: string, to: string) => Promise<void> };

/**
 * Runs `then` once, right after the first rename whose source `matches` completes and before its
 * caller resumes. The real rename is back at once after that, and at the latest when the test ends.
 */
function afterRename(t: TestContext, matches: (from: string) => boolean, then: () => void): void {
  const real = fsPromises.rename;
  let patched = true;
  const restore = () => {
    if (!patched) return;
    patched = false;
    fsPromises.rename = real;
    syncBuiltinESMExports();
  };
  fsPromises.rename = async (from, to) => {
    await real(from, to);
    if (patched && matches(String(from))) {
      restore();
      then();
    }
  };
  syncBuiltinESMExports();
  t.after(restore);
}

/** One message stored and delivered at once, as a backup that is up gets it. */
async function deliveredAtOnce(spool: LogSpool, id: string, bytes = 2000): Promise<void> {
  await store(spool, id, makeBody(bytes));
  await spool.settle(job(spool, id), {});
}

describe('spool log: entries written while compaction moves their message', () => {
  const SEGMENT = 20_000;

  /**
   * Segment 1: A (two copies), B and a filler F; segment 2: G, nearly full. F delivered: segment 1
   * is compacted, A rewritten at the end of segment 2 and B at the start of segment 3. `meanwhile`
   * runs while those rewrites are still on their way to disk, so its entry about A lands in
   * segment 3, after B's rewrite. Then B is delivered (segment 1 goes), and a large H seals
   * segment 3, so that maintenance judges it while segment 2, A's new place, stays.
   */
  async function entryAboutAWhileItMoves(t: TestContext, meanwhile: (spool: LogSpool) => Promise<unknown>, label: string): Promise<{ dir: string; bodyA: Buffer }> {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true, segmentBytes: SEGMENT });
    const bodyA = makeBody(2000);
    await store(spool, 'AAAAAA01', bodyA, [['a0@example.net'], ['a1@example.net']]);
    await store(spool, 'BBBBBB01', makeBody(2000));
    await store(spool, 'FFFFFF01', makeBody(12_000));
    await store(spool, 'GGGGGG01', makeBody(15_000));
    assert.deepEqual(await segmentFiles(dir), [segmentName(1), segmentName(2)]);
    await spool.settle(job(spool, 'FFFFFF01'), {}); // queues the rewrites of A and B
    await meanwhile(spool); // called in the same turn: the rewrites are not on disk yet

    // The layout this test is about: A's rewrite in segment 2, the entry about A in segment 3.
    assert.equal((await entriesOf(join(dir, 'log', segmentName(2)))).map(entryLabel).at(-1), 'M AAAAAA01', 'A was rewritten into segment 2');
    assert.deepEqual((await entriesOf(join(dir, 'log', segmentName(3)))).map(entryLabel), ['M BBBBBB01', label], 'the entry about A follows B in segment 3');

    await spool.settle(job(spool, 'BBBBBB01'), {});
    await store(spool, 'HHHHHH01', makeBody(18_000)); // does not fit in segment 3: seals it
    await spool.close(); // waits for the maintenance the seal started
    assert.ok(!(await segmentFiles(dir)).includes(segmentName(1)), 'the compacted segment 1 was deleted');
    return { dir, bodyA };
  }

  test('a copy delivered while compaction rewrites its message stays delivered after a restart', async (t) => {
    const { dir, bodyA } = await entryAboutAWhileItMoves(t, (spool) => spool.settle(job(spool, 'AAAAAA01', 0), {}), 'D AAAAAA01.0');
    const again = await openSpool(t, dir, { owner: true, segmentBytes: SEGMENT });
    assert.deepEqual(pendingKeys(again), ['AAAAAA01.1', 'GGGGGG01.0', 'HHHHHH01.0'], 'A.0 is not sent twice');
    assert.ok((await readBody(again, 'AAAAAA01')).equals(bodyA));
    await again.close();
    const third = await openSpool(t, dir, { owner: true, segmentBytes: SEGMENT });
    assert.deepEqual(pendingKeys(third), ['AAAAAA01.1', 'GGGGGG01.0', 'HHHHHH01.0']);
  });

  test('a message removed while compaction rewrites it stays removed after a restart', async (t) => {
    const { dir } = await entryAboutAWhileItMoves(
      t,
      async (spool) => assert.equal(await spool.remove('AAAAAA01'), true),
      'X AAAAAA01',
    );
    const again = await openSpool(t, dir, { owner: true, segmentBytes: SEGMENT });
    assert.deepEqual(pendingKeys(again), ['GGGGGG01.0', 'HHHHHH01.0'], 'the removed message does not come back');
    await assert.rejects(readBody(again, 'AAAAAA01'), /no longer queued/);
  });
});

describe('spool log: an abort during prepare', () => {
  test('an abort while prepare moves a large body into place leaves no message, segment or body behind', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true, segmentBytes: 16 * KiB });
    const writer = spool.begin('LEAKED01');
    writer.body.write(makeBody(INLINE_MAX + 70 * KiB)); // spills to tmp/LEAKED01.eml
    // The primary fails just as prepare has renamed the body into bodies/ (transaction.ts aborts then).
    let aborted: Promise<void> | undefined;
    afterRename(t, (from) => from === join(dir, 'tmp', 'LEAKED01.eml'), () => {
      aborted = writer.abort();
    });
    await writer.prepare(makeRecord('LEAKED01', [['a@example.net']], INLINE_MAX + 70 * KiB)).catch(() => undefined); // either outcome is fine
    assert.ok(aborted, 'the abort came while prepare was running');
    assert.equal((await settledWithin(aborted, 5000)) === 'still pending', false, 'the abort finishes');
    await assert.rejects(readBody(spool, 'LEAKED01'), /no longer queued/, 'the aborted message is not held');

    // Normal traffic, five transactions at a time, every message delivered at once.
    for (let round = 0; round < 8; round++) await Promise.all([0, 1, 2, 3, 4].map((k) => deliveredAtOnce(spool, `ABRT${String(round * 5 + k).padStart(4, '0')}`)));
    assert.deepEqual(spool.pending(), []);
    await eventually(async () => (await spoolFiles(dir)).length === 0, 8000, 'no segment, body or arriving body left');
    await spool.close();
    const again = await openSpool(t, dir, { owner: true, segmentBytes: 16 * KiB });
    assert.deepEqual(again.pending(), []);
    assert.deepEqual(await spoolFiles(dir), []);
  });

  test('prepare settles when an abort destroys the body it is waiting for', async (t) => {
    const dir = await tempDir(t);
    const spool = await openSpool(t, dir, { owner: true });
    const cases = [
      { id: 'HANGING1', bytes: INLINE_MAX + 70 * KiB, abortFirst: false }, // its file still being written
      { id: 'HANGING2', bytes: 500, abortFirst: false },
      { id: 'HANGING3', bytes: INLINE_MAX + 70 * KiB, abortFirst: true }, // prepare after the abort finished
    ];
    for (const { id, bytes, abortFirst } of cases) {
      const writer = spool.begin(id);
      writer.body.write(makeBody(bytes));
      // A large body has spilled to its file first (an abort before that file is even open is another matter).
      if (bytes > INLINE_MAX) await eventually(async () => (await readdir(join(dir, 'tmp'))).includes(`${id}.eml`), 5000, `${id} spilled to tmp/`);
      const record = makeRecord(id, [['a@example.net']], bytes);
      let aborted: Promise<void> | undefined;
      if (abortFirst) {
        aborted = writer.abort();
        assert.notEqual(await settledWithin(aborted, 3000), 'still pending', `${id}: abort finished`);
      }
      const prepared = writer.prepare(record);
      aborted ??= writer.abort();
      const outcome = await settledWithin(prepared, 3000);
      assert.notEqual(outcome, 'still pending', `${id}: prepare settled`);
      if (outcome !== 'still pending' && outcome.status === 'rejected') assert.equal((outcome.reason as { code?: string }).code, ErrorCodes.SPOOL_FAILED);
      if (abortFirst) assert.equal(outcome !== 'still pending' && outcome.status, 'rejected', `${id}: no prepare after an abort`);
      assert.notEqual(await settledWithin(aborted, 3000), 'still pending', `${id}: abort finished`);
      await assert.rejects(readBody(spool, id), /no longer queued/);
    }
    assert.deepEqual(spool.pending(), []);
    await eventually(async () => (await spoolFiles(dir)).length === 0, 8000, 'nothing left of the aborted messages');
  });
});

describe('spool log: segments kept by a slow copy', () => {
  test('one long-pending copy leaves only a few segment files on disk, not one per retry', async (t) => {
    const dir = await tempDir(t);
    const segmentBytes = 16 * KiB;
    const first = await openSpool(t, dir, { owner: true, segmentBytes });
    const stuckBody = makeBody(6000);
    await store(first, 'STUCK001', stuckBody); // its backup is down
    await first.close();
    // After a restart the segment holding it is small and almost entirely live.
    const spool = await openSpool(t, dir, { owner: true, segmentBytes });
    let retries = 0;
    for (let round = 0; round < 60; round++) {
      await Promise.all([0, 1, 2, 3, 4].map((k) => deliveredAtOnce(spool, `MANY${String(round * 5 + k).padStart(4, '0')}`)));
      if (round % 2 === 0) {
        retries++;
        await spool.settle(job(spool, 'STUCK001'), { retry: { recipients: [rcpt('a@example.net')], error: '421 down', nextAttemptAt: 1_900_000_000_000 } });
      }
    }
    assert.deepEqual(pendingKeys(spool), ['STUCK001.0']);
    await eventually(async () => (await segmentFiles(dir)).length <= 2, 8000, 'at most two segments left');
    assert.ok((await readBody(spool, 'STUCK001')).equals(stuckBody));
    await spool.close();

    const again = await openSpool(t, dir, { owner: true, segmentBytes });
    assert.deepEqual(pendingKeys(again), ['STUCK001.0']);
    assert.equal(job(again, 'STUCK001').state.attempts, retries);
    assert.ok((await readBody(again, 'STUCK001')).equals(stuckBody));
  });
});

describe('spool log: requests and readers beside a running owner', () => {
  test('read-only opens while the owner deletes segments never fail', async (t) => {
    const dir = await tempDir(t);
    const owner = await openSpool(t, dir, { owner: true, segmentBytes: 8 * KiB });
    let stop = false;
    let delivered = 0;
    const traffic = (async () => {
      while (!stop) await deliveredAtOnce(owner, `RDRS${String(delivered++).padStart(6, '0')}`, 3000);
    })();
    const failures: string[] = [];
    for (let n = 0; n < 100; n++) {
      const reader = new LogSpool(dir, silentLogger());
      try {
        await reader.open();
      } catch (err) {
        failures.push((err as Error).message);
      } finally {
        await reader.close();
      }
    }
    stop = true;
    await traffic;
    assert.deepEqual(failures, []);
    assert.ok(delivered >= 20, `the owner kept writing and deleting segments meanwhile (${delivered} messages)`);
  });

  test('a directory named like a delete request does not crash the owner', async (t) => {
    const dir = await tempDir(t);
    const captured = capturingLogger();
    const owner = new LogSpool(dir, captured.logger);
    await owner.open({ owner: true });
    t.after(() => owner.close().catch(() => undefined));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    t.after(() => process.off('unhandledRejection', onUnhandled));

    await mkdir(join(dir, 'delete-ABCDEF12')); // an admin's mistake, or a request that cannot be unlinked
    // The owner checks for requests every second: two checks that met the directory.
    const failedChecks = () => captured.lines.filter((l) => l.msg === 'cannot serve queue request').length;
    await eventually(() => failedChecks() >= 2, 5000, 'two request checks over the directory');
    assert.deepEqual(unhandled, []);
    // It does not hold up the requests listed after it.
    await store(owner, 'DELAFTER', makeBody(500));
    await writeFile(join(dir, 'delete-DELAFTER'), 'DELAFTER\n');
    await eventually(async () => (await readFile(join(dir, 'delete-DELAFTER.result'), 'utf8').catch(() => '')) === 'deleted', 5000, 'the later request served');
    assert.deepEqual(owner.pending(), []);

    // Still a working spool.
    const body = makeBody(1000);
    await store(owner, 'AFTERDIR', body);
    assert.deepEqual(pendingKeys(owner), ['AFTERDIR.0']);
    assert.ok((await readBody(owner, 'AFTERDIR')).equals(body));
    await owner.settle(job(owner, 'AFTERDIR'), {});
    assert.deepEqual(owner.pending(), []);
    assert.equal((await settledWithin(owner.close(), 5000)) === 'still pending', false, 'close finishes');
    assert.deepEqual(unhandled, []);
  });

  test('remove by a process that is not the owner is done by the owner, and reports whether it was queued', async (t) => {
    const dir = await tempDir(t);
    const owner = await openSpool(t, dir, { owner: true });
    const keep = makeBody(800);
    await store(owner, 'RMVREQ01', keep);
    await store(owner, 'RMVREQ02', makeBody(900));
    await store(owner, 'RMVREQ03', makeBody(INLINE_MAX + 10));
    const reader = await openSpool(t, dir);
    assert.deepEqual(pendingKeys(reader), ['RMVREQ01.0', 'RMVREQ02.0', 'RMVREQ03.0']);

    assert.equal(await reader.remove('RMVREQ02'), true);
    assert.deepEqual(pendingKeys(owner), ['RMVREQ01.0', 'RMVREQ03.0'], 'the owner dropped it');
    await assert.rejects(readBody(owner, 'RMVREQ02'), /no longer queued/);

    // Removed by the owner itself first: the reader still lists it, the owner no longer has it.
    assert.equal(await owner.remove('RMVREQ03'), true);
    assert.ok(pendingKeys(reader).includes('RMVREQ03.0'));
    assert.equal(await reader.remove('RMVREQ03'), false, 'not queued any more');
    assert.deepEqual(pendingKeys(owner), ['RMVREQ01.0']);
    assert.deepEqual((await readdir(dir)).filter((name) => name.startsWith('delete-')), [], 'no request or answer file left');

    await owner.close();
    const again = await openSpool(t, dir, { owner: true });
    assert.deepEqual(pendingKeys(again), ['RMVREQ01.0']);
    assert.ok((await readBody(again, 'RMVREQ01')).equals(keep));
  });
});

describe('spool log: dead letters', () => {
  test('two copies of one message dead-lettered at the same moment both settle, with both letters and the body', async (t) => {
    const dir = await tempDir(t);
    const first = await openSpool(t, dir, { owner: true });
    const body = makeBody(100_000);
    await store(first, 'DEADMSG1', body, [['r0@example.net'], ['r1@example.net']]);
    await first.close();
    // After a restart the body is not cached: each dead letter streams it from the segment.
    const spool = await openSpool(t, dir, { owner: true });
    const results = await Promise.allSettled(
      [0, 1].map((index) => spool.settle(job(spool, 'DEADMSG1', index), { dead: { recipients: [rcpt(`r${index}@example.net`)], reason: '550 5.1.1 no such user' } })),
    );
    assert.deepEqual(results.map((r) => (r.status === 'rejected' ? String(r.reason) : r.status)), ['fulfilled', 'fulfilled']);
    assert.deepEqual(spool.pending(), []);
    assert.deepEqual((await readdir(join(dir, 'dead'))).sort(), ['DEADMSG1.0.json', 'DEADMSG1.1.json', 'DEADMSG1.eml']);
    assert.ok((await readFile(join(dir, 'dead', 'DEADMSG1.eml'))).equals(body), 'the dead body is whole');
    const letters = await spool.deadLetters();
    assert.deepEqual(letters.map((l) => l.recipients.map((r) => r.address)).sort(), [['r0@example.net'], ['r1@example.net']]);
    await spool.close();
    const again = await openSpool(t, dir, { owner: true });
    assert.deepEqual(again.pending(), []);
  });
});
