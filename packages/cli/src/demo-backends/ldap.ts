// Demo LDAP backend (RFC 4511, the part after StartTLS only), after the tiny backend of
// protocols/ldap/test/ldap.interop.test.ts, with its own few lines of BER: Bind → success (any
// DN and password; the diagnosticMessage carries the hand-off info), Search → one entry (its
// `description` is the hand-off info), Unbind → close, anything else → unwillingToPerform.
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, type Serve } from './common.js';

const MAX_PDU = 1 << 20;

/** A BER TLV with a definite length. */
export function tlv(tag: number, ...contents: (Uint8Array | string)[]): Buffer {
  const body = Buffer.concat(contents.map((c) => (typeof c === 'string' ? Buffer.from(c) : c)));
  const n = body.length;
  const len =
    n < 0x80
      ? [n]
      : n < 0x100
        ? [0x81, n]
        : n < 0x10000
          ? [0x82, n >> 8, n & 0xff]
          : [0x83, n >> 16, (n >> 8) & 0xff, n & 0xff];
  return Buffer.concat([Buffer.from([tag, ...len]), body]);
}
export const int = (n: number, tag = 0x02): Buffer => {
  const bytes: number[] = [];
  do {
    bytes.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  if (bytes[0]! & 0x80) bytes.unshift(0);
  return tlv(tag, Uint8Array.from(bytes));
};
const str = (s: string, tag = 0x04) => tlv(tag, s);
const seq = (...c: Uint8Array[]) => tlv(0x30, ...c);

/** Header of the TLV at `off`: tag, start of contents, end; null when incomplete. */
function header(b: Buffer, off: number): { tag: number; start: number; end: number } | null {
  if (b.length < off + 2) return null;
  const tag = b[off]!;
  let len = b[off + 1]!;
  let start = off + 2;
  if (len & 0x80) {
    const k = len & 0x7f;
    if (k === 0 || k > 4) throw new Error('unsupported BER length');
    if (b.length < start + k) return null;
    len = 0;
    for (let i = 0; i < k; i++) len = len * 256 + b[start + i]!;
    start += k;
  }
  return { tag, start, end: start + len };
}

/** LDAPResult as [APPLICATION n]. */
const result = (id: number, tag: number, code: number, message: string) =>
  seq(int(id), tlv(tag, int(code, 0x0a), str(''), str(message)));

export const ldapRequests = {
  simpleBind: (id: number, dn: string, password: string) =>
    seq(int(id), tlv(0x60, int(3), str(dn), str(password, 0x80))),
  /** Whole-subtree search for (objectClass=*). */
  search: (id: number, base: string) =>
    seq(
      int(id),
      tlv(
        0x63,
        str(base),
        int(2, 0x0a),
        int(0, 0x0a),
        int(0),
        int(0),
        tlv(0x01, Uint8Array.of(0)),
        str('objectClass', 0x87),
        seq(),
      ),
    ),
  unbind: (id: number) => seq(int(id), Uint8Array.of(0x42, 0x00)),
};

/** protocolOp tags of requests that get a response, to their response tag. */
const RESPONSE_OF: Record<number, number> = {
  102: 0x67, // modify
  104: 0x69, // add
  74: 0x6b, // delete
  108: 0x6d, // modify DN
  110: 0x6f, // compare
  119: 0x78, // extended
};

export const serveLdap: Serve = (socket: net.Socket, info: HandoffInfo) => {
  let buf = Buffer.alloc(0);
  let bound = '';
  const handle = (pdu: Buffer) => {
    const msg = header(pdu, 0);
    const idh = msg && header(pdu, msg.start);
    if (msg?.tag !== 0x30 || !idh || idh.tag !== 0x02) throw new Error('not an LDAPMessage');
    const id = pdu.subarray(idh.start, idh.end).reduce((n, b) => n * 256 + b, 0);
    const op = header(pdu, idh.end);
    if (!op) throw new Error('no protocolOp');
    if (op.tag === 0x60) {
      const version = header(pdu, op.start);
      const dn = version && header(pdu, version.end);
      bound = dn ? pdu.subarray(dn.start, dn.end).toString('utf8') : '';
      socket.write(result(id, 0x61, 0, `tlsproxy hand-off: ${handoffSummary(info)}`));
    } else if (op.tag === 0x63) {
      const attrs: [string, string[]][] = [
        ['objectClass', ['top', 'person']],
        ['cn', ['Alice Example']],
        ['sn', ['Example']],
        ['description', [`tlsproxy hand-off: ${handoffSummary(info)}`, `bound as "${bound}"`]],
      ];
      const entry = tlv(
        0x64,
        str('cn=Alice Example,dc=example,dc=test'),
        seq(...attrs.map(([t, vs]) => seq(str(t), tlv(0x31, ...vs.map((v) => str(v)))))),
      );
      socket.write(seq(int(id), entry));
      socket.write(result(id, 0x65, 0, ''));
    } else if (op.tag === 0x42) {
      socket.end();
    } else if (RESPONSE_OF[op.tag] !== undefined) {
      socket.write(result(id, RESPONSE_OF[op.tag]!, 53, 'this demo answers Bind and Search only'));
    }
    // abandon (0x50) and anything unknown: no response
  };
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    try {
      for (
        let h = header(buf, 0);
        h && buf.length >= h.end && socket.writable;
        h = header(buf, 0)
      ) {
        if (h.end > MAX_PDU) throw new Error('PDU too large');
        const pdu = buf.subarray(0, h.end);
        buf = buf.subarray(h.end);
        handle(pdu);
      }
      if (buf.length > MAX_PDU) throw new Error('PDU too large');
    } catch {
      socket.destroy();
    }
  });
};
