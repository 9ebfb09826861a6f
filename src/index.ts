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
export { duplicate, type DuplicateOptions } from '../plugins/duplicate/index.ts';
