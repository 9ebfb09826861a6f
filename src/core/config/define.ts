/**
 * `defineConfig`, for `gosmtp-dup.config.ts`: returns its argument unchanged and exists for the
 * types (editor completion, checked keys). `plugins` takes plugin objects, YAML-style entries,
 * nested lists and falsy values, so presets compose: `plugins: [isProd && archive(), ...]`.
 */
import type { RouterPlugin } from '../../plugins/types.ts';
import type { ConfigInput } from './schema.ts';

/** A YAML-style entry: a built-in name, a path or package, or `{ name: options }`. */
export type PluginEntry = string | Readonly<Record<string, unknown>>;
export type PluginOption = RouterPlugin | PluginEntry | false | null | undefined | readonly PluginOption[];

export interface UserConfig extends Omit<ConfigInput, 'plugins'> {
  plugins?: readonly PluginOption[];
}

export function defineConfig<const T extends UserConfig>(config: T): T {
  return config;
}
