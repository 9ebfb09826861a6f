/**
 * The example configuration and the packaging files say what they claim.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { parse } from 'yaml';
import { validateConfig } from '../src/core/config/load.ts';

const root = new URL('../', import.meta.url);
const read = (path: string) => readFile(new URL(path, root), 'utf8');

describe('packaging', () => {
  test('config.example.yaml and its commented minimal and high-availability variants are valid', async () => {
    const text = await read('config.example.yaml');
    const active = validateConfig(parse(text), 'config.example.yaml');
    assert.deepEqual(active.relay.destination_backups, ['newmail.example.com:25', 'archive.example.com:25']);
    const variants = text.split(/^# --- /m).slice(1);
    assert.equal(variants.length, 2);
    for (const variant of variants) {
      const yaml = variant
        .split('\n')
        .slice(1)
        .filter((line) => line.startsWith('# '))
        .map((line) => line.slice(2))
        .join('\n');
      assert.ok(validateConfig(parse(yaml), 'variant').relay.destination_primary);
    }
  });

  test('the image runs as a non-root user with a /healthz healthcheck and the sources it needs', async () => {
    const dockerfile = await read('Dockerfile');
    assert.match(dockerfile, /^USER gosmtp$/m);
    assert.match(dockerfile, /HEALTHCHECK[\s\S]*\/healthz/);
    assert.match(dockerfile, /SMTP_DUP_METRICS_LISTEN=127\.0\.0\.1:9090/);
    for (const dir of ['bin', 'src', 'plugins']) assert.match(dockerfile, new RegExp(`^COPY ${dir} \\./${dir}$`, 'm'));
    const pkg = JSON.parse(await read('package.json'));
    assert.equal(pkg.dependencies.tsx !== undefined, true, 'tsx is a runtime dependency (npm ci --omit=dev keeps it)');
  });

  test('the systemd unit drains on SIGTERM, reloads on SIGHUP and is hardened', async () => {
    const unit = await read('packaging/gosmtp-dup.service');
    for (const line of ['ExecReload=/bin/kill -HUP $MAINPID', 'KillSignal=SIGTERM', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'StateDirectory=gosmtp-dup', 'User=gosmtp-dup']) {
      assert.ok(unit.includes(line), line);
    }
  });

  test('the unit and the image take the spool from the config file, where admin commands find it too', async () => {
    const spool = validateConfig(parse(await read('config.example.yaml')), 'config.example.yaml').queue.dir;
    const unit = await read('packaging/gosmtp-dup.service');
    // An Environment= override would send `gosmtp-dup queue list`, run without it, to another spool.
    assert.doesNotMatch(unit, /^Environment=.*SMTP_DUP_/m);
    assert.match(unit, new RegExp(`^ReadWritePaths=-?${spool}$`, 'm'), 'the unit may write the example config\'s spool');
    const dockerfile = await read('Dockerfile');
    assert.doesNotMatch(dockerfile.replace(/^#.*$/gm, ''), /SMTP_DUP_QUEUE_DIR=/);
    assert.match(dockerfile, new RegExp(`^VOLUME \\["${spool}"\\]$`, 'm'));
  });

  test('systemd accepts the unit (systemd-analyze verify)', async (t) => {
    const { execFile } = await import('node:child_process');
    const result = await new Promise<{ code: number | null; output: string } | undefined>((resolve) =>
      execFile('systemd-analyze', ['verify', new URL('packaging/gosmtp-dup.service', root).pathname], (err, stdout, stderr) =>
        resolve((err as NodeJS.ErrnoException | null)?.code === 'ENOENT' ? undefined : { code: err ? 1 : 0, output: stdout + stderr }),
      ),
    );
    if (!result) return t.skip('systemd-analyze is not installed');
    assert.equal(result.code, 0, result.output);
    assert.equal(result.output.trim(), '');
  });
});
