// PROXY protocol decoder: bounded and sans-I/O, for headers received from a trusted load balancer
// (and tests). Incomplete input asks for more; anything malformed is a ProxyProtocolError.
import { isIP } from 'node:net';
import {
  DEFAULT_MAX_V2_LENGTH,
  enc,
  ipv4String,
  ipv6String,
  latin1,
  PP2_SIGNATURE,
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_SSL,
  type ProxyHeader,
  ProxyProtocolError,
  type ProxySsl,
  utf8,
  V1_MAX_LENGTH,
} from './proxy-protocol-wire.js';

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
  if (v2 === 'yes') return decodeV2(data, options.maxV2Length ?? DEFAULT_MAX_V2_LENGTH);
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
