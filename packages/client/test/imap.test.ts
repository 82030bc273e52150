// connectStartTls with the real IMAP client dialect (@tlsproxy/dialect-imap, loaded by name)
// against a node-based IMAP server on loopback that speaks the preamble as Dovecot does, then
// TLS. The same against a real Dovecot is imap-dovecot.interop.test.ts.
import net from 'node:net';
import tls from 'node:tls';
import { PoolError } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ClientError, connectStartTls } from '../src/index.js';
import { viaEngine } from './engine.js';
import { certs } from './toy.js';

interface FakeImap {
  port: number;
  close(): Promise<void>;
}

/**
 * Greets like Dovecot ([CAPABILITY ... STARTTLS LOGINDISABLED]), answers `tag STARTTLS` with
 * `tag OK Begin TLS negotiation now.` plus `after` in the same write, then runs TLS and answers
 * CAPABILITY without STARTTLS inside.
 */
async function fakeImap(after = ''): Promise<FakeImap> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.write('* OK [CAPABILITY IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED] fake ready.\r\n');
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const m = /^(\S+) STARTTLS\r\n/i.exec(buf);
      if (!m) return;
      s.off('data', onData);
      s.pause();
      s.write(`${m[1]} OK Begin TLS negotiation now.\r\n${after}`, () => {
        const t = new tls.TLSSocket(s, { isServer: true, ...certs.server });
        t.on('error', () => {});
        let inner = '';
        t.on('data', (x: Buffer) => {
          inner += x.toString('latin1');
          const c = /^(\S+) CAPABILITY\r\n/i.exec(inner);
          if (c) {
            inner = '';
            t.write(`* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n${c[1]} OK done.\r\n`);
          }
        });
      });
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

function readUntil(s: net.Socket, re: RegExp): Promise<string> {
  return new Promise((resolve) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString('latin1');
      if (re.test(buf)) {
        s.off('data', on);
        resolve(buf);
      }
    };
    s.on('data', on);
  });
}

describe('connectStartTls with the IMAP client dialect (node-based server)', () => {
  let plain: FakeImap;
  let injecting: FakeImap;
  beforeAll(async () => {
    plain = await fakeImap();
    injecting = await fakeImap('* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] forged\r\n');
  });
  afterAll(async () => {
    await plain.close();
    await injecting.close();
  });

  it('the dialect’s own greeting first (none of the server’s pre-TLS text), then IMAP inside TLS', async () => {
    const r = await connectStartTls({
      ...viaEngine,
      dialect: 'imap',
      host: '127.0.0.1',
      port: plain.port,
      serverName: 'imap.example.test',
      ca: certs.ca,
    });
    expect(r.info.serverIdentity.san.dns).toContain('imap.example.test');
    // The dialect's own greeting: nothing of the server's pre-TLS text.
    expect(await readUntil(r.socket, /\r\n$/)).toBe('* OK Server ready.\r\n');
    r.socket.write('b1 CAPABILITY\r\n');
    const caps = await readUntil(r.socket, /b1 OK/);
    expect(caps).not.toMatch(/STARTTLS/);
    r.socket.destroy();
  });

  it('a forged response behind the go-ahead: no TLS (TLSPROXY_ERR_CLIENT_REFUSED)', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'imap',
      host: '127.0.0.1',
      port: injecting.port,
      serverName: 'imap.example.test',
      ca: certs.ca,
    }).then(
      () => {
        throw new Error('connected');
      },
      (e: ClientError) => e,
    );
    expect(err.code).toBe('TLSPROXY_ERR_CLIENT_REFUSED');
    expect(err.reason).toMatch(/after/i);
  });

  it('a wrong name fails closed', async () => {
    const err = await connectStartTls({
      ...viaEngine,
      dialect: 'imap',
      host: '127.0.0.1',
      port: plain.port,
      serverName: 'imap.example.org',
      ca: certs.ca,
    }).then(
      () => {
        throw new Error('connected');
      },
      (e: PoolError) => e,
    );
    expect(err).toBeInstanceOf(PoolError);
    expect(err.reason).toBe('name-mismatch');
  });
});
