// Shared pieces of the fault tests (faults*.test.ts): a bounded client attempt that always ends
// (reply, close, or a counted hang), a load loop, the tlspool daemon (alone, or with a backend and a
// proxy using it: withDaemon), metrics parsing.
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type BackendServer, type ListenOptions, listen } from '@tlsproxy/backend';
import { TlsProxy } from '../src/index.js';
import { cert, engineName, quietLogger, sleep, tmpSock } from './helpers.js';

export const poolBin = fileURLToPath(new URL('../../pool/bin/tlspool.js', import.meta.url));
export const cliBin = fileURLToPath(new URL('../../cli/bin/tlsproxy.js', import.meta.url));
export const certDir = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));

/** Buffers what a socket sends; every wait ends on a match, on close, or at a deadline. */
export class Reader {
  buf = '';
  closed = false;
  #wake: Array<() => void> = [];
  constructor(readonly socket: net.Socket) {
    socket.setEncoding('latin1');
    socket.on('data', this.#onData);
    socket.on('close', () => {
      this.closed = true;
      this.#notify();
    });
    socket.on('error', () => {});
  }
  #onData = (d: string) => {
    this.buf += d;
    this.#notify();
  };
  #notify(): void {
    for (const w of this.#wake.splice(0)) w();
  }
  /** Stop consuming (before a TLS socket takes over the connection). */
  detach(): void {
    this.socket.off('data', this.#onData);
  }
  /** The first match of `re` (consumed with everything before it), or null on close / timeout. */
  async wait(re: RegExp, timeoutMs: number): Promise<RegExpExecArray | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = re.exec(this.buf);
      if (m) {
        this.buf = this.buf.slice(m.index + m[0].length);
        return m;
      }
      const left = deadline - Date.now();
      if (this.closed || left <= 0) return null;
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.#wake.push(() => {
          clearTimeout(t);
          r();
        });
      });
    }
  }
}

export type Outcome = 'ok' | 'unavailable' | 'closed' | 'hang' | 'unexpected';

export function connectTcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', reject);
  });
}

/** TLS over an existing plaintext socket; rejects on error or close before the handshake ends. */
export function startTls(socket: net.Socket, servername = 'localhost'): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, servername, ca: cert('ca.pem') }, () => resolve(t));
    t.on('error', reject);
    t.once('close', () => reject(new Error('closed during the handshake')));
  });
}

/**
 * One client: greeting → STARTTLS → TLS → `b LOGIN u p` → reply → close. Resolves with how it
 * ended; 'hang' when nothing (reply or close) came within `deadlineMs` of the start.
 */
export async function imapAttempt(
  port: number,
  deadlineMs: number,
  servername = 'localhost',
): Promise<{ outcome: Outcome; detail: string }> {
  const sockets: net.Socket[] = [];
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    for (const s of sockets) s.destroy();
  }, deadlineMs);
  const left = (t0: number) => Math.max(1, t0 + deadlineMs - Date.now());
  const t0 = Date.now();
  const end = (outcome: Outcome, detail: string) => {
    clearTimeout(timer);
    for (const s of sockets) s.destroy();
    return { outcome: timedOut && outcome === 'closed' ? ('hang' as const) : outcome, detail };
  };
  let raw: net.Socket;
  try {
    raw = await connectTcp(port);
  } catch (err) {
    return end('closed', `connect: ${(err as Error).message}`);
  }
  sockets.push(raw);
  const r = new Reader(raw);
  const greeting = await r.wait(/^\* (OK|BYE)[^\r\n]*\r\n/m, left(t0));
  if (!greeting) return end(r.closed && !timedOut ? 'closed' : 'hang', 'at greeting');
  if (greeting[1] !== 'OK') return end('unexpected', greeting[0]);
  raw.write('a STARTTLS\r\n');
  const go = await r.wait(/^a (OK|NO|BAD)[^\r\n]*\r\n/m, left(t0));
  if (!go) return end(r.closed && !timedOut ? 'closed' : 'hang', 'at STARTTLS');
  if (go[1] === 'NO' && /\[UNAVAILABLE\]/.test(go[0])) return end('unavailable', go[0]);
  if (go[1] !== 'OK') return end('unexpected', go[0]);
  r.detach();
  let t: tls.TLSSocket;
  try {
    t = await Promise.race([
      startTls(raw, servername),
      sleep(left(t0)).then(() => {
        throw new Error('handshake timeout');
      }),
    ]);
  } catch (err) {
    const m = (err as Error).message;
    return end(m === 'handshake timeout' ? 'hang' : 'closed', `handshake: ${m}`);
  }
  sockets.push(t);
  const tr = new Reader(t);
  t.write('b LOGIN u p\r\n');
  const reply = await tr.wait(/^b (OK|NO|BAD)[^\r\n]*\r\n/m, left(t0));
  if (!reply) return end(tr.closed && !timedOut ? 'closed' : 'hang', 'at LOGIN');
  return end(reply[1] === 'OK' ? 'ok' : 'unexpected', reply[0]);
}

export interface Tally {
  counts: Record<Outcome, number>;
  attempts: Array<{ start: number; end: number; outcome: Outcome; detail: string }>;
}

/** `concurrency` clients each repeating `attempt` until `stop()` is true; resolves when all ended. */
export async function loadLoop(
  concurrency: number,
  stop: () => boolean,
  attempt: () => Promise<{ outcome: Outcome; detail: string }>,
  maxAttempts = 5000,
): Promise<Tally> {
  const tally: Tally = {
    counts: { ok: 0, unavailable: 0, closed: 0, hang: 0, unexpected: 0 },
    attempts: [],
  };
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (!stop() && tally.attempts.length < maxAttempts) {
        const start = Date.now();
        const r = await attempt();
        tally.counts[r.outcome]++;
        tally.attempts.push({ start, end: Date.now(), ...r });
        // a refused client would otherwise spin: back off a little, as real clients do
        if (r.outcome !== 'ok') await sleep(20);
      }
    }),
  );
  return tally;
}

/** Poll until `pred` holds; false at the deadline. */
export async function settle(pred: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

export function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once('close', () => r()));
}

/** tlspool in its own process, on `path`; resolves once it listens. */
export async function startDaemon(path: string): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      poolBin,
      ...['--socket', path, '--cert', `${certDir}server.pem`, '--key', `${certDir}server.key`],
      ...['--engine', engineName], // TLSPROXY_TEST_ENGINE
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    err += d;
  });
  for (let i = 0; i < 200 && !err.includes('listening'); i++) await sleep(25);
  if (!err.includes('tlspool listening')) {
    child.kill('SIGKILL');
    throw new Error(`tlspool did not start: ${err}`);
  }
  return child;
}

/** A tlspool daemon, a backend, and a proxy using that daemon with an IMAP listener on it. */
export interface DaemonSetup {
  poolPath: string;
  /** The daemon now running (`restart` replaces it). */
  daemon: ChildProcess;
  backend: BackendServer;
  proxy: TlsProxy;
  logger: ReturnType<typeof quietLogger>;
  /** The IMAP listener's port. */
  port: number;
  restart(): Promise<void>;
}

/** Runs `body` on a fresh DaemonSetup and tears it all down after, whatever happened. */
export async function withDaemon(
  body: (s: DaemonSetup) => Promise<void>,
  opts: {
    backend?: Omit<ListenOptions, 'path'>;
    listener?: Partial<Parameters<TlsProxy['listen']>[0]>;
  } = {},
): Promise<void> {
  const poolPath = tmpSock('pool');
  const backendPath = tmpSock('backend');
  let daemon = await startDaemon(poolPath);
  const backend = await listen({ ...opts.backend, path: backendPath });
  const logger = quietLogger();
  const proxy = new TlsProxy({ pool: { socket: poolPath }, logger });
  try {
    const l = await proxy.listen({
      dialect: 'imap',
      listen: '127.0.0.1:0',
      backend: `unix:${backendPath}`,
      ...opts.listener,
    });
    const setup: DaemonSetup = {
      poolPath,
      daemon,
      backend,
      proxy,
      logger,
      port: (l.server.address() as net.AddressInfo).port,
      async restart() {
        daemon = setup.daemon = await startDaemon(poolPath);
      },
    };
    await body(setup);
  } finally {
    await proxy.close();
    await backend.close();
    daemon.kill('SIGKILL');
  }
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** Counts unhandled rejections and fdpass leak warnings while a test runs. */
export function watchProcess(): {
  rejections: unknown[];
  leakWarnings: string[];
  stop(): void;
} {
  const rejections: unknown[] = [];
  const leakWarnings: string[] = [];
  const onRejection = (r: unknown) => rejections.push(r);
  const onWarning = (w: Error & { code?: string }) => {
    if (`${w.name} ${w.code ?? ''} ${w.message}`.includes('LEAK')) leakWarnings.push(w.message);
  };
  process.on('unhandledRejection', onRejection);
  process.on('warning', onWarning);
  return {
    rejections,
    leakWarnings,
    stop() {
      process.off('unhandledRejection', onRejection);
      process.off('warning', onWarning);
    },
  };
}
