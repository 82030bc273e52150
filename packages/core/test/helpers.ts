import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { type Logger, TlsProxy } from '../src/index.js';
import { PARK_AFTER_MS } from '../src/session.js';

// The embedded TLS engine of every proxy these tests build: TLSPROXY_TEST_ENGINE=node|native.
export { createEngine, engineName, newEngine } from '../../../fixtures/engine.mjs';

const root = fileURLToPath(new URL('../../../', import.meta.url));
export const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));
export const exampleBackend = join(root, 'examples/imap-backend/server.mjs');

let n = 0;
export const tmpSock = (tag: string) => join(tmpdir(), `core-${process.pid}-${tag}-${n++}.sock`);

export function fdCount(pid: number | 'self' = 'self'): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

export interface Events {
  next(
    pred?: (e: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  all: Array<Record<string, unknown>>;
}

/** The example IMAP backend in its own process, with --json events on stdout. */
export async function startBackend(
  extra: string[] = [],
): Promise<{ child: ChildProcess; path: string; events: Events }> {
  const path = tmpSock('backend');
  const child = spawn(process.execPath, [exampleBackend, '--path', path, '--json', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const all: Array<Record<string, unknown>> = [];
  const waiters: Array<{
    pred: (e: Record<string, unknown>) => boolean;
    resolve(e: Record<string, unknown>): void;
    from: number;
  }> = [];
  let buf = '';
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (d: string) => {
    buf += d;
    for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
      const e = JSON.parse(buf.slice(0, i)) as Record<string, unknown>;
      buf = buf.slice(i + 1);
      all.push(e);
      for (const w of [...waiters]) {
        if (w.pred(e)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve(e);
        }
      }
    }
  });
  let cursor = 0;
  const events: Events = {
    all,
    next(pred = () => true, timeoutMs = 10_000) {
      // events already seen count too, in order, but each is handed out once
      for (; cursor < all.length; cursor++) {
        if (pred(all[cursor]!)) return Promise.resolve(all[cursor++]!);
      }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error('backend event did not come')), timeoutMs);
        waiters.push({
          pred,
          from: cursor,
          resolve: (e) => {
            clearTimeout(t);
            cursor = all.length;
            resolve(e);
          },
        });
      });
    },
  };
  await events.next((e) => e.event === 'listening');
  return { child, path, events };
}

export function quietLogger(lines: string[] = []): Logger & { lines: string[] } {
  return {
    lines,
    log(level, message, fields = {}) {
      lines.push(`${level} ${message} ${JSON.stringify(fields)}`);
    },
  };
}

export async function startProxy(
  backend: string,
  extra: Partial<Parameters<TlsProxy['listen']>[0]> = {},
  pool: Record<string, unknown> = {},
  options: Partial<ConstructorParameters<typeof TlsProxy>[0]> = {},
) {
  const logger = quietLogger();
  const proxy = new TlsProxy({
    logger,
    createEngine,
    pool: {
      identities: [{ cert: cert('server.pem'), key: cert('server.key') }],
      ca: cert('ca.pem'),
      ...pool,
    },
    ...options,
  });
  const l = await proxy.listen({
    dialect: 'imap',
    listen: '127.0.0.1:0',
    backend,
    hostname: 'test.example',
    ...extra,
  });
  const port = (l.server.address() as net.AddressInfo).port;
  return { proxy, port, logger };
}

/** The example backend for a whole test file: started before its tests, stopped after them. */
export function sharedBackend(): { readonly path: string; readonly events: Events } {
  let b: Awaited<ReturnType<typeof startBackend>> | undefined;
  beforeAll(async () => {
    b = await startBackend();
  });
  afterAll(() => {
    b?.child.kill();
  });
  return {
    get path() {
      return b!.path;
    },
    get events() {
      return b!.events;
    },
  };
}

/** A line-reading plaintext client. */
export class LineClient {
  readonly socket: net.Socket;
  #buf = '';
  #waiters: Array<() => void> = [];
  constructor(port: number, options: { localAddress?: string; allowHalfOpen?: boolean } = {}) {
    this.socket = net.connect({ port, host: '127.0.0.1', ...options });
    this.socket.setEncoding('latin1');
    this.socket.on('data', (d: string) => {
      this.#buf += d;
      for (const w of this.#waiters.splice(0)) w();
    });
    this.socket.on('error', () => {});
  }
  /** Resolve with everything up to and including a line matching `re`. */
  async until(re: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const lines = this.#buf.split('\r\n');
      const idx = lines.findIndex((l, i) => i < lines.length - 1 && re.test(l));
      if (idx >= 0) {
        const out = lines.slice(0, idx + 1).join('\r\n');
        this.#buf = lines.slice(idx + 1).join('\r\n');
        return out;
      }
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${re}; have ${JSON.stringify(this.#buf)}`);
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50);
        this.#waiters.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
  write(s: string): void {
    this.socket.write(s);
  }
  /** Start TLS on this connection (after the go-ahead was read). */
  startTls(options: tls.ConnectionOptions = {}): Promise<TlsLineClient> {
    this.socket.removeAllListeners('data');
    return new Promise((resolve, reject) => {
      const t = tls.connect(
        { socket: this.socket, servername: 'localhost', ca: cert('ca.pem'), ...options },
        () => resolve(new TlsLineClient(t)),
      );
      t.once('error', reject);
    });
  }
}

export class TlsLineClient {
  buf = '';
  constructor(readonly socket: tls.TLSSocket) {
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => {
      this.buf += d;
    });
    socket.on('error', () => {});
  }
  async until(re: RegExp, timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (!re.test(this.buf)) {
      if (Date.now() > deadline)
        throw new Error(`timed out waiting for ${re}; have ${JSON.stringify(this.buf)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const out = this.buf;
    this.buf = '';
    return out;
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Wait until `cond` holds (polling), or fail saying `what` after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await sleep(25);
  }
}

/** This process's descriptors once in-flight closes have landed (two equal readings). */
export async function settledFdCount(): Promise<number> {
  let prev = fdCount();
  for (let i = 0; i < 40; i++) {
    await sleep(50);
    const n = fdCount();
    if (n === prev) return n;
    prev = n;
  }
  return prev;
}

/** Until the proxy's log has said `n` connections were parked (idle preamble, session.ts). */
export function parked(logger: { lines: string[] }, n: number): Promise<void> {
  // Sweeps run four times a second: parked soon after PARK_AFTER_MS (slack for a loaded machine).
  return until(
    () => logger.lines.filter((l) => /idle: parked/.test(l)).length >= n,
    PARK_AFTER_MS + 1500,
    `${n} connection(s) parked`,
  );
}

/** A plaintext client past the greeting whose connection the proxy then parked (the `n`th). */
export async function parkedClient(
  port: number,
  logger: { lines: string[] },
  n = 1,
): Promise<LineClient> {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  await parked(logger, n);
  return c;
}

/** Greeting, then STARTTLS: the tagged answer ('a OK', 'a NO'), and the client when it is OK (a
 * refused one is closed). */
export async function askStartTls(port: number): Promise<{ answer: string; client?: LineClient }> {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  const answer = (await c.until(/^a /m)).match(/^a \w+/m)?.[0] ?? '';
  if (answer === 'a OK') return { answer, client: c };
  c.socket.destroy();
  return { answer };
}

/** An IMAP client through STARTTLS, the handshake and one NOOP answered by the backend. */
export async function imapRelayed(port: number, options: tls.ConnectionOptions = {}) {
  const c = new LineClient(port);
  await c.until(/^\* OK/);
  c.write('a STARTTLS\r\n');
  await c.until(/^a OK/);
  const t = await c.startTls(options);
  t.socket.write('b NOOP\r\n');
  await t.until(/b OK/);
  return t;
}

/**
 * A relay in front of the proxy that lets the plaintext preamble and the client's first TLS
 * record (its ClientHello) through, then holds what the client does next (sends its Finished or
 * an alert, or hangs up) until `release()`: what the proxy does between its own flight and the
 * client's answer is then deterministic, whatever the machine's load.
 */
export interface Gate {
  port: number;
  /** Whether the client has answered the server's flight (bytes or its hang-up are held). */
  answered(): boolean;
  release(): void;
  close(): void;
}
export async function tlsGate(port: number): Promise<Gate> {
  let held: Buffer[] | undefined;
  let hungUp = false;
  let open = false;
  let up: net.Socket | undefined;
  const server = net.createServer((down) => {
    up = net.connect(port, '127.0.0.1');
    up.pipe(down);
    up.on('error', () => down.destroy());
    down.on('error', () => {});
    down.on('close', () => {
      hungUp = true;
      if (open) up?.end();
    });
    let tlsBytes = Buffer.alloc(0);
    down.on('data', (d: Buffer) => {
      if (open || (!held && tlsBytes.length === 0 && d[0] !== 0x16)) return void up?.write(d);
      if (held) return void held.push(d);
      tlsBytes = Buffer.concat([tlsBytes, d]);
      if (tlsBytes.length < 5 || tlsBytes.length < 5 + tlsBytes.readUInt16BE(3)) return;
      const end = 5 + tlsBytes.readUInt16BE(3);
      up?.write(tlsBytes.subarray(0, end)); // the ClientHello
      held = tlsBytes.length > end ? [tlsBytes.subarray(end)] : [];
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    answered: () => hungUp || (held ?? []).length > 0,
    release() {
      open = true;
      for (const d of held?.splice(0) ?? []) up?.write(d);
      if (hungUp) up?.end();
    },
    close() {
      server.close();
      up?.destroy();
    },
  };
}
