// PROXY protocol: what the encoder and the decoder share — the v2 constants, the header types,
// the error, and the address and TLV helpers. See proxy-protocol.ts for the layout.
import { isIP } from 'node:net';
import { TlsproxyError } from '@tlsproxy/dialect-kit';

export const PP2_SIGNATURE: Uint8Array = Uint8Array.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
]);

export const PP2_TYPE_ALPN = 0x01;
export const PP2_TYPE_AUTHORITY = 0x02;
export const PP2_TYPE_CRC32C = 0x03;
export const PP2_TYPE_NOOP = 0x04;
export const PP2_TYPE_UNIQUE_ID = 0x05;
export const PP2_TYPE_SSL = 0x20;
export const PP2_SUBTYPE_SSL_VERSION = 0x21;
export const PP2_SUBTYPE_SSL_CN = 0x22;
export const PP2_SUBTYPE_SSL_CIPHER = 0x23;
export const PP2_SUBTYPE_SSL_SIG_ALG = 0x24;
export const PP2_SUBTYPE_SSL_KEY_ALG = 0x25;
export const PP2_TYPE_NETNS = 0x30;

export const PP2_CLIENT_SSL = 0x01;
export const PP2_CLIENT_CERT_CONN = 0x02;
export const PP2_CLIENT_CERT_SESS = 0x04;

/** Longest v1 line, CRLF included (proxy-protocol.txt section 2.1). */
export const V1_MAX_LENGTH = 107;
/** Largest v2 header accepted by default, prefix included (the protocol allows 65 551). */
export const DEFAULT_MAX_V2_LENGTH = 4096;

export interface ProxyAddresses {
  /** 'tcp4' | 'tcp6' carry addresses; 'unknown' (v1 UNKNOWN, v2 AF_UNSPEC or LOCAL) does not. */
  family: 'tcp4' | 'tcp6' | 'unix' | 'unknown';
  sourceAddress?: string;
  sourcePort?: number;
  destinationAddress?: string;
  destinationPort?: number;
}

export interface ProxySsl {
  /** PP2_CLIENT_* bits */
  client: number;
  /** Zero only when the client presented a certificate and it verified. */
  verify: number;
  version?: string;
  cn?: string;
  cipher?: string;
  /** Every sub-TLV, including the above and unknown ones. */
  tlvs: Array<{ type: number; value: Uint8Array }>;
}

export interface ProxyHeader extends ProxyAddresses {
  version: 1 | 2;
  /** v2 LOCAL (a health check from the proxy itself): the addresses must be ignored. */
  command: 'proxy' | 'local';
  /** v2 TLVs in order (raw). */
  tlvs: Array<{ type: number; value: Uint8Array }>;
  alpn?: string;
  authority?: string;
  ssl?: ProxySsl;
}

/** What the encoder needs: a TCP connection's two ends and what TLS negotiated. */
export interface ProxyHeaderInput {
  sourceAddress: string;
  sourcePort: number;
  destinationAddress: string;
  destinationPort: number;
  /** ALPN protocol (PP2_TYPE_ALPN) */
  alpn?: string | null;
  /** SNI server name (PP2_TYPE_AUTHORITY) */
  authority?: string | null;
  /** PP2_TYPE_SSL; omit for a connection without TLS. */
  ssl?: {
    version?: string | null;
    cipher?: string | null;
    /** Common name of the verified client certificate. */
    cn?: string | null;
    /** A client certificate was presented on this connection and verified. */
    clientCertVerified: boolean;
  } | null;
}

export class ProxyProtocolError extends TlsproxyError<'TLSPROXY_ERR_PROXY_PROTOCOL'> {
  constructor(message: string) {
    super('TLSPROXY_ERR_PROXY_PROTOCOL', message);
    this.name = 'ProxyProtocolError';
  }
}

export const enc = new TextEncoder();
export const latin1 = new TextDecoder('latin1');
export const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Normalise a pair of addresses to one family; undefined when they cannot be expressed. */
export function pairFamily(
  src: string,
  dst: string,
): { family: 'tcp4' | 'tcp6'; src: string; dst: string } | undefined {
  const unmap = (a: string) => (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(a) ? a.slice(7) : a);
  const s = unmap(src);
  const d = unmap(dst);
  const fs = isIP(s);
  const fd = isIP(d);
  if (fs === 0 || fd === 0) return undefined;
  if (fs === 4 && fd === 4) return { family: 'tcp4', src: s, dst: d };
  // Mixed: express the IPv4 one as IPv4-mapped IPv6.
  return {
    family: 'tcp6',
    src: fs === 4 ? `::ffff:${s}` : src,
    dst: fd === 4 ? `::ffff:${d}` : dst,
  };
}

export function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p < 65536;
}

export function ipv4Bytes(a: string): Uint8Array {
  return Uint8Array.from(a.split('.').map(Number));
}

export function ipv6Bytes(a: string): Uint8Array {
  let s = a;
  // A trailing dotted quad (::ffff:1.2.3.4) becomes two groups.
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (m) {
    const b = ipv4Bytes(m[2]!);
    s = `${m[1]}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const [head, tail] = s.includes('::') ? s.split('::') : [s, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups =
    tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    const v = Number.parseInt(g, 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  });
  return out;
}

export function ipv4String(b: Uint8Array): string {
  return Array.from(b).join('.');
}

export function ipv6String(b: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  // Longest run of zero groups (length >= 2) becomes "::" (RFC 5952).
  let best = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

export function tlv(type: number, value: Uint8Array): Uint8Array {
  if (value.length > 0xffff) throw new ProxyProtocolError(`TLV 0x${type.toString(16)} too long`);
  const out = new Uint8Array(3 + value.length);
  out[0] = type;
  out[1] = value.length >> 8;
  out[2] = value.length & 0xff;
  out.set(value, 3);
  return out;
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
