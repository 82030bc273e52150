// ProxyOptions.createEngine (issue 15): when `pool` is engine options, the proxy builds its
// embedded engine with this factory (e.g. the native engine) instead of node:tls's TlsEngine,
// owns it — reloads go to it, close() closes it — and a TLS session runs through it.
import type { ChildProcess } from 'node:child_process';
import { type EngineOptions, TlsEngine } from '@tlsproxy/pool';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TlsProxy } from '../src/index.js';
import {
  cert,
  type Events,
  engineName,
  LineClient,
  quietLogger,
  startBackend,
  startProxy,
} from './helpers.js';

/** node:tls's engine, counting what the proxy asks of it. */
class CountingEngine extends TlsEngine {
  handshakes = 0;
  reloads = 0;
  closes = 0;
  override handshake(...args: Parameters<TlsEngine['handshake']>) {
    this.handshakes++;
    return super.handshake(...args);
  }
  override reload(options: EngineOptions) {
    this.reloads++;
    super.reload(options);
  }
  override async close() {
    this.closes++;
    await super.close();
  }
}

const engineOptions = (): EngineOptions => ({
  identities: [{ cert: cert('server.pem'), key: cert('server.key') }],
});

let backend: { child: ChildProcess; path: string; events: Events };
beforeAll(async () => {
  backend = await startBackend();
});
afterAll(() => {
  backend?.child.kill();
});

describe('ProxyOptions.createEngine', () => {
  it('builds the embedded engine, runs TLS sessions through it and closes it with the proxy', async () => {
    const made: CountingEngine[] = [];
    const seen: EngineOptions[] = [];
    const options = engineOptions();
    const proxy = new TlsProxy({
      logger: quietLogger(),
      pool: options,
      createEngine: (o) => {
        seen.push(o);
        const e = new CountingEngine(o);
        made.push(e);
        return e;
      },
    });
    expect(made).toHaveLength(1);
    expect(seen[0]).toBe(options);
    expect(proxy.pool).toBe(made[0]);
    try {
      const l = await proxy.listen({
        dialect: 'imap',
        listen: '127.0.0.1:0',
        backend: `unix:${backend.path}`,
        hostname: 'test.example',
      });
      const c = new LineClient((l.server.address() as { port: number }).port);
      await c.until(/^\* OK/);
      c.write('a STARTTLS\r\n');
      await c.until(/^a OK/);
      const t = await c.startTls({ servername: 'localhost' });
      t.socket.destroy();
      expect(made[0]!.handshakes).toBe(1);
      proxy.reloadPool(engineOptions());
      expect(made[0]!.reloads).toBe(1);
    } finally {
      await proxy.close();
    }
    expect(made[0]!.closes).toBe(1);
  });

  it('is not used for a tlspool daemon socket or an engine object, which it does not own', async () => {
    let calls = 0;
    const createEngine = (o: EngineOptions) => {
      calls++;
      return new TlsEngine(o);
    };
    const given = new CountingEngine(engineOptions());
    const proxy = new TlsProxy({ logger: quietLogger(), pool: given, createEngine });
    expect(proxy.pool).toBe(given);
    await proxy.close();
    expect(given.closes).toBe(0);
    await given.close();
    const remote = new TlsProxy({
      logger: quietLogger(),
      pool: { socket: '/nonexistent/tlspool.sock' },
      createEngine,
    });
    await remote.close();
    expect(calls).toBe(0);
  });
});

describe('the engine these tests embed', () => {
  it(`is the one TLSPROXY_TEST_ENGINE names (${engineName})`, async () => {
    const { proxy } = await startProxy(`unix:${backend.path}`);
    try {
      expect(proxy.pool.constructor.name).toBe(
        engineName === 'native' ? 'NativeTlsEngine' : 'TlsEngine',
      );
    } finally {
      await proxy.close();
    }
  });
});
