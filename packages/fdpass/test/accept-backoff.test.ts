// Out of descriptors, a SEQPACKET listener's accept() fails with EMFILE while the connection
// stays queued, so the socket stays readable. Polling again at once spun (about 170,000 failed
// accepts in 0.6 s); now the listener backs off for 100 ms between tries.
import { describe, expect, it } from 'vitest';
import { connect } from '../src/index.js';
import { fixture, lines, spawnNode, tmpSock } from './helpers.js';

describe('accept at EMFILE', () => {
  it('backs off instead of spinning', async () => {
    const path = tmpSock('emfile');
    const child = spawnNode(fixture('emfile-listener.mjs'), [path], 'ulimit -n 64');
    const next = lines(child);
    try {
      expect((await next()).ready).toBe(true);
      const pending = connect({ path, timeoutMs: 1000 }).catch(() => undefined);
      child.stdin!.write('go\n');
      const { errors } = (await next()) as { errors: number };
      expect(errors).toBeGreaterThan(0);
      expect(errors).toBeLessThan(50);
      (await pending)?.close();
    } finally {
      child.kill('SIGKILL');
    }
  });
});
