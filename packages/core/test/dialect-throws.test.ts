// A third-party dialect that throws is a bug in that dialect: the connection is closed with a log
// line, the process goes on. Every hook the session calls must be guarded.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listen } from '@tlsproxy/backend';
import { describe, expect, it } from 'vitest';
import { LineClient, sleep, startProxy, tmpSock } from './helpers.js';

const PLUGIN = `
export default {
  name: 'throwy',
  defaultPorts: {},
  options: {},
  limits: {},
  create() {
    return {
      start: () => [{ type: 'send', data: new TextEncoder().encode('hello\\r\\n') }],
      receive: () => [],
      timer: () => [],
      tlsUnavailable: () => [],
      eof: () => {
        throw new Error('eof went wrong');
      },
    };
  },
};
`;

// A plaintext hand-off whose `buffered` is not bytes: building the message throws after the
// socket was detached.
const BAD_PLAINTEXT = `
const enc = (s) => new TextEncoder().encode(s);
export default {
  name: 'badplain',
  defaultPorts: {},
  options: {},
  limits: {},
  create() {
    return {
      start: () => [{ type: 'send', data: enc('hello\\r\\n') }],
      receive: () => [{ type: 'plaintext', buffered: 42, state: {}, unavailable: enc('NO later\\r\\n') }],
      timer: () => [],
      tlsUnavailable: () => [],
    };
  },
};
`;

function plugin(name: string, text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-plugin-'));
  const file = join(dir, `${name}.mjs`);
  writeFileSync(file, text);
  return file;
}

describe('a dialect that throws', () => {
  // Regression (review): eof() was the one hook called without the guard; a throw there escaped
  // into the stream's callback — an uncaught exception, the process gone.
  it('in eof(): the connection is closed and logged, the proxy goes on', async () => {
    const file = plugin('throwy', PLUGIN);
    const p = await startProxy('unix:/nonexistent/tlsproxy-test.sock', { dialect: file });
    try {
      const c = new LineClient(p.port);
      await c.until(/^hello/);
      c.socket.end();
      for (let i = 0; i < 50 && !p.logger.lines.some((l) => l.includes('dialect threw')); i++)
        await sleep(20);
      expect(p.logger.lines.some((l) => l.includes('dialect threw'))).toBe(true);
      const again = new LineClient(p.port);
      await again.until(/^hello/);
      again.socket.destroy();
    } finally {
      await p.proxy.close();
    }
  });

  // Regression (review): plaintextSteps() let go of the detached descriptor before building the
  // hand-off; a throw there left it to the garbage collector, and the client got no answer.
  it('a malformed plaintext action: the client gets its temporary failure, the descriptor is closed', async () => {
    // A backend that is there: the hand-off gets past its availability check.
    const path = tmpSock('badplain');
    const backend = await listen({ path });
    const p = await startProxy(`unix:${path}`, { dialect: plugin('badplain', BAD_PLAINTEXT) });
    try {
      const c = new LineClient(p.port);
      const closed = new Promise<void>((r) => c.socket.once('close', () => r()));
      await c.until(/^hello/);
      c.write('GO\r\n');
      expect(await c.until(/^NO/)).toMatch(/^NO later/);
      await closed;
    } finally {
      await p.proxy.close();
      await backend.close();
    }
  });
});
