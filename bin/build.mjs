// Bundles the router's own TypeScript into dist/gosmtp-dup.mjs when the package is installed
// (`npm ci` runs this as `prepare`), so running the router does not need tsx's loader thread.
// Dependencies stay external. bin/gosmtp-dup.mjs uses the bundle only while it is newer than
// every source file, and runs the sources through tsx otherwise: editing src/ never runs stale code.
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
try {
  const { build } = await import('esbuild');
  mkdirSync(join(root, 'dist'), { recursive: true });
  await build({
    entryPoints: [join(root, 'src/cli/main.ts')],
    outfile: join(root, 'dist/gosmtp-dup.mjs'),
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    logLevel: 'warning',
  });
} catch (err) {
  // Not fatal: the sources run through tsx instead.
  console.warn(`gosmtp-dup: no prebuilt bundle (${err.message}); the sources will run through tsx`);
}
