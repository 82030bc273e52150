// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { newSession } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** The V8 heap plus ArrayBuffer backing stores, which live outside it. */
function used(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

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
  gc();
  const before = used();
  const kept: DialectSession[] = [];
  const t0 = performance.now();
  for (let i = 0; i < sessions; i++) {
    const s = open();
    let closed = false;
    for (let at = 0; at < bytes.length; at += chunk) {
      for (const a of s.receive(bytes.subarray(at, at + chunk), 0)) closed ||= a.type === 'close';
    }
    expect(closed).toBe(false); // still waiting for the rest
    kept.push(s);
  }
  const ms = performance.now() - t0;
  gc();
  const perSession = (used() - before) / sessions;
  expect(kept).toHaveLength(sessions); // alive through the measurement
  return { perSession, ms: ms / sessions };
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
