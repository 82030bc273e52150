#!/usr/bin/env node
// A small POP3 backend behind tlsproxy (RFC 1939, the part after STLS only) for the end-to-end
// tests and for trying the CLI by hand. It takes connections with accept() from
// @tlsproxy/backend and serves one mailbox with one message to any user and password.
// RFC 2595 section 4: after STLS there is no new greeting; the client sends CAPA again.
//
//   node protocols/pop3/test/pop3-backend.mjs --path /tmp/pop3d.sock [--json]
import { parseArgs } from 'node:util';
import { listen } from '@tlsproxy/backend';

const { values } = parseArgs({
  options: {
    path: { type: 'string', default: '/tmp/tlsproxy-pop3d.sock' },
    // One JSON object per line on stdout (connection info, each command) for tests.
    json: { type: 'boolean', default: false },
  },
});
const event = (o) => {
  if (values.json) process.stdout.write(`${JSON.stringify(o)}\n`);
  else console.log(`pop3-backend: ${JSON.stringify(o)}`);
};

/** The one message, with a line that needs dot-stuffing (RFC 1939 section 3). */
export const MESSAGE =
  'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\n' +
  'Hello over POP3 through tlsproxy.\r\n.a line that starts with a dot\r\n';
const SIZE = Buffer.byteLength(MESSAGE);

const server = await listen({
  path: values.path,
  mode: 0o600,
  log: (m) => console.error(`pop3-backend: ${m}`),
});
event({ event: 'listening', path: values.path, pid: process.pid });

for await (const { socket, info } of server) {
  event({ event: 'connection', info });
  serve(socket, info);
}

function serve(socket, info) {
  let user = null;
  let loggedIn = false;
  let buf = '';
  const send = (s) => socket.write(s);
  socket.setEncoding('latin1');
  socket.on('error', () => {});
  socket.on('data', (d) => {
    buf += d;
    if (buf.length > 4096) socket.destroy();
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const line = buf.slice(0, i).replace(/\r$/, '');
      buf = buf.slice(i + 1);
      const [name = '', ...args] = line.split(' ');
      const cmd = name.toUpperCase();
      event({ event: 'command', connectionId: info.connectionId, command: cmd, args });
      if (cmd === 'CAPA') {
        send('+OK Capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n.\r\n');
      } else if (cmd === 'STLS') {
        send('-ERR Command not permitted when TLS active\r\n');
      } else if (cmd === 'QUIT') {
        send('+OK Logging out.\r\n');
        socket.end();
        return;
      } else if (!loggedIn && cmd === 'USER' && args.length === 1) {
        user = args[0];
        send('+OK\r\n');
      } else if (!loggedIn && cmd === 'PASS' && user !== null) {
        loggedIn = true;
        send('+OK Logged in.\r\n');
      } else if (!loggedIn) {
        send('-ERR Unknown command.\r\n');
      } else if (cmd === 'STAT') {
        send(`+OK 1 ${SIZE}\r\n`);
      } else if (cmd === 'LIST') {
        send(args.length ? `+OK 1 ${SIZE}\r\n` : `+OK 1 messages:\r\n1 ${SIZE}\r\n.\r\n`);
      } else if (cmd === 'UIDL') {
        send(args.length ? '+OK 1 msg-1\r\n' : '+OK\r\n1 msg-1\r\n.\r\n');
      } else if (cmd === 'RETR' && args[0] === '1') {
        const stuffed = MESSAGE.replace(/^\./gm, '..');
        send(`+OK ${SIZE} octets\r\n${stuffed}.\r\n`);
      } else if (cmd === 'NOOP') {
        send('+OK\r\n');
      } else {
        send('-ERR No such message or command.\r\n');
      }
    }
  });
}
