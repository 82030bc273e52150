// PROXY protocol v1/v2 encoder and decoder against byte vectors written out from HAProxy's
// proxy-protocol.txt, and a header captured from nginx (its CRC32C checks our checksum).
import { describe, expect, it } from 'vitest';
import {
  crc32c,
  decodeProxyHeader,
  encodeProxyV1,
  encodeProxyV2,
  PP2_CLIENT_CERT_CONN,
  PP2_CLIENT_CERT_SESS,
  PP2_CLIENT_SSL,
  type ProxyHeaderInput,
} from '../src/proxy-protocol.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const unhex = (s: string) => new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const ascii = (s: string) => Buffer.from(s, 'latin1').toString('hex');
const SIG = '0d0a0d0a000d0a515549540a';

const base: ProxyHeaderInput = {
  sourceAddress: '127.0.0.2',
  sourcePort: 51234,
  destinationAddress: '127.0.0.1',
  destinationPort: 143,
};

describe('PROXY v2 encoder', () => {
  it('TCP over IPv4, no TLVs', () => {
    expect(hex(encodeProxyV2(base))).toBe(
      `${SIG}2111000c7f0000027f000001c822008f`, // 0x21 v2 PROXY, 0x11 TCP4, len 12, ports 51234 143
    );
  });

  it('TCP over IPv6 (and a mixed pair as IPv4-mapped IPv6)', () => {
    const v6 = encodeProxyV2({ ...base, sourceAddress: '2001:db8::1', destinationAddress: '::1' });
    expect(hex(v6)).toBe(
      `${SIG}21210024` +
        '20010db8000000000000000000000001' +
        '00000000000000000000000000000001' +
        'c822008f',
    );
    const mixed = encodeProxyV2({ ...base, destinationAddress: '::1' });
    expect(hex(mixed).slice(32, 64)).toBe('00000000000000000000ffff7f000002');
    // Node's IPv4-mapped form on a dual-stack listener is plain IPv4 in the header.
    expect(hex(encodeProxyV2({ ...base, sourceAddress: '::ffff:127.0.0.2' }))).toBe(
      hex(encodeProxyV2(base)),
    );
  });

  it('AF_UNSPEC when the addresses are not IP (a UNIX listener)', () => {
    expect(hex(encodeProxyV2({ ...base, sourceAddress: '', destinationAddress: '/run/x' }))).toBe(
      `${SIG}21000000`,
    );
  });

  it('ALPN, AUTHORITY and SSL TLVs without a client certificate: verify non-zero', () => {
    const h = encodeProxyV2({
      ...base,
      alpn: 'imap',
      authority: 'localhost',
      ssl: {
        version: 'TLSv1.3',
        cipher: 'TLS_AES_256_GCM_SHA384',
        cn: 'ignored',
        clientCertVerified: false,
      },
    });
    const tlvs =
      `010004${ascii('imap')}` +
      `020009${ascii('localhost')}` +
      `200028` + // SSL, 5 + 10 + 25 = 40 octets
      '01' + // PP2_CLIENT_SSL
      '00000001' + // verify: no verified certificate
      `210007${ascii('TLSv1.3')}` +
      `230016${ascii('TLS_AES_256_GCM_SHA384')}`;
    expect(hex(h)).toBe(
      `${SIG}2111${(12 + tlvs.length / 2).toString(16).padStart(4, '0')}7f0000027f000001c822008f${tlvs}`,
    );
  });

  it('SSL TLV with a verified client certificate: flags, verify 0 and the CN', () => {
    const h = encodeProxyV2({
      ...base,
      ssl: { version: 'TLSv1.2', cipher: null, cn: 'alice', clientCertVerified: true },
    });
    expect(hex(h).slice(56)).toBe(
      // SSL, 23 octets: CLIENT_SSL | CERT_CONN | CERT_SESS, verify 0, version, CN
      ['200017', '07', '00000000', `210007${ascii('TLSv1.2')}`, `220005${ascii('alice')}`].join(''),
    );
  });

  it('tlvs: false sends the addresses only', () => {
    const h = encodeProxyV2(
      { ...base, authority: 'x', ssl: { clientCertVerified: false } },
      {
        tlvs: false,
      },
    );
    expect(hex(h)).toBe(hex(encodeProxyV2(base)));
  });
});

describe('PROXY v1 encoder', () => {
  it('writes the text forms of section 2.1', () => {
    const t = (i: ProxyHeaderInput) => Buffer.from(encodeProxyV1(i)).toString('latin1');
    expect(
      t({
        sourceAddress: '192.168.0.1',
        destinationAddress: '192.168.0.11',
        sourcePort: 56324,
        destinationPort: 443,
      }),
    ).toBe('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
    expect(t({ ...base, sourceAddress: '2001:db8:0:0::1', destinationAddress: '::1' })).toBe(
      'PROXY TCP6 2001:db8::1 ::1 51234 143\r\n',
    );
    expect(t({ ...base, sourceAddress: 'unix' })).toBe('PROXY UNKNOWN\r\n');
  });
});

// nginx 1.25 `proxy_protocol on` with TLS and no client certificate; ends with a CRC32C TLV.
const NGINX =
  `${SIG}211100557f0000017f000001c8b28fa320003f0100000001210007544c5376312e33230016544c535f4145535f` +
  '3235365f47434d5f53484133383424000a5253412d534841323536250007525341323034380300048cb50e0b';

describe('PROXY decoder', () => {
  it('decodes what the encoder writes, in any chunking', () => {
    const h = encodeProxyV2({
      ...base,
      sourceAddress: '2001:db8::5',
      destinationAddress: '2001:db8::1',
      alpn: 'h2',
      authority: 'mail.example.org',
      ssl: {
        version: 'TLSv1.3',
        cipher: 'TLS_AES_128_GCM_SHA256',
        cn: 'bob',
        clientCertVerified: true,
      },
    });
    const data = new Uint8Array([...h, ...Buffer.from('* OK hi\r\n')]);
    for (let i = 0; i < h.length; i++) {
      expect(decodeProxyHeader(data.subarray(0, i)).kind).toBe('incomplete');
    }
    const r = decodeProxyHeader(data);
    if (r.kind !== 'header') throw new Error(r.kind);
    expect(r.length).toBe(h.length);
    expect(r.header).toMatchObject({
      version: 2,
      command: 'proxy',
      family: 'tcp6',
      sourceAddress: '2001:db8::5',
      destinationAddress: '2001:db8::1',
      sourcePort: 51234,
      destinationPort: 143,
      alpn: 'h2',
      authority: 'mail.example.org',
      ssl: {
        client: PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
        verify: 0,
        version: 'TLSv1.3',
        cipher: 'TLS_AES_128_GCM_SHA256',
        cn: 'bob',
      },
    });
  });

  it('decodes a header captured from nginx and checks its CRC32C', () => {
    const r = decodeProxyHeader(unhex(NGINX));
    if (r.kind !== 'header') throw new Error(r.kind);
    expect(r.length).toBe(16 + 0x55);
    expect(r.header).toMatchObject({
      family: 'tcp4',
      sourceAddress: '127.0.0.1',
      sourcePort: 0xc8b2,
      destinationPort: 0x8fa3,
      ssl: {
        client: PP2_CLIENT_SSL,
        verify: 1,
        version: 'TLSv1.3',
        cipher: 'TLS_AES_256_GCM_SHA384',
      },
    });
    const bad = unhex(NGINX);
    bad[20] = bad[20]! ^ 1; // one bit of the source address
    expect(() => decodeProxyHeader(bad)).toThrow(/CRC32C mismatch/);
  });

  it('crc32c matches the RFC 3720 check value', () => {
    expect(crc32c(new TextEncoder().encode('123456789')).toString(16)).toBe('e3069283');
  });

  it('decodes v1 lines and rejects malformed ones', () => {
    const d = (s: string) => decodeProxyHeader(new TextEncoder().encode(s));
    expect(d('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /')).toMatchObject({
      kind: 'header',
      length: 47,
      header: {
        version: 1,
        family: 'tcp4',
        sourceAddress: '192.168.0.1',
        destinationAddress: '192.168.0.11',
        sourcePort: 56324,
        destinationPort: 443,
      },
    });
    expect(d('PROXY UNKNOWN ffff::1 ::1 1 2\r\n')).toMatchObject({
      kind: 'header',
      header: { family: 'unknown' },
    });
    expect(d('PROXY TCP4 1.2.3.4')).toEqual({ kind: 'incomplete' });
    expect(d('PRO')).toEqual({ kind: 'incomplete' });
    expect(() => d('PROXY TCP4 1.2.3.4 ::1 1 2\r\n')).toThrow(/bad address/);
    expect(() => d('PROXY TCP4 1.2.3.4 1.2.3.5 1 65536\r\n')).toThrow(/bad port/);
    expect(() => d('PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n')).toThrow(/malformed/);
    expect(() => d(`PROXY TCP4 ${'1'.repeat(120)}`)).toThrow(/too long/);
  });

  it('says "none" for a connection without a header, and enforces its limits', () => {
    expect(decodeProxyHeader(new TextEncoder().encode('* OK'))).toEqual({ kind: 'none' });
    expect(decodeProxyHeader(new TextEncoder().encode('PROXY x'), { v1: false })).toEqual({
      kind: 'none',
    });
    const big = unhex(`${SIG}2111ffff`);
    expect(() => decodeProxyHeader(big)).toThrow(/exceeds 4096/);
    expect(() => decodeProxyHeader(unhex(`${SIG}3111000c`))).toThrow(/version/);
    expect(() => decodeProxyHeader(unhex(`${SIG}21110004 7f000001`))).toThrow(/truncated/);
    // A TLV whose length runs past the header.
    expect(() =>
      decodeProxyHeader(unhex(`${SIG}2111000f 7f0000027f000001c822008f 02ffff`)),
    ).toThrow(/overruns/);
    // LOCAL: addresses ignored.
    const local = decodeProxyHeader(unhex(`${SIG}2011000c 7f0000027f000001c822008f`));
    expect(local).toMatchObject({
      kind: 'header',
      header: { command: 'local', family: 'unknown' },
    });
  });
});
