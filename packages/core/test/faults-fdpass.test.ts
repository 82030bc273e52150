// Malformed fdpass messages from a peer holding the right uid (issue 8, faults): a fake backend
// (@tlsproxy/fdpass listen, same uid) takes the proxy's backend channel, completes the hello of
// the backend protocol, and sends garbage — random payloads, bad headers, unknown types, schema
// violations, descriptors on messages that take none, valid messages the proxy never expects.
// The proxy answers each with an error message, closes every descriptor it received (counted in
// /proc/self/fd: this process is the proxy), keeps serving, reconnects after it cut the channel,
// and never crashes.
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readdirSync, readlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backendProtocol } from '@tlsproxy/backend';
import {
  type Channel,
  encode,
  type Incoming,
  listen,
  MAX_INVALID,
  type Peer,
  type SeqpacketServer,
} from '@tlsproxy/fdpass';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TlsProxy } from '../src/index.js';
import { imapAttempt, settle, watchProcess } from './faults-util.js';
import { sleep, startProxy, tmpSock } from './helpers.js';

/** Descriptors we attach all point at this file: any left open in this process is a leak. */
const marker = join(tmpdir(), `core-${process.pid}-fdpass-marker`);
const markersOpen = () =>
  readdirSync('/proc/self/fd').filter((f) => {
    try {
      return readlinkSync(`/proc/self/fd/${f}`) === marker;
    } catch {
      return false;
    }
  }).length;

/** Send `data` with `n` marker descriptors (borrowed: ours are closed once the kernel has them). */
function sendRaw(ch: Channel, data: Uint8Array, n: number): Promise<void> {
  const fds = Array.from({ length: n }, () => openSync(marker, 'r'));
  return new Promise<void>((resolve) => {
    try {
      ch.send(data, fds, () => {
        for (const f of fds) closeSync(f);
        resolve();
      });
    } catch {
      for (const f of fds) closeSync(f);
      resolve();
    }
  });
}

const header = (h: unknown, attachment: Uint8Array = new Uint8Array(0)) => {
  const json = Buffer.from(JSON.stringify(h));
  const out = Buffer.alloc(4 + json.length + attachment.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  out.set(attachment, 4 + json.length);
  return out;
};

type Mode = 'serve' | 'reply-with-fd';

/** The fake backend: its channels, the errors the proxy sent it, and how it treats hand-offs. */
class FakeBackend {
  readonly server: SeqpacketServer;
  readonly channels: Array<{ ch: Channel; peer: Peer; errors: string[] }> = [];
  mode: Mode = 'serve';
  constructor(readonly path: string) {
    this.server = listen({ path });
    this.server.on('connection', (ch: Channel) => {
      const peer = backendProtocol.attach(ch);
      const entry = { ch, peer, errors: [] as string[] };
      this.channels.push(entry);
      peer.on('remoteError', (e) => entry.errors.push(e.message));
      peer.on('message', (m) => this.#onMessage(peer, m));
    });
  }
  get current() {
    const c = this.channels.at(-1);
    return c && !c.ch.closed ? c : undefined;
  }
  #onMessage(peer: Peer, m: Incoming): void {
    if (m.type === 'server-name') {
      if (this.mode === 'reply-with-fd') {
        // a reply of a type that carries a descriptor (valid by its schema)
        void sendRaw(peer.channel, encode('connection', { info: {} }, { re: m.id! }), 1);
      } else peer.reply(m, 'server-name-ok', { accept: true });
      return;
    }
    if (m.type !== 'connection') {
      for (const f of m.fds) f.close();
      return;
    }
    if (this.mode === 'reply-with-fd') {
      for (const f of m.fds) f.close();
      void sendRaw(peer.channel, encode('connection', { info: {} }, { re: m.id! }), 1);
      return;
    }
    const socket = m.fds[0]!.toSocket();
    socket.on('error', () => {});
    peer.reply(m, 'accepted', {});
    socket.on('data', (d: Buffer) => {
      for (const line of String(d).split('\r\n').filter(Boolean))
        socket.write(`${line.split(' ')[0]} OK done\r\n`);
    });
    socket.on('end', () => socket.end());
  }
  close() {
    for (const c of this.channels) c.peer.close();
    this.server.close();
  }
}

/** Garbage that is invalid at the fdpass layer, each with the descriptors it carries. */
const invalid: Array<[string, () => Uint8Array, number]> = [
  ['empty payload', () => new Uint8Array(0), 1],
  ['short prefix', () => Buffer.from([0, 0]), 2],
  ['random bytes', () => randomBytes(48), 3],
  ['header length past the end', () => Buffer.from([0xff, 0xff, 0xff, 0xff, 1, 2, 3]), 1],
  ['header not JSON', () => Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]), 1],
  ['header without a type', () => header({ b: {} }), 1],
  ['bad id', () => header({ t: 'control', b: {}, id: 'x' }), 1],
  ['unknown type', () => header({ t: 'bogus', b: {}, id: 7 }), 2],
  ['control missing fields', () => header({ t: 'control', b: { key: 1 }, id: 8 }), 0],
  [
    'control with descriptors',
    () => header({ t: 'control', b: { key: 'k', op: 'info', args: {} }, id: 9 }),
    2,
  ],
  ['accepted with a descriptor', () => header({ t: 'accepted', b: {}, id: 10 }), 1],
  ['error with a descriptor', () => header({ t: 'error', b: { code: 'X', message: 'y' } }), 1],
  ['hello with a descriptor', () => header({ t: 'hello', b: { protocol: 'x', version: 1 } }), 1],
  [
    'connection with three descriptors',
    () => header({ t: 'connection', b: { info: {} }, id: 11 }, randomBytes(8)),
    3,
  ],
];
/** Valid by the schema, but nothing the proxy expects from a backend. */
const unexpected: Array<[string, () => Uint8Array, number]> = [
  ['unsolicited connection', () => header({ t: 'connection', b: { info: {} }, id: 20 }), 1],
  ['unsolicited server-name-ok', () => header({ t: 'server-name-ok', b: { accept: true } }), 0],
  [
    'control with an unknown key',
    () => header({ t: 'control', b: { key: '00'.repeat(16), op: 'info', args: {} }, id: 21 }),
    0,
  ],
  ['reply to nothing', () => header({ t: 'accepted', b: {}, re: 999 }), 0],
];

describe('malformed fdpass messages from the backend', () => {
  let fake: FakeBackend;
  let proxy: TlsProxy;
  let port: number;
  let lines: string[];
  let watch: ReturnType<typeof watchProcess>;

  beforeAll(async () => {
    writeFileSync(marker, 'marker');
    watch = watchProcess();
    fake = new FakeBackend(tmpSock('fake-backend'));
    const p = await startProxy(`unix:${fake.path}`);
    proxy = p.proxy;
    port = p.port;
    lines = p.logger.lines;
  });
  afterAll(async () => {
    watch.stop();
    await proxy?.close();
    fake?.close();
  });

  it('answers each with an error, closes every descriptor, keeps serving', async () => {
    // The proxy opens its channel at the first STARTTLS; a full session proves it works.
    expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
    const c = fake.current!;
    expect(c).toBeDefined();
    await c.peer.ready;
    expect(markersOpen()).toBe(0);

    const all = [...invalid, ...unexpected];
    expect(invalid.length).toBeLessThan(MAX_INVALID); // the channel must survive this round
    for (const [, make, n] of all) await sendRaw(c.ch, make(), n);
    const answered = await settle(() => c.errors.length >= all.length, 5000);
    expect(answered, `errors: ${JSON.stringify(c.errors)}`).toBe(true);
    expect(c.errors.length).toBe(all.length);
    expect(c.errors.join('\n')).toMatch(/unknown message type "bogus"/);
    expect(c.errors.join('\n')).toMatch(/carries 2 descriptors, expected 0/);
    expect(c.errors.join('\n')).toMatch(/unknown control key/);
    expect(await settle(() => markersOpen() === 0, 2000), `${markersOpen()} left open`).toBe(true);
    expect(lines.some((l) => l.includes('bad message from backend'))).toBe(true);

    // same channel, still serving
    expect(c.ch.closed).toBe(false);
    expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
    expect(fake.current).toBe(c);
    expect(watch.rejections).toEqual([]);
  });

  it('cuts a channel that keeps sending garbage, then reconnects', async () => {
    if (!fake.current) expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
    const c = fake.current!;
    const closed = new Promise<void>((r) => c.ch.once('close', () => r()));
    for (let i = 0; i < MAX_INVALID + 4 && !c.ch.closed; i++)
      await sendRaw(c.ch, randomBytes(20), 1);
    await Promise.race([closed, sleep(3000)]);
    expect(c.ch.closed).toBe(true);
    expect(await settle(() => markersOpen() === 0, 2000), `${markersOpen()} left open`).toBe(true);
    const before = fake.channels.length;
    expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
    expect(fake.channels.length).toBe(before + 1);
    expect(watch.rejections).toEqual([]);
  });

  it('survives random messages (fast-check), descriptors closed, service intact', async () => {
    const types = ['hello', 'error', 'server-name', 'server-name-ok', 'connection', 'accepted'];
    const arb = fc.record({
      kind: fc.constantFrom('raw', 'framed'),
      raw: fc.uint8Array({ maxLength: 64 }),
      t: fc.oneof(fc.constantFrom(...types, 'control', 'control-result'), fc.string()),
      b: fc.oneof(fc.object(), fc.jsonValue()),
      id: fc.option(fc.oneof(fc.integer(), fc.string()), { nil: undefined }),
      re: fc.option(fc.integer({ min: 1000, max: 2000 }), { nil: undefined }),
      att: fc.uint8Array({ maxLength: 16 }),
      fds: fc.integer({ min: 0, max: 4 }),
    });
    let sent = 0;
    const deadline = Date.now() + 4000;
    for (const m of fc.sample(arb, 400)) {
      if (Date.now() > deadline) break;
      if (!fake.current) expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
      const c = fake.current!;
      await c.peer.ready;
      // never a hello the proxy would refuse (that closes the channel by design)
      const t = m.t === 'hello' ? 'bogus-hello' : m.t;
      const data =
        m.kind === 'raw'
          ? m.raw
          : header({ t, b: m.b, ...(m.id !== undefined ? { id: m.id } : {}), re: m.re }, m.att);
      await sendRaw(c.ch, data, m.fds);
      sent++;
    }
    expect(sent).toBeGreaterThan(50);
    await sleep(200);
    expect(await settle(() => markersOpen() === 0, 2000), `${markersOpen()} left open`).toBe(true);
    expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
    expect(watch.rejections).toEqual([]);
  }, 20_000);

  // The backend answers a request of the proxy with a message whose type takes one descriptor
  // (valid by its schema, so it resolves the request): the proxy has no use for the descriptor
  // and must close it.
  it('closes a descriptor that comes with the answer to a hand-off', async () => {
    fake.mode = 'reply-with-fd';
    try {
      const r = await imapAttempt(port, 7000);
      expect(['closed', 'ok']).toContain(r.outcome);
      await sleep(300);
      const gone = await settle(() => markersOpen() === 0, 2000);
      expect(gone, `${markersOpen()} left open`).toBe(true);
    } finally {
      fake.mode = 'serve';
    }
    expect((await imapAttempt(port, 5000)).outcome).toBe('ok');
  });

  it('closes a descriptor that comes with the answer to an SNI check', async () => {
    const l = await proxy.listen({
      dialect: 'imap',
      listen: '127.0.0.1:0',
      backend: `unix:${fake.path}`,
      hostname: 'test.example',
      checkServerName: true,
    });
    const sniPort = (l.server.address() as { port: number }).port;
    const before = markersOpen();
    fake.mode = 'reply-with-fd';
    try {
      const r = await imapAttempt(sniPort, 7000);
      expect(r.outcome).toBe('closed'); // the name is refused: no valid answer
      await sleep(300);
      const gone = await settle(() => markersOpen() === before, 2000);
      expect(gone, `${markersOpen() - before} left open`).toBe(true);
    } finally {
      fake.mode = 'serve';
    }
    expect((await imapAttempt(sniPort, 5000)).outcome).toBe('ok');
  });
});
