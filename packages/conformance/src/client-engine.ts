// Client transcripts through the real engine (issue 18): a TlsProxy listener with `role:
// client` on loopback, a real local client, and a scripted server that plays the transcript's
// server reads — each only once the client's bytes before it have arrived — and, at `!tls`, runs
// a real TLS server handshake (the package's test PKI; the proxy verifies it against the CA and
// the transcript's server name). It proves what the sans-I/O replay cannot: the engine writes
// exactly the client's bytes to the server, gives the local client exactly `toLocal` and then
// relays its bytes through TLS (or closes both sides), and nothing before TLS leaks across.
import { readFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { ProxyOptions, TlsProxy } from '@tlsproxy/core';
import type { Dialect } from '@tlsproxy/dialect-kit';
import { show } from './bytes.js';
import { type ClientTranscript, expectedOutcome } from './client-transcript.js';
import { ConformanceError } from './errors.js';
import { formatMismatch, matchOutput } from './pattern.js';
import type { CheckResult } from './runner.js';
import type { Segment } from './transcript.js';

const cert = (name: string): Buffer => readFileSync(new URL(`../certs/${name}`, import.meta.url));

/** Quiet time between two server reads (so they stay two reads), and the wait for a peer. */
const GAP_MS = 40;
const WAIT_MS = 3000;
/** Silence that ends a wait for bytes already known to differ. */
const SETTLE_MS = 300;
const PROBE = Buffer.from('tlsproxy-conformance client probe\r\n');
const ECHO = Buffer.from('echo: ');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects what a socket receives; `until` waits for a condition or a timeout. */
class Inbox {
  data = Buffer.alloc(0);
  ended = false;
  /** When the last bytes came (or the inbox was made). */
  #last = Date.now();
  #wake: (() => void)[] = [];
  constructor(s: net.Socket | tls.TLSSocket) {
    s.on('data', (d: Buffer) => {
      this.data = Buffer.concat([this.data, d]);
      this.#last = Date.now();
      for (const w of this.#wake.splice(0)) w();
    });
    const end = () => {
      this.ended = true;
      for (const w of this.#wake.splice(0)) w();
    };
    s.on('end', end);
    s.on('close', end);
    s.on('error', () => {});
  }
  /** Up to `ms`, or less when something arrives. */
  #nap(ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      this.#wake.push(() => {
        clearTimeout(t);
        r();
      });
    });
  }
  async until(pred: () => boolean, ms = WAIT_MS): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!pred()) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await this.#nap(left);
    }
    return true;
  }
  /** Until the data matches `expected`. Data that already differs before its end cannot be mended
   * by more bytes (a broken client): it gets SETTLE_MS of silence, not all of `ms`. */
  async matches(expected: readonly Segment[], ms = WAIT_MS): Promise<boolean> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = matchOutput(expected, this.data);
      if (!m) return true;
      if (this.ended) return false;
      const now = Date.now();
      const settled = m.offset < this.data.length;
      const end = settled ? Math.min(deadline, this.#last + SETTLE_MS) : deadline;
      if (now >= end) return false;
      await this.#nap(end - now);
    }
  }
}

/** The scripted server: the transcript's server side, read by read. */
function scriptedServer(
  t: ClientTranscript,
  problems: string[],
): Promise<{ port: number; done: Promise<void>; close: () => void }> {
  const server = net.createServer({ allowHalfOpen: true });
  let finished!: () => void;
  const done = new Promise<void>((r) => {
    finished = r;
  });
  const sockets: net.Socket[] = [];
  server.once('connection', async (socket) => {
    server.close();
    sockets.push(socket);
    socket.setNoDelay(true);
    const inbox = new Inbox(socket);
    const expected: Segment[] = [];
    try {
      let secure: tls.TLSSocket | undefined;
      for (const [i, s] of t.steps.entries()) {
        if (s.type === 'client') {
          expected.push(...s.segments);
          const ok = await inbox.matches(expected);
          if (!ok) {
            const m = matchOutput(expected, inbox.data);
            problems.push(
              `the server did not get the client's bytes up to line ${s.line}` +
                (m ? `:\n${formatMismatch(m)}` : ''),
            );
            // The script cannot go on: hang up, so the proxy (and the local client) hear of it
            // now rather than after their own waits.
            socket.destroy();
            return;
          }
        } else if (s.type === 'server') {
          await sleep(GAP_MS);
          if (t.steps[i + 1]?.type === 'tls') {
            // The go-ahead: from here the socket is the TLS server's, whose first record (the
            // proxy's ClientHello) may follow at once. Nothing else may have come.
            await sleep(GAP_MS);
            const m = matchOutput(expected, inbox.data);
            if (m) problems.push(`before the go-ahead the server got:\n${formatMismatch(m)}`);
            socket.removeAllListeners('data');
            socket.pause();
            socket.write(s.bytes);
            secure = new tls.TLSSocket(socket, {
              isServer: true,
              cert: cert('server.pem'),
              key: cert('server.key'),
            });
            secure.on('error', (err) => problems.push(`server TLS: ${err.message}`));
            // What the server says first inside TLS unasked (@after-tls): never the local client's.
            const first = t.afterTls;
            if (first) secure.once('secure', () => secure?.write(first));
          } else socket.write(s.bytes);
        } else if (s.type === 'close') {
          socket.end();
        } else if (s.type === 'eof') {
          if (!(await inbox.until(() => inbox.ended))) {
            problems.push(`the proxy did not close the server connection (!eof, line ${s.line})`);
          }
        } else if (s.type === 'tls' || s.type === 'plaintext') {
          // Echo what comes through: the local client's probe, relayed.
          const peer: net.Socket | tls.TLSSocket = secure ?? socket;
          if (!secure) socket.removeAllListeners('data');
          peer.on('data', (d: Buffer) => peer.write(Buffer.concat([ECHO, d])));
          peer.on('end', () => peer.end());
          sockets.push(peer as net.Socket);
          await new Promise<void>((r) => {
            peer.once('close', () => r());
            setTimeout(r, WAIT_MS * 2);
          });
        }
      }
    } finally {
      finished();
    }
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: (server.address() as net.AddressInfo).port,
        done,
        close: () => {
          server.close();
          for (const s of sockets) s.destroy();
        },
      });
    });
  });
}

async function playOne(
  proxy: TlsProxy,
  dialect: Dialect<unknown>,
  t: ClientTranscript,
  userOptions: Record<string, unknown>,
): Promise<string[]> {
  const problems: string[] = [];
  const server = await scriptedServer(t, problems);
  const client = dialect.client!;
  const known = (o: Record<string, unknown>, spec: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).filter(([k]) => Object.hasOwn(spec, k)));
  const listener = await proxy.listen({
    role: 'client',
    dialect,
    listen: '127.0.0.1:0',
    connect: `127.0.0.1:${server.port}`,
    hostname: t.hostname,
    options: { ...known(userOptions, client.options), ...known(t.options, client.options) },
    limits: known(t.limits, client.limits) as Record<string, number>,
    tls: { ca: cert('ca.pem').toString(), serverName: t.serverName },
  });
  const local = net.connect((listener.server.address() as net.AddressInfo).port, '127.0.0.1');
  const inbox = new Inbox(local);
  const want = t.local ?? [];
  const outcome = expectedOutcome(t);
  try {
    if (outcome === 'starttls' || outcome === 'plaintext') {
      // toLocal first, and nothing else until the local client speaks.
      await inbox.matches(want);
      await sleep(GAP_MS);
      const m = matchOutput(want, inbox.data);
      if (m)
        problems.push(`the local client's first bytes differ from toLocal:\n${formatMismatch(m)}`);
      else {
        const before = inbox.data.length;
        local.write(PROBE);
        const echoed = Buffer.concat([ECHO, PROBE]);
        const ok = await inbox.until(() => inbox.data.subarray(before).equals(echoed));
        if (!ok) {
          problems.push(
            `the local client's bytes did not go through ${outcome === 'starttls' ? 'TLS' : 'the plaintext relay'} to the server and back: got ${show(inbox.data.subarray(before))}`,
          );
        }
      }
    } else if (outcome === 'close') {
      const ok = await inbox.until(() => inbox.ended);
      if (!ok) problems.push('the local connection was not closed');
      const m = matchOutput(want, inbox.data);
      if (m) problems.push(`what the local client got differs from toLocal:\n${formatMismatch(m)}`);
    }
    local.end();
    await Promise.race([server.done, sleep(WAIT_MS)]);
  } finally {
    local.destroy();
    server.close();
  }
  return problems;
}

async function loadCore(): Promise<typeof import('@tlsproxy/core')> {
  try {
    return await import('@tlsproxy/core');
  } catch (err) {
    throw new ConformanceError(
      'TLSPROXY_ERR_CONFORMANCE_ENGINE',
      `the client engine replay needs @tlsproxy/core (or pass --no-engine): ${(err as Error).message}`,
      { cause: err },
    );
  }
}

/** Each client transcript through a `role: client` listener of a real TlsProxy on loopback. */
export async function clientEngineReplay(
  dialect: Dialect<unknown>,
  transcripts: readonly ClientTranscript[],
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
      let problems: string[];
      try {
        problems = await playOne(proxy, dialect, t, options);
      } catch (err) {
        problems = [`engine replay: ${(err as Error).message}`];
      }
      results.push({ name: t.name, kind: 'engine', ok: problems.length === 0, problems });
    }
  } finally {
    await proxy.close();
  }
  return results;
}
