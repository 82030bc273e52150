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
//
// Split in three (issue 16): proxy-protocol-wire.ts (constants, types, shared helpers),
// proxy-protocol-encode.ts, proxy-protocol-decode.ts. This module is the public surface
// (`proxyProtocol` namespace of @tlsproxy/core).

export type { DecodeOptions, DecodeResult } from './proxy-protocol-decode.js';
export { commonName, crc32c, decodeProxyHeader } from './proxy-protocol-decode.js';
export { encodeProxyV1, encodeProxyV2, encodeTlvs } from './proxy-protocol-encode.js';
export type {
  ProxyAddresses,
  ProxyHeader,
  ProxyHeaderInput,
  ProxySsl,
} from './proxy-protocol-wire.js';
export {
  DEFAULT_MAX_V2_LENGTH,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  PP2_SIGNATURE,
  PP2_SUBTYPE_SSL_CIPHER,
  PP2_SUBTYPE_SSL_CN,
  PP2_SUBTYPE_SSL_KEY_ALG,
  PP2_SUBTYPE_SSL_SIG_ALG,
  PP2_SUBTYPE_SSL_VERSION,
  PP2_TYPE_ALPN,
  PP2_TYPE_AUTHORITY,
  PP2_TYPE_CRC32C,
  PP2_TYPE_NETNS,
  PP2_TYPE_NOOP,
  PP2_TYPE_SSL,
  PP2_TYPE_UNIQUE_ID,
  ProxyProtocolError,
  V1_MAX_LENGTH,
} from './proxy-protocol-wire.js';
