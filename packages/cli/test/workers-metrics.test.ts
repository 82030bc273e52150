// `workers: 2` with metrics: one scrape of the primary's /metrics counts every worker's
// connections (a port shared by the workers would show one worker per scrape).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { listen } from '@tlsproxy/backend';
import { afterAll, describe, expect, it } from 'vitest';

const bin = fileURLToPath(new URL('../bin/tlsproxy.js', import.meta.url));
const certs = fileURLToPath(new URL('../../../fixtures/certs/', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tlsproxy-workers-metrics-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => r(p));
    });
  });
}

/** Connect, read the greeting, LOGOUT, wait for the close. */
function logout(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no close: ${buf}`)), 5000);
    s.setEncoding('latin1');
    s.on('data', (d: string) => {
      buf += d;
      if (buf.startsWith('* OK') && buf.endsWith('\r\n') && !buf.includes('LOGOUT'))
        s.write('a LOGOUT\r\n');
    });
    s.on('error', reject);
    s.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

async function scrape(port: number): Promise<string> {
  // Bounded, so a scrape that never completes fails as such instead of as the test's timeout.
  const res = await fetch(`http://127.0.0.1:${port}/metrics`, {
    signal: AbortSignal.timeout(5000),
  });
  expect(res.status).toBe(200);
  return res.text();
}

const total = (text: string, outcome: string) =>
  Number(
    text.match(
      new RegExp(
        `^tlsproxy_connections_total\\{dialect="imap",outcome="${outcome}",role="server"\\} (\\d+)`,
        'm',
      ),
    )?.[1] ?? 0,
  );

describe('metrics with workers', () => {
  it('the primary serves the sum over all workers', async () => {
    const port = await freePort();
    const metricsPort = await freePort();
    const sock = join(dir, 'backend.sock');
    const backend = await listen({ path: sock });
    const file = join(dir, 'tlsproxy.yaml');
    writeFileSync(
      file,
      `identities: [{ cert: ${certs}server.pem, key: ${certs}server.key }]
listeners:
  - { dialect: imap, listen: 127.0.0.1:${port}, backend: unix:${sock} }
workers: 2
metrics: { listen: 127.0.0.1:${metricsPort} }
logging: { format: text }
`,
    );
    const child = spawn(process.execPath, [bin, '--config', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    child.stderr!.on('data', (d) => {
      log += d;
    });
    try {
      for (let i = 0; i < 200 && (log.match(/listening dialect=imap/g) ?? []).length < 2; i++)
        await new Promise((r) => setTimeout(r, 25));
      expect(log.match(/listening dialect=imap/g)?.length, log).toBe(2);
      // Workers answer the primary's request with their registries: both must be in the sum.
      const n = 40;
      await Promise.all(Array.from({ length: n }, () => logout(port)));
      // A client sees the close a moment before its worker counts the connection as ended.
      let text = await scrape(metricsPort);
      for (let i = 0; i < 100 && total(text, 'closed_in_preamble') < n; i++) {
        await new Promise((r) => setTimeout(r, 50));
        text = await scrape(metricsPort);
      }
      expect(total(text, 'closed_in_preamble')).toBe(n);
      // Each scrape sees the same sum, whichever worker took which connection.
      expect(total(await scrape(metricsPort), 'closed_in_preamble')).toBe(n);
      // Process metrics are there too, aggregated.
      expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    } finally {
      // Bounded too: a proxy that does not stop on SIGTERM is a failure with its log, not a hang.
      const exited = new Promise<boolean>((r) => child.once('exit', () => r(true)));
      child.kill('SIGTERM');
      const stopped = await Promise.race([
        exited,
        new Promise<boolean>((r) => setTimeout(() => r(false), 10_000)),
      ]);
      if (!stopped) child.kill('SIGKILL');
      await backend.close();
      expect(stopped, `no exit within 10 s of SIGTERM; log:\n${log}`).toBe(true);
    }
  }, 30_000);
});
