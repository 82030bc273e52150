// detachSocket() at the descriptor limit: the dup fails first, the socket is left as it was —
// still reading — instead of stopped with no descriptor to show for it (a parked or switching
// connection then hung until the client gave up).
import { describe, expect, it } from 'vitest';
import { fixture, lines, spawnNode } from './helpers.js';

describe('detachSocket at EMFILE', () => {
  it('throws and leaves the socket reading', async () => {
    const child = spawnNode(fixture('detach-emfile.mjs'), [], 'ulimit -n 64');
    const next = lines(child);
    try {
      const first = (await next()) as { error: string | null; destroyed: boolean };
      expect(first.error).toMatch(/EMFILE|too many open files/i);
      expect(first.destroyed).toBe(false);
      expect(await next()).toEqual({ received: 'still here' });
    } finally {
      child.kill('SIGKILL');
    }
  });
});
