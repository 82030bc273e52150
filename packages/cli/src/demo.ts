// `tlsproxy demo`: every installed dialect on loopback at port-base + its standard port, one
// embedded TLS engine with a self-signed certificate made at start, and a small demo backend per
// dialect (src/demo-backends) that takes the connection with @tlsproxy/backend's accept(),
// finishes the session in plaintext and shows the hand-off info. It prints one line per dialect
// to try it with a real client (openssl s_client; node for HTTP Upgrade, which s_client cannot
// do), with what to type after it.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { hostname as osHostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  type Dialect,
  isTlsProxyError,
  type Logger,
  loadDialect,
  type TlsProxy,
} from '@tlsproxy/core';
import { type DemoBackend, type Serve, startBackend } from './demo-backends/common.js';
import { serveHttp } from './demo-backends/http.js';
import { serveImap } from './demo-backends/imap.js';
import { ldapRequests, serveLdap } from './demo-backends/ldap.js';
import { servePop3 } from './demo-backends/pop3.js';
import { makeSmtp } from './demo-backends/smtp.js';
import { serveXmpp } from './demo-backends/xmpp.js';
import {
  CliProxy,
  decideEngine,
  type EngineKind,
  embeddedEngine,
  fallbackWarning,
  nativeProblem,
} from './engine.js';
import { isDnsName, makeSelfSigned } from './selfsigned.js';

export interface DemoOptions {
  /** Address to listen on; default 127.0.0.1. */
  host?: string;
  /** Each dialect listens on portBase + its standard port; default 10000. */
  portBase?: number;
  /** Where each output line goes; default stdout. */
  log?: (line: string) => void;
  /** Lines kept in `lines` after the banner; default 1,000. */
  keepLines?: number;
  /** The TLS engine: native (default; node:tls with a warning where it cannot load) or node. */
  engine?: EngineKind;
}

export interface Demo {
  stop(): Promise<void>;
  /** The banner, then the most recent backend and proxy lines (at most `keepLines` of them). */
  readonly lines: string[];
  /** Lines logged since the start, kept or not. */
  readonly linesLogged: number;
}

/** A demo left running all day must not grow: after the banner only the last lines are kept. */
export const DEFAULT_KEEP_LINES = 1000;

/**
 * Every line until seal() (the banner: bounded, a few per dialect), then a ring buffer of the
 * last `keep` lines.
 */
export class RecentLines {
  readonly #head: string[] = [];
  readonly #ring: string[] = [];
  #next = 0;
  #sealed = false;
  #total = 0;
  constructor(readonly keep: number = DEFAULT_KEEP_LINES) {
    if (!Number.isInteger(keep) || keep < 1)
      throw new RangeError('keep must be a positive integer');
  }
  push(line: string): void {
    this.#total++;
    if (!this.#sealed) this.#head.push(line);
    else if (this.#ring.length < this.keep) this.#ring.push(line);
    else {
      this.#ring[this.#next] = line;
      this.#next = (this.#next + 1) % this.keep;
    }
  }
  seal(): void {
    this.#sealed = true;
  }
  /** The kept lines, oldest first (a copy). */
  get lines(): string[] {
    return [...this.#head, ...this.#ring.slice(this.#next), ...this.#ring.slice(0, this.#next)];
  }
  get total(): number {
    return this.#total;
  }
}

export const DEMO_USAGE = `Usage: tlsproxy demo [--host 127.0.0.1] [--port-base 10000] [--engine native|node]

  Every installed dialect on HOST at port-base + its standard port (IMAP 10143, POP3 10110,
  SMTP 10025, LDAP 10389, XMPP 15222, HTTP Upgrade 10080, implicit-TLS IMAP 10993), one embedded
  TLS engine with a self-signed certificate made at start, and a demo backend per dialect.
  It prints a line per dialect to try it with openssl s_client. Ctrl-C stops it.

  --host ADDRESS      address to listen on (default 127.0.0.1)
  --port-base N       add N to each standard port (default 10000)
  --engine node|native  the TLS engine: native (default: @tlsproxy/engine-native; node:tls with
                      a warning where it cannot load) or node (node:tls, the reference engine)
  -h, --help          this text
`;

const MAX_PORT = 5222; // the highest standard port used (XMPP)
const SNI = 'localhost';

interface Entry {
  /** dialect to load: a short name, or 'tls' (built in) */
  dialect: string;
  label: string;
  port: number;
  /** the demo backend's session handler, given the demo's log */
  serve(log: (line: string) => void): Serve;
  /** the command line to try it, and what to type into it */
  try(host: string, port: number): { command: string; input: string[] };
}

const hostPort = (host: string, port: number) =>
  host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;

const IMAP_INPUT = ['a LOGIN alice secret', 'b SELECT INBOX', 'c LOGOUT'];
const XMPP_STREAM = `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='${SNI}' version='1.0'>`;

/** Bytes as a single-quoted printf format (octal escapes: POSIX printf has no \x). */
function printfArg(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) {
    const c = String.fromCharCode(b);
    s += b >= 0x20 && b < 0x7f && !`'\\%`.includes(c) ? c : `\\${b.toString(8).padStart(3, '0')}`;
  }
  return `'${s}'`;
}

const ENTRIES: Entry[] = [
  {
    dialect: 'imap',
    label: 'IMAP STARTTLS',
    port: 143,
    serve: () => serveImap,
    try: (h, p) => ({
      command: `openssl s_client -starttls imap -connect ${hostPort(h, p)} -servername ${SNI} -crlf -quiet`,
      input: IMAP_INPUT,
    }),
  },
  {
    dialect: 'pop3',
    label: 'POP3 STLS',
    port: 110,
    serve: () => servePop3,
    try: (h, p) => ({
      // -nocommands: a line starting with Q (QUIT) or R must reach the server
      command: `openssl s_client -starttls pop3 -connect ${hostPort(h, p)} -servername ${SNI} -crlf -quiet -nocommands`,
      input: ['USER alice', 'PASS secret', 'STAT', 'QUIT'],
    }),
  },
  {
    dialect: 'smtp',
    label: 'SMTP STARTTLS',
    port: 25,
    serve: makeSmtp,
    try: (h, p) => ({
      command: `openssl s_client -starttls smtp -connect ${hostPort(h, p)} -servername ${SNI} -crlf -quiet -nocommands`,
      input: [
        'EHLO client.example',
        'MAIL FROM:<alice@example.test>',
        'RCPT TO:<bob@example.test>',
        'DATA',
        'Subject: hello through tlsproxy',
        '.',
        'QUIT',
      ],
    }),
  },
  {
    dialect: 'ldap',
    label: 'LDAP StartTLS',
    port: 389,
    serve: () => serveLdap,
    try: (h, p) => ({
      // BER is not typed by hand: Bind, Search, Unbind are piped in; grep keeps the readable parts
      command:
        `printf ${printfArg(
          Buffer.concat([
            ldapRequests.simpleBind(2, 'cn=alice,dc=example,dc=test', 'secret'),
            ldapRequests.search(3, 'dc=example,dc=test'),
            ldapRequests.unbind(4),
          ]),
        )} | openssl s_client -starttls ldap -connect ${hostPort(h, p)} -servername ${SNI} -quiet` +
        ` | grep -ao '[[:print:]]\\{4,\\}'`,
      input: [],
    }),
  },
  {
    dialect: 'xmpp',
    label: 'XMPP STARTTLS',
    port: 5222,
    serve: () => serveXmpp,
    try: (h, p) => ({
      command: `openssl s_client -starttls xmpp -xmpphost ${SNI} -connect ${hostPort(h, p)} -servername ${SNI} -quiet`,
      input: [
        XMPP_STREAM,
        // SASL PLAIN: base64 of "\0alice\0secret"
        `<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${Buffer.from('\0alice\0secret').toString('base64')}</auth>`,
        XMPP_STREAM,
        "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>demo</resource></bind></iq>",
        '</stream:stream>',
      ],
    }),
  },
  {
    dialect: 'http-upgrade',
    label: 'HTTP Upgrade: TLS/1.0 (RFC 2817)',
    port: 80,
    serve: () => serveHttp,
    try: (h, p) => ({
      // s_client has no -starttls for HTTP Upgrade: node sends the request, reads the 101, runs TLS
      command:
        `node -e "const s=require('net').connect(${p},'${h}',()=>s.write('OPTIONS * HTTP/1.1\\r\\nHost: ${SNI}\\r\\nUpgrade: TLS/1.0\\r\\nConnection: Upgrade\\r\\n\\r\\n'));` +
        `s.once('data',d=>{process.stdout.write(d);require('tls').connect({socket:s,servername:'${SNI}',rejectUnauthorized:false}).pipe(process.stdout)})"`,
      input: [],
    }),
  },
  {
    dialect: 'tls',
    label: 'IMAPS (implicit TLS, the built-in tls dialect)',
    port: 993,
    serve: () => serveImap,
    try: (h, p) => ({
      command: `openssl s_client -connect ${hostPort(h, p)} -servername ${SNI} -crlf -quiet`,
      input: IMAP_INPUT,
    }),
  },
];

const cliDir = fileURLToPath(new URL('..', import.meta.url));

/** Load a dialect as the CLI does, then from beside the CLI; null when it is not installed. */
async function tryLoad(name: string): Promise<{ dialect: Dialect } | { missing: string }> {
  const notFound = (e: unknown) =>
    isTlsProxyError(e) && e.code === 'TLSPROXY_ERR_DIALECT_NOT_FOUND';
  try {
    return { dialect: await loadDialect(name) };
  } catch (err) {
    if (!notFound(err)) return { missing: (err as Error).message };
    try {
      return { dialect: await loadDialect(name, cliDir) };
    } catch (err2) {
      return { missing: (err2 as Error).message };
    }
  }
}

function portError(err: unknown, e: Entry, host: string, port: number, base: number): Error {
  const code = ((err as { cause?: { code?: string } }).cause?.code ??
    (err as { code?: string }).code) as string | undefined;
  const why =
    code === 'EADDRINUSE'
      ? 'is already in use'
      : code === 'EACCES'
        ? 'needs privileges (ports below 1024)'
        : code === 'EADDRNOTAVAIL'
          ? 'is not an address of this machine'
          : `cannot be listened on (${(err as Error).message})`;
  return new Error(
    `port ${port} on ${host} (${e.dialect}: --port-base ${base} + ${e.port}) ${why}; ` +
      'stop what uses it or choose another --port-base',
    { cause: err },
  );
}

export async function runDemo(opts: DemoOptions = {}): Promise<Demo> {
  const host = opts.host ?? '127.0.0.1';
  const base = opts.portBase ?? 10000;
  if (!Number.isInteger(base) || base < 0 || base + MAX_PORT > 65535)
    throw new RangeError(`--port-base must be an integer from 0 to ${65535 - MAX_PORT}`);
  const lines = new RecentLines(opts.keepLines ?? DEFAULT_KEEP_LINES);
  const out = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const log = (l: string) => {
    lines.push(l);
    out(l);
  };
  const logger: Logger = {
    log(level, message, fields = {}) {
      if (level === 'debug') return;
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(
          ([k, v]) => `${k}=${typeof v === 'string' && !/[\s"]/.test(v) ? v : JSON.stringify(v)}`,
        )
        .join(' ');
      log(`proxy: ${level} ${message}${kv ? ` ${kv}` : ''}`);
    },
  };

  // Which dialects are here
  const found: { entry: Entry; dialect: Dialect }[] = [];
  const missing: string[] = [];
  for (const entry of ENTRIES) {
    const r = await tryLoad(entry.dialect);
    if ('dialect' in r) found.push({ entry, dialect: r.dialect });
    else missing.push(`${entry.dialect} (${r.missing})`);
  }

  const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-demo-'));
  const backends: DemoBackend[] = [];
  const clients = new Set<Socket>(); // TCP connections to the listeners, to end them at stop
  let proxy: TlsProxy | undefined;
  let engineText = '';
  let engineFallback: string | undefined;
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      // the backends first: their sessions end, so the TLS engine's relays and the listeners'
      // connections close, and the proxy can close without waiting on them
      await Promise.allSettled(backends.map((b) => b.close()));
      // and clients still in preamble (or idle): a listener closes only once they are gone
      for (const c of clients) c.destroy();
      if (proxy) {
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([
          proxy.close().catch(() => {}),
          new Promise<void>((r) => {
            timer = setTimeout(r, 5000);
          }),
        ]);
        clearTimeout(timer);
        for (const l of proxy.listeners) l.server.close();
      }
      rmSync(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  try {
    const names = ['localhost', '127.0.0.1', '::1'];
    const machine = osHostname();
    if (isDnsName(machine)) names.push(machine);
    if (host !== '0.0.0.0' && host !== '::' && host !== '127.0.0.1') names.push(host);
    const cert = await makeSelfSigned(names);
    writeFileSync(join(dir, 'cert.pem'), cert.cert, { mode: 0o644 });
    if (opts.engine === 'native') {
      const why = await nativeProblem();
      if (why !== undefined)
        throw new Error(`--engine native cannot load (${why}); use --engine node (node:tls)`);
    }
    const decision = await decideEngine(opts.engine);
    engineFallback = decision.fallback ? fallbackWarning(decision, false) : undefined;
    const built = await embeddedEngine(
      decision.kind,
      { identities: [{ cert: cert.cert, key: cert.key }] },
      undefined,
      1,
    );
    const threads = Number(built.describe.threads);
    engineText =
      decision.kind === 'native'
        ? `the native TLS engine (@tlsproxy/engine-native, ${threads} thread${threads === 1 ? '' : 's'})`
        : 'the node:tls engine (the reference engine)';
    proxy = new CliProxy({ pool: built.pool, logger }, built.owned);
    logger.log('info', 'TLS engine', built.describe);

    const started: { entry: Entry; port: number; backend: string }[] = [];
    for (const { entry, dialect } of found) {
      const path = join(dir, `${entry.dialect}.sock`);
      backends.push(await startBackend(entry.dialect, path, entry.serve(log), log));
      const port = base + entry.port;
      try {
        const l = await proxy.listen({
          dialect,
          listen: hostPort(host, port),
          backend: `unix:${path}`,
        });
        l.server.on('connection', (c: Socket) => {
          clients.add(c);
          c.once('close', () => clients.delete(c));
        });
      } catch (err) {
        throw portError(err, entry, host, port, base);
      }
      started.push({ entry, port, backend: `unix:${path}` });
    }

    log(`tlsproxy demo: ${engineText}, one listener and one demo backend per dialect`);
    if (engineFallback) log(`  warning: ${engineFallback}`);
    log(
      `certificate: self-signed ECDSA P-256 for ${cert.names.join(', ')}, made now, ` +
        `valid until ${cert.notAfter.toISOString()}`,
    );
    log(`  SHA-256 fingerprint ${cert.fingerprint256}`);
    log(`  saved as ${join(dir, 'cert.pem')} (give s_client -CAfile that file to verify it)`);
    if (missing.length > 0) log(`not installed, skipped: ${missing.join('; ')}`);
    else log('every dialect is installed');
    log('');
    for (const { entry, port, backend } of started) {
      const t = entry.try(host, port);
      log(`${entry.dialect}: ${entry.label} on ${hostPort(host, port)}, backend ${backend}`);
      log(`  $ ${t.command}`);
      for (const i of t.input) log(`  > ${i}`);
    }
    log('');
    log('Lines after "$" are commands to paste, lines after ">" what to type then. Ctrl-C stops.');
    lines.seal();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    stop,
    get lines() {
      return lines.lines;
    },
    get linesLogged() {
      return lines.total;
    },
  };
}
