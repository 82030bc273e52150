import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { connect, listenFds } from '../src/index.js';
import { binding } from '../src/loader.js';
import { fixture, lines, tmpSock } from './helpers.js';

describe('systemd socket activation', () => {
  it('takes named descriptors from LISTEN_FDS in a child started like systemd does', async () => {
    const path = tmpSock('systemd');
    // Bind here, pass the listening fd as fd 3 of the child, as systemd would.
    const fd = binding().listen(path, false, 0o600, 16);
    const child = spawn(
      'bash',
      [
        '-c',
        'LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=control exec "$0" "$1"',
        process.execPath,
        fixture('systemd-child.mjs'),
      ],
      { stdio: ['ignore', 'pipe', 'inherit', fd] },
    );
    binding().close(fd);
    const next = lines(child);
    const hello = await next();
    expect(hello).toMatchObject({
      names: ['control'],
      socket: { domain: 'unix', type: 'seqpacket' },
      envCleared: true,
    });
    const ch = await connect({ path });
    const answer = new Promise<string>((r) => ch.once('message', (m) => r(m.data.toString())));
    ch.send(Buffer.from('hi'));
    expect(await answer).toBe('systemd says hi');
    ch.close();
    child.kill();
  });

  it('ignores variables meant for another process', () => {
    expect(listenFds({ LISTEN_PID: '1', LISTEN_FDS: '2' })).toEqual([]);
    expect(listenFds({})).toEqual([]);
    expect(() => listenFds({ LISTEN_PID: String(process.pid), LISTEN_FDS: 'lots' })).toThrow(
      /LISTEN_FDS/,
    );
  });
});
