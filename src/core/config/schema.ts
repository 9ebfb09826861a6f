/**
 * The configuration schema: every key, its type and its default, in one place. YAML, JSON,
 * TypeScript configs and environment variables all end up validated here.
 */
import { isIP } from 'node:net';
import { z } from 'zod';
import { compileMatcher } from '../address-patterns.ts';
import { isPasswordHash } from '../auth/password.ts';
import { parseDestination } from '../destination.ts';
import { parseRate } from '../upstream/limits.ts';

/** Numbers may arrive as text (environment variables, quoted YAML); anything else is kept for the error message. */
const numeric = (schema: z.ZodNumber) =>
  z.preprocess((value) => (typeof value === 'string' && value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : value), schema);

const positive = (message = 'expected a positive number') => numeric(z.number({ error: message }).positive({ error: message }));
const positiveInt = (message = 'expected a positive whole number') =>
  numeric(z.number({ error: message }).int({ error: message }).positive({ error: message }));

/** Booleans may arrive as text from environment variables. */
const bool = () =>
  z.preprocess((value) => (value === 'true' ? true : value === 'false' ? false : value), z.boolean({ error: 'expected true or false' }));

/** `host:port`; checked here so a bad address is a config error before anything listens. */
export const destinationText = z.string({ error: 'expected "host:port"' }).superRefine((value, ctx) => {
  const parsed = parseDestination(value);
  if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed, input: value });
});

const listenText = z.string({ error: 'expected "host:port"' }).superRefine((value, ctx) => {
  const parsed = parseDestination(value, { listen: true });
  if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed, input: value });
  else if (!/:\d+$/.test(value.trim())) ctx.addIssue({ code: 'custom', message: 'expected "host:port" with an explicit port', input: value });
});

/** A CIDR block (`10.0.0.0/8`, `::1/128`) or a single address. */
const cidrText = z.string({ error: 'expected a CIDR block like "192.0.2.0/24"' }).superRefine((value, ctx) => {
  const [address, prefix, extra] = value.trim().split('/');
  const family = isIP(address ?? '');
  const bits = prefix === undefined ? (family === 6 ? 128 : 32) : Number(prefix);
  if (extra !== undefined || family === 0 || !Number.isInteger(bits) || bits < 0 || bits > (family === 6 ? 128 : 32)) {
    ctx.addIssue({ code: 'custom', message: 'expected a CIDR block like "192.0.2.0/24" or "2001:db8::/32"', input: value });
  }
});

/** Comma-separated lists come from environment variables. */
const list = <T extends z.ZodType>(item: T) =>
  z.preprocess(
    (value) =>
      typeof value === 'string'
        ? value
            .split(',')
            .map((part) => part.trim())
            .filter(Boolean)
        : value,
    z.array(item, { error: 'expected a list' }),
  );

export const configSchema = z.strictObject({
  smtp: z
    .strictObject({
      listen: listenText.default('127.0.0.1:2525'),
      domain: z.string({ error: 'expected a host name' }).min(1, { error: 'expected a host name' }).default('localhost'),
      max_message_bytes: positiveInt().default(10 * 1024 * 1024),
      bare_line_endings: z.enum(['normalize', 'reject'], { error: 'expected "normalize" or "reject"' }).default('normalize'),
      /** Certificate and key (PEM files) for STARTTLS and the implicit-TLS listener; reloaded when they change. */
      tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
      /** A second listener speaking TLS from the first byte (port 465 style); needs `tls`. */
      implicit_tls_listen: listenText.optional(),
      /** An LMTP listener (LHLO; a reply per recipient after DATA), for Postfix's lmtp transport. */
      lmtp_listen: listenText.optional(),
      /** Refuse MAIL before STARTTLS with 530 5.7.0. */
      require_tls: bool().default(false),
      /** Clients that may relay without authenticating; everyone else gets 554 5.7.1 at RCPT. */
      allowed_networks: list(cidrText).default(['127.0.0.0/8', '::1/128']),
      /** If set, only recipients in these domains (or their subdomains) are accepted. */
      allowed_recipient_domains: list(z.string().regex(/^[A-Za-z0-9.-]+$/, { error: 'expected a domain name' })).optional(),
      /** Open connections at most, in all. */
      max_connections: positiveInt().default(500),
      /** Open connections at most from one client address. */
      max_connections_per_client: positiveInt().default(50),
      /** Recipients per message; beyond: 452 4.5.3 (the sender sends the rest in another transaction). */
      max_recipients: positiveInt().default(1000),
      /** A client silent this long is disconnected. */
      idle_timeout_seconds: positive().default(300),
      /** 5xx replies one session may cause before it is disconnected with 421. */
      max_errors: positiveInt().default(20),
      /** Wait before the greeting, to refuse clients that talk first (spam bots); 0 = greet at once. */
      greeting_delay_ms: numeric(z.number({ error: 'expected a number of milliseconds' }).int().min(0).max(60_000)).default(0),
      /** Longest wait for in-flight transactions at shutdown before they are cut off with 421. */
      shutdown_timeout_seconds: positive().default(30),
    })
    .prefault({}),
  /** Named destinations, referenced by name from plugins and routes. */
  destinations: z
    .record(
      z.string().regex(/^[A-Za-z0-9_-]+$/, { error: 'expected a name of letters, digits, "-" or "_"' }),
      z.union([
        destinationText,
        z.strictObject({
          url: destinationText,
          tls: z.strictObject({ verify: bool().optional(), ca: z.string().optional(), cert: z.string().optional(), key: z.string().optional() }).optional(),
          /** Credentials: write the password as "${ENV_NAME}" so it never sits in the file. */
          auth: z.strictObject({ user: z.string().min(1), pass: z.string().min(1) }).optional(),
          helo: z.string().regex(/^[A-Za-z0-9.-]+$/, { error: 'expected a host name' }).optional(),
          /** At most this many transactions with the destination at once. */
          max_connections: positiveInt().optional(),
          /** At most this many new transactions: "30/minute", "5/second", "1000/hour". */
          rate: z
            .string()
            .superRefine((value, ctx) => {
              const parsed = parseRate(value);
              if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed, input: value });
            })
            .optional(),
          /** A synchronous delivery over a limit: "tempfail" (451 4.7.0) or "wait". Copies always wait. */
          on_limit: z.enum(['tempfail', 'wait']).optional(),
        }),
      ], { error: 'expected "host:port", a URL like "smtps://host:465", or { url, tls, auth, helo }' }),
      { error: 'expected a map of name: destination' },
    )
    .default({}),
  /**
   * Routing plugins in order (see docs/plugins.md): a built-in name or a path/package, with options
   * (`{ route: {...} }`), or a plugin object in a TypeScript config. Checked by the plugin loader.
   */
  plugins: z.array(z.unknown(), { error: 'expected a list of plugins' }).optional(),
  relay: z.strictObject({
    /** The `duplicate` strategy's primary; optional when `plugins` route the mail. */
    destination_primary: destinationText.optional(),
    destination_backups: list(destinationText).default([]),
    timeout_seconds: positive().default(10),
    /** Wait for the final reply after the body: RFC 5321 §4.5.3.2 suggests 10 minutes; 9 stays below Postfix's smtp_data_done_timeout. */
    data_timeout_seconds: positive().default(540),
  }).prefault({} as never),
  queue: z
    .strictObject({
      dir: z.string({ error: 'expected a folder path' }).min(1).default('./gosmtp-dup-queue'),
      retry_initial_seconds: positive().default(60),
      retry_max_seconds: positive().default(3600),
      max_age_hours: positive().default(120),
      /** Copies delivered at once. */
      concurrency: positiveInt().default(8),
      /** Copies delivered at once to any one destination. */
      destination_concurrency: positiveInt().default(4),
    })
    .prefault({}),
  auth: z
    .strictObject({
      /** Users who may authenticate (AUTH PLAIN/LOGIN) and then relay; hashes from `gosmtp-dup hash-password`. */
      users: z
        .array(
          z.strictObject({
            user: z.string().min(1),
            password_hash: z.string().refine(isPasswordHash, { error: 'expected a hash from "gosmtp-dup hash-password" (scrypt$...)' }),
            /** Envelope senders this user may use (patterns as in route rules); unset = any. */
            allowed_senders: z
              .array(
                z.string().superRefine((value, ctx) => {
                  try {
                    compileMatcher(value);
                  } catch (err) {
                    ctx.addIssue({ code: 'custom', message: (err as Error).message, input: value });
                  }
                }),
              )
              .min(1)
              .optional(),
          }),
        )
        .default([]),
      /** AUTH is offered only over TLS; this also allows it in plain text from loopback clients. */
      allow_plaintext_on_loopback: bool().default(false),
      /** Failed AUTH attempts per client address within the window before every attempt is refused. */
      max_failures: positiveInt().default(5),
      failure_window_seconds: positive().default(600),
    })
    .prefault({}),
  health: z
    .strictObject({
      /** Consecutive failures that open a destination's circuit. */
      failure_threshold: positiveInt().default(3),
      /** How long an open circuit keeps a destination out before one probe is let through. */
      cooldown_seconds: positive().default(30),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /** `host:port` for /metrics, /healthz and /readyz; unset = no HTTP listener. */
      listen: listenText.optional(),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { error: 'expected a pino log level' }).default('info'),
    })
    .prefault({}),
}).superRefine((config, ctx) => {
  if (config.smtp.implicit_tls_listen !== undefined && config.smtp.tls === undefined) {
    ctx.addIssue({ code: 'custom', path: ['smtp', 'implicit_tls_listen'], message: 'needs smtp.tls (cert and key)', input: config.smtp.implicit_tls_listen });
  }
  if (config.smtp.require_tls && config.smtp.tls === undefined) {
    ctx.addIssue({ code: 'custom', path: ['smtp', 'require_tls'], message: 'needs smtp.tls (cert and key)', input: true });
  }
  if (config.plugins === undefined && config.relay.destination_primary === undefined) {
    ctx.addIssue({ code: 'custom', path: ['relay', 'destination_primary'], message: 'required', input: undefined });
  }
});

/** A configuration as written by a user (defaults optional). */
export type ConfigInput = z.input<typeof configSchema>;
/** A validated configuration with every default filled in. */
export type Config = z.output<typeof configSchema>;

/** Every `section.key`, for environment variable overrides and documentation. */
export const configKeys: ReadonlyArray<{ section: string; key: string }> = Object.entries(configSchema.shape).flatMap(([section, schema]) => {
  let inner: z.ZodType = schema as z.ZodType;
  while (!(inner instanceof z.ZodObject) && 'unwrap' in inner) inner = (inner as unknown as { unwrap(): z.ZodType }).unwrap();
  const shape = inner instanceof z.ZodObject ? (inner.shape as Record<string, unknown>) : {};
  return Object.keys(shape).map((key) => ({ section, key }));
});
