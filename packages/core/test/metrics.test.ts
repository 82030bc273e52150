// Logs and metrics: a TlsProxy with its /metrics endpoint on an ephemeral port and an in-process
// @tlsproxy/backend; a few real connections (hand-off, refusal, backend down, TLS failure,
// injection), then a scrape; and pino JSON lines with one connection id from accept to hand-off
// and no credentials in them.
import type { AddressInfo } from 'node:net';
import { type BackendServer, listen } from '@tlsproxy/backend';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, Metrics, pinoLogger, TlsProxy } from '../src/index.js';
import { cert, createEngine, LineClient, quietLogger, sleep, tmpSock } from './helpers.js';

const pool = () => ({
  identities: [{ cert: cert('server.pem'), key: cert('server.key') }],
  ca: cert('ca.pem'),
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

function parse(text: string): Sample[] {
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

/** Sum of the samples of `name` whose labels include `labels`. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(25);
  }
}

/** Accept connections on the in-process backend: greet, echo lines with an OK. */
function serve(backend: BackendServer): void {
  void (async () => {
    for (;;) {
      let a: Awaited<ReturnType<BackendServer['accept']>>;
      try {
        a = await backend.accept();
      } catch {
        return;
      }
      a.socket.on('error', () => {});
      a.socket.write('* OK backend ready\r\n');
      a.socket.on('data', (d: Buffer) => {
        const tag = String(d).split(' ')[0];
        a.socket.write(`${tag} OK done\r\n`);
      });
    }
  })();
}

describe('Prometheus metrics', () => {
  let backend: BackendServer;
  let proxy: TlsProxy;
  let port: number;
  let downPort: number;
  let metricsUrl: string;
  const scrape = async () => parse(await (await fetch(metricsUrl)).text());

  beforeAll(async () => {
    const path = tmpSock('metrics');
    backend = await listen({ path });
    serve(backend);
    proxy = new TlsProxy({
      logger: quietLogger(),
      createEngine,
      pool: pool(),
      metrics: { listen: '127.0.0.1:0' },
    });
    const base = { dialect: 'imap', listen: '127.0.0.1:0', hostname: 'test.example' };
    const up = await proxy.listen({ ...base, backend: `unix:${path}` });
    const down = await proxy.listen({ ...base, backend: 'unix:/nonexistent/tlsproxy-m.sock' });
    port = (up.server.address() as AddressInfo).port;
    downPort = (down.server.address() as AddressInfo).port;
    const addr = await proxy.metrics!.ready!;
    expect(proxy.metrics!.address).toEqual(addr);
    metricsUrl = `http://127.0.0.1:${addr.port}/metrics`;
  });
  afterAll(async () => {
    await proxy?.close();
    await backend?.close();
  });

  it('serves the text format, and nothing but /metrics', async () => {
    const r = await fetch(metricsUrl);
    expect(r.status).toBe(200);
    expect(r.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await r.text();
    expect(text).toMatch(/# TYPE tlsproxy_connections_total counter/);
    expect(text).toMatch(/# TYPE tlsproxy_tls_handshake_seconds histogram/);
    expect((await fetch(metricsUrl.replace('/metrics', '/'))).status).toBe(404);
  });

  it('counts connections by outcome, handshakes, injection, unavailability and relayed bytes', async () => {
    // 1. STARTTLS, TLS, hand-off, a command relayed both ways.
    const ok = new LineClient(port);
    await ok.until(/^\* OK/);
    ok.write('a STARTTLS\r\n');
    await ok.until(/^a OK/);
    const t = await ok.startTls();
    await t.until(/\* OK backend ready/);
    t.socket.write('b NOOP\r\n');
    await t.until(/b OK done/);

    // 2. Refused before TLS: LOGIN is answered NO (a valid command, not a bad one); two bad
    // commands; then the client logs out.
    const refused = new LineClient(port);
    await refused.until(/^\* OK/);
    refused.write('a LOGIN alice s3cret\r\n');
    await refused.until(/^a NO/);
    refused.write('x HUNTER2\r\n');
    await refused.until(/^x BAD/);
    refused.write('y CAPABILITY extra\r\n');
    await refused.until(/^y BAD/);
    refused.write('b LOGOUT\r\n');
    await refused.until(/^b /);

    // 3. Backend down: STARTTLS gets NO [UNAVAILABLE], the client gives up.
    const down = new LineClient(downPort);
    await down.until(/^\* OK/);
    down.write('a STARTTLS\r\n');
    expect(await down.until(/^a /)).toMatch(/^a NO \[UNAVAILABLE\]/m);
    down.write('b LOGOUT\r\n');
    await down.until(/^b /);

    // 4. Injection: a command pipelined after STARTTLS is discarded; the connection goes on.
    const inj = new LineClient(port);
    await inj.until(/^\* OK/);
    inj.write('a STARTTLS\r\nb NOOP\r\n');
    await inj.until(/^a OK/);
    const ti = await inj.startTls();
    await ti.until(/\* OK backend ready/);

    // 5. Plaintext after the go-ahead: the TLS handshake fails.
    const bad = new LineClient(port);
    await bad.until(/^\* OK/);
    bad.write('a STARTTLS\r\n');
    await bad.until(/^a OK/);
    bad.write('this is not a ClientHello\r\n');

    let s = await scrape();
    await waitFor(async () => {
      s = await scrape();
      return value(s, 'tlsproxy_connections_total') >= 5;
    });
    const c = (outcome: string) =>
      value(s, 'tlsproxy_connections_total', { dialect: 'imap', outcome });
    expect(c('handed_off')).toBe(2);
    expect(c('closed_in_preamble')).toBe(1);
    expect(c('backend_unavailable')).toBe(1);
    expect(c('tls_failed')).toBe(1);
    expect(value(s, 'tlsproxy_connections_total')).toBe(5);

    expect(value(s, 'tlsproxy_backend_unavailable_total', { at: 'starttls' })).toBe(1);
    expect(value(s, 'tlsproxy_injection_attempts_total', { dialect: 'imap' })).toBe(1);
    expect(value(s, 'tlsproxy_discarded_bytes_total')).toBe('b NOOP\r\n'.length);
    expect(value(s, 'tlsproxy_starttls_seconds_count')).toBe(4);
    expect(value(s, 'tlsproxy_tls_handshake_seconds_count', { result: 'ok' })).toBe(2);
    expect(value(s, 'tlsproxy_tls_handshake_seconds_count', { result: 'failed' })).toBe(1);
    expect(value(s, 'tlsproxy_bad_commands_total', { dialect: 'imap' })).toBe(2);
    // Nothing is left in preamble or handshake.
    expect(value(s, 'tlsproxy_active_connections', { stage: 'preamble' })).toBe(0);
    expect(value(s, 'tlsproxy_active_connections', { stage: 'handshake' })).toBe(0);

    // Relayed application bytes: 'b NOOP\r\n' in; greeting + answer out (both sessions).
    await waitFor(async () => {
      s = await scrape();
      return value(s, 'tlsproxy_relayed_bytes_total', { direction: 'in' }) >= 8;
    });
    expect(value(s, 'tlsproxy_relayed_bytes_total', { direction: 'in' })).toBe(8);
    expect(value(s, 'tlsproxy_relayed_bytes_total', { direction: 'out' })).toBeGreaterThanOrEqual(
      2 * '* OK backend ready\r\n'.length + 'b OK done\r\n'.length,
    );

    for (const x of [ok, refused, down, inj, bad]) x.socket.destroy();
    t.socket.destroy();
    ti.socket.destroy();
  });

  it('shows connections in preamble in the stage gauge', async () => {
    const c = new LineClient(port);
    await c.until(/^\* OK/);
    const s = await scrape();
    expect(value(s, 'tlsproxy_active_connections', { dialect: 'imap', stage: 'preamble' })).toBe(1);
    c.socket.destroy();
    await waitFor(
      async () => value(await scrape(), 'tlsproxy_active_connections', { stage: 'preamble' }) === 0,
    );
  });

  it('keeps registries apart: a second proxy has its own counters', async () => {
    const other = new TlsProxy({ logger: quietLogger(), createEngine, pool: pool(), metrics: {} });
    try {
      expect(other.metrics).toBeInstanceOf(Metrics);
      expect(other.metrics!.address).toBeUndefined();
      const text = await other.metrics!.text();
      expect(text).toContain('# TYPE tlsproxy_connections_total counter');
      expect(value(parse(text), 'tlsproxy_connections_total')).toBe(0);
    } finally {
      await other.close();
    }
  });
});

describe('structured logs', () => {
  it('pino JSON lines carry one conn id from accept to hand-off, and never the credentials', async () => {
    const path = tmpSock('logs');
    const backend = await listen({ path });
    serve(backend);
    const lines: string[] = [];
    const logger = pinoLogger({ level: 'debug', destination: { write: (l) => lines.push(l) } });
    const proxy = new TlsProxy({ logger, createEngine, pool: pool() });
    try {
      const l = await proxy.listen({
        dialect: 'imap',
        listen: '127.0.0.1:0',
        backend: `unix:${path}`,
        hostname: 'test.example',
      });
      const c = new LineClient((l.server.address() as AddressInfo).port);
      await c.until(/^\* OK/);
      c.write('a LOGIN alice s3cret\r\n');
      await c.until(/^a NO/);
      // A secret typed where a command name goes is reported as "unknown", never as itself.
      c.write('x s3cret\r\n');
      await c.until(/^x BAD/);
      c.write('b STARTTLS\r\n');
      await c.until(/^b OK/);
      const t = await c.startTls();
      await t.until(/\* OK backend ready/);
      const records = () => lines.map((x) => JSON.parse(x) as Record<string, unknown>);
      await waitFor(() => records().some((r) => r.msg === 'connection ended'));
      t.socket.destroy();

      for (const line of lines) {
        expect(line.endsWith('\n')).toBe(true);
        expect(line.trimEnd()).not.toContain('\n'); // one object per line
        expect(line).not.toContain('s3cret');
        expect(line).not.toContain('LOGIN alice');
        expect(line).not.toContain('alice');
      }
      const all = records();
      for (const r of all) {
        expect(typeof r.msg).toBe('string');
        expect(['debug', 'info', 'warn', 'error']).toContain(r.level);
        expect(typeof r.time).toBe('number');
      }
      const conn = all.find((r) => r.msg === 'accepted')?.conn;
      expect(conn).toMatch(/^[0-9a-f]{12}$/);
      const mine = all.filter((r) => r.conn === conn);
      expect(mine.every((r) => r.dialect === 'imap')).toBe(true);
      const msgs = mine.map((r) => r.msg);
      // Every stage, in order, under the one id.
      const stages = ['accepted', 'STARTTLS', 'TLS established', 'handed off', 'connection ended'];
      expect(msgs.filter((m) => stages.includes(m as string))).toEqual(stages);
      expect(msgs).toContain('preamble input');
      // Every line about a connection is about this one (it is the only connection).
      expect(all.filter((r) => r.conn !== undefined && r.conn !== conn)).toEqual([]);
      const tlsLine = mine.find((r) => r.msg === 'TLS established')!;
      expect(tlsLine.version).toMatch(/^TLSv1\.[23]$/);
      expect(typeof tlsLine.cipher).toBe('string');
      expect(tlsLine.sni).toBe('localhost');
      expect(typeof tlsLine.durationMs).toBe('number');
      const end = mine.find((r) => r.msg === 'connection ended')!;
      expect(end.outcome).toBe('handed_off');
      expect(typeof end.reason).toBe('string');
      const starttls = mine.find((r) => r.msg === 'STARTTLS')!;
      expect(starttls.replies).toBe(3); // the greeting, the NO to LOGIN, the BAD
      // Command names from the dialect, at debug level; the bad one at info.
      expect(mine.filter((r) => r.msg === 'command').map((r) => r.command)).toEqual([
        'LOGIN',
        'STARTTLS',
      ]);
      expect(mine.filter((r) => r.msg === 'bad command').map((r) => r.command)).toEqual([
        'UNKNOWN',
      ]);
    } finally {
      await proxy.close();
      await backend.close();
    }
  });

  it('createLogger: json by default, text on request, fields never clobber level/msg/time', () => {
    const json: string[] = [];
    createLogger({ destination: { write: (l) => json.push(l) } }).log('info', 'hello', {
      conn: 'abc',
      level: 'x',
      skipped: undefined,
    });
    const r = JSON.parse(json[0]!) as Record<string, unknown>;
    expect(r).toMatchObject({ level: 'info', msg: 'hello', conn: 'abc', field_level: 'x' });
    expect('skipped' in r).toBe(false);

    const text: string[] = [];
    const t = createLogger({
      format: 'text',
      level: 'warn',
      destination: { write: (l) => text.push(l) },
    });
    t.log('info', 'quiet');
    t.log('warn', 'loud', { conn: 'abc' });
    expect(text).toHaveLength(1);
    expect(text[0]).toMatch(/^\S+ warn loud conn=abc\n$/);
  });
});
