// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { describePendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, it } from 'vitest';
import { enc, newSession } from './helpers.js';

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

describePendingCost({ describe, it }, { what: 'command line', open, pending: PENDING, long: LONG });
