// End-to-end kit: the POP3 backend (pop3-backend.mjs, built on @tlsproxy/backend) in its own
// process, tlsproxy with the pop3 dialect in this one, and a minimal raw POP3 client on
// node:net / node:tls. (No npm POP3 client does STLS on Node 20: node-pop3 and yapople only
// do implicit TLS, poplib needs crypto.createCredentials, mailpop3's STLS path is broken.)
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import { createEngine } from '../../../fixtures/engine.mjs';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const certsDir = join(root, 'fixtures/certs');
export const cert = (f: string) => readFileSync(join(certsDir, f));
const backendScript = fileURLToPath(new URL('./pop3-backend.mjs', import.meta.url));

let n = 0;
export const tmpSock = (tag: string) => join(tmpdir(), `pop3-${process.pid}-${tag}-${n++}.sock`);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export type Event = Record<string, unknown>;

export interface Backend {
  child: ChildProcess;
  path: string;
  events: Event[];
  waitFor(pred: (e: Event) => boolean, timeoutMs?: number): Promise<Event>;
}

export async function startBackend(): Promise<Backend> {
  const path = tmpSock('backend');
  const child = spawn(process.execPath, [backendScript, '--path', path, '--json'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const events: Event[] = [];
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, i)) as Event);
      buf = buf.slice(i + 1);
    }
  });
  const waitFor = async (pred: (e: Event) => boolean, timeoutMs = 10_000): Promise<Event> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const e = events.find(pred);
      if (e) return e;
      if (Date.now() > deadline) throw new Error('backend event did not come');
      await sleep(20);
    }
  };
  await waitFor((e) => e.event === 'listening');
  return { child, path, events, waitFor };
}

export function quietLogger(lines: string[] = []): Logger & { lines: string[] } {
  return {
    lines,
    log(level, message, fields = {}) {
      lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
    },
  };
}

export async function startProxy(backend: string) {
  const logger = quietLogger();
  const proxy = new TlsProxy({
    logger,
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  const l = await proxy.listen({ dialect: 'pop3', listen: '127.0.0.1:0', backend });
  return { proxy, port: (l.server.address() as net.AddressInfo).port, logger };
}

/** A POP3 client that reads whole replies: one status line, or a multi-line reply to ".". */
export class Pop3Client {
  private socket: net.Socket | tls.TLSSocket;
  private buf = '';
  private closed = false;

  constructor(port: number) {
    this.socket = net.connect(port, '127.0.0.1');
    this.listen();
  }

  private listen(): void {
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.buf += d;
    });
    this.socket.on('error', () => {});
    this.socket.on('close', () => {
      this.closed = true;
    });
  }

  /** Bytes received and not yet read as a reply. */
  get pending(): string {
    return this.buf;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  write(s: string): void {
    this.socket.write(s);
  }

  /** The next reply; `multi` waits for the terminating "." line when the status is +OK. */
  async reply(multi = false, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const eol = this.buf.indexOf('\r\n');
      if (eol >= 0) {
        const ok = this.buf.startsWith('+OK');
        const end = multi && ok ? this.buf.indexOf('\r\n.\r\n') : eol;
        if (end >= 0) {
          const len = multi && ok ? end + 5 : eol + 2;
          const out = this.buf.slice(0, len);
          this.buf = this.buf.slice(len);
          return out;
        }
      }
      if (Date.now() > deadline || this.closed) {
        throw new Error(`no reply; have ${JSON.stringify(this.buf)}`);
      }
      await sleep(10);
    }
  }

  async command(line: string, multi = false): Promise<string> {
    this.write(`${line}\r\n`);
    return this.reply(multi);
  }

  /** After the STLS go-ahead: run the TLS handshake on the same connection. */
  startTls(options: tls.ConnectionOptions = {}): Promise<void> {
    const plain = this.socket;
    plain.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect(
        { socket: plain, servername: 'localhost', ca: cert('ca.pem'), ...options },
        () => resolve(),
      );
      t.once('error', reject);
      this.socket = t;
      this.listen();
    });
  }

  end(): void {
    this.socket.destroy();
  }
}

/** RFC 1939 section 3: strip the status line and the "." line, undo dot-stuffing. */
export function multiLineBody(reply: string): string {
  const lines = reply.split('\r\n').slice(1, -2);
  return `${lines.map((l) => (l.startsWith('.') ? l.slice(1) : l)).join('\r\n')}\r\n`;
}
