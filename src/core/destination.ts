/**
 * Destinations: where the router delivers.
 *   `host:port` (IPv6 as `[::1]:25`)  an SMTP server
 *   `maildir:/absolute/path`          a local Maildir (an archive, a backup), written atomically
 */
import { isIP } from 'node:net';
import { isAbsolute, normalize } from 'node:path';

export interface SmtpDestination {
  readonly kind: 'smtp';
  readonly host: string;
  readonly port: number;
  /** The destination as configured, used in logs, spool records and metrics. */
  readonly label: string;
}

export interface MaildirDestination {
  readonly kind: 'maildir';
  /** The Maildir folder (holding tmp/, new/, cur/; created if missing). */
  readonly path: string;
  readonly label: string;
}

export type Destination = SmtpDestination | MaildirDestination;

const DEFAULT_SMTP_PORT = 25;

/** Parses a destination. Returns an error message on failure. */
export function parseDestination(text: string, options: { listen?: boolean } = {}): Destination | string {
  const value = text.trim();
  if (value === '') return 'expected "host:port"';
  if (value.startsWith('maildir:') && !options.listen) {
    const path = value.slice('maildir:'.length);
    if (!isAbsolute(path)) return 'expected an absolute path after "maildir:", e.g. "maildir:/var/mail/archive"';
    return { kind: 'maildir', path: normalize(path), label: `maildir:${normalize(path)}` };
  }
  let host: string;
  let portText: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(value);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2];
    if (isIP(host) !== 6) return 'expected an IPv6 address inside [...]';
  } else {
    const parts = value.split(':');
    if (parts.length > 2) return 'IPv6 addresses need brackets, e.g. "[::1]:25"';
    host = parts[0]!;
    portText = parts[1];
    // Underscores are not valid in DNS names but appear in real configs (the seed's own examples).
    if (!/^[A-Za-z0-9._-]+$/.test(host) || host.startsWith('-')) return 'expected a host name or IP address';
  }
  const port = portText === undefined ? DEFAULT_SMTP_PORT : Number(portText);
  const lowest = options.listen ? 0 : 1; // port 0 asks the system for a free port
  if (!Number.isInteger(port) || port < lowest || port > 65535) return 'expected a port between 1 and 65535';
  const label = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  return { kind: 'smtp', host, port, label };
}
