// Framing for binary protocols whose PDUs say how long they are: a length field (RFC 1006 TPKT,
// PostgreSQL, MySQL, DNS over TCP — RFC 1035 section 4.2.2) or a BER definite length
// (ITU-T X.690 section 8.1.3: LDAP, RFC 4511 section 5.1; Kerberos; SNMP).
//
// Theory of operation: a PDU's header says how long the whole PDU is, so the framer decides from
// the header alone — before buffering the rest — whether the PDU is acceptable: a length over
// `maxPduSize`, a length that cannot be, or a header the decoder refuses ends the framing with an
// `error` event (the stream cannot be resynchronised once a length is wrong). Nothing is kept
// beyond one PDU. The header is decoded once: while it is incomplete the decoder sees at most its
// bounded header octets again, and once the length is known the framer only counts octets. Every
// decision depends on the octets, never on how they were chunked; nothing a peer sends throws.
import { ByteQueue } from './bytes.js';

/** A decoded PDU header: how many octets the header has and how long the whole PDU is. */
export interface PduHeader {
  headerLength: number;
  /** The whole PDU in octets, header included. */
  pduLength: number;
}

/**
 * Decodes a PDU header from the octets at the start of a PDU (all pending octets, which may hold
 * more than one PDU): the header, `null` while more octets are needed, or `{ error }` when the
 * octets can never be a valid header. Must not throw, and must decide from a bounded prefix.
 */
export type PduHeaderDecoder = (buf: Uint8Array) => PduHeader | null | { error: string };

export interface PduFramerLimits {
  /** Largest PDU in octets, header included. */
  maxPduSize: number;
}

export type PduEvent =
  /** One complete PDU (a copy, header included); its contents start at `headerLength`. */
  | { type: 'pdu'; pdu: Uint8Array; headerLength: number }
  /**
   * The stream cannot be framed any further: `too-big` (the header announces more than
   * `maxPduSize`) or `malformed` (the decoder refused the header; `detail` says why). Nothing
   * more is framed; the dialect sends its protocol's error and closes.
   */
  | { type: 'error'; reason: 'too-big' | 'malformed'; detail: string };

export class PduFramer {
  private readonly input = new ByteQueue();
  /** The current PDU's header, once decoded. */
  private header: PduHeader | null = null;
  private failed = false;

  constructor(
    private readonly decode: PduHeaderDecoder,
    private readonly limits: PduFramerLimits,
  ) {}

  push(data: Uint8Array): void {
    if (this.failed) return;
    this.input.append(data);
  }

  /** Octets received but not framed yet (after StartTLS: the trailing data). */
  takeRest(): Uint8Array {
    this.header = null;
    return this.input.take();
  }

  /** Octets received and not framed yet. */
  get pending(): number {
    return this.input.length;
  }

  /** True once an `error` event was returned: nothing more will be framed. */
  get dead(): boolean {
    return this.failed;
  }

  /** The next PDU, an error, or null for "need more octets". */
  next(): PduEvent | null {
    if (this.failed) return null;
    if (this.header === null) {
      if (this.input.length === 0) return null;
      let decoded: ReturnType<PduHeaderDecoder>;
      try {
        decoded = this.decode(this.input.view());
      } catch (err) {
        // A decoder bug must not become a crash on peer input.
        decoded = {
          error: `header decoder threw: ${err instanceof Error ? err.message : String(err)}`,
        };
      }
      if (decoded === null) return null;
      if ('error' in decoded) return this.fail('malformed', decoded.error);
      const { headerLength, pduLength } = decoded;
      if (
        !Number.isSafeInteger(headerLength) ||
        !Number.isFinite(pduLength) ||
        headerLength < 1 ||
        pduLength < headerLength
      ) {
        return this.fail('malformed', `length ${pduLength} is shorter than the header`);
      }
      if (pduLength > this.limits.maxPduSize) {
        return this.fail('too-big', `${pduLength} octets, at most ${this.limits.maxPduSize}`);
      }
      this.header = decoded;
    }
    const { headerLength, pduLength } = this.header;
    if (this.input.length < pduLength) return null;
    const pdu = this.input.view().slice(0, pduLength);
    this.input.consume(pduLength);
    this.header = null;
    return { type: 'pdu', pdu, headerLength };
  }

  private fail(reason: 'too-big' | 'malformed', detail: string): PduEvent {
    this.failed = true;
    this.header = null;
    this.input.consume(this.input.length);
    return { type: 'error', reason, detail };
  }
}

export interface LengthPrefixOptions {
  /** Octets before the length field (a message type, TPKT's version and reserved octets). */
  offset?: number;
  /** Size of the length field in octets. */
  size: 1 | 2 | 3 | 4;
  /** Byte order of the length field; network order (big-endian) unless set. */
  littleEndian?: boolean;
  /** Octets of the whole header; `offset + size` unless more follow the length (MySQL's
   * sequence number: 4). */
  headerLength?: number;
  /**
   * What the length counts: `body` (the octets after the header; DNS over TCP, MySQL), `pdu`
   * (the whole PDU, header included; TPKT), or `field` (the length field itself and everything
   * after it; PostgreSQL).
   */
  counts?: 'body' | 'pdu' | 'field';
}

/** A header decoder for a fixed-position length field (use with `PduFramer`). */
export function lengthPrefixed(options: LengthPrefixOptions): PduHeaderDecoder {
  const offset = options.offset ?? 0;
  const { size } = options;
  const headerLength = options.headerLength ?? offset + size;
  const counts = options.counts ?? 'body';
  if (![1, 2, 3, 4].includes(size) || offset < 0 || headerLength < offset + size) {
    // The dialect's own mistake, found when it builds the decoder, never on peer input.
    throw new RangeError('lengthPrefixed: size 1-4, offset >= 0, headerLength >= offset + size');
  }
  return (buf) => {
    if (buf.length < headerLength) return null;
    let value = 0;
    for (let i = 0; i < size; i++) {
      const octet = buf[offset + (options.littleEndian ? size - 1 - i : i)]!;
      value = value * 256 + octet;
    }
    const pduLength =
      counts === 'body' ? headerLength + value : counts === 'pdu' ? value : offset + value;
    if (pduLength < headerLength) {
      return { error: `length ${value} is shorter than the ${headerLength}-octet header` };
    }
    return { headerLength, pduLength };
  };
}

export interface BerOptions {
  /** Identifier octets accepted as a PDU's first octet (LDAP: [0x30], a SEQUENCE); any if unset. */
  tags?: readonly number[];
  /** Most length octets in the long form (X.690 8.1.3.5); more is refused. Default 4. */
  maxLengthOctets?: number;
  /** Most identifier octets (high tag numbers, X.690 8.1.2.4). Default 4. */
  maxTagOctets?: number;
}

/**
 * A header decoder for BER with definite lengths only (X.690 section 8.1.3; RFC 4511 section
 * 5.1 forbids the indefinite form for LDAP): the identifier octets, then the short form (one
 * octet < 0x80) or the long form (0x81-0x84: that many length octets follow). The indefinite
 * form (0x80) and the reserved 0xff are refused.
 */
export function berDefiniteLength(options: BerOptions = {}): PduHeaderDecoder {
  const tags = options.tags === undefined ? null : new Set(options.tags);
  const maxLengthOctets = options.maxLengthOctets ?? 4;
  const maxTagOctets = options.maxTagOctets ?? 4;
  return (buf) => {
    if (buf.length < 1) return null;
    const first = buf[0]!;
    if (tags !== null && !tags.has(first)) {
      return { error: `identifier 0x${hex(first)} is not one of the expected tags` };
    }
    let at = 1;
    if ((first & 0x1f) === 0x1f) {
      // High tag number: base-128 octets, bit 8 set on all but the last.
      for (;;) {
        if (at >= buf.length) return null;
        const octet = buf[at++]!;
        if (at > maxTagOctets) return { error: `identifier longer than ${maxTagOctets} octets` };
        if ((octet & 0x80) === 0) break;
      }
    }
    if (at >= buf.length) return null;
    const lengthOctet = buf[at++]!;
    if (lengthOctet < 0x80) return { headerLength: at, pduLength: at + lengthOctet };
    if (lengthOctet === 0x80) return { error: 'indefinite length (only definite lengths)' };
    if (lengthOctet === 0xff) return { error: 'reserved length octet 0xff' };
    const n = lengthOctet & 0x7f;
    if (n > maxLengthOctets) return { error: `${n} length octets, at most ${maxLengthOctets}` };
    if (buf.length < at + n) return null;
    let value = 0;
    for (let i = 0; i < n; i++) value = value * 256 + buf[at + i]!;
    const headerLength = at + n;
    return { headerLength, pduLength: headerLength + value };
  };
}

function hex(octet: number): string {
  return octet.toString(16).padStart(2, '0');
}
