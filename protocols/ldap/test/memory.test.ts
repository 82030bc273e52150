// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { describePendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, it } from 'vitest';
import { newSession } from './helpers.js';

/** The first octets of one LDAPMessage announcing `size` octets of contents (long form). */
function announce(size: number, sent: number): Uint8Array {
  const out = new Uint8Array(5 + sent);
  out.set([0x30, 0x83, size >> 16, (size >> 8) & 0xff, size & 0xff]);
  out.fill(0x04, 5);
  return out;
}
/** An 8,000-octet PDU announced, all but its last octet sent. */
const PENDING = announce(8000, 7999);
/** A 120,000-octet PDU (over the engine's 64 KiB cap, but the framer's cost must not depend on it), all but its last octet sent. */
const LONG = announce(120_000, 119_999);

function open(): DialectSession {
  const s = newSession();
  s.start(0);
  return s;
}

describePendingCost({ describe, it }, { what: 'PDU', open, pending: PENDING, long: LONG });
