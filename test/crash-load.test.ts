/**
 * Crash safety under concurrent load: the router is killed with SIGKILL while ten clients are in
 * the middle of their transactions. Every message a client heard 250 for reaches the backup after
 * the restart, and no message reaches it twice.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { crashRouterConfig as routerConfig, startChildRouter, unusedPort as freePort } from './helpers/child-router.ts';
import { eventually, sink, spoolFiles, tempDir } from './helpers/fixtures.ts';

const CLIENTS = 10;
/** Acknowledged messages before the kill. */
const KILL_AFTER = 40;

const subjectOf = (body: Buffer | string): string | undefined => /^Subject: (.*)$/m.exec(body.toString())?.[1]?.trim();

describe('crash safety under load (kill -9)', () => {
  test('every message acknowledged before a kill during concurrent transactions is delivered after restart, none twice', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t, { name: 'primary' });
    const backupPort = await freePort(t);
    const config = routerConfig(dir, primary.label, [`127.0.0.1:${backupPort}`]);
    const first = await startChildRouter(t, dir, config);

    const sent = new Map<string, string>(); // subject → body, for every message whose DATA was started
    const acked = new Set<string>();
    const failures: string[] = [];
    let killed = false;
    const kill = () => {
      if (killed) return;
      killed = true;
      first.proc.kill('SIGKILL');
    };
    const client = async (c: number): Promise<void> => {
      for (let n = 0; !killed; n++) {
        const subject = `load c${c} m${n}`;
        const body = sampleMessage(subject, `client ${c}, message ${n}\r\n${'payload line\r\n'.repeat(20 + ((c * 7 + n) % 50))}`);
        sent.set(subject, body);
        try {
          const result = await sendMail(first.port, { from: `c${c}@example.com`, to: [`r${c}.${n}@example.net`], body });
          if (result.data?.code === 250) {
            acked.add(subject);
            if (acked.size >= KILL_AFTER) kill();
          } else if (!killed) failures.push(`${subject}: ${result.data?.code ?? 'no DATA reply'} ${result.data?.text ?? ''}`);
        } catch (err) {
          // The router died under this transaction (or before it connected): this client stops.
          if (!killed) failures.push(`${subject}: ${(err as Error).message}`);
          return;
        }
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, (_, c) => client(c)));
    assert.equal(await first.exited, 'SIGKILL');
    assert.deepEqual(failures, [], 'before the kill, every transaction succeeded');
    assert.ok(acked.size >= KILL_AFTER, `${acked.size} acknowledged`);
    for (const subject of acked) assert.ok(primary.messages.some((m) => subjectOf(m.body) === subject), `the primary accepted ${subject} before its 250`);
    const inFlight = [...sent.keys()].filter((s) => !acked.has(s));
    t.diagnostic(`${acked.size} acknowledged, ${inFlight.length} cut off by the kill`);

    const backup = await sink(t, { name: 'backup', port: backupPort });
    const second = await startChildRouter(t, dir, config);
    const listening = second.lines.find((l) => l.msg === 'gosmtp-dup listening')!;
    assert.ok(Number(listening.pending) >= acked.size, `pending at restart (${String(listening.pending)}) covers the ${acked.size} acknowledged copies`);

    // Once the spool is empty every copy is settled: what the backup has then is final.
    await eventually(async () => (await spoolFiles(join(dir, 'spool'))).length === 0, 30_000, 'empty spool');
    const received = new Set(backup.messages.map((m) => subjectOf(m.body)));
    const missing = [...acked].filter((s) => !received.has(s));
    const unreadable = backup.messages.filter((m) => subjectOf(m.body) === undefined);
    assert.deepEqual(
      missing,
      [],
      `every acknowledged message reached the backup; of ${acked.size} acknowledged (${String(listening.pending)} pending at restart), missing ${missing.length}; ` +
        `the backup got ${backup.messages.length}, ${unreadable.length} of them without a subject (sizes ${JSON.stringify(unreadable.map((m) => m.size))}); ` +
        `router warnings and errors: ${JSON.stringify(second.lines.filter((l) => Number(l.level) >= 40)).slice(0, 2000)}`,
    );

    const counts = new Map<string, number>();
    for (const m of backup.messages) {
      const subject = subjectOf(m.body)!;
      assert.ok(sent.has(subject), `the backup got only messages that were sent (${subject})`);
      assert.equal(m.body.toString(), sent.get(subject), `${subject} arrived byte for byte`);
      counts.set(subject, (counts.get(subject) ?? 0) + 1);
    }
    const twice = [...counts].filter(([, n]) => n > 1);
    assert.deepEqual(twice, [], 'no message delivered twice');
    for (const subject of acked) assert.equal(counts.get(subject), 1, subject);
    assert.equal(second.lines.filter((l) => l.level === 50 || l.level === 60).length, 0, `no errors logged: ${JSON.stringify(second.lines.filter((l) => Number(l.level) >= 50))}`);

    second.proc.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  });
});
