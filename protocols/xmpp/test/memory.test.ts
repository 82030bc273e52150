// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { pendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { enc, newSession } from './helpers.js';

const SESSIONS = 200;
const LIMIT = 10_000; // maxStanzaSize
const HEADER =
  "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' " +
  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
/** A start tag whose attribute value has not ended: limit - 1 octets, no '>' yet. */
const PENDING = enc(`<iq id='${'x'.repeat(LIMIT - 1 - 8)}`);
/** With the limit raised, a 120,000-octet attribute value. */
const LONG = enc(`<iq id='${'x'.repeat(120_000)}`);

function open(): DialectSession {
  const s = newSession({}, { maxStanzaSize: 200_000 });
  s.start(0);
  s.receive(enc(HEADER), 0);
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

describe('a pending stanza costs O(its length)', () => {
  it.each([1, 7, 100])('memory, %i octet(s) per read', (chunk) => {
    const { perSession } = pending(chunk);
    // The pending octets once (a doubling buffer: at most twice) plus a small constant.
    expect(perSession).toBeLessThan(2 * PENDING.length + 8192);
  });

  it('CPU: a 120,000-octet start tag, one octet per read', () => {
    const { ms } = pending(1, 2, LONG);
    // Linear: a few ms. Quadratic framing (a copy or re-scan of the pending octets per read)
    // takes seconds here.
    expect(ms).toBeLessThan(1000);
  });
});
