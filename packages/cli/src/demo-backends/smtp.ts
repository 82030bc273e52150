// Demo SMTP backend (RFC 5321, the part after STARTTLS only), a hand-rolled cousin of
// protocols/smtp/test/smtp-backend.ts: after STARTTLS the client sends EHLO again inside TLS
// (RFC 3207 section 4.2) and gets no new greeting. EHLO, MAIL, RCPT, DATA (the reply gives the
// size received), RSET, NOOP, QUIT; the EHLO reply carries the hand-off info. Nothing is kept.
import type net from 'node:net';
import type { HandoffInfo } from '@tlsproxy/backend';
import { handoffSummary, lines, type Serve } from './common.js';

const MAX_MESSAGE = 1 << 20;

export function makeSmtp(log: (line: string) => void): Serve {
  return (socket: net.Socket, info: HandoffInfo) => {
    let ehlo: string | null = null;
    let from: string | null = null;
    let to: string[] = [];
    let data: number | null = null; // bytes of message received while in DATA
    let n = 0;
    const send = (s: string) => socket.write(`${s}\r\n`);
    lines(socket, (line) => {
      if (data !== null) {
        if (line !== '.') {
          data += Buffer.byteLength(line.startsWith('.') ? line.slice(1) : line, 'latin1') + 2;
          if (data > MAX_MESSAGE) {
            send('552 5.3.4 Message too big for this demo');
            socket.end();
          }
          return;
        }
        const id = `${info.connectionId}.${++n}`;
        log(`smtp backend: message ${id} from <${from}> to <${to.join('>, <')}>: ${data} bytes`);
        send(`250 2.0.0 OK: ${data} bytes received, queued as ${id} (and dropped: a demo)`);
        data = null;
        from = null;
        to = [];
        return;
      }
      const verb = (/^\S*/.exec(line)?.[0] ?? '').toUpperCase();
      const arg = line.slice(verb.length).trim();
      switch (verb) {
        case 'EHLO':
        case 'HELO':
          if (!arg) return send(`501 5.5.4 ${verb} needs a domain`);
          ehlo = arg;
          from = null;
          to = [];
          if (verb === 'HELO') return send(`250 demo.backend Hello ${arg}`);
          send(`250-demo.backend Hello ${arg}`);
          send(`250-X-TLSPROXY-HANDOFF ${handoffSummary(info)}`);
          send('250-8BITMIME');
          send(`250-SIZE ${MAX_MESSAGE}`);
          return send('250 ENHANCEDSTATUSCODES');
        case 'MAIL': {
          if (!ehlo) return send('503 5.5.1 EHLO first');
          const m = /^FROM:\s*<([^>]*)>/i.exec(arg);
          if (!m) return send('501 5.5.4 Syntax: MAIL FROM:<address>');
          from = m[1]!;
          to = [];
          return send('250 2.1.0 OK');
        }
        case 'RCPT': {
          if (from === null) return send('503 5.5.1 MAIL first');
          const m = /^TO:\s*<([^>]+)>/i.exec(arg);
          if (!m) return send('501 5.5.4 Syntax: RCPT TO:<address>');
          if (to.length >= 100) return send('452 4.5.3 Too many recipients');
          to.push(m[1]!);
          return send('250 2.1.5 OK');
        }
        case 'DATA':
          if (to.length === 0) return send('503 5.5.1 RCPT first');
          data = 0;
          return send('354 End data with <CR><LF>.<CR><LF>');
        case 'RSET':
          from = null;
          to = [];
          return send('250 2.0.0 OK');
        case 'NOOP':
          return send('250 2.0.0 OK');
        case 'STARTTLS':
          return send('503 5.5.1 TLS already active');
        case 'QUIT':
          send('221 2.0.0 Bye');
          return void socket.end();
        default:
          return send('502 5.5.2 Command not recognized');
      }
    });
  };
}
