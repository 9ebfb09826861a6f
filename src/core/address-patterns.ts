/**
 * Address patterns, compiled once at start-up: for `route` rules and `auth.users[].allowed_senders`.
 * Written as text in YAML:
 *
 *   "alice@example.com"   exact address (case-insensitive)
 *   "@example.com"        the domain and all its subdomains (also plain "example.com")
 *   "*@*.example.org"     glob: `*` any run of characters, `?` one character
 *   "/^bob\+.*@/i"        regular expression, with flags
 *   "<>"                  the null sender
 * or as a RegExp in a TypeScript config.
 */
export type MatcherInput = string | RegExp;
export type Matcher = (address: string) => boolean;

const REGEXP_TEXT = /^\/(.+)\/([a-z]*)$/s;

export function compileMatcher(input: MatcherInput): Matcher {
  if (input instanceof RegExp) return (address) => input.test(address);
  const text = input.trim();
  if (text === '<>' || text === '') return (address) => address === '';
  const regexp = REGEXP_TEXT.exec(text);
  if (regexp) {
    let compiled: RegExp;
    try {
      compiled = new RegExp(regexp[1]!, regexp[2]);
    } catch (err) {
      throw new Error(`invalid regular expression ${text}: ${(err as Error).message}`);
    }
    return (address) => compiled.test(address);
  }
  if (/[*?]/.test(text)) {
    const pattern = text
      .toLowerCase()
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*/g, '.*')
      .replace(/\?/g, '.');
    const compiled = new RegExp(`^${pattern}$`);
    return (address) => compiled.test(address.toLowerCase());
  }
  const at = text.lastIndexOf('@');
  if (at > 0) {
    const exact = text.toLowerCase();
    return (address) => address.toLowerCase() === exact;
  }
  const domain = text.slice(at + 1).toLowerCase().replace(/^\./, '');
  if (!/^[a-z0-9._-]+$/.test(domain)) throw new Error(`expected an address, @domain, glob or /regexp/, got "${text}"`);
  return (address) => {
    const addressDomain = address.slice(address.lastIndexOf('@') + 1).toLowerCase();
    return address.includes('@') && (addressDomain === domain || addressDomain.endsWith(`.${domain}`));
  };
}

/** Any of several matchers; a single one is a list of one. */
export function compileMatchers(input: MatcherInput | readonly MatcherInput[]): Matcher {
  const matchers = (Array.isArray(input) ? input : [input]).map(compileMatcher);
  if (matchers.length === 0) throw new Error('expected at least one address pattern');
  return (address) => matchers.some((match) => match(address));
}
