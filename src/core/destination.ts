/**
 * Destinations: where the router delivers.
 *   `host:port` (IPv6 as `[::1]:25`)  an SMTP server, STARTTLS when offered (opportunistic)
 *   `smtp://host:25`                  the same
 *   `smtp+starttls://host:587`        STARTTLS required, certificate verified
 *   `smtps://host:465`                TLS from the first byte, certificate verified
 *   `lmtp://host:24`                  an LMTP server (LHLO; a reply per recipient after DATA)
 *   `maildir:/absolute/path`          a local Maildir (an archive, a backup), written atomically
 * The object form in `destinations:` adds TLS files, credentials and the HELO name.
 */
import { isIP } from 'node:net';
import { isAbsolute, normalize } from 'node:path';
import { parseRate } from './upstream/limits.ts';

export type TlsMode = 'opportunistic' | 'required' | 'implicit';

export interface SmtpDestination {
  readonly kind: 'smtp';
  readonly host: string;
  readonly port: number;
  /** The destination as configured (never with credentials), used in logs, spool records and metrics. */
  readonly label: string;
  readonly protocol?: 'smtp' | 'lmtp';
  /** Default `opportunistic`: STARTTLS when offered. */
  readonly tls?: TlsMode;
  /** Verify the server's certificate; default on for `required` and `implicit`. */
  readonly verify?: boolean;
  /** PEM file paths: a CA to trust, a client certificate and its key. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  /** Credentials for AUTH PLAIN/LOGIN, sent only over TLS. */
  readonly auth?: { readonly user: string; readonly pass: string };
  /** The name to say EHLO with (default `smtp.domain`). */
  readonly helo?: string;
  /** At most this many transactions with this destination at once. */
  readonly maxConnections?: number;
  /** At most `count` new transactions per `perMs`. */
  readonly rate?: { readonly count: number; readonly perMs: number };
  /** A synchronous delivery over a limit: `tempfail` (451 4.7.0, default) or `wait`. Copies always wait. */
  readonly onLimit?: 'tempfail' | 'wait';
  /** The name in `destinations:`, for a named destination. */
  readonly name?: string;
  /**
   * What pooled connections and limits are keyed by: two names with the same URL but their own
   * credentials or TLS settings must never share an (authenticated) connection or a quota.
   */
  readonly poolKey?: string;
}

/** The key for pooled connections and limits (the label for an unnamed destination). */
export const poolKeyOf = (destination: SmtpDestination): string => destination.poolKey ?? destination.label;

const SCHEMES: Record<string, { protocol: 'smtp' | 'lmtp'; tls: TlsMode; port: number }> = {
  smtp: { protocol: 'smtp', tls: 'opportunistic', port: 25 },
  'smtp+starttls': { protocol: 'smtp', tls: 'required', port: 25 },
  smtps: { protocol: 'smtp', tls: 'implicit', port: 465 },
  lmtp: { protocol: 'lmtp', tls: 'opportunistic', port: 24 },
};

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
  const uri = /^([a-z+]+):\/\/(.*)$/.exec(value);
  if (uri && !options.listen) {
    const scheme = SCHEMES[uri[1]!];
    if (!scheme) return `unknown scheme "${uri[1]}://" (use smtp://, smtp+starttls://, smtps:// or lmtp://)`;
    if (uri[2]!.includes('@')) return 'credentials do not belong in the address: use the object form with auth: { user, pass }';
    const hostPort = parseHostPort(uri[2]!.replace(/\/$/, ''), scheme.port, false);
    if (typeof hostPort === 'string') return hostPort;
    const tls = scheme.tls;
    return { kind: 'smtp', ...hostPort, label: `${uri[1]}://${hostPort.label}`, protocol: scheme.protocol, tls, verify: tls !== 'opportunistic' };
  }
  const hostPort = parseHostPort(value, DEFAULT_SMTP_PORT, Boolean(options.listen));
  if (typeof hostPort === 'string') return hostPort;
  return { kind: 'smtp', ...hostPort };
}

function parseHostPort(value: string, defaultPort: number, listen: boolean): { host: string; port: number; label: string } | string {
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
  const port = portText === undefined ? defaultPort : Number(portText);
  const lowest = listen ? 0 : 1; // port 0 asks the system for a free port
  if (!Number.isInteger(port) || port < lowest || port > 65535) return 'expected a port between 1 and 65535';
  return { host, port, label: isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}` };
}

/** The object form of a destination in `destinations:`. */
export interface DestinationSpec {
  url: string;
  tls?: { verify?: boolean; ca?: string; cert?: string; key?: string };
  auth?: { user: string; pass: string };
  helo?: string;
  max_connections?: number;
  /** `"30/minute"`, `"5/second"`, `"1000/hour"`. */
  rate?: string;
  on_limit?: 'tempfail' | 'wait';
}

export function destinationFromSpec(spec: string | DestinationSpec, name?: string): Destination | string {
  const base = parseDestination(typeof spec === 'string' ? spec : spec.url);
  if (typeof base === 'string' || base.kind !== 'smtp') return base;
  const named = name === undefined ? {} : { name, poolKey: `${base.label}#${name}` };
  if (typeof spec === 'string') return { ...base, ...named };
  return {
    ...base,
    ...named,
    ...(spec.tls?.verify !== undefined && { verify: spec.tls.verify }),
    ...(spec.tls?.ca && { ca: spec.tls.ca }),
    ...(spec.tls?.cert && { cert: spec.tls.cert }),
    ...(spec.tls?.key && { key: spec.tls.key }),
    ...(spec.auth && { auth: spec.auth }),
    ...(spec.helo && { helo: spec.helo }),
    ...(spec.max_connections !== undefined && { maxConnections: spec.max_connections }),
    ...(spec.rate !== undefined && typeof parseRate(spec.rate) !== 'string' && { rate: parseRate(spec.rate) as { count: number; perMs: number } }),
    ...(spec.on_limit && { onLimit: spec.on_limit }),
  };
}
