import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { stringify } from 'yaml';
import { ConfigError, configDir, loadConfig, SECRET_KEYS } from '../core/config/load.ts';
import type { Config } from '../core/config/schema.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { readTlsFiles } from '../core/inbound/tls-files.ts';
import { silentLogger } from '../core/logger.ts';
import { createDriver } from '../core/router.ts';
import { pluginEntries } from '../plugins/loader.ts';

/** Secrets never leave the process: passwords and hashes print as asterisks. */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key, SECRET_KEYS.has(key) ? '********' : redactSecrets(v)]));
}

/**
 * The listener's certificate and key, read by the router's own reader (readTlsFiles), so that
 * `check` and `reload` refuse what `start` would. Problems are blamed on the config file.
 */
export async function checkTlsFiles(config: Config, source: string): Promise<void> {
  const files = config.smtp.tls;
  if (!files) return;
  try {
    await readTlsFiles(files);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    throw new ConfigError(err.problems.flatMap((problem) => (problem.startsWith('smtp.tls:') ? pemProblems(files, problem) : [problem])), source);
  }
}

/** readTlsFiles says only that the two files do not work together; name the one that is not PEM. */
function pemProblems(files: { cert: string; key: string }, fallback: string): string[] {
  const problems: string[] = [];
  try {
    new X509Certificate(readFileSync(files.cert));
  } catch (err) {
    problems.push(`smtp.tls.cert: ${files.cert} is not a PEM certificate: ${(err as Error).message}`);
  }
  try {
    createPrivateKey(readFileSync(files.key));
  } catch (err) {
    problems.push(`smtp.tls.key: ${files.key} is not a PEM private key: ${(err as Error).message}`);
  }
  return problems.length ? problems : [fallback];
}

/** Everything `start` refuses, without starting anything: TLS files, then plugins (loaded and set up). Returns the plugins' names. */
export async function verifyConfig(config: Config, source: string): Promise<string[]> {
  await checkTlsFiles(config, source);
  const stack = deliveryStack(config, silentLogger());
  try {
    const driver = await createDriver(config, stack, silentLogger(), { baseDir: configDir(source), source });
    await driver.close();
    return driver.plugins.map((p) => p.name);
  } finally {
    stack.pool.close();
  }
}

/** Validates the configuration, TLS files and plugins included, and prints it resolved. */
export async function checkCommand(options: { configFile?: string }): Promise<number> {
  const { config, source } = await loadConfig({ file: options.configFile });
  const plugins = (await verifyConfig(config, source)).join(', ');
  // Plugin objects from a TypeScript config do not print as YAML; their names do.
  const printable = {
    ...config,
    plugins: pluginEntries(config).map((entry) => (typeof entry === 'object' && entry !== null && 'name' in entry ? `<plugin ${String((entry as { name: unknown }).name)}>` : entry)),
  };
  process.stdout.write(`# configuration OK (from ${source}); plugins: ${plugins}\n${stringify(redactSecrets(printable))}`);
  return 0;
}
