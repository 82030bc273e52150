// Issue 14: a peer picks the message type, the field names and the field values. None of them may
// reach a non-handler (Object.prototype members) or crash the process; every bad message gets an
// error reply (or the channel closes) and its descriptors are closed.
import { openSync } from 'node:fs';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Channel,
  channelPair,
  decode,
  defineProtocol,
  encode,
  type FdpassError,
  type Incoming,
  OwnedFd,
  type Peer,
} from '../src/index.js';
import { fdCount } from './helpers.js';

const PROTO_NAMES = Object.getOwnPropertyNames(Object.prototype);

const proto = defineProtocol({
  name: 'test-hostile',
  version: 1,
  messages: {
    conn: { fields: { dialect: 'string', port: 'integer', sni: 'string|null' }, fds: 1 },
    ping: { fields: {} },
    pong: { fields: {} },
    note: { fields: { text: 'string?', extra: 'any?' }, fds: [0, 2], attachment: true },
  },
});

// Anything thrown outside a catch (the poll callback reports it as uncaught) lands here.
const uncaught: unknown[] = [];
const onUncaught = (err: unknown) => uncaught.push(err);
beforeEach(() => {
  uncaught.length = 0;
  process.on('uncaughtException', onUncaught);
});
afterEach(() => {
  process.off('uncaughtException', onUncaught);
});

/** A raw peer (the test) talking to a Peer (the code under test) over a real socketpair. */
async function rawPair(): Promise<{
  raw: Channel;
  peer: Peer;
  replies: Array<{ t: string; b: Record<string, unknown>; re?: number }>;
  delivered: Incoming[];
  invalid: FdpassError[];
}> {
  const [raw, y] = channelPair();
  const peer = proto.attach(y);
  const replies: Array<{ t: string; b: Record<string, unknown>; re?: number }> = [];
  raw.on('message', (m) => {
    for (const f of m.fds) f.close();
    const d = decode(m.data);
    replies.push({
      t: d.t,
      b: d.b as Record<string, unknown>,
      ...(d.re !== undefined ? { re: d.re } : {}),
    });
  });
  const delivered: Incoming[] = [];
  peer.on('message', (m) => {
    for (const f of m.fds) f.close();
    delivered.push(m);
    if (m.type === 'ping') peer.reply(m, 'pong', {});
  });
  const invalid: FdpassError[] = [];
  peer.on('invalid', (e) => invalid.push(e));
  raw.send(encode('hello', { protocol: 'test-hostile', version: 1 }));
  await peer.ready;
  return { raw, peer, replies, delivered, invalid };
}

/** Frame a header given as JSON text (so "__proto__" can be an own key on the wire). */
function frame(headerJson: string, attachment = Buffer.alloc(0)): Buffer {
  const json = Buffer.from(headerJson);
  const out = Buffer.alloc(4 + json.length + attachment.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  attachment.copy(out, 4 + json.length);
  return out;
}

/** JSON object text from entries, keeping every key (JSON.stringify of an object would drop
 * or reinterpret "__proto__"). */
function objectJson(entries: Array<[string, string]>): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(',')}}`;
}

const devnull = () => new OwnedFd(openSync('/dev/null', 'r'));

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 2));
  }
}

describe('peer-selected names never reach Object.prototype', () => {
  it.each(PROTO_NAMES)('type %s gets an error reply and the peer lives on', async (name) => {
    const before = fdCount();
    const { raw, peer, replies, invalid } = await rawPair();
    raw.send(
      frame(
        objectJson([
          ['t', JSON.stringify(name)],
          ['b', '{}'],
          ['id', '7'],
        ]),
      ),
      [devnull()],
    );
    raw.send(encode('ping', {}, { id: 8 }));
    await until(() => replies.some((r) => r.t === 'pong') || peer.closed);
    expect(uncaught).toEqual([]);
    expect(replies.find((r) => r.re === 7)).toMatchObject({
      t: 'error',
      b: { code: 'TLSPROXY_ERR_FDPASS_PROTOCOL' },
    });
    expect(replies.find((r) => r.re === 8)?.t).toBe('pong');
    expect(invalid).toHaveLength(1);
    raw.close();
    peer.close();
    expect(fdCount()).toBe(before);
  });

  it('a "__proto__" key in the header or the body changes nothing', async () => {
    const { raw, peer, replies, delivered } = await rawPair();
    raw.send(
      frame(
        objectJson([
          ['__proto__', '{"t":"ping","b":{}}'],
          ['id', '1'],
        ]),
      ),
    );
    raw.send(
      frame(
        objectJson([
          ['t', '"ping"'],
          ['b', objectJson([['__proto__', '{"x":1}']])],
          ['id', '2'],
        ]),
      ),
    );
    await until(() => replies.length >= 2);
    // The header parsed, so the error answers its id even though it has no usable type.
    expect(uncaught).toEqual([]);
    expect(replies.find((r) => r.re === 1)).toMatchObject({
      t: 'error',
      b: { message: 'header has no type' },
    });
    expect(replies.find((r) => r.re === 2)?.t).toBe('pong');
    expect(delivered).toHaveLength(1);
    raw.close();
    peer.close();
  });

  it('a required field named like an Object.prototype member must be an own property', async () => {
    const p = defineProtocol({
      name: 'test-proto-fields',
      version: 1,
      messages: { m: { fields: { constructor: 'any' as const, toString: 'any' as const } } },
    });
    const [raw, y] = channelPair();
    const peer = p.attach(y);
    const got: Incoming[] = [];
    const invalid: FdpassError[] = [];
    peer.on('message', (m) => got.push(m));
    peer.on('invalid', (e) => invalid.push(e));
    raw.send(encode('hello', { protocol: 'test-proto-fields', version: 1 }));
    await peer.ready;
    raw.send(encode('m', {}));
    raw.send(frame('{"t":"m","b":{"constructor":1,"toString":null}}'));
    await until(() => got.length + invalid.length >= 2);
    expect(invalid.map((e) => e.message)).toEqual(['m: field "constructor" is missing']);
    expect(got.map((m) => m.body)).toEqual([{ constructor: 1, toString: null }]);
    raw.close();
    peer.close();
  });

  it('a protocol may name its messages like Object.prototype members', async () => {
    const p = defineProtocol({
      name: 'test-proto-types',
      version: 1,
      messages: { toString: { fields: { v: 'integer' as const } }, constructor: { fields: {} } },
    });
    const [x, y] = channelPair();
    const a = p.attach(x);
    const b = p.attach(y);
    await Promise.all([a.ready, b.ready]);
    const got = new Promise<Incoming>((r) => b.once('message', r));
    a.send('toString', { v: 1 });
    expect((await got).body).toEqual({ v: 1 });
    expect(() => a.send('hasOwnProperty', {})).toThrow(/unknown message type/);
    expect(() =>
      defineProtocol({ name: 'x', version: 1, messages: { hello: { fields: {} } } }),
    ).toThrow(/reserved/);
    a.close();
    b.close();
  });
});

describe('property: arbitrary messages from a raw peer', () => {
  const name = fc.oneof(
    fc.constantFrom(...PROTO_NAMES),
    fc.constantFrom('conn', 'ping', 'pong', 'note', 'hello', 'error'),
    fc.string({ maxLength: 12 }),
  );
  const jsonValue = fc.oneof(
    fc.constantFrom(...PROTO_NAMES).map((s) => JSON.stringify(s)),
    fc.jsonValue({ maxDepth: 2 }).map((v) => JSON.stringify(v) ?? 'null'),
  );
  const body = fc.oneof(
    fc.array(fc.tuple(name, jsonValue), { maxLength: 5 }).map(objectJson),
    jsonValue,
  );
  const id = fc.oneof(
    fc.constant(undefined),
    fc.integer({ min: 0, max: 1000 }).map(String),
    jsonValue,
  );
  const header = fc
    .record({
      t: fc.oneof(
        name.map((s) => JSON.stringify(s)),
        jsonValue,
      ),
      b: fc.option(body, { nil: undefined }),
      id,
      re: fc.oneof(fc.constant(undefined), jsonValue),
      proto: fc.option(fc.constantFrom('{}', '{"t":"ping"}', 'null', '[]'), { nil: undefined }),
      extra: fc.array(fc.tuple(name, jsonValue), { maxLength: 2 }),
    })
    .map((h) => {
      const entries: Array<[string, string]> = [];
      if (h.proto !== undefined) entries.push(['__proto__', h.proto]);
      entries.push(['t', h.t]);
      if (h.b !== undefined) entries.push(['b', h.b]);
      if (h.id !== undefined) entries.push(['id', h.id]);
      if (h.re !== undefined) entries.push(['re', h.re]);
      entries.push(...h.extra);
      return objectJson(entries);
    });

  it('the process survives, the peer answers or closes, and no descriptor leaks', async () => {
    const before = fdCount();
    await fc.assert(
      fc.asyncProperty(
        header,
        fc.integer({ min: 0, max: 2 }),
        fc.boolean(),
        async (h, nfds, withAttachment) => {
          const { raw, peer, replies, delivered, invalid } = await rawPair();
          let ended = false;
          raw.on('close', () => {
            ended = true;
          });
          const fds = Array.from({ length: nfds }, devnull);
          raw.send(frame(h, withAttachment ? Buffer.from('att') : undefined), fds);
          // A ping after it: the peer must still answer (or have closed the channel on purpose).
          raw.send(encode('ping', {}, { id: 424242 }));
          await until(() => ended || replies.some((r) => r.re === 424242));
          expect(uncaught).toEqual([]);
          const parsed = (() => {
            try {
              return JSON.parse(h) as { t?: unknown };
            } catch {
              return undefined;
            }
          })();
          const t = parsed?.t;
          if (typeof t === 'string' && PROTO_NAMES.includes(t)) {
            // Never a handler: an error reply, an 'invalid' event.
            expect(replies.some((r) => r.t === 'error')).toBe(true);
            expect(invalid.length).toBeGreaterThanOrEqual(1);
          }
          // Every message is accounted for: delivered (one ping, maybe the fuzzed one),
          // refused with an error, or a hello/error the layer consumed.
          expect(delivered.length + invalid.length).toBeGreaterThanOrEqual(ended ? 0 : 1);
          raw.close();
          peer.close();
        },
      ),
      { numRuns: 400, interruptAfterTimeLimit: 20_000 },
    );
    await new Promise((r) => setTimeout(r, 20));
    expect(uncaught).toEqual([]);
    expect(fdCount()).toBe(before);
  }, 60_000);
});
