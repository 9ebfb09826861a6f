import { stringify } from 'yaml';
import { loadConfig } from '../core/config/load.ts';

/** Validates the configuration and prints it resolved, with every default filled in. */
export async function checkCommand(options: { configFile?: string }): Promise<number> {
  const { config, source } = await loadConfig({ file: options.configFile });
  process.stdout.write(`# configuration OK (from ${source})\n${stringify(config)}`);
  return 0;
}
