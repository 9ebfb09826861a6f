/**
 * The few places where smtp-server's behaviour is wrong for a relay, corrected once, here.
 * Each patch wraps a method of smtp-server's SMTPConnection and keeps the original's work.
 * smtp-server is pinned by package-lock.json; `test/inbound-patches.test.ts` fails if an
 * upgrade changes what these rely on.
 *
 * 1. Enhanced status codes: smtp-server adds its own guess (`550` → `5.1.1`) to every reply.
 *    A relay passes the upstream's enhanced code through, so a reply text that already starts
 *    with one is sent as is.
 * 2. Addresses as sent: smtp-server rewrites `xn--` domains to Unicode and decodes xtext in
 *    parameters. The relay forwards the raw address and raw parameters, kept on `parsed.raw`.
 * 3. Transaction reset: smtp-server has no hook for RSET; the relay must release the upstream
 *    transaction the moment the client abandons its own, so `onReset` is called.
 * 5. Error limit: after `maxErrors` 5xx replies in one session the client is told
 *    `maxErrorsReply` (421) and disconnected, as Postfix's smtpd_hard_error_limit does.
 * 4. Greeting delay: smtp-server waits a hard-coded 100 ms before every greeting (to catch clients
 *    that talk first). That caps a sender that opens one connection per message, as Postfix does
 *    when its queue is short, at 10 messages/s per session. The delay is `greetingDelayMs`
 *    (`smtp.greeting_delay_ms`, 0 by default); early talkers still get 421 during a delay.
 */
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { replyWords, type SmtpReply } from '../replies.ts';

const ENHANCED_AT_START = /^[245]\.\d{1,3}\.\d{1,3} /;

/** What `_parseAddressCommand` returns, plus the raw forms the relay forwards. */
export interface ParsedAddressWithRaw {
  address: string;
  args: Record<string, string | true> | false;
  raw?: { address: string; params: string[] };
}

interface PatchableConnection {
  init(): void;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  name: string;
  send(code: number, data?: string | string[] | null, context?: string | false): void;
  _parseAddressCommand(rawName: string, rawCommand: Buffer | string): ParsedAddressWithRaw | false;
  _resetSession(): void;
  _server: {
    options: {
      onReset?: (session: unknown) => void;
      greetingDelayMs?: number;
      maxClients?: number;
      maxErrors?: number;
      /** The router's replies for the limits enforced here (replies.ts chooses them). */
      limitReplies?: { tooManyClients: SmtpReply; tooManyErrors: SmtpReply };
    };
    connections: Set<unknown>;
  };
  _gsdErrors?: number;
  _closing?: boolean;
  close(): void;
  session: unknown;
}

const PATCHED = Symbol.for('gosmtp-dup.smtp-server-patched');

export function patchSmtpServer(): void {
  const proto = SMTPConnection.prototype as unknown as PatchableConnection & { [PATCHED]?: true };
  if (proto[PATCHED]) return;
  proto[PATCHED] = true;

  const send = proto.send;
  const sendReply = (conn: PatchableConnection, reply: SmtpReply) => send.call(conn, reply.code, replyWords(reply), false);
  proto.send = function (this: PatchableConnection, code, data, context) {
    send.call(this, code, data, typeof data === 'string' && ENHANCED_AT_START.test(data) ? false : context);
    const { maxErrors, limitReplies } = this._server.options;
    if (maxErrors && limitReplies && code >= 500 && !this._closing) {
      this._gsdErrors = (this._gsdErrors ?? 0) + 1;
      if (this._gsdErrors >= maxErrors) {
        sendReply(this, limitReplies.tooManyErrors);
        this.close();
      }
    }
  };

  const parse = proto._parseAddressCommand;
  proto._parseAddressCommand = function (this: PatchableConnection, rawName, rawCommand) {
    const parsed = parse.call(this, rawName, rawCommand);
    if (parsed) parsed.raw = rawAddressCommand(String(rawCommand));
    return parsed;
  };

  proto.init = function (this: PatchableConnection) {
    this._setListeners(() => {
      const { maxClients, greetingDelayMs = 0, limitReplies } = this._server.options;
      if (maxClients && this._server.connections.size > maxClients) {
        return limitReplies ? sendReply(this, limitReplies.tooManyClients) : this.send(421, `${this.name} Too many connected clients`, false);
      }
      if (greetingDelayMs <= 0) return this.connectionReady();
      setTimeout(() => this.connectionReady(), greetingDelayMs).unref();
    });
  };

  const reset = proto._resetSession;
  proto._resetSession = function (this: PatchableConnection) {
    reset.call(this);
    this._server.options.onReset?.(this.session);
  };
}

/** `MAIL FROM:<a@xn--bcher-kva.example> BODY=8BITMIME` → the address and words as written. */
export function rawAddressCommand(command: string): { address: string; params: string[] } {
  const afterColon = command.slice(command.indexOf(':') + 1).trim();
  const match = /^<([^<>]*)>\s*(.*)$/.exec(afterColon);
  if (!match) return { address: '', params: [] };
  // A source route (`<@relay:user@host>`) is ignored, as RFC 5321 says.
  const address = match[1]!.replace(/^@[^\s,:@]+(?:,@[^\s,:@]+)*:/, '');
  return { address, params: match[2]!.split(/\s+/).filter(Boolean) };
}
