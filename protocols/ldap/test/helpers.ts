// Shared test kit: hand-built BER requests, one session driven with them, replies read back.
import type { Action, DialectSession } from '@tlsproxy/dialect-kit';
import { driver, only, writtenBytes } from '@tlsproxy/dialect-kit/testing';
import { dialect, type LdapOptions } from '../src/index.js';

export const hex = (s: string): Uint8Array =>
  Uint8Array.from(s.replace(/\s+/g, '').match(/../g) ?? [], (h) => Number.parseInt(h, 16));
export const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
export const cat = (...parts: Uint8Array[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => [...p]));

/** A TLV with a definite length (short or long form), written out by hand. */
export function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const body = cat(...contents);
  const n = body.length;
  const len = n < 0x80 ? [n] : n < 0x100 ? [0x81, n] : [0x82, n >> 8, n & 0xff];
  return Uint8Array.from([tag, ...len, ...body]);
}
const ascii = (s: string) => Uint8Array.from(Buffer.from(s, 'utf8'));
export const int = (n: number, tag = 0x02) =>
  tlv(
    tag,
    n < 0x80
      ? Uint8Array.of(n)
      : n < 0x8000
        ? Uint8Array.of(n >> 8, n & 0xff)
        : Uint8Array.of(0, n >> 16, (n >> 8) & 0xff, n & 0xff),
  );
export const str = (s: string, tag = 0x04) => tlv(tag, ascii(s));
export const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);
export const msg = (id: number, op: Uint8Array, ...controls: Uint8Array[]) =>
  seq(int(id), op, ...controls);

export const STARTTLS_OID = '1.3.6.1.4.1.1466.20037';
export const startTls = (id = 1, ...controls: Uint8Array[]) =>
  msg(id, tlv(0x77, str(STARTTLS_OID, 0x80)), ...controls);
export const extended = (id: number, oid: string, value?: string) =>
  msg(id, tlv(0x77, str(oid, 0x80), ...(value === undefined ? [] : [str(value, 0x81)])));
export const present = (attr: string) => str(attr, 0x87);
export const equal = (attr: string, value: string) => tlv(0xa3, str(attr), str(value));
export function search(
  id: number,
  base: string,
  scope: number,
  attributes: string[] = [],
  filter: Uint8Array = present('objectClass'),
  typesOnly = false,
  /** Components after the attributes (trailing ones, RFC 4511 section 4). */
  ...trailing: Uint8Array[]
): Uint8Array {
  return msg(
    id,
    tlv(
      0x63,
      str(base),
      int(scope, 0x0a),
      int(0, 0x0a),
      int(0),
      int(0),
      tlv(0x01, Uint8Array.of(typesOnly ? 0xff : 0)),
      filter,
      seq(...attributes.map((a) => str(a))),
      ...trailing,
    ),
  );
}
export const simpleBind = (id: number, dn: string, password: string) =>
  msg(id, tlv(0x60, int(3), str(dn), str(password, 0x80)));
export const unbind = (id: number) => msg(id, Uint8Array.of(0x42, 0x00));
export const abandon = (id: number, which: number) => msg(id, int(which, 0x50));
export const critical = (oid: string) => tlv(0xa0, seq(str(oid), tlv(0x01, Uint8Array.of(0xff))));

const ldap = driver<Partial<LdapOptions>>(dialect, {
  hostname: 'ldap.example',
  connectionId: 't1',
});
export const newSession = ldap.newSession;

/** Everything written to the client: send data and close data, in order. */
export const written = (actions: readonly Action[]): Uint8Array => writtenBytes(actions);

/** Start a session, feed each chunk at time 0, return all actions after start(). */
export function feed(
  chunks: Uint8Array[],
  options: Partial<LdapOptions> = {},
  limits: Record<string, number> = {},
): { session: DialectSession; actions: Action[]; out: string } {
  const { session, actions } = ldap.feed(chunks, options, limits);
  return { session, actions, out: toHex(written(actions)) };
}

export { only };

// Replies recorded from slapd 2.5 (security tls=1), hex, for messageID 1 unless named.
export const SLAPD = {
  searchDone13:
    '302802010165230a010d0400041c544c5320636f6e666964656e7469616c697479207265717569726564',
  bind13: '302802010161230a010d0400041c544c5320636f6e666964656e7469616c697479207265717569726564',
  whoami13: '302802010178230a010d0400041c544c5320636f6e666964656e7469616c697479207265717569726564',
  unknownExtended:
    '302a02010178250a01020400041e756e737570706f7274656420657874656e646564206f7065726174696f6e',
  startTlsValue: '3024020101781f0a0102040004186e6f20726571756573742064617461206578706563746564',
  startTlsCritical:
    '3030020101782b0a010c04000424637269746963616c20657874656e73696f6e206973206e6f74207265636f676e697a6564',
  searchCritical:
    '3030020101652b0a010c04000424637269746963616c20657874656e73696f6e206973206e6f74207265636f676e697a6564',
  startTlsOk: '300c02010178070a010004000400',
  searchDoneOk: '300c02010165070a010004000400',
  unknownRequestNotice:
    '303802010078330a010204000414756e6b6e6f776e204c44415020726571756573748a16312e332e362e312e342e312e313436362e3230303336',
  del13id3: '30280201036b230a010d0400041c544c5320636f6e666964656e7469616c697479207265717569726564',
  compare13id3:
    '30280201036f230a010d0400041c544c5320636f6e666964656e7469616c697479207265717569726564',
};
/** The StartTLS success response with responseName (our default), messageID 1. */
export const STARTTLS_OK_NAMED =
  `302402010178 1f 0a0100 0400 0400 8a16${Buffer.from(STARTTLS_OID).toString('hex')}`.replace(
    / /g,
    '',
  );
/** Notice of Disconnection, protocolError, "decoding error". */
export const DECODING_NOTICE = toHex(
  seq(
    int(0),
    tlv(0x78, int(2, 0x0a), str(''), str('decoding error'), str('1.3.6.1.4.1.1466.20036', 0x8a)),
  ),
);
