// Replay through the real engine: a TlsProxy on loopback with the dialect, a real TCP client
// that plays the transcript's client chunks, a real TLS handshake (node:tls) after the go-ahead,
// and an in-process hand-off target that records what it was given. It proves the parts the
// sans-I/O replay cannot: the engine writes the go-ahead, discards pipelined plaintext, and the
// backend's first bytes are the client's first bytes inside TLS.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
// Types only: erased at build time, so loading this module never loads the engine.
import type { HandoffTarget, ProxyOptions, TlsProxy } from '@tlsproxy/core';
import type { Dialect } from '@tlsproxy/dialect-kit';
import { concat, show } from './bytes.js';
import { ConformanceError } from './errors.js';
import { formatMismatch, matchOutput } from './pattern.js';
import { contextFor, outputProblems } from './replay.js';
import type { CheckResult } from './runner.js';
import { serverSegments, type Transcript } from './transcript.js';

/** Test-only PKI shipped with the package (a copy of the repo's fixtures/certs). */
const cert = (name: string): Buffer => readFileSync(new URL(`../certs/${name}`, import.meta.url));

/** Quiet time that ends one server reply: the engine writes each action at once on loopback. */
const IDLE_MS = 30;
const WAIT_MS = 2000;
/** Silence that ends the wait for output already known to differ (ten times IDLE_MS). */
const SETTLE_MS = 300;
const PROBE = Buffer.from('tlsproxy-conformance probe: first bytes inside TLS\r\n');

type Delivered = Parameters<HandoffTarget['deliver']>;

class RecordingTarget implements HandoffTarget {
  readonly description = 'conformance recorder';
  delivered: Delivered[] = [];
  #waiters: ((d: Delivered) => void)[] = [];
  async available(): Promise<boolean> {
    return true;
  }
  async checkServerName(): Promise<boolean> {
    return true;
  }
  async deliver(...args: Delivered): Promise<void> {
    this.delivered.push(args);
    for (const w of this.#waiters.splice(0)) w(args);
  }
  next(ms: number): Promise<Delivered | undefined> {
    const have = this.delivered.shift();
    if (have) return Promise.resolve(have);
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(undefined), ms);
      this.#waiters.push((d) => {
        clearTimeout(t);
        this.delivered.shift();
        resolve(d);
      });
    });
  }
  close(): void {}
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Read from a socket until `n` bytes came or `ms` passed. */
function readBytes(s: net.Socket, n: number, ms: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let got = 0;
    const done = (): void => {
      clearTimeout(timer);
      s.off('data', onData);
      resolve(Buffer.concat(parts));
    };
    const onData = (d: Buffer): void => {
      parts.push(d);
      got += d.length;
      if (got >= n) done();
    };
    const timer = setTimeout(done, ms);
    s.on('data', onData);
  });
}

async function playOne(
  proxy: TlsProxy,
  dialect: Dialect<unknown>,
  t: Transcript,
  userOptions: Record<string, unknown>,
): Promise<string[]> {
  const problems: string[] = [];
  const ctx = contextFor(dialect, userOptions, t);
  const target = new RecordingTarget();
  const listener = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: target,
    hostname: ctx.hostname,
    options: ctx.options as Record<string, unknown>,
    limits: ctx.limits,
  });
  const port = (listener.server.address() as net.AddressInfo).port;
  const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  socket.setNoDelay(true);
  const received: Buffer[] = [];
  let last = Date.now();
  let ended = false;
  const onData = (d: Buffer): void => {
    received.push(d);
    last = Date.now();
  };
  socket.on('data', onData);
  socket.on('end', () => {
    ended = true;
  });
  socket.on('error', () => {
    ended = true;
  });
  const quiet = async (): Promise<void> => {
    const until = Date.now() + WAIT_MS;
    await sleep(IDLE_MS);
    while (Date.now() - last < IDLE_MS && Date.now() < until) await sleep(5);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    await quiet();
    let closedEarly = false;
    for (const step of t.steps) {
      if (step.type === 'close' && !closedEarly) {
        // The server closed here, by itself: the dialect must close before the client's eof
        // (which comes later in the transcript), not merely when the client closes.
        const until = Date.now() + WAIT_MS;
        while (!ended && Date.now() < until) await sleep(5);
        if (!ended && t.steps.some((s) => s.type === 'eof'))
          problems.push(
            'the server closed the connection itself; through the engine it stayed open until the client closed',
          );
        closedEarly = true;
        continue;
      }
      if (step.type === 'eof') closedEarly = true;
      if (ended) break;
      if (step.type === 'client') socket.write(step.bytes);
      else if (step.type === 'eof') socket.end();
      else continue;
      await quiet();
    }
    const expectTls = t.steps.some((s) => s.type === 'tls' || s.type === 'tls-or-close');
    if (!expectTls) {
      if (t.steps.some((s) => s.type === 'close')) {
        const until = Date.now() + WAIT_MS;
        while (!ended && Date.now() < until) await sleep(5);
        if (!ended)
          problems.push('the server closed the connection; through the engine it stayed open');
      }
    } else if (!ended || target.delivered.length > 0) {
      // 30 ms of silence is not "the go-ahead came" on a loaded machine: before TLS, wait (up to
      // WAIT_MS) until the output holds every server line of the transcript, else the
      // ClientHello would meet a go-ahead still on its way ("wrong version number"). Output that
      // already differs before its end (a recorded @divergence, a failing dialect) cannot be
      // mended by more bytes: it gets SETTLE_MS of silence, not all of WAIT_MS.
      const until = Date.now() + WAIT_MS;
      for (;;) {
        const output = concat(received);
        const m = matchOutput(serverSegments(t), output);
        if (!m || Date.now() >= until) break;
        if (m.offset < output.length && Date.now() - last >= SETTLE_MS) break;
        await sleep(5);
      }
      socket.off('data', onData);
      problems.push(...(await afterGoAhead(socket, target, t)));
    }
    const output = concat(received);
    const mismatch = matchOutput(serverSegments(t), output);
    if (mismatch) problems.unshift(`client-side output differs:\n${formatMismatch(mismatch)}`);
    else problems.unshift(...outputProblems(t, output, dialect.name));
  } catch (err) {
    problems.push(`engine replay failed: ${(err as Error).message}`);
  } finally {
    socket.destroy();
    await new Promise<void>((r) => listener.server.close(() => r()));
  }
  return problems;
}

/** TLS after the go-ahead; the backend must see exactly what the client sends inside TLS. */
async function afterGoAhead(
  socket: net.Socket,
  target: RecordingTarget,
  t: Transcript,
): Promise<string[]> {
  const problems: string[] = [];
  const secure = tls.connect({ socket, ca: cert('ca.pem'), servername: 'localhost' });
  const handshake = await new Promise<string | undefined>((resolve) => {
    secure.once('secureConnect', () => resolve(undefined));
    secure.once('error', (e) => resolve(e.message));
    setTimeout(() => resolve('timed out'), WAIT_MS);
  });
  if (handshake) return [`TLS handshake after the go-ahead failed: ${handshake}`];
  const delivered = await target.next(WAIT_MS);
  if (!delivered) return ['the backend never received the connection'];
  const [fd, info, buffered] = delivered;
  const backend = fd.toSocket();
  try {
    if (buffered && buffered.length > 0) {
      problems.push(`the hand-off carried ${buffered.length} buffered bytes: ${show(buffered)}`);
    }
    secure.write(PROBE);
    const first = await readBytes(backend, PROBE.length, WAIT_MS);
    if (!first.equals(PROBE)) {
      problems.push(
        `the backend's first bytes are not the client's first bytes inside TLS (leftover plaintext?):\n` +
          `  expected | ${show(PROBE)}\n  actual   | ${show(first)}`,
      );
    }
    backend.write('pong\r\n');
    const back = await readBytes(secure, 6, WAIT_MS);
    if (back.toString() !== 'pong\r\n') problems.push('the backend could not answer over TLS');
    for (const s of t.steps) {
      if (s.type !== 'state') continue;
      let cur: unknown = info.dialectState;
      for (const k of s.path.split('.')) cur = (cur as Record<string, unknown> | undefined)?.[k];
      if (JSON.stringify(cur) !== JSON.stringify(s.value)) {
        problems.push(
          `hand-off dialectState.${s.path}: expected ${JSON.stringify(s.value)}, got ${JSON.stringify(cur)}`,
        );
      }
    }
    if (info.dialect !== undefined && typeof info.dialect !== 'string') {
      problems.push('hand-off info has no dialect name');
    }
  } finally {
    secure.destroy();
    backend.destroy();
  }
  return problems;
}

/**
 * The engine, loaded only when an engine replay runs: @tlsproxy/core is an optional peer
 * dependency, so a dialect author can run the sans-I/O replay and the properties with no native
 * addon installed (`--no-engine`).
 */
async function loadCore(): Promise<typeof import('@tlsproxy/core')> {
  try {
    return await import('@tlsproxy/core');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const missing =
      (e.code === 'ERR_MODULE_NOT_FOUND' || e.code === 'MODULE_NOT_FOUND') &&
      /['"]@tlsproxy\/core['"]/.test(String(e.message));
    throw new ConformanceError(
      'TLSPROXY_ERR_CONFORMANCE_ENGINE',
      missing
        ? 'the engine replay needs @tlsproxy/core, which is not installed: run "npm install ' +
            '@tlsproxy/core", or pass --no-engine to run only the sans-I/O replay and the properties'
        : `the engine replay could not load @tlsproxy/core: ${e.message}`,
      { cause: err },
    );
  }
}

export async function engineReplay(
  dialect: Dialect<unknown>,
  transcripts: readonly Transcript[],
  options: Record<string, unknown>,
  createEngine?: ProxyOptions['createEngine'],
): Promise<CheckResult[]> {
  const { TlsProxy, silentLogger } = await loadCore();
  const proxy = new TlsProxy({
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
    createEngine,
    logger: silentLogger,
  });
  const results: CheckResult[] = [];
  try {
    for (const t of transcripts) {
      const problems = await playOne(proxy, dialect, t, options);
      results.push({ name: t.name, kind: 'engine', ok: problems.length === 0, problems });
    }
  } finally {
    await proxy.close();
  }
  return results;
}
