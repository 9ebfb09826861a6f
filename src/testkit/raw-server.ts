/**
 * Deliberately lenient or broken upstreams, written on raw sockets: a server that takes
 * `<LF>.<LF>` as the end of a message (as vulnerable servers did before CVE-2023-51764), one that
 * never greets, one that drops the connection at a given command.
 */
import net, { type AddressInfo } from 'node:net';

export type RawServerMode =
  /** A permissive SMTP server: accepts everything, ends DATA at any `.` line, whatever its line endings. */
  | 'lenient'
  /** Accepts the connection and never says anything. */
  | 'silent'
  /** Greets with 421 (too busy) and closes, like an overloaded server. */
  | 'busy'
  /** Behaves until the named command, then closes the connection without a reply. */
  | { dropAt: 'MAIL' | 'RCPT' | 'DATA' | 'BODY' }
  /** One message per connection: the next MAIL on it is met with a silent close, as from a server that dropped an idle connection. */
  | 'dropOnReuse'
  /** One message per connection: the next MAIL gets `421 4.7.0` and a close, as from Exim past its per-connection message limit. */
  | 'refuseReuse'
  /** Behaves until the message body, then never answers the final dot. */
  | 'hangAfterBody'
  /** Answers DATA with this line instead of 354 (e.g. a broken server's `250 ok`). */
  | { dataReply: string }
  /** Answers every RCPT with this line, and DATA with 354 all the same (as a broken server would). */
  | { rcptReply: string }
  /**
   * Offers STARTTLS and answers it with this line. After a `220` its TLS cannot agree with the
   * client's (a fatal handshake_failure alert, then close), as with a server that speaks only
   * TLS 1.0; after anything else the session goes on in plain text.
   */
  | { starttls: string }
  /**
   * Lenient, but every reply waits this long (a slow server). Per command (`BODY`: the reply to
   * the final dot), replies come one after another, each its delay after the previous one, as
   * from a server working through pipelined commands; `Infinity` never answers.
   */
  | { replyDelayMs: number | Partial<Record<'EHLO' | 'MAIL' | 'RCPT' | 'DATA' | 'BODY' | 'RSET' | 'QUIT', number>> };

export interface RawServer {
  readonly port: number;
  readonly label: string;
  /** Messages as the server understood them: one entry per message it believes it received. */
  readonly messages: Array<{ from: string; to: string[]; body: string }>;
  /** Connections accepted so far. */
  connections(): number;
  /** Every command line received, in order, across connections. */
  readonly commands: string[];
  /** What each read from a socket delivered, as text: commands sent in one write arrive in one. */
  readonly reads: string[];
  close(): Promise<void>;
}

// A permissive end-of-data: a dot alone on a line, whatever combination of CR and LF ends the lines.
const LENIENT_END = /(?:^|\r\n|\n|\r)\.(?:\r\n|\n|\r)/;

export async function startRawServer(mode: RawServerMode): Promise<RawServer> {
  const messages: RawServer['messages'] = [];
  const commands: string[] = [];
  const reads: string[] = [];
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    if (mode === 'silent') return;
    if (mode === 'busy') return void socket.end('421 4.3.2 raw too busy, try later\r\n');
    const dropAt = typeof mode === 'object' && 'dropAt' in mode ? mode.dropAt : undefined;
    const dataReply = typeof mode === 'object' && 'dataReply' in mode ? mode.dataReply : '354 go ahead';
    const delayMs = typeof mode === 'object' && 'replyDelayMs' in mode ? mode.replyDelayMs : 0;
    const rcptReply = typeof mode === 'object' && 'rcptReply' in mode ? mode.rcptReply : undefined;
    const starttls = typeof mode === 'object' && 'starttls' in mode ? mode.starttls : undefined;
    let buffer = '';
    let inData = false;
    let served = 0;
    let envelope = { from: '', to: [] as string[] };
    socket.write('220 raw ESMTP\r\n');
    let replyingTo = '';
    let serial = Promise.resolve();
    const reply = (line: string): void => {
      if (typeof delayMs === 'number') {
        if (delayMs) setTimeout(() => socket.writable && socket.write(`${line}\r\n`), delayMs);
        else socket.write(`${line}\r\n`);
        return;
      }
      const delay = delayMs[replyingTo as keyof typeof delayMs] ?? 0;
      serial = serial.then(
        () =>
          new Promise<void>((resolve) => {
            if (delay === Infinity) return; // never answers, nor anything after
            setTimeout(() => {
              if (socket.writable) socket.write(`${line}\r\n`);
              resolve();
            }, delay);
          }),
      );
    };
    let handshaking = false;
    socket.on('data', (chunk: Buffer) => {
      // The client's hello, answered with a TLS alert record: TLS 1.0, fatal handshake_failure.
      if (handshaking) return void socket.end(Buffer.from([21, 3, 1, 0, 2, 2, 40]));
      reads.push(chunk.toString('latin1'));
      buffer += chunk.toString('latin1');
      for (;;) {
        if (inData) {
          const end = LENIENT_END.exec(buffer);
          if (!end) {
            if (dropAt === 'BODY' && buffer.length > 0) return void socket.destroy();
            return;
          }
          const body = buffer.slice(0, end.index);
          buffer = buffer.slice(end.index + end[0].length);
          inData = false;
          if (mode === 'hangAfterBody') return;
          messages.push({ ...envelope, body });
          served++;
          envelope = { from: '', to: [] };
          replyingTo = 'BODY';
          reply(`250 2.0.0 Ok: queued as raw-${messages.length}`);
          continue;
        }
        const newline = buffer.indexOf('\n');
        if (newline === -1) return;
        const line = buffer.slice(0, newline).replace(/\r$/, '');
        buffer = buffer.slice(newline + 1);
        const verb = line.slice(0, 4).toUpperCase();
        replyingTo = verb;
        commands.push(line);
        if (dropAt && verb === dropAt.slice(0, 4)) return void socket.destroy();
        if (mode === 'dropOnReuse' && verb === 'MAIL' && served > 0) return void socket.destroy();
        if (mode === 'refuseReuse' && verb === 'MAIL' && served > 0) return void socket.end('421 4.7.0 raw: too many messages on this connection\r\n');
        if (verb === 'EHLO') reply(starttls ? '250-raw\r\n250-STARTTLS\r\n250 PIPELINING' : '250-raw\r\n250 PIPELINING');
        else if (verb === 'STAR' && starttls) {
          reply(starttls);
          if (starttls.startsWith('220')) return void (handshaking = true);
        }
        else if (verb === 'HELO') reply('250 raw');
        else if (verb === 'MAIL') {
          envelope.from = line.slice(line.indexOf(':') + 1).trim();
          reply('250 2.1.0 Ok');
        } else if (verb === 'RCPT' && rcptReply) {
          reply(rcptReply);
        } else if (verb === 'RCPT') {
          envelope.to.push(line.slice(line.indexOf(':') + 1).trim());
          reply('250 2.1.5 Ok');
        } else if (verb === 'DATA') {
          inData = dataReply.startsWith('354');
          reply(dataReply);
        } else if (verb === 'RSET') {
          envelope = { from: '', to: [] };
          reply('250 2.0.0 Ok');
        } else if (verb === 'QUIT') {
          reply('221 2.0.0 Bye');
          socket.end();
          return;
        } else if (verb === 'NOOP') reply('250 2.0.0 Ok');
        else reply('502 5.5.2 Unknown command');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    label: `127.0.0.1:${port}`,
    messages,
    connections: () => connections,
    commands,
    reads,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A loopback port that was free a moment ago (for servers started by other programs). */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Resolves once something accepts connections on `port` (a server another program starts). */
export async function waitForPort(port: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return false;
}
