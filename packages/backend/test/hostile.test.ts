// Issue 14: whatever the proxy side of the channel sends — types named like Object.prototype
// members, wrong field types, missing or extra descriptors, unknown types — the backend answers
// with an error (or closes that channel), closes the descriptors, logs, and keeps running.
import { type ChildProcess, spawn } from 'node:child_process';
import { openSync, unlinkSync } from 'node:fs';
import type net from 'node:net';
import { fileURLToPath } from 'node:url';
import { type Channel, connect, decode, encode, OwnedFd, socketpair } from '@tlsproxy/fdpass';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BackendServer, listen, PROTOCOL_NAME, PROTOCOL_VERSION } from '../src/index.js';
import {
  FakeProxy,
  handoffInfo,
  nextData,
  noFdLeak,
  settledFdCount,
  tmpSock,
  until,
} from './helpers.js';

const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype);

const cleanup: Array<() => unknown> = [];
const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => uncaught.push(err);
beforeEach(() => {
  uncaught.length = 0;
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onUncaught);
});
afterEach(async () => {
  process.off('uncaughtException', onUncaught);
  process.off('unhandledRejection', onUncaught);
  for (const f of cleanup.splice(0).reverse()) await f();
});

interface Reply {
  t: string;
  b: Record<string, unknown>;
  re?: number;
}

/** The proxy side played by hand: raw frames in, decoded replies out. */
async function rawProxy(path: string): Promise<{
  ch: Channel;
  replies: Reply[];
  hello: () => Reply | undefined;
  closed: () => boolean;
  reply: (id: number) => Promise<Reply>;
}> {
  const ch = await connect({ path });
  cleanup.push(() => ch.close());
  const replies: Reply[] = [];
  let isClosed = false;
  ch.on('close', () => {
    isClosed = true;
  });
  ch.on('message', (m) => {
    for (const f of m.fds) f.close();
    const d = decode(m.data);
    replies.push({
      t: d.t,
      b: d.b as Record<string, unknown>,
      ...(d.re !== undefined ? { re: d.re } : {}),
    });
  });
  ch.send(encode('hello', { protocol: PROTOCOL_NAME, version: PROTOCOL_VERSION }));
  await until(() => replies.some((r) => r.t === 'hello'), 3000, 'the backend hello');
  return {
    ch,
    replies,
    hello: () => replies.find((r) => r.t === 'hello'),
    closed: () => isClosed,
    reply: async (id) => {
      await until(() => isClosed || replies.some((r) => r.re === id), 3000, `reply to ${id}`);
      const r = replies.find((x) => x.re === id);
      if (!r) throw new Error(`channel closed before a reply to ${id}`);
      return r;
    },
  };
}

function frame(headerJson: string): Buffer {
  const json = Buffer.from(headerJson);
  const out = Buffer.alloc(4 + json.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  return out;
}

const devnull = () => new OwnedFd(openSync('/dev/null', 'r'));

async function backend(
  opts: Parameters<typeof listen>[0] extends infer T ? Exclude<T, string> : never = {},
) {
  const path = tmpSock('hostile');
  const logs: string[] = [];
  const server: BackendServer = await listen({ path, log: (l) => logs.push(l), ...opts });
  cleanup.push(() => server.close());
  return { path, logs, server };
}

function lines(child: ChildProcess): Array<Record<string, unknown>> {
  const got: Array<Record<string, unknown>> = [];
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      got.push(JSON.parse(buf.slice(0, i)));
      buf = buf.slice(i + 1);
    }
  });
  return got;
}

describe('a raw peer against a backend process (cross-process)', () => {
  it('types named like Object.prototype members do not crash the backend', async () => {
    const path = tmpSock('child');
    const mod = process.env.BACKEND_MODULE; // to point the same test at another build
    const child = spawn(
      process.execPath,
      [
        fileURLToPath(new URL('./fixtures/backend-child.mjs', import.meta.url)),
        path,
        ...(mod ? [mod] : []),
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let exit: number | string | null | undefined;
    child.on('exit', (code, signal) => {
      exit = code ?? signal;
    });
    cleanup.push(() => child.kill());
    const out = lines(child);
    await until(() => out.some((l) => l.ready) || exit !== undefined, 10_000, 'the backend child');
    expect(exit).toBeUndefined();

    // One channel per batch: a channel is cut off after 16 invalid messages.
    for (const batch of [PROTO_NAMES.slice(0, 8), PROTO_NAMES.slice(8)]) {
      const p = await rawProxy(path);
      let id = 1;
      for (const t of batch) {
        p.ch.send(frame(`{"t":${JSON.stringify(t)},"b":{},"id":${id++}}`), [devnull()]);
      }
      p.ch.send(frame(`{"t":"constructor","id":${id++}}`));
      p.ch.send(
        frame(`{"__proto__":{"t":"connection"},"t":"toString","b":{"__proto__":{}},"id":${id++}}`),
      );
      for (let i = 1; i < id; i++) {
        expect((await p.reply(i)).t).toBe('error');
      }
      // Still serving: a valid hand-off on the same channel is accepted and answered.
      const [mine, theirs] = socketpair();
      const client = mine.toSocket();
      cleanup.push(() => client.destroy());
      const hi = nextData(client);
      p.ch.send(encode('connection', { info: { ...handoffInfo() } }, { id: 1000 }), [theirs]);
      expect((await p.reply(1000)).t).toBe('accepted');
      expect(await hi).toBe('hi\n');
      p.ch.close();
    }
    expect(exit).toBeUndefined();
    expect(out.filter((l) => typeof l.log === 'string').length).toBeGreaterThan(0);
  }, 30_000);
});

describe('malformed messages from the proxy side (in process, raw fdpass peer)', () => {
  it('a connection whose info has wrong field types is refused, its descriptor closed, logged', async () => {
    const { path, logs, server } = await backend();
    const p = await rawProxy(path);
    const before = await settledFdCount();
    const bad: Array<Record<string, unknown>> = [
      { ...handoffInfo(), controlKey: 5 },
      { ...handoffInfo(), dialect: 7 },
      { ...handoffInfo(), handoff: 'sideways' },
      { ...handoffInfo(), tls: 'TLSv1.3' },
      { ...handoffInfo(), tls: { version: 'TLSv1.3', cipher: 5, alpn: null } },
      { ...handoffInfo(), remotePort: '143' },
      { ...handoffInfo(), serverName: ['a'] },
      { ...handoffInfo(), dialectState: 'x' },
      { ...handoffInfo(), dialectStateOrigin: 'post-tls' },
      {
        ...handoffInfo(),
        clientIdentity: { subject: 'CN=a', issuer: 'CN=b', san: { dns: [1] }, fingerprint256: 'x' },
      },
    ];
    let id = 1;
    for (const info of bad) {
      const [mine, theirs] = socketpair();
      p.ch.send(encode('connection', { info }, { id }), [theirs]);
      const r = await p.reply(id++);
      expect(r).toMatchObject({ t: 'error', b: { code: 'TLSPROXY_ERR_BACKEND_PEER' } });
      mine.close();
    }
    let accepted = false;
    void server.accept().then(
      (a) => {
        accepted = true;
        a.socket.destroy();
      },
      () => {}, // rejected when the server closes at the end of the test
    );
    await new Promise((r) => setTimeout(r, 30));
    expect(accepted).toBe(false);
    await noFdLeak(before);
    expect(logs.filter((l) => /hand-off info/.test(l))).toHaveLength(bad.length);
    expect(uncaught).toEqual([]);
  });

  it('missing, extra and non-stream descriptors, unknown and unexpected types: error replies, fds closed', async () => {
    const { path, logs } = await backend();
    const p = await rawProxy(path);
    const before = await settledFdCount();
    const info = handoffInfo();
    p.ch.send(encode('connection', { info: { ...info } }, { id: 1 }), []);
    p.ch.send(encode('connection', { info: { ...info } }, { id: 2 }), [devnull(), devnull()]);
    p.ch.send(encode('connection', { info: { ...info } }, { id: 3 }), [devnull()]); // not a socket
    p.ch.send(encode('bogus', {}, { id: 4 }), [devnull()]);
    p.ch.send(encode('accepted', {}, { id: 5 }), []);
    p.ch.send(encode('control', { key: 'k', op: 'info', args: {} }, { id: 6 }), []);
    p.ch.send(encode('server-name', { serverName: 5, info: {} }, { id: 7 }), []);
    p.ch.send(encode('control-result', { result: 1 }, { id: 8, re: 999 }), []);
    for (let i = 1; i <= 8; i++) expect((await p.reply(i)).t).toBe('error');
    await noFdLeak(before);
    expect(logs.length).toBeGreaterThanOrEqual(8);
    expect(uncaught).toEqual([]);
    // and the channel still works
    const [mine, theirs] = socketpair();
    p.ch.send(encode('connection', { info: { ...info } }, { id: 9 }), [theirs]);
    expect((await p.reply(9)).t).toBe('accepted');
    mine.close();
  });

  it('a log option that throws, a throwing onServerName and a throwing connection listener crash nothing', async () => {
    const { path, server } = await backend({
      log: () => {
        throw new Error('log broke');
      },
      onServerName: () => {
        throw new Error('check broke');
      },
    });
    server.on('connection', () => {
      throw new Error('listener broke');
    });
    const p = await rawProxy(path);
    p.ch.send(encode('server-name', { serverName: 'a.test', info: {} }, { id: 1 }));
    expect((await p.reply(1)).t).toBe('error');
    p.ch.send(encode('bogus', {}, { id: 2 }));
    expect((await p.reply(2)).t).toBe('error');
    const [mine, theirs] = socketpair();
    p.ch.send(encode('connection', { info: { ...handoffInfo() } }, { id: 3 }), [theirs]);
    expect((await p.reply(3)).t).toBe('accepted');
    await new Promise((r) => setTimeout(r, 30));
    // one answer per request, not an 'accepted' and then an error
    expect(p.replies.filter((r) => r.re === 3)).toHaveLength(1);
    expect(uncaught).toEqual([]);
    mine.close();
  });

  it('control results of the wrong type are a TLSPROXY_ERR_BACKEND_CONTROL rejection', async () => {
    const { path, server } = await backend();
    const proxy = await FakeProxy.connect({ path });
    cleanup.push(() => proxy.close());
    const got = server.accept();
    const { client } = await proxy.handoff();
    const a = await got;
    cleanup.push(() => {
      a.socket.destroy();
      client.destroy();
    });
    for (const result of [5, { x: 1 }, null, ['AAAA']]) {
      proxy.onControl = () => result;
      await expect(a.control.exporter('EXPERIMENTAL-x', 16)).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_BACKEND_CONTROL',
      });
    }
    for (const result of [5, 'x', null, []]) {
      proxy.onControl = () => result;
      await expect(a.control.info()).rejects.toMatchObject({
        code: 'TLSPROXY_ERR_BACKEND_CONTROL',
      });
    }
    proxy.onControl = () => 'x';
    await expect(a.control.renegotiate()).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_BACKEND_CONTROL',
    });
    expect(uncaught).toEqual([]);
  });

  it('property: arbitrary messages never crash the backend or leak descriptors', async () => {
    const { path, server } = await backend();
    server.on('connection', (s) => s.destroy());
    const before = await settledFdCount();
    const name = fc.oneof(
      fc.constantFrom(...PROTO_NAMES),
      fc.constantFrom(
        'connection',
        'server-name',
        'control',
        'accepted',
        'control-result',
        'server-name-ok',
        'hello',
        'error',
      ),
      fc.string({ maxLength: 8 }),
    );
    const value = fc.oneof(
      fc.constantFrom(...PROTO_NAMES),
      fc.jsonValue({ maxDepth: 2 }),
      fc.constant(handoffInfo() as unknown),
    );
    const body = fc.oneof(
      fc.dictionary(
        fc.oneof(name, fc.constantFrom('info', 'serverName', 'key', 'op', 'args', 'result')),
        value,
        {
          maxKeys: 4,
        },
      ),
      fc.record({
        info: fc.dictionary(fc.oneof(name, fc.constantFrom(...Object.keys(handoffInfo()))), value),
      }),
    );
    await fc.assert(
      fc.asyncProperty(
        name,
        body,
        fc.integer({ min: 0, max: 2 }),
        fc.boolean(),
        async (t, b, nfds, stream) => {
          const p = await rawProxy(path);
          const fds: OwnedFd[] = [];
          const peers: net.Socket[] = [];
          for (let i = 0; i < nfds; i++) {
            if (stream) {
              const [mine, theirs] = socketpair();
              peers.push(mine.toSocket());
              fds.push(theirs);
            } else fds.push(devnull());
          }
          p.ch.send(encode(t, b as Record<string, unknown>, { id: 1 }), fds);
          p.ch.send(encode('bogus', {}, { id: 2 }));
          await p.reply(2).catch(() => {});
          expect(uncaught).toEqual([]);
          for (const s of peers) s.destroy();
          p.ch.close();
        },
      ),
      { numRuns: 150, interruptAfterTimeLimit: 15_000 },
    );
    await new Promise((r) => setTimeout(r, 50));
    await noFdLeak(before);
    expect(uncaught).toEqual([]);
  }, 60_000);
});

describe('the backend declares in its hello that it checks server names', () => {
  it('features.checkServerName is true with onServerName, false without', async () => {
    const withCheck = await backend({ onServerName: () => true });
    const a = await rawProxy(withCheck.path);
    expect(a.hello()?.b).toMatchObject({
      protocol: PROTOCOL_NAME,
      version: PROTOCOL_VERSION,
      features: { checkServerName: true },
    });
    const without = await backend();
    const b = await rawProxy(without.path);
    expect(b.hello()?.b).toMatchObject({ features: { checkServerName: false } });
  });

  it('a proxy that reads the hello sees it through the shared helper', async () => {
    const { path } = await backend({ onServerName: () => false });
    const proxy = await FakeProxy.connect({ path });
    cleanup.push(() => proxy.close());
    const { readBackendFeatures } = await import('../src/index.js');
    expect(readBackendFeatures((await proxy.peer.ready).hello)).toEqual({ checkServerName: true });
    expect(readBackendFeatures({})).toEqual({ checkServerName: false });
    expect(readBackendFeatures({ features: { checkServerName: 'yes' } })).toEqual({
      checkServerName: false,
    });
    expect(readBackendFeatures({ features: 'x' })).toEqual({ checkServerName: false });
  });

  it('an error answer from an old proxy is tolerated and logged once', async () => {
    const { path, logs } = await backend({ onServerName: () => true });
    const p = await rawProxy(path);
    for (let i = 0; i < 3; i++)
      p.ch.send(
        encode('error', {
          code: 'TLSPROXY_ERR_FDPASS_PROTOCOL',
          message: 'unknown message type "x"',
        }),
      );
    p.ch.send(encode('bogus', {}, { id: 1 }));
    await p.reply(1);
    expect(
      logs.filter((l) => /TLSPROXY_ERR_FDPASS_PROTOCOL/.test(l) && /proxy answered/.test(l)),
    ).toHaveLength(1);
    expect(uncaught).toEqual([]);
  });
});

describe('dialectStateOrigin', () => {
  it("is 'pre-tls', also when the proxy does not send it yet", async () => {
    const { path, server } = await backend();
    const proxy = await FakeProxy.connect({ path });
    cleanup.push(() => proxy.close());
    const { dialectStateOrigin: _, ...old } = handoffInfo();
    const got = server.accept();
    const { client } = await proxy.handoff(old as ReturnType<typeof handoffInfo>);
    const a = await got;
    expect(a.info.dialectStateOrigin).toBe('pre-tls');
    expect(a.info.dialectState).toEqual({ tag: 'a1' });
    a.socket.destroy();
    client.destroy();
  });
});

describe('rolling restart', () => {
  it('a stopping backend leaves its successor reachable', async () => {
    const path = tmpSock('rolling');
    const old = await listen({ path });
    cleanup.push(() => old.close());
    // The successor takes the path over (the old file is removed first: a live socket there is
    // refused with TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE), then the old backend stops.
    await expect(listen({ path })).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_FDPASS_ADDRESS_IN_USE',
    });
    unlinkSync(path);
    const next = await listen({ path });
    cleanup.push(() => next.close());
    await old.close();
    const proxy = await FakeProxy.connect({ path });
    cleanup.push(() => proxy.close());
    const got = next.accept();
    const { client, reply } = await proxy.handoff();
    expect(reply.type).toBe('accepted');
    (await got).socket.destroy();
    client.destroy();
  });
});

describe('answers to control requests', () => {
  it('an answer of another type is a rejection, and descriptors it carries are closed', async () => {
    const { path, server } = await backend();
    const p = await rawProxy(path);
    const [mine, theirs] = socketpair();
    p.ch.send(encode('connection', { info: { ...handoffInfo() } }, { id: 1 }), [theirs]);
    const a = await server.accept();
    cleanup.push(() => {
      a.socket.destroy();
      mine.close();
    });
    await p.reply(1);
    const before = await settledFdCount();
    const pending = a.control.info();
    await until(() => p.replies.some((r) => r.t === 'control'), 3000, 'the control request');
    // decode() in rawProxy dropped the id; the backend's first request id is 1.
    const [x, y] = socketpair();
    p.ch.send(encode('connection', { info: { ...handoffInfo() } }, { re: 1 }), [y]);
    await expect(pending).rejects.toMatchObject({ code: 'TLSPROXY_ERR_BACKEND_CONTROL' });
    x.close();
    await new Promise((r) => setTimeout(r, 20));
    await noFdLeak(before);
    expect(uncaught).toEqual([]);
  });
});
