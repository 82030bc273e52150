#!/usr/bin/env node
// Example IMAP backend behind tlsproxy (RFC 9051 / RFC 3501, the post-TLS part only): it takes
// connections with accept() from @tlsproxy/backend, prints the hand-off info it received (the
// control key only as present: it is a secret), and answers CAPABILITY, LOGIN, SELECT INBOX
// (empty), LIST, NOOP and LOGOUT. Any user and password log in: this is a demo, not a mail store.
//
//   node examples/imap-backend/server.mjs --path /tmp/imapd.sock [--refuse-name bad.example]
import { parseArgs } from 'node:util';
import { listen } from '@tlsproxy/backend';

const { values } = parseArgs({
  options: {
    path: { type: 'string', default: '/tmp/tlsproxy-imapd.sock' },
    'refuse-name': { type: 'string', multiple: true, default: [] },
    quiet: { type: 'boolean', default: false },
    // One JSON object per line on stdout (connection info, each command) for tests and tooling.
    json: { type: 'boolean', default: false },
  },
});
const event = (o) => values.json && process.stdout.write(`${JSON.stringify(o)}\n`);
const refused = new Set(values['refuse-name']);

const server = await listen({
  path: values.path,
  mode: 0o600,
  // Only with names to refuse: a backend with onServerName is asked about every SNI name (it
  // says so in its hello), which costs a round trip per handshake.
  ...(refused.size > 0 ? { onServerName: (name) => !refused.has(name) } : {}),
  log: (m) => console.error(`imap-backend: ${m}`),
});
if (values.json) event({ event: 'listening', path: values.path, pid: process.pid });
else console.log(`imap-backend: listening on ${values.path} (pid ${process.pid})`);

// Close on a signal so the socket file is removed (a stale one would be replaced at the next
// start anyway, but a clean exit leaves nothing behind).
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => void server.close().then(() => process.exit(0)));
}

const CAPS = 'IMAP4rev1 LITERAL+ ID UNSELECT';

/**
 * The hand-off info as printed: the control key lets whoever holds it send control requests for
 * the connection, so it is a secret like a session cookie. Logs end up in container runtimes,
 * `kubectl logs` and log collectors: say whether there is one, never print it.
 */
function printable(info) {
  const { controlKey, ...rest } = info;
  return { ...rest, controlKey: controlKey ? '(present, not shown)' : null };
}

for await (const { socket, info, control, buffered } of server) {
  event({ event: 'connection', info: printable(info), buffered: buffered.toString('latin1') });
  if (!values.quiet && !values.json) {
    console.log(
      `imap-backend: connection handed over:\n${JSON.stringify(printable(info), null, 2)}`,
    );
  }
  serve(socket, info, control).catch((err) => {
    console.error(`imap-backend: session error: ${err.message}`);
    socket.destroy();
  });
}

/** Split IMAP command lines, following {n} / {n+} literals so they cannot desynchronise us. */
function commands(socket, onCommand) {
  let buf = Buffer.alloc(0);
  let parts = [];
  let need = 0; // bytes of literal still expected
  socket.on('data', (d) => {
    buf = Buffer.concat([buf, d]);
    for (;;) {
      if (need > 0) {
        if (buf.length < need) return;
        parts.push({ literal: buf.subarray(0, need).toString('utf8') });
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
      parts.push({ text: m ? line.slice(0, m.index) : line });
      if (m) {
        need = Number(m[1]);
        if (!m[2]) socket.write('+ go ahead\r\n');
        continue;
      }
      const cmd = parts;
      parts = [];
      onCommand(cmd);
    }
  });
}

/** Tokenise atoms, "quoted strings" and literals into a flat list of strings. */
function tokens(parts) {
  const out = [];
  for (const p of parts) {
    if (p.literal !== undefined) {
      out.push(p.literal);
      continue;
    }
    const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
    for (let m = re.exec(p.text); m; m = re.exec(p.text))
      out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]);
  }
  return out;
}

async function serve(socket, info, control) {
  let user = null;
  let selected = false;
  const send = (s) => socket.write(`${s}\r\n`);
  socket.on('error', () => {});
  commands(socket, async (parts) => {
    const [tag, rawCmd, ...args] = tokens(parts);
    event({
      event: 'command',
      connectionId: info.connectionId,
      tag,
      command: rawCmd,
      args: (rawCmd ?? '').toUpperCase() === 'LOGIN' ? ['<hidden>'] : args,
    });
    const cmd = (rawCmd ?? '').toUpperCase();
    if (!tag || !cmd) return send('* BAD Empty command');
    switch (cmd) {
      case 'CAPABILITY':
        send(`* CAPABILITY ${CAPS}`);
        return send(`${tag} OK CAPABILITY completed`);
      case 'ID':
        send('* ID ("name" "tlsproxy-example-imap-backend")');
        return send(`${tag} OK ID completed`);
      case 'NOOP':
        return send(`${tag} OK NOOP completed`);
      case 'LOGIN':
        if (args.length < 2) return send(`${tag} BAD LOGIN needs a user name and a password`);
        user = args[0];
        if (!values.json)
          console.log(
            `imap-backend: ${user} logged in over ${info.tls?.version ?? 'no TLS'} (SNI ${info.serverName ?? 'none'}, client ${info.clientIdentity?.subject ?? 'no certificate'})`,
          );
        send(
          `* OK [ALERT] tlsproxy hand-off: ${info.dialect} ${info.tls?.version ?? ''} ${info.tls?.cipher ?? ''} sni=${info.serverName ?? '-'} client=${info.clientIdentity?.subject ?? '-'} from ${info.remoteAddress}:${info.remotePort}`,
        );
        return send(`${tag} OK [CAPABILITY ${CAPS}] Logged in`);
      case 'AUTHENTICATE':
        return send(`${tag} NO [CANNOT] Use LOGIN in this demo`);
      case 'LIST':
      case 'LSUB':
        if (!user) return send(`${tag} NO [AUTHENTICATIONFAILED] Log in first`);
        if (args[1] === '') send(`* ${cmd} (\\Noselect) "/" ""`);
        else send(`* ${cmd} (\\HasNoChildren) "/" INBOX`);
        return send(`${tag} OK ${cmd} completed`);
      case 'NAMESPACE':
        send('* NAMESPACE (("" "/")) NIL NIL');
        return send(`${tag} OK NAMESPACE completed`);
      case 'SELECT':
      case 'EXAMINE':
        if (!user) return send(`${tag} NO [AUTHENTICATIONFAILED] Log in first`);
        if ((args[0] ?? '').toUpperCase() !== 'INBOX')
          return send(`${tag} NO [NONEXISTENT] Mailbox does not exist`);
        selected = true;
        send('* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)');
        send(
          '* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted',
        );
        send('* 0 EXISTS');
        send('* 0 RECENT');
        send('* OK [UIDVALIDITY 1] UIDs valid');
        send('* OK [UIDNEXT 1] Predicted next UID');
        return send(
          `${tag} OK [${cmd === 'SELECT' ? 'READ-WRITE' : 'READ-ONLY'}] ${cmd} completed`,
        );
      case 'STATUS':
        send(`* STATUS INBOX (MESSAGES 0 UIDNEXT 1 UIDVALIDITY 1 UNSEEN 0)`);
        return send(`${tag} OK STATUS completed`);
      case 'CLOSE':
      case 'UNSELECT':
        selected = false;
        return send(`${tag} OK ${cmd} completed`);
      case 'XTLSINFO': {
        // Not IMAP: shows a control request travelling back to the TLS engine with the key.
        const tlsInfo = await control.info().catch((e) => ({ error: e.message }));
        send(`* XTLSINFO ${JSON.stringify(tlsInfo)}`);
        return send(`${tag} OK XTLSINFO completed`);
      }
      case 'LOGOUT':
        send('* BYE Logging out');
        send(`${tag} OK LOGOUT completed`);
        return socket.end();
      default:
        return send(`${tag} BAD Unknown command${selected ? '' : ''}`);
    }
  });
}
