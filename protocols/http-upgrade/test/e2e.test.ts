// RFC 2817 end to end: a Node HTTP client sends a request with "Upgrade: TLS/1.0" to tlsproxy,
// gets 101, runs TLS on the same socket, and reads the backend's answer to that ORIGINAL request
// over TLS (RFC 2817 section 3.3). The backend is built on @tlsproxy/backend: it answers the
// request from info.dialectState itself, then serves further requests on the socket with
// node:http.
import { readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { type BackendServer, type HandoffInfo, listen } from '@tlsproxy/backend';
import { type Logger, TlsProxy } from '@tlsproxy/core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { dialect, type RequestState } from '../src/index.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const cert = (f: string) => readFileSync(join(root, 'fixtures/certs', f));
const sockPath = (tag: string) => join(tmpdir(), `http-upgrade-${process.pid}-${tag}.sock`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const logLines: string[] = [];
const logger: Logger = {
  log(level, message, fields = {}) {
    logLines.push(`${level} ${message} ${JSON.stringify(fields)}`);
  },
};

/** Every connection the backend accepted, with the requests it answered. */
const seen: { info: HandoffInfo; answered: string[] }[] = [];

/** The backend: answer the original request first, then hand the socket to node:http. */
async function runBackend(server: BackendServer): Promise<void> {
  const app = http.createServer((req, res) => {
    seen.at(-1)?.answered.push(`${req.method} ${req.url}`);
    res.end(`later ${req.method} ${req.url}`);
  });
  for await (const { socket, info, buffered } of server) {
    const entry = { info, answered: [] as string[] };
    seen.push(entry);
    const r = info.dialectState as RequestState;
    if (info.handoff === 'plaintext') {
      // The request was not answered: node:http reads it from the bytes tlsproxy passed on.
      if (buffered.length > 0) socket.unshift(buffered);
      app.emit('connection', socket);
      continue;
    }
    const body = Buffer.from(r.body ?? '', 'base64').toString();
    entry.answered.push(`${r.method} ${r.target}`);
    const text = `original ${r.method} ${r.target} ${r.version} body=${JSON.stringify(body)} tls=${info.tls?.version}`;
    socket.write(
      `HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(text)}\r\n\r\n${text}`,
    );
    app.emit('connection', socket);
  }
}

let backend: BackendServer;
let proxy: TlsProxy;
let port: number;
let handoffPort: number;
const path = sockPath('backend');

beforeAll(async () => {
  rmSync(path, { force: true });
  backend = await listen({ path });
  void runBackend(backend);
  proxy = new TlsProxy({
    logger,
    createEngine,
    pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
  });
  // POST may upgrade here (the content test below); the default is OPTIONS only (issue 14).
  const l = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: `unix:${path}`,
    options: { upgradeMethods: ['OPTIONS', 'POST'] },
  });
  port = (l.server.address() as net.AddressInfo).port;
  const h = await proxy.listen({
    dialect,
    listen: '127.0.0.1:0',
    backend: `unix:${path}`,
    options: { plaintext: 'handoff' },
  });
  handoffPort = (h.server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await proxy?.close();
  await backend?.close();
  rmSync(path, { force: true });
});

/** Read one HTTP response (Content-Length framed) from a stream. */
function readResponse(socket: net.Socket): Promise<{ head: string; body: string }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => reject(new Error(`no response; have ${buf}`)), 5000);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (buf.length < end + 4 + length) return;
      clearTimeout(t);
      socket.off('data', onData);
      const rest = buf.subarray(end + 4 + length);
      if (rest.length > 0) socket.unshift(rest);
      resolve({ head, body: buf.subarray(end + 4, end + 4 + length).toString() });
    };
    socket.on('data', onData);
  });
}

/** node:http does the upgrade request; resolves with the 101 and the raw socket. */
function upgrade(
  options: http.RequestOptions,
  body?: string,
): Promise<{ res: http.IncomingMessage; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.request({
      host: '127.0.0.1',
      port,
      ...options,
      headers: { Connection: 'Upgrade', Upgrade: 'TLS/1.0', ...options.headers },
    });
    req.on('upgrade', (res, socket, head) => {
      expect(head.length).toBe(0);
      resolve({ res, socket });
    });
    req.on('response', (res) => reject(new Error(`got ${res.statusCode}, not 101`)));
    req.on('error', reject);
    req.end(body);
  });
}

function startTls(socket: net.Socket): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const t = tls.connect({ socket, ca: cert('ca.pem'), servername: 'localhost' }, () =>
      resolve(t),
    );
    t.once('error', reject);
  });
}

describe('HTTP Upgrade to TLS end to end', () => {
  it('OPTIONS * with Upgrade: the backend answers the original request over TLS', async () => {
    const { res, socket } = await upgrade({ method: 'OPTIONS', path: '*' });
    expect(res.statusCode).toBe(101);
    expect(res.headers.upgrade).toBe('TLS/1.0, HTTP/1.1');
    expect(res.headers.connection).toBe('Upgrade');
    const t = await startTls(socket);
    const first = await readResponse(t);
    expect(first.head).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(first.body).toMatch(/^original OPTIONS \* HTTP\/1\.1 body="" tls=TLSv1\.[23]$/);
    // the same TLS connection goes on with node:http in the backend
    const second = await new Promise<string>((resolve, reject) => {
      const req = http.request(
        { path: '/next', createConnection: () => t, headers: { Host: 'localhost' } },
        (r) => {
          let s = '';
          r.on('data', (d) => {
            s += d;
          });
          r.on('end', () => resolve(s));
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(second).toBe('later GET /next');
    t.destroy();
    const info = seen.at(-1)!.info;
    expect(info.dialect).toBe('http-upgrade');
    expect(info.serverName).toBe('localhost');
    expect(info.handoff).toBe('plain');
    const state = info.dialectState as RequestState;
    expect(state.method).toBe('OPTIONS');
    expect(state.headers).toContainEqual(['Upgrade', 'TLS/1.0']);
  });

  it('carries a POST body read before the 101 to the backend', async () => {
    const { socket } = await upgrade(
      { method: 'POST', path: '/ipp/print', headers: { 'Content-Length': '11' } },
      'hello world',
    );
    const t = await startTls(socket);
    expect((await readResponse(t)).body).toMatch(
      /^original POST \/ipp\/print HTTP\/1\.1 body="hello world"/,
    );
    t.destroy();
  });

  it('never answers a request pipelined after the upgrade request (one write)', async () => {
    const before = seen.length;
    const c = net.connect(port, '127.0.0.1');
    c.write(
      'OPTIONS * HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n' +
        'GET /evil HTTP/1.1\r\nHost: localhost\r\n\r\n',
    );
    const go = await readResponse(c);
    expect(go.head).toMatch(/^HTTP\/1\.1 101 Switching Protocols/);
    const t = await startTls(c);
    expect((await readResponse(t)).body).toMatch(/^original OPTIONS \*/);
    let extra = '';
    t.on('data', (d) => {
      extra += d;
    });
    await sleep(300);
    expect(extra).toBe('');
    t.destroy();
    expect(seen.length).toBe(before + 1);
    expect(seen.at(-1)!.answered).toEqual(['OPTIONS *']);
    expect(logLines.some((l) => /discarded/.test(l))).toBe(true);
  });

  it('answers a request without the upgrade with 426 and closes', async () => {
    const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port, path: '/' }, resolve).on('error', reject);
    });
    expect(res.statusCode).toBe(426);
    expect(res.headers.upgrade).toBe('TLS/1.0, HTTP/1.1');
    expect(res.headers.connection).toBe('Upgrade, close');
    res.resume();
  });

  it('hands a plaintext request to the backend with plaintext: "handoff"', async () => {
    const body = await new Promise<string>((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port: handoffPort, path: '/plain' }, (r) => {
          let s = '';
          r.on('data', (d) => {
            s += d;
          });
          r.on('end', () => resolve(s));
        })
        .on('error', reject);
    });
    expect(body).toBe('later GET /plain');
    expect(seen.at(-1)!.info.handoff).toBe('plaintext');
    expect((seen.at(-1)!.info.dialectState as RequestState).target).toBe('/plain');
  });
});

describe('no backend', () => {
  it('answers the upgrade request with 503 and closes', async () => {
    const p = new TlsProxy({
      logger,
      createEngine,
      pool: { identities: [{ cert: cert('server.pem'), key: cert('server.key') }] },
    });
    try {
      const l = await p.listen({
        dialect,
        listen: '127.0.0.1:0',
        backend: 'unix:/nonexistent/tlsproxy-http-upgrade.sock',
      });
      const pt = (l.server.address() as net.AddressInfo).port;
      const c = net.connect(pt, '127.0.0.1');
      c.write('OPTIONS * HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n');
      const r = await readResponse(c);
      expect(r.head).toMatch(/^HTTP\/1\.1 503 Service Unavailable\r\n/);
      expect(r.head).toContain('\r\nConnection: close');
      await new Promise((resolve) => c.on('close', resolve));
    } finally {
      await p.close();
    }
  });
});
