// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { pendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { enc, newSession } from './helpers.js';

const SESSIONS = 200;
const LIMIT = 8192; // maxLineLength, raised from 255 so the cost per octet shows
/** A command line of limit - 1 octets, no line end yet. */
const PENDING = enc(`NOOP ${'x'.repeat(LIMIT - 1 - 5)}`);
/** With the limit raised, a 120,000-octet line. */
const LONG = enc(`NOOP ${'x'.repeat(120_000)}`);

function open(): DialectSession {
  const s = newSession({}, { maxLineLength: 200_000 });
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

describe('a pending command line costs O(its length)', () => {
  it.each([1, 7, 100])('memory, %i octet(s) per read', (chunk) => {
    const { perSession } = pending(chunk);
    // The pending octets once (a doubling buffer: at most twice) plus a small constant.
    expect(perSession).toBeLessThan(2 * PENDING.length + 8192);
  });

  it('CPU: a 120,000-octet line, one octet per read', () => {
    const { ms } = pending(1, 2, LONG);
    // Linear: a few ms. Quadratic framing (a copy or re-scan of the pending octets per read)
    // takes seconds here.
    expect(ms).toBeLessThan(1000);
  });
});
