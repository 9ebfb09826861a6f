/**
 * The operations listener (`metrics.listen`, off by default): `/metrics` for Prometheus,
 * `/healthz` (the process is up) and `/readyz` (listening, spool writable, configuration loaded)
 * for load balancers, orchestrators and the Docker healthcheck.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SmtpDestination } from '../destination.ts';
import type { Metrics } from './metrics.ts';

export interface Readiness {
  /** Named checks; ready when all are true. */
  checks(): Promise<Record<string, boolean>>;
}

export interface OpsListener {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export async function startOpsListener(listen: SmtpDestination, metrics: Metrics, readiness: Readiness): Promise<OpsListener> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    const reply = (status: number, type: string, body: string) => res.writeHead(status, { 'content-type': type }).end(req.method === 'HEAD' ? undefined : body);
    if (path === '/healthz') return reply(200, 'text/plain; charset=utf-8', 'ok\n');
    if (path === '/readyz') {
      readiness.checks().then(
        (checks) => {
          const ready = Object.values(checks).every(Boolean);
          reply(ready ? 200 : 503, 'application/json', `${JSON.stringify({ ready, checks })}\n`);
        },
        () => reply(503, 'application/json', '{"ready":false}\n'),
      );
      return;
    }
    if (path === '/metrics') {
      metrics.registry.metrics().then(
        (body) => reply(200, metrics.registry.contentType, body),
        (err: Error) => reply(500, 'text/plain; charset=utf-8', `${err.message}\n`),
      );
      return;
    }
    reply(404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
