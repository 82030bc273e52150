// Issue 14: memory and CPU per pending connection must be O(line), with a small constant.
// An unfinished request line (no CRLF yet) used to go octet by octet into an incremental
// nearley parser, which keeps every partial parse: ~1.85 MB and ~25 ms per 8,000-octet line.
// The framer now finds the line end by scanning octets and parses each complete line once.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { collectGarbage, memoryUsed } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { enc, newSession } from './helpers.js';

const SESSIONS = 200;
const LIMIT = 8192;

function retained(fill: (s: DialectSession) => void): { bytes: number; ms: number } {
  collectGarbage();
  const before = memoryUsed();
  const sessions: DialectSession[] = [];
  const t0 = performance.now();
  for (let i = 0; i < SESSIONS; i++) {
    const s = newSession();
    s.start(0);
    fill(s);
    sessions.push(s);
  }
  const ms = performance.now() - t0;
  collectGarbage();
  const bytes = memoryUsed() - before;
  expect(sessions.length).toBe(SESSIONS); // keeps them alive through the measurement
  return { bytes, ms };
}

const line = `GET /${'a'.repeat(LIMIT - 1 - 5)}`; // limit - 1 octets, no CRLF
const bytes = enc(line);

describe('an unfinished request line costs O(line) memory and time', () => {
  it('one octet at a time', () => {
    const { bytes: heap, ms } = retained((s) => {
      let actions = 0;
      for (let i = 0; i < bytes.length; i++)
        actions += s.receive(bytes.subarray(i, i + 1), 0).length;
      expect(actions).toBe(0); // still waiting for the line end
    });
    // 200 sessions x 8 KiB of line is 1.6 MB; allow a small constant on top.
    expect(heap).toBeLessThan(5 * 1024 * 1024);
    expect(ms / SESSIONS).toBeLessThan(60); // was ~125 ms
  });

  it('in 100-octet chunks', () => {
    const { bytes: heap } = retained((s) => {
      for (let i = 0; i < bytes.length; i += 100) s.receive(bytes.subarray(i, i + 100), 0);
    });
    expect(heap).toBeLessThan(5 * 1024 * 1024);
  });

  it('a field line too', () => {
    const field = enc(`X-A: ${'b'.repeat(LIMIT - 1 - 5)}`);
    const { bytes: heap } = retained((s) => {
      s.receive(enc('OPTIONS * HTTP/1.1\r\n'), 0);
      for (let i = 0; i < field.length; i += 7) s.receive(field.subarray(i, i + 7), 0);
    });
    expect(heap).toBeLessThan(5 * 1024 * 1024);
  });
});
