// Issue 14: who may remove a socket file. listen() replaces only a stale one (connect() says
// ECONNREFUSED); close() removes only the file it created itself, not a successor's.
import { existsSync, renameSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { type Channel, connect, FdpassError, listen } from '../src/index.js';
import { binding } from '../src/loader.js';
import { tmpSock } from './helpers.js';

const cleanup: Array<() => unknown> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

function streamServer(path: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const s = net.createServer((c) => c.end('alive\n'));
    s.once('error', reject);
    s.listen(path, () => resolve(s));
    cleanup.push(() => new Promise((r) => s.close(r)));
  });
}

function streamHello(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect(path);
    let got = '';
    c.on('data', (d) => {
      got += d;
    });
    c.on('end', () => resolve(got));
    c.on('error', reject);
  });
}

describe('listen() on a path that is already a socket', () => {
  it('refuses a live SOCK_STREAM server there (EPROTOTYPE is not "stale") and leaves it alone', async () => {
    const path = tmpSock('stream');
    cleanup.push(() => rmSync(path, { force: true }));
    await streamServer(path);
    let err: unknown;
    try {
      const s = listen({ path });
      cleanup.push(() => s.close());
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FdpassError);
    expect(err).toMatchObject({ code: 'TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE' });
    expect((err as Error).message).toMatch(/in use by a live socket/);
    expect(statSync(path).isSocket()).toBe(true);
    expect(await streamHello(path)).toBe('alive\n');
  });

  it('refuses a live SEQPACKET listener with the same stable code', () => {
    const path = tmpSock('seq');
    const a = listen({ path });
    cleanup.push(() => a.close());
    expect(() => listen({ path })).toThrow(
      expect.objectContaining({ code: 'TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE' }),
    );
  });

  it('still replaces a stale socket file (nobody listening: ECONNREFUSED)', async () => {
    const path = tmpSock('stale');
    // A crashed owner leaves its socket file behind: bind, listen, close the fd, keep the file.
    binding().close(binding().listen(path, false, 0o600, 1));
    expect(statSync(path).isSocket()).toBe(true);
    const b = listen({ path });
    cleanup.push(() => b.close());
    const accepted = new Promise<Channel>((r) => b.once('connection', r));
    const c = await connect({ path });
    (await accepted).close();
    c.close();
  });
});

describe('close() removes only its own socket file', () => {
  it("a stopping server leaves its successor's socket in place (rolling restart)", async () => {
    const path = tmpSock('succ');
    const a = listen({ path });
    cleanup.push(() => a.close());
    // The successor takes the path over: the old file is unlinked (by an operator, a deploy
    // script, or a server that binds without probing) and a new listener binds it.
    unlinkSync(path);
    const b = listen({ path });
    cleanup.push(() => b.close());
    a.close();
    expect(existsSync(path)).toBe(true);
    const accepted = new Promise<Channel>((r) => b.once('connection', r));
    const c = await connect({ path });
    (await accepted).close();
    c.close();
    b.close();
    expect(existsSync(path)).toBe(false);
  });

  it('a successor that renames its socket into place is not removed either', async () => {
    const path = tmpSock('rename');
    const a = listen({ path });
    cleanup.push(() => a.close());
    const b = listen({ path: `${path}.new` });
    cleanup.push(() => b.close());
    renameSync(`${path}.new`, path);
    a.close();
    expect(statSync(path).isSocket()).toBe(true);
    const accepted = new Promise<Channel>((r) => b.once('connection', r));
    const c = await connect({ path });
    (await accepted).close();
    c.close();
  });

  it('leaves a non-socket file that replaced its socket alone', () => {
    const path = tmpSock('file');
    const a = listen({ path });
    cleanup.push(() => rmSync(path, { force: true }));
    unlinkSync(path);
    writeFileSync(path, 'data');
    a.close();
    expect(statSync(path).isFile()).toBe(true);
  });
});
