/**
 * Logs: pino JSON lines on stdout; human-readable when stdout is a terminal. Callers log
 * envelopes and verdicts, never message bodies or secrets.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, options: { pretty?: boolean } = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  // Asynchronous: a line is written at once when no write is in flight, and lines that arrive
  // meanwhile go out together in the next write (under load, one write for many transactions,
  // off the event loop). Flushed synchronously when the process exits, crash included; only a
  // SIGKILL can lose what was waiting. If stdout stops being read, at most 16 MiB wait (then
  // lines are dropped rather than memory growing without bound).
  if (!pretty) return pino({ level, base: { name: 'gosmtp-dup' } }, pino.destination({ dest: 1, sync: false, maxLength: 16 * 1024 * 1024 }));
  return pino({
    level,
    base: undefined,
    transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
  });
}

/** A logger that drops everything, for tests and embedded use. */
export const silentLogger = (): Logger => pino({ level: 'silent' });
