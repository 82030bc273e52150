// Every list of addresses in the config (a listener's proxyProtocol.trusted and exempt lists) and
// the key the per-address limits count by, in one module (issue 14). Entries are parsed once,
// when the config is loaded, and a bad one is a config error naming the list, the index and the
// entry; matching runs on every accept with whatever address the kernel or a PROXY header gave,
// so it never throws.
//
// What an entry may be (decided here, documented in packages/cli/README.md):
// - an IPv4 address in dotted decimal, four parts, no leading zeros ('010.0.0.1' is octal to
//   inet_aton and decimal to others: refused rather than guessed);
// - an IPv6 address (RFC 4291 §2.2 text forms, with an embedded dotted IPv4 tail);
// - either one followed by /PREFIX: decimal, no sign, no leading zero, no spaces, at most 32 or
//   128; the bits after the prefix must be zero ('10.1.2.3/8' is refused with the range it
//   probably meant — a typo there would silently trust a whole /8);
// - an IPv4-mapped IPv6 form (::ffff:10.0.0.0/104) means the IPv4 range (10.0.0.0/8): clients
//   on a dual-stack socket show up as ::ffff:a.b.c.d and must match IPv4 entries;
// - no zone id ('fe80::1%eth0'): a zone names an interface of this host, not part of the peer's
//   address; client addresses that carry one are matched on their address part;
// - no leading or trailing spaces (YAML already strips unquoted ones: a quoted space is a typo).
import { CoreError } from './errors.js';

/** IPv6 clients are counted per /64 by default: one subscriber usually holds a whole /64. */
export const DEFAULT_IPV6_PREFIX = 64;

interface Net {
  /** 4 or 16 bytes, the bits after `prefix` zero. */
  bytes: Uint8Array;
  prefix: number;
}

export interface AddressMatcher {
  /** Whether the address is in one of the entries; false for anything that is not an address. */
  has(address: string): boolean;
  /** The entries in canonical form (IPv4-mapped ones as IPv4; a lone address with its /32 or
   * /128 left off). */
  readonly entries: readonly string[];
  readonly size: number;
}

const V4_PART = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const V4 = new RegExp(`^${V4_PART}(?:\\.${V4_PART}){3}$`);
const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/;
// Longest text form of an IPv6 address with a zone is well under this; longer is not an address.
const MAX_ADDRESS_CHARS = 128;

function parseV4(s: string): Uint8Array | undefined {
  if (!V4.test(s)) return undefined;
  return Uint8Array.from(s.split('.').map(Number));
}

function groups(parts: string[], dottedTail: boolean): number[] | undefined {
  const out: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const g = parts[i]!;
    if (dottedTail && i === parts.length - 1 && g.includes('.')) {
      const b = parseV4(g);
      if (!b) return undefined;
      out.push((b[0]! << 8) | b[1]!, (b[2]! << 8) | b[3]!);
    } else if (HEX_GROUP.test(g)) out.push(Number.parseInt(g, 16));
    else return undefined;
  }
  return out;
}

function parseV6(s: string): Uint8Array | undefined {
  const gap = s.indexOf('::');
  if (gap !== s.lastIndexOf('::')) return undefined;
  const split = (t: string) => (t === '' ? [] : t.split(':'));
  let words: number[];
  if (gap < 0) {
    const all = groups(split(s), true);
    if (all?.length !== 8) return undefined;
    words = all;
  } else {
    const left = groups(split(s.slice(0, gap)), false);
    const right = groups(split(s.slice(gap + 2)), true);
    // '::' stands for at least one group of zeros (RFC 4291 §2.2).
    if (!left || !right || left.length + right.length > 7) return undefined;
    words = [...left, ...new Array<number>(8 - left.length - right.length).fill(0), ...right];
  }
  const bytes = new Uint8Array(16);
  words.forEach((w, i) => {
    bytes[2 * i] = w >> 8;
    bytes[2 * i + 1] = w & 0xff;
  });
  return bytes;
}

function isMapped(b: Uint8Array): boolean {
  if (b.length !== 16 || b[10] !== 0xff || b[11] !== 0xff) return false;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return true;
}

/** An address without zone as 4 or 16 bytes; an IPv4-mapped IPv6 address as its IPv4 bytes. */
function parseAddress(s: string): Uint8Array | undefined {
  const b = s.includes(':') ? parseV6(s) : parseV4(s);
  if (b && isMapped(b)) return b.slice(12);
  return b;
}

/** The address part of a peer's address as bytes, or undefined; never throws. */
function peerBytes(address: unknown): Uint8Array | undefined {
  if (typeof address !== 'string' || address.length > MAX_ADDRESS_CHARS) return undefined;
  const zone = address.indexOf('%');
  return parseAddress(zone >= 0 && address.includes(':') ? address.slice(0, zone) : address);
}

function masked(b: Uint8Array, prefix: number): Uint8Array {
  return b.map((x, i) => {
    const keep = Math.max(0, Math.min(8, prefix - 8 * i));
    return x & ((0xff << (8 - keep)) & 0xff);
  });
}

function inNet(b: Uint8Array, net: Net): boolean {
  if (b.length !== net.bytes.length) return false;
  const m = masked(b, net.prefix);
  for (let i = 0; i < m.length; i++) if (m[i] !== net.bytes[i]) return false;
  return true;
}

/** RFC 5952 text: lower case, no leading zeros, the longest run of two or more zero groups as '::'. */
function format(b: Uint8Array): string {
  if (b.length === 4) return b.join('.');
  const w = Array.from({ length: 8 }, (_, i) => (b[2 * i]! << 8) | b[2 * i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

type Parsed = { net: Net; text: string } | { error: string };

function parseEntry(entry: string): Parsed {
  if (entry === '') return { error: 'is empty' };
  if (entry.trim() !== entry) return { error: 'has leading or trailing spaces' };
  const slash = entry.indexOf('/');
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  if (addr.includes('%') && addr.includes(':'))
    return {
      error: 'has an IPv6 zone id (%…): a zone names an interface of this host, leave it out',
    };
  const raw = addr.includes(':') ? parseV6(addr) : parseV4(addr);
  if (!raw) return { error: 'is not an IPv4 or IPv6 address (or address/prefix)' };
  const max = raw.length * 8;
  let prefix = max;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (/^0\d+$/.test(p))
      return {
        error: `prefix length "${p}" has a leading zero (octal or decimal?): write it plainly`,
      };
    if (!/^(0|[1-9]\d{0,5})$/.test(p))
      return { error: `prefix length ${JSON.stringify(p)} is not a number 0..${max}` };
    prefix = Number(p);
    if (prefix > max)
      return { error: `prefix length /${prefix} is more than ${max} for IPv${max === 32 ? 4 : 6}` };
  }
  let bytes = raw;
  if (isMapped(raw)) {
    if (prefix < 96)
      return { error: 'an IPv4-mapped range needs a prefix of at least /96 (::ffff:0:0/96)' };
    bytes = raw.slice(12);
    prefix -= 96;
  }
  const net = masked(bytes, prefix);
  if (net.some((x, i) => x !== bytes[i])) {
    return {
      error: `has bits set after the /${prefix} prefix: did you mean ${format(net)}/${prefix}?`,
    };
  }
  const full = bytes.length * 8;
  return {
    net: { bytes: net, prefix },
    text: prefix === full ? format(net) : `${format(net)}/${prefix}`,
  };
}

/** Why an entry is not an address or CIDR range, or undefined when it is one. */
export function addressProblem(entry: unknown): string | undefined {
  if (typeof entry !== 'string') return 'not a string';
  const p = parseEntry(entry);
  return 'error' in p ? `${JSON.stringify(entry)}: ${p.error}` : undefined;
}

/**
 * A config check: undefined if `list` is a list of addresses and CIDR ranges, else the problems,
 * one per line, each as `what[index]: "entry": why`.
 */
export function checkAddressList(list: unknown, what: string): string | undefined {
  if (!Array.isArray(list)) return `${what}: must be a list of addresses or CIDR ranges`;
  const problems: string[] = [];
  list.forEach((entry, i) => {
    const p = addressProblem(entry);
    if (p !== undefined) problems.push(`${what}[${i}]: ${p}`);
  });
  return problems.length > 0 ? problems.join('\n') : undefined;
}

/**
 * Parse a list of addresses and CIDR ranges (what: the config key, for the error). Throws
 * CoreError TLSPROXY_ERR_CONFIG naming `what`, the index and the entry of every bad one.
 */
export function parseAddressMatcher(list: readonly string[], what: string): AddressMatcher {
  const problem = checkAddressList(list, what);
  if (problem !== undefined) throw new CoreError('TLSPROXY_ERR_CONFIG', problem);
  const nets: Net[] = [];
  const entries: string[] = [];
  for (const entry of list) {
    const p = parseEntry(entry);
    if ('error' in p) continue; // checked above
    nets.push(p.net);
    entries.push(p.text);
  }
  return {
    entries,
    size: nets.length,
    has(address: string): boolean {
      try {
        const b = peerBytes(address);
        return b !== undefined && nets.some((n) => inNet(b, n));
      } catch {
        // Nothing above throws on any string; a peer's address must never be what does.
        return false;
      }
    },
  };
}

/**
 * The key per-address limits count by: an IPv4 address (or an IPv4-mapped IPv6 one) by itself,
 * an IPv6 address by its /ipv6Prefix network ('2001:db8:1:2::/64'); anything else by its own
 * text. Never throws; a prefix that is not an integer 1..128 counts as the default /64.
 */
export function addressKey(address: string, ipv6Prefix: number = DEFAULT_IPV6_PREFIX): string {
  try {
    const b = peerBytes(address);
    if (b === undefined) return typeof address === 'string' ? address : '';
    if (b.length === 4) return format(b);
    const p =
      Number.isInteger(ipv6Prefix) && ipv6Prefix >= 1 && ipv6Prefix <= 128
        ? ipv6Prefix
        : DEFAULT_IPV6_PREFIX;
    return `${format(masked(b, p))}/${p}`;
  } catch {
    return typeof address === 'string' ? address : '';
  }
}

/** The address in canonical text and its family (IPv4-mapped as IPv4, zone left off), or
 * undefined; never throws. */
export function canonicalAddress(address: string): { text: string; family: 4 | 6 } | undefined {
  try {
    const b = peerBytes(address);
    return b === undefined ? undefined : { text: format(b), family: b.length === 4 ? 4 : 6 };
  } catch {
    return undefined;
  }
}
