// ITU-T X.690 section 8.1 (BER: identifier, length and contents octets) as restricted by
// RFC 4511 section 5.1: definite lengths only, OCTET STRINGs primitive only. The framer cuts
// the client's byte stream into LDAPMessage PDUs; parse() turns one PDU into a tree of TLVs.
//
// Theory of operation: a PDU's header (tag 0x30 and its length) says how long it is, so the
// framer decides "malformed" from the header alone — a tag other than SEQUENCE, the indefinite
// form 0x80, more than 4 length octets, or a length over maxPduSize — before buffering the
// contents. Nothing is kept beyond maxPduSize + 6 octets. parse() walks the contents with a
// depth limit; every constructed element must be filled exactly by its children. Every decision
// depends only on the octets, never on how they were chunked (see the split-anywhere tests).
//
// Why not a library: @ldapjs/asn1 (the decommissioned ldapjs project) rejects indefinite
// lengths but has no size or depth limit and no streaming framer; asn1js accepts the indefinite
// form. The framer must be written anyway to bound buffering, and after it decoding an LDAP
// request is a handful of tag checks, so the few reply encoders below stay hand-written too.
import { ByteQueue, TlsproxyError } from '@tlsproxy/dialect-kit';

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  OCTET_STRING: 0x04,
  ENUMERATED: 0x0a,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One BER element. `tag` is the identifier octet (class, constructed bit, number < 31). */
export interface Tlv {
  tag: number;
  /** Contents octets (also set for constructed elements). */
  value: Uint8Array;
  /** Children of a constructed element, in order; empty for primitive ones. */
  children: Tlv[];
}

export const isConstructed = (tag: number): boolean => (tag & 0x20) !== 0;

/**
 * Octets that are not valid BER (or not an LDAPMessage): the session answers with a Notice of
 * Disconnection, so this error carries no reply of its own. Branded like every tlsproxy error.
 */
export class BerError extends TlsproxyError<'TLSPROXY_ERR_LDAP_MALFORMED'> {
  constructor(message: string) {
    super('TLSPROXY_ERR_LDAP_MALFORMED', message);
    this.name = 'BerError';
  }
}

export interface FramerLimits {
  /** Largest LDAPMessage contents in octets. */
  maxPduSize: number;
}

export type FrameEvent =
  | { type: 'pdu'; pdu: Uint8Array }
  /** The stream cannot be framed any further; `reason` says why. */
  | { type: 'malformed'; reason: string };

export class Framer {
  /** Octets received, not framed yet: a pending PDU is kept once (issue 14: joining it with
   * every read copied it again each time, O(n²) for a PDU sent one octet at a time). */
  private readonly input = new ByteQueue();
  private dead = false;

  constructor(private readonly limits: FramerLimits) {}

  push(data: Uint8Array): void {
    if (this.dead) return;
    this.input.append(data);
  }

  /** Octets received but not framed yet (after StartTLS: the trailing data). */
  takeRest(): Uint8Array {
    return this.input.take();
  }

  /** The next complete PDU, a malformed verdict, or null for "need more octets". */
  next(): FrameEvent | null {
    if (this.dead) return null;
    const buf = this.input.view();
    if (buf.length === 0) return null;
    const tag = buf[0]!;
    if (tag !== TAG.SEQUENCE) {
      return this.die(`LDAPMessage must start with SEQUENCE (0x30), got 0x${hex(tag)}`);
    }
    const header = readLength(buf, 1, buf.length);
    if (header === null) return null;
    if ('error' in header) return this.die(header.error);
    if (header.length > this.limits.maxPduSize) {
      return this.die(`PDU of ${header.length} octets is over the ${this.limits.maxPduSize} limit`);
    }
    const end = header.next + header.length;
    if (end > buf.length) return null;
    const pdu = buf.slice(0, end);
    this.input.consume(end);
    return { type: 'pdu', pdu };
  }

  private die(reason: string): FrameEvent {
    this.dead = true;
    this.input.take();
    return { type: 'malformed', reason };
  }
}

type Length = { length: number; next: number } | { error: string };

/** Length octets at `at` (X.690 8.1.3); null if they are not all there yet. */
function readLength(buf: Uint8Array, at: number, end: number): Length | null {
  if (at >= end) return null;
  const first = buf[at]!;
  if (first < 0x80) return { length: first, next: at + 1 };
  if (first === 0x80) return { error: 'indefinite length (0x80) is not allowed in LDAP' };
  const count = first & 0x7f;
  // 0xff is reserved (X.690 8.1.3.5 c); more than 4 octets cannot be a length we accept.
  if (count > 4) return { error: `length with ${count} octets` };
  if (at + 1 + count > end) return null;
  let length = 0;
  for (let i = 1; i <= count; i++) length = length * 256 + buf[at + i]!;
  return { length, next: at + 1 + count };
}

/** Parse one complete PDU (as the framer returned it) into a tree; throws BerError. */
export function parse(pdu: Uint8Array, maxDepth: number): Tlv {
  const [tlv, next] = readTlv(pdu, 0, pdu.length, 1, maxDepth);
  if (next !== pdu.length) throw new BerError('octets after the LDAPMessage');
  return tlv;
}

function readTlv(
  buf: Uint8Array,
  at: number,
  end: number,
  depth: number,
  maxDepth: number,
): [Tlv, number] {
  if (depth > maxDepth) throw new BerError(`nesting deeper than ${maxDepth}`);
  if (at >= end) throw new BerError('element expected');
  const tag = buf[at]!;
  // High tag numbers (X.690 8.1.2.4) never occur in LDAP (RFC 4511 Appendix B).
  if ((tag & 0x1f) === 0x1f) throw new BerError('high tag number form');
  const header = readLength(buf, at + 1, end);
  if (header === null) throw new BerError('truncated length');
  if ('error' in header) throw new BerError(header.error);
  const stop = header.next + header.length;
  if (stop > end) throw new BerError('length runs past the enclosing element');
  const value = buf.subarray(header.next, stop);
  const children: Tlv[] = [];
  if (isConstructed(tag)) {
    for (let p = header.next; p < stop; ) {
      const [child, next] = readTlv(buf, p, stop, depth + 1, maxDepth);
      children.push(child);
      p = next;
    }
  }
  return [{ tag, value, children }, stop];
}

export function hex(n: number): string {
  return n.toString(16).padStart(2, '0');
}

// --- decoding primitives (RFC 4511 section 5.1) -------------------------------------------

export function expectTag(tlv: Tlv | undefined, tag: number, what: string): Tlv {
  if (tlv === undefined) throw new BerError(`${what} missing`);
  if (tlv.tag !== tag)
    throw new BerError(`${what}: expected tag 0x${hex(tag)}, got 0x${hex(tlv.tag)}`);
  return tlv;
}

/** A non-negative INTEGER or ENUMERATED up to 2^31 - 1 (maxInt, RFC 4511 section 4.1.1). */
export function readInt(tlv: Tlv, what: string): number {
  const v = tlv.value;
  if (v.length === 0 || v.length > 5) throw new BerError(`${what}: bad integer length`);
  if ((v[0]! & 0x80) !== 0) throw new BerError(`${what}: negative`);
  let n = 0;
  for (const b of v) n = n * 256 + b;
  if (n > 0x7fffffff) throw new BerError(`${what}: over maxInt`);
  return n;
}

export function readBoolean(tlv: Tlv, what: string): boolean {
  if (tlv.value.length !== 1) throw new BerError(`${what}: BOOLEAN must be one octet`);
  return tlv.value[0] !== 0;
}

const utf8 = new TextDecoder('utf-8', { fatal: false });
export const text = (tlv: Tlv): string => utf8.decode(tlv.value);

// --- encoding ----------------------------------------------------------------------------

const encoder = new TextEncoder();

export function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  let size = 0;
  for (const c of contents) size += c.length;
  const len =
    size < 0x80
      ? [size]
      : size < 0x100
        ? [0x81, size]
        : size < 0x10000
          ? [0x82, size >> 8, size & 0xff]
          : [0x84, (size >>> 24) & 0xff, (size >> 16) & 0xff, (size >> 8) & 0xff, size & 0xff];
  const out = new Uint8Array(1 + len.length + size);
  out[0] = tag;
  out.set(len, 1);
  let at = 1 + len.length;
  for (const c of contents) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Minimal two's-complement contents of a non-negative integer. */
function intBytes(n: number): Uint8Array {
  const out: number[] = [];
  do {
    out.unshift(n & 0xff);
    n = Math.floor(n / 256);
  } while (n > 0);
  if (out[0]! & 0x80) out.unshift(0);
  return Uint8Array.from(out);
}

export const int = (n: number, tag: number = TAG.INTEGER): Uint8Array => tlv(tag, intBytes(n));
export const enumerated = (n: number): Uint8Array => tlv(TAG.ENUMERATED, intBytes(n));
export const str = (s: string | Uint8Array, tag: number = TAG.OCTET_STRING): Uint8Array =>
  tlv(tag, typeof s === 'string' ? encoder.encode(s) : s);
export const seq = (...items: Uint8Array[]): Uint8Array => tlv(TAG.SEQUENCE, ...items);
export const set = (...items: Uint8Array[]): Uint8Array => tlv(TAG.SET, ...items);
