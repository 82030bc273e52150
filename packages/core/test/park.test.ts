// Idle preamble connections are parked (their descriptor leaves Node's Socket for a readability
// watch) and resumed when the client speaks, a timer fires or the proxy shuts down: every path
// out of the parked state, with the descriptors counted.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PARK_AFTER_MS } from '../src/session.js';
import { type Events, fdCount, LineClient, sleep, startBackend, startProxy } from './helpers.js';

let backend: Awaited<ReturnType<typeof startBackend>>;
beforeAll(async () => {
  backend = await startBackend();
});
afterAll(() => {
  backend?.child.kill();
});

/** Sweeps run four times a second: parked soon after PARK_AFTER_MS (slack for a loaded machine). */
const PARKED_WITHIN = PARK_AFTER_MS + 1500;

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(25);
  }
}

const count = (lines: string[], re: RegExp) => lines.filter((l) => re.test(l)).length;

/** Descriptors of this process once in-flight closes have landed (two equal readings). */
async function settled(): Promise<number> {
  let prev = fdCount();
  for (let i = 0; i < 40; i++) {
    await sleep(50);
    const n = fdCount();
    if (n === prev) return n;
    prev = n;
  }
  return prev;
}

describe('idle preamble connections are parked', () => {
  it('a parked client that speaks again gets its answers, STARTTLS and the hand-off', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`);
    try {
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      await until(() => count(logger.lines, /idle: parked/) === 1, PARKED_WITHIN, 'parked');
      c.write('a CAPABILITY\r\n');
      expect(await c.until(/^a OK/)).toMatch(/^\* CAPABILITY .*STARTTLS/m);
      expect(count(logger.lines, /resumed/)).toBe(1);
      // Parked again after another idle spell, then STARTTLS straight from the parked state.
      await until(() => count(logger.lines, /idle: parked/) === 2, PARKED_WITHIN, 'parked again');
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
      const c = new LineClient(port);
      await c.until(/^\* OK/);
      await until(() => count(logger.lines, /idle: parked/) === 1, PARKED_WITHIN, 'parked');
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
      const before = await settled();
      // 1. the client closes (FIN) while parked; 2. the client resets; 3. the dialect's idle timer.
      const fin = new LineClient(port);
      const rst = new LineClient(port);
      const idle = new LineClient(port);
      for (const c of [fin, rst, idle]) await c.until(/^\* OK/);
      await until(() => count(logger.lines, /idle: parked/) === 3, PARKED_WITHIN, 'all parked');
      const finClosed = new Promise((r) => fin.socket.once('close', r));
      fin.socket.end();
      await finClosed;
      rst.socket.resetAndDestroy();
      expect(await idle.until(/^\* BYE/, 6000)).toMatch(/inactivity/i);
      await until(() => proxy.activeSessions === 0, 5000, 'sessions gone');
      expect(await settled()).toBe(before);
      expect(count(logger.lines, /connection ended/)).toBe(3);
    } finally {
      await proxy.close();
    }
  }, 20_000);

  it('the preamble deadline and shutdown end parked connections', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      preambleTimeoutMs: PARK_AFTER_MS + 2500,
    });
    const before = await settled();
    const a = new LineClient(port);
    await a.until(/^\* OK/);
    const aClosed = new Promise((r) => a.socket.once('close', r));
    await until(() => count(logger.lines, /idle: parked/) === 1, PARKED_WITHIN, 'parked');
    await aClosed;
    expect(logger.lines.some((l) => /preamble took too long/.test(l))).toBe(true);
    expect(await settled()).toBe(before);
    const b = new LineClient(port);
    await b.until(/^\* OK/);
    await until(() => count(logger.lines, /idle: parked/) === 2, PARKED_WITHIN, 'parked');
    const bClosed = new Promise((r) => b.socket.once('close', r));
    await proxy.close();
    await bClosed;
    expect(count(logger.lines, /"outcome":"shutdown"/)).toBe(1);
    expect(proxy.activeSessions).toBe(0);
  }, 20_000);

  it('the limits count a parked connection: a second one from the address is refused', async () => {
    const { proxy, port, logger } = await startProxy(`unix:${backend.path}`, {
      maxConnectionsPerAddress: 1,
    });
    try {
      const a = new LineClient(port);
      await a.until(/^\* OK/);
      await until(() => count(logger.lines, /idle: parked/) === 1, PARKED_WITHIN, 'parked');
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
