// Idle preamble connections are parked (their descriptor leaves Node's Socket for a readability
// watch) and resumed when the client speaks, a timer fires or the proxy shuts down: every path
// out of the parked state, with the descriptors counted.
import { describe, expect, it } from 'vitest';
import { PARK_AFTER_MS } from '../src/session.js';
import {
  type Events,
  LineClient,
  parked,
  parkedClient,
  settledFdCount,
  sharedBackend,
  sleep,
  startProxy,
  until,
} from './helpers.js';

const backend = sharedBackend();

const count = (lines: string[], re: RegExp) => lines.filter((l) => re.test(l)).length;

describe('idle preamble connections are parked', () => {
  it('a parked client that speaks again gets its answers, STARTTLS and the hand-off', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`);
    try {
      const c = await parkedClient(port, logger);
      c.write('a CAPABILITY\r\n');
      expect(await c.until(/^a OK/)).toMatch(/^\* CAPABILITY .*STARTTLS/m);
      expect(count(logger.lines, /resumed/)).toBe(1);
      // Parked again after another idle spell, then STARTTLS straight from the parked state.
      await parked(logger, 2);
      c.write('b STARTTLS\r\n');
      await c.until(/^b OK/);
      const t = await c.startTls();
      t.socket.write('c CAPABILITY\r\n');
      expect(await t.until(/c OK/)).toMatch(/CAPABILITY/);
      await (backend.events as Events).next((e) => e.event === 'connection');
      t.socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('bytes pipelined into a parked connection are all read, in order', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`);
    try {
      const c = await parkedClient(port, logger);
      c.write('a NOOP\r\nb NOOP\r\nc CAPABILITY\r\n');
      const out = await c.until(/^c OK/);
      expect(out.split('\r\n').filter((l) => /^[abc] OK/.test(l))).toEqual([
        expect.stringMatching(/^a OK/),
        expect.stringMatching(/^b OK/),
        expect.stringMatching(/^c OK/),
      ]);
      c.socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('every way out of the parked state releases the descriptor and the session', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      // The IMAP idle timer fires while parked: BYE on a resumed socket, then close.
      limits: { idleTimeoutMs: PARK_AFTER_MS + 2500 },
    });
    try {
      const before = await settledFdCount();
      // 1. the client closes (FIN) while parked; 2. the client resets; 3. the dialect's idle timer.
      const fin = new LineClient(port);
      const rst = new LineClient(port);
      const idle = new LineClient(port);
      for (const c of [fin, rst, idle]) await c.until(/^\* OK/);
      await parked(logger, 3);
      const finClosed = new Promise((r) => fin.socket.once('close', r));
      fin.socket.end();
      await finClosed;
      rst.socket.resetAndDestroy();
      expect(await idle.until(/^\* BYE/, 6000)).toMatch(/inactivity/i);
      await until(() => proxy.activeSessions === 0, 5000, 'sessions gone');
      expect(await settledFdCount()).toBe(before);
      expect(count(logger.lines, /connection ended/)).toBe(3);
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('the preamble deadline and shutdown end parked connections', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      preambleTimeoutMs: PARK_AFTER_MS + 2500,
    });
    const before = await settledFdCount();
    const a = await parkedClient(port, logger);
    await new Promise((r) => a.socket.once('close', r));
    expect(logger.lines.some((l) => /preamble took too long/.test(l))).toBe(true);
    expect(await settledFdCount()).toBe(before);
    const b = await parkedClient(port, logger, 2);
    const bClosed = new Promise((r) => b.socket.once('close', r));
    await proxy.close();
    await bClosed;
    expect(count(logger.lines, /"outcome":"shutdown"/)).toBe(1);
    expect(proxy.activeSessions).toBe(0);
  }, 20_000);

  it('a resumed connection keeps its preamble deadline (parked, it held no timer)', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      preambleTimeoutMs: PARK_AFTER_MS + 2500,
    });
    try {
      const c = await parkedClient(port, logger);
      const closed = new Promise((r) => c.socket.once('close', r));
      // Busy from now on (never idle long enough to be parked again): only the deadline armed
      // again at the wake-up can end it.
      const busy = setInterval(() => c.write('n NOOP\r\n'), 100);
      try {
        await Promise.race([
          closed,
          sleep(PARK_AFTER_MS + 6000).then(() => {
            throw new Error('still open past the preamble deadline');
          }),
        ]);
      } finally {
        clearInterval(busy);
      }
      expect(count(logger.lines, /resumed/)).toBe(1);
      expect(logger.lines.some((l) => /preamble took too long/.test(l))).toBe(true);
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('the limits count a parked connection: a second one from the address is refused', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      maxConnectionsPerAddress: 1,
    });
    try {
      const a = await parkedClient(port, logger);
      const b = new LineClient(port);
      expect(await b.until(/^\* BYE/)).toMatch(/Too many connections from your address/);
      a.write('a CAPABILITY\r\n');
      await a.until(/^a OK/);
      a.socket.destroy();
    } finally {
      await proxy.close();
    }
  }, 20_000);
});
