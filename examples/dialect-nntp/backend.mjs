#!/usr/bin/env node
// A tiny NNTP backend behind tlsproxy, for trying the nntp dialect by hand (RFC 4642 section
// 2.2.2: after TLS the server sends no new greeting; the client asks CAPABILITIES again).
// It takes connections from @tlsproxy/backend, prints the hand-off info, and answers
// CAPABILITIES, MODE READER, DATE and QUIT inside TLS; everything else gets 500. No news here.
//
//   node examples/dialect-nntp/backend.mjs --path /tmp/nntpd.sock
import { parseArgs } from 'node:util';
import { listen } from '@tlsproxy/backend';

const { values } = parseArgs({
  options: { path: { type: 'string', default: '/tmp/tlsproxy-nntpd.sock' } },
});

const server = await listen({ path: values.path, mode: 0o600 });
console.log(`nntp-backend: listening on ${values.path} (pid ${process.pid})`);

for await (const { socket, info } of server) {
  const { controlKey: _secret, ...shown } = info; // the control key is a secret: never log it
  console.log(`nntp-backend: connection handed over: ${JSON.stringify(shown)}`);
  serve(socket, info);
}

/** @param {import('node:net').Socket} socket @param {Record<string, any>} info */
function serve(socket, info) {
  const send = (/** @type {string} */ s) => socket.write(`${s}\r\n`);
  let buf = '';
  socket.on('error', () => {});
  socket.setEncoding('latin1');
  socket.on('data', (chunk) => {
    buf += chunk;
    if (buf.length > 4096) return socket.destroy(); // RFC 3977: 512 octets per line
    for (let lf = buf.indexOf('\n'); lf >= 0; lf = buf.indexOf('\n')) {
      const line = buf.slice(0, lf).replace(/\r$/, '');
      buf = buf.slice(lf + 1);
      const [cmd = '', ...args] = line.split(/[ \t]+/);
      switch (cmd.toUpperCase()) {
        case 'CAPABILITIES':
          // After TLS: no STARTTLS (RFC 4642 section 2.2.2), AUTHINFO USER is now allowed.
          send('101 Capability list:');
          for (const c of [
            'VERSION 2',
            'IMPLEMENTATION tlsproxy example backend',
            'AUTHINFO USER',
            'READER',
          ])
            send(c);
          send('.');
          break;
        case 'MODE':
          send(
            args[0]?.toUpperCase() === 'READER'
              ? '201 Reader mode, no news here'
              : '501 MODE READER',
          );
          break;
        case 'DATE':
          send(`111 ${new Date().toISOString().replace(/\D/g, '').slice(0, 14)}`);
          break;
        case 'QUIT':
          send(`205 Bye from the backend (${info.tls?.version ?? 'no TLS'})`);
          socket.end();
          return;
        default:
          send('500 Unknown command');
      }
    }
  });
}
