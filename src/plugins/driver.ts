/**
 * Runs plugin hooks with the semantics documented in `types.ts`: `mail` and `rcpt` are first-wins
 * in configured order, `setup` and `close` sequential. A hook that throws or exceeds its time
 * limit becomes a GsdError naming the plugin and hook; the core turns it into a 451.
 */
import type { Logger } from 'pino';
import { ErrorCodes, GsdError } from '../core/errors.ts';
import type { MailContext, RcptContext, RouteDecision, RouterPlugin } from './types.ts';

export class PluginDriver {
  readonly plugins: readonly RouterPlugin[];
  readonly #timeoutMs: number;
  readonly #log: Logger;

  constructor(plugins: readonly RouterPlugin[], options: { hookTimeoutMs: number; log: Logger }) {
    this.plugins = plugins;
    this.#timeoutMs = options.hookTimeoutMs;
    this.#log = options.log;
  }

  async setup(): Promise<void> {
    for (const plugin of this.plugins) {
      await this.#run(plugin, 'setup', () => plugin.setup?.({ log: this.#log.child({ plugin: plugin.name }) }));
    }
  }

  mail(ctx: MailContext): Promise<RouteDecision | undefined> {
    return this.#first('mail', (plugin) => plugin.mail?.(ctx));
  }

  rcpt(ctx: RcptContext): Promise<RouteDecision | undefined> {
    return this.#first('rcpt', (plugin) => plugin.rcpt?.(ctx));
  }

  /** Closes every plugin, in reverse order; a failing close is logged, not thrown. */
  async close(): Promise<void> {
    for (const plugin of [...this.plugins].reverse()) {
      try {
        await this.#run(plugin, 'close', () => plugin.close?.());
      } catch (err) {
        this.#log.error({ plugin: plugin.name, err: (err as Error).message }, 'plugin close failed');
      }
    }
  }

  async #first(hook: 'mail' | 'rcpt', call: (plugin: RouterPlugin) => unknown): Promise<RouteDecision | undefined> {
    for (const plugin of this.plugins) {
      if (typeof plugin[hook] !== 'function') continue;
      const decision = (await this.#run(plugin, hook, () => call(plugin))) as RouteDecision | undefined;
      if (decision === undefined || decision === null) continue;
      if (decision.kind !== 'deliver' && decision.kind !== 'refuse') {
        throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} returned something that is not a decision`);
      }
      return decision.decidedBy ? decision : { ...decision, decidedBy: plugin.name };
    }
    return undefined;
  }

  async #run(plugin: RouterPlugin, hook: string, call: () => unknown): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () => reject(new GsdError(ErrorCodes.PLUGIN_TIMEOUT, `plugin "${plugin.name}" hook ${hook} did not finish within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      return await Promise.race([Promise.resolve().then(call), timeout]);
    } catch (err) {
      if (err instanceof GsdError) throw err;
      throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    } finally {
      clearTimeout(timer);
    }
  }
}
