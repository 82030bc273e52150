// Demo IMAP backend (RFC 9051 / RFC 3501, the post-TLS part only), after
// examples/imap-backend/server.mjs: CAPABILITY, LOGIN (any user and password), SELECT INBOX
// (empty), LIST, NOOP, LOGOUT; the LOGIN reply carries the hand-off info as an [ALERT].
// Behind the implicit-TLS `tls` dialect (IMAPS) nobody greeted the client yet, so it greets.
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, type Serve } from './common.js';

const CAPS = 'IMAP4rev1 LITERAL+ ID UNSELECT';

/** Split command lines, following {n} / {n+} literals so they cannot desynchronise us. */
function commands(socket: net.Socket, onCommand: (tokens: string[]) => void): void {
  let buf = Buffer.alloc(0);
  let parts: string[] = [];
  let need = 0; // bytes of literal still expected
  socket.on('data', (d: Buffer) => {
    buf = Buffer.concat([buf, d]);
    while (socket.writable) {
      if (need > 0) {
        if (buf.length < need) return;
        parts.push(`\0${buf.subarray(0, need).toString('utf8')}`);
        buf = buf.subarray(need);
        need = 0;
        continue;
      }
      const lf = buf.indexOf(10);
      if (lf < 0) {
        if (buf.length > 65536) socket.destroy();
        return;
      }
      const line = buf.subarray(0, lf).toString('utf8').replace(/\r$/, '');
      buf = buf.subarray(lf + 1);
      const m = /\{(\d+)(\+?)\}$/.exec(line);
      parts.push(m ? line.slice(0, m.index) : line);
      if (m) {
        need = Number(m[1]);
        if (need > 65536) return void socket.destroy();
        if (!m[2]) socket.write('+ go ahead\r\n');
        continue;
      }
      const cmd = parts;
      parts = [];
      onCommand(tokens(cmd));
    }
  });
}

/** Atoms, "quoted strings" and literals (marked with a leading NUL) as a flat list. */
function tokens(parts: string[]): string[] {
  const out: string[] = [];
  for (const p of parts) {
    if (p.startsWith('\0')) {
      out.push(p.slice(1));
      continue;
    }
    const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
    for (let m = re.exec(p); m; m = re.exec(p))
      out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : (m[2] ?? ''));
  }
  return out;
}

export const serveImap: Serve = (socket: net.Socket, info: HandoffInfo) => {
  let user: string | null = null;
  const send = (s: string) => socket.write(`${s}\r\n`);
  if (info.dialect === 'tls') send(`* OK [CAPABILITY ${CAPS}] tlsproxy demo IMAP server ready`);
  commands(socket, ([tag, rawCmd, ...args]) => {
    const cmd = (rawCmd ?? '').toUpperCase();
    if (!tag || !cmd) return send('* BAD Empty command');
    switch (cmd) {
      case 'CAPABILITY':
        send(`* CAPABILITY ${CAPS}`);
        return send(`${tag} OK CAPABILITY completed`);
      case 'ID':
        send('* ID ("name" "tlsproxy-demo-imap-backend")');
        return send(`${tag} OK ID completed`);
      case 'NOOP':
        return send(`${tag} OK NOOP completed`);
      case 'LOGIN':
        if (args.length < 2) return send(`${tag} BAD LOGIN needs a user name and a password`);
        user = args[0]!;
        send(`* OK [ALERT] tlsproxy hand-off: ${handoffSummary(info)}`);
        return send(`${tag} OK [CAPABILITY ${CAPS}] Logged in as ${user}`);
      case 'AUTHENTICATE':
        return send(`${tag} NO [CANNOT] Use LOGIN in this demo`);
      case 'LIST':
      case 'LSUB':
        if (!user) return send(`${tag} NO [AUTHENTICATIONFAILED] Log in first`);
        if (args[1] === '') send(`* ${cmd} (\\Noselect) "/" ""`);
        else send(`* ${cmd} (\\HasNoChildren) "/" INBOX`);
        return send(`${tag} OK ${cmd} completed`);
      case 'SELECT':
      case 'EXAMINE':
        if (!user) return send(`${tag} NO [AUTHENTICATIONFAILED] Log in first`);
        if ((args[0] ?? '').toUpperCase() !== 'INBOX')
          return send(`${tag} NO [NONEXISTENT] Mailbox does not exist`);
        send('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)');
        send('* 0 EXISTS');
        send('* OK [UIDVALIDITY 1] UIDs valid');
        send('* OK [UIDNEXT 1] Predicted next UID');
        return send(
          `${tag} OK [${cmd === 'SELECT' ? 'READ-WRITE' : 'READ-ONLY'}] ${cmd} completed`,
        );
      case 'CLOSE':
      case 'UNSELECT':
        return send(`${tag} OK ${cmd} completed`);
      case 'STARTTLS':
        return send(`${tag} BAD TLS is already active`);
      case 'LOGOUT':
        send('* BYE Logging out');
        send(`${tag} OK LOGOUT completed`);
        return void socket.end();
      default:
        return send(`${tag} BAD Unknown command`);
    }
  });
};
