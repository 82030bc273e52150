// Which loop thread a new connection goes to: the first one asleep for want of work (fill-first),
// so under light load a second thread costs nothing — one thread takes every connection and the
// other stays asleep. Read from the kernel's per-thread run time (schedstat, nanoseconds).
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { certs, client, until } from './helpers.js';
import { servedEngine } from './served-engine.js';

/** Run time (ns) of this process's threads named `tls-engine-N`, by N. */
function engineThreadRunNs(): Map<string, number> {
  const out = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    let name: string;
    try {
      name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue; // the thread ended meanwhile
    }
    if (!name.startsWith('tls-engine-')) continue;
    const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    out.set(name, (out.get(name) ?? 0) + ns);
  }
  return out;
}

describe('new connections fill the first idle loop', () => {
  const se = servedEngine({ identities: [certs.server], threads: 2 });

  it('one connection at a time: the second thread stays asleep', async () => {
    const before = engineThreadRunNs();
    expect([...before.keys()].sort()).toEqual(['tls-engine-0', 'tls-engine-1']);
    for (let i = 0; i < 40; i++) {
      const c = client(se.served.port);
      const [r] = await Promise.all([se.served.next(), c.secure]);
      c.socket.destroy();
      r.plaintext.close();
      await until(() => se.engine.sessionCount === 0, 5000, 'session end');
    }
    const after = engineThreadRunNs();
    const used = (n: string) => (after.get(n) ?? 0) - (before.get(n) ?? 0);
    // 40 handshakes are several milliseconds of the first thread; the second wakes at most for
    // a connection that arrived while the first was busy (none here: one at a time).
    expect(used('tls-engine-0')).toBeGreaterThan(2_000_000);
    expect(used('tls-engine-1')).toBeLessThan(used('tls-engine-0') / 10);
  }, 30_000);
});
