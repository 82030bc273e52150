// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): encoders for the header
// tlsproxy sends to a legacy backend it connects to, and a bounded, sans-I/O decoder for headers
// received (inbound PROXY from a trusted load balancer; tests).
//
// Version 2 layout: 12-byte signature, ver_cmd (0x21 = v2 PROXY, 0x20 = v2 LOCAL), fam
// (0x11 TCP/IPv4, 0x21 TCP/IPv6, 0x31 UNIX stream, 0x00 UNSPEC), a big-endian uint16 length of
// what follows, the addresses (IPv4: 4+4+2+2, IPv6: 16+16+2+2, UNIX: 108+108 octets), then TLVs
// (type uint8, length uint16 BE, value). The SSL TLV (0x20) holds client flags (uint8), the
// verify result (uint32 BE, zero only when the client presented a certificate that verified)
// and sub-TLVs: SSL version, CN, cipher.

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

const enc = new TextEncoder();
const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8', { fatal: false });

/** Normalise a pair of addresses to one family; undefined when they cannot be expressed. */
function pairFamily(
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

function validPort(p: number): boolean {
  return Number.isInteger(p) && p >= 0 && p < 65536;
}

function ipv4Bytes(a: string): Uint8Array {
  return Uint8Array.from(a.split('.').map(Number));
}

function ipv6Bytes(a: string): Uint8Array {
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

function ipv4String(b: Uint8Array): string {
  return Array.from(b).join('.');
}

function ipv6String(b: Uint8Array): string {
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

function tlv(type: number, value: Uint8Array): Uint8Array {
  if (value.length > 0xffff) throw new ProxyProtocolError(`TLV 0x${type.toString(16)} too long`);
  const out = new Uint8Array(3 + value.length);
  out[0] = type;
  out[1] = value.length >> 8;
  out[2] = value.length & 0xff;
  out.set(value, 3);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The TLVs tlsproxy sends: ALPN, AUTHORITY (SNI), SSL with version, CN and cipher. */
export function encodeTlvs(input: ProxyHeaderInput): Uint8Array {
  const parts: Uint8Array[] = [];
  if (input.alpn) parts.push(tlv(PP2_TYPE_ALPN, enc.encode(input.alpn)));
  if (input.authority) parts.push(tlv(PP2_TYPE_AUTHORITY, enc.encode(input.authority)));
  const ssl = input.ssl;
  if (ssl) {
    const head = new Uint8Array(5);
    head[0] =
      PP2_CLIENT_SSL | (ssl.clientCertVerified ? PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS : 0);
    // proxy-protocol.txt: zero only if a certificate was presented and verified.
    new DataView(head.buffer).setUint32(1, ssl.clientCertVerified ? 0 : 1);
    const sub: Uint8Array[] = [head];
    if (ssl.version) sub.push(tlv(PP2_SUBTYPE_SSL_VERSION, enc.encode(ssl.version)));
    if (ssl.clientCertVerified && ssl.cn) sub.push(tlv(PP2_SUBTYPE_SSL_CN, enc.encode(ssl.cn)));
    if (ssl.cipher) sub.push(tlv(PP2_SUBTYPE_SSL_CIPHER, enc.encode(ssl.cipher)));
    parts.push(tlv(PP2_TYPE_SSL, concat(sub)));
  }
  return concat(parts);
}

/**
 * A PROXY v2 header. Addresses that are not IP literals (a UNIX listener) give AF_UNSPEC, which
 * tells the receiver to keep the socket's own addresses. `tlvs: false` sends the addresses only.
 */
export function encodeProxyV2(
  input: ProxyHeaderInput,
  options: { tlvs?: boolean } = {},
): Uint8Array {
  const pair = pairFamily(input.sourceAddress, input.destinationAddress);
  const ok = pair && validPort(input.sourcePort) && validPort(input.destinationPort);
  let fam = 0x00;
  let addr = new Uint8Array(0);
  if (ok && pair.family === 'tcp4') {
    fam = 0x11;
    addr = new Uint8Array(12);
    addr.set(ipv4Bytes(pair.src), 0);
    addr.set(ipv4Bytes(pair.dst), 4);
  } else if (ok && pair.family === 'tcp6') {
    fam = 0x21;
    addr = new Uint8Array(36);
    addr.set(ipv6Bytes(pair.src), 0);
    addr.set(ipv6Bytes(pair.dst), 16);
  }
  if (addr.length > 0) {
    const dv = new DataView(addr.buffer);
    dv.setUint16(addr.length - 4, input.sourcePort);
    dv.setUint16(addr.length - 2, input.destinationPort);
  }
  const tlvs = options.tlvs === false ? new Uint8Array(0) : encodeTlvs(input);
  const len = addr.length + tlvs.length;
  if (len > 0xffff) throw new ProxyProtocolError('PROXY v2 header too long');
  const head = new Uint8Array(16);
  head.set(PP2_SIGNATURE, 0);
  head[12] = 0x21;
  head[13] = fam;
  head[14] = len >> 8;
  head[15] = len & 0xff;
  return concat([head, addr, tlvs]);
}

/** A PROXY v1 text header ("PROXY TCP4 src dst sport dport\r\n", or "PROXY UNKNOWN\r\n"). */
export function encodeProxyV1(input: ProxyHeaderInput): Uint8Array {
  const pair = pairFamily(input.sourceAddress, input.destinationAddress);
  if (!pair || !validPort(input.sourcePort) || !validPort(input.destinationPort)) {
    return enc.encode('PROXY UNKNOWN\r\n');
  }
  const proto = pair.family === 'tcp4' ? 'TCP4' : 'TCP6';
  const norm = (a: string) => (pair.family === 'tcp6' ? ipv6String(ipv6Bytes(a)) : a);
  return enc.encode(
    `PROXY ${proto} ${norm(pair.src)} ${norm(pair.dst)} ${input.sourcePort} ${input.destinationPort}\r\n`,
  );
}

export interface DecodeOptions {
  /** Largest v2 header accepted (16-byte prefix included); default 4096. The protocol allows
   * 65,551; real headers with TLS TLVs are a few hundred octets. */
  maxV2Length?: number;
  /** Accept v1 text headers; default true. */
  v1?: boolean;
  /** Accept v2 binary headers; default true. */
  v2?: boolean;
}

export type DecodeResult =
  /** More bytes are needed to decide. */
  | { kind: 'incomplete' }
  /** The bytes do not start with a PROXY header. */
  | { kind: 'none' }
  /** A header of `length` octets; the connection's own data starts after it. */
  | { kind: 'header'; header: ProxyHeader; length: number };

const V1_PREFIX = enc.encode('PROXY ');

function startsWithPartial(data: Uint8Array, prefix: Uint8Array): 'yes' | 'partial' | 'no' {
  const n = Math.min(data.length, prefix.length);
  for (let i = 0; i < n; i++) if (data[i] !== prefix[i]) return 'no';
  return data.length >= prefix.length ? 'yes' : 'partial';
}

/**
 * Decode a PROXY header at the start of `data` (the first bytes read on a connection, in any
 * chunking). Never reads past the header; throws ProxyProtocolError for a malformed or
 * oversized one (close the connection: the peer is not the proxy it claims to be).
 */
export function decodeProxyHeader(data: Uint8Array, options: DecodeOptions = {}): DecodeResult {
  const allowV1 = options.v1 !== false;
  const allowV2 = options.v2 !== false;
  const v2 = allowV2 ? startsWithPartial(data, PP2_SIGNATURE) : 'no';
  const v1 = allowV1 ? startsWithPartial(data, V1_PREFIX) : 'no';
  if (v2 === 'yes') return decodeV2(data, options.maxV2Length ?? 4096);
  if (v1 === 'yes') return decodeV1(data);
  if (v2 === 'partial' || v1 === 'partial') return { kind: 'incomplete' };
  return { kind: 'none' };
}

function decodeV1(data: Uint8Array): DecodeResult {
  const limit = Math.min(data.length, V1_MAX_LENGTH);
  let end = -1;
  for (let i = 0; i < limit - 1; i++) {
    if (data[i] === 0x0d && data[i + 1] === 0x0a) {
      end = i;
      break;
    }
  }
  if (end < 0) {
    if (data.length >= V1_MAX_LENGTH) throw new ProxyProtocolError('PROXY v1 line too long');
    return { kind: 'incomplete' };
  }
  const line = latin1.decode(data.subarray(0, end));
  const base = { version: 1 as const, command: 'proxy' as const, tlvs: [] };
  const f = line.split(' ');
  if (f[1] === 'UNKNOWN') {
    return { kind: 'header', header: { ...base, family: 'unknown' }, length: end + 2 };
  }
  if (f.length !== 6 || (f[1] !== 'TCP4' && f[1] !== 'TCP6')) {
    throw new ProxyProtocolError('malformed PROXY v1 line');
  }
  const want = f[1] === 'TCP4' ? 4 : 6;
  const [, , src, dst, sp, dp] = f as [string, string, string, string, string, string];
  const port = (p: string) => {
    if (!/^(0|[1-9]\d{0,4})$/.test(p) || Number(p) > 65535)
      throw new ProxyProtocolError(`bad port "${p}" in PROXY v1 line`);
    return Number(p);
  };
  if (isIP(src) !== want || isIP(dst) !== want || src.includes('%') || dst.includes('%')) {
    throw new ProxyProtocolError('bad address in PROXY v1 line');
  }
  return {
    kind: 'header',
    header: {
      ...base,
      family: want === 4 ? 'tcp4' : 'tcp6',
      sourceAddress: src,
      destinationAddress: dst,
      sourcePort: port(sp),
      destinationPort: port(dp),
    },
    length: end + 2,
  };
}

function parseTlvs(b: Uint8Array, what: string): Array<{ type: number; value: Uint8Array }> {
  const out: Array<{ type: number; value: Uint8Array }> = [];
  let o = 0;
  while (o < b.length) {
    if (o + 3 > b.length) throw new ProxyProtocolError(`truncated ${what}`);
    const len = (b[o + 1]! << 8) | b[o + 2]!;
    if (o + 3 + len > b.length) throw new ProxyProtocolError(`${what} overruns the header`);
    out.push({ type: b[o]!, value: b.slice(o + 3, o + 3 + len) });
    o += 3 + len;
  }
  return out;
}

function findTlvOffset(b: Uint8Array, type: number): number {
  for (let o = 0; o + 3 <= b.length; o += 3 + ((b[o + 1]! << 8) | b[o + 2]!)) {
    if (b[o] === type) return o;
  }
  return -1;
}

let crcTable: Uint32Array | undefined;

/** CRC32c (Castagnoli), as PP2_TYPE_CRC32C uses it. */
export function crc32c(data: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
      crcTable[i] = c >>> 0;
    }
  }
  let crc = 0xffffffff;
  for (const b of data) crc = crcTable[(crc ^ b) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

function decodeV2(data: Uint8Array, maxLength: number): DecodeResult {
  if (data.length < 16) return { kind: 'incomplete' };
  const verCmd = data[12]!;
  if (verCmd >> 4 !== 2) throw new ProxyProtocolError('PROXY v2: unsupported version');
  const cmd = verCmd & 0x0f;
  if (cmd > 1) throw new ProxyProtocolError('PROXY v2: unknown command');
  const fam = data[13]!;
  const len = (data[14]! << 8) | data[15]!;
  if (16 + len > maxLength) {
    throw new ProxyProtocolError(`PROXY v2 header of ${16 + len} octets exceeds ${maxLength}`);
  }
  if (data.length < 16 + len) return { kind: 'incomplete' };
  const body = data.subarray(16, 16 + len);
  const af = fam >> 4;
  const proto = fam & 0x0f;
  const addrLen = af === 1 ? 12 : af === 2 ? 36 : af === 3 ? 216 : 0;
  if (af > 3 || proto > 2) throw new ProxyProtocolError('PROXY v2: unknown address family');
  if (len < addrLen) throw new ProxyProtocolError('PROXY v2: address block truncated');
  const header: ProxyHeader = {
    version: 2,
    command: cmd === 0 ? 'local' : 'proxy',
    family: 'unknown',
    tlvs: [],
  };
  // Only stream transports carry addresses we use; LOCAL's addresses are to be ignored.
  if (cmd === 1 && proto === 1 && (af === 1 || af === 2)) {
    const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
    if (af === 1) {
      header.family = 'tcp4';
      header.sourceAddress = ipv4String(body.subarray(0, 4));
      header.destinationAddress = ipv4String(body.subarray(4, 8));
    } else {
      header.family = 'tcp6';
      header.sourceAddress = ipv6String(body.subarray(0, 16));
      header.destinationAddress = ipv6String(body.subarray(16, 32));
    }
    header.sourcePort = dv.getUint16(addrLen - 4);
    header.destinationPort = dv.getUint16(addrLen - 2);
  } else if (cmd === 1 && proto === 1 && af === 3) {
    header.family = 'unix';
    const path = (b: Uint8Array) => {
      const z = b.indexOf(0);
      return utf8.decode(z >= 0 ? b.subarray(0, z) : b);
    };
    header.sourceAddress = path(body.subarray(0, 108));
    header.destinationAddress = path(body.subarray(108, 216));
  }
  header.tlvs = parseTlvs(body.subarray(addrLen), 'TLV');
  const crc = header.tlvs.find((t) => t.type === PP2_TYPE_CRC32C);
  if (crc) {
    // The checksum covers the whole header with its own value zeroed (section 2.2.3).
    if (crc.value.length !== 4) throw new ProxyProtocolError('PROXY v2: bad CRC32C TLV');
    const copy = data.slice(0, 16 + len);
    const at = findTlvOffset(copy.subarray(16 + addrLen), PP2_TYPE_CRC32C) + 16 + addrLen + 3;
    copy.fill(0, at, at + 4);
    const want = new DataView(crc.value.buffer, crc.value.byteOffset, 4).getUint32(0);
    if (crc32c(copy) !== want) throw new ProxyProtocolError('PROXY v2: CRC32C mismatch');
  }
  for (const t of header.tlvs) {
    if (t.type === PP2_TYPE_ALPN) header.alpn = utf8.decode(t.value);
    else if (t.type === PP2_TYPE_AUTHORITY) header.authority = utf8.decode(t.value);
    else if (t.type === PP2_TYPE_SSL) {
      if (t.value.length < 5) throw new ProxyProtocolError('PROXY v2: SSL TLV too short');
      const dv = new DataView(t.value.buffer, t.value.byteOffset, t.value.byteLength);
      const ssl: ProxySsl = {
        client: t.value[0]!,
        verify: dv.getUint32(1),
        tlvs: parseTlvs(t.value.subarray(5), 'SSL sub-TLV'),
      };
      for (const s of ssl.tlvs) {
        if (s.type === PP2_SUBTYPE_SSL_VERSION) ssl.version = utf8.decode(s.value);
        else if (s.type === PP2_SUBTYPE_SSL_CN) ssl.cn = utf8.decode(s.value);
        else if (s.type === PP2_SUBTYPE_SSL_CIPHER) ssl.cipher = utf8.decode(s.value);
      }
      header.ssl = ssl;
    }
  }
  return { kind: 'header', header, length: 16 + len };
}

/** The CN from a distinguished name string as node:tls formats it ("CN=alice,O=Example" or
 * multi-line "CN=alice\nO=Example"); undefined when there is none. */
export function commonName(subject: string): string | undefined {
  const parts = subject.includes('\n') ? subject.split('\n') : subject.split(/,\s*/);
  for (const part of parts) {
    const m = /^\s*CN=(.*)$/.exec(part);
    if (m) return m[1]!.trim();
  }
  return undefined;
}
