// Keeps `npm run bench` working: a seconds-long run of tlsproxy and node:tls (the peers that need
// no Debian packages) through every phase, checked for the figures the report is built from.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const run = fileURLToPath(new URL('../run.mjs', import.meta.url));

test('bench --smoke measures tlsproxy against node:tls and writes the report', () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
  try {
    const r = spawnSync(
      process.execPath,
      [
        run,
        '--smoke',
        '--no-install',
        '--only',
        'tlsproxy,node-tls',
        '--skip',
        'perf',
        '--out',
        out,
      ],
      { encoding: 'utf8', timeout: 180_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    for (const id of ['tlsproxy', 'node-tls']) {
      const h = report.handshake[id];
      assert.ok(h.connections > 0, `${id} completed no handshake`);
      assert.equal(h.errors, 0, `${id} errors: ${JSON.stringify(h.errorKinds)}`);
      assert.ok(h.serverCpuSecPer1k > 0);
      assert.ok(report.throughput[id].upMBps > 0 && report.throughput[id].downMBps > 0);
    }
    assert.equal(report.idleMemory.tlsproxy.connections, 200);
    assert.ok(report.ratios.tlsproxy.rateVsNodeTls > 0);
    for (const d of ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade'])
      assert.ok(report.dialectCost[d].preamblesPerSec > 0, `${d}: ${report.dialectCost[d].error}`);
    assert.ok(report.profile.parts.length > 0, JSON.stringify(report.profile));
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(md, /## Targets/);
    assert.match(md, /\| tlsproxy \| \d/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
