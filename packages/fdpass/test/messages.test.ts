import { openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  channelPair,
  decode,
  defineProtocol,
  encode,
  type FdpassError,
  type Incoming,
  OwnedFd,
} from '../src/index.js';
import { fdCount } from './helpers.js';

const handoff = defineProtocol({
  name: 'test-handoff',
  version: 1,
  messages: {
    conn: {
      fields: { dialect: 'string', port: 'integer', sni: 'string|null' },
      fds: 1,
      attachment: true,
    },
    ping: { fields: {} },
    pong: { fields: { at: 'number' } },
  },
});

function pair(a = handoff, b = handoff) {
  const [x, y] = channelPair();
  return [a.attach(x), b.attach(y)] as const;
}

describe('message layer', () => {
  it('exchanges hello, then typed messages with descriptors and attachment', async () => {
    const [p, q] = pair();
    await Promise.all([p.ready, q.ready]);
    const got = new Promise<Incoming>((r) => q.once('message', r));
    p.send(
      'conn',
      { dialect: 'imap', port: 143, sni: null },
      {
        fds: [new OwnedFd(openSync('/dev/null', 'r'))],
        attachment: Buffer.from('leftover'),
      },
    );
    const m = await got;
    expect(m.type).toBe('conn');
    expect(m.body).toEqual({ dialect: 'imap', port: 143, sni: null });
    expect(m.attachment.toString()).toBe('leftover');
    expect(m.fds).toHaveLength(1);
    m.fds[0]!.close();
    p.close();
  });

  it('matches requests and replies, and rejects on a remote error', async () => {
    const [p, q] = pair();
    q.on('message', (m) => {
      if (m.type === 'ping') q.reply(m, 'pong', { at: 42 });
    });
    const r = await p.request('ping', {});
    expect(r.type).toBe('pong');
    expect(r.body.at).toBe(42);
    q.removeAllListeners('message');
    q.on('message', (m) => q.replyError(m, 'TLSPROXY_ERR_TEST', 'no thanks'));
    await expect(p.request('ping', {})).rejects.toMatchObject({
      code: 'TLSPROXY_ERR_FDPASS_REMOTE',
    });
    await expect(p.request('ping', {}, { timeoutMs: 1 }).catch((e) => e)).resolves.toBeDefined();
    p.close();
  });

  it('refuses a peer with another version at hello', async () => {
    const v2 = defineProtocol({ name: 'test-handoff', version: 2, messages: {} });
    const [p, q] = pair(handoff, v2);
    await expect(p.ready).rejects.toMatchObject({ code: 'TLSPROXY_ERR_FDPASS_VERSION' });
    await expect(q.ready).rejects.toBeDefined();
  });

  it('answers malformed, unknown and schema-violating messages with an error and closes their fds', async () => {
    const [x, y] = channelPair();
    const q = handoff.attach(y);
    const errors: Array<Record<string, unknown>> = [];
    x.on('message', (m) => {
      const d = decode(m.data);
      if (d.t === 'error') errors.push(d.b as Record<string, unknown>);
    });
    const invalid: FdpassError[] = [];
    q.on('invalid', (e) => invalid.push(e));
    x.send(encode('hello', { protocol: 'test-handoff', version: 1 }));
    await q.ready;
    const before = fdCount();
    const devnull = () => new OwnedFd(openSync('/dev/null', 'r'));
    x.send(Buffer.from('not framed'), [devnull()]);
    x.send(encode('nope', {}), [devnull()]);
    x.send(encode('conn', { dialect: 5, port: 1, sni: null }), [devnull()]);
    x.send(encode('conn', { dialect: 'x', port: 1, sni: null }), []); // needs exactly one fd
    x.send(encode('ping', {}), [devnull(), devnull()]); // carries fds it may not
    await new Promise((r) => setTimeout(r, 50));
    expect(invalid).toHaveLength(5);
    expect(errors.map((e) => e.code)).toEqual(Array(5).fill('TLSPROXY_ERR_FDPASS_PROTOCOL'));
    expect(fdCount()).toBe(before);
    x.close();
  });

  it('checks our own messages before sending them', () => {
    const [p] = pair();
    expect(() => p.send('conn', { dialect: 'imap', port: 'x', sni: null })).toThrow(/port/);
    expect(() => p.send('nope', {})).toThrow(/unknown message type/);
    p.close();
  });
});

describe('message layer send failures', () => {
  it('fails a request at once when its message cannot be sent', async () => {
    const [p] = pair();
    const big = Buffer.alloc(70 * 1024);
    const t0 = Date.now();
    await expect(
      p.request(
        'conn',
        { dialect: 'x', port: 1, sni: null },
        {
          fds: [new OwnedFd(openSync('/dev/null', 'r'))],
          attachment: big,
          timeoutMs: 5000,
        },
      ),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_FDPASS_TOO_BIG' });
    expect(Date.now() - t0).toBeLessThan(1000);
    p.close();
  });
});
