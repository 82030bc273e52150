import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { socketpair } from '@tlsproxy/fdpass';
import { PoolError } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NativeTlsEngine } from '../src/index.js';
import { certs, client, type Served, serve } from './helpers.js';

const OTHER_FP = new X509Certificate(certs.other.cert).fingerprint256;
const CLIENT_FP = new X509Certificate(certs.client.cert).fingerprint256;

async function connectPair(served: Served, options: Parameters<typeof client>[1] = {}) {
  const c = client(served.port, options);
  const [r] = await Promise.all([served.next(), c.secure]);
  return { c, r };
}

function sClient(args: string[]): Promise<{ out: string }> {
  return new Promise((resolve) => {
    const child = execFile(
      'timeout',
      ['10', 'openssl', 's_client', ...args],
      { timeout: 15_000 },
      (_err, stdout, stderr) => resolve({ out: stdout + stderr }),
    );
    child.stdin!.end('');
  });
}

describe('NativeTlsEngine: asynchronous SNI check', () => {
  let engine: NativeTlsEngine;
  beforeAll(() => {
    engine = new NativeTlsEngine({ identities: [certs.server, certs.other], threads: 2 });
  });
  afterAll(() => engine.close());

  it('goes on when checkServerName accepts (sync and async)', async () => {
    const seen: string[] = [];
    for (const check of [
      (n: string) => {
        seen.push(n);
        return true;
      },
      async (n: string) => {
        seen.push(n);
        await new Promise((r) => setTimeout(r, 50));
        return true;
      },
    ]) {
      const served = await serve(engine, { checkServerName: check });
      const { c, r } = await connectPair(served, { servername: 'other.example.test' });
      expect(c.socket.getPeerX509Certificate()!.fingerprint256).toBe(OTHER_FP);
      expect(r.info.serverName).toBe('other.example.test');
      r.plaintext.close();
      c.socket.destroy();
      await served.close();
    }
    expect(seen).toEqual(['other.example.test', 'other.example.test']);
  });

  it('refused name: the client gets unrecognized_name, handshake() rejects', async () => {
    const served = await serve(engine, { checkServerName: async (n) => n !== 'bad.example.test' });
    try {
      const c = client(served.port, { servername: 'bad.example.test' });
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_SERVER_NAME_REFUSED',
        message: 'server name "bad.example.test" refused',
      });
      await expect(c.secure).rejects.toThrow(/unrecognized name|alert number 112/i);
      const res = sClient([
        '-connect',
        `127.0.0.1:${served.port}`,
        '-servername',
        'bad.example.test',
      ]);
      await expect(served.next()).rejects.toBeInstanceOf(PoolError);
      expect((await res).out).toMatch(/alert number 112|unrecognized name/i);
    } finally {
      await served.close();
    }
  });

  it('a throwing checkServerName fails the handshake', async () => {
    const served = await serve(engine, {
      checkServerName: () => {
        throw new Error('backend down');
      },
    });
    try {
      const c = client(served.port, { servername: 'imap.example.test' });
      await expect(served.next()).rejects.toThrow(/backend down/);
      await expect(c.secure).rejects.toBeDefined();
    } finally {
      await served.close();
    }
  });

  it('an answer after the handshake timed out writes nothing anywhere', async () => {
    let answer!: (ok: boolean) => void;
    let wasAsked!: () => void;
    const asked = new Promise<void>((r) => {
      wasAsked = r;
    });
    const served = await serve(engine, {
      handshakeTimeoutMs: 150,
      checkServerName: () =>
        new Promise<boolean>((res) => {
          answer = res;
          wasAsked();
        }),
    });
    try {
      const c = client(served.port, { servername: 'slow.example.test' });
      await asked;
      await expect(served.next()).rejects.toMatchObject({ code: 'TLSPROXY_ERR_POOL_TIMEOUT' });
      await c.closed;
      const pairs = Array.from({ length: 8 }, () => socketpair());
      const readers = pairs.map(([, b]) => b.toSocket());
      const got: string[] = [];
      for (const r of readers) r.on('data', (d) => got.push(d.toString('hex')));
      answer(true);
      await new Promise((r) => setTimeout(r, 100));
      expect(got).toEqual([]);
      for (const [a] of pairs) a.close();
      for (const r of readers) r.destroy();
    } finally {
      await served.close();
    }
  });

  it('checkServerName is not called without SNI', async () => {
    let called = false;
    const served = await serve(engine, {
      checkServerName: () => {
        called = true;
        return false;
      },
    });
    try {
      const { c, r } = await connectPair(served, {});
      expect(called).toBe(false);
      expect(r.info.serverName).toBeNull();
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });
});

describe('NativeTlsEngine: client certificates', () => {
  let engine: NativeTlsEngine;
  beforeAll(() => {
    engine = new NativeTlsEngine({ identities: [certs.server], ca: certs.ca, threads: 1 });
  });
  afterAll(() => engine.close());

  it('refuses a policy without CAs', () => {
    expect(
      () => new NativeTlsEngine({ identities: [certs.server], clientCert: 'required' }),
    ).toThrow(PoolError);
    expect(
      () =>
        new NativeTlsEngine({ identities: [{ cert: certs.server.cert, key: certs.other.key }] }),
    ).toThrow(/private key/);
  });

  it('required, no certificate → handshake fails', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const c = client(served.port);
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CLIENT_CERT',
      });
      await c.closed;
    } finally {
      await served.close();
    }
  });

  it('required, trusted certificate → verified identity', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const { c, r } = await connectPair(served, certs.client);
      expect(r.info.clientIdentity?.fingerprint256).toBe(CLIENT_FP);
      expect(r.info.clientIdentity?.subject).toMatch(/CN=/);
      r.plaintext.close();
      c.socket.destroy();
    } finally {
      await served.close();
    }
  });

  it('required, untrusted certificate → handshake fails', async () => {
    const served = await serve(engine, { clientCert: 'required' });
    try {
      const c = client(served.port, certs.rogue);
      // In TLS 1.3 the client is done before the server judges its certificate; it sees the
      // alert (unknown_ca) only when it reads.
      c.socket.resume();
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CLIENT_CERT',
      });
      // The alert is written in the step that runs corked (the one after the server's flight)
      // and the socket closed right after: it still reaches the client.
      expect(String(await c.closed)).toMatch(/unknown ca|alert number 48/i);
    } finally {
      await served.close();
    }
  });

  it('optional: none → no identity; trusted → identity; untrusted → fails', async () => {
    const served = await serve(engine, { clientCert: 'optional' });
    try {
      const a = await connectPair(served);
      expect(a.r.info.clientIdentity).toBeNull();
      const b = await connectPair(served, certs.client);
      expect(b.r.info.clientIdentity?.fingerprint256).toBe(CLIENT_FP);
      for (const x of [a, b]) {
        x.r.plaintext.close();
        x.c.socket.destroy();
      }
      const c = client(served.port, certs.rogue);
      // In TLS 1.3 the client is done before the server judges its certificate; it sees the
      // alert (unknown_ca) only when it reads.
      c.socket.resume();
      await expect(served.next()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_POOL_CLIENT_CERT',
      });
      await c.closed;
    } finally {
      await served.close();
    }
  });

  it('TLS 1.2 with a client certificate, and resumption while certificates are requested', async () => {
    const served = await serve(engine, { clientCert: 'optional' });
    try {
      const a = await connectPair(served, { ...certs.client, maxVersion: 'TLSv1.2' });
      expect(a.r.info.clientIdentity?.fingerprint256).toBe(CLIENT_FP);
      const session = a.c.socket.getSession();
      a.r.plaintext.close();
      a.c.socket.destroy();
      const b = await connectPair(served, { ...certs.client, maxVersion: 'TLSv1.2', session });
      expect(b.c.socket.isSessionReused()).toBe(true);
      b.r.plaintext.close();
      b.c.socket.destroy();
    } finally {
      await served.close();
    }
  });
});

describe('defaultThreads', () => {
  it('leaves the JS thread a core, and never goes below one loop thread', async () => {
    const { defaultThreads } = await import('../src/index.js');
    expect([1, 2, 3, 8].map((n) => defaultThreads(n))).toEqual([1, 1, 2, 7]);
    expect(defaultThreads()).toBeGreaterThanOrEqual(1);
  });
});
