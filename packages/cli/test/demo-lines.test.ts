// Issue 14: `tlsproxy demo` kept every log line in memory for as long as it ran; a client
// looping on it grew the process without bound. It keeps the banner and the most recent lines.
import net from 'node:net';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type Demo, RecentLines, runDemo } from '../src/demo.js';

/** Connect to an IMAP port, read the greeting, LOGOUT, wait for the close. */
function visit(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.startsWith('* OK') && buf.endsWith('\r\n') && !buf.includes('BYE'))
        s.write('a LOGOUT\r\n');
    });
    s.on('error', reject);
    s.on('close', () => resolve());
  });
}

describe('demo log lines are bounded', () => {
  it('keeps the banner and the last keepLines lines, however much is logged', async () => {
    let demo: Demo | undefined;
    let base = 0;
    for (let attempt = 0; ; attempt++) {
      base = 20000 + Math.floor(Math.random() * 20000);
      try {
        demo = await runDemo({ portBase: base, log: () => {}, keepLines: 10 });
        break;
      } catch (err) {
        if (attempt >= 4 || !/already in use/.test((err as Error).message)) throw err;
      }
    }
    try {
      const banner = demo.lines.length;
      expect(demo.lines.join('\n')).toMatch(/Ctrl-C stops/);
      for (let i = 0; i < 40; i++) await visit(base + 143);
      // every visit logs lines of its own (accepted, connection ended)
      await new Promise((r) => setTimeout(r, 100));
      expect(demo.lines.length).toBeLessThanOrEqual(banner + 10);
      expect(demo.lines.length).toBe(banner + 10);
      // the banner is still there, and the newest lines are the last ones
      expect(demo.lines.slice(0, banner).join('\n')).toMatch(/Ctrl-C stops/);
      expect(demo.lines.at(-1)).toMatch(/^proxy: /);
    } finally {
      await demo.stop();
    }
  }, 30_000);

  it('RecentLines: the first lines until sealed, then the last N in order (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.string(), { maxLength: 20 }),
        fc.array(fc.string(), { maxLength: 300 }),
        fc.integer({ min: 1, max: 50 }),
        (head, rest, keep) => {
          const r = new RecentLines(keep);
          for (const l of head) r.push(l);
          r.seal();
          for (const l of rest) r.push(l);
          expect(r.lines).toEqual([...head, ...rest.slice(Math.max(0, rest.length - keep))]);
          expect(r.total).toBe(head.length + rest.length);
        },
      ),
    );
  });
});
