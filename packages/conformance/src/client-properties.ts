// The property suite for a dialect's client side (issue 18), built from its client transcripts
// and judged as strictly as the replay (client-replay.ts): fast-check, time-boxed, one seed.
//
// 1. Any chunking of the server's bytes: the same sends, at the same points, the same outcome
//    and toLocal. "Any" is any the network could deliver: a read never spans a point where the
//    server waited for our client (a C: block), so reads are cut anywhere inside the runs of
//    server octets between C: blocks, one octet at a time included.
// 2. Response injection: bytes after the go-ahead in the same read (random, or a real server
//    line) always end in close, never starttls, and never reach `toLocal`; the same bytes in a
//    later read (after the outcome) change nothing: the session does not act on them.
// 3. The server closing at any point before the outcome: close, never starttls or plaintext.
// 4. Random bytes after any prefix of a conversation: no throw, well-formed actions, nothing
//    but log lines after the outcome.
// 5. A silent server at any point before the outcome: the client has a deadline (a timer
//    action) and closes when timer() is called at it, not before.

import fc from 'fast-check';
import { concat, escapeBytes } from './bytes.js';
import {
  CLIENT_START,
  type ClientInput,
  type ClientSide,
  clientContextFor,
  clientPlan,
  covers,
  EOF_POSITION,
  judgeClient,
  observeClient,
} from './client-replay.js';
import { type ClientTranscript, expectedOutcome } from './client-transcript.js';
import type { CheckResult } from './runner.js';

interface Case {
  t: ClientTranscript;
  context: ReturnType<typeof clientContextFor>;
  /** Runs of server octets between C: blocks (a read never spans two). */
  waves: Uint8Array[];
  eof: boolean;
  total: number;
  /** Never a read boundary here: the go-ahead's end in an injection transcript. */
  keep: number | null;
}

function wavesOf(t: ClientTranscript): Uint8Array[] {
  const out: Uint8Array[] = [];
  let run: Uint8Array[] = [];
  for (const s of t.steps) {
    if (s.type === 'server') run.push(s.bytes);
    else if (s.type === 'client' && run.length > 0) {
      out.push(concat(run));
      run = [];
    }
  }
  if (run.length > 0) out.push(concat(run));
  return out.filter((w) => w.length > 0);
}

/** Cut each wave at the cut points that fall inside it (`cuts` are positions in all octets). */
function chunked(
  waves: readonly Uint8Array[],
  cuts: readonly number[],
  total: number,
  /** Never a read boundary here (the go-ahead's end in an injection transcript). */
  keep: number | null = null,
): Uint8Array[] {
  const points = new Set(cuts.map((c) => c % (total + 1)));
  if (keep !== null) points.delete(keep);
  const out: Uint8Array[] = [];
  let base = 0;
  for (const w of waves) {
    let prev = 0;
    for (let i = 1; i < w.length; i++) {
      if (points.has(base + i)) {
        out.push(w.subarray(prev, i));
        prev = i;
      }
    }
    out.push(w.subarray(prev));
    base += w.length;
  }
  return out;
}

const asInputs = (chunks: readonly Uint8Array[], eof: boolean): ClientInput[] => [
  ...chunks.map((bytes): ClientInput => ({ type: 'data', bytes })),
  ...(eof ? [{ type: 'eof' } as const] : []),
];

const render = (label: string, inputs: readonly ClientInput[]): string =>
  [
    `# ${label}`,
    ...inputs.map((i) => (i.type === 'eof' ? '!close' : `S: ${escapeBytes(i.bytes)}`)),
  ].join('\n');

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  return needle.length > 0 && Buffer.from(hay).includes(Buffer.from(needle));
}

/** fc.check with the shared seed and time box; the failure as a readable result. */
function check<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  predicate: (v: T) => string | undefined,
  show: (v: T) => string,
  settings: { seed: number; ms: number },
): CheckResult {
  const details = fc.check(
    fc.property(arb, (v) => predicate(v) === undefined),
    { seed: settings.seed, interruptAfterTimeLimit: settings.ms, numRuns: 1_000_000 },
  );
  const result: CheckResult = {
    name,
    kind: 'property',
    ok: !details.failed,
    problems: [],
    runs: details.numRuns,
  };
  if (details.failed && details.counterexample) {
    const [v] = details.counterexample as [T];
    result.problems.push(predicate(v) ?? 'failed');
    result.counterexample = show(v);
  } else if (details.failed) result.problems.push(String(details.errorInstance ?? 'failed'));
  return result;
}

const skipped = (name: string, why: string): CheckResult => ({
  name,
  kind: 'property',
  ok: true,
  skipped: why,
  problems: [],
});

export function runClientProperties(
  dialect: ClientSide,
  transcripts: readonly ClientTranscript[],
  userOptions: Record<string, unknown>,
  { seed, seconds }: { seed: number; seconds: number },
): CheckResult[] {
  const cases: Case[] = [];
  const broken: string[] = [];
  for (const t of transcripts) {
    try {
      const waves = wavesOf(t);
      cases.push({
        t,
        context: clientContextFor(dialect, userOptions, t),
        waves,
        eof: t.steps.some((s) => s.type === 'close'),
        total: waves.reduce((n, w) => n + w.length, 0),
        keep: t.injectedAt,
      });
    } catch (err) {
      broken.push(`${t.name}: ${(err as Error).message}`);
    }
  }
  if (cases.length === 0) {
    return [{ name: 'client properties', kind: 'property', ok: false, problems: broken }];
  }
  const settings = { seed, ms: Math.max(200, Math.floor((seconds * 1000) / 5)) };
  const pick = fc.constantFrom(...cases);
  const cuts = fc.array(fc.nat(), { maxLength: 40 });
  const results: CheckResult[] = [];
  const allowPlaintext = (c: Case) => expectedOutcome(c.t) === 'plaintext';

  // 1. Any chunking.
  const split = (c: Case, cs: number[], bytewise: boolean) =>
    asInputs(
      chunked(
        c.waves,
        bytewise ? Array.from({ length: c.total + 1 }, (_, i) => i) : cs,
        c.total,
        c.keep,
      ),
      c.eof,
    );
  results.push(
    check(
      'any chunking of the server bytes: the same sends, outcome and toLocal',
      fc.tuple(pick, cuts, fc.boolean()),
      ([c, cs, bytewise]) => {
        const inputs = split(c, cs, bytewise);
        const o = observeClient(dialect, c.context, inputs, { allowPlaintext: allowPlaintext(c) });
        const problems = judgeClient(c.t, o);
        return problems.length === 0 ? undefined : `${c.t.name}: ${problems.join('\n')}`;
      },
      ([c, cs, bytewise]) =>
        render(`${c.t.name}${bytewise ? ', one octet at a time' : ''}`, split(c, cs, bytewise)),
      settings,
    ),
  );

  // 2. Response injection after the go-ahead.
  const tls = cases.filter((c) => expectedOutcome(c.t) === 'starttls' && c.total > 0);
  const serverLines = [
    ...new Set(
      cases.flatMap((c) =>
        Buffer.from(concat(c.waves))
          .toString('latin1')
          .split(/(?<=\n)/)
          .filter((l) => l.length >= 4),
      ),
    ),
  ].map((l) => new Uint8Array(Buffer.from(l, 'latin1')));
  const extraArb = fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 48 }),
    ...(serverLines.length > 0 ? [fc.constantFrom(...serverLines)] : []),
  );
  // toLocal when the go-ahead's read ends with one neutral forged octet.
  const references = new Map<Case, Uint8Array>();
  const reference = (c: Case): Uint8Array => {
    let r = references.get(c);
    if (!r) {
      const o = observeClient(
        dialect,
        c.context,
        asInputs(
          [...c.waves.slice(0, -1), concat([c.waves.at(-1)!, new Uint8Array([0x7e])])],
          false,
        ),
      );
      const a = o.outcome?.action;
      r = a?.type === 'close' ? (a.toLocal ?? new Uint8Array()) : new Uint8Array([0xff]);
      references.set(c, r);
    }
    return r;
  };
  const injected = (c: Case, cs: number[], extra: Uint8Array, sameRead: boolean) => {
    const chunks = chunked(c.waves, cs, c.total);
    const last = chunks.length - 1;
    return sameRead
      ? [...chunks.slice(0, last), concat([chunks[last]!, extra])]
      : [...chunks, extra];
  };
  results.push(
    tls.length === 0
      ? skipped('bytes after the go-ahead: close, never in toLocal', 'no transcript ends in !tls')
      : check(
          'bytes after the go-ahead: close, never in toLocal',
          fc.tuple(fc.constantFrom(...tls), cuts, extraArb, fc.boolean()),
          ([c, cs, extra, sameRead]) => {
            const inputs = asInputs(injected(c, cs, extra, sameRead), false);
            const o = observeClient(dialect, c.context, inputs);
            if (o.threw) return `${c.t.name}: threw: ${o.threw.split('\n')[0]}`;
            if (o.malformed) return `${c.t.name}: malformed actions: ${o.malformed}`;
            const bad = o.late.find((a) => a.type === 'starttls' || a.type === 'send');
            if (bad) return `${c.t.name}: acted after its outcome: ${bad.type}`;
            const due = o.calls.findIndex((k) => covers(k, c.total));
            if (!sameRead) {
              // The go-ahead came alone: starttls as recorded; the later read is not acted on.
              const problems = judgeClient(c.t, o);
              return problems.length === 0 ? undefined : `${c.t.name}: ${problems.join('\n')}`;
            }
            const out = o.outcome;
            if (out?.action.type !== 'close') {
              return `${c.t.name}: ${escapeBytes(extra, false).slice(0, 60)} after the go-ahead in the same read: expected close, got ${out?.action.type ?? 'no outcome'}`;
            }
            if (out.call !== due)
              return `${c.t.name}: the close did not come with the go-ahead's read`;
            // The forged bytes must not change what the local client gets: the same toLocal
            // as with one neutral forged octet, and none of them in it unless that has them too.
            const toLocal = out.action.toLocal ?? new Uint8Array();
            const neutral = reference(c);
            if (!Buffer.from(toLocal).equals(Buffer.from(neutral))) {
              return `${c.t.name}: the injected bytes changed toLocal:\n  with them | ${escapeBytes(toLocal, false)}\n  neutral   | ${escapeBytes(neutral, false)}`;
            }
            if (extra.length >= 4 && contains(toLocal, extra) && !contains(neutral, extra)) {
              return `${c.t.name}: the injected bytes reached toLocal: ${escapeBytes(toLocal, false)}`;
            }
            return undefined;
          },
          ([c, cs, extra, sameRead]) =>
            render(
              `${c.t.name}, ${sameRead ? 'extra bytes in the go-ahead read' : 'extra bytes in a later read'}`,
              asInputs(injected(c, cs, extra, sameRead), false),
            ),
          settings,
        ),
  );

  // 3. The server closes early: close, never starttls or plaintext.
  // Up to the go-ahead's end where forged bytes follow it: the server may close right there.
  const early = cases
    .map((c) => ({ c, at: c.keep ?? clientPlan(c.t).outcome.at }))
    .filter(({ at }) => at > 0 && at !== EOF_POSITION);
  const truncated = (c: Case, at: number, p: number, cs: number[]): ClientInput[] => {
    const keep = p % at;
    const waves: Uint8Array[] = [];
    let n = 0;
    for (const w of c.waves) {
      if (n >= keep) break;
      waves.push(w.subarray(0, Math.min(w.length, keep - n)));
      n += w.length;
    }
    return asInputs(chunked(waves, cs, keep), true);
  };
  results.push(
    early.length === 0
      ? skipped(
          'the server closes before the outcome: close',
          'no transcript has server bytes before its outcome',
        )
      : check(
          'the server closes before the outcome: close',
          fc.tuple(fc.constantFrom(...early), fc.nat(), cuts),
          ({ 0: { c, at }, 1: p, 2: cs }) => {
            const o = observeClient(dialect, c.context, truncated(c, at, p, cs));
            if (o.threw) return `${c.t.name}: threw: ${o.threw.split('\n')[0]}`;
            if (o.malformed) return `${c.t.name}: malformed actions: ${o.malformed}`;
            if (o.outcome?.action.type !== 'close') {
              return `${c.t.name}: the server closed after ${p % at} octets: expected close, got ${o.outcome?.action.type ?? 'no outcome'}`;
            }
            if (o.late.length > 0)
              return `${c.t.name}: acted after its outcome: ${o.late[0]!.type}`;
            return undefined;
          },
          ({ 0: { c, at }, 1: p, 2: cs }) =>
            render(
              `${c.t.name}, the server closes after ${p % at} octets`,
              truncated(c, at, p, cs),
            ),
          settings,
        ),
  );

  // 5 (below, before 4's result is pushed last). A silent server: at any point before the
  // outcome the client has a deadline, and when it passes the client closes.
  const silent = (c: Case, at: number, p: number, cs: number[]) =>
    truncated(c, at, p, cs).filter((i) => i.type === 'data');
  results.push(
    early.length === 0
      ? skipped(
          'a silent server: the timer closes',
          'no transcript has server bytes before its outcome',
        )
      : check(
          'a silent server: the timer closes',
          fc.tuple(fc.constantFrom(...early), fc.nat(), cuts),
          ({ 0: { c, at }, 1: p, 2: cs }) => {
            const session = dialect.client.create(c.context);
            let deadline = Number.POSITIVE_INFINITY;
            let outcome: string | undefined;
            const note = (acts: readonly { type: string; at?: number }[]) => {
              for (const a of acts) {
                if (a.type === 'timer') deadline = a.at!;
                if (['starttls', 'close', 'plaintext'].includes(a.type)) outcome ??= a.type;
              }
            };
            try {
              note(session.start(CLIENT_START));
              for (const i of silent(c, at, p, cs)) {
                if (i.type === 'data') note(session.receive(i.bytes.slice(), CLIENT_START));
              }
              if (outcome) return undefined; // decided already (a refusal): nothing to wait for
              if (deadline === Number.POSITIVE_INFINITY) {
                return `${c.t.name}: after ${p % at} server octets the client waits with no timer`;
              }
              // Before the deadline: at most a new timer; at it: close.
              note(session.timer(deadline - 1));
              if (outcome) return `${c.t.name}: the timer fired before its deadline: ${outcome}`;
              note(session.timer(deadline));
              return outcome === 'close'
                ? undefined
                : `${c.t.name}: its deadline passed after ${p % at} server octets: expected close, got ${outcome ?? 'nothing'}`;
            } catch (err) {
              return `${c.t.name}: threw: ${(err as Error).message}`;
            }
          },
          ({ 0: { c, at }, 1: p, 2: cs }) =>
            `${render(`${c.t.name}, then silence until the client's deadline`, silent(c, at, p, cs))}\n# timer(deadline)`,
          settings,
        ),
  );

  // 4. Garbage after any prefix.
  const garbage = (c: Case, p: number, junk: Uint8Array[], eof: boolean): ClientInput[] => {
    const all = concat(c.waves);
    return asInputs(
      [all.subarray(0, p % (all.length + 1)), ...junk].filter((x) => x.length > 0),
      eof,
    );
  };
  results.push(
    check(
      'random server bytes: no throw, well-formed actions, silent after the outcome',
      fc.tuple(
        pick,
        fc.nat(),
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 64 }), { minLength: 1, maxLength: 8 }),
        fc.boolean(),
      ),
      ([c, p, junk, eof]) => {
        const o = observeClient(dialect, c.context, garbage(c, p, junk, eof), {
          allowPlaintext: true,
        });
        if (o.threw) return `${c.t.name}: threw: ${o.threw.split('\n')[0]}`;
        if (o.malformed) return `${c.t.name}: malformed actions: ${o.malformed}`;
        if (o.late.length > 0) return `${c.t.name}: acted after its outcome: ${o.late[0]!.type}`;
        if (eof && !o.outcome) return `${c.t.name}: the server closed and the client did not`;
        return undefined;
      },
      ([c, p, junk, eof]) => render(`${c.t.name}, random bytes`, garbage(c, p, junk, eof)),
      settings,
    ),
  );
  if (broken.length > 0) {
    results.push({
      name: 'client properties: transcripts',
      kind: 'property',
      ok: false,
      problems: broken,
    });
  }
  return results;
}
