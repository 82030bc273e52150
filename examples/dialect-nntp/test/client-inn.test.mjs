// The NNTP client side against a real server: Debian's INN 2.7 nnrpd on the loopback alias
// 127.0.0.2, started from a private configuration as record.sh does (root, inn2 installed,
// inside this repository for its test certificate; skipped otherwise). The session's
// `starttls` outcome is followed by a real TLS handshake on the same socket, verified against the
// CA, and INN answers CAPABILITIES inside TLS.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import tls from 'node:tls';
import { clientContext, dec, runClientSession } from '@tlsproxy/dialect-kit/testing';
import nntp from '../nntp.mjs';

const NNRPD = '/usr/lib/news/bin/nnrpd';
const certs = new URL('../../../fixtures/certs/', import.meta.url).pathname;
const skip = !existsSync(NNRPD)
  ? 'INN (inn2) is not installed'
  : process.getuid?.() !== 0
    ? 'needs root (INN runs as news)'
    : !existsSync(join(certs, 'ca.pem'))
      ? 'not inside the tlsproxy repository (no test certificate)'
      : false;
const HOST = '127.0.0.2';
const PORT = 11700 + Math.floor(Math.random() * 200);
/** @type {import('node:child_process').ChildProcess | undefined} */
let server;
let state = '';

before(async () => {
  if (skip) return;
  state = mkdtempSync(join(tmpdir(), 'nntp-client-inn-'));
  chmodSync(state, 0o755);
  for (const d of ['overview', 'run', 'tmp']) mkdirSync(join(state, d));
  copyFileSync(join(certs, 'server.pem'), join(state, 'server.pem'));
  copyFileSync(join(certs, 'server.key'), join(state, 'server.key'));
  chmodSync(join(state, 'server.key'), 0o600);
  const conf = readFileSync('/etc/news/inn.conf', 'utf8')
    .replace(/^#?tlscertfile:.*$/m, `tlscertfile: ${state}/server.pem`)
    .replace(/^#?tlskeyfile:.*$/m, `tlskeyfile: ${state}/server.key`)
    .replace(/^pathoverview:.*$/m, `pathoverview: ${state}/overview`)
    .replace(/^pathrun:.*$/m, `pathrun: ${state}/run`)
    .replace(/^pathtmp:.*$/m, `pathtmp: ${state}/tmp`)
    .replace(/^#domain:$/m, 'domain: example.net');
  writeFileSync(join(state, 'inn.conf'), conf);
  writeFileSync(
    join(state, 'readers.conf'),
    'auth "anyone" {\n  hosts: "*"\n  default: "<reader>"\n}\naccess "reader" {\n  users: "<reader>"\n  newsgroups: "*"\n  access: RPA\n}\n',
  );
  spawnSync('chown', ['-R', 'news:news', state]);
  const env = { ...process.env, INNCONF: join(state, 'inn.conf') };
  spawnSync('su', [
    'news',
    '-s',
    '/bin/sh',
    '-c',
    `INNCONF=${env.INNCONF} timeout 60 /usr/lib/news/bin/makehistory -O -x -F`,
  ]);
  server = spawn(
    'timeout',
    [
      '120',
      NNRPD,
      '-D',
      '-f',
      '-n',
      '-o',
      '-4',
      HOST,
      '-p',
      String(PORT),
      '-c',
      join(state, 'readers.conf'),
    ],
    {
      cwd: state,
      env,
      stdio: 'ignore',
    },
  );
  for (let i = 0; i < 100; i++) {
    const up = await new Promise((resolve) => {
      const s = net.connect(PORT, HOST, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nnrpd did not listen on ${HOST}:${PORT}`);
});

after(() => {
  server?.kill();
  if (state) rmSync(state, { recursive: true, force: true });
});

test('against INN: STARTTLS as a client, then CAPABILITIES inside verified TLS', {
  skip,
  timeout: 30_000,
}, async () => {
  const session = /** @type {NonNullable<typeof nntp.client>} */ (nntp.client).create(
    clientContext({}),
  );
  const socket = net.connect(PORT, HOST);
  try {
    const run = await runClientSession(session, socket);
    assert.equal(run.outcome.type, 'starttls', JSON.stringify(run.outcome));
    assert.equal(dec(run.sent), 'CAPABILITIES\r\nSTARTTLS\r\n');
    assert.match(
      dec(run.outcome.type === 'starttls' ? run.outcome.toLocal : new Uint8Array()),
      /^200 Server ready \(posting allowed\)\r\n$/,
    );
    const secure = tls.connect({
      socket,
      ca: readFileSync(join(certs, 'ca.pem')),
      servername: 'localhost',
    });
    await new Promise((resolve, reject) => {
      secure.once('secureConnect', resolve);
      secure.once('error', reject);
    });
    secure.write('CAPABILITIES\r\n');
    let caps = '';
    for await (const chunk of secure) {
      caps += chunk.toString('latin1');
      if (caps.includes('\r\n.\r\n')) break;
    }
    // Inside TLS INN offers AUTHINFO USER, and no more STARTTLS.
    assert.match(caps, /^101 /);
    assert.match(caps, /\r\nAUTHINFO USER/);
    assert.doesNotMatch(caps, /\r\nSTARTTLS\r\n/);
    secure.destroy();
  } finally {
    socket.destroy();
  }
});
