// Keeps `npm run bench` working: a seconds-long run of tlsproxy with both TLS engines and node:tls
// implicit TLS (the peers that need no Debian packages) through every phase, checked for the
// figures the report is built from. The perf phases run when perf works here (context switches,
// and the native view split by thread and process); without it they are skipped.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const run = fileURLToPath(new URL('../run.mjs', import.meta.url));
const perf =
  spawnSync('perf', ['stat', '-x', ',', '-e', 'context-switches', 'true'], { encoding: 'utf8' })
    .status === 0;

test('bench --smoke measures both engines against node:tls and writes the report', () => {
  const out = mkdtempSync(join(tmpdir(), 'bench-smoke-'));
  const ids = ['tlsproxy', 'tlsproxy-native', 'tlsproxy-native-t1', 'node-tls-implicit'];
  try {
    const r = spawnSync(
      process.execPath,
      [
        run,
        '--smoke',
        '--no-install',
        '--only',
        ids.join(','),
        ...(perf ? [] : ['--skip', 'perf']),
        '--out',
        out,
      ],
      { encoding: 'utf8', timeout: 300_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    const report = JSON.parse(readFileSync(join(out, 'report.json'), 'utf8'));
    assert.deepEqual(report.failures, {});
    // tlsproxy-native-t1 is the default's row where the default is one thread.
    const ran = ids.filter((id) => report.handshake[id]);
    assert.ok(ran.includes('tlsproxy') && ran.includes('tlsproxy-native'), ran.join());
    for (const id of ran) {
      const h = report.handshake[id];
      assert.ok(h.connections > 0, `${id} completed no handshake`);
      assert.equal(h.errors, 0, `${id} errors: ${JSON.stringify(h.errorKinds)}`);
      assert.ok(h.serverCpuSecPer1k > 0);
      if (perf) assert.ok(h.switchesPerConn > 0, `${id}: no context switches counted`);
      const u = report.unloaded[id];
      assert.ok(u.connections > 0 && u.p50Ms > 0, `${id} unloaded: ${JSON.stringify(u)}`);
      assert.equal(u.errors, 0);
    }
    for (const id of ['tlsproxy', 'tlsproxy-native']) {
      assert.ok(report.throughput[id].upMBps > 0 && report.throughput[id].downMBps > 0);
      assert.equal(report.idleMemory[id].connections, 200);
      const e = report.idleEstablished[id];
      assert.equal(e.sessions, report.params.established, `${id}: ${JSON.stringify(e)}`);
      assert.equal(typeof e.proxyKiBPerSession, 'number');
      assert.equal(typeof e.backendKiBPerSession, 'number');
      assert.ok(report.ratios[id].cpuPer1kVsNodeTlsImplicit > 0);
      assert.ok(report.ratios[id].p50UnloadedVsNodeTlsImplicit > 0);
    }
    // The native engine reports its C heap; the engineThreads 2 (or default) ÷ 1 ratio exists.
    assert.equal(
      typeof report.idleEstablished['tlsproxy-native'].proxyMallocKiBPerSession,
      'number',
    );
    if (ran.includes('tlsproxy-native-t1') && report.systems['tlsproxy-native'].engineThreads !== 1)
      assert.ok(report.ratios['tlsproxy-native'].cpuPer1kVsThreads1 > 0);
    for (const d of ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade'])
      assert.ok(report.dialectCost[d].preamblesPerSec > 0, `${d}: ${report.dialectCost[d].error}`);
    assert.equal(report.profile.engine, 'native');
    assert.ok(report.profile.parts.length > 0, JSON.stringify(report.profile));
    if (perf) {
      const parts = (id) => report.perf[id].parts?.map((p) => p.part) ?? report.perf[id].error;
      assert.deepEqual(parts('tlsproxy-native'), ['js', 'engine', 'other', 'backend']);
      assert.ok(parts('tlsproxy').includes('backend'), parts('tlsproxy'));
      assert.ok(!parts('tlsproxy').includes('engine'));
      assert.ok(parts('node-tls-implicit').includes('js'), parts('node-tls-implicit'));
      const engine = report.perf['tlsproxy-native'].parts.find((p) => p.part === 'engine');
      assert.ok(
        engine.kinds.some((k) => k.name.startsWith('OpenSSL')),
        `no OpenSSL on the engine threads: ${JSON.stringify(engine.kinds)}`,
      );
    }
    const md = readFileSync(join(out, 'report.md'), 'utf8');
    assert.match(md, /## Targets \(issue 15/);
    assert.match(md, /## 2\. Unloaded latency/);
    assert.match(md, /## 5\. Idle established sessions/);
    assert.match(md, /\| tlsproxy-native \| \d/);
    if (perf) assert.match(md, /native engine loop threads/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test('bench/ab.mjs compares addon builds, handshakes and bulk, with a control', () => {
  const ab = fileURLToPath(new URL('../ab.mjs', import.meta.url));
  for (const mode of [[], ['--bulk']]) {
    const r = spawnSync(
      process.execPath,
      [ab, ...mode, '--rounds', '1', '--ms', '1000', '--control', 'x=built', 'y=built:2'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.status, 0, r.stderr);
    // One row per variant and the control, each with a positive CPU figure and a paired ratio.
    const rows = r.stdout.split('\n').filter((l) => /^\| [xy]/.test(l));
    assert.equal(rows.length, 3, r.stdout);
    for (const row of rows) {
      const [cpu, ratio] = row.split('|').slice(2, 4).map(Number);
      assert.ok(cpu > 0 && ratio > 0, row);
    }
    assert.match(rows[0], /\| 1\.000 \|/);
  }
});
