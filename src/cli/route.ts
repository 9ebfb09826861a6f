/**
 * `gosmtp-dup route --from A --to B [--to C]`: where mail would go, per recipient, and which rule
 * or plugin decided, through the same plugin driver as live traffic. Nothing is sent (like
 * Postfix's `postmap -q` or `sendmail -bv`).
 */
import { configDir, loadConfig } from '../core/config/load.ts';
import { deliveryStack } from '../core/delivery-stack.ts';
import { silentLogger } from '../core/logger.ts';
import { formatReply, Replies } from '../core/replies.ts';
import { createDriver } from '../core/router.ts';
import { explainRoute } from '../plugins/explain.ts';

export async function routeCommand(options: { configFile?: string; from?: string; to?: string[]; json: boolean }): Promise<number> {
  if (options.from === undefined || !options.to?.length) {
    process.stderr.write('gosmtp-dup: usage: gosmtp-dup route --from SENDER --to RECIPIENT [--to RECIPIENT ...] [--config FILE]\n');
    return 64;
  }
  const sender = options.from.replace(/^<(.*)>$/, '$1');
  const { config, source } = await loadConfig({ file: options.configFile });
  const stack = deliveryStack(config, silentLogger());
  const driver = await createDriver(config, stack, silentLogger(), { baseDir: configDir(source), source });
  try {
    const routes = await explainRoute(driver, { from: sender, to: options.to.map((to) => to.replace(/^<(.*)>$/, '$1')) });
    if (options.json) {
      process.stdout.write(`${JSON.stringify(routes, null, 2)}\n`);
      return 0;
    }
    process.stdout.write(`from <${sender}> (config: ${source})\n`);
    for (const { recipient, route, separateTransaction } of routes) {
      let what: string;
      if (route.kind === 'deliver') {
        const sync = route.to.length === 1 ? `deliver to ${route.to[0]!.label} (synchronous)` : `deliver to ${route.to.map((d) => d.label).join(', then ')} (synchronous, failover in this order)`;
        const copies = route.copies.length ? `; copies to ${route.copies.map((d) => d.label).join(', ')} (asynchronous, spooled)` : '';
        what = sync + copies;
      } else what = `refuse: ${formatReply(route.reply)}`;
      process.stdout.write(`  <${recipient}>  ${what}\n      decided by ${route.decidedBy}\n`);
      if (separateTransaction) process.stdout.write(`      routes elsewhere than the first recipient: answered ${formatReply(Replies.separateTransaction())}, delivered in its own transaction\n`);
    }
    return 0;
  } finally {
    await driver.close();
    stack.pool.close();
  }
}
