#!/usr/bin/env node
// A/B of native engine builds inside one run, for changes smaller than the full bench's
// run-to-run spread (±10 % for handshake CPU on the reference VM). Each variant is its own
// tlsproxy + backend (bench/servers.mjs) loading its addon through TLSPROXY_ENGINE_NATIVE_ADDON.
// Rounds alternate between the variants and the order rotates every round, so drift and a
// variant's position in the round cancel out; the ratios are medians of per-round ratios to the
// first variant. --control adds a second instance of the first variant: its ratio is the noise
// floor the others are read against (3.4 % once on the reference VM).
//
// Usage: node bench/ab.mjs [--rounds N] [--ms MS] [--concurrency C] [--bulk] [--control]
//                          NAME=ADDON[:THREADS][@CHECKOUT] ...
//   ADDON   a .node file (copy packages/engine-native/build/Release/engine_native.node aside
//           before rebuilding with the change), or `built` for the package's current build
//           (its prebuild when it has no source build)
//   THREADS engineThreads of that variant (default 1)
//   CHECKOUT another built checkout of the repository whose bench/servers.mjs (and so whose
//           packages) that variant runs: for changes on the JavaScript side (`git worktree add`,
//           node_modules and the packages' builds in place)
//   --bulk  128 MiB each way per round instead of handshakes: MB/s and CPU per MB relayed
// Example: cp packages/engine-native/build/Release/engine_native.node /tmp/before.node
//          (change, npm run build in packages/engine-native)
//          node bench/ab.mjs --control before=/tmp/before.node after=built
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { trial } from './lib/phases.mjs';
import { killAll, loadgen, log, root, tree } from './lib/procs.mjs';
import { startTlsproxy } from './lib/systems.mjs';

const { values: opt, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '8' },
    ms: { type: 'string', default: '3000' },
    concurrency: { type: 'string', default: '32' },
    bulk: { type: 'boolean', default: false },
    control: { type: 'boolean', default: false },
  },
});
const rounds = Number(opt.rounds);
// The package's current build: its source build, else its prebuild (npm pack's prebuildify
// leaves only that).
const built =
  [
    join(root, 'packages/engine-native/build/Release/engine_native.node'),
    join(
      root,
      `packages/engine-native/prebuilds/${process.platform}-${process.arch}/@tlsproxy+engine-native.node`,
    ),
  ].find((p) => existsSync(p)) ??
  join(root, 'packages/engine-native/build/Release/engine_native.node');

const variants = positionals.map((spec) => {
  const eq = spec.indexOf('=');
  if (eq < 1) throw new Error(`expected NAME=ADDON[:THREADS], got ${spec}`);
  // `@CHECKOUT` is the part after the last '@' when it names a checkout: addon paths may hold
  // an '@' themselves (prebuilds/linux-x64/@tlsproxy+engine-native.node).
  const rest = spec.slice(eq + 1);
  const at = rest.lastIndexOf('@');
  const tail = at >= 0 ? rest.slice(at + 1) : '';
  const isCheckout = tail !== '' && existsSync(join(tail, 'bench/servers.mjs'));
  const what = isCheckout ? rest.slice(0, at) : rest;
  const checkout = isCheckout ? tail : undefined;
  const [file, threads = '1'] = what.split(':');
  // Absolute: the variant's proxy resolves it from its own directory.
  const addon = file === 'built' ? built : resolve(file);
  if (!existsSync(addon)) throw new Error(`${spec}: no such addon ${addon}`);
  return { name: spec.slice(0, eq), addon, threads: Number(threads), checkout };
});
if (variants.length === 0) throw new Error('name at least one variant: NAME=ADDON[:THREADS]');
if (opt.control) variants.push({ ...variants[0], name: `${variants[0].name}(control)` });

const insts = [];
for (const [i, v] of variants.entries()) {
  process.env.TLSPROXY_ENGINE_NATIVE_ADDON = v.addon;
  if (v.checkout) process.env.TLSPROXY_BENCH_CHECKOUT = v.checkout;
  else delete process.env.TLSPROXY_BENCH_CHECKOUT;
  insts.push(await startTlsproxy(`ab${i}`, [], 'native', v.threads));
}
delete process.env.TLSPROXY_ENGINE_NATIVE_ADDON;
delete process.env.TLSPROXY_BENCH_CHECKOUT;

const P = { loadgens: 2 };
const bytes = 128 << 20;
const pids = (list) => list.map((c) => c.pid);
/**
 * CPU seconds of the process trees so far, from every thread's schedstat (nanoseconds): a bulk
 * round is too short for /proc's 10 ms ticks (one tick is 0.04 ms per MB at 128 MiB each way).
 */
function cpuSecs(list) {
  let ns = 0;
  for (const pid of pids(list))
    for (const p of tree(pid))
      try {
        for (const t of readdirSync(`/proc/${p}/task`))
          ns += Number(readFileSync(`/proc/${p}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
      } catch {} // a thread or process that ended meanwhile
  return ns / 1e9;
}
/** One measurement of variant i: the numbers compared ([0] is the ratio's basis). */
async function measure(i) {
  const inst = insts[i];
  if (!opt.bulk) {
    const t = await trial(inst, Number(opt.concurrency), Number(opt.ms), P);
    return [((t.proxyCpu + t.backendCpu) * 1000) / t.ok, t.rate];
  }
  const p0 = cpuSecs(inst.proxy);
  const b0 = cpuSecs(inst.backend);
  const r = await loadgen({ mode: 'bulk', port: inst.port, bytes });
  const mb = (2 * bytes) / 1e6;
  const proxy = ((cpuSecs(inst.proxy) - p0) * 1000) / mb;
  const backend = ((cpuSecs(inst.backend) - b0) * 1000) / mb;
  return [proxy + backend, r.upMBps, r.downMBps, proxy, backend];
}

const runs = variants.map(() => []);
for (let i = 0; i < variants.length; i++) await measure(i); // warm-up
for (let r = 0; r < rounds; r++) {
  for (let k = 0; k < variants.length; k++) {
    const i = (r + k) % variants.length;
    runs[i][r] = await measure(i);
  }
  log(
    `round ${r + 1}/${rounds}: ${variants.map((v, i) => `${v.name} ${runs[i][r][0].toFixed(3)}`).join(', ')}`,
  );
}
killAll();

// Not phases.mjs's median, which takes the upper of the two middle values: with an even number
// of rounds (8 by default) those two are averaged here, so neither side of a pair decides.
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const col = (i, j) => runs[i].map((m) => m[j]);
const head = opt.bulk
  ? [
      'variant',
      'CPU ms/MB (proxy + backend)',
      '÷ first (paired)',
      'proxy ms/MB',
      'backend ms/MB',
      'up MB/s',
      'down MB/s',
    ]
  : ['variant', 'CPU ms/conn (proxy + backend)', '÷ first (paired)', 'conn/s'];
console.log(`| ${head.join(' | ')} |\n|${head.map(() => ' --- |').join('')}`);
for (const [i, v] of variants.entries()) {
  const ratio = median(runs[i].map((m, r) => m[0] / runs[0][r][0]));
  const cells = opt.bulk
    ? [
        median(col(i, 0)).toFixed(3),
        ratio.toFixed(3),
        median(col(i, 3)).toFixed(3),
        median(col(i, 4)).toFixed(3),
        median(col(i, 1)).toFixed(0),
        median(col(i, 2)).toFixed(0),
      ]
    : [median(col(i, 0)).toFixed(3), ratio.toFixed(3), median(col(i, 1)).toFixed(0)];
  console.log(
    `| ${v.name} (${v.threads} thread${v.threads > 1 ? 's' : ''}) | ${cells.join(' | ')} |`,
  );
}
console.log(
  `\n${rounds} rounds, ${opt.bulk ? `${bytes >> 20} MiB each way` : `${opt.ms} ms at concurrency ${opt.concurrency}`} per measurement, medians.`,
);
process.exit(0);
