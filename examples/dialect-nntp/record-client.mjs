#!/usr/bin/env node
// @ts-check
// Record a CLIENT transcript (client-transcripts/): this dialect's client side (client.mjs),
// driven over TCP by the kit's runClientSession, talks to a real NNTP server through the
// conformance recorder (byte-exact, chunk boundaries, `!tls` at our first TLS record), then
// finishes the TLS handshake with the server's certificate verified against --ca. record.sh
// runs it against INN; the C: and L: lines are what our client did, so review them by hand
// against RFC 4642 before committing — what the recording proves is that the real server took
// those bytes and went on to TLS.
//
//   node record-client.mjs --ca CA.pem --upstream 127.0.0.2:11119 --out FILE --server TEXT
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';
import { escapeBytes, record } from '@tlsproxy/conformance';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import nntp from './nntp.mjs';

const { values } = parseArgs({
  options: {
    ca: { type: 'string' },
    upstream: { type: 'string' },
    out: { type: 'string' },
    server: { type: 'string', default: 'unknown NNTP server' },
    'server-name': { type: 'string', default: 'localhost' },
  },
});
if (!values.ca || !values.upstream || !values.out) {
  console.error(
    'usage: node record-client.mjs --ca CA.pem --upstream HOST:PORT --out FILE [--server TEXT]',
  );
  process.exit(2);
}
const ca = readFileSync(values.ca);
const [host = '', port = ''] = values.upstream.split(/:(?=\d+$)/);
const serverName = values['server-name'];
const client = /** @type {NonNullable<typeof nntp.client>} */ (nntp.client);

// A free port for the relay.
const relayPort = await new Promise((resolve) => {
  const s = net.createServer().listen(0, '127.0.0.1', () => {
    const { port: p } = /** @type {net.AddressInfo} */ (s.address());
    s.close(() => resolve(p));
  });
});
const file = join(tmpdir(), `nntp-client-recording-${process.pid}.txt`);
/** @type {(port: number) => void} */
let listening = () => {};
const ready = new Promise((r) => {
  listening = r;
});
const done = record({
  listen: { host: '127.0.0.1', port: relayPort },
  upstream: { host, port: Number(port) },
  out: file,
  headers: {
    role: 'client',
    server: values.server,
    client: 'tlsproxy nntp client (examples/dialect-nntp/client.mjs) via record-client.mjs',
    dialect: 'nntp',
    'server-name': serverName,
    recorded: new Date().toISOString().slice(0, 10),
  },
  onListening: listening,
});
await ready;
const socket = net.connect(relayPort, '127.0.0.1');
const session = client.create({
  options: {},
  limits: {},
  hostname: 'client.example.test',
  serverName,
  connectionId: 'record',
});
const run = await runClientSession(session, socket);
let handshake = '';
if (run.outcome.type === 'starttls') {
  socket.resume();
  handshake = await new Promise((resolve) => {
    const t = tls.connect({ socket, ca, servername: serverName }, () => {
      resolve(`TLS ${t.getProtocol()}, certificate verified`);
      t.end();
    });
    t.on('error', (err) => resolve(`TLS FAILED: ${err.message}`));
  });
}
const stop = setTimeout(() => socket.destroy(), 3000);
const text = await done;
clearTimeout(stop);
rmSync(file, { force: true });

// The recorder writes a server transcript; as a client transcript it drops the server-side
// markers and says what the local client was given (toLocal): L: lines.
const lines = text.split('\n').filter((l) => l !== '!no-leftover' && l !== '');
const outcome = run.outcome;
const toLocal =
  'toLocal' in outcome && outcome.toLocal ? Buffer.from(outcome.toLocal).toString('latin1') : '';
const local = toLocal
  .split(/(?<=\n)/)
  .filter((l) => l !== '')
  .map((l, i) => {
    const esc = escapeBytes(new Uint8Array(Buffer.from(l, 'latin1')));
    // A close's status line: its words are ours to choose, the code is not.
    const m = outcome.type === 'close' ? /^(\d{3}) (.*)\\r\\n$/.exec(esc) : null;
    return `L${i === 0 ? ':' : '|'} ${m ? `${m[1]} \${text:${m[2]}}\\r\\n` : esc}`;
  });
const note =
  outcome.type === 'starttls'
    ? `# Recorded from the real server: our client reached TLS (${handshake}).`
    : `# Recorded from the real server: our client closed (${outcome.type === 'close' ? outcome.reason : outcome.type}).`;
const at = lines.findIndex((l) => /^[SC]: /.test(l));
const out = [
  ...lines.slice(0, at),
  note,
  '',
  ...lines.slice(at),
  '# What our client gives the local client (toLocal):',
  ...local,
];
writeFileSync(values.out, `${out.join('\n')}\n`);
console.log(`recorded ${values.out}: ${outcome.type} ${handshake}`);
process.exit(0);
