/**
 * Runs plugin hooks with the semantics documented in `types.ts`: `mail` and `rcpt` are first-wins
 * in configured order, `setup` and `close` sequential. A hook that throws or exceeds its time
 * limit becomes a GsdError naming the plugin and hook; the core turns it into a 451. Decisions
 * leave the driver with their destinations resolved.
 */
import type { Logger } from 'pino';
import { ConfigError } from '../core/config/load.ts';
import { poolKeyOf, type Destination } from '../core/destination.ts';
import type { DestinationRegistry } from '../core/destinations.ts';
import { ErrorCodes, GsdError } from '../core/errors.ts';
import type { HealthRegistry } from '../core/health.ts';
import type { SmtpReply } from '../core/replies.ts';
import { refusalProblem } from './decisions.ts';
import type { MailContext, PluginSetupContext, RcptContext, RouteDecision, RouterPlugin } from './types.ts';

/** A decision as the core executes it: destinations resolved, the decider named. */
export type Route =
  | { readonly kind: 'deliver'; readonly to: readonly Destination[]; readonly copies: readonly Destination[]; readonly decidedBy: string }
  | { readonly kind: 'refuse'; readonly reply: SmtpReply; readonly decidedBy: string };

/** Recipients whose routes share this key can be in one upstream transaction. */
export function routeKey(route: Route): string | undefined {
  if (route.kind !== 'deliver') return undefined;
  const key = (d: Destination) => (d.kind === 'smtp' ? poolKeyOf(d) : d.label);
  return route.to.length === 1 ? key(route.to[0]!) : route.to.map(key).join(',');
}

export interface DriverOptions {
  hookTimeoutMs: number;
  log: Logger;
  destinations: DestinationRegistry;
  health: HealthRegistry;
}

export class PluginDriver {
  readonly plugins: readonly RouterPlugin[];
  readonly #options: DriverOptions;

  constructor(plugins: readonly RouterPlugin[], options: DriverOptions) {
    this.plugins = plugins;
    this.#options = options;
  }

  /** The context handed to `setup`; route-like plugins pass it on to the plugins they nest. */
  setupContext(plugin: RouterPlugin): PluginSetupContext {
    return {
      log: this.#options.log.child({ plugin: plugin.name }),
      destination: (ref) => this.#options.destinations.resolve(ref),
      health: this.#options.health,
    };
  }

  /** Sets every plugin up; a failure is a configuration error naming the plugin. */
  async setup(): Promise<void> {
    for (const [index, plugin] of this.plugins.entries()) {
      try {
        await this.#run(plugin, 'setup', () => plugin.setup?.(this.setupContext(plugin)));
      } catch (err) {
        const message = err instanceof GsdError && err.cause instanceof Error ? err.cause.message : (err as Error).message;
        throw new ConfigError([`plugins[${index}] (${plugin.name}): ${message}`], 'plugins');
      }
    }
  }

  mail(ctx: MailContext): Promise<Route | undefined> {
    return this.#first('mail', (plugin) => plugin.mail?.(ctx));
  }

  rcpt(ctx: RcptContext): Promise<Route | undefined> {
    return this.#first('rcpt', (plugin) => plugin.rcpt?.(ctx));
  }

  /** One recipient's route: an `rcpt` decision, else the transaction's `mail` decision. */
  async routeRecipient(ctx: RcptContext, mailRoute: Route | undefined): Promise<Route | undefined> {
    return (await this.rcpt(ctx)) ?? mailRoute;
  }

  /** Closes every plugin, in reverse order; a failing close is logged, not thrown. */
  async close(): Promise<void> {
    for (const plugin of [...this.plugins].reverse()) {
      try {
        await this.#run(plugin, 'close', () => plugin.close?.());
      } catch (err) {
        this.#options.log.error({ plugin: plugin.name, err: (err as Error).message }, 'plugin close failed');
      }
    }
  }

  async #first(hook: 'mail' | 'rcpt', call: (plugin: RouterPlugin) => unknown): Promise<Route | undefined> {
    for (const plugin of this.plugins) {
      if (typeof plugin[hook] !== 'function') continue;
      const decision = (await this.#run(plugin, hook, () => call(plugin))) as RouteDecision | undefined | null;
      if (decision === undefined || decision === null) continue;
      return this.#resolve(plugin, hook, decision);
    }
    return undefined;
  }

  #resolve(plugin: RouterPlugin, hook: string, decision: RouteDecision): Route {
    const decidedBy = decision.decidedBy ?? plugin.name;
    if (decision.kind === 'refuse') {
      const problem = refusalProblem(decision.reply ?? {});
      if (problem) throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} refused with a bad reply: ${problem}`);
      return { kind: 'refuse', reply: decision.reply, decidedBy };
    }
    if (decision.kind !== 'deliver' || !Array.isArray(decision.to)) {
      throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} returned something that is not a decision`);
    }
    const resolve = (refs: readonly unknown[]) =>
      refs.map((ref) => {
        const found = this.#options.destinations.lookup(ref as string);
        if (typeof found === 'string') throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook}: ${found}`);
        return found;
      });
    const to = resolve(decision.to);
    if (to.length === 0) throw new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} chose no destination`);
    return { kind: 'deliver', to, copies: resolve(decision.copies ?? []), decidedBy };
  }

  async #run(plugin: RouterPlugin, hook: string, call: () => unknown): Promise<unknown> {
    let result: unknown;
    try {
      result = call();
    } catch (err) {
      throw hookFailure(plugin, hook, err);
    }
    // A synchronous answer needs no clock (a hook that never returns would block everything
    // anyway); most routing hooks are synchronous, and this is on every message's path.
    if (!isThenable(result)) return result;
    let timer: NodeJS.Timeout | undefined;
    const timeoutMs = this.#options.hookTimeoutMs;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new GsdError(ErrorCodes.PLUGIN_TIMEOUT, `plugin "${plugin.name}" hook ${hook} did not finish within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      return await Promise.race([result, timeout]);
    } catch (err) {
      throw hookFailure(plugin, hook, err);
    } finally {
      clearTimeout(timer);
    }
  }
}

function hookFailure(plugin: RouterPlugin, hook: string, err: unknown): GsdError {
  return err instanceof GsdError ? err : new GsdError(ErrorCodes.PLUGIN_FAILED, `plugin "${plugin.name}" hook ${hook} failed: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | undefined)?.then === 'function';
}
