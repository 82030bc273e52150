import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { socketpair } from '@tlsproxy/fdpass';
import { describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, fdCount, nextData, type Served, serve, until } from './helpers.js';

const fp = (pem: string) => new X509Certificate(pem).fingerprint256;

async function connectPair(served: Served, options: Parameters<typeof client>[1] = {}) {
  const c = client(served.port, options);
  const [r] = await Promise.all([served.next(), c.secure]);
  return { c, r };
}

/** stdout of a child process (its stdin a pipe), or its error with stderr. */
function run(file: string, args: string[], timeout: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { timeout }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    );
  });
}

/** A fixture script run by node with at most 96 descriptors. */
const withFewFds = (fixture: string) =>
  run(
    'bash',
    [
      '-c',
      'ulimit -n 96; exec "$0" "$1"',
      process.execPath,
      fileURLToPath(new URL(`./fixtures/${fixture}`, import.meta.url)),
    ],
    20_000,
  );

describe('NativeTlsEngine: lifecycle', () => {
  it('reload: new certificates for new handshakes, live sessions keep theirs', async () => {
    const engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    const served = await serve(engine);
    try {
      const a = await connectPair(served);
      expect(a.c.socket.getPeerX509Certificate()!.fingerprint256).toBe(fp(certs.server.cert));
      engine.reload({ identities: [certs.other] });
      expect(engine.serverNames()).toContain('other.example.test');
      const b = await connectPair(served);
      expect(b.c.socket.getPeerX509Certificate()!.fingerprint256).toBe(fp(certs.other.cert));
      // The first session still relays.
      const back = a.r.plaintext.toSocket();
      a.c.socket.write('still here');
      expect(await nextData(back)).toBe('still here');
      expect(() => engine.reload({ identities: [] })).toThrow(/identity/);
      back.destroy();
      a.c.socket.destroy();
      b.r.plaintext.close();
      b.c.socket.destroy();
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('maxSessions: refuses beyond, accepts again once a session ended', async () => {
    const engine = new NativeTlsEngine({ identities: [certs.server], threads: 1, maxSessions: 1 });
    const served = await serve(engine);
    try {
      const a = await connectPair(served);
      const c2 = client(served.port);
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
      await c2.closed;
      a.r.plaintext.close();
      a.c.socket.destroy();
      await until(() => engine.sessionCount === 0, 5000, 'session end');
      const b = await connectPair(served);
      b.r.plaintext.close();
      b.c.socket.destroy();
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('idle timeout ends a silent session', async () => {
    const engine = new NativeTlsEngine({
      identities: [certs.server],
      threads: 1,
      idleTimeoutMs: 200,
    });
    const served = await serve(engine);
    try {
      const { c, r } = await connectPair(served);
      const t0 = Date.now();
      c.socket.resume();
      await c.closed;
      expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
      await until(() => engine.sessionCount === 0, 5000, 'session end');
      r.plaintext.close();
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('idle timeout per request; bad timeouts are configuration errors', async () => {
    const engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    const served = await serve(engine, { idleTimeoutMs: 150 });
    try {
      const { c, r } = await connectPair(served);
      c.socket.resume();
      await c.closed;
      await until(() => engine.sessionCount === 0, 5000, 'session end');
      r.plaintext.close();
      const base = fdCount();
      for (const bad of [{ idleTimeoutMs: -1 }, { handshakeTimeoutMs: Number.NaN }]) {
        const [a, b] = socketpair();
        await expect(engine.handshake(a, bad)).rejects.toMatchObject({
          code: 'TLSPROXY_ERR_POOL_CONFIG',
        });
        expect(a.closed).toBe(true);
        b.close();
      }
      expect(fdCount()).toBe(base);
    } finally {
      await served.close();
      await engine.close();
    }
  });

  it('close(): pending handshakes reject, sessions end (onEnd), descriptors are released', async () => {
    const base = fdCount();
    const engine = new NativeTlsEngine({ identities: [certs.server], threads: 2 });
    let ends = 0;
    const served = await serve(engine, () => ({ onEnd: () => ends++ }));
    const live = await connectPair(served);
    // A client that connects but never sends a ClientHello: its handshake is pending.
    const silent = net.connect(served.port, '127.0.0.1');
    silent.on('error', () => {});
    silent.resume();
    const silentClosed = new Promise<void>((r) => silent.once('close', () => r()));
    const pending = served.next();
    await new Promise((r) => setTimeout(r, 100));
    live.c.socket.resume();
    await engine.close();
    await expect(pending).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_HANDSHAKE' });
    expect(ends).toBe(1);
    await live.c.closed;
    await silentClosed;
    live.r.plaintext.close();
    await served.close();
    await expect(engine.handshake(live.r.plaintext)).rejects.toThrow();
    await until(() => fdCount() <= base, 5000, 'descriptors back');
  });

  it('a net.Socket that already read bytes is refused, not guessed at', async () => {
    const engine = new NativeTlsEngine({ identities: [certs.server], threads: 1 });
    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const port = (server.address() as net.AddressInfo).port;
      const got = new Promise<net.Socket>((r) => server.once('connection', r));
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.write('early bytes');
      const s = await got;
      await new Promise((r) => setTimeout(r, 50));
      s.pause();
      // Node read them into its buffer (nobody consumed them): the engine cannot use them.
      s.unshift(s.read() ?? Buffer.alloc(0));
      await expect(engine.handshake(s)).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_HANDSHAKE',
      });
      await new Promise<void>((r) => c.once('close', () => r()));
    } finally {
      server.close();
      await engine.close();
    }
  });

  it('out of descriptors when the handshake ends: that connection fails with RESOURCES, the engine goes on', async () => {
    const out = await withFewFds('emfile-child.mjs');
    expect(JSON.parse(out.trim())).toEqual({ first: 'TLSPROXY_ERR_POOL_RESOURCES', second: 'ok' });
  });

  // Regression (review): a start that failed in the first of two loops left the second's
  // descriptors at calloc's 0, and the cleanup closed descriptor 0 (twice).
  it('out of descriptors while the loops start: the constructor throws, closes only its own', async () => {
    // stdin stays a pipe: descriptor 0 is then a file nothing else in the child could reopen.
    const out = await withFewFds('start-emfile-child.mjs');
    const tries = JSON.parse(out.trim()) as Array<{
      k: number;
      said: string;
      stdinIntact: boolean;
    }>;
    expect(tries.filter((t) => /loop setup/.test(t.said)).length).toBeGreaterThanOrEqual(2);
    expect(tries.at(-1)?.said).toBe('ok');
    expect(tries.filter((t) => !t.stdinIntact)).toEqual([]);
  });

  // Regression (review): byte counts went to the thread-safe function's unbounded queue every
  // 500 ms per session however far behind JS was — a 4 s stall queued 8 per session (480 for 60).
  // (A bound on batches did not hold: the sessions report in step, so few large batches.)
  it('a stalled JS thread finds a bounded number of byte counts waiting, not one per session per 500 ms', {
    timeout: 30_000,
  }, async () => {
    const child = fileURLToPath(new URL('./fixtures/stall-child.mjs', import.meta.url));
    const out = await run(process.execPath, [child], 25_000);
    const { sessions, waiting } = JSON.parse(out.trim()) as { sessions: number; waiting: number };
    expect(waiting).toBeGreaterThan(0);
    // BYTES_MAX_QUEUED (256), overshot by at most the round that crossed it, and one more round
    // after the stall; the test allows one round more. Without the bound: 12 per session (720).
    expect(waiting).toBeLessThanOrEqual(256 + 3 * sessions);
  });

  it('a process with an idle engine exits by itself', async () => {
    const script = `
      import { NativeTlsEngine } from ${JSON.stringify(new URL('../dist/index.js', import.meta.url).href)};
      import { readFileSync } from 'node:fs';
      const dir = ${JSON.stringify(fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url)))};
      const e = new NativeTlsEngine({ identities: [{ cert: readFileSync(dir + 'server.pem'), key: readFileSync(dir + 'server.key') }], threads: 2 });
      console.log(e.serverNames().length > 0 ? 'ok' : 'no names');
    `;
    const out = await run(process.execPath, ['--input-type=module', '-e', script], 15_000);
    expect(out.trim()).toBe('ok');
  });
});
