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
import { createLogger } from '../core/logger.ts';
import { startRouter } from '../core/router.ts';
import { startSink, type Sink } from '../testkit/sink.ts';
import { waitForSignal } from './start.ts';

export async function demoCommand(options: { port: number; once: boolean }): Promise<number> {
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65535) throw new Error(`--port: expected a port number, got "${options.port}"`);
  const root = resolve('gosmtp-dup-demo');
  const sinks: Sink[] = [];
  for (const name of ['primary', 'backup-1', 'backup-2']) sinks.push(await startSink({ name, dir: join(root, name) }));
  const [primary, ...backups] = sinks as [Sink, Sink, Sink];
  const config = validateConfig(
    {
      smtp: { listen: `127.0.0.1:${options.port}`, domain: 'gosmtp-dup.demo' },
      relay: { destination_primary: primary.label, destination_backups: backups.map((b) => b.label) },
      queue: { dir: join(root, 'queue'), retry_initial_seconds: 2, retry_max_seconds: 30 },
      log: { level: options.once ? 'warn' : 'info' },
    },
    'demo',
  );
  const log = createLogger(config.log.level);
  const router = await startRouter({ config, logger: log });
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
    if (options.once) return 0;
    out();
    out(`Try it yourself:  swaks --server 127.0.0.1:${port} --from you@example.com --to someone@example.net`);
    out('Ctrl-C stops the demo.');
    await waitForSignal(log);
    return 0;
  } finally {
    await router.close();
    for (const sink of sinks) await sink.close();
  }
}
