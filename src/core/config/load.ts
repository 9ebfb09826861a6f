/**
 * Where configuration comes from, in order:
 *   1. `--config FILE` (YAML, JSON, TypeScript or JavaScript);
 *   2. cosmiconfig's search for `gosmtp-dup` in the current folder (`gosmtp-dup.config.ts`, ...);
 *   3. `config.yaml` / `config.yml` in the current folder, then in `/etc/smtp-dup/` (as GoSMTP-dup);
 *   4. nothing: environment variables alone must then be a complete configuration.
 * Environment variables `SMTP_DUP_<SECTION>_<KEY>` override whatever the file says.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, resolve } from 'node:path';
import { cosmiconfig, defaultLoaders, type Loader } from 'cosmiconfig';
import { z } from 'zod';
import { importDefault } from '../import-module.ts';
import { configKeys, configSchema, type Config } from './schema.ts';

export class ConfigError extends Error {
  constructor(
    readonly problems: string[],
    readonly source: string,
  ) {
    super(`invalid configuration (${source}):\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  /** The file it came from, or `environment`. */
  source: string;
}

/** Loads TypeScript and ESM configs through tsx, so no build step is needed. */
const importLoader: Loader = async (filepath) => {
  const value = await importDefault(filepath);
  return typeof value === 'function' ? await (value as () => unknown)() : value;
};

const MODULE_NAME = 'gosmtp-dup';

function explorer() {
  return cosmiconfig(MODULE_NAME, {
    searchStrategy: 'none',
    searchPlaces: [
      'package.json',
      `.${MODULE_NAME}rc`,
      `.${MODULE_NAME}rc.json`,
      `.${MODULE_NAME}rc.yaml`,
      `.${MODULE_NAME}rc.yml`,
      `${MODULE_NAME}.config.ts`,
      `${MODULE_NAME}.config.mts`,
      `${MODULE_NAME}.config.js`,
      `${MODULE_NAME}.config.mjs`,
      `${MODULE_NAME}.config.yaml`,
      `${MODULE_NAME}.config.yml`,
      `${MODULE_NAME}.config.json`,
    ],
    loaders: {
      ...defaultLoaders,
      '.ts': importLoader,
      '.mts': importLoader,
      '.js': importLoader,
      '.mjs': importLoader,
      noExt: defaultLoaders['.yaml'],
    },
  });
}

const LEGACY_PLACES = ['config.yaml', 'config.yml', '/etc/smtp-dup/config.yaml', '/etc/smtp-dup/config.yml'];
const KNOWN_EXTENSIONS = new Set(['.yaml', '.yml', '.json', '.ts', '.mts', '.js', '.mjs']);

async function readConfigFile(file: string | undefined, cwd: string): Promise<{ raw: unknown; source: string }> {
  const search = explorer();
  if (file !== undefined) {
    const path = resolve(cwd, file);
    if (!existsSync(path)) throw new ConfigError([`--config: file not found: ${path}`], path);
    const ext = extname(path).toLowerCase();
    if (!KNOWN_EXTENSIONS.has(ext)) throw new ConfigError([`--config: unsupported file type "${ext}" (use .yaml, .yml, .json, .ts or .js)`], path);
    return { raw: (await loadWith(search, path))?.config ?? {}, source: path };
  }
  const found = await search.search(cwd);
  if (found && !found.isEmpty) return { raw: found.config, source: found.filepath };
  for (const place of LEGACY_PLACES) {
    const path = resolve(cwd, place);
    if (existsSync(path)) return { raw: (await loadWith(search, path))?.config ?? {}, source: path };
  }
  return { raw: {}, source: 'environment' };
}

async function loadWith(search: ReturnType<typeof explorer>, path: string) {
  try {
    return await search.load(path);
  } catch (err) {
    throw new ConfigError([`cannot read ${path}: ${syntaxProblem(err as Error, path)}`], path);
  }
}

/**
 * A file that does not load, as what is wrong and where: `bad indentation of a mapping entry at
 * line 3, column 4`. The parsers' messages start with a header line ("YAML Error in FILE:")
 * that says neither, and carry code frames and stacks that do not fit on one line.
 */
function syntaxProblem(err: Error, path: string): string {
  const yaml = err as Error & { reason?: string; mark?: { line: number; column: number } };
  if (yaml.name === 'YAMLException' && yaml.reason !== undefined && yaml.mark) return `${yaml.reason}${at(yaml.mark.line + 1, yaml.mark.column + 1)}`;
  if (err.name === 'JSONError') return jsonProblem(path);
  // esbuild (TypeScript, JavaScript): "Transform failed with 1 error:\nFILE:LINE:COLUMN: ERROR: what".
  const esbuild = /^.*:(\d+):(\d+): ERROR: (.*)$/m.exec(err.message);
  if (esbuild) return `${esbuild[3]}${at(Number(esbuild[1]), Number(esbuild[2]) + 1)}`;
  return err.message.split('\n').filter(Boolean).join(' ');
}

function at(line: number, column: number): string {
  return ` at line ${line}, column ${column}`;
}

/**
 * The JSON parser's message without the file's text quoted in it, and where, when V8 says
 * ("at position N"; for an unexpected character it does not).
 */
function jsonProblem(path: string): string {
  const text = readFileSync(path, 'utf8').replace(/^\uFEFF/, '');
  let message = 'not valid JSON';
  try {
    JSON.parse(text);
  } catch (err) {
    message = (err as Error).message;
  }
  const position = / at position (\d+)/.exec(message);
  const reason = message.replace(/, .*is not valid JSON$/s, '').replace(/ (?:in JSON )?at position \d+.*$/s, '');
  if (!position) return reason;
  const before = text.slice(0, Number(position[1])).split('\n');
  return `${reason}${at(before.length, before.at(-1)!.length + 1)}`;
}

/** The variable that overrides a key: `relay.timeout_seconds` → `SMTP_DUP_RELAY_TIMEOUT_SECONDS`. */
function envName(section: string, key: string): string {
  return `SMTP_DUP_${section}_${key}`.toUpperCase();
}

/**
 * `SMTP_DUP_RELAY_TIMEOUT_SECONDS=5` → `{ relay: { timeout_seconds: "5" } }` merged over `raw`.
 * `used` collects `relay.timeout_seconds` → the variable, so that a bad value blames the variable, not the file.
 */
export function applyEnvironment(raw: unknown, env: NodeJS.ProcessEnv, used = new Map<string, string>()): unknown {
  if (!isPlainObject(raw)) return raw;
  // Copies only what it changes: a TypeScript config may hold plugin objects that cannot be cloned.
  const base: Record<string, unknown> = { ...raw };
  for (const { section, key } of configKeys) {
    const name = envName(section, key);
    const value = env[name];
    if (value === undefined) continue;
    base[section] = { ...(isPlainObject(base[section]) ? base[section] : {}), [key]: value };
    used.set(`${section}.${key}`, name);
  }
  return base;
}

/**
 * `SMTP_DUP_` variables a typo away from a key's: a misspelt override would otherwise be silently
 * ignored. Others are left alone: a deployment may keep its own (a secret that the file names as
 * `${SMTP_DUP_UPSTREAM_PASS}`, one a TypeScript config reads).
 */
export function unknownEnvironment(env: NodeJS.ProcessEnv): string[] {
  const known = configKeys.map(({ section, key }) => envName(section, key));
  return Object.keys(env)
    .filter((name) => name.startsWith('SMTP_DUP_') && !known.includes(name))
    .sort()
    .flatMap((name) => {
      const suggestion = didYouMean(name, known);
      return suggestion ? [`${name}: unknown environment variable${suggestion}`] : [];
    });
}

/** ` (did you mean "x"?)` for the closest candidate a typo away (a few edits), else nothing. */
export function didYouMean(word: string, candidates: readonly string[]): string {
  let best: string | undefined;
  let bestDistance = Math.min(3, Math.max(1, Math.floor(word.length / 4))) + 1;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) [best, bestDistance] = [candidate, distance];
  }
  return best === undefined ? '' : ` (did you mean "${best}"?)`;
}

/** Levenshtein distance, with a swap of two neighbours counting as one edit (`primray`). */
function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The keys `schema` allows at `path` (an object inside it), for "did you mean". */
function keysAt(schema: z.ZodType, path: readonly PropertyKey[]): string[] {
  let node: z.ZodType | undefined = schema;
  for (const part of [...path, undefined]) {
    // Down through optional/default/preprocess wrappers, records, lists and unions to the object.
    for (let guard = 0; node && !(node instanceof z.ZodObject) && guard < 10; guard++) {
      if (node instanceof z.ZodRecord) node = node.valueType as z.ZodType;
      else if (node instanceof z.ZodArray) node = node.element as z.ZodType;
      else if (node instanceof z.ZodUnion) node = (node.options as z.ZodType[]).find((option) => option instanceof z.ZodObject);
      else if (node instanceof z.ZodPipe) node = node.out as z.ZodType;
      else if ('unwrap' in node) node = (node as unknown as { unwrap(): z.ZodType }).unwrap();
      else node = undefined;
    }
    if (!(node instanceof z.ZodObject)) return [];
    if (part === undefined) return Object.keys(node.shape);
    // Otherwise the part is a record's name or a list's index, already stepped over by the loop above.
    if (typeof part === 'string' && part in node.shape) node = node.shape[part] as z.ZodType;
  }
  return [];
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Keys whose values are never printed: in errors, `check`, or logs. */
export const SECRET_KEYS = new Set(['pass', 'password', 'password_hash']);

/**
 * One line per problem, naming the key path: `relay.timeout_seconds: expected a positive number, got "soon"`,
 * and the variable when the value came from one (`fromEnv`, filled by applyEnvironment). Unknown keys
 * get a "did you mean" from `schema`, the one that was validated (plugin options have their own).
 */
export function describeIssues(error: z.ZodError, context: { schema?: z.ZodType; fromEnv?: ReadonlyMap<string, string> } = {}): string[] {
  const { schema, fromEnv = new Map<string, string>() } = context;
  return error.issues.map((issue) => {
    const variable = fromEnv.get(issue.path.slice(0, 2).map(String).join('.'));
    const path = (issue.path.map(String).join('.') || '(top level)') + (variable ? ` (from ${variable})` : '');
    if (issue.code === 'unrecognized_keys') {
      const prefix = issue.path.length ? `${issue.path.map(String).join('.')}.` : '';
      const known = schema ? keysAt(schema, issue.path) : [];
      return issue.keys.map((key) => `${prefix}${key}: unknown key "${key}"${didYouMean(key, known)}`).join('\n');
    }
    const input = (issue as { input?: unknown }).input;
    // The value is shown to help, unless it could be a secret or holds one.
    const secret = issue.path.some((part) => SECRET_KEYS.has(String(part))) || (typeof input === 'object' && input !== null);
    if (secret && input !== undefined) return `${path}: ${issue.message}`;
    if (input === undefined) {
      const env = issue.path.length === 2 ? ` (or ${`SMTP_DUP_${issue.path.join('_')}`.toUpperCase()})` : '';
      return `${path}: required${env}`;
    }
    return `${path}: ${issue.message}, got ${JSON.stringify(input)}`;
  });
}

/**
 * `${NAME}` in any string of the configuration is replaced by the environment variable NAME, so
 * that secrets need not sit in files; an unset variable is a problem naming the key.
 */
export function expandEnvironment(raw: unknown, env: NodeJS.ProcessEnv, problems: string[], path: string[] = []): unknown {
  if (typeof raw === 'string') {
    return raw.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_match, name: string) => {
      const value = env[name];
      if (value === undefined) problems.push(`${path.join('.')}: environment variable ${name} is not set`);
      return value ?? '';
    });
  }
  if (Array.isArray(raw)) return raw.map((item, index) => expandEnvironment(item, env, problems, [...path, String(index)]));
  // Plain data only: plugin objects (with hooks, or class instances) from a TypeScript config are left as they are.
  const proto = typeof raw === 'object' && raw !== null ? Object.getPrototypeOf(raw) : undefined;
  if (isPlainObject(raw) && (proto === Object.prototype || proto === null) && !Object.values(raw).some((v) => typeof v === 'function')) {
    return Object.fromEntries(Object.entries(raw).map(([key, value]) => [key, expandEnvironment(value, env, problems, [...path, key])]));
  }
  return raw;
}

export function validateConfig(raw: unknown, source: string, fromEnv?: ReadonlyMap<string, string>): Config {
  const result = configSchema.safeParse(raw, { reportInput: true });
  if (!result.success) throw new ConfigError(describeIssues(result.error, { schema: configSchema, fromEnv }).flatMap((line) => line.split('\n')), source);
  return result.data;
}

/** Plugin paths in a config are relative to the config file's folder. */
export function configDir(source: string): string {
  return source === 'environment' || source === 'test' || source === 'demo' ? process.cwd() : dirname(source);
}

export async function loadConfig(options: { file?: string; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<LoadedConfig> {
  const cwd = options.cwd ?? process.cwd();
  const { raw, source } = await readConfigFile(options.file, cwd);
  const env = options.env ?? process.env;
  const problems = unknownEnvironment(env);
  const fromEnv = new Map<string, string>();
  const expanded = expandEnvironment(applyEnvironment(raw ?? {}, env, fromEnv), env, problems);
  if (problems.length) throw new ConfigError(problems, source);
  const config = validateConfig(expanded, source, fromEnv);
  return { config, source };
}
