// Unit tests beside the transcripts (issue 14): overflow(), Object.prototype names as commands,
// and a pending line costing O(its length). Run with `node --test` (no test framework needed).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LineFramer } from '@tlsproxy/dialect-kit';
import { OBJECT_PROTOTYPE_NAMES, written } from '@tlsproxy/dialect-kit/testing';
import nntp from '../nntp.mjs';

const enc = (/** @type {string} */ s) => new TextEncoder().encode(s);
const dec = (/** @type {Uint8Array} */ b) => new TextDecoder().decode(b);

/** @param {Record<string, number>} [limits] */
function session(limits = {}) {
  const s = nntp.create({ options: {}, limits, hostname: 'news.example', connectionId: 't' });
  s.start(0);
  return s;
}

test('overflow() answers 400 and is pure', () => {
  const s = session();
  s.receive(enc('CAPABILITIES\r\nMODE REA'), 0);
  const first = dec(/** @type {NonNullable<typeof s.overflow>} */ (s.overflow)(0));
  assert.equal(first, '400 Too much data before STARTTLS, closing connection\r\n');
  assert.equal(dec(/** @type {NonNullable<typeof s.overflow>} */ (s.overflow)(0)), first);
});

test('every Object.prototype name is an unknown command', () => {
  for (const name of OBJECT_PROTOTYPE_NAMES) {
    const s = session();
    assert.equal(written(s.receive(enc(`${name}\r\n`), 0)), '500 Unknown command\r\n', name);
    assert.equal(written(s.receive(enc(`${name} x\r\n`), 0)), '500 Unknown command\r\n', name);
  }
});

test('a pending line sent one octet per read is framed in O(its length)', () => {
  const framer = new LineFramer(200_000, { countsTerminator: true });
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
  assert.equal(event?.type, 'line');
  assert.equal(event?.type === 'line' && event.text, 'x'.repeat(100_000));
});

test('the framer gives the same events in any chunking', () => {
  const input = enc(`${'CAPA\r\nBIL\nx'.repeat(3)}${'y'.repeat(40)}\r\nlast\n`);
  const events = (/** @type {number} */ step) => {
    const f = new LineFramer(20, { countsTerminator: true });
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

test('every command is reported by name for the engine log and metrics, never a client word', () => {
  const s = session();
  const actions = s.receive(
    enc('CAPABILITIES\r\nfoo secret\r\nAUTHINFO USER alice\r\nmode reader\r\n\u017ftarttls\r\n'),
    0,
  );
  const reports = actions
    .filter((a) => a.type === 'log' && a.event !== undefined)
    .map((a) => a.type === 'log' && `${a.event} ${a.command}`);
  assert.deepEqual(reports, [
    'command CAPABILITIES',
    'bad-command unknown',
    'command AUTHINFO',
    'command MODE',
    // 'ſ' (U+017F) upper-cases to 'S' with toUpperCase(); the table folds ASCII only.
    'bad-command unknown',
  ]);
  const tooLong = s.receive(enc(`${'x'.repeat(600)}\r\n`), 0);
  assert.deepEqual(
    tooLong.filter((a) => a.type === 'log' && a.event).map((a) => a.type === 'log' && a.command),
    ['unknown'],
  );
});
