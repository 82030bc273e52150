// `tlsproxy-conformance record --role client`: record a client transcript from a real server.
// The dialect's own client state machine (dialect.client) talks to the server through the
// recorder (record.ts: byte-exact, chunk boundaries, `!tls` at our first TLS record), driven over
// TCP the way the engine drives it (the kit's runClientSession); at starttls node:tls finishes the
// handshake with the server certificate verified (--ca, --server-name), and whatever the server
// says inside TLS unasked in the next half second becomes `@after-tls`. The recorder's text is
// then made a client transcript: `@role client` and the context's names first, the server-side
// markers dropped, `!plaintext` for a plaintext outcome, `!eof` before `!close` when the client
// closes on the server's bytes alone (the two ends race on loopback), and the outcome's toLocal
// as exact `L:` lines — to be reviewed by hand: the C: and L: lines are this client's own.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import type { ClientAction, Dialect } from '@tlsproxy/dialect-kit';
import { runClientSession } from '@tlsproxy/dialect-kit/testing';
import { escapeBytes, splitLines } from './bytes.js';
import { CLIENT_HOSTNAME, CLIENT_SERVER_NAME, parseClientTranscript } from './client-transcript.js';
import { ConformanceError } from './errors.js';
import { record } from './record.js';

export interface ClientRecordOptions {
  dialect: Dialect<unknown>;
  upstream: { host: string; port: number };
  out: string;
  /** Header lines after `@role client` (server, client, dialect, ...). */
  headers: Record<string, string>;
  options?: Record<string, unknown>;
  hostname?: string;
  serverName?: string;
  /** PEM of the CA that must have signed the server's certificate. */
  ca?: string | Buffer;
  bind?: string;
}

const lineOf = (prefix: string, bytes: Uint8Array): string[] =>
  splitLines(bytes).map((l, i) => `${prefix}${i === 0 ? ':' : '|'} ${escapeBytes(l)}`);

/** Whether the client closes on the server's reads alone, with no eof(). */
function closesOnData(
  dialect: Dialect<unknown>,
  context: Parameters<NonNullable<Dialect<unknown>['client']>['create']>[0],
  reads: Uint8Array[],
): boolean {
  const s = dialect.client!.create(context);
  const acts: ClientAction[] = [...s.start(0)];
  for (const r of reads) acts.push(...s.receive(r, 0));
  return acts.some((a) => a.type === 'close');
}

/** Record one connection of the dialect's client to the server; resolves with the text. */
export async function recordClient(o: ClientRecordOptions): Promise<string> {
  if (!o.dialect.client) {
    throw new ConformanceError(
      'TLSPROXY_ERR_CONFORMANCE_USAGE',
      `dialect "${o.dialect.name}" has no client side (dialect.client)`,
    );
  }
  const hostname = o.hostname ?? CLIENT_HOSTNAME;
  const serverName = o.serverName ?? CLIENT_SERVER_NAME;
  const options = o.options ?? {};
  const context = { options, limits: {}, hostname, serverName, connectionId: 'record' };
  const tmp = join(tmpdir(), `tlsproxy-client-record-${process.pid}-${Date.now()}.txt`);
  let port = 0;
  let listening!: () => void;
  const ready = new Promise<void>((r) => {
    listening = r;
  });
  const done = record({
    listen: { host: '127.0.0.1', port: 0 },
    upstream: o.upstream,
    out: tmp,
    headers: {},
    ...(o.bind ? { bind: o.bind } : {}),
    onListening: (p) => {
      port = p;
      listening();
    },
  });
  await ready;
  const sock = net.connect(port, '127.0.0.1');
  const run = await runClientSession(o.dialect.client.create(context), sock);
  let afterTls = Buffer.alloc(0);
  let failed: ConformanceError | undefined;
  if (run.outcome.type === 'starttls') {
    sock.resume();
    await new Promise<void>((resolve) => {
      const t = tls.connect(
        { socket: sock, servername: serverName, ...(o.ca ? { ca: o.ca } : {}) },
        () => {
          const inside: Buffer[] = [];
          t.on('data', (d: Buffer) => inside.push(d));
          setTimeout(() => {
            afterTls = Buffer.concat(inside);
            t.end();
            resolve();
          }, 500);
        },
      );
      t.on('error', (err) => {
        failed = new ConformanceError(
          'TLSPROXY_ERR_CONFORMANCE_RECORD',
          `the TLS handshake with the server failed: ${err.message}`,
        );
        sock.destroy();
        resolve();
      });
    });
  } else if (run.outcome.type === 'plaintext') {
    sock.resume();
    sock.end();
  }
  const stop = setTimeout(() => sock.destroy(), 3000);
  const text = await done;
  clearTimeout(stop);
  rmSync(tmp, { force: true });
  if (failed) throw failed;

  let lines = text.split('\n').filter((l) => l !== '!no-leftover' && !l.startsWith('!state '));
  while (lines.at(-1) === '') lines.pop();
  lines = lines.filter((l) => !l.startsWith('@'));
  if (run.outcome.type === 'plaintext') {
    const at = lines.indexOf('!eof');
    lines = [...lines.slice(0, at < 0 ? lines.length : at), '!plaintext'];
  }
  const swap = lines.findIndex((l, i) => l === '!close' && lines[i + 1] === '!eof');
  if (swap >= 0 && run.outcome.type === 'close') {
    const probe = parseClientTranscript(
      `@role client\n@server x\n@client x\n@dialect x\n${lines.slice(0, swap).join('\n')}\n`,
      'recording',
    );
    const reads = probe.steps.flatMap((s) => (s.type === 'server' ? [s.bytes] : []));
    if (closesOnData(o.dialect, context, reads)) {
      lines.splice(
        swap,
        2,
        '# recorded: !close then !eof; the client closes on the reply itself, so its close is first',
        '!eof',
        '!close',
      );
    }
  }
  const local = run.outcome.toLocal ?? new Uint8Array();
  if (local.length > 0) {
    lines.push('# What the client gives the local client (toLocal):', ...lineOf('L', local));
  } else lines.push('# The local client is given nothing (toLocal empty).');
  const headers: Record<string, string> = {
    role: 'client',
    ...o.headers,
    hostname,
    'server-name': serverName,
    ...(Object.keys(options).length > 0 ? { options: JSON.stringify(options) } : {}),
    ...(afterTls.length > 0 ? { 'after-tls': escapeBytes(new Uint8Array(afterTls), false) } : {}),
  };
  const out = `${[...Object.entries(headers).map(([k, v]) => `@${k} ${v}`), ...lines].join('\n')}\n`;
  // What we write must parse as what we claim it is.
  parseClientTranscript(out, o.out);
  writeFileSync(o.out, out);
  return out;
}

/** The CA option: a PEM file's text. */
export function readCa(path: string | undefined): string | undefined {
  return path === undefined ? undefined : readFileSync(path, 'utf8');
}
