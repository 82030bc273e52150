// Demo POP3 backend (RFC 1939, the part after STLS only), after
// protocols/pop3/test/pop3-backend.mjs: one mailbox with one message for any user and password.
// RFC 2595 section 4: after STLS there is no new greeting; the client sends CAPA again. The PASS
// reply carries the hand-off info.
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, lines, type Serve } from './common.js';

const MESSAGE =
  'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: hello\r\n\r\n' +
  'Hello over POP3 through tlsproxy.\r\n.a line that starts with a dot\r\n';
const SIZE = Buffer.byteLength(MESSAGE);

export const servePop3: Serve = (socket: net.Socket, info: HandoffInfo) => {
  let user: string | null = null;
  let loggedIn = false;
  const send = (s: string) => socket.write(s);
  lines(socket, (line) => {
    const [name = '', ...args] = line.split(' ');
    const cmd = name.toUpperCase();
    if (cmd === 'CAPA') {
      send('+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nRESP-CODES\r\n.\r\n');
    } else if (cmd === 'STLS') {
      send('-ERR Command not permitted when TLS active\r\n');
    } else if (cmd === 'QUIT') {
      send('+OK Logging out.\r\n');
      socket.end();
    } else if (!loggedIn && cmd === 'USER' && args.length === 1) {
      user = args[0]!;
      send('+OK\r\n');
    } else if (!loggedIn && cmd === 'PASS' && user !== null) {
      loggedIn = true;
      send(`+OK Logged in as ${user}. tlsproxy hand-off: ${handoffSummary(info)}\r\n`);
    } else if (!loggedIn) {
      send('-ERR Log in first (USER, PASS).\r\n');
    } else if (cmd === 'STAT') {
      send(`+OK 1 ${SIZE}\r\n`);
    } else if (cmd === 'LIST') {
      send(args.length ? `+OK 1 ${SIZE}\r\n` : `+OK 1 messages:\r\n1 ${SIZE}\r\n.\r\n`);
    } else if (cmd === 'UIDL') {
      send(args.length ? '+OK 1 msg-1\r\n' : '+OK\r\n1 msg-1\r\n.\r\n');
    } else if ((cmd === 'RETR' || cmd === 'TOP') && args[0] === '1') {
      send(`+OK ${SIZE} octets\r\n${MESSAGE.replace(/^\./gm, '..')}.\r\n`);
    } else if (cmd === 'NOOP') {
      send('+OK\r\n');
    } else {
      send('-ERR No such message or command.\r\n');
    }
  });
};
