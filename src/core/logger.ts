/**
 * Logs: pino JSON lines on stdout; human-readable when stdout is a terminal. Callers log
 * envelopes and verdicts, never message bodies or secrets.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string, options: { pretty?: boolean } = {}): Logger {
  const pretty = options.pretty ?? Boolean(process.stdout.isTTY);
  // Asynchronous and batched: lines gather in memory and go out in writes of at least 4 KiB, or
  // every 200 ms, whichever comes first (an idle router's line still shows within 200 ms). Under
  // load that is one write, and one wake-up of whatever reads stdout (journald, a pipe), per ~15
  // transactions instead of one each. Flushed synchronously when the process exits, crash
  // included; only a SIGKILL can lose what was waiting. If stdout stops being read, at most 16 MiB
  // wait (then lines are dropped rather than memory growing without bound).
  if (!pretty) {
    const destination = pino.destination({ dest: 1, sync: false, minLength: 4096, maxLength: 16 * 1024 * 1024 });
    // Not sonic-boom's `periodicFlush`: that writes even when nothing waits (an empty write to
    // stdout five times a second on an idle router). `_len` is sonic-boom's count of waiting
    // bytes; were it ever gone, this flushes every time, as `periodicFlush` does.
    const waiting = () => (destination as unknown as { _len?: number })._len ?? 1;
    setInterval(() => waiting() > 0 && destination.flush(), 200).unref();
    return pino({ level, base: { name: 'gosmtp-dup' } }, destination);
  }
  return pino({
    level,
    base: undefined,
    transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' } },
  });
}

/** A logger that drops everything, for tests and embedded use. */
export const silentLogger = (): Logger => pino({ level: 'silent' });
