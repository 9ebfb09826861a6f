/**
 * SMTP AUTH (PLAIN, LOGIN) against `auth.users`, with failed attempts rate-limited per client
 * address: after `maxFailures` within `windowMs`, every attempt from that address is refused
 * (even a right one) until the window has passed.
 */
import { compileMatchers, type Matcher } from '../address-patterns.ts';
import { DUMMY_HASH, verifyPassword } from './password.ts';

export type AuthResult = 'ok' | 'invalid' | 'rate-limited';

export class Authenticator {
  readonly #users: ReadonlyMap<string, string>;
  readonly #senders: ReadonlyMap<string, Matcher>;
  readonly #maxFailures: number;
  readonly #windowMs: number;
  readonly #failures = new Map<string, number[]>();

  constructor(options: { users: ReadonlyArray<{ user: string; password_hash: string; allowed_senders?: readonly string[] }>; maxFailures: number; windowMs: number }) {
    this.#users = new Map(options.users.map((u) => [u.user, u.password_hash]));
    this.#senders = new Map(options.users.filter((u) => u.allowed_senders).map((u) => [u.user, compileMatchers(u.allowed_senders!)]));
    this.#maxFailures = options.maxFailures;
    this.#windowMs = options.windowMs;
  }

  /** Whether an authenticated user may send as `sender` (per-user allowed senders, as Smtpmux offered). */
  senderAllowed(user: string, sender: string): boolean {
    const match = this.#senders.get(user);
    return match === undefined || match(sender);
  }

  get enabled(): boolean {
    return this.#users.size > 0;
  }

  async check(client: string, user: string, password: string): Promise<AuthResult> {
    const now = Date.now();
    const recent = (this.#failures.get(client) ?? []).filter((at) => now - at < this.#windowMs);
    if (recent.length >= this.#maxFailures) {
      this.#failures.set(client, recent);
      return 'rate-limited';
    }
    // Counted as a failure before the (slow) hash check, so parallel guesses cannot all slip
    // under the limit; taken back only if it succeeds. A success does not wipe the address's
    // other failures: logging in as oneself must not buy guesses at someone else.
    recent.push(now);
    this.#failures.set(client, recent);
    const hash = this.#users.get(user);
    let ok = false;
    try {
      ok = await verifyPassword(password, hash ?? DUMMY_HASH);
    } catch {
      ok = false;
    }
    if (ok && hash !== undefined) {
      const list = this.#failures.get(client);
      const index = list?.lastIndexOf(now) ?? -1;
      if (list && index >= 0) list.splice(index, 1);
      return 'ok';
    }
    // Forget idle clients, so the map cannot grow without bound.
    if (this.#failures.size > 10_000) for (const [key, times] of this.#failures) if (now - times.at(-1)! >= this.#windowMs) this.#failures.delete(key);
    return 'invalid';
  }
}
