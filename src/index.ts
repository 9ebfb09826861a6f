/**
 * The public API of gosmtp-dup: what a configuration file or a custom plugin imports.
 */
export type { ConnectionInfo, DeliverDecision, MailContext, PluginSetupContext, RcptContext, RefuseDecision, RouteDecision, RouterPlugin } from './plugins/types.ts';
export { definePlugin, deliver, reject, tempfail, type DeliverOptions, type DestinationInput } from './plugins/decisions.ts';
export type { Destination } from './core/destination.ts';
export type { SmtpReply } from './core/replies.ts';
export type { Config, ConfigInput } from './core/config/schema.ts';
export { loadConfig, ConfigError } from './core/config/load.ts';
export { startRouter, type Router, type StartOptions } from './core/router.ts';
export { defineConfig, type PluginEntry, type PluginOption, type UserConfig } from './core/config/define.ts';
export type { DestinationRef } from './core/destinations.ts';
export type { CircuitState } from './core/health.ts';
export type { HealthView } from './plugins/types.ts';
export { duplicate, type DuplicateOptions } from '../plugins/duplicate/index.ts';
export { failover, type FailoverOptions } from '../plugins/failover/index.ts';
export { roundRobin, type RoundRobinOptions, type WeightedDestination } from '../plugins/round-robin/index.ts';
export { route, type RouteOptions, type RouteRule } from '../plugins/route/index.ts';
export type { MatcherInput } from './core/address-patterns.ts';
