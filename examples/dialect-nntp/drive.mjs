#!/usr/bin/env node
// @ts-check
// A scripted raw client for recording what real clients never send (AUTHINFO before TLS,
// pipelined commands after STARTTLS, a command split over three reads, an overlong line):
//
//   node drive.mjs --ca CA.pem [--host 127.0.0.1] [--servername localhost] PORT STEP...
//
// Steps: send:TEXT (\r \n \t \xHH escapes; rep(N,c) for N copies of c), wait:REGEX (on what the
// server sent since the last wait, multiline), pause:MS, end (half-close), tls (a TLS handshake
// on the same socket, verified against --ca, then close). --ca is the CA of the certificate
// YOUR server presents (its own, not this repository's). The server's bytes go to stdout.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    ca: { type: 'string' },
    host: { type: 'string', default: '127.0.0.1' },
    servername: { type: 'string', default: 'localhost' },
  },
});
const [port, ...steps] = positionals;
if (!values.ca || !port) {
  console.error('usage: node drive.mjs --ca CA.pem [--host H] [--servername N] PORT STEP...');
  process.exit(2);
}
const ca = readFileSync(values.ca);
/** @param {string} s */
const octets = (s) =>
  Buffer.from(
    s
      .replace(/rep\((\d+),(.)\)/g, (_, n, c) => c.repeat(Number(n)))
      .replace(/\\(r|n|t|x[0-9a-fA-F]{2})/g, (_, e) =>
        e === 'r'
          ? '\r'
          : e === 'n'
            ? '\n'
            : e === 't'
              ? '\t'
              : String.fromCharCode(Number.parseInt(e.slice(1), 16)),
      ),
    'latin1',
  );
/** @param {number} ms */
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const socket = net.connect({ host: values.host, port: Number(port) });
socket.setNoDelay(true);
let seen = '';
let closed = false;
socket.on('data', (d) => {
  seen += d.toString('latin1');
  process.stdout.write(d.toString('latin1'));
});
// A server that closes with input unread resets the connection: that ends the exchange, it is
// not a failure of the recording.
socket.on('error', (e) => console.error(`\ndrive: ${e.message}`));
socket.on('close', () => {
  closed = true;
});
await new Promise((r) => socket.once('connect', r));
for (const step of steps) {
  const [kind, ...rest] = step.split(':');
  const arg = rest.join(':');
  if (kind === 'send') socket.write(octets(arg));
  else if (kind === 'pause') await sleep(Number(arg));
  else if (kind === 'end') socket.end();
  else if (kind === 'wait') {
    const re = new RegExp(arg, 'm');
    const until = Date.now() + 5000;
    while (!re.test(seen) && !closed && Date.now() < until) await sleep(10);
    if (!re.test(seen)) {
      console.error(`\ndrive: no /${arg}/ from the server (closed=${closed})`);
      break;
    }
    seen = '';
  } else if (kind === 'tls') {
    socket.removeAllListeners('data');
    const t = tls.connect({ socket, ca, servername: values.servername });
    let up = false;
    const ok = await new Promise((r) => {
      t.once('secureConnect', () => {
        up = true;
        r(true);
      });
      // After the handshake, an alert as we hang up (INN sends one) is not a failed handshake.
      t.on('error', (e) => {
        if (!up) console.error(`\ndrive: TLS failed: ${e.message}`);
        r(false);
      });
    });
    console.log(`\ndrive: TLS ${ok ? t.getProtocol() : 'failed'}`);
    t.end();
    await sleep(100);
    break;
  } else {
    console.error(`drive: unknown step ${step}`);
    process.exit(2);
  }
}
await sleep(200);
socket.destroy();
