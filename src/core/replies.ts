/**
 * SMTP replies: the one place that chooses reply codes.
 *
 * Every reply the router gives a client is either an upstream server's reply passed through
 * (`passThrough`) or one of the router's own replies below. No other module writes a number.
 */

/** A complete SMTP reply: basic code, RFC 3463 enhanced code, human text. */
export interface SmtpReply {
  readonly code: number;
  /** Enhanced status code such as `4.4.1`; absent when the upstream did not send one. */
  readonly enhanced?: string;
  readonly text: string;
}

export type ReplyClass = 'success' | 'tempfail' | 'reject';

export function replyClass(reply: Pick<SmtpReply, 'code'>): ReplyClass {
  if (reply.code >= 200 && reply.code < 400) return 'success';
  if (reply.code >= 400 && reply.code < 500) return 'tempfail';
  return 'reject';
}

export const isSuccess = (reply: SmtpReply): boolean => replyClass(reply) === 'success';

/** Single-line rendering for logs and for smtp-server's error path: `451 4.4.1 text`. */
export function formatReply(reply: SmtpReply): string {
  return [reply.code, reply.enhanced, reply.text].filter((part) => part !== undefined && part !== '').join(' ');
}

/** The reply's words after its code: `2.0.0 Ok`, or the text alone without an enhanced code. */
export function replyWords(reply: SmtpReply): string {
  return reply.enhanced ? (reply.text ? `${reply.enhanced} ${reply.text}` : reply.enhanced) : reply.text;
}

const ENHANCED_RE = /^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)/;

/** Splits `5.1.1 User unknown` into enhanced code and text, if the text starts with one. */
export function splitEnhanced(code: number, text: string): SmtpReply {
  const match = ENHANCED_RE.exec(text);
  // An enhanced code whose class disagrees with the basic code is text, not a code.
  if (match && Number(match[1]) === Math.floor(code / 100)) {
    return { code, enhanced: `${match[1]}.${match[2]}.${match[3]}`, text: text.slice(match[0].length) };
  }
  return { code, text };
}

/**
 * An upstream reply as the client will see it. Codes outside 2xx/4xx/5xx (a broken server) are
 * turned into a temporary failure: never guess that something unknown was a success.
 */
export function passThrough(reply: SmtpReply): SmtpReply {
  if (reply.code >= 200 && reply.code < 600 && reply.code !== 354 && Math.floor(reply.code / 100) !== 3) return reply;
  return { code: 451, enhanced: '4.5.0', text: `Upstream answered with an unexpected reply (${reply.code})` };
}

/** The router's own replies, by situation. Temporary trouble is always 4xx. */
export const Replies = {
  senderOk: (): SmtpReply => ({ code: 250, enhanced: '2.1.0', text: 'Sender OK' }),
  recipientOk: (): SmtpReply => ({ code: 250, enhanced: '2.1.5', text: 'Recipient OK' }),
  queued: (id: string): SmtpReply => ({ code: 250, enhanced: '2.0.0', text: `Ok: queued as ${id}` }),

  /** The step only: the reason (host, port, TLS library errors) is for the log, not the sender. */
  upstreamUnavailable: (step: string): SmtpReply => ({
    code: 451,
    enhanced: '4.4.1',
    text: `Upstream not available (${step})`,
  }),
  upstreamTimeout: (step: string): SmtpReply => ({
    code: 451,
    enhanced: '4.4.2',
    text: `Upstream timed out (${step})`,
  }),
  upstreamLost: (step: string): SmtpReply => ({
    code: 451,
    enhanced: '4.4.2',
    text: `Upstream connection lost (${step})`,
  }),
  destinationBusy: (): SmtpReply => ({ code: 451, enhanced: '4.7.0', text: 'Destination busy (rate or connection limit), try again later' }),
  localError: (): SmtpReply => ({ code: 451, enhanced: '4.3.0', text: 'Local error in processing, try again later' }),
  spoolUnavailable: (): SmtpReply => ({ code: 451, enhanced: '4.3.0', text: 'Cannot store a copy of the message, try again later' }),
  noRoute: (): SmtpReply => ({ code: 451, enhanced: '4.4.0', text: 'No route for this recipient, try again later' }),
  shuttingDown: (): SmtpReply => ({ code: 421, enhanced: '4.3.2', text: 'Service shutting down, try again later' }),
  /** Sent for a recipient whose route differs from the transaction's: the sender retries it in a new transaction. */
  separateTransaction: (): SmtpReply => ({
    code: 452,
    enhanced: '4.5.3',
    text: 'Recipient routes elsewhere, send it in a separate transaction',
  }),
  /** An LMTP primary answers each recipient on its own: one recipient per transaction. */
  oneRecipientPerTransaction: (): SmtpReply => ({
    code: 452,
    enhanced: '4.5.3',
    text: 'One recipient per transaction here, send it in a separate transaction',
  }),

  authenticated: (): SmtpReply => ({ code: 235, enhanced: '2.7.0', text: 'Authentication successful' }),
  authFailed: (): SmtpReply => ({ code: 535, enhanced: '5.7.8', text: 'Authentication credentials invalid' }),
  authRateLimited: (): SmtpReply => ({ code: 454, enhanced: '4.7.0', text: 'Too many failed authentication attempts, try again later' }),
  authNeedsTls: (): SmtpReply => ({ code: 538, enhanced: '5.7.11', text: 'Encryption required for requested authentication mechanism' }),
  tlsRequired: (): SmtpReply => ({ code: 530, enhanced: '5.7.0', text: 'Must issue a STARTTLS command first' }),
  smtputf8Unsupported: (destination: string): SmtpReply => ({
    code: 553,
    enhanced: '5.6.7',
    text: `The next hop (${destination}) does not support SMTPUTF8 (internationalised mail)`,
  }),
  senderNotAllowed: (user: string): SmtpReply => ({ code: 553, enhanced: '5.7.1', text: `Sender address not allowed for ${user}` }),
  relayDenied: (): SmtpReply => ({ code: 554, enhanced: '5.7.1', text: 'Relay access denied' }),
  tooManyClients: (): SmtpReply => ({ code: 421, enhanced: '4.7.0', text: 'Too many connected clients, try again in a moment' }),
  localDelivery: (text: string): SmtpReply => ({ code: 250, enhanced: '2.0.0', text }),
  tooManyConnections: (): SmtpReply => ({ code: 421, enhanced: '4.7.0', text: 'Too many connections from your address, try again later' }),
  tooManyErrors: (): SmtpReply => ({ code: 421, enhanced: '4.7.0', text: 'Too many errors, closing the connection' }),

  messageTooBig: (limit: number): SmtpReply => ({
    code: 552,
    enhanced: '5.3.4',
    text: `Message exceeds the maximum size of ${limit} bytes`,
  }),
  bareLineEnding: (): SmtpReply => ({
    code: 550,
    enhanced: '5.6.11',
    text: 'Message contains a bare CR or LF; use CRLF line endings',
  }),
} as const;

/** An Error carrying a reply, as smtp-server's callbacks expect (`responseCode`). */
export class SmtpReplyError extends Error {
  readonly responseCode: number;
  constructor(readonly reply: SmtpReply) {
    // smtp-server prints `code message`; the enhanced code travels inside the message and the
    // inbound adapter keeps smtp-server from adding a second one.
    super(replyWords(reply));
    this.responseCode = reply.code;
  }
}
