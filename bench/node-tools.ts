/**
 * Fallback load tools in Node, when Postfix's smtp-source/smtp-sink cannot be had.
 */
import { SmtpTestClient } from '../src/testkit/client.ts';
import { startSink } from '../src/testkit/sink.ts';

export async function nodeSink(): Promise<{ label: string; stop(): Promise<void> }> {
  const sink = await startSink({ discard: true });
  return { label: sink.label, stop: () => sink.close() };
}

const BODY = Buffer.from(`Subject: bench\r\n\r\n${'x'.repeat(78)}\r\n`.repeat(128));

export async function nodeSource(target: string, options: { messages: number; sessions: number; persistent: boolean }): Promise<number> {
  const [host, portText] = [target.slice(0, target.lastIndexOf(':')), target.slice(target.lastIndexOf(':') + 1)];
  let remaining = options.messages;
  const started = process.hrtime.bigint();
  const session = async () => {
    let client: SmtpTestClient | undefined;
    while (remaining > 0) {
      remaining--;
      const fresh = client === undefined;
      client ??= await SmtpTestClient.connect(Number(portText), host);
      const result = await client.send({ from: 'bench@example.com', to: ['rcpt@example.net'], body: BODY, ehlo: fresh });
      if (result.data?.code !== 250) throw new Error(`bench message refused: ${JSON.stringify(result.data ?? result.mail)}`);
      if (!options.persistent) {
        await client.quit();
        client = undefined;
      }
    }
    await client?.quit();
  };
  await Promise.all(Array.from({ length: options.sessions }, session));
  return Number(process.hrtime.bigint() - started) / 1e6;
}
