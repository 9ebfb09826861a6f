/**
 * Who may relay, and to where. Fails closed: only `smtp.allowed_networks` (loopback by default)
 * and authenticated clients may relay; with `smtp.allowed_recipient_domains`, only to those.
 */
import { BlockList, isIP } from 'node:net';

export class AccessPolicy {
  readonly #networks = new BlockList();
  readonly #domains: readonly string[] | undefined;
  /** Network verdicts by client address: BlockList.check allocates on every call. */
  readonly #seen = new Map<string, boolean>();

  constructor(options: { allowedNetworks: readonly string[]; allowedRecipientDomains?: readonly string[] }) {
    for (const cidr of options.allowedNetworks) {
      const [address, prefix] = cidr.trim().split('/') as [string, string | undefined];
      const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
      this.#networks.addSubnet(address, prefix === undefined ? (type === 'ipv6' ? 128 : 32) : Number(prefix), type);
    }
    this.#domains = options.allowedRecipientDomains?.map((d) => d.toLowerCase().replace(/^\./, ''));
  }

  /** Whether this client may relay: from an allowed network, or authenticated. */
  mayRelay(remoteAddress: string, user: string | undefined): boolean {
    if (user) return true;
    let allowed = this.#seen.get(remoteAddress);
    if (allowed === undefined) {
      const family = isIP(remoteAddress);
      allowed = family !== 0 && this.#networks.check(remoteAddress, family === 6 ? 'ipv6' : 'ipv4');
      if (this.#seen.size >= 10_000) this.#seen.clear();
      this.#seen.set(remoteAddress, allowed);
    }
    return allowed;
  }

  /** Whether mail for this recipient is accepted at all. */
  acceptsRecipient(address: string): boolean {
    if (!this.#domains) return true;
    const domain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    return address.includes('@') && this.#domains.some((d) => domain === d || domain.endsWith(`.${d}`));
  }
}
