// Properties from DESIGN.md "Dialect interface - contract": any chunking behaves the same, peer
// input never throws, header case does not matter, nothing pipelined after the upgrade request
// is ever answered, limits hold. Time-boxed (interruptAfterTimeLimit).
import type { Action } from '@tlsproxy/dialect-kit';
import { feedPastStartTls, bytewise as octetByOctet, splitAt } from '@tlsproxy/dialect-kit/testing';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { dec, enc, newSession, written } from './helpers.js';

const TIME = { interruptAfterTimeLimit: 4000, numRuns: 300 };
/** Small limits so generated requests reach every limit path. */
const SMALL = {
  maxRequestLineLength: 40,
  maxFieldLineLength: 30,
  maxHeaderSize: 160,
  maxHeaderFields: 5,
  maxBodySize: 8,
};

const LINES = [
  'OPTIONS * HTTP/1.1',
  'GET / HTTP/1.1',
  'POST /ipp/print HTTP/1.1',
  'HEAD / HTTP/1.1',
  'GET / HTTP/1.0',
  'GET / HTTP/2.0',
  'GET * HTTP/1.1',
  'get / http/1.1',
  `GET /${'x'.repeat(50)} HTTP/1.1`,
  'BAD',
];
const FIELDS = [
  'Host: localhost',
  'Host: localhost:631',
  'Connection: Upgrade',
  'Connection: keep-alive, upgrade',
  'Upgrade: TLS/1.0',
  'Upgrade: TLS/1.2,TLS/1.1,TLS/1.0',
  'Upgrade: websocket',
  'Content-Length: 3',
  'Content-Length: 20',
  'Transfer-Encoding: chunked',
  'Expect: 100-continue',
  'X-Empty:',
  ' folded',
  'Bad : x',
  `X-Long: ${'y'.repeat(40)}`,
];

const request = fc
  .tuple(
    fc.constantFrom(...LINES),
    fc.array(fc.constantFrom(...FIELDS), { maxLength: 7 }),
    fc.constantFrom('', 'abc', 'GET / HTTP/1.1\r\n\r\n'),
    fc.constantFrom('\r\n', '\n'),
  )
  .map(([line, fields, after, eol]) => [line, ...fields, '', ''].join(eol) + after);

const UPGRADE = 'OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n';

/** What the client observes: bytes written, then the final action (timers and logs aside). */
function observe(chunks: Uint8Array[], limits: Record<string, number>, options = {}) {
  const s = newSession(options, limits);
  s.start(0);
  const actions: Action[] = [];
  // After a plaintext hand-off the engine gives the backend `buffered` plus whatever the
  // socket still holds: that stream, not `buffered` alone, must not depend on chunking.
  let later = '';
  for (const c of chunks) {
    if (actions.some((a) => a.type === 'plaintext')) later += dec(c);
    actions.push(...s.receive(c, 0));
  }
  const last = actions.filter((a) => a.type !== 'timer' && a.type !== 'log').at(-1);
  const final =
    last?.type === 'starttls'
      ? { type: 'starttls', state: last.state }
      : last?.type === 'plaintext'
        ? { type: 'plaintext', state: last.state, handed: dec(last.buffered) + later }
        : last?.type === 'close'
          ? { type: 'close', reason: last.reason }
          : null;
  return { text: written(actions), final, actions };
}

function checkActions(actions: Action[]): void {
  let ended = false;
  let upgraded = false;
  for (const a of actions) {
    if (ended) expect(a.type).toBe('log');
    // after the go-ahead only logs, and the close that follows tlsUnavailable() (no data)
    if (upgraded) expect(a.type === 'log' || (a.type === 'close' && !a.data)).toBe(true);
    switch (a.type) {
      case 'send':
        expect(dec(a.data)).toBe('HTTP/1.1 100 Continue\r\n\r\n');
        break;
      case 'close':
        ended = true;
        if (a.data) expect(dec(a.data)).toMatch(/^HTTP\/1\.1 [45]\d\d [A-Za-z ]+\r\n/);
        break;
      case 'timer':
        expect(Number.isFinite(a.at)).toBe(true);
        break;
      case 'log':
        expect(a.level).not.toBe('error'); // an internal error or an ambiguous parse
        break;
      case 'starttls':
        upgraded = true;
        expect(dec(a.goAhead)).toMatch(/^HTTP\/1\.1 101 /);
        expect(JSON.parse(JSON.stringify(a.state))).toEqual(a.state);
        break;
      case 'plaintext':
        ended = true;
        break;
    }
  }
}

describe('properties', () => {
  for (const [label, limits] of [
    ['small limits', SMALL],
    ['default limits', {}],
  ] as const) {
    it(`any chunking gives the same responses and outcome (${label})`, () => {
      fc.assert(
        fc.property(
          request,
          fc.array(fc.nat(), { maxLength: 20 }),
          fc.boolean(),
          (text, cuts, handoff) => {
            const options = handoff ? { plaintext: 'handoff' as const } : {};
            const bytes = enc(text);
            const whole = observe([bytes], limits, options);
            const split = observe(splitAt(bytes, cuts), limits, options);
            const bytewise = observe(octetByOctet(bytes), limits, options);
            expect(split.text).toBe(whole.text);
            expect(split.final).toEqual(whole.final);
            expect(bytewise.text).toBe(whole.text);
            expect(bytewise.final).toEqual(whole.final);
          },
        ),
        TIME,
      );
    });
  }

  it('random bytes never throw and only produce valid actions', () => {
    const chunk = fc.oneof(
      fc.uint8Array({ maxLength: 64 }),
      request.map(enc),
      fc.constantFrom('\r', '\n', ' ', ':', '\t', 'HTTP/1.1', '\u0000', '\u00ff').map(enc),
    );
    fc.assert(
      fc.property(
        fc.array(chunk, { maxLength: 20 }),
        fc.boolean(),
        fc.boolean(),
        (chunks, small, handoff) => {
          const s = newSession(handoff ? { plaintext: 'handoff' } : {}, small ? SMALL : {});
          const actions: Action[] = [...s.start(0)];
          let now = 0;
          for (const c of chunks) {
            now += 10;
            actions.push(...s.receive(c, now));
          }
          actions.push(...s.timer(now + 1e6), ...s.tlsUnavailable(now), ...(s.eof?.(now) ?? []));
          checkActions(actions);
          expect(actions.some((a) => ['close', 'starttls', 'plaintext'].includes(a.type))).toBe(
            true,
          );
        },
      ),
      TIME,
    );
  });

  it('the case of field names and of Upgrade/Connection values does not matter', () => {
    const fields = ['Host: localhost', 'Connection: keep-alive, Upgrade', 'Upgrade: h2c, TLS/1.0'];
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 80, maxLength: 80 }),
        fc.boolean(),
        (flips, valuesToo) => {
          let i = 0;
          const flip = (s: string) =>
            [...s]
              .map((c) => (flips[i++ % flips.length] ? c.toUpperCase() : c.toLowerCase()))
              .join('');
          const varied = fields.map((f) => {
            const [name, value] = f.split(': ') as [string, string];
            return `${flip(name)}: ${valuesToo && !name.startsWith('Host') ? flip(value) : value}`;
          });
          const a = observe([enc(`OPTIONS * HTTP/1.1\r\n${fields.join('\r\n')}\r\n\r\n`)], {});
          const b = observe([enc(`OPTIONS * HTTP/1.1\r\n${varied.join('\r\n')}\r\n\r\n`)], {});
          expect(b.text).toBe(a.text);
          expect(b.final?.type).toBe('starttls');
        },
      ),
      TIME,
    );
  });

  it('nothing pipelined after the upgrade request is ever answered or framed', () => {
    const after = fc.oneof(request.map(enc), fc.uint8Array({ maxLength: 40 }));
    fc.assert(
      fc.property(
        fc.constantFrom(UPGRADE, UPGRADE.replace('\r\n\r\n', '\r\nContent-Length: 4\r\n\r\nbody')),
        fc.array(after, { maxLength: 6 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (head, rest, cuts) => {
          const tail = enc(rest.map(dec).join(''));
          const all = new Uint8Array([...enc(head), ...tail]);
          const s = newSession();
          s.start(0);
          const r = feedPastStartTls(s, splitAt(all, cuts));
          expect(r.problems).toEqual([]);
          expect(r.starttls).toBeDefined();
          expect(written(r.before)).toBe('');
          expect(r.starttls?.state.method).toBe('OPTIONS');
          expect(dec(r.trailing)).toBe(dec(tail));
        },
      ),
      TIME,
    );
  });

  it('limits hold: any head over a limit is answered 4xx and closed, never handed over', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 1, max: 20_000 }),
        (which, n) => {
          const x = 'x'.repeat(n);
          const input = [
            `OPTIONS /${x} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n`,
            `OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\nX: ${x}\r\n\r\n`,
            `OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n${'X: y\r\n'.repeat(Math.ceil(n / 100))}\r\n`,
            `OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\nContent-Length: ${n}\r\n\r\n${x}`,
          ][which]!;
          const o = observe([enc(input)], {});
          const bytes = input.length;
          if (o.final?.type === 'starttls') {
            // within every limit
            expect(bytes).toBeLessThanOrEqual(16_384 + 4096);
            const st = o.actions.find((a) => a.type === 'starttls')!;
            expect(
              Buffer.byteLength(JSON.stringify(st.type === 'starttls' && st.state)),
            ).toBeLessThan(12_288);
          } else {
            expect(o.final?.type).toBe('close');
            expect(o.text).toMatch(/^HTTP\/1\.1 4(14|13|31) /);
          }
        },
      ),
      TIME,
    );
  });

  it('a 1 MiB request line without end is refused early', () => {
    const o = observe([new Uint8Array(1 << 20).fill(0x41)], {});
    expect(o.text).toMatch(/^HTTP\/1\.1 414 /);
  });
});

// Issue 14: RFC 2817 section 3.2 upgrades with OPTIONS; any other method has already sent the
// request in plaintext. Only the methods in upgradeMethods may upgrade; the rest get 400.
describe('upgrade methods', () => {
  const METHODS = ['OPTIONS', 'GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'PRI', 'M-SEARCH', 'options'];
  it('an upgrade request starts TLS exactly when its method is listed', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...METHODS),
        fc.subarray(['OPTIONS', 'GET', 'POST', 'HEAD', 'PUT', 'M-SEARCH'], { minLength: 1 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (method, allowed, cuts) => {
          const target = method === 'OPTIONS' ? '*' : '/';
          const bytes = enc(
            `${method} ${target} HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n`,
          );
          const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: Uint8Array[] = [];
          let prev = 0;
          for (const p of [...points, bytes.length]) {
            chunks.push(bytes.subarray(prev, p));
            prev = p;
          }
          const o = observe(chunks, {}, { upgradeMethods: allowed });
          if (allowed.includes(method)) {
            expect(o.final?.type).toBe('starttls');
          } else {
            expect(o.final?.type).toBe('close');
            expect(o.text).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
            if (method !== 'HEAD') expect(o.text).toContain('OPTIONS *');
          }
        },
      ),
      TIME,
    );
  });
});

// Issue 14: nothing before TLS ever invites credentials: no 401/407, no WWW-Authenticate or
// Proxy-Authenticate, whatever the request (Authorization fields included) and its chunking.
describe('no credential is invited before TLS', () => {
  it('no 401, 407 or authentication challenge', () => {
    fc.assert(
      fc.property(
        request,
        fc.constantFrom(
          '',
          'Authorization: Basic YWxpY2U6c2VjcmV0\r\n',
          'Proxy-Authorization: x\r\n',
        ),
        fc.array(fc.nat(), { maxLength: 8 }),
        (req, auth, cuts) => {
          const text = req.replace(/\r?\n/, (eol) => `${eol}${auth}`);
          for (const options of [{}, { plaintext: 'handoff' as const }]) {
            const o = observe(splitAt(enc(text), cuts), {}, options);
            expect(o.text).not.toMatch(/^HTTP\/1\.1 40[17] /m);
            expect(o.text).not.toMatch(/-Authenticate:/i);
          }
        },
      ),
      TIME,
    );
  });
});
