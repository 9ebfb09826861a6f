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
 * 6. The body scanner: smtp-server looks for the terminating dot (and escape dots) with a
 *    JavaScript loop over every byte of every message. The same search runs natively here
 *    (`indexOf` of "\n." finds every line that starts with a dot); this one method is replaced,
 *    not wrapped, and does exactly what the original does at each such line (a test runs both on
 *    the same input split at every position). Being a replacement, it is installed only over the
 *    scanner it was checked against (by a hash of its source): a later smtp-server keeps its own,
 *    slower scanner, with whatever it fixed, until this one is checked against it again.
 * 7. Plain addresses without a second parse: smtp-server's address parser (splits, regular
 *    expressions, punycode) runs for every MAIL and RCPT, ~3 µs each. For the common command,
 *    `MAIL FROM:<local@domain>` / `RCPT TO:<…>` with a plain ASCII address and no parameters,
 *    its result is known without it (a test compares the two on thousands of commands, near
 *    misses included); anything else still goes through smtp-server's parser. Installed, like
 *    patch 6, only over the parser it was checked against.
 * 8. Quoted local parts: smtp-server splits the command at spaces and refuses a local part in
 *    quotes (`"john doe"@example.com`, `"john..doe"@example.com`), which RFC 5321 allows and
 *    Postfix delivers. Such an address is parsed with a plain stand-in for its local part (the
 *    domain and parameters still get smtp-server's checks), then carries its own local part.
 */
import { createHash } from 'node:crypto';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { SMTPStream } from 'smtp-server/lib/smtp-stream.js';
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
  const stream = SMTPStream.prototype as unknown as ScannerStream;
  if (isCheckedScanner(stream._feedDataStream)) stream._feedDataStream = feedDataStream;

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
  const plainFirst = isCheckedAddressParser(parse);
  proto._parseAddressCommand = function (this: PatchableConnection, rawName, rawCommand) {
    const command = String(rawCommand);
    const plain = plainFirst ? plainAddressCommand(rawName, command) : undefined;
    if (plain) return plain;
    const quoted = QUOTED_LOCAL_PART.exec(command);
    if (quoted) {
      const parsed = parse.call(this, rawName, command.replace(quoted[1]!, 'quoted'));
      if (!parsed) return parsed;
      parsed.address = `${quoted[1]!}${parsed.address.slice(parsed.address.lastIndexOf('@'))}`;
      parsed.raw = rawAddressCommand(command);
      return parsed;
    }
    const parsed = parse.call(this, rawName, rawCommand);
    if (parsed) parsed.raw = rawAddressCommand(command);
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

/** The parts of smtp-server's SMTPStream that its data-mode scanner uses. */
interface ScannerStream {
  _dataStream: (NodeJS.WritableStream & { writable: boolean; destroyed: boolean }) | null;
  _lastBytes: Buffer | false;
  _atDataStart: boolean;
  _countDataBytes(len: number): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, callback: (err?: Error | null) => void): void;
  _feedDataStream(chunk: Buffer, done: (err?: Error | null) => void): void;
}

/** SHA-256 of the source of smtp-server 3.21.6's `SMTPStream._feedDataStream` (ESM and CJS builds alike). */
const CHECKED_SCANNER_SHA256 = '9d8b903f9a3a63542d72e19a9e2f67009a3b1107a28d57e8e7369355454ff230';

/**
 * SHA-256 of the source of smtp-server 3.21.6's `SMTPConnection._parseAddressCommand`: its ESM
 * and CJS builds (they differ only in how they name `punycode` and `net`).
 */
const CHECKED_ADDRESS_PARSERS_SHA256 = [
  '9f368803e4fdff1525b5b5238e974c4d1c49facf2f665c628b01dbabc2ff857e',
  '6c12334d014173e8806c0e05fd22532a3b674bb43b3206a2b734ea89dbfd0281',
];

const sourceHash = (fn: (...args: never[]) => unknown) => createHash('sha256').update(fn.toString()).digest('hex');

/** Whether `scanner` is the smtp-server scanner that `feedDataStream` was checked against. */
export function isCheckedScanner(scanner: (...args: never[]) => unknown): boolean {
  return sourceHash(scanner) === CHECKED_SCANNER_SHA256;
}

/** Whether `parser` is the smtp-server address parser that `plainAddressCommand` was checked against. */
export function isCheckedAddressParser(parser: (...args: never[]) => unknown): boolean {
  return CHECKED_ADDRESS_PARSERS_SHA256.includes(sourceHash(parser));
}

const END_SEQUENCE = Buffer.from('\r\n.\r\n');
const LINE_STARTS_WITH_DOT = Buffer.from('\n.');

/**
 * smtp-server 3.21's `SMTPStream._feedDataStream` with its byte loop replaced by a native search
 * for "\n." (patch 6). Everything else, the end-of-DATA checks at the start of a body included
 * (the smuggling fixes), is the original's.
 */
export function feedDataStream(this: ScannerStream, input: Buffer, done: (err?: Error | null) => void): void {
  const dataStream = this._dataStream!;
  let chunk = input;
  if (this._lastBytes && this._lastBytes.length) {
    chunk = Buffer.concat([this._lastBytes, chunk], this._lastBytes.length + chunk.length);
    this._lastBytes = false;
  }
  let len = chunk.length;
  // A body that is nothing but the terminator.
  if (this._atDataStart && len >= 3 && chunk[0] === 0x2e && chunk[1] === 0x0d && chunk[2] === 0x0a) {
    this._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  // An escape dot as the very first byte.
  if (this._atDataStart && len >= 2 && chunk[0] === 0x2e && chunk[1] === 0x2e) {
    chunk = chunk.subarray(1);
    len--;
    this._atDataStart = false;
  }
  // Every dot at the start of a line at positions 2 … len-3 (the original's loop bounds).
  for (let lf = chunk.indexOf(LINE_STARTS_WITH_DOT, 1); lf !== -1 && lf < len - 3; lf = chunk.indexOf(LINE_STARTS_WITH_DOT, lf + 1)) {
    const i = lf + 1;
    if (chunk.compare(END_SEQUENCE, 0, 5, i - 2, i + 3) === 0) {
      const buf = chunk.subarray(0, i);
      this._countDataBytes(buf.length);
      this._endDataMode(buf, chunk.subarray(i + 3), done);
      return;
    }
    if (chunk[i + 1] === 0x2e) {
      // An escape dot: what came before goes out, the rest is scanned on the next turn.
      const buf = chunk.subarray(0, i);
      this._lastBytes = false;
      this._countDataBytes(buf.length);
      if (dataStream.writable) dataStream.write(buf);
      const rest = chunk.subarray(i + 1);
      setImmediate(() => this._feedDataStream(rest, done));
      return;
    }
  }
  // The last 4 bytes wait for the next chunk: they may be the start of the terminator.
  this._lastBytes = chunk.length < 4 ? chunk : chunk.subarray(chunk.length - 4);
  if (this._lastBytes.length >= chunk.length) return done();
  const buf = chunk.subarray(0, chunk.length - this._lastBytes.length);
  this._countDataBytes(buf.length);
  if (!dataStream.writable) return done();
  if (dataStream.write(buf) || dataStream.destroyed) return done();
  // A stream that the application destroys never drains, it only closes.
  const onDrain = () => {
    dataStream.removeListener('drain', onDrain);
    dataStream.removeListener('close', onDrain);
    done();
  };
  dataStream.once('drain', onDrain);
  dataStream.once('close', onDrain);
}

/**
 * `MAIL FROM:<local@domain>` or `RCPT TO:<local@domain>`, exactly: one space, no parameters, no
 * spaces around. The local part of the characters RFC 5321 allows unquoted, the domain of
 * letters, digits, dots and hyphens: nothing that smtp-server's parser would decode, normalize
 * or refuse for a reason these checks do not see.
 */
const PLAIN_ADDRESS_COMMAND = /^([A-Za-z]{4} [A-Za-z]{2,4}):<([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)@([A-Za-z0-9.-]+)>$/;

/**
 * What smtp-server's `_parseAddressCommand(rawName, command)` returns for a plain command (patch
 * 7), raw forms included; undefined for any other command, which smtp-server's parser then reads.
 */
export function plainAddressCommand(rawName: string, command: string): ParsedAddressWithRaw | undefined {
  const match = PLAIN_ADDRESS_COMMAND.exec(command);
  if (!match || match[1]!.toUpperCase() !== rawName.toUpperCase()) return undefined;
  const local = match[2]!;
  const domain = match[3]!;
  // What smtp-server refuses (dots at the edges or doubled, a label edged by a hyphen, a path over
  // 253 octets) and what it rewrites (an xn-- label becomes Unicode) is left to it.
  if (local.startsWith('.') || local.endsWith('.') || local.includes('..')) return undefined;
  if (domain.startsWith('.') || domain.endsWith('.') || domain.includes('..') || domain.includes('.-') || domain.includes('-.')) return undefined;
  if (/xn--/i.test(domain) || local.length + 1 + domain.length > 253) return undefined;
  const address = `${local}@${domain}`;
  return { address, args: false, raw: { address, params: [] } };
}

/**
 * A MAIL/RCPT address whose local part is an RFC 5321 quoted string (printable ASCII; `\`
 * escapes; no angle brackets, which other software in the path may take for the address's end).
 */
const QUOTED_LOCAL_PART = /^[A-Za-z]{4} [A-Za-z]{2,4}:\s*<(?:@[^\s,:@<>]+(?:,@[^\s,:@<>]+)*:)?("(?:[\x20\x21\x23-\x3b\x3d\x3f-\x5b\x5d-\x7e]|\\[\x20-\x7e]){1,62}")@[^\s<>"]+>/;

/** `MAIL FROM:<a@xn--bcher-kva.example> BODY=8BITMIME` → the address and words as written. */
export function rawAddressCommand(command: string): { address: string; params: string[] } {
  const afterColon = command.slice(command.indexOf(':') + 1).trim();
  const match = /^<([^<>]*)>\s*(.*)$/.exec(afterColon);
  if (!match) return { address: '', params: [] };
  // A source route (`<@relay:user@host>`) is ignored, as RFC 5321 says.
  const address = match[1]!.replace(/^@[^\s,:@]+(?:,@[^\s,:@]+)*:/, '');
  return { address, params: match[2]!.split(/\s+/).filter(Boolean) };
}
