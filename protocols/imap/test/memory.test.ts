// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { describePendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { enc, newSession } from './helpers.js';

const LIMIT = 8192; // maxLineLength
/** A command line of limit - 1 octets, no line end yet. */
const PENDING = enc(`a NOOP ${'x'.repeat(LIMIT - 1 - 7)}`);
/** With the limits raised, a 120,000-octet line. */
const LONG = enc(`a NOOP ${'x'.repeat(120_000)}`);

function open(): DialectSession {
  const s = newSession({}, { maxLineLength: 200_000, maxCommandSize: 200_000 });
  s.start(0);
  return s;
}

describePendingCost({ describe, it }, { what: 'command line', open, pending: PENDING, long: LONG });

describe('a command with many literal parts costs O(its length)', () => {
  it('2,000 synchronizing {0} parts: linear, not a parse of the whole command per part', () => {
    const s = newSession({}, { maxCommandSize: 65_536 });
    s.start(0);
    const t0 = performance.now();
    let continuations = 0;
    const count = (actions: { type: string; data?: Uint8Array }[]) => {
      for (const a of actions) if (a.type === 'send' && a.data?.[0] === 0x2b) continuations++;
    };
    count(s.receive(enc('a ID ({0}\r\n'), 0));
    for (let i = 0; i < 2000; i++) count(s.receive(enc(' {0}\r\n'), 0));
    expect(continuations).toBe(2001);
    // Was seconds (nearley over the whole command text at every part).
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});
