import type { Action } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES } from '@tlsproxy/dialect-kit/testing';
import { describe, expect, it } from 'vitest';
import { HttpProtocolError, isHttpProtocolError } from '../src/index.js';
import {
  CUPS_UPGRADE,
  dec,
  enc,
  feed,
  newSession,
  only,
  status,
  UPGRADE,
  written,
} from './helpers.js';

const GO_AHEAD =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: TLS/1.0, HTTP/1.1\r\nConnection: Upgrade\r\n\r\n';

const starttls = (actions: Action[]) => only(actions, 'starttls')[0]!;

function req(fields: string[], line = 'OPTIONS * HTTP/1.1', body = ''): string {
  return `${line}\r\n${fields.map((f) => `${f}\r\n`).join('')}\r\n${body}`;
}
const UP = ['Host: localhost', 'Connection: Upgrade', 'Upgrade: TLS/1.0'];

describe('the upgrade (RFC 2817 section 3)', () => {
  it('asks only for a timer at connect: the client speaks first', () => {
    expect(newSession().start(1000)).toEqual([{ type: 'timer', at: 61_000 }]);
    expect(newSession({}, { requestTimeoutMs: 0 }).start(0)).toEqual([]);
  });

  it('answers the CUPS upgrade request with 101 and hands over the original request', () => {
    const { actions, text } = feed([CUPS_UPGRADE]);
    expect(text).toBe(GO_AHEAD);
    const st = starttls(actions);
    expect(dec(st.goAhead)).toBe(GO_AHEAD);
    expect(status(dec(st.unavailable))).toBe('HTTP/1.1 503 Service Unavailable');
    expect(dec(st.unavailable)).toContain('Connection: close\r\n');
    expect(st.trailing).toHaveLength(0);
    expect(st.state).toEqual({
      method: 'OPTIONS',
      target: '*',
      version: 'HTTP/1.1',
      headers: [
        ['Date', 'Thu, 27 Nov 2025 07:00:00 GMT'],
        ['Accept-Language', 'en-US'],
        ['Connection', 'Upgrade'],
        ['Host', 'localhost:631'],
        ['Upgrade', 'TLS/1.2,TLS/1.1,TLS/1.0'],
        ['User-Agent', 'CUPS/2.4.2 (Linux 6.1; x86_64) IPP/2.0'],
      ],
      body: '',
    });
    expect(JSON.parse(JSON.stringify(st.state))).toEqual(st.state);
  });

  it.each([
    'TLS/1.0',
    'tls/1.0',
    'Tls/1.3',
    'TLS',
    'h2c, TLS/1.2',
    'websocket ,  , tls/1.1',
    ',TLS/1.0,',
  ])('matches Upgrade: %s', (value) => {
    const { actions } = feed([req(['Host: a', 'Connection: upgrade', `Upgrade: ${value}`])]);
    expect(only(actions, 'starttls')).toHaveLength(1);
  });

  it.each([['keep-alive, Upgrade'], ['UPGRADE'], ['close,upgrade']])(
    'matches Connection: %s',
    (value) => {
      const { actions } = feed([req(['Host: a', `Connection: ${value}`, 'Upgrade: TLS/1.0'])]);
      expect(only(actions, 'starttls')).toHaveLength(1);
    },
  );

  it('combines repeated Upgrade and Connection field lines', () => {
    const r = req([
      'Host: a',
      'Connection: keep-alive',
      'Upgrade: h2c',
      'connection: Upgrade',
      'UPGRADE: TLS/1.0',
    ]);
    expect(only(feed([r]).actions, 'starttls')).toHaveLength(1);
  });

  it.each([
    ['Upgrade: h2c', 'Connection: Upgrade, HTTP2-Settings'],
    ['Upgrade: websocket', 'Connection: Upgrade'],
    ['Upgrade: TLS/2.0', 'Connection: Upgrade'],
    ['Upgrade: TLSv1.2', 'Connection: Upgrade'],
    ['Upgrade: TLS/1.0', 'Connection: keep-alive'],
    ['Upgrade: TLS/1.0', 'X-Connection: Upgrade'],
    ['Connection: Upgrade', 'X: y'],
  ])('answers 426 to %s + %s', (a, b) => {
    const { actions, text } = feed([req(['Host: a', a, b], 'GET / HTTP/1.1')]);
    expect(status(text)).toBe('HTTP/1.1 426 Upgrade Required');
    expect(actions.at(-1)!.type).toBe('close');
  });

  it('reads the content by Content-Length, then hands it over in base64', () => {
    const r = req([...UP, 'Content-Length: 5'], 'OPTIONS * HTTP/1.1', 'hello');
    const { actions, text } = feed([r, 'GET / HTTP/1.1\r\n\r\n']);
    expect(text).toBe(GO_AHEAD);
    const st = starttls(actions);
    expect(st.state.body).toBe(Buffer.from('hello').toString('base64'));
    expect(st.state.raw).toBeUndefined();
    // the pipelined request is never answered: later bytes are only logged
    expect(actions.slice(actions.indexOf(st) + 1).every((a) => a.type === 'log')).toBe(true);
  });

  it('waits for content split over many reads, and hands back what follows as trailing', () => {
    const r = req([...UP, 'Content-Length: 3'], 'OPTIONS * HTTP/1.1', 'abcGET / HTTP/1.1\r\n');
    const chunks = [...r].map((c) => c);
    const { actions } = feed(chunks);
    const st = starttls(actions);
    expect(Buffer.from(st.state.body as string, 'base64').toString()).toBe('abc');
    expect(st.trailing).toHaveLength(0); // one byte at a time: 'G' came in its own read
    const { actions: whole } = feed([r]);
    expect(dec(starttls(whole).trailing)).toBe('GET / HTTP/1.1\r\n');
  });

  it('puts the exact request octets in raw with the rawRequest option', () => {
    const r = `\r\n${req([...UP, 'Content-Length: 2'], 'OPTIONS * HTTP/1.1', 'hi')}`;
    const st = starttls(feed([r, 'more'], { rawRequest: true }).actions);
    expect(Buffer.from(st.state.raw as string, 'base64').toString('latin1')).toBe(r);
  });

  it('sends 100 Continue before the 101 when the client expects it (RFC 9110 section 7.8)', () => {
    const r = req([...UP, 'Content-Length: 2', 'Expect: 100-continue']);
    const s = feed([r]);
    expect(s.text).toBe('HTTP/1.1 100 Continue\r\n\r\n');
    const rest = s.session.receive(enc('ok'), 0);
    expect(written(rest)).toBe(GO_AHEAD);
    expect(feed([req([...UP, 'Expect: 100-continue'])]).text).toBe(
      `HTTP/1.1 100 Continue\r\n\r\n${GO_AHEAD}`,
    );
  });

  it('ignores Upgrade in HTTP/1.0 (RFC 9110 section 7.8): 426', () => {
    const text = feed([req(UP, 'GET / HTTP/1.0')]).text;
    expect(status(text)).toBe('HTTP/1.1 426 Upgrade Required');
    // and HTTP/1.0 needs no Host
    expect(status(feed(['GET / HTTP/1.0\r\n\r\n']).text)).toBe('HTTP/1.1 426 Upgrade Required');
  });

  it('takes HTTP/1.2+ as 1.1 and refuses other majors with 505', () => {
    expect(only(feed([req(UP, 'OPTIONS * HTTP/1.9')]).actions, 'starttls')).toHaveLength(1);
    expect(status(feed([req(UP, 'OPTIONS * HTTP/2.0')]).text)).toBe(
      'HTTP/1.1 505 HTTP Version Not Supported',
    );
    expect(status(feed(['PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']).text)).toMatch(/ 505 /);
  });

  it('skips a few empty lines before the request line (RFC 9112 section 2.2)', () => {
    expect(feed([`\r\n\n\r\n${UPGRADE}`]).text).toBe(GO_AHEAD);
    expect(status(feed([`${'\r\n'.repeat(9)}${UPGRADE}`]).text)).toMatch(/ 400 /);
  });

  it('accepts bare LF line ends', () => {
    expect(feed([UPGRADE.replaceAll('\r\n', '\n')]).text).toBe(GO_AHEAD);
  });
});

describe('responses', () => {
  it('426 carries the RFC 2817 section 4.2 headers, Content-Length and a Date', () => {
    const s = newSession();
    s.start(0);
    const now = Date.UTC(1994, 10, 6, 8, 49, 37);
    const acts = s.receive(enc('GET / HTTP/1.1\r\nHost: a\r\n\r\n'), now);
    const text = written(acts);
    const body =
      'This service requires TLS: send the request again with the header fields "Upgrade: TLS/1.0" and "Connection: Upgrade" (RFC 2817).\n';
    expect(text).toBe(
      'HTTP/1.1 426 Upgrade Required\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n' +
        'Upgrade: TLS/1.0, HTTP/1.1\r\nConnection: Upgrade, close\r\n' +
        `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    // the method report (test/commands.test.ts), then the close
    expect(acts).toHaveLength(2);
    expect(acts[0]).toMatchObject({ type: 'log', event: 'bad-command', command: 'GET' });
    expect(acts[1]).toMatchObject({ type: 'close', reason: expect.stringMatching(/UPGRADE_REQ/) });
  });

  it('answers HEAD without content but with its Content-Length', () => {
    const head = { upgradeMethods: ['HEAD'] };
    const refused = feed([req([...UP, 'Expect: tea'], 'HEAD / HTTP/1.1')], head).text;
    expect(refused).toMatch(/^HTTP\/1\.1 417 [\s\S]*\r\n\r\n$/);
    const text = feed(['HEAD / HTTP/1.1\r\nHost: a\r\n\r\n']).text;
    const [headers, body] = text.split('\r\n\r\n');
    expect(body).toBe('');
    expect(headers).toMatch(/Content-Length: [1-9][0-9]*/);
  });

  it('every error response has Content-Length matching its content and Connection: close', () => {
    for (const input of [
      'garbage\r\n',
      'GET / HTTP/1.1\r\n\r\n',
      req([...UP, 'Transfer-Encoding: chunked']),
      req([...UP, 'Content-Length: 99999']),
      req([...UP, 'Expect: tea']),
      `GET /${'x'.repeat(9000)} HTTP/1.1\r\n`,
      req(UP, 'GET / HTTP/3.0'),
    ]) {
      const text = feed([input]).text;
      const [head, body] = text.split('\r\n\r\n') as [string, string];
      expect(head).toMatch(/\r\nConnection: (Upgrade, )?close(\r\n|$)/);
      expect(head).toContain(`\r\nContent-Length: ${body.length}`);
    }
  });
});

describe('refusals', () => {
  const cases: [string, string, string][] = [
    ['a TLS ClientHello', '\u0016\u0003\u0001\u0002\u0000\u0001\u0000', '400 Bad Request'],
    ['a bad request line', 'HELLO\r\n', '400 Bad Request'],
    ['lower-case http', 'GET / http/1.1\r\n\r\n', '400 Bad Request'],
    ['obs-fold', req(['Host: a', 'X: a', ' b']), '400 Bad Request'],
    ['whitespace after the request line', req([' Host: a']), '400 Bad Request'],
    ['space before the colon', req(['Host : a']), '400 Bad Request'],
    ['a bare CR', 'GET / HTTP/1.1\rHost: a\r\n\r\n', '400 Bad Request'],
    ['a NUL in a value', req(['Host: a', 'X: a\u0000b']), '400 Bad Request'],
    ['no Host in HTTP/1.1', req(['Connection: Upgrade', 'Upgrade: TLS/1.0']), '400 Bad Request'],
    ['two Hosts', req([...UP, 'Host: b']), '400 Bad Request'],
    [
      'a bad Host',
      req(['Host: a b', 'Connection: Upgrade', 'Upgrade: TLS/1.0']),
      '400 Bad Request',
    ],
    ['"*" with GET', req(UP, 'GET * HTTP/1.1'), '400 Bad Request'],
    ['a relative target', req(UP, 'GET x HTTP/1.1'), '400 Bad Request'],
    ['CONNECT without port', req(UP, 'CONNECT a HTTP/1.1'), '400 Bad Request'],
    ['two lengths', req([...UP, 'Content-Length: 1', 'Content-Length: 2']), '400 Bad Request'],
    ['a bad length', req([...UP, 'Content-Length: -1']), '400 Bad Request'],
    [
      'TE and CL',
      req(['Host: a', 'Transfer-Encoding: chunked', 'Content-Length: 1']),
      '400 Bad Request',
    ],
    ['TE in 1.0', req(['Transfer-Encoding: chunked'], 'GET / HTTP/1.0'), '400 Bad Request'],
    ['TE with upgrade', req([...UP, 'Transfer-Encoding: chunked']), '411 Length Required'],
    ['a large content', req([...UP, 'Content-Length: 4097']), '413 Content Too Large'],
    [
      'a huge content',
      req([...UP, 'Content-Length: 99999999999999999999']),
      '413 Content Too Large',
    ],
    ['an unknown expectation', req([...UP, 'Expect: 100-continue, x']), '417 Expectation Failed'],
    ['a long request line', `GET /${'a'.repeat(8200)} HTTP/1.1\r\n`, '414 URI Too Long'],
    [
      'a long field line',
      req(['Host: a', `X: ${'a'.repeat(8200)}`]),
      '431 Request Header Fields Too Large',
    ],
    [
      'too many fields',
      req(Array.from({ length: 101 }, (_, i) => `X${i}: y`)),
      '431 Request Header Fields Too Large',
    ],
    [
      'a large head',
      req(Array.from({ length: 3 }, (_, i) => `X${i}: ${'y'.repeat(8000)}`)),
      '431 Request Header Fields Too Large',
    ],
  ];

  it.each(cases)('%s: %j -> %s', (_label, input, expected) => {
    const { actions, text } = feed([input]);
    expect(status(text)).toBe(`HTTP/1.1 ${expected}`);
    expect(actions.at(-1)!.type).toBe('close');
    expect(only(actions, 'starttls')).toHaveLength(0);
    expect(only(actions, 'log').filter((l) => l.level === 'error')).toEqual([]);
  });

  it('refuses garbage at its first octet, before any line end', () => {
    const { actions } = feed(['\u0016']);
    expect(status(written(actions))).toBe('HTTP/1.1 400 Bad Request');
  });

  it('answers a request without an upgrade 426 even when TE would be refused on the upgrade path', () => {
    expect(
      status(feed([req(['Host: a', 'Transfer-Encoding: chunked'], 'POST / HTTP/1.1')]).text),
    ).toMatch(/ 426 /);
  });

  it('keeps the hand-off state within maxHandoffStateBytes', () => {
    const big = req([...UP, `X: ${'y'.repeat(3000)}`]);
    expect(status(feed([big], {}, { maxHandoffStateBytes: 2000 }).text)).toMatch(/ 431 /);
    const body = req([...UP, 'Content-Length: 2000']);
    expect(status(feed([body], {}, { maxHandoffStateBytes: 2000 }).text)).toMatch(/ 413 /);
    expect(status(feed([body], { rawRequest: true }, { maxHandoffStateBytes: 2900 }).text)).toMatch(
      / 413 /,
    );
  });

  it('peer errors are branded HttpProtocolErrors', () => {
    const e = new HttpProtocolError('TLSPROXY_ERR_HTTP_SYNTAX', 400, 'x');
    expect(isHttpProtocolError(e)).toBe(true);
    expect(e[Symbol.for('tlsproxy.error') as never]).toBe(true);
    expect(isHttpProtocolError(new Error('x'))).toBe(false);
    expect(
      isHttpProtocolError({ [Symbol.for('tlsproxy.error')]: true, code: 'TLSPROXY_ERR_IMAP_X' }),
    ).toBe(false);
  });
});

describe('plaintext hand-off (option plaintext: "handoff")', () => {
  it('hands a request without an upgrade, and everything after it, to the backend', () => {
    const r = req(['Host: a', 'Content-Length: 4'], 'POST /x HTTP/1.1', 'bodyGET / HTTP/1.1\r\n');
    const { actions, text } = feed([r.slice(0, 10), r.slice(10)], { plaintext: 'handoff' });
    expect(text).toBe('');
    const p = only(actions, 'plaintext')[0]!;
    expect(dec(p.buffered)).toBe(r);
    expect(p.state).toEqual({
      method: 'POST',
      target: '/x',
      version: 'HTTP/1.1',
      headers: [
        ['Host', 'a'],
        ['Content-Length', '4'],
      ],
    });
    expect(status(dec(p.unavailable))).toBe('HTTP/1.1 503 Service Unavailable');
  });

  it('still upgrades and still refuses malformed requests', () => {
    expect(feed([UPGRADE], { plaintext: 'handoff' }).text).toBe(GO_AHEAD);
    expect(status(feed(['GET /\r\n'], { plaintext: 'handoff' }).text)).toMatch(/ 400 /);
    const old = feed([req(UP, 'GET / HTTP/1.0')], { plaintext: 'handoff' }).actions;
    expect(only(old, 'plaintext')).toHaveLength(1);
  });
});

describe('time, eof, and the engine callbacks', () => {
  it('answers 408 when the timer fires, re-arms when it fires early', () => {
    const s = newSession();
    s.start(0);
    expect(s.receive(enc('GET / HT'), 10)).toEqual([]);
    expect(s.timer(59_999)).toEqual([{ type: 'timer', at: 60_000 }]);
    const acts = s.timer(60_000);
    expect(status(written(acts))).toBe('HTTP/1.1 408 Request Timeout');
    expect(acts.at(-1)!.type).toBe('close');
    expect(s.timer(70_000)).toEqual([]);
    expect(s.receive(enc('TP/1.1\r\n'), 0)).toEqual([]);
  });

  it('times out while waiting for content too', () => {
    const s = newSession();
    s.start(0);
    s.receive(enc(req([...UP, 'Content-Length: 10'], 'OPTIONS * HTTP/1.1', 'abc')), 0);
    expect(status(written(s.timer(60_000)))).toMatch(/ 408 /);
  });

  it('closes on tlsUnavailable (the engine already wrote the 503)', () => {
    const s = newSession();
    s.start(0);
    s.receive(enc(UPGRADE), 0);
    expect(s.receive(enc('x'), 0)).toEqual([
      { type: 'log', level: 'warn', message: 'discarded 1 bytes sent after the upgrade request' },
    ]);
    expect(s.tlsUnavailable(0)).toEqual([{ type: 'close', reason: expect.any(String) }]);
    expect(s.receive(enc(UPGRADE), 0)).toEqual([]);
    expect(newSession().tlsUnavailable(0)[0]!.type).toBe('log');
  });

  it('closes on eof, silently', () => {
    const s = newSession();
    s.start(0);
    s.receive(enc('GET'), 0);
    expect(s.eof!(0)).toEqual([{ type: 'close', reason: 'client closed the connection' }]);
    expect(s.eof!(0)).toEqual([]);
  });
});

// Issue 14: by default only OPTIONS may upgrade (RFC 2817 section 3.2); GET and the others
// need the upgradeMethods option, validated.
describe('upgrade methods', () => {
  const get = req(UP, 'GET /printers/ HTTP/1.1');

  it('refuses GET + Upgrade: TLS by default with 400 and says how to upgrade', () => {
    const { actions, text } = feed([get]);
    expect(status(text)).toBe('HTTP/1.1 400 Bad Request');
    expect(text).toContain('Connection: close\r\n');
    expect(text).toContain('"OPTIONS * HTTP/1.1"');
    expect(only(actions, 'starttls')).toHaveLength(0);
    expect(actions.at(-1)?.type).toBe('close');
    expect(status(feed([req(UP, 'POST / HTTP/1.1')], { plaintext: 'handoff' }).text)).toBe(
      'HTTP/1.1 400 Bad Request',
    );
  });

  it('upgrades GET when the option lists it, and still OPTIONS only when listed', () => {
    const st = starttls(feed([get], { upgradeMethods: ['OPTIONS', 'GET'] }).actions);
    expect(st.state).toMatchObject({ method: 'GET', target: '/printers/' });
    expect(status(feed([UPGRADE], { upgradeMethods: ['GET'] }).text)).toBe(
      'HTTP/1.1 400 Bad Request',
    );
  });

  it('a request without an upgrade is unaffected: 426 whatever its method', () => {
    expect(status(feed(['GET / HTTP/1.1\r\nHost: a\r\n\r\n']).text)).toBe(
      'HTTP/1.1 426 Upgrade Required',
    );
  });
});

describe('overflow (the engine pre-TLS byte cap)', () => {
  it('answers 413 with Connection: close', () => {
    const { session } = feed(['OPTIONS * HTTP/1.1\r\nHost: a\r\nX: y']);
    const text = dec(session.overflow!(Date.UTC(2026, 0, 1)));
    expect(status(text)).toBe('HTTP/1.1 413 Content Too Large');
    expect(text).toContain('Connection: close\r\n');
    expect(text).toContain('Date: Thu, 01 Jan 2026 00:00:00 GMT\r\n');
  });
});

describe('expired (the engine preamble deadline)', () => {
  it('answers 408 with Connection: close', () => {
    const { session } = feed(['OPTIONS * HTTP/1.1\r\nHost: a\r\nX: y']);
    const text = dec(session.expired!(Date.UTC(2026, 0, 1)));
    expect(status(text)).toBe('HTTP/1.1 408 Request Timeout');
    expect(text).toContain('Connection: close\r\n');
  });
});

// Issue 14: the method is the client's "command"; it never selects anything through a plain
// object. Every Object.prototype name is a method like any other.
describe('Object.prototype names as methods', () => {
  const NAMES = OBJECT_PROTOTYPE_NAMES;
  const frob = (m: string) => feed([req(UP, `${m} / HTTP/1.1`)]).text;
  it.each(NAMES)('%s', (name) => {
    expect(status(frob(name))).toBe(status(frob('FROB')));
    expect(status(feed([`${name} / HTTP/1.1\r\nHost: a\r\n\r\n`]).text)).toBe(
      'HTTP/1.1 426 Upgrade Required',
    );
  });
});
