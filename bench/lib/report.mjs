// report.md (tables, the targets of issue 9 met or missed, the profile) and report.svg.
import { r1 } from './phases.mjs';

const ratio = (a, b) => (a != null && b ? r1(a / b, 2) : null);
const pct = (x) => (x == null ? null : `${(x * 100).toFixed(1)} %`);

export function table(head, rows) {
  return [
    `| ${head.join(' | ')} |`,
    `| ${head.map(() => '---').join(' | ')} |`,
    ...rows.map((r) => `| ${r.map((x) => (x == null ? '—' : String(x))).join(' | ')} |`),
  ].join('\n');
}

export function ratios(hs, tp) {
  const base = (k, f) => hs[k]?.[f] ?? null;
  const out = {};
  for (const id of Object.keys(hs)) {
    if (!id.startsWith('tlsproxy')) continue;
    out[id] = {
      rateVsNodeTls: ratio(hs[id].connPerSec, base('node-tls', 'connPerSec')),
      rateVsNodeTlsImplicit: ratio(hs[id].connPerSec, base('node-tls-implicit', 'connPerSec')),
      cpuPer1kVsNodeTlsImplicit: ratio(
        hs[id].serverCpuSecPer1k,
        base('node-tls-implicit', 'serverCpuSecPer1k'),
      ),
      rateVsStunnel: ratio(hs[id].connPerSec, base('stunnel', 'connPerSec')),
      rateVsStunnelC256: ratio(hs[id].connPerSec, base('stunnel-c256', 'connPerSec')),
      rateVsNginx: ratio(hs[id].connPerSec, base('nginx', 'connPerSec')),
      cpuPer1kVsNodeTls: ratio(hs[id].serverCpuSecPer1k, base('node-tls', 'serverCpuSecPer1k')),
      cpuPer1kVsStunnel: ratio(hs[id].serverCpuSecPer1k, base('stunnel', 'serverCpuSecPer1k')),
      cpuPer1kVsStunnelC256: ratio(
        hs[id].serverCpuSecPer1k,
        base('stunnel-c256', 'serverCpuSecPer1k'),
      ),
      cpuPer1kVsNginx: ratio(hs[id].serverCpuSecPer1k, base('nginx', 'serverCpuSecPer1k')),
      upVsStunnel: ratio(tp[id]?.upMBps, tp.stunnel?.upMBps),
      downVsStunnel: ratio(tp[id]?.downMBps, tp.stunnel?.downMBps),
      upVsNodeTls: ratio(tp[id]?.upMBps, tp['node-tls']?.upMBps),
      downVsNodeTls: ratio(tp[id]?.downMBps, tp['node-tls']?.downMBps),
    };
  }
  return out;
}

/** The targets of issue 9, each with the figure from this run. */
export function targets(report) {
  const r = report.ratios.tlsproxy ?? {};
  const idle = report.idleMemory.tlsproxy?.kibPerConnection ?? null;
  const row = (name, value, goal, ok) => [
    name,
    value ?? '—',
    goal,
    value == null ? 'not measured' : ok === null ? '' : ok ? 'met' : 'missed',
  ];
  const tpMin = r.upVsStunnel == null ? null : Math.min(r.upVsStunnel, r.downVsStunnel ?? 0);
  return [
    row(
      'handshakes/s ÷ stunnel (256 clients, same machine)',
      r.rateVsStunnelC256,
      '≥ 1.0',
      r.rateVsStunnelC256 >= 1,
    ),
    row(
      'handshakes/s ÷ node:tls implicit TLS',
      r.rateVsNodeTlsImplicit,
      '≥ 0.85',
      r.rateVsNodeTlsImplicit >= 0.85,
    ),
    row(
      'handshakes/s ÷ node:tls doing the same STARTTLS preamble in-process',
      r.rateVsNodeTls,
      '(for reference)',
      null,
    ),
    row('throughput ÷ stunnel (worse direction)', tpMin, '≥ 1.0', tpMin >= 1),
    row('KiB RSS per idle preamble connection', idle, '≤ 10', idle != null && idle <= 10),
  ];
}

export function svgChart(hs, concurrency) {
  const rows = Object.entries(hs);
  const max = Math.max(...rows.map(([, v]) => v.connPerSec), 1);
  const h = 30 * rows.length + 40;
  const bars = rows
    .map(([id, v], i) => {
      const w = Math.round((v.connPerSec / max) * 400);
      const y = 30 + i * 30;
      return `<text x="5" y="${y + 15}" font-size="12">${id}</text><rect x="135" y="${y}" width="${w}" height="20" fill="${id.startsWith('tlsproxy') ? '#2a7' : '#888'}"/><text x="${140 + w}" y="${y + 15}" font-size="12">${v.connPerSec}/s</text>`;
    })
    .join('\n');
  return `<svg xmlns="http://www.w3.org/2000/svg" width="640" height="${h}" font-family="sans-serif">
<title>IMAP STARTTLS handshakes per second</title>
<text x="5" y="18" font-size="14">IMAP STARTTLS handshakes per second (concurrency ${concurrency}, higher is better)</text>
${bars}
</svg>
`;
}

function profileSection(prof) {
  if (!prof) return [];
  if (prof.error)
    return ['## 5. CPU profile of tlsproxy under load', '', `Not taken: ${prof.error}`, ''];
  return [
    '## 5. CPU profile of tlsproxy under the handshake load',
    '',
    `One tlsproxy process profiled with \`node --cpu-prof\` under the handshake load (warm-up, then ${prof.connections} connections at ${prof.connPerSec}/s). /proc: the process used ${pct(prof.procBusyShare)} of a core (${prof.proxyUserSecs} s user, ${prof.proxyKernelSecs} s kernel — the kernel part is accept, sendmsg with SCM_RIGHTS, socketpair, close and the wake-ups between processes). V8 saw JavaScript or its native calls ${pct(prof.busyShare)} of the time; the gap is C++ work V8 counts as idle (OpenSSL's handshake runs from libuv's read callback, outside any JS frame). Shares below are of V8's busy time; native calls made from a JS function (the fdpass addon's sendmsg, the STARTTLS discard) count as that function's self time. The whole profile is \`bench/report.cpuprofile\` (Chrome DevTools, speedscope).`,
    '',
    table(
      ['part of the code', 'share of busy time'],
      prof.parts.map((p) => [p.name, pct(p.share)]),
    ),
    '',
    table(
      ['function (self time)', 'share of busy time'],
      prof.functions.map((f) => [`\`${f.name}\``, pct(f.share)]),
    ),
    '',
  ];
}

function perfSection(perf) {
  if (!perf) return [];
  const ids = Object.keys(perf);
  const ok = ids.filter((id) => !perf[id].error);
  if (!ok.length)
    return ['### Native view (Linux perf)', '', `Not taken: ${perf[ids[0]]?.error}`, ''];
  // Groups under 0.1 % of samples in every profile are noise.
  const names = [
    ...new Set(
      ok.flatMap((id) => perf[id].groups.filter((g) => g.share >= 0.001).map((g) => g.name)),
    ),
  ];
  const cell = (id, n) => {
    const g = perf[id].groups.find((x) => x.name === n);
    return g ? `${g.msPerConnection} (${pct(g.share)})` : '—';
  };
  return [
    '### Native view (Linux perf): CPU ms per connection by kind of code',
    '',
    `\`perf record -F 999\` of one fresh server process during a handshake trial; the shares of its samples times its /proc CPU per connection. It sees what V8's profile cannot: OpenSSL, malloc and the kernel. For tlsproxy the proxy process only (the backend process is extra). ${ok.map((id) => `${id}: ${perf[id].cpuMsPerConnection} ms per connection at ${perf[id].connPerSec}/s`).join('; ')}.`,
    '',
    table(
      ['kind of code', ...ok.map((id) => `${id} ms/conn (share)`)],
      names.map((n) => [n, ...ok.map((id) => cell(id, n))]),
    ),
    '',
  ];
}

export function markdown(report, notes) {
  const { handshake: hs, throughput: tp, idleMemory: idle, dialectCost: dc, params: P } = report;
  const m = report.machine;
  return [
    `# tlsproxy benchmark${report.mode === 'full' ? '' : ` (${report.mode}${report.mode === 'smoke' ? ': a check that the bench runs, not figures' : ''})`}`,
    '',
    `${report.startedAt}; ${m.cpus} × ${m.model}; Node ${m.node}; Linux ${m.kernel}; ${m.peers}. Loopback; the load generators run on the same cores as the servers.`,
    '',
    '## Targets (issue 9), this run',
    '',
    table(['target', 'this run', 'goal', ''], targets(report)),
    '',
    `## 1. IMAP STARTTLS handshakes (TLS 1.3, ECDSA P-256, no resumption, concurrency ${P.concurrency} over ${P.loadgens} load-generator processes, ${P.rounds} alternating rounds × ${P.trialMs / 1000} s)`,
    '',
    table(
      [
        'system',
        'conn/s',
        'p50 ms',
        'p99 ms',
        'server CPU s/1k conn (proxy + backend)',
        'proxy kernel share',
        'server cores busy',
        'loadgen cores busy',
        'errors',
        'cores',
      ],
      Object.entries(hs).map(([id, v]) => [
        id,
        v.connPerSec,
        v.p50Ms,
        v.p99Ms,
        `${v.serverCpuSecPer1k} (${v.proxyCpuSecPer1k} + ${v.backendCpuSecPer1k})`,
        pct(v.proxyKernelShare),
        v.serverCpuCores,
        v.loadgenCpuCores,
        v.errors,
        report.systems[id]?.cores,
      ]),
    ),
    '',
    '![handshake rates](report.svg)',
    '',
    '### Ratios (same run)',
    '',
    table(
      [
        'tlsproxy',
        'rate ÷ node:tls implicit',
        'rate ÷ node:tls STARTTLS',
        'rate ÷ stunnel (c32)',
        'rate ÷ stunnel-c256',
        'rate ÷ nginx',
        'CPU/conn ÷ node:tls implicit',
        'CPU/conn ÷ node:tls STARTTLS',
        'CPU/conn ÷ stunnel',
        'CPU/conn ÷ stunnel-c256',
        'CPU/conn ÷ nginx',
        'up ÷ stunnel',
        'down ÷ stunnel',
      ],
      Object.entries(report.ratios).map(([id, r]) => [
        id,
        r.rateVsNodeTlsImplicit,
        r.rateVsNodeTls,
        r.rateVsStunnel,
        r.rateVsStunnelC256,
        r.rateVsNginx,
        r.cpuPer1kVsNodeTlsImplicit,
        r.cpuPer1kVsNodeTls,
        r.cpuPer1kVsStunnel,
        r.cpuPer1kVsStunnelC256,
        r.cpuPer1kVsNginx,
        r.upVsStunnel,
        r.downVsStunnel,
      ]),
    ),
    '',
    `## 2. Throughput after hand-off (${P.bulkBytes / 2 ** 20} MiB each way on one connection; one warm-up transfer, then the median of ${P.bulkRounds} alternating rounds)`,
    '',
    table(
      [
        'system',
        'client → server MB/s',
        'server → client MB/s',
        'best up / down',
        'proxy CPU ms per MB',
      ],
      Object.entries(tp).map(([id, v]) => [
        id,
        v.upMBps,
        v.downMBps,
        `${v.bestUpMBps} / ${v.bestDownMBps}`,
        v.proxyCpuMsPerMB,
      ]),
    ),
    '',
    `## 3. Idle connections in the preamble (${P.idle} asked; after the greeting; RSS of proxy + backend process trees, measured first on fresh servers)`,
    '',
    table(
      ['system', 'held', 'refused', 'RSS before MiB', 'RSS during MiB', 'KiB per connection'],
      Object.entries(idle).map(([id, v]) => [
        id,
        v.connections,
        v.refused,
        v.rssBeforeMiB,
        v.rssDuringMiB,
        v.kibPerConnection,
      ]),
    ),
    '',
    '## 4. Dialect cost (sans-I/O, no sockets)',
    '',
    table(
      [
        'dialect',
        'preambles to STARTTLS / s (new session each)',
        'command',
        'commands / s (one session)',
      ],
      Object.entries(dc).map(([id, v]) => [
        id,
        v.preamblesPerSec ?? v.error,
        v.command,
        v.commandsPerSec,
      ]),
    ),
    '',
    ...profileSection(report.profile),
    ...perfSection(report.perf),
    '## Notes',
    '',
    ...notes.map((n) => `- ${n}`),
    '',
    Object.keys(report.failures).length
      ? `## Systems that did not run\n\n${Object.entries(report.failures)
          .map(([k, v]) => `- ${k}: ${v}`)
          .join('\n')}\n`
      : '',
  ].join('\n');
}
