// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { pendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { newSession } from './helpers.js';

const SESSIONS = 200;
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

function pending(
  chunk: number,
  sessions = SESSIONS,
  bytes = PENDING,
): { perSession: number; ms: number } {
  const { perSession, ms, closed } = pendingCost(open, bytes, chunk, sessions);
  expect(closed).toBe(0); // still waiting for the rest
  return { perSession, ms };
}

describe('a pending PDU costs O(its length)', () => {
  it.each([1, 7, 100])('memory, %i octet(s) per read', (chunk) => {
    const { perSession } = pending(chunk);
    // The pending octets once (a doubling buffer: at most twice) plus a small constant.
    expect(perSession).toBeLessThan(2 * PENDING.length + 8192);
  });

  it('CPU: a 120,000-octet PDU, one octet per read', () => {
    const { ms } = pending(1, 2, LONG);
    // Linear: a few ms. Quadratic framing (a copy or re-scan of the pending octets per read)
    // takes seconds here.
    expect(ms).toBeLessThan(1000);
  });
});
