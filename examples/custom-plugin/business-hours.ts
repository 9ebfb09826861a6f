/**
 * A routing plugin in one file: during business hours mail for the help desk goes to the
 * staffed server, outside them to the on-call server, with a copy to the ticket archive.
 * It keeps state across messages (a count per destination, logged at shutdown), sets itself up
 * once, and defers (returns undefined) for recipients it does not handle.
 */
import { definePlugin, deliver, type DestinationInput } from 'gosmtp-dup';

export interface BusinessHoursOptions {
  /** Recipients this plugin handles, e.g. "helpdesk@example.com". */
  recipient: string;
  staffed: DestinationInput;
  onCall: DestinationInput;
  archive: DestinationInput;
  /** Opening hours in UTC, [from, to). */
  hours?: [number, number];
  /** For tests: what time it is. */
  now?: () => Date;
}

export default function businessHours(options: BusinessHoursOptions) {
  const [open, close] = options.hours ?? [8, 18];
  const now = options.now ?? (() => new Date());
  const counts = { staffed: 0, onCall: 0 };
  let log: { info(obj: object, msg: string): void } | undefined;

  return definePlugin({
    name: 'business-hours',
    setup(ctx) {
      log = ctx.log;
      // Resolving at setup turns a misspelt destination into a start-up error.
      for (const ref of [options.staffed, options.onCall, options.archive]) ctx.destination(ref);
      log.info({ open, close }, 'business hours routing ready');
    },
    rcpt(ctx) {
      if (ctx.recipient.toLowerCase() !== options.recipient.toLowerCase()) return undefined; // not ours: next plugin
      const hour = now().getUTCHours();
      const staffed = hour >= open && hour < close;
      counts[staffed ? 'staffed' : 'onCall']++;
      return deliver({
        to: staffed ? options.staffed : options.onCall,
        copies: [options.archive],
        decidedBy: `business-hours (${staffed ? 'staffed' : 'on call'})`,
      });
    },
    close() {
      log?.info(counts, 'business hours routing: messages routed');
    },
  });
}
