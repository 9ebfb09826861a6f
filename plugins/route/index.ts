/**
 * `route`: declarative rules. Each rule matches the sender and/or the recipient and names the
 * strategy (another plugin: duplicate, failover, round-robin, your own) that routes the
 * recipient. First match wins; `default` routes whatever no rule matched.
 *
 * Rules are evaluated per recipient, so one message's recipients may route differently; the core
 * then splits the envelope (a recipient routing to another synchronous destination than the
 * transaction's gets 452 and arrives in its own transaction).
 */
import { definePlugin } from '../../src/plugins/decisions.ts';
import type { PluginSetupContext, RcptContext, RouteDecision, RouterPlugin } from '../../src/plugins/types.ts';
import { compileMatchers, type Matcher, type MatcherInput } from '../../src/core/address-patterns.ts';

export interface RouteRule {
  /** Sender pattern(s); omitted = any sender. */
  sender?: MatcherInput | readonly MatcherInput[];
  /** Recipient pattern(s); omitted = any recipient. */
  recipient?: MatcherInput | readonly MatcherInput[];
  /** The strategy for recipients this rule matches. */
  use: RouterPlugin;
}

export interface RouteOptions {
  rules: readonly RouteRule[];
  /** The strategy for everything no rule matched (required: the router fails closed otherwise). */
  default: RouterPlugin;
}

interface CompiledRule {
  label: string;
  sender?: Matcher;
  recipient?: Matcher;
  use: RouterPlugin;
}

function describe(rule: RouteRule, index: number): string {
  const parts = [rule.sender !== undefined && `sender ${String(rule.sender)}`, rule.recipient !== undefined && `recipient ${String(rule.recipient)}`].filter(Boolean);
  return `rule ${index + 1} (${parts.join(', ')})`;
}

export function route(options: RouteOptions): RouterPlugin {
  if (!options || !Array.isArray(options.rules)) throw new Error('route: "rules" must be a list');
  if (!options.default) throw new Error('route: "default" is required (a strategy for mail no rule matches)');
  // Compiled now: an invalid pattern is an error when the configuration loads.
  const rules: CompiledRule[] = options.rules.map((rule, index) => {
    if (rule.sender === undefined && rule.recipient === undefined) throw new Error(`route: rules[${index}] needs "sender" or "recipient"`);
    if (!rule.use) throw new Error(`route: rules[${index}] needs "use" (a strategy)`);
    try {
      return {
        label: describe(rule, index),
        sender: rule.sender === undefined ? undefined : compileMatchers(rule.sender),
        recipient: rule.recipient === undefined ? undefined : compileMatchers(rule.recipient),
        use: rule.use,
      };
    } catch (err) {
      throw new Error(`route: rules[${index}]: ${(err as Error).message}`);
    }
  });
  const fallback: CompiledRule = { label: 'default', use: options.default };
  const strategies = [...rules.map((r) => r.use), options.default];

  async function decide(rule: CompiledRule, ctx: RcptContext): Promise<RouteDecision | undefined> {
    const decision = (await rule.use.rcpt?.(ctx)) ?? (await rule.use.mail?.(ctx));
    return decision && { ...decision, decidedBy: `route: ${rule.label} -> ${decision.decidedBy ?? rule.use.name}` };
  }

  return definePlugin({
    name: 'route',
    async setup(ctx: PluginSetupContext) {
      for (const strategy of new Set(strategies)) await strategy.setup?.({ ...ctx, log: ctx.log.child({ strategy: strategy.name }) });
    },
    rcpt(ctx) {
      const rule = rules.find((r) => (!r.sender || r.sender(ctx.sender)) && (!r.recipient || r.recipient(ctx.recipient))) ?? fallback;
      return decide(rule, ctx);
    },
    async close() {
      for (const strategy of new Set(strategies)) await strategy.close?.();
    },
  });
}

export default route;
