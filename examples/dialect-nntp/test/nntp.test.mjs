// Unit tests beside the transcripts (issue 14): overflow(), Object.prototype names as commands,
// and a pending line costing O(its length). Run with `node --test` (no test framework needed).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LineFramer } from '../lines.mjs';
import nntp from '../nntp.mjs';

const enc = (/** @type {string} */ s) => new TextEncoder().encode(s);
const dec = (/** @type {Uint8Array} */ b) => new TextDecoder().decode(b);

/** @param {Record<string, number>} [limits] */
function session(limits = {}) {
  const s = nntp.create({ options: {}, limits, hostname: 'news.example', connectionId: 't' });
  s.start(0);
  return s;
}

/** @param {import('@tlsproxy/core/dialect').Action[]} actions */
function written(actions) {
  let out = '';
  for (const a of actions) {
    if (a.type === 'send') out += dec(a.data);
    if (a.type === 'close' && a.data) out += dec(a.data);
  }
  return out;
}

test('overflow() answers 400 and is pure', () => {
  const s = session();
  s.receive(enc('CAPABILITIES\r\nMODE REA'), 0);
  const first = dec(/** @type {NonNullable<typeof s.overflow>} */ (s.overflow)(0));
  assert.equal(first, '400 Too much data before STARTTLS, closing connection\r\n');
  assert.equal(dec(/** @type {NonNullable<typeof s.overflow>} */ (s.overflow)(0)), first);
});

test('every Object.prototype name is an unknown command', () => {
  for (const name of Object.getOwnPropertyNames(Object.prototype)) {
    const s = session();
    assert.equal(written(s.receive(enc(`${name}\r\n`), 0)), '500 Unknown command\r\n', name);
    assert.equal(written(s.receive(enc(`${name} x\r\n`), 0)), '500 Unknown command\r\n', name);
  }
});

test('a pending line sent one octet per read is framed in O(its length)', () => {
  const framer = new LineFramer(200_000);
  const line = enc(`${'x'.repeat(100_000)}\r\n`);
  const t0 = performance.now();
  let event = null;
  for (let i = 0; i < line.length; i++) {
    framer.push(line.subarray(i, i + 1));
    event = framer.next() ?? event;
  }
  // Joining the pending octets with every read, and searching them all again for LF, took
  // seconds here (O(n²)).
  assert.ok(performance.now() - t0 < 1000, `${performance.now() - t0} ms`);
  assert.deepEqual(event, { type: 'line', text: 'x'.repeat(100_000) });
  assert.ok(framer.buf.length <= 4 * line.length);
});

test('the framer gives the same events in any chunking', () => {
  const input = enc(`${'CAPA\r\nBIL\nx'.repeat(3)}${'y'.repeat(40)}\r\nlast\n`);
  const events = (/** @type {number} */ step) => {
    const f = new LineFramer(20);
    const out = [];
    for (let i = 0; i < input.length; i += step) {
      f.push(input.subarray(i, i + step));
      for (let e = f.next(); e; e = f.next()) out.push(e);
    }
    return out;
  };
  const whole = events(input.length);
  for (const step of [1, 2, 3, 7, 13]) assert.deepEqual(events(step), whole, `step ${step}`);
});
