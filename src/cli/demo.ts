/**
 * `gosmtp-dup demo`: the router on 127.0.0.1:2525 with three local capture servers standing in
 * for a primary and two backups, each writing what it receives as .eml files under
 * ./gosmtp-dup-demo/. Sends one sample message through, shows where each copy landed, and keeps
 * running for swaks or any other client (Ctrl-C to stop).
 */
import { readdir } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import nodemailer from 'nodemailer';
import { validateConfig } from '../core/config/load.ts';
import type { Config } from '../core/config/schema.ts';
import { createLogger, type Logger } from '../core/logger.ts';
import { startRouter, type Router } from '../core/router.ts';
import { startSink, type Sink } from '../testkit/sink.ts';
import { waitForSignal } from './start.ts';
import { UsageError } from './usage.ts';

export async function demoCommand(options: { port?: string; once: boolean }): Promise<number> {
  const listenPort = parsePort(options.port);
  const root = resolve('gosmtp-dup-demo');
  const sinks: Sink[] = [];
  try {
    for (const name of ['primary', 'backup-1', 'backup-2']) sinks.push(await startSink({ name, dir: join(root, name) }));
    return await runDemo(sinks as [Sink, Sink, Sink], root, listenPort, options.once);
  } finally {
    // Also on an error: a capture server left listening would keep the process alive for ever.
    for (const sink of sinks) await sink.close();
  }
}

/** `--port`: the router's port on 127.0.0.1, 2525 unless given; 0 picks a free one. */
function parsePort(value: string | undefined): number {
  if (value === undefined) return 2525;
  if (!/^\d+$/.test(value) || Number(value) > 65535) throw new UsageError(`--port: expected a port number (0-65535), got ${JSON.stringify(value)}`);
  return Number(value);
}

async function runDemo([primary, ...backups]: [Sink, Sink, Sink], root: string, listenPort: number, once: boolean): Promise<number> {
  const sinks = [primary, ...backups];
  const config = validateConfig(
    {
      smtp: { listen: `127.0.0.1:${listenPort}`, domain: 'gosmtp-dup.demo' },
      relay: { destination_primary: primary.label, destination_backups: backups.map((b) => b.label) },
      queue: { dir: join(root, 'queue'), retry_initial_seconds: 2, retry_max_seconds: 30 },
      log: { level: once ? 'warn' : 'info' },
    },
    'demo',
  );
  const log = createLogger(config.log.level);
  const router = await startDemoRouter(config, log);
  const port = router.address.port;
  const out = (line = '') => process.stdout.write(`${line}\n`);
  try {
    out(`gosmtp-dup demo: router on 127.0.0.1:${port}`);
    out(`  primary   ${primary.label}  -> ${relative(process.cwd(), join(root, 'primary'))}/`);
    for (const b of backups) out(`  ${b.name}  ${b.label}  -> ${relative(process.cwd(), join(root, b.name))}/`);
    out();

    const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true });
    const info = await transport.sendMail({
      from: 'Alice <alice@example.com>',
      to: 'Bob <bob@example.net>',
      subject: 'Hello through gosmtp-dup',
      text: 'This message went to the primary synchronously and to two backups from the durable spool.\n',
    });
    transport.close();
    out(`sample message sent: ${info.response}`);
    await Promise.all(sinks.map((s) => s.waitFor(s.messages.length > 0 ? s.messages.length : 1, 15_000)));
    for (const sink of sinks) {
      const files = (await readdir(join(root, sink.name))).filter((f) => f.endsWith('.eml')).sort();
      out(`  ${sink.name.padEnd(9)} received it: ${relative(process.cwd(), join(root, sink.name, files.at(-1)!))}`);
    }
    if (once) return 0;
    out();
    out(`Try it yourself:  swaks --server 127.0.0.1:${port} --from you@example.com --to someone@example.net`);
    out('Ctrl-C stops the demo.');
    await waitForSignal(log);
    return 0;
  } finally {
    await router.close();
  }
}

/** Like `start`, a port that cannot be had is one line naming it, not the bare socket error. */
async function startDemoRouter(config: Config, log: Logger): Promise<Router> {
  try {
    return await startRouter({ config, logger: log });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL') throw new Error(`cannot listen on ${config.smtp.listen} (--port): ${e.message}`);
    throw err;
  }
}
