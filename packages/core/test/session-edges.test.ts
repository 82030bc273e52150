// Issue 14: the pre-TLS byte cap answers with the dialect's own error before closing; the
// "dialect state too large" path drops what the client pipelined after STARTTLS, as every other
// temporary-failure path does, instead of interpreting it as the next command. Replies a client
// leaves unread do not pile up past MAX_PREAMBLE_OUTPUT: the client is not read meanwhile.
import { spawn } from 'node:child_process';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { Action, Dialect } from '../src/index.js';
import { MAX_PREAMBLE_OUTPUT } from '../src/session.js';
import { LineClient, startProxy, until } from './helpers.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = new TextDecoder();

/** A line dialect for these tests: echoes `SEEN <line>` for each line; STARTTLS with a state of
 * the given size, after holding the event loop for `stallMs` (so later bytes queue in the kernel). */
function lineDialect(stateBytes: number, stallMs = 0): Dialect {
  return {
    name: 'testline',
    defaultPorts: {},
    options: {},
    limits: {},
    create() {
      let buf = '';
      return {
        start: () => [{ type: 'send', data: enc('HELLO\r\n') }],
        receive(data) {
          buf += dec.decode(data);
          const out: Action[] = [];
          for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (line === 'STARTTLS') {
              const until = Date.now() + stallMs;
              while (Date.now() < until) {}
              const trailing = enc(buf);
              buf = '';
              out.push({
                type: 'starttls',
                goAhead: enc('GO\r\n'),
                unavailable: enc('LATER\r\n'),
                state: { big: 'x'.repeat(stateBytes) },
                trailing,
              });
              return out;
            }
            out.push({ type: 'send', data: enc(`SEEN ${line}\r\n`) });
          }
          return out;
        },
        timer: () => [],
        tlsUnavailable: () => [],
        overflow: () => enc('TOO MUCH\r\n'),
      };
    },
  };
}

/** Answers every line with `replyBytes` (an amplifying dialect, as a careless plugin could be);
 * `seen` counts the lines it was given. */
function amplifier(replyBytes: number, seen: { lines: number }): Dialect {
  const reply = new Uint8Array(replyBytes).fill(0x2e);
  return {
    name: 'amplifier',
    defaultPorts: {},
    options: {},
    limits: {},
    create: () => ({
      start: () => [{ type: 'send', data: enc('HELLO\r\n') }],
      receive(data) {
        const out: Action[] = [];
        for (const b of data)
          if (b === 0x0a) {
            seen.lines++;
            out.push({ type: 'send', data: reply });
          }
        return out;
      },
      timer: () => [],
      tlsUnavailable: () => [],
    }),
  };
}

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

describe('session edges', () => {
  it('past maxPreambleBytes the dialect’s own error is sent before the close', async () => {
    const { proxy, port } = await startProxy('unix:/nonexistent.sock', {
      dialect: lineDialect(10),
      maxPreambleBytes: 100,
    });
    stop = () => proxy.close();
    const c = new LineClient(port);
    await c.until(/^HELLO/);
    c.write('x'.repeat(200));
    expect(await c.until(/^TOO MUCH/)).toMatch(/TOO MUCH/);
    await new Promise((r) => c.socket.once('close', r));
  });

  it('dialect state too large: bytes pipelined after STARTTLS are dropped, never interpreted', async () => {
    const { proxy, port, logger } = await startProxy('unix:/nonexistent.sock', {
      dialect: lineDialect(20_000, 400),
    });
    stop = () => proxy.close();
    // The client is another process, so it can write while the proxy is busy with the STARTTLS:
    // INJECTED then waits in the kernel, behind the command, as pipelined bytes do.
    const script = `
      const s = require('node:net').connect(${port}, '127.0.0.1');
      let all = '';
      s.setEncoding('latin1');
      s.on('data', (d) => {
        all += d;
        if (all.includes('HELLO') && !s.sent) { s.sent = 1; s.write('STARTTLS\\r\\n'); setTimeout(() => s.write('INJECTED\\r\\n'), 150); }
        if (all.includes('LATER') && !s.after) { s.after = 1; s.write('AFTER\\r\\n'); }
        if (all.includes('SEEN AFTER')) { process.stdout.write(all); process.exit(0); }
      });
      setTimeout(() => { process.stdout.write(all); process.exit(1); }, 3000);
    `;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('latin1');
    child.stdout.on('data', (d: string) => {
      out += d;
    });
    await new Promise((r) => child.once('exit', r));
    expect(out).toContain('LATER');
    expect(out).toContain('SEEN AFTER');
    expect(out).not.toContain('INJECTED');
    expect(logger.lines.some((l) => l.includes('dialect state too large'))).toBe(true);
    expect(logger.lines.some((l) => l.includes('never interpreted'))).toBe(true);
  });

  it('a client that never reads its replies is not read either once they pile up', async () => {
    const seen = { lines: 0 };
    const { proxy, port, logger } = await startProxy('unix:/nonexistent.sock', {
      dialect: amplifier(1 << 20, seen),
    });
    stop = () => proxy.close();
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    // Never read: 1 MiB answers each line, the kernel's buffers fill after a few.
    s.pause();
    const lines = 60;
    for (let i = 0; i < lines; i++) {
      s.write('x\r\n');
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 200));
    // Without the pause the proxy would hold ~60 MiB of replies and the dialect see every line.
    expect(seen.lines).toBeLessThan(30);
    expect(logger.lines.some((l) => l.includes('reading paused'))).toBe(true);
    expect(MAX_PREAMBLE_OUTPUT).toBeLessThan(1 << 20);
    // Reading again, the replies flow and the rest of the lines are answered: nothing is lost.
    let got = 0;
    s.on('data', (d: Buffer) => {
      got += d.length;
    });
    s.resume();
    await until(() => got >= 'HELLO\r\n'.length + lines * (1 << 20), 20_000, 'every reply');
    expect(seen.lines).toBe(lines);
    s.destroy();
  }, 30_000);
});
