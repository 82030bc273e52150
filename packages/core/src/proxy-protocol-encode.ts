// PROXY protocol encoders (v1 text, v2 binary with TLVs): the header tlsproxy sends to a legacy
// backend it connects to.
import {
  concat,
  enc,
  ipv4Bytes,
  ipv6Bytes,
  ipv6String,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  PP2_SIGNATURE,
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_SSL,
  type ProxyHeaderInput,
  ProxyProtocolError,
  pairFamily,
  tlv,
  validPort,
} from './proxy-protocol-wire.js';

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
