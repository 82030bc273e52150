#!/usr/bin/env node
// `npm run fuzz [-- --seconds N --cases N --seed S --dialect NAME]` (after `npm run build`): for
// every dialect in protocols/*, two time-boxed fast-check runs against the sans-I/O session:
//   raw      random bytes (binary or protocol-ish text) in random chunks, with timers firing;
//   mutated  the client bytes of fixtures/transcripts/<dialect>/ with byte flips, insertions,
//            deletions, duplicated lines, case flips and splices between transcripts.
// Properties checked on every case: receive()/timer()/eof()/tlsUnavailable() never throw and
// return arrays; every action is well-formed; after a starttls action (go-ahead written) nothing
// later is sent; nothing is sent after a close in the same batch; the output is bounded by
// 64 KiB + 64 × input. Not run in CI. Exit 0 when every case passed, 1 on any failure, 2 on a
// usage error. Reproduce a failure with the printed `--dialect … --seed … --only … --path …`.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { escapeBytes, loadTranscript } from '@tlsproxy/conformance';
import { loadDialect, resolveLimits, resolveOptions } from '@tlsproxy/core';
import fc from 'fast-check';

const root = fileURLToPath(new URL('..', import.meta.url));

const usage = `usage: npm run fuzz -- [--seconds N] [--cases N] [--seed S] [--dialect NAME]...
  --seconds N    time box per dialect, split between the raw and mutated runs (default 300)
  --cases N      cases per run (raw, mutated) per dialect (default 100000)
  --seed S       fast-check seed (default: random, printed)
  --dialect NAME only this dialect (repeatable; default every protocols/* package)
  --only KIND    only the 'raw' or the 'mutated' run
  --path P       replay one counterexample path printed by a failure (with --seed, --dialect, --only)`;

let args;
try {
  args = parseArgs({
    options: {
      seconds: { type: 'string', default: '300' },
      cases: { type: 'string', default: '100000' },
      seed: { type: 'string' },
      dialect: { type: 'string', multiple: true },
      only: { type: 'string' },
      path: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (err) {
  console.error(`${err.message}\n${usage}`);
  process.exit(2);
}
if (args.help) {
  console.log(usage);
  process.exit(0);
}
const seconds = Number(args.seconds);
const cases = Number(args.cases);
const seed =
  args.seed === undefined ? (Date.now() ^ (Math.random() * 0x7fffffff)) | 0 : Number(args.seed);
if (
  !(seconds > 0) ||
  !Number.isInteger(cases) ||
  cases < 1 ||
  !Number.isInteger(seed) ||
  (args.only !== undefined && !['raw', 'mutated'].includes(args.only))
) {
  console.error(`bad arguments\n${usage}`);
  process.exit(2);
}

// ---- the driver: one session over a list of operations, judged as it goes --------------------

const START = 1_000_000;
const ACTION_TYPES = new Set(['send', 'starttls', 'plaintext', 'close', 'timer', 'log']);
const LEVELS = new Set(['debug', 'info', 'warn', 'error']);
const u8 = (x) => x instanceof Uint8Array;

function actionProblem(a) {
  if (a === null || typeof a !== 'object') return `action is not an object: ${String(a)}`;
  if (!ACTION_TYPES.has(a.type)) return `unknown action type ${JSON.stringify(a.type)}`;
  switch (a.type) {
    case 'send':
      return u8(a.data) ? undefined : 'send.data is not a Uint8Array';
    case 'starttls':
      return u8(a.goAhead) &&
        u8(a.unavailable) &&
        u8(a.trailing) &&
        typeof a.state === 'object' &&
        a.state !== null
        ? undefined
        : 'starttls needs goAhead, unavailable, trailing (Uint8Array) and state (object)';
    case 'plaintext':
      return u8(a.buffered) && u8(a.unavailable) && typeof a.state === 'object' && a.state !== null
        ? undefined
        : 'plaintext needs buffered, unavailable (Uint8Array) and state (object)';
    case 'close':
      return typeof a.reason === 'string' && (a.data === undefined || u8(a.data))
        ? undefined
        : 'close needs a string reason and optional Uint8Array data';
    case 'timer':
      return typeof a.at === 'number' && Number.isFinite(a.at)
        ? undefined
        : `timer.at is not a finite number: ${String(a.at)}`;
    case 'log':
      return LEVELS.has(a.level) && typeof a.message === 'string'
        ? undefined
        : 'log needs a level and a string message';
  }
  return undefined;
}

class Failure extends Error {}

/**
 * ops: { k: 'data', bytes, dt } | { k: 'wait', extra }. unavail[i]: what the engine answers to
 * the i-th starttls (true: no backend, tlsUnavailable() and the preamble goes on; false: the
 * go-ahead, after which nothing may be sent). Returns undefined or the problem.
 */
const outcomes = { open: 0, tls: 0, closed: 0, unavailable: 0 };

function drive(dialect, context, ops, eof, unavail) {
  let now = START;
  let input = 0;
  let output = 0;
  let phase = 'open'; // 'open' | 'tls' (go-ahead written) | 'closed'
  let timerAt = null;
  let starttlsSeen = 0;
  let unavailSeen = false;
  let where = 'create';
  const take = (call, method, ...rest) => {
    where = call;
    const actions = session[method](...rest);
    if (!Array.isArray(actions)) throw new Failure(`${call} did not return an array`);
    let unavailableNow = false;
    for (const a of actions) {
      const problem = actionProblem(a);
      if (problem) throw new Failure(`${call}: malformed action: ${problem}`);
      if (phase === 'closed') {
        if (a.type === 'send' || a.type === 'starttls' || a.type === 'plaintext')
          throw new Failure(`${call}: ${a.type} after close in the same batch`);
        if (a.type === 'close' && a.data?.length)
          throw new Failure(`${call}: close with data after close`);
        continue;
      }
      if (phase === 'tls') {
        if (a.type === 'send' || (a.type === 'close' && a.data?.length))
          throw new Failure(
            `${call}: ${a.type} after STARTTLS (answered ${escapeBytes(a.data, false).slice(0, 80)})`,
          );
        if (a.type === 'starttls' || a.type === 'plaintext')
          throw new Failure(`${call}: ${a.type} after STARTTLS`);
      }
      switch (a.type) {
        case 'send':
          output += a.data.length;
          break;
        case 'close':
          output += a.data?.length ?? 0;
          phase = 'closed';
          break;
        case 'plaintext':
          phase = 'closed';
          break;
        case 'timer':
          timerAt = a.at;
          break;
        case 'starttls':
          if (unavail[starttlsSeen++ % unavail.length]) {
            output += a.unavailable.length;
            unavailSeen = true;
            unavailableNow = true;
          } else {
            output += a.goAhead.length;
            phase = 'tls';
          }
          break;
      }
    }
    if (output > 65_536 + 64 * input)
      throw new Failure(`${call}: ${output} bytes written for ${input} bytes of input`);
    if (unavailableNow && phase === 'open') take('tlsUnavailable()', 'tlsUnavailable', now);
  };
  const fireDue = () => {
    if (timerAt !== null && now >= timerAt && phase !== 'closed') {
      timerAt = null;
      take('timer()', 'timer', now);
    }
  };
  let session;
  try {
    session = dialect.create(context);
    take('start()', 'start', now);
    for (const op of ops) {
      if (phase === 'closed') break;
      if (op.k === 'wait') {
        if (timerAt === null) continue;
        now = Math.max(now, timerAt) + op.extra;
        fireDue();
        continue;
      }
      now += op.dt;
      fireDue();
      if (phase === 'closed') break;
      if (op.bytes.length === 0) continue; // the engine never delivers an empty read
      input += op.bytes.length;
      take('receive()', 'receive', op.bytes, now);
    }
    if (eof && phase !== 'closed') {
      now += 1;
      if (session.eof) take('eof()', 'eof', now);
    }
    outcomes[phase]++;
    if (unavailSeen) outcomes.unavailable++;
  } catch (err) {
    if (err instanceof Failure) return err.message;
    return `${where} threw: ${err instanceof Error ? (err.stack ?? err.message).split('\n').slice(0, 3).join(' | ') : String(err)}`;
  }
  return undefined;
}

// ---- arbitraries ------------------------------------------------------------------------------

const enc = (s) => new Uint8Array(Buffer.from(s, 'latin1'));
const concat = (parts) => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));

/** Bytes that reach deeper into text and BER parsers than uniform noise. */
const ALPHABET = enc(
  'aAbBcCdDeEfFiIlLnNoOpPqQrRsStTuUxX0123456789 \t\r\n\r\n\r\n.:;-_=+/<>?!"\'{}[]()*@\\\x00\x01\x02\x04\x0a\x30\x60\x77\x80\x81\x84\xff',
);
const protocolish = fc
  .array(fc.nat(ALPHABET.length - 1), { maxLength: 1024 })
  .map((ix) => Uint8Array.from(ix, (i) => ALPHABET[i]));
const someBytes = fc.oneof(
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 2048 }) },
  { weight: 3, arbitrary: protocolish },
);
const dt = fc.oneof(
  { weight: 40, arbitrary: fc.nat(50) },
  { weight: 1, arbitrary: fc.nat(2_000_000) },
);
const waitOp = fc.record({ k: fc.constant('wait'), extra: fc.nat(1000) });
const unavailArb = fc.array(
  fc.oneof(
    { weight: 3, arbitrary: fc.constant(false) },
    { weight: 1, arbitrary: fc.constant(true) },
  ),
  { minLength: 1, maxLength: 4 },
);

function splitAt(bytes, cuts) {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    if (p > prev) out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

/** Random chunks of random bytes, with waits (timer fires) in between. */
const rawCase = fc.record({
  ops: fc.array(
    fc.oneof(
      { weight: 6, arbitrary: fc.record({ k: fc.constant('data'), bytes: someBytes, dt }) },
      { weight: 1, arbitrary: waitOp },
    ),
    { maxLength: 24 },
  ),
  eof: fc.boolean(),
  unavail: unavailArb,
});

function lineSplit(b) {
  const out = [];
  let s = 0;
  for (let i = 0; i < b.length; i++)
    if (b[i] === 10) {
      out.push(b.subarray(s, i + 1));
      s = i + 1;
    }
  if (s < b.length) out.push(b.subarray(s));
  return out;
}

const isLetter = (x) => (x >= 65 && x <= 90) || (x >= 97 && x <= 122);

/** Apply one mutation; positions are taken modulo the current length. */
function mutate(data, m, corpus) {
  const n = data.length;
  const at = (p) => (n === 0 ? 0 : p % (n + 1));
  switch (m.k) {
    case 'flip': {
      if (n === 0) return data;
      const out = data.slice();
      out[m.pos % n] ^= 1 << m.bit;
      return out;
    }
    case 'set': {
      if (n === 0) return data;
      const out = data.slice();
      out[m.pos % n] = m.byte;
      return out;
    }
    case 'insert': {
      const p = at(m.pos);
      return concat([data.subarray(0, p), m.bytes, data.subarray(p)]);
    }
    case 'delete': {
      const p = at(m.pos);
      return concat([data.subarray(0, p), data.subarray(Math.min(n, p + m.len))]);
    }
    case 'dupLine': {
      const lines = lineSplit(data);
      if (lines.length === 0) return data;
      const i = m.line % lines.length;
      const copies = Array.from({ length: m.times }, () => lines[i]);
      return concat([...lines.slice(0, i + 1), ...copies, ...lines.slice(i + 1)]);
    }
    case 'dropLine': {
      const lines = lineSplit(data);
      if (lines.length === 0) return data;
      const i = m.line % lines.length;
      return concat([...lines.slice(0, i), ...lines.slice(i + 1)]);
    }
    case 'case': {
      const out = data.slice();
      const p = at(m.pos);
      for (let i = p; i < Math.min(n, p + m.len); i++) if (isLetter(out[i])) out[i] ^= 0x20;
      return out;
    }
    case 'splice': {
      const other = corpus[m.other % corpus.length].data;
      const p = at(m.pos);
      const q = other.length === 0 ? 0 : m.from % (other.length + 1);
      return concat([data.subarray(0, p), other.subarray(q)]);
    }
    case 'spliceLines': {
      const a = lineSplit(data);
      const b = lineSplit(corpus[m.other % corpus.length].data);
      const i = a.length === 0 ? 0 : m.pos % (a.length + 1);
      const j = b.length === 0 ? 0 : m.from % (b.length + 1);
      return concat([...a.slice(0, i), ...b.slice(j)]);
    }
  }
  return data;
}

const mutation = fc.oneof(
  fc.record({ k: fc.constant('flip'), pos: fc.nat(), bit: fc.nat(7) }),
  fc.record({ k: fc.constant('set'), pos: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    k: fc.constant('insert'),
    pos: fc.nat(),
    bytes: fc.oneof(
      { weight: 4, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 8 }) },
      { weight: 1, arbitrary: someBytes },
    ),
  }),
  fc.record({ k: fc.constant('delete'), pos: fc.nat(), len: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ k: fc.constant('dupLine'), line: fc.nat(), times: fc.integer({ min: 1, max: 40 }) }),
  fc.record({ k: fc.constant('dropLine'), line: fc.nat() }),
  fc.record({ k: fc.constant('case'), pos: fc.nat(), len: fc.integer({ min: 1, max: 256 }) }),
  fc.record({ k: fc.constant('splice'), other: fc.nat(), pos: fc.nat(), from: fc.nat() }),
  fc.record({ k: fc.constant('spliceLines'), other: fc.nat(), pos: fc.nat(), from: fc.nat() }),
);

function mutatedCase(corpus) {
  return fc.record({
    t: fc.nat(corpus.length - 1),
    mutations: fc.array(mutation, { minLength: 1, maxLength: 8, size: 'xsmall' }),
    chunking: fc.oneof(
      fc.constant({ k: 'lines' }),
      fc.constant({ k: 'bytewise' }),
      fc.record({ k: fc.constant('cuts'), cuts: fc.array(fc.nat(), { maxLength: 32 }) }),
    ),
    waits: fc.oneof(
      { weight: 4, arbitrary: fc.constant([]) },
      { weight: 1, arbitrary: fc.array(fc.nat(), { minLength: 1, maxLength: 3 }) },
    ),
    eof: fc.oneof(
      { weight: 4, arbitrary: fc.constant('recorded') },
      { weight: 1, arbitrary: fc.boolean() },
    ),
    unavail: unavailArb,
    dts: fc.array(dt, { minLength: 1, maxLength: 8 }),
  });
}

/** The mutated case as ops for drive(), and the context of its first transcript. */
function materialise(c, corpus) {
  const base = corpus[c.t];
  let data = base.data;
  for (const m of c.mutations) data = mutate(data, m, corpus);
  let chunks;
  if (c.chunking.k === 'bytewise' && data.length <= 4096)
    chunks = Array.from(data, (b) => Uint8Array.of(b));
  else if (c.chunking.k === 'lines') chunks = lineSplit(data);
  else chunks = splitAt(data, c.chunking.cuts ?? [data.length >> 1]);
  const ops = chunks.map((bytes, i) => ({ k: 'data', bytes, dt: c.dts[i % c.dts.length] }));
  for (const w of c.waits) ops.splice(w % (ops.length + 1), 0, { k: 'wait', extra: w % 1000 });
  const eof = c.eof === 'recorded' ? base.eof : c.eof;
  return { ops, eof, context: base.context, name: base.name, data };
}

// ---- per dialect --------------------------------------------------------------------------------

function dialectNames() {
  const names = [];
  for (const dir of readdirSync(join(root, 'protocols')).sort()) {
    try {
      const pkg = JSON.parse(readFileSync(join(root, 'protocols', dir, 'package.json'), 'utf8'));
      names.push(pkg.name.replace(/^@tlsproxy\/dialect-/, ''));
    } catch {}
  }
  return names;
}

function contextFor(dialect, t) {
  const known = (o, spec) => Object.fromEntries(Object.entries(o ?? {}).filter(([k]) => k in spec));
  return {
    options: resolveOptions(dialect, known(t?.options, dialect.options)),
    limits: resolveLimits(dialect, known(t?.limits, dialect.limits)),
    hostname: 'fuzz.example',
    connectionId: 'c1',
    serverNames: ['localhost'],
  };
}

function loadCorpus(dialect, name) {
  const dir = join(root, 'fixtures/transcripts', dialect.name ?? name);
  let files = [];
  try {
    files = readdirSync(dir)
      .filter((f) => f.endsWith('.txt'))
      .sort();
  } catch {}
  return files.map((f) => {
    const t = loadTranscript(join(dir, f));
    const client = t.steps.filter((s) => s.type === 'client').map((s) => s.bytes);
    return {
      name: t.name,
      data: concat(client),
      eof: t.steps.some((s) => s.type === 'eof'),
      context: contextFor(dialect, t),
    };
  });
}

const renderOps = (ops, eof) =>
  [
    ...ops.map((o) =>
      o.k === 'wait' ? `  (wait for the timer +${o.extra} ms)` : `  C: ${escapeBytes(o.bytes)}`,
    ),
    ...(eof ? ['  !eof'] : []),
  ]
    .join('\n')
    .slice(0, 4000);

function runCheck(kind, name, arb, predicate, render, ms) {
  let reason;
  const t0 = performance.now();
  const details = fc.check(
    fc.property(arb, (v) => {
      reason = predicate(v);
      return reason === undefined;
    }),
    {
      seed,
      numRuns: cases,
      interruptAfterTimeLimit: ms,
      ...(args.path !== undefined ? { path: args.path } : {}),
    },
  );
  const elapsed = (performance.now() - t0) / 1000;
  const out = {
    kind,
    runs: details.numRuns,
    failed: details.failed,
    interrupted: details.interrupted,
    elapsed,
  };
  if (details.failed) {
    const v = details.counterexample?.[0];
    out.problem = v !== undefined ? (predicate(v) ?? reason) : String(details.errorInstance);
    out.counterexample = v !== undefined ? render(v) : '';
    out.path = details.counterexamplePath;
    out.replay = `npm run fuzz -- --dialect ${name} --seed ${seed} --only ${kind} --path ${details.counterexamplePath}`;
  }
  return out;
}

/** How the sessions ended (shrinking runs included): a check that cases get past the greeting. */
function ended() {
  const total = outcomes.open + outcomes.tls + outcomes.closed || 1;
  const pct = (n) => `${Math.round((100 * n) / total)}%`;
  return `tls ${pct(outcomes.tls)} closed ${pct(outcomes.closed)} open ${pct(outcomes.open)} unavail ${pct(outcomes.unavailable)}`;
}

const selected = args.dialect ?? dialectNames();
console.log(
  `fuzz: seed ${seed}, ${cases} cases per run, ${seconds} s per dialect, dialects: ${selected.join(', ')}`,
);
const rows = [];
let failures = 0;
for (const name of selected) {
  let dialect;
  try {
    dialect = await loadDialect(name);
  } catch (err) {
    console.error(`fuzz: cannot load dialect ${name}: ${err.message}`);
    process.exit(2);
  }
  const corpus = loadCorpus(dialect, name);
  const base = contextFor(dialect, undefined);
  const kinds = args.only ? [args.only] : corpus.length > 0 ? ['raw', 'mutated'] : ['raw'];
  const ms = Math.floor((seconds * 1000) / kinds.length);
  const results = [];
  for (const k of Object.keys(outcomes)) outcomes[k] = 0;
  for (const kind of kinds) {
    const r =
      kind === 'raw'
        ? runCheck(
            kind,
            name,
            rawCase,
            (c) => drive(dialect, base, c.ops, c.eof, c.unavail),
            (c) =>
              `${renderOps(c.ops, c.eof)}\n  (starttls answers: ${c.unavail.map((u) => (u ? 'unavailable' : 'go-ahead')).join(', ')})`,
            ms,
          )
        : runCheck(
            kind,
            name,
            mutatedCase(corpus),
            (c) => {
              const m = materialise(c, corpus);
              return drive(dialect, m.context, m.ops, m.eof, c.unavail);
            },
            (c) => {
              const m = materialise(c, corpus);
              return `  from ${m.name}, mutations ${JSON.stringify(c.mutations).slice(0, 400)}\n${renderOps(m.ops, m.eof)}`;
            },
            ms,
          );
    results.push(r);
    if (r.failed) {
      failures++;
      console.log(`\n${name} ${kind}: FAILED after ${r.runs} cases: ${r.problem}`);
      console.log(r.counterexample);
      console.log(`  replay: ${r.replay}\n`);
    }
  }
  const row = {
    dialect: name,
    transcripts: corpus.length,
    raw: results.find((r) => r.kind === 'raw')?.runs ?? '-',
    mutated: results.find((r) => r.kind === 'mutated')?.runs ?? '-',
    failures: results.filter((r) => r.failed).length,
    elapsed: `${results.reduce((s, r) => s + r.elapsed, 0).toFixed(1)} s`,
    ended: ended(),
    note: results.some((r) => r.interrupted && !r.failed)
      ? `time box hit before ${cases} cases`
      : args.path
        ? 'replayed one path'
        : '',
  };
  rows.push(row);
  console.log(
    `${name}: ${row.raw} raw + ${row.mutated} mutated cases, ${row.failures} failures, ${row.elapsed}, ended ${row.ended}${row.note ? ` (${row.note})` : ''}`,
  );
}

console.log('');
console.table(rows);
console.log(
  `seed ${seed} (replay: npm run fuzz -- --seed ${seed} --cases ${cases}${args.dialect ? args.dialect.map((d) => ` --dialect ${d}`).join('') : ''})`,
);
if (failures > 0) {
  console.log(`fuzz: ${failures} failing run(s)`);
  process.exit(1);
}
console.log('fuzz: no failures');
