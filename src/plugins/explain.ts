/**
 * Where would mail go? Runs the plugin driver's MAIL and RCPT hooks for an envelope exactly as a
 * live transaction does, without connecting anywhere: the `gosmtp-dup route` command and the
 * test kit's `explainRoute` use it.
 */
import { silentLogger } from '../core/logger.ts';
import { Replies, type SmtpReply } from '../core/replies.ts';
import { routeKey, type PluginDriver, type Route } from './driver.ts';
import type { ConnectionInfo } from './types.ts';

export interface RecipientRoute {
  readonly recipient: string;
  /** The decision, or the reply the client would get when there is none or a hook failed. */
  readonly route: Route | { readonly kind: 'refuse'; readonly reply: SmtpReply; readonly decidedBy: string };
  /** True when this recipient routes to another synchronous destination than the first: 452, sent in its own transaction. */
  readonly separateTransaction: boolean;
}

export async function explainRoute(
  driver: PluginDriver,
  envelope: { from: string; to: readonly string[]; connection?: Partial<ConnectionInfo> },
): Promise<RecipientRoute[]> {
  const connection: ConnectionInfo = { id: 'explain', remoteAddress: '127.0.0.1', remotePort: 0, heloName: 'explain', secure: false, ...envelope.connection };
  const ctx = { connection, transactionId: 'EXPLAIN', sender: envelope.from, notes: new Map<string, unknown>(), log: silentLogger() };
  const failed = (err: unknown) => ({ kind: 'refuse' as const, reply: Replies.localError(), decidedBy: `error: ${(err as Error).message}` });
  let mailRoute: Route | undefined;
  try {
    mailRoute = await driver.mail(ctx);
  } catch (err) {
    return envelope.to.map((recipient) => ({ recipient, route: failed(err), separateTransaction: false }));
  }
  const accepted: string[] = [];
  let transactionKey: string | undefined;
  const results: RecipientRoute[] = [];
  for (const recipient of envelope.to) {
    let route: RecipientRoute['route'];
    try {
      route = (await driver.routeRecipient({ ...ctx, recipient, acceptedRecipients: accepted }, mailRoute)) ?? { kind: 'refuse', reply: Replies.noRoute(), decidedBy: 'no plugin decided' };
    } catch (err) {
      route = failed(err);
    }
    const key = routeKey(route);
    const separateTransaction = key !== undefined && transactionKey !== undefined && key !== transactionKey;
    if (key !== undefined && transactionKey === undefined) transactionKey = key;
    if (route.kind === 'deliver') accepted.push(recipient);
    results.push({ recipient, route, separateTransaction });
  }
  return results;
}
