/**
 * Metrics and health over HTTP (metrics.listen): what Prometheus and a load balancer see.
 */
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sampleMessage, sendMail } from '../src/testkit/index.ts';
import { eventually, rawServer, router, sink } from './helpers/fixtures.ts';

async function get(port: number, path: string): Promise<{ status: number; body: string; type: string | null }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text(), type: res.headers.get('content-type') };
}

describe('metrics and health', () => {
  test('no HTTP listener unless metrics.listen is set', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label } } });
    assert.equal(r.router.opsAddress, undefined);
  });

  test('/healthz, /readyz and /metrics tell what happened', async (t) => {
    const primary = await sink(t, { behaviour: { rcpt: (to) => (to.startsWith('no') ? { code: 550, enhanced: '5.1.1', text: 'unknown' } : undefined) } });
    const down = await rawServer(t, 'busy');
    const r = await router(t, {
      config: { relay: { destination_primary: primary.label, destination_backups: [down.label] }, metrics: { listen: '127.0.0.1:0' }, health: { failure_threshold: 1 } },
    });
    const port = r.router.opsAddress!.port;
    assert.deepEqual(await get(port, '/healthz'), { status: 200, body: 'ok\n', type: 'text/plain; charset=utf-8' });
    const ready = await get(port, '/readyz');
    assert.equal(ready.status, 200);
    assert.deepEqual(JSON.parse(ready.body), { ready: true, checks: { listening: true, spoolWritable: true, configLoaded: true } });
    assert.equal((await get(port, '/nope')).status, 404);

    await sendMail(r.port, { from: 'a@example.com', to: ['b@example.net'], body: sampleMessage() });
    await sendMail(r.port, { from: 'a@example.com', to: ['no@example.net'], body: sampleMessage() });
    await eventually(() => r.router.spool.pending()[0]?.state.attempts === 1, 5000, 'a failed copy attempt');
    const metrics = await get(port, '/metrics');
    assert.equal(metrics.status, 200);
    assert.match(metrics.type ?? '', /^text\/plain/);
    const body = metrics.body;
    assert.match(body, /gosmtp_dup_transactions_total\{verdict="accepted"\} 1/);
    assert.match(body, new RegExp(`gosmtp_dup_deliveries_total\\{destination="${primary.label}",kind="sync",outcome="delivered"\\} 1`));
    assert.match(body, new RegExp(`gosmtp_dup_deliveries_total\\{destination="${down.label}",kind="copy",outcome="deferred"\\} 1`));
    assert.match(body, new RegExp(`gosmtp_dup_spool_pending_copies\\{destination="${down.label}"\\} 1`));
    assert.match(body, /gosmtp_dup_spool_oldest_age_seconds \d/);
    assert.match(body, new RegExp(`gosmtp_dup_circuit_state\\{destination="${down.label}"\\} 2`));
    assert.match(body, /gosmtp_dup_transaction_duration_seconds_bucket\{le="[\d.]+",verdict="accepted"\} \d/);
    assert.match(body, /gosmtp_dup_connections \d/);
    assert.doesNotMatch(body, /gosmtp_dup_dead_letters\{/);
  });

  test('/readyz is 503 when the spool cannot be written', async (t) => {
    const primary = await sink(t);
    const r = await router(t, { config: { relay: { destination_primary: primary.label }, metrics: { listen: '127.0.0.1:0' } } });
    await rm(join(r.queueDir, 'tmp'), { recursive: true });
    const ready = await get(r.router.opsAddress!.port, '/readyz');
    assert.equal(ready.status, 503);
    assert.equal(JSON.parse(ready.body).checks.spoolWritable, false);
  });
});
