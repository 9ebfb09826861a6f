/**
 * The error catalogue: every error the router raises on purpose has a stable code here.
 * `replyForError` (below) is how an error becomes what the client hears; unknown errors are a
 * local temporary failure, never a success and never a permanent rejection.
 */
import { Replies, type SmtpReply } from './replies.ts';

export const ErrorCodes = {
  /** TCP connect or DNS failed, or the greeting was not 220. */
  UPSTREAM_UNAVAILABLE: 'GSD_UPSTREAM_UNAVAILABLE',
  /** An upstream step took longer than its timeout. */
  UPSTREAM_TIMEOUT: 'GSD_UPSTREAM_TIMEOUT',
  /** The upstream closed or reset the connection mid-dialogue. */
  UPSTREAM_LOST: 'GSD_UPSTREAM_LOST',
  /** The upstream sent something that is not SMTP. */
  UPSTREAM_PROTOCOL: 'GSD_UPSTREAM_PROTOCOL',
  /** Every candidate's circuit is open: nothing was tried (no attempt to count against a copy). */
  CIRCUIT_OPEN: 'GSD_CIRCUIT_OPEN',
  /** A destination's max_connections or rate is reached (and the caller does not wait). */
  DESTINATION_BUSY: 'GSD_DESTINATION_BUSY',
  /** The configuration failed validation. */
  CONFIG_INVALID: 'GSD_CONFIG_INVALID',
  /** A plugin hook threw. */
  PLUGIN_FAILED: 'GSD_PLUGIN_FAILED',
  /** A plugin hook did not settle in time. */
  PLUGIN_TIMEOUT: 'GSD_PLUGIN_TIMEOUT',
  /** The spool could not store or commit a message. */
  SPOOL_FAILED: 'GSD_SPOOL_FAILED',
  /** The message body violated the bare CR/LF policy. */
  BARE_LINE_ENDING: 'GSD_BARE_LINE_ENDING',
  /** The message body is larger than smtp.max_message_bytes. */
  MESSAGE_TOO_BIG: 'GSD_MESSAGE_TOO_BIG',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

export class GsdError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; step?: string },
  ) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GsdError';
    this.step = options?.step;
  }
  /** The protocol step the error happened at (connect, greeting, MAIL, RCPT, DATA, body, final). */
  readonly step: string | undefined;
}

export const isGsdError = (err: unknown, code?: ErrorCode): err is GsdError =>
  err instanceof GsdError && (code === undefined || err.code === code);

/** What the client hears when the router fails for a reason of its own or an upstream's. */
export function replyForError(err: unknown, limits: { maxMessageBytes: number }): SmtpReply {
  if (!(err instanceof GsdError)) return Replies.localError();
  switch (err.code) {
    case ErrorCodes.UPSTREAM_UNAVAILABLE:
    case ErrorCodes.CIRCUIT_OPEN:
      return Replies.upstreamUnavailable(err.step ?? 'connect');
    case ErrorCodes.UPSTREAM_TIMEOUT:
      return Replies.upstreamTimeout(err.step ?? 'reply');
    case ErrorCodes.UPSTREAM_LOST:
    case ErrorCodes.UPSTREAM_PROTOCOL:
      return Replies.upstreamLost(err.step ?? 'reply');
    case ErrorCodes.DESTINATION_BUSY:
      return Replies.destinationBusy();
    case ErrorCodes.SPOOL_FAILED:
      return Replies.spoolUnavailable();
    case ErrorCodes.BARE_LINE_ENDING:
      return Replies.bareLineEnding();
    case ErrorCodes.MESSAGE_TOO_BIG:
      return Replies.messageTooBig(limits.maxMessageBytes);
    default:
      return Replies.localError();
  }
}
