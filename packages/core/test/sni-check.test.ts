// Issue 14: a backend that registers onServerName expects to be able to refuse names. It says
// so in its hello, and the proxy asks it about every name without `checkServerName` being set
// on the listener; before, the check failed open unless the proxy was started with
// --check-server-name.

import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { type Events, LineClient, sleep, startBackend, startProxy } from './helpers.js';

let backend: { child: ChildProcess; path: string; events: Events };
let proxy: TlsProxy;
let port: number;
let lines: string[];

beforeAll(async () => {
  backend = await startBackend(['--refuse-name', 'refused.example.test']);
  const p = await startProxy(`unix:${backend.path}`); // no checkServerName
  proxy = p.proxy;
  port = p.port;
  lines = p.logger.lines;
});
afterAll(async () => {
  await proxy?.close();
  backend?.child.kill();
});

async function starttls(servername: string) {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  return c.startTls({ servername });
}

describe('SNI check declared by the backend', () => {
  it('a name the backend refuses is refused without --check-server-name', async () => {
    // The first STARTTLS opens the backend channel and reads its hello.
    const ok = await starttls('localhost');
    ok.socket.destroy();
    // Its hand-off may reach the backend after the client is done (early hand-off: it starts
    // before the client's Finished, and the backend reports it when it has taken it).
    await sleep(200);
    const before = backend.events.all.filter((e) => e.event === 'connection').length;
    await expect(starttls('refused.example.test')).rejects.toThrow(/unrecognized name/i);
    await sleep(200);
    expect(backend.events.all.filter((e) => e.event === 'connection').length).toBe(before);
    expect(lines.some((l) => l.includes('backend checks server names'))).toBe(true);
  });
});
