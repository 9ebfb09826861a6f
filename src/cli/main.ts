/**
 * `gosmtp-dup <command>`: start, check, queue, demo. Errors are one clear line (or one line per
 * configuration problem) on stderr and a non-zero exit code, never a stack trace.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError } from '../core/config/load.ts';
import { UsageError } from './usage.ts';

const HELP = `gosmtp-dup: a programmable SMTP router

Usage:
  gosmtp-dup start [--config FILE]            run the router
  gosmtp-dup check [--config FILE]            validate and print the resolved configuration
  gosmtp-dup reload [--config FILE]           check the running router's config file, then make it reload (SIGHUP)
  gosmtp-dup queue list [--json] [--config FILE]
  gosmtp-dup queue retry [ID] [--config FILE] make pending copies (or one message's) due now
  gosmtp-dup queue delete ID [--config FILE]  drop a message's pending copies
  gosmtp-dup queue requeue [ID] [--config FILE]
                                              send dead letters (all, or one message's) again
  gosmtp-dup queue flush [--config FILE]      attempt every pending copy now and report
  gosmtp-dup report [--days N] [--json] [--config FILE]
                                              migration report: per destination accepted/deferred/rejected, disagreements
  gosmtp-dup route --from A --to B [--to C ...] [--json] [--config FILE]
                                              where mail would go, per recipient, and who decided
  gosmtp-dup hash-password                    read a password (stdin or prompt), print its hash for auth.users
  gosmtp-dup demo [--port N] [--once]         router on 127.0.0.1:2525 + three local capture servers
  gosmtp-dup --help | --version

Configuration: --config FILE (YAML, JSON, TS, JS), else gosmtp-dup.config.ts and friends,
else ./config.yaml, else /etc/smtp-dup/config.yaml; SMTP_DUP_<SECTION>_<KEY> variables override.
`;

export const EXIT = { OK: 0, FAILURE: 1, USAGE: 64, CONFIG: 78 } as const;

/** The package's version, from the nearest package.json above this file (src/cli or dist). */
function version(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) return (JSON.parse(readFileSync(file, 'utf8')) as { version: string }).version;
    if (dirname(dir) === dir) return 'unknown';
  }
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
      json: { type: 'boolean' },
      port: { type: 'string' },
      once: { type: 'boolean' },
      from: { type: 'string' },
      to: { type: 'string', multiple: true },
      days: { type: 'string' },
    },
  });
  if (values.version) {
    process.stdout.write(`gosmtp-dup ${version()}\n`);
    return EXIT.OK;
  }
  const [command, ...rest] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(HELP);
    return command === undefined && !values.help ? EXIT.USAGE : EXIT.OK;
  }
  // Commands load on demand: `start` never pays for the demo's or the queue tools' modules.
  switch (command) {
    case 'start':
      return (await import('./start.ts')).startCommand({ configFile: values.config });
    case 'check':
      return (await import('./check.ts')).checkCommand({ configFile: values.config });
    case 'reload':
      return (await import('./reload.ts')).reloadCommand({ configFile: values.config });
    case 'queue':
      return (await import('./queue.ts')).queueCommand(rest, { configFile: values.config, json: Boolean(values.json) });
    case 'report':
      return (await import('./report.ts')).reportCommand({ configFile: values.config, days: values.days, json: Boolean(values.json) });
    case 'route':
      return (await import('./route.ts')).routeCommand({ configFile: values.config, from: values.from, to: values.to, json: Boolean(values.json) });
    case 'hash-password':
      return (await import('./hash-password.ts')).hashPasswordCommand();
    case 'demo':
      return (await import('./demo.ts')).demoCommand({ port: values.port, once: Boolean(values.once) });
    default:
      process.stderr.write(`gosmtp-dup: unknown command "${command}" (see gosmtp-dup --help)\n`);
      return EXIT.USAGE;
  }
}

// A reader that stopped early (`gosmtp-dup queue list | head`) is not an error of ours.
process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? (process.exitCode ?? 0) : EXIT.FAILURE));

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  if (err instanceof ConfigError) {
    process.stderr.write(`gosmtp-dup: invalid configuration (${err.source}):\n${err.problems.map((p) => `  ${p}\n`).join('')}`);
    process.exitCode = EXIT.CONFIG;
  } else if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`gosmtp-dup: ${(err as Error).message} (see gosmtp-dup --help)\n`);
    process.exitCode = EXIT.USAGE;
  } else {
    process.stderr.write(`gosmtp-dup: ${(err as Error).message}\n`);
    process.exitCode = EXIT.FAILURE;
  }
}
