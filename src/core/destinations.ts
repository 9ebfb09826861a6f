/**
 * Named destinations (`destinations:` in the config) and how a reference to one is resolved.
 * A reference is a configured name, a literal `maildir:/path`, or a literal `host:port` with an explicit port, so that a
 * misspelt name is an error instead of a connection to a host of that name on port 25.
 */
import { destinationFromSpec, parseDestination, type Destination, type DestinationSpec } from './destination.ts';

export type DestinationRef = string | Destination;

export class DestinationRegistry {
  readonly #named: ReadonlyMap<string, Destination>;

  constructor(named: Readonly<Record<string, string | DestinationSpec>> = {}) {
    const entries = Object.entries(named).map(([name, spec]) => {
      const parsed = destinationFromSpec(spec, name);
      if (typeof parsed === 'string') throw new Error(`destinations.${name}: ${parsed}`);
      return [name, parsed] as const;
    });
    this.#named = new Map(entries);
  }

  names(): string[] {
    return [...this.#named.keys()];
  }

  /** Resolves a reference, or returns why it cannot be. */
  lookup(ref: DestinationRef): Destination | string {
    if (typeof ref !== 'string') return ref;
    const named = this.#named.get(ref);
    if (named) return named;
    if (!/:\d+$/.test(ref.trim()) && !/^[a-z+]+:/.test(ref.trim())) {
      const known = this.names();
      return `unknown destination "${ref}"${known.length ? ` (configured: ${known.join(', ')})` : ''}; use a name from destinations:, "host:port" or "maildir:/path"`;
    }
    const parsed = parseDestination(ref);
    return typeof parsed === 'string' ? `invalid destination "${ref}": ${parsed}` : parsed;
  }

  /**
   * The destination a spool record names by its label: a configured one (with its TLS, credentials
   * and limits) when a name has that label, else the label parsed as an address.
   */
  byLabel(label: string): Destination | string {
    for (const destination of this.#named.values()) if (destination.label === label) return destination;
    return parseDestination(label);
  }

  /** A spooled copy's destination: by the name it was routed by when it had one, else by label. */
  forCopy(copy: { destination: string; name?: string }): Destination | string {
    const named = copy.name === undefined ? undefined : this.#named.get(copy.name);
    return named ?? this.byLabel(copy.destination);
  }

  resolve(ref: DestinationRef): Destination {
    const found = this.lookup(ref);
    if (typeof found === 'string') throw new Error(found);
    return found;
  }
}
