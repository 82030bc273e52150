// The NNTP client role (client.mjs): every path of its state table, the same actions under any
// chunking of the server's bytes, bytes after the 382 in the same read always close (never
// starttls, never reaching the local client), garbage never throws; then the same over a real
// loopback socket. The server lines are INN 2.7.1's, from transcripts/openssl-s_client.txt.
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { dialectProblems } from '@tlsproxy/dialect-kit';
import {
  bytewise,
  clientContext,
  dec,
  enc,
  feedClient,
  runClientSession,
  splitAt,
  toServer,
} from '@tlsproxy/dialect-kit/testing';
import nntp from '../nntp.mjs';

/** @typedef {import('@tlsproxy/dialect-kit').ClientAction} ClientAction */

const client = /** @type {NonNullable<typeof nntp.client>} */ (nntp.client);
const open = (/** @type {Record<string, number>} */ limits = {}) =>
  client.create(clientContext({}, limits));
/** @param {(string | Uint8Array)[]} chunks @param {Record<string, number>} [limits] */
const run = (chunks, limits) => feedClient(open(limits), chunks);

const GREETING = '200 server.example.net InterNetNews NNRP server INN 2.7.1 ready (posting ok)\r\n';
const CAPS = [
  '101 Capability list:',
  'VERSION 2',
  'IMPLEMENTATION INN 2.7.1',
  'AUTHINFO SASL',
  'COMPRESS DEFLATE',
  'HDR',
  'LIST ACTIVE ACTIVE.TIMES COUNTS DISTRIB.PATS DISTRIBUTIONS HEADERS MODERATORS MOTD NEWSGROUPS OVERVIEW.FMT SUBSCRIPTIONS',
  'OVER',
  'POST',
  'READER',
  'SASL SCRAM-SHA-512 SCRAM-SHA-384 SCRAM-SHA-256 SCRAM-SHA-224 SCRAM-SHA-1 DIGEST-MD5 CRAM-MD5 NTLM',
  'STARTTLS',
  'XPAT',
  '.',
]
  .map((l) => `${l}\r\n`)
  .join('');
const GO_AHEAD = '382 Begin TLS negotiation now\r\n';

/** The close action (and only one), or a failed assertion. @param {ClientAction[] | ClientAction | undefined} a */
function closeOf(a) {
  const all = Array.isArray(a) ? a : a === undefined ? [] : [a];
  const c = all.filter((x) => x.type === 'close');
  assert.equal(c.length, 1, JSON.stringify(all));
  return /** @type {import('@tlsproxy/dialect-kit').ClientCloseAction} */ (c[0]);
}
const text = (/** @type {Uint8Array | undefined} */ b) => (b === undefined ? undefined : dec(b));

test('the dialect has a client side that passes the shape check; limits with unit, phase, source', () => {
  assert.deepEqual(dialectProblems(nntp), []);
  assert.deepEqual(client.options, {});
  for (const [name, spec] of Object.entries(client.limits)) {
    assert.ok(spec.unit && spec.phase === 'preamble' && spec.source, name);
  }
});

test('greeting, CAPABILITIES listing STARTTLS, STARTTLS, 382: starttls, the greeting for the local client', () => {
  const s = open();
  assert.deepEqual(s.start(0), [{ type: 'timer', at: 30_000 }]);
  const a1 = s.receive(enc(GREETING), 5);
  assert.equal(dec(toServer(a1)), 'CAPABILITIES\r\n');
  assert.deepEqual(a1.at(-1), { type: 'timer', at: 30_005 });
  const a2 = s.receive(enc(CAPS), 6);
  assert.equal(dec(toServer(a2)), 'STARTTLS\r\n');
  const a3 = s.receive(enc(GO_AHEAD), 7);
  assert.equal(a3.length, 1);
  const go = a3[0];
  assert.equal(go?.type, 'starttls');
  // Our greeting with the server's code: none of its pre-TLS text (unauthenticated).
  assert.equal(
    go?.type === 'starttls' && dec(go.toLocal),
    '200 Server ready (posting allowed)\r\n',
  );
  assert.ok(
    go?.type === 'starttls' && /** @type {string[]} */ (go.state.capabilities).includes('STARTTLS'),
  );
  // Nothing more is read after the outcome.
  assert.deepEqual(s.receive(enc('200 again\r\n'), 8), []);
  // Only our two command names are reported.
  const reports = [...a1, ...a2].flatMap((a) => (a.type === 'log' && a.event ? [a.command] : []));
  assert.deepEqual(reports, ['CAPABILITIES', 'STARTTLS']);
});

test('a 201 greeting and lowercase capability labels work the same', () => {
  const r = run(['201 no posting\r\n', '101 caps\r\nversion 2\r\nstarttls\r\n.\r\n', GO_AHEAD]);
  assert.equal(r.outcome?.type, 'starttls');
  assert.equal(r.sent, 'CAPABILITIES\r\nSTARTTLS\r\n');
  assert.equal(
    r.outcome?.type === 'starttls' && dec(r.outcome.toLocal),
    '201 Server ready (posting prohibited)\r\n',
  );
});

test('a refusing greeting: its code to the local client, its words to the log, no QUIT', () => {
  for (const line of ['400 Too many connections\r\n', '502 You have no permission to talk\r\n']) {
    const c = closeOf(run([line]).outcome);
    assert.equal(text(c.toLocal), `${line.slice(0, 3)} Service unavailable\r\n`);
    assert.match(c.reason, new RegExp(line.slice(4, 12)));
    assert.equal(c.data, undefined);
  }
  const bad = closeOf(run(['* OK IMAP here\r\n']).outcome);
  assert.equal(text(bad.toLocal), '400 Bad greeting from the server\r\n');
  assert.equal(bad.data, undefined);
});

test('no STARTTLS: never a plaintext fallback, QUIT and 502 for the local client', () => {
  const none = run([GREETING, '101 caps\r\nVERSION 2\r\nREADER\r\n.\r\n']);
  const c = closeOf(none.outcome);
  assert.equal(c.reason, 'server does not offer STARTTLS');
  assert.equal(text(c.data), 'QUIT\r\n');
  assert.equal(text(c.toLocal), '502 TLS unavailable\r\n');
  assert.ok(!none.sent.includes('STARTTLS'));
  // A capability that only starts with STARTTLS, or a dot-stuffed "..STARTTLS", is not it.
  for (const line of ['STARTTLSX', '..STARTTLS']) {
    assert.equal(
      closeOf(run([GREETING, `101 caps\r\n${line}\r\n.\r\n`]).outcome).reason,
      'server does not offer STARTTLS',
    );
  }
  // No capability list at all (500: CAPABILITIES unknown).
  const old = closeOf(run([GREETING, '500 What?\r\n']).outcome);
  assert.match(old.reason, /no capability list/);
  assert.equal(text(old.data), 'QUIT\r\n');
});

test('STARTTLS refused (580, 502, anything else): close with QUIT', () => {
  for (const reply of [
    '580 Can not initiate TLS negotiation\r\n',
    '502 Already using TLS\r\n',
    '200 huh\r\n',
  ]) {
    const c = closeOf(run([GREETING, CAPS, reply]).outcome);
    assert.equal(text(c.data), 'QUIT\r\n');
    assert.equal(text(c.toLocal), '400 TLS refused by the server\r\n');
  }
});

test('bytes after the 382 in the same read: close, never starttls, never to the local client', () => {
  for (const injected of ['200 fake greeting\r\n', 'X', '\r\n']) {
    const r = run([GREETING, CAPS, GO_AHEAD + injected]);
    const c = closeOf(r.outcome);
    assert.match(c.reason, /^response injection/);
    assert.equal(c.data, undefined); // nothing more to that server
    assert.ok(!text(c.toLocal)?.includes('fake'));
    assert.ok(!r.actions.some((a) => a.type === 'starttls'));
  }
});

test('limits: a line too long, too many capabilities; timers; eof', () => {
  const long = closeOf(run([`200 ${'x'.repeat(5000)}\r\n`]).outcome);
  assert.equal(long.reason, 'server response line too long');
  const many = run([GREETING, `101 caps\r\n${'HDR\r\n'.repeat(101)}`], {});
  assert.equal(closeOf(many.outcome).reason, 'too many capability lines');
  const s = open({ greetingTimeoutMs: 100, replyTimeoutMs: 50 });
  assert.deepEqual(s.start(0), [{ type: 'timer', at: 100 }]);
  assert.deepEqual(s.timer(99), [{ type: 'timer', at: 100 }]); // early: asks again
  const t = closeOf(s.timer(100));
  assert.equal(t.reason, 'timeout waiting for the greeting');
  assert.equal(t.data, undefined);
  const s2 = open({ replyTimeoutMs: 50 });
  s2.start(0);
  s2.receive(enc(GREETING), 10);
  const t2 = closeOf(s2.timer(60));
  assert.equal(t2.reason, 'timeout waiting for the reply to CAPABILITIES');
  assert.equal(text(t2.data), 'QUIT\r\n');
  const s3 = open({ greetingTimeoutMs: 0 });
  assert.deepEqual(s3.start(0), []);
  assert.deepEqual(s3.timer(1e12), []);
  const s4 = open();
  s4.start(0);
  s4.receive(enc(GREETING + CAPS), 1);
  const e = closeOf(s4.eof?.(2));
  assert.equal(e.reason, 'server closed the connection before the reply to STARTTLS');
  assert.equal(e.data, undefined);
  assert.deepEqual(s4.eof?.(3), []);
});

test('any chunking of the server bytes gives the same actions (every cut, one octet per read)', () => {
  // The close reason counts the bytes after the 382 in that read (for the log): not compared.
  const show = (/** @type {ReturnType<typeof run>} */ r) =>
    JSON.stringify([
      r.sent,
      r.outcome,
      r.outcome && text(/** @type {any} */ (r.outcome).toLocal),
    ]).replace(/injection: \d+ bytes/, 'injection: N bytes');
  for (const script of [
    GREETING + CAPS + GO_AHEAD,
    `${GREETING + CAPS + GO_AHEAD}200 injected\r\n`,
    `${GREETING}101 caps\r\nREADER\r\n.\r\n`,
    `200 ok\n101 caps\nSTARTTLS\n.\n${GO_AHEAD}`,
  ]) {
    const bytes = enc(script);
    const whole = show(run([bytes]));
    // Bytes after the 382 that arrive in a LATER read are the TLS handshake's to judge (they
    // are not a ClientHello answer, so it fails): a read that ends right after the 382 line is
    // the one chunking where the outcome differs, and it is starttls.
    const afterGoAhead = script.includes('injected') ? script.indexOf('200 injected') : -1;
    const octets = run(bytewise(bytes));
    if (afterGoAhead < 0) assert.equal(show(octets), whole);
    else assert.equal(octets.outcome?.type, 'starttls');
    for (let cut = 1; cut < bytes.length; cut++) {
      const r = run(splitAt(bytes, [cut]));
      if (cut === afterGoAhead) assert.equal(r.outcome?.type, 'starttls');
      else assert.equal(show(r), whole, `cut at ${cut}`);
    }
  }
});

test('random bytes never throw; after the outcome nothing more happens', () => {
  let seed = 42;
  const rnd = () => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed / 2 ** 32;
  };
  const pieces = [
    GREETING,
    CAPS,
    GO_AHEAD,
    '101 x\r\n',
    '.\r\n',
    'STARTTLS\r\n',
    '\r\n',
    '\n',
    '.',
  ];
  for (let i = 0; i < 2000; i++) {
    /** @type {Uint8Array[]} */
    const chunks = [];
    for (let n = Math.floor(rnd() * 8); n > 0; n--) {
      if (rnd() < 0.5) chunks.push(enc(pieces[Math.floor(rnd() * pieces.length)] ?? ''));
      else
        chunks.push(
          Uint8Array.from({ length: Math.floor(rnd() * 40) }, () => Math.floor(rnd() * 256)),
        );
    }
    const r = run(chunks, { maxLineLength: 64, maxCapabilityLines: 5 });
    assert.deepEqual(r.after, [], `script ${i}`);
    for (const a of r.actions)
      assert.ok(['send', 'timer', 'log', 'close', 'starttls'].includes(a.type));
  }
});

/**
 * A scripted NNTP server on loopback: writes `script[i]` after the client's i-th line (the
 * greeting first), each as ONE write, so "382 + injected bytes" arrives in one read.
 * @param {string[]} script
 */
async function scriptedServer(script) {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    let step = 0;
    let buf = '';
    socket.write(script[step++] ?? '');
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        buf = buf.slice(nl + 1);
        if (step < script.length) socket.write(script[step++] ?? '');
      }
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {net.AddressInfo} */ (server.address());
  return { server, port: address.port };
}

test('over a real loopback socket: starttls hands the socket back; an injected reply closes', {
  timeout: 20_000,
}, async () => {
  /** @param {string[]} script */
  const session = async (script) => {
    const { server, port } = await scriptedServer(script);
    const s = open(); // before connecting: a failure here must not leave a socket open
    const socket = net.connect(port, '127.0.0.1');
    try {
      return await runClientSession(s, socket);
    } finally {
      socket.destroy();
      server.close();
    }
  };
  const r1 = await session([GREETING, CAPS, GO_AHEAD]);
  assert.equal(r1.outcome.type, 'starttls');
  assert.equal(dec(r1.sent), 'CAPABILITIES\r\nSTARTTLS\r\n');
  const r2 = await session([GREETING, CAPS, `${GO_AHEAD}200 injected\r\n`]);
  assert.equal(r2.outcome.type, 'close');
  assert.match(r2.outcome.reason, /^response injection/);
});
