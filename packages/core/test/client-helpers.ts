// Test kit for the client role (role: client): a toy line protocol with a client side that keeps
// the contract (dialect-kit contract.ts, ClientDialect), a toy server for it on loopback that runs
// real TLS (node:tls, the repo's test PKI) after its go-ahead, and a local client.
import net from 'node:net';
import tls from 'node:tls';
import type { ClientAction, Dialect } from '../src/index.js';
import { cert } from './helpers.js';

/** Stop a Socket reading at the handle (pause() alone lets Node read on into its buffer). */
function pauseReading(socket: net.Socket): void {
  socket.pause();
  const handle = (socket as unknown as { _handle?: { readStop?(): void; reading?: boolean } })
    ._handle;
  if (handle?.readStop) {
    handle.readStop();
    handle.reading = false;
  }
}

const enc = (s: string) => new TextEncoder().encode(s);
const latin1 = (b: Uint8Array) => Buffer.from(b).toString('latin1');

export interface ToyClientOptions {
  /** Go on without TLS when the server offers none (like SMTP's `tls: may`). */
  plaintext: boolean;
  /** Hold the event loop this long when the go-ahead arrives (so later bytes queue in the kernel). */
  stallMs: number;
}

/**
 * The toy protocol: the server greets `* OK [STARTTLS] hello`; we send `a STARTTLS`; `a OK` is the
 * go-ahead (anything after it in the same read: close); anything else: close. What the local
 * client sees first: the greeting.
 */
export const toyDialect: Dialect = {
  name: 'toy',
  defaultPorts: {},
  options: {},
  limits: {},
  busy: () => enc('* BYE busy\r\n'),
  create() {
    return {
      start: () => [],
      receive: () => [],
      timer: () => [],
      tlsUnavailable: () => [],
    };
  },
  client: {
    options: {
      plaintext: {
        type: 'boolean',
        default: false,
        description: 'relay without TLS if not offered',
      },
      stallMs: { type: 'number', default: 0, description: 'stall at the go-ahead (tests)' },
    },
    limits: {
      greetingTimeoutMs: {
        default: 5000,
        description: 'wait for the greeting',
        unit: 'ms',
        phase: 'preamble',
      },
    },
    create(ctx) {
      const o = ctx.options as ToyClientOptions;
      let buf = '';
      let state: 'greeting' | 'wait' | 'done' = 'greeting';
      let greeting = '';
      return {
        start: (now) => [{ type: 'timer', at: now + ctx.limits.greetingTimeoutMs! }],
        receive(data) {
          if (state === 'done') return [];
          buf += latin1(data);
          const out: ClientAction[] = [];
          for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (state === 'greeting') {
              greeting = `${line}\r\n`;
              if (line.startsWith('* OK [STARTTLS]')) {
                out.push({ type: 'log', level: 'debug', message: 'greeting with STARTTLS' });
                out.push({ type: 'send', data: enc('a STARTTLS\r\n') });
                state = 'wait';
                continue;
              }
              state = 'done';
              if (o.plaintext && line.startsWith('* OK'))
                return [
                  ...out,
                  { type: 'plaintext', toLocal: enc(greeting), reason: 'STARTTLS not offered' },
                ];
              return [
                ...out,
                {
                  type: 'close',
                  data: enc('z LOGOUT\r\n'),
                  toLocal: enc('* BYE STARTTLS not offered by the server\r\n'),
                  reason: `STARTTLS not offered: ${line}`,
                },
              ];
            }
            state = 'done';
            if (!line.startsWith('a OK'))
              return [{ type: 'close', reason: `STARTTLS refused: ${line}` }];
            if (buf.length > 0)
              return [{ type: 'close', reason: `${buf.length} bytes after the go-ahead` }];
            const until = Date.now() + o.stallMs;
            while (Date.now() < until) {}
            return [{ type: 'starttls', toLocal: enc(greeting), state: {} }];
          }
          return out;
        },
        timer: () => [{ type: 'close', reason: 'no greeting in time' }],
      };
    },
  },
};

/** The toy dialect whose client side drops the server's first line over TLS if it is `PRELUDE …`
 * (`afterTls`, backendGreeting's contract, as http-upgrade's client side has it). */
export const toyAfterTlsDialect: Dialect = {
  ...toyDialect,
  name: 'toyafter',
  client: {
    ...toyDialect.client!,
    afterTls: (data: Uint8Array) => {
      const s = latin1(data);
      if (!'PRELUDE'.startsWith(s.slice(0, 7))) return 0;
      const i = s.indexOf('\r\n');
      return i < 0 ? null : i + 2;
    },
  },
};

export interface ToyServerOptions {
  /** Offer STARTTLS (default true). */
  starttls?: boolean;
  /** Written right after the go-ahead, in the same write. */
  inject?: string;
  /** Certificate and key (default: server.pem). */
  cert?: Buffer;
  key?: Buffer;
  /** Answer `a STARTTLS` with this instead of `a OK`. */
  refuse?: string;
  /** Ask for a client certificate (trusting the test CA) and record its subject in `peers`. */
  requestCert?: boolean;
  /** Written first over TLS, right after the handshake (as cupsd answers the upgrade itself). */
  prelude?: string;
  /** Wait this long after the go-ahead before answering the ClientHello (a slow handshake). */
  tlsDelayMs?: number;
}

export interface ToyServer {
  port: number;
  /** Lines each TLS session received, one list per session. */
  sessions: string[][];
  /** Connections accepted. */
  accepted: number;
  /** The client certificate subjects seen (with requestCert). */
  peers: string[];
  close(): Promise<void>;
}

/**
 * The toy server. After TLS it answers `PING x` with `PONG x`, and the local client's FIN with
 * `BYE` then its own FIN (so half-close can be seen end to end). Without STARTTLS it does the same
 * in plaintext.
 */
export async function startToyServer(options: ToyServerOptions = {}): Promise<ToyServer> {
  const sockets = new Set<net.Socket>();
  const sessions: string[][] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    out.accepted++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    s.setNoDelay(true);
    const starttls = options.starttls ?? true;
    s.write(starttls ? '* OK [STARTTLS] toy server ready\r\n' : '* OK toy server ready\r\n');
    if (!starttls) {
      serveLines(s, sessions);
      return;
    }
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      if (!buf.includes('\r\n')) return;
      s.off('data', onData);
      if (options.refuse) {
        s.end(`${options.refuse}\r\n`);
        return;
      }
      s.write(`a OK begin TLS now\r\n${options.inject ?? ''}`);
      if (options.tlsDelayMs) {
        // Leave the ClientHello in the kernel (a stream pause would let Node read it and lose it).
        pauseReading(s);
        setTimeout(() => startTls(s), options.tlsDelayMs);
      } else startTls(s);
    };
    const startTls = (s: net.Socket) => {
      if (s.destroyed) return;
      const t = new tls.TLSSocket(s, {
        isServer: true,
        cert: options.cert ?? cert('server.pem'),
        key: options.key ?? cert('server.key'),
        ...(options.requestCert
          ? { requestCert: true, rejectUnauthorized: false, ca: cert('ca.pem') }
          : {}),
      });
      t.on('error', () => {});
      if (options.prelude !== undefined) t.once('secure', () => t.write(options.prelude!));
      if (options.requestCert)
        t.once('secure', () => {
          const x = t.getPeerX509Certificate();
          out.peers.push(x ? x.subject.replace(/\n/g, ', ') : '(none)');
        });
      serveLines(t, sessions);
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const out: ToyServer = {
    port: (server.address() as net.AddressInfo).port,
    sessions,
    accepted: 0,
    peers: [],
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
  return out;
}

function serveLines(s: net.Socket | tls.TLSSocket, sessions: string[][]): void {
  const lines: string[] = [];
  sessions.push(lines);
  let buf = '';
  s.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      lines.push(line);
      if (line.startsWith('PING')) s.write(`PONG${line.slice(4)}\r\n`);
    }
  });
  s.on('end', () => s.end('BYE\r\n'));
}

/** A local plaintext client of the proxy that collects everything it receives. */
export class LocalClient {
  readonly socket: net.Socket;
  text = '';
  readonly closed: Promise<void>;
  constructor(port: number) {
    this.socket = net.connect({ port, host: '127.0.0.1' });
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.text += d;
    });
    this.socket.on('error', () => {});
    this.closed = new Promise((r) => this.socket.once('close', () => r()));
  }
  async until(re: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.text)) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${re}; have ${JSON.stringify(this.text)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return this.text;
  }
}
