/**
 * Prometheus metrics. One registry per router (not prom-client's global one), so several routers
 * in one process (tests, embedders) do not mix their numbers. Names follow Prometheus practice:
 * `_total` counters, `_seconds` histograms, gauges read at scrape time.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { CircuitState } from '../health.ts';
import type { DeliveryEvent, DeliveryEvents } from './events.ts';
import { replyClass, type SmtpReply } from '../replies.ts';

/** What the gauges read when Prometheus scrapes. */
export interface MetricSources {
  pendingCopies(): Array<{ destination: string; createdAt: number }>;
  deadLetters(): Promise<Array<{ destination: string }>>;
  circuits(): Array<{ destination: string; state: CircuitState }>;
  openConnections(): number;
}

const CIRCUIT_VALUE: Record<CircuitState, number> = { closed: 0, 'half-open': 1, open: 2 };
const VERDICT: Record<ReturnType<typeof replyClass>, string> = { success: 'accepted', tempfail: 'deferred', reject: 'rejected' };

export class Metrics implements DeliveryEvents {
  readonly registry = new Registry();
  readonly #transactions: Counter<'verdict'>;
  readonly #transactionSeconds: Histogram<'verdict'>;
  readonly #deliveries: Counter<'destination' | 'kind' | 'outcome'>;
  readonly #deliverySeconds: Histogram<'kind'>;
  #sources: MetricSources | undefined;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'gosmtp_dup_process_' });
    this.#transactions = new Counter({ name: 'gosmtp_dup_transactions_total', help: 'Inbound transactions by the verdict the client heard', labelNames: ['verdict'], registers });
    this.#transactionSeconds = new Histogram({
      name: 'gosmtp_dup_transaction_duration_seconds',
      help: 'From MAIL FROM to the final reply, by verdict',
      labelNames: ['verdict'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.#deliveries = new Counter({
      name: 'gosmtp_dup_deliveries_total',
      help: 'Deliveries per destination: kind sync (the primary verdict) or copy (spooled), outcome delivered, deferred or failed',
      labelNames: ['destination', 'kind', 'outcome'],
      registers,
    });
    this.#deliverySeconds = new Histogram({
      name: 'gosmtp_dup_delivery_duration_seconds',
      help: 'Time of one copy attempt, or of the upstream part of a synchronous delivery',
      labelNames: ['kind'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    const sources = () => this.#sources;
    new Gauge({
      name: 'gosmtp_dup_spool_pending_copies',
      help: 'Copies waiting in the spool, per destination',
      labelNames: ['destination'],
      registers,
      collect() {
        this.reset();
        for (const copy of sources()?.pendingCopies() ?? []) this.inc({ destination: copy.destination });
      },
    });
    new Gauge({
      name: 'gosmtp_dup_spool_oldest_age_seconds',
      help: 'Age of the oldest pending copy (0 when the spool is empty)',
      registers,
      collect() {
        let oldest = Infinity; // a loop: spreading a long outage's copies into Math.min overflows the stack
        for (const copy of sources()?.pendingCopies() ?? []) if (copy.createdAt < oldest) oldest = copy.createdAt;
        this.set(Number.isFinite(oldest) ? (Date.now() - oldest) / 1000 : 0);
      },
    });
    new Gauge({
      name: 'gosmtp_dup_dead_letters',
      help: 'Copies refused for good (dead letters) per destination: where destinations disagree with the primary',
      labelNames: ['destination'],
      registers,
      async collect() {
        this.reset();
        for (const letter of (await sources()?.deadLetters()) ?? []) this.inc({ destination: letter.destination });
      },
    });
    new Gauge({
      name: 'gosmtp_dup_circuit_state',
      help: 'Destination circuit: 0 closed, 1 half-open, 2 open (only destinations that failed recently)',
      labelNames: ['destination'],
      registers,
      collect() {
        this.reset();
        for (const c of sources()?.circuits() ?? []) this.set({ destination: c.destination }, CIRCUIT_VALUE[c.state]);
      },
    });
    new Gauge({
      name: 'gosmtp_dup_connections',
      help: 'Open inbound SMTP connections',
      registers,
      collect() {
        this.set(sources()?.openConnections() ?? 0);
      },
    });
  }

  attach(sources: MetricSources): void {
    this.#sources = sources;
  }

  transaction(reply: SmtpReply, seconds: number): void {
    const verdict = VERDICT[replyClass(reply)];
    this.#transactions.inc({ verdict });
    this.#transactionSeconds.observe({ verdict }, seconds);
  }

  delivery({ destination, kind, outcome, seconds }: DeliveryEvent): void {
    this.#deliveries.inc({ destination, kind, outcome });
    if (seconds !== undefined) this.#deliverySeconds.observe({ kind }, seconds);
  }
}
