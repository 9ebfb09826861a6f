/**
 * Imports a user's TypeScript or JavaScript module (a config file, a plugin) through tsx, so that
 * no build step is needed, and returns its default export.
 */
import { pathToFileURL } from 'node:url';

/**
 * The default export, or `undefined` when there is none. A `.ts` file outside an ESM package is
 * compiled to CommonJS: its namespace's `default` is then `module.exports`, holding the real
 * default under `default`, or only the named exports when the module has no default.
 */
export async function importDefault(fileOrUrl: string): Promise<unknown> {
  const { tsImport } = await import('tsx/esm/api');
  const url = fileOrUrl.startsWith('file:') ? fileOrUrl : pathToFileURL(fileOrUrl).href;
  const mod = (await tsImport(url, import.meta.url)) as Record<string, unknown>;
  const value = mod.default;
  if (typeof value !== 'object' || value === null) return value;
  if ('default' in value) return (value as { default: unknown }).default;
  const named = Object.keys(mod).filter((key) => key !== 'default');
  const looksLikeExports = named.length > 0 && named.every((key) => key in value);
  return looksLikeExports ? undefined : value;
}
