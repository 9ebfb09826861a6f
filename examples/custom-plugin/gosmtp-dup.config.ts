/**
 * Uses the plugin in ./business-hours.ts for the help desk address; the seed-style relay: block
 * routes everything else (it is the `duplicate` strategy, added after the plugins).
 */
import { defineConfig } from 'gosmtp-dup';
import businessHours from './business-hours.ts';

const env = (name: string, fallback: string) => process.env[name] ?? fallback;

export default defineConfig({
  destinations: {
    desk: env('DESK', 'desk.example.com:25'),
    oncall: env('ONCALL', 'oncall.example.com:25'),
    tickets: env('TICKETS', 'tickets.example.com:25'),
  },
  plugins: [
    businessHours({
      recipient: 'helpdesk@example.com',
      staffed: 'desk',
      onCall: 'oncall',
      archive: 'tickets',
      now: process.env.FAKE_NOW ? () => new Date(process.env.FAKE_NOW!) : undefined,
    }),
  ],
  relay: { destination_primary: env('MAIN', 'mx1.example.com:25') },
  queue: { dir: env('QUEUE_DIR', './gosmtp-dup-queue') },
});
