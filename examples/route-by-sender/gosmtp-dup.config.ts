/**
 * Route by sender domain: each department's mail leaves through its own upstream; everything
 * else through the main relay, with a second relay as failover.
 *
 *   npx gosmtp-dup route --config examples/route-by-sender/gosmtp-dup.config.ts --from a@sales.example.com --to x@customer.example
 */
import { defineConfig, failover, route } from 'gosmtp-dup';

const env = (name: string, fallback: string) => process.env[name] ?? fallback;

export default defineConfig({
  smtp: { listen: env('LISTEN', '127.0.0.1:2525'), domain: 'relay.example.com' },
  destinations: {
    sales: env('SALES_RELAY', 'smtp.sales-provider.example:587'),
    support: env('SUPPORT_RELAY', 'smtp.helpdesk.example:25'),
    main: env('MAIN_RELAY', 'mx1.example.com:25'),
    fallback: env('FALLBACK_RELAY', 'mx2.example.com:25'),
  },
  plugins: [
    route({
      rules: [
        { sender: '@sales.example.com', use: failover({ destinations: ['sales', 'main'] }) },
        { sender: ['@support.example.com', 'helpdesk@example.com'], use: failover({ destinations: ['support'] }) },
      ],
      default: failover({ destinations: ['main', 'fallback'] }),
    }),
  ],
  queue: { dir: env('QUEUE_DIR', './gosmtp-dup-queue') },
});
