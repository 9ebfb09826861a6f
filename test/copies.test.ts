/**
 * Backups mirror the primary (behaviour 5) and copies are durable (behaviour 6).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { stringify } from 'yaml';
import { silentLogger } from '../src/core/logger.ts';
import { LogSpool } from '../src/core/spool/log-spool.ts';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { BIN } from './helpers/child-router.ts';
import { eventually, rawServer, router, sink, spoolFiles, tempDir } from './helpers/fixtures.ts';

const FROM = 'sender@example.com';

describe('backups mirror the primary', () => {
  test('each backup gets the exact message with only the recipients the primary accepted', async (t) => {
    const primary = await sink(t, { behaviour: { rcpt: (to) => (to.startsWith('no') ? { code: 550, enhanced: '5.1.1', text: 'unknown' } : undefined) } });
    const b1 = await sink(t, { name: 'b1' });
    const b2 = await sink(t, { name: 'b2' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [b1.label, b2.label] } } });
    const body = sampleMessage('mirror');
    const result = await sendMail(r.port, { from: FROM, to: ['yes1@example.net', 'no@example.net', 'yes2@example.net'], body });
    assert.equal(result.data?.code, 250);
    for (const backup of [b1, b2]) {
      const [copy] = await backup.waitFor(1);
      assert.equal(copy!.from, FROM);
      assert.deepEqual(copy!.to, ['yes1@example.net', 'yes2@example.net']);
      assert.equal(copy!.body.toString(), body);
    }
  });

  test('a message the primary refuses produces no copies and leaves nothing in the spool', async (t) => {
    const primary = await sink(t, { behaviour: { data: () => ({ code: 554, enhanced: '5.7.1', text: 'no' }) } });
    const backup = await sink(t, { name: 'backup' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    assert.equal(result.data?.code, 554);
    // A second, accepted message proves the worker ran: only it arrives.
    primary.behave({});
    await sendMail(r.port, { from: FROM, to: ['second@example.net'], body: sampleMessage() });
    const [copy] = await backup.waitFor(1);
    assert.deepEqual(copy!.to, ['second@example.net']);
    // Finished segments are deleted: an idle router with nothing pending keeps no files.
    await eventually(async () => (await spoolFiles(r.queueDir)).length === 0, 5000, 'empty spool');
    assert.equal(backup.messages.length, 1);
  });

  test('a temporary primary failure produces no copies', async (t) => {
    const primary = await sink(t, { behaviour: { data: () => ({ code: 451, enhanced: '4.3.0', text: 'later' }) } });
    const backup = await sink(t, { name: 'backup' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    assert.equal((await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() })).data?.code, 451);
    assert.deepEqual(r.router.spool.pending(), []);
    await eventually(async () => (await spoolFiles(r.queueDir)).length === 0, 5000, 'empty spool');
  });
});

describe('durable copies', () => {
  test('a body too large to keep in memory streams through its file and reaches every backup byte for byte', async (t) => {
    const primary = await sink(t);
    const b1 = await sink(t, { name: 'b1' });
    const b2 = await sink(t, { name: 'b2' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [b1.label, b2.label] } } });
    const small = sampleMessage('small', 'kept in memory');
    const large = sampleMessage('large', `${'0123456789abcdef'.repeat(6)}\r\n`.repeat(5000)); // ~490 KB
    for (const body of [small, large]) assert.equal((await sendMail(r.port, { from: FROM, to: ['a@example.net'], body })).data?.code, 250);
    for (const backup of [b1, b2]) {
      const copies = await backup.waitFor(2);
      assert.deepEqual(copies.map((c) => c.body.toString()).sort(), [large, small].sort());
    }
    // The last copy to finish removes the message: nothing is left behind.
    await eventually(async () => (await spoolFiles(r.queueDir)).length === 0, 5000, 'empty spool');
  });

  test('the copy is on disk before the client hears 250: another reader of the spool finds it', async (t) => {
    const primary = await sink(t);
    const down = await rawServer(t, 'silent');
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [down.label], timeout_seconds: 0.3 } } });
    const result = await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('durable') });
    assert.equal(result.data?.code, 250);
    // A second process's view: only what reached the files.
    const reader = new LogSpool(r.queueDir, silentLogger());
    await reader.open();
    t.after(() => reader.close());
    const [job] = reader.pending();
    assert.equal(job?.record.copies[0]!.destination, down.label);
    assert.deepEqual(job!.record.copies[0]!.recipients, [{ address: 'a@example.net', params: [] }]);
    let body = '';
    for await (const chunk of reader.openBody(job!.record.id)) body += chunk;
    assert.match(body, /Subject: durable/);
  });

  test('copies queued by a version with one file per message are imported and delivered', async (t) => {
    const dir = await tempDir(t);
    const primary = await sink(t);
    const b1 = await sink(t, { name: 'b1' });
    const b2 = await sink(t, { name: 'b2' });
    const { mkdir, writeFile } = await import('node:fs/promises');
    const legacy = join(dir, 'queue');
    await mkdir(legacy, { recursive: true });
    const body = sampleMessage('from the old queue');
    const record = {
      version: 1,
      id: 'LEGACY01',
      createdAt: Date.now(),
      sender: { address: FROM, params: [] },
      client: { address: '127.0.0.1', helo: 'old' },
      size: body.length,
      copies: [b1.label, b2.label].map((destination) => ({ destination, recipients: [{ address: 'a@example.net', params: [] }] })),
    };
    await writeFile(join(legacy, 'LEGACY01.json'), JSON.stringify(record));
    await writeFile(join(legacy, 'LEGACY01.eml'), body);
    await writeFile(join(legacy, 'LEGACY01.0.done'), ''); // b1 had it already
    await writeFile(join(legacy, 'LEGACY01.1.state.json'), JSON.stringify({ attempts: 3, nextAttemptAt: 0, lastError: 'down' }));
    await writeFile(join(legacy, 'ORPHAN01.eml'), 'never committed');
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [b1.label, b2.label] }, queue: { dir } } });
    const [copy] = await b2.waitFor(1);
    assert.equal(copy!.body.toString(), body);
    await eventually(async () => (await spoolFiles(dir)).length === 0, 5000, 'empty spool');
    assert.equal(b1.messages.length, 0, 'a copy delivered before the upgrade is not sent again');
    assert.deepEqual((await readdir(dir)).filter((name) => name === 'queue'), [], 'the old folder is gone');
    await r.close();
  });

  test('4xx from a backup is retried with backoff until it accepts', async (t) => {
    const primary = await sink(t);
    let refusals = 0;
    const backup = await sink(t, {
      name: 'backup',
      behaviour: { data: () => (++refusals <= 2 ? { code: 451, enhanced: '4.3.0', text: 'try later' } : undefined) },
    });
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] }, queue: { retry_initial_seconds: 0.1, retry_max_seconds: 0.4 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    const [copy] = await backup.waitFor(1);
    assert.equal(refusals, 3);
    assert.deepEqual(copy!.to, ['a@example.net']);
    await eventually(() => r.router.spool.pending().length === 0, 5000, 'copy settled');
  });

  test('a backup that hangs holds at most queue.destination_concurrency slots; the other backup gets every copy', async (t) => {
    const primary = await sink(t);
    const hanging = await rawServer(t, { replyDelayMs: { BODY: Infinity } }); // takes the body, never answers the dot
    const fast = await sink(t, { name: 'fast' });
    const r = await router(t, {
      config: {
        relay: { destination_primary: primary.label, destination_backups: [hanging.label, fast.label], data_timeout_seconds: 120 },
        queue: { concurrency: 8, destination_concurrency: 3 },
      },
    });
    for (let n = 0; n < 12; n++) assert.equal((await sendMail(r.port, { from: FROM, to: [`r${n}@example.net`], body: sampleMessage(`${n}`) })).data?.code, 250);
    // With one pool for all, the hanging backup would end up holding all 8 slots.
    await fast.waitFor(12, 20_000);
    await eventually(() => hanging.messages.length === 3, 5000, 'the hanging backup holds its three');
    assert.equal(hanging.connections(), 3, 'never more than three copies to it at once');
  });

  test('a backup that is down gets the copy once it is back', async (t) => {
    const primary = await sink(t);
    const placeholder = await rawServer(t, 'silent');
    const port = placeholder.port;
    await placeholder.close();
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [`127.0.0.1:${port}`] }, queue: { retry_initial_seconds: 0.1, retry_max_seconds: 0.2 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    await eventually(() => (r.router.spool.pending()[0]?.state.attempts ?? 0) >= 2, 5000, 'two failed attempts');
    const backup = await sink(t, { name: 'backup', port });
    const [copy] = await backup.waitFor(1);
    assert.deepEqual(copy!.to, ['a@example.net']);
  });

  test('copies to a backup whose circuit is open wait for its probe; no attempt is counted, even on queue retry', async (t) => {
    const primary = await sink(t);
    const placeholder = await rawServer(t, 'silent');
    const down = `127.0.0.1:${placeholder.port}`;
    await placeholder.close();
    const r = await router(t, {
      config: {
        relay: { destination_primary: primary.label, destination_backups: [down] },
        queue: { retry_initial_seconds: 0.05, retry_max_seconds: 0.1 },
        health: { failure_threshold: 1, cooldown_seconds: 60 },
      },
    });
    const jobs = () => new Map(r.router.spool.pending().map((job) => [job.record.id, job.state]));
    const waiting = () => [...jobs().values()].every((state) => state.nextAttemptAt > Date.now() + 30_000);
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('first') });
    // The first copy's attempt opens the circuit; after its short backoff it waits for the probe.
    await eventually(() => jobs().size === 1 && waiting(), 5000, 'first copy waits for the probe');
    await sendMail(r.port, { from: FROM, to: ['b@example.net'], body: sampleMessage('second') });
    await eventually(() => jobs().size === 2 && waiting(), 5000, 'second copy waits for the probe');
    assert.deepEqual([...jobs().values()].map((state) => state.attempts).sort(), [0, 1]);
    assert.equal(await r.router.spool.retryNow(), 2);
    await eventually(waiting, 5000, 'retried copies wait for the probe again');
    assert.deepEqual([...jobs().values()].map((state) => state.attempts).sort(), [0, 1], 'nothing was tried, nothing counted');
  });

  test('5xx from a backup dead-letters the copy with the reason; other backups are unaffected', async (t) => {
    const primary = await sink(t);
    const refusing = await sink(t, { name: 'refusing', behaviour: { rcpt: () => ({ code: 550, enhanced: '5.1.1', text: 'no such user' }) } });
    const fine = await sink(t, { name: 'fine' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [refusing.label, fine.label] } } });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    await fine.waitFor(1);
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 5000, 'dead letter');
    const [letter] = await r.router.spool.deadLetters();
    assert.equal(letter!.destination, refusing.label);
    assert.match(letter!.reason, /550 5\.1\.1 no such user/);
    assert.deepEqual(letter!.recipients.map((x) => x.address), ['a@example.net']);
    assert.ok((await readdir(join(r.queueDir, 'dead'))).some((f) => f.endsWith('.eml')), 'the body is kept with the dead letter');
    await eventually(() => r.router.spool.pending().length === 0, 5000, 'nothing pending');
  });

  test('queue requeue puts dead letters back: the running router delivers them, byte for byte', async (t) => {
    const dir = await tempDir(t);
    const queueDir = join(dir, 'spool');
    const primary = await sink(t);
    const backup = await sink(t, { name: 'new', behaviour: { rcpt: () => ({ code: 550, enhanced: '5.1.1', text: 'no such mailbox yet' }) } });
    const config = { relay: { destination_primary: primary.label, destination_backups: [backup.label] }, queue: { dir: queueDir } };
    const r = await router(t, { config });
    const body = sampleMessage('requeue me');
    await sendMail(r.port, { from: FROM, to: ['a@example.net', 'b@example.net'], body });
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 5000, 'dead-lettered');
    backup.behave({}); // the mailboxes now exist
    const file = join(dir, 'config.yaml');
    await writeFile(file, stringify(config));
    const run = await new Promise<{ code: number; stdout: string }>((resolve) =>
      execFile(process.execPath, [BIN, 'queue', 'requeue', '--config', file], (err, stdout) => resolve({ code: err ? 1 : 0, stdout })),
    );
    assert.equal(run.code, 0);
    assert.match(run.stdout, /^requeued 1 dead copy; the running router \(pid \d+\) delivers them now/);
    const [copy] = await backup.waitFor(1);
    assert.deepEqual(copy!.to, ['a@example.net', 'b@example.net']);
    assert.equal(copy!.body.toString(), body);
    assert.deepEqual(await r.router.spool.deadLetters(), [], 'no longer a dead letter');
    assert.deepEqual((await readdir(join(queueDir, 'dead'))), [], 'nor its body');
  });

  test('queue requeue ID without a router queues the dead copy for the next start', async (t) => {
    const dir = await tempDir(t);
    const queueDir = join(dir, 'spool');
    const primary = await sink(t);
    const backup = await sink(t, { name: 'new', behaviour: { data: () => ({ code: 554, enhanced: '5.6.0', text: 'not yet' }) } });
    const config = { relay: { destination_primary: primary.label, destination_backups: [backup.label] }, queue: { dir: queueDir } };
    const r = await router(t, { config });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('later') });
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 5000, 'dead-lettered');
    const [letter] = await r.router.spool.deadLetters();
    await r.close();
    const file = join(dir, 'config.yaml');
    await writeFile(file, stringify(config));
    const cli = (args: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
        execFile(process.execPath, [BIN, 'queue', ...args, '--config', file], (err, stdout, stderr) => resolve({ code: err ? Number(err.code) : 0, stdout, stderr })),
      );
    assert.equal((await cli(['requeue', 'NOSUCHID1'])).code, 1);
    const run = await cli(['requeue', letter!.id]);
    assert.equal(run.stdout, 'requeued 1 dead copy; the next start of the router delivers them\n', run.stderr);
    const listed = JSON.parse((await cli(['list', '--json'])).stdout) as { pending: Array<{ destination: string }>; dead: unknown[] };
    assert.deepEqual([listed.pending.map((p) => p.destination), listed.dead], [[backup.label], []]);
  });

  test('a backup refusing the sender dead-letters the copy for every recipient, with the MAIL reply', async (t) => {
    const primary = await sink(t);
    const refusing = await sink(t, { name: 'refusing', behaviour: { mail: () => ({ code: 553, enhanced: '5.7.1', text: 'sender refused' }) } });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [refusing.label] } } });
    await sendMail(r.port, { from: FROM, to: ['a@example.net', 'b@example.net'], body: sampleMessage() });
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 5000, 'dead letter');
    const [letter] = await r.router.spool.deadLetters();
    assert.match(letter!.reason, /^MAIL: 553 5\.7\.1 sender refused/);
    assert.deepEqual(letter!.recipients.map((x) => x.address), ['a@example.net', 'b@example.net']);
    await eventually(() => r.router.spool.pending().length === 0, 5000, 'nothing pending');
  });

  test('a copy older than queue.max_age_hours is dead-lettered instead of retried', async (t) => {
    const primary = await sink(t);
    const deferring = await sink(t, { name: 'deferring', behaviour: { data: () => ({ code: 452, enhanced: '4.3.1', text: 'disk full' }) } });
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [deferring.label] }, queue: { max_age_hours: 0.0001, retry_initial_seconds: 0.1 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage() });
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 8000, 'expired copy');
    const [letter] = await r.router.spool.deadLetters();
    assert.match(letter!.reason, /expired after \d+ attempts: DATA: 452 4\.3\.1 disk full/);
  });

  test('recipients a backup defers are retried alone; those it accepted are not sent again', async (t) => {
    const primary = await sink(t);
    let deferB = true;
    const backup = await sink(t, {
      name: 'backup',
      behaviour: { rcpt: (to) => (to === 'b@example.net' && deferB ? { code: 450, enhanced: '4.2.1', text: 'busy' } : undefined) },
    });
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] }, queue: { retry_initial_seconds: 0.2 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.net', 'b@example.net'], body: sampleMessage() });
    const [first] = await backup.waitFor(1);
    assert.deepEqual(first!.to, ['a@example.net']);
    deferB = false;
    const [, second] = await backup.waitFor(2);
    assert.deepEqual(second!.to, ['b@example.net']);
  });
});

describe('copies over a pipelining connection', () => {
  test('an lmtp:// backup\'s per-recipient final replies: only the deferred recipient is sent again', async (t) => {
    const primary = await sink(t);
    let deferrals = 0;
    const backup = await sink(t, {
      name: 'lmtp-backup',
      lmtp: true,
      behaviour: { finalFor: (to) => (to.startsWith('busy') && deferrals++ === 0 ? { code: 452, enhanced: '4.2.2', text: 'Mailbox busy' } : undefined) },
    });
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [`lmtp://${backup.label}`] }, queue: { retry_initial_seconds: 0.1 } },
    });
    await sendMail(r.port, { from: FROM, to: ['ok@example.net', 'busy@example.net'], body: sampleMessage('lmtp copy') });
    const [first, second] = await backup.waitFor(2);
    assert.deepEqual(first!.to, ['ok@example.net', 'busy@example.net']);
    assert.deepEqual(second!.to, ['busy@example.net'], 'ok@ had it already');
    await eventually(() => r.router.spool.pending().length === 0, 5000, 'copy settled');
  });

  test('MAIL FROM, RCPT TO and DATA go to a backup in one write, and the copy arrives whole', async (t) => {
    const primary = await sink(t);
    const backup = await rawServer(t, 'lenient');
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [backup.label] } } });
    const body = sampleMessage('pipelined copy');
    await sendMail(r.port, { from: FROM, to: ['a@example.net', 'b@example.net'], body });
    await eventually(() => backup.messages.length === 1, 5000, 'copy delivered');
    assert.deepEqual(backup.messages[0]!.to, ['<a@example.net>', '<b@example.net>']);
    // The raw server keeps what precedes the CRLF of the terminating dot line.
    assert.equal(`${backup.messages[0]!.body}\r\n`, body);
    const envelope = backup.reads.find((read) => read.startsWith('MAIL FROM'));
    assert.match(envelope ?? '', /^MAIL FROM:<sender@example\.com>\r\nRCPT TO:<a@example\.net>\r\nRCPT TO:<b@example\.net>\r\nDATA\r\n$/);
  });

  test('a server that refuses every recipient yet answers the pipelined DATA with 354 gets no message', async (t) => {
    const primary = await sink(t);
    const broken = await rawServer(t, { rcptReply: '550 5.1.1 no such user' });
    const r = await router(t, { config: { relay: { destination_primary: primary.label, destination_backups: [broken.label] } } });
    await sendMail(r.port, { from: FROM, to: ['a@example.net'], body: sampleMessage('refused') });
    await eventually(async () => (await r.router.spool.deadLetters()).length === 1, 5000, 'dead letter');
    const [letter] = await r.router.spool.deadLetters();
    assert.match(letter!.reason, /550 5\.1\.1 no such user/);
    // The connection is closed instead of ending a body: no empty message is delivered.
    await eventually(() => broken.connections() >= 1 && r.router.spool.pending().length === 0, 5000, 'settled');
    assert.deepEqual(broken.messages, []);
    assert.ok(!broken.commands.includes('.'), 'no terminating dot was sent');
  });
});

describe('copy worker robustness', () => {
  test('a message deleted under the running router is dropped quietly, not a crash', async (t) => {
    const primary = await sink(t);
    const down = await rawServer(t, 'busy');
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [down.label] }, queue: { retry_initial_seconds: 0.05, retry_max_seconds: 0.1 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.com'], body: sampleMessage() });
    const [job] = r.router.spool.pending();
    // What `gosmtp-dup queue delete` does, from another process's view of the spool: it asks the
    // running router, and returns once the router has acted.
    const cli = new LogSpool(r.queueDir, silentLogger());
    await cli.open();
    t.after(() => cli.close());
    assert.equal(await cli.remove(job!.record.id), true);
    assert.deepEqual(r.router.spool.pending(), []);
    await eventually(() => r.router.spool.pending().length === 0, 5000, 'job forgotten');
    // Still alive and delivering.
    assert.equal((await sendMail(r.port, { from: FROM, to: ['b@example.com'], body: sampleMessage() })).data?.code, 250);
  });

  test('refused attempts do not leak file descriptors', async (t) => {
    const primary = await sink(t);
    let refusals = 0;
    const refusing = await sink(t, { name: 'refusing', behaviour: { data: () => (++refusals, { code: 451, enhanced: '4.3.0', text: 'later' }) } });
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [refusing.label] }, queue: { retry_initial_seconds: 0.01, retry_max_seconds: 0.02 } },
    });
    await sendMail(r.port, { from: FROM, to: ['a@example.com'], body: sampleMessage() });
    await eventually(() => refusals >= 3, 5000, 'first refusals');
    const before = (await readdir('/proc/self/fd')).length;
    const from = refusals;
    await eventually(() => refusals >= from + 30, 20_000, '30 more refusals');
    const after = (await readdir('/proc/self/fd')).length;
    assert.ok(after - before < 10, `file descriptors grew from ${before} to ${after} over 30 refused attempts`);
  });

  test('two processes taking the spool lock at once: exactly one wins', async (t) => {
    const dir = join(await tempDir(t), 'shared');
    const { spawn } = await import('node:child_process');
    // The winner holds the lock until told to let go (its stdin closes), however slowly the other starts.
    const script = `require('fs').mkdirSync(process.argv[1], { recursive: true }); import('${new URL('../src/core/spool/lock.ts', import.meta.url).pathname}').then(m => m.acquireSpoolLock(process.argv[1])).then(() => { console.log('got'); process.stdin.resume(); process.stdin.on('end', () => process.exit(0)); }, (e) => console.log('refused: ' + e.message))`;
    const children = [0, 1].map(() => spawn(process.execPath, ['--import', 'tsx', '-e', script, dir], { stdio: ['pipe', 'pipe', 'inherit'] }));
    t.after(() => children.forEach((child) => child.kill()));
    const runs = await Promise.all(
      children.map((child) => new Promise<string>((resolve) => child.stdout.once('data', (chunk: Buffer) => resolve(chunk.toString().trim())))),
    );
    for (const child of children) child.stdin.end();
    assert.deepEqual(runs.map((o) => (o.startsWith('got') ? 'got' : 'refused')).sort(), ['got', 'refused'], runs.join(' | '));
  });
});
