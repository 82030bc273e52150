// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import {
  type DialectSession,
  resolveLimits,
  resolveOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { collectGarbage, describePendingCost, memoryUsed } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { dialect, type ImapOptions } from '../src/index.js';
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

// The whole proxy aims at 4 KiB or less per idle preamble connection. The dialect's part: after
// the greeting, and between commands, a session holds its counters and a config shared with the
// listener's other sessions; no framer, no buffer, no copy of options until octets arrive.
describe('an idle session is small', () => {
  // As the engine does: one resolved options and limits object for all of a listener's sessions.
  const context: SessionContext<Partial<ImapOptions>> = {
    options: resolveOptions(dialect, {}),
    limits: resolveLimits(dialect, {}),
    hostname: 'mail.example',
    connectionId: 't1',
  };
  const SESSIONS = 5000;
  /** Heap and array buffers per session, after a full GC, with `SESSIONS` kept alive. */
  function idleCost(prepare: (s: DialectSession) => void): number {
    prepare(dialect.create(context)); // the shared config is made before the baseline
    collectGarbage();
    const before = memoryUsed();
    const kept: DialectSession[] = [];
    for (let i = 0; i < SESSIONS; i++) {
      const s = dialect.create(context);
      prepare(s);
      kept.push(s);
    }
    collectGarbage();
    const perSession = (memoryUsed() - before) / kept.length;
    if (kept.length !== SESSIONS) throw new Error('unreachable');
    return perSession;
  }
  // Was ~1,150 octets after the greeting (a framer with two empty buffers, and a config
  // object per session); now ~110.
  const BOUND = 400;

  it('after the greeting', () => {
    expect(idleCost((s) => s.start(0))).toBeLessThan(BOUND);
  });

  it('between commands (after CAPABILITY and NOOP answered)', () => {
    const cost = idleCost((s) => {
      s.start(0);
      s.receive(enc('a1 CAPABILITY\r\n'), 0);
      s.receive(enc('a2 NOOP\r\na3 ID NIL\r\n'), 0);
    });
    expect(cost).toBeLessThan(BOUND);
  });
});

// The framer reads a received buffer where it lies; once receive() returns, the session keeps
// only the octets it has not framed, copied, never the engine's (possibly large) buffer.
describe('a session does not keep a received buffer', () => {
  /** A full GC once freed array buffers have been swept (they leave the count a turn later). */
  async function settle(): Promise<void> {
    for (let i = 0; i < 3; i++) {
      collectGarbage();
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    collectGarbage();
  }

  it('a large read of complete commands and a partial one: only the partial one is kept', async () => {
    const read = enc(`${'a NOOP\r\n'.repeat(50_000)}b NO`);
    const open = (): DialectSession => {
      const s = newSession({}, { maxCommands: 100_000 });
      s.start(0);
      const actions = s.receive(read.slice(), 0);
      expect(actions.some((a) => a.type === 'close')).toBe(false);
      return s;
    };
    open(); // warm up: compiled code is not the sessions' cost
    await settle();
    const before = memoryUsed();
    const sessions = Array.from({ length: 10 }, open);
    await settle();
    const perSession = (memoryUsed() - before) / sessions.length;
    // Each read is 400,004 octets; the partial line costs a 256-octet buffer.
    expect(perSession).toBeLessThan(65_536);
  });
});
