// The switch-over's I/O side on loopback (src/transition.ts): bytes a client pipelines after
// STARTTLS while the proxy is still deciding are dropped at the go-ahead, from Node's buffer and
// from the kernel's, never reaching the TLS engine or the backend. The pure unit
// (switchover.test.ts) decides that; this checks it is carried out. Node reads ahead up to its
// high-water mark even after pause() (maybeReadMore), so small pipelined writes end up in Node's
// buffer; only a flood larger than that leaves bytes in the kernel — the second test. Checked
// by mutation: without the kernel discard the second test fails (read ECONNRESET: the plaintext
// reached the TLS engine ahead of the ClientHello).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HandoffTarget, type TlsProxy, UnixBackend } from '../src/index.js';
import {
  type Events,
  LineClient,
  quietLogger,
  sleep,
  startBackend,
  startProxy,
} from './helpers.js';

let backend: { child: { kill(): void }; path: string; events: Events };
let inner: UnixBackend;
let proxy: TlsProxy;
let port: number;
let logLines: string[];

/** The example backend behind an available() that takes 300 ms: the window in which the
 * client's pipelined bytes land in the kernel's buffer. */
function slow(b: UnixBackend): HandoffTarget {
  return {
    description: b.description,
    available: async () => {
      await sleep(300);
      return b.available();
    },
    checkServerName: (name, info) => b.checkServerName(name, info),
    wantsServerNameCheck: () => b.wantsServerNameCheck?.() ?? false,
    deliver: (fd, info, buffered) => b.deliver(fd, info, buffered),
    forget: (key) => b.forget?.(key),
    close: () => b.close(),
  };
}

beforeAll(async () => {
  backend = await startBackend();
  inner = new UnixBackend(`unix:${backend.path}`, { logger: quietLogger() });
  const p = await startProxy('unused', { backend: slow(inner) });
  proxy = p.proxy;
  port = p.port;
  logLines = p.logger.lines;
});
afterAll(async () => {
  await proxy?.close();
  inner?.close();
  backend?.child.kill();
});

describe('STARTTLS switch-over on loopback', () => {
  it('drops bytes pipelined while the backend check runs: the TLS handshake and the backend never see them', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    // The backend check takes 300 ms; these bytes arrive in the meantime.
    await sleep(100);
    c.write('b LOGIN mallory x\r\n');
    expect(await c.until(/^a OK/)).not.toMatch(/^b /m);
    const t = await c.startTls();
    t.socket.write('c NOOP\r\n');
    await t.until(/c OK/);
    const conn = await backend.events.next((e) => e.event === 'connection');
    const id = (conn.info as Record<string, unknown>).connectionId;
    const cmds = backend.events.all
      .filter((e) => e.event === 'command' && e.connectionId === id)
      .map((e) => e.tag);
    expect(cmds).toEqual(['c']);
    expect(
      logLines.some((l) => l.includes('discarded bytes sent after STARTTLS') && l.includes('19')),
    ).toBe(true);
    t.socket.destroy();
  });

  it('drops more than Node buffers (the rest waits in the kernel) at the go-ahead', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    c.write('a STARTTLS\r\n');
    await sleep(100);
    // Past Node's read-ahead (16 KiB): most of this stays in the kernel until the go-ahead.
    const flood = `b APPEND x {5}\r\n${'y'.repeat(200 * 1024)}\r\n`;
    c.write(flood);
    await c.until(/^a OK/);
    const t = await c.startTls();
    t.socket.write('c NOOP\r\n');
    await t.until(/c OK/);
    expect(
      logLines.some(
        (l) => /discarded bytes sent after STARTTLS/.test(l) && /"bytes":\d{5,}/.test(l),
      ),
    ).toBe(true);
    t.socket.destroy();
  });
});
