// https://xmpp.org/rfcs/rfc6120.html#streams-attr-to (RFC 6120 section 4.7.2) and
// https://xmpp.org/rfcs/rfc6120.html#streams-error-conditions-host-unknown (section 4.9.3.6):
// which stream `to` domains this listener serves. By default the DNS names of the TLS engine's
// certificates (SessionContext.serverNames), so `--cert` alone is enough; a `*.example.com`
// wildcard serves exactly one more label, as in certificate matching (RFC 6125 section 6.4.3).
import { domainToASCII } from 'node:url';

/** Lowercase A-label form of a domain, or null if it is not a valid domain name. */
export function normalizeDomain(raw: string): string | null {
  // RFC 7622 section 3.2: a trailing dot is stripped; an IP literal is allowed.
  const s = raw.endsWith('.') ? raw.slice(0, -1) : raw;
  if (s === '' || s.length > 1023 || /[\s@/]/.test(s)) return null;
  if (/^\[[0-9A-Fa-f:.]+\]$/.test(s)) return s.toLowerCase();
  const ascii = domainToASCII(s);
  if (ascii === '' || ascii.length > 253) return null;
  if (!ascii.split('.').every((l) => /^(?!-)[a-z0-9-]{1,63}(?<!-)$/.test(l))) return null;
  return ascii;
}

export class DomainSet {
  private readonly exact = new Set<string>();
  private readonly wildcards = new Set<string>();

  constructor(names: readonly string[]) {
    for (const raw of names) {
      const name = raw.trim().toLowerCase();
      if (name.startsWith('*.')) {
        const base = normalizeDomain(name.slice(2));
        if (base) this.wildcards.add(base);
      } else {
        const d = normalizeDomain(name);
        if (d) this.exact.add(d);
      }
    }
  }

  /** Whether no domain is known at all (then every valid domain is served). */
  get empty(): boolean {
    return this.exact.size === 0 && this.wildcards.size === 0;
  }

  /** A concrete name for our stream header `from` when the client's `to` cannot be used. */
  get first(): string | undefined {
    const [d] = this.exact;
    return d;
  }

  /** `domain` must already be normalized. */
  serves(domain: string): boolean {
    if (this.empty) return true;
    if (this.exact.has(domain)) return true;
    const dot = domain.indexOf('.');
    return dot > 0 && this.wildcards.has(domain.slice(dot + 1));
  }
}
