import { stringify } from 'yaml';
import { configDir, loadConfig, SECRET_KEYS } from '../core/config/load.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { silentLogger } from '../core/logger.ts';
import { createDriver } from '../core/router.ts';
import { pluginEntries } from '../plugins/loader.ts';

/** Secrets never leave the process: passwords and hashes print as asterisks. */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (typeof value !== 'object' || value === null) return value;
  return Object.fromEntries(Object.entries(value).map(([key, v]) => [key, SECRET_KEYS.has(key) ? '********' : redactSecrets(v)]));
}

/** Validates the configuration, plugins included (loaded and set up), and prints it resolved. */
export async function checkCommand(options: { configFile?: string }): Promise<number> {
  const { config, source } = await loadConfig({ file: options.configFile });
  const stack = deliveryStack(config, silentLogger());
  try {
    const driver = await createDriver(config, stack, silentLogger(), { baseDir: configDir(source), source });
    await driver.close();
    const plugins = driver.plugins.map((p) => p.name).join(', ');
    // Plugin objects from a TypeScript config do not print as YAML; their names do.
    const printable = {
      ...config,
      plugins: pluginEntries(config).map((entry) => (typeof entry === 'object' && entry !== null && 'name' in entry ? `<plugin ${String((entry as { name: unknown }).name)}>` : entry)),
    };
    process.stdout.write(`# configuration OK (from ${source}); plugins: ${plugins}\n${stringify(redactSecrets(printable))}`);
    return 0;
  } finally {
    stack.pool.close();
  }
}
