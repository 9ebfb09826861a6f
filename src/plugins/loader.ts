/**
 * Turns the `plugins:` list of a configuration into plugin instances, before anything listens.
 *
 * An entry is one of:
 *   - a plugin object (TypeScript configs: `duplicate({...})`, `route({...})`, your own);
 *   - a name or path alone: `"failover"`, `"./plugins/vip.ts"`, `"gosmtp-dup-plugin-x"`;
 *   - a name or path with options: `{ route: { rules: [...], default: {...} } }`.
 * Built-ins are found by name; anything else is a path (relative to the config file) or an npm
 * package, whose default export is a plugin object or a factory `(options) => plugin`.
 * Every problem is a ConfigError naming the entry (`plugins[1].route.rules.0.recipient: ...`).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { importDefault } from '../core/import-module.ts';
import { z } from 'zod';
import { duplicate } from '../../plugins/duplicate/index.ts';
import { failover } from '../../plugins/failover/index.ts';
import { roundRobin } from '../../plugins/round-robin/index.ts';
import { route, type RouteRule } from '../../plugins/route/index.ts';
import { ConfigError, describeIssues } from '../core/config/load.ts';
import type { Config } from '../core/config/schema.ts';
import type { RouterPlugin } from './types.ts';

/** The hooks a plugin may have; any other function on a plugin object is a mistake. */
export const HOOKS = ['setup', 'mail', 'rcpt', 'close'] as const;

type Load = (entry: unknown, path: string) => Promise<RouterPlugin>;

const refs = z.array(z.string({ error: 'expected a destination name or "host:port"' }), { error: 'expected a list' });
const patterns = z.union([z.string(), z.array(z.string()).min(1)], { error: 'expected a pattern or a list of patterns' });

/** Built-ins as YAML/JSON configs name them: option schema, then the same factory TS configs call. */
const BUILTINS: Record<string, (options: unknown, path: string, load: Load) => Promise<RouterPlugin>> = {
  duplicate: async (options, path) => duplicate(parse(z.strictObject({ primary: z.string(), backups: refs.optional() }), options, path)),
  failover: async (options, path) => failover(parse(z.strictObject({ destinations: refs.min(1), copies: refs.optional() }), options, path)),
  'round-robin': async (options, path) =>
    roundRobin(
      parse(
        z.strictObject({
          destinations: z.array(z.union([z.string(), z.strictObject({ destination: z.string(), weight: z.number().positive().optional() })])).min(1),
          copies: refs.optional(),
        }),
        options,
        path,
      ),
    ),
  route: async (options, path, load) => {
    const parsed = parse(
      z.strictObject({
        rules: z.array(z.strictObject({ sender: patterns.optional(), recipient: patterns.optional(), use: z.unknown() }), { error: 'expected a list of rules' }),
        default: z.unknown(),
      }),
      options,
      path,
    );
    if (parsed.default === undefined) throw new ConfigError([`${path}.default: required (the strategy for mail no rule matches)`], 'plugins');
    const rules: RouteRule[] = [];
    for (const [index, rule] of parsed.rules.entries()) {
      if (rule.use === undefined) throw new ConfigError([`${path}.rules.${index}.use: required (the strategy for this rule)`], 'plugins');
      rules.push({ sender: rule.sender, recipient: rule.recipient, use: await load(rule.use, `${path}.rules.${index}.use`) });
    }
    return route({ rules, default: await load(parsed.default, `${path}.default`) });
  },
};

export const BUILTIN_NAMES = Object.keys(BUILTINS);

function parse<T extends z.ZodType>(schema: T, options: unknown, path: string): z.output<T> {
  const result = schema.safeParse(options ?? {}, { reportInput: true });
  if (!result.success) {
    throw new ConfigError(
      describeIssues(result.error).flatMap((line) => line.split('\n')).map((line) => `${path}.${line}`),
      'plugins',
    );
  }
  return result.data;
}

/** Runs a factory, turning what it throws into a config error at `path`. */
async function factoryCall(path: string, call: () => Promise<RouterPlugin> | RouterPlugin): Promise<RouterPlugin> {
  try {
    return await call();
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    // Factories prefix their messages with their own name, which `path` already says.
    throw new ConfigError([`${path}: ${(err as Error).message.replace(/^[\w-]+: /, '')}`], 'plugins');
  }
}

/** Checks a plugin object's shape: a name, and only known hooks. */
export function validatePlugin(value: unknown, path: string): RouterPlugin {
  if (typeof value !== 'object' || value === null) throw new ConfigError([`${path}: expected a plugin object, got ${JSON.stringify(value)}`], 'plugins');
  const plugin = value as Record<string, unknown>;
  if (typeof plugin.name !== 'string' || plugin.name === '') throw new ConfigError([`${path}: a plugin needs a "name"`], 'plugins');
  for (const [key, member] of Object.entries(plugin)) {
    if (typeof member === 'function' && !(HOOKS as readonly string[]).includes(key)) {
      throw new ConfigError([`${path} (${plugin.name}): unknown hook "${key}" (hooks are ${HOOKS.join(', ')})`], 'plugins');
    }
  }
  if (typeof plugin.mail !== 'function' && typeof plugin.rcpt !== 'function') {
    throw new ConfigError([`${path} (${plugin.name}): a routing plugin needs a "mail" or "rcpt" hook`], 'plugins');
  }
  return value as RouterPlugin;
}

const isPath = (spec: string) => spec.startsWith('.') || isAbsolute(spec) || /\.(m?[jt]s)$/.test(spec);

async function importModule(spec: string, baseDir: string, path: string): Promise<unknown> {
  let url: string;
  if (isPath(spec)) {
    const file = resolve(baseDir, spec);
    if (!existsSync(file)) throw new ConfigError([`${path}: plugin file not found: ${file}`], 'plugins');
    url = pathToFileURL(file).href;
  } else {
    try {
      url = pathToFileURL(createRequire(join(baseDir, 'noop.js')).resolve(spec)).href;
    } catch {
      throw new ConfigError([`${path}: unknown plugin "${spec}" (built-ins: ${BUILTIN_NAMES.join(', ')}; or a path like ./my-plugin.ts, or an installed npm package)`], 'plugins');
    }
  }
  let exported: unknown;
  try {
    exported = await importDefault(url);
  } catch (err) {
    throw new ConfigError([`${path}: cannot load ${spec}: ${(err as Error).message.split('\n')[0]}`], 'plugins');
  }
  if (exported === undefined) throw new ConfigError([`${path}: ${spec} has no default export (export a plugin object or a factory)`], 'plugins');
  return exported;
}

/** Loads one entry (recursively for strategies nested in `route`). */
function loader(baseDir: string): Load {
  const load: Load = async (entry, path) => {
    if (typeof entry === 'object' && entry !== null && typeof (entry as { name?: unknown }).name === 'string') return validatePlugin(entry, path);
    let spec: string;
    let options: unknown;
    if (typeof entry === 'string') spec = entry;
    else if (typeof entry === 'object' && entry !== null && !Array.isArray(entry) && Object.keys(entry).length === 1) {
      [[spec, options]] = Object.entries(entry) as [[string, unknown]];
    } else {
      throw new ConfigError([`${path}: expected a plugin name, a path, or { name: options }, got ${JSON.stringify(entry)}`], 'plugins');
    }
    const builtin = BUILTINS[spec];
    if (builtin) return factoryCall(`${path}.${spec}`, () => builtin(options, `${path}.${spec}`, load));
    const exported = await importModule(spec, baseDir, path);
    const plugin = typeof exported === 'function' ? await factoryCall(path, () => (exported as (o: unknown) => RouterPlugin)(options ?? {})) : exported;
    return validatePlugin(plugin, path);
  };
  return load;
}

/** The `plugins:` entries, flattened: nested lists and falsy entries let presets compose (`[isProd && archive(), ...]`). */
export function pluginEntries(config: Config): unknown[] {
  return (config.plugins ?? []).flat(Infinity as 1).filter((entry) => entry !== false && entry !== null && entry !== undefined);
}

/**
 * The plugins a configuration describes, in order. A `relay.destination_primary` adds the
 * `duplicate` strategy last, so the seed's configuration keeps meaning what it always meant.
 */
export async function loadPlugins(config: Config, baseDir: string): Promise<RouterPlugin[]> {
  const load = loader(baseDir);
  const plugins: RouterPlugin[] = [];
  for (const [index, entry] of pluginEntries(config).entries()) plugins.push(await load(entry, `plugins[${index}]`));
  if (config.relay.destination_primary !== undefined) {
    plugins.push(duplicate({ primary: config.relay.destination_primary, backups: config.relay.destination_backups }));
  }
  return plugins;
}
