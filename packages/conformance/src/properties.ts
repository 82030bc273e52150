// The property suite (DESIGN.md "Dialect interface — contract"), for any dialect, built from its
// transcripts: any chunking gives the same replies; command case does not matter; garbage never
// throws; nothing pipelined after STARTTLS is answered or survives; limits and timers hold.
// fast-check, time-boxed, one seed for the whole run so a failure can be replayed exactly.
import type { Action, Dialect, SessionContext } from '@tlsproxy/dialect-kit';
import fc from 'fast-check';
import { concat, equal, escapeBytes, latin1 } from './bytes.js';
import { contextFor, type Input, inputsOf, type Observation, observe, START } from './replay.js';
import type { CheckResult } from './runner.js';
import type { Transcript } from './transcript.js';

interface Case {
  t: Transcript;
  context: SessionContext<unknown>;
  data: Uint8Array;
  eof: boolean;
  base: Observation;
}

const enc = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'latin1'));

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let prev = 0;
  for (const p of [...points, bytes.length]) {
    if (p > prev) out.push(bytes.subarray(prev, p));
    prev = p;
  }
  return out;
}

const asInputs = (chunks: Uint8Array[], eof: boolean): Input[] => [
  ...chunks.map((bytes): Input => ({ type: 'data', bytes })),
  ...(eof ? [{ type: 'eof' } as const] : []),
];

/** What must not change with chunking: the bytes written and how the session ended. */
function summary(o: Observation, fold = false): string {
  const f = o.final;
  const end =
    f.type === 'starttls'
      ? `starttls ${JSON.stringify(f.state)}`
      : f.type === 'plaintext'
        ? `plaintext ${JSON.stringify(f.state)}`
        : f.type;
  const s = `${latin1(o.output)}\n${end}`;
  return fold ? s.toLowerCase() : s;
}

function sanity(o: Observation): string | undefined {
  if (o.threw) return `threw: ${o.threw.split('\n')[0]}`;
  if (o.malformed.length > 0) return `malformed action: ${o.malformed[0]}`;
  if (o.late.length > 0)
    return `acted after STARTTLS/close: ${o.late.map((a) => a.type).join(', ')}`;
  return undefined;
}

const isBinary = (b: Uint8Array): boolean =>
  b.some((x) => (x < 0x20 || x >= 0x7f) && x !== 13 && x !== 10 && x !== 9);

function clientLines(cases: Case[]): Uint8Array[] {
  const lines = new Set<string>();
  for (const c of cases) for (const l of latin1(c.data).split(/(?<=\n)/)) if (l) lines.add(l);
  return [...lines].map(enc);
}

/** fc.check with the shared seed and time box; the failure as a readable result. */
function check<T>(
  name: string,
  arb: fc.Arbitrary<T>,
  predicate: (v: T) => string | undefined,
  render: (v: T) => string,
  settings: { seed: number; ms: number },
): CheckResult {
  let reason: string | undefined;
  const details = fc.check(
    fc.property(arb, (v) => {
      reason = predicate(v);
      return reason === undefined;
    }),
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
    result.problems.push(predicate(v) ?? reason ?? 'failed');
    result.counterexample = render(v);
  } else if (details.failed) {
    result.problems.push(String(details.errorInstance ?? 'failed'));
  }
  return result;
}

const renderChunks = (label: string, chunks: Uint8Array[]): string =>
  [`# ${label}`, ...chunks.filter((c) => c.length > 0).map((c) => `C: ${escapeBytes(c)}`)].join(
    '\n',
  );

export function runProperties(
  dialect: Dialect<unknown>,
  transcripts: readonly Transcript[],
  userOptions: Record<string, unknown>,
  { seed, seconds }: { seed: number; seconds: number },
): CheckResult[] {
  const cases: Case[] = transcripts.map((t) => {
    const context = contextFor(dialect, userOptions, t);
    const inputs = inputsOf(t);
    const data = concat(inputs.flatMap((i) => (i.type === 'data' ? [i.bytes] : [])));
    const eof = inputs.some((i) => i.type === 'eof');
    return { t, context, data, eof, base: observe(dialect, context, inputsOf(t)) };
  });
  const ms = Math.max(200, Math.floor((seconds * 1000) / 6));
  const settings = { seed, ms };
  const pick = fc.constantFrom(...cases);
  const results: CheckResult[] = [];

  // 1. Any chunking gives the same replies (one byte at a time, all at once, split CRLF).
  results.push(
    check(
      'any chunking gives the same replies',
      fc.tuple(pick, fc.array(fc.nat(), { maxLength: 40 }), fc.boolean()),
      ([c, cuts, bytewise]) => {
        const chunks = bytewise
          ? [...c.data].map((b) => new Uint8Array([b]))
          : splitAt(c.data, cuts);
        const o = observe(dialect, c.context, asInputs(chunks, c.eof));
        const whole = observe(dialect, c.context, asInputs([c.data], c.eof));
        if (sanity(o)) return `${c.t.name}: ${sanity(o)}`;
        if (summary(o) !== summary(whole)) {
          return `${c.t.name}: replies depend on chunking:\n  split  | ${escapeBytes(o.output, false)}\n  whole  | ${escapeBytes(whole.output, false)}`;
        }
        return undefined;
      },
      ([c, cuts, bytewise]) =>
        renderChunks(
          `${c.t.name}${bytewise ? ', one byte at a time' : ''}`,
          bytewise ? [c.data] : splitAt(c.data, cuts),
        ),
      settings,
    ),
  );

  // 2. Command case does not matter (text protocols only: case is data in BER).
  // `@case sensitive` opts a transcript out: in XML (XMPP) element names are case-sensitive.
  const text = cases.filter((c) => !isBinary(c.data) && c.t.headers.case !== 'sensitive');
  results.push(
    text.length === 0
      ? {
          name: 'command case does not matter',
          kind: 'property',
          ok: true,
          skipped: 'binary protocol',
          problems: [],
        }
      : check(
          'command case does not matter',
          fc.tuple(
            fc.constantFrom(...text),
            fc.array(fc.boolean(), { minLength: 1, maxLength: 64 }),
          ),
          ([c, flips]) => {
            const varied = c.data.map((b, i) =>
              /[A-Za-z]/.test(String.fromCharCode(b)) && flips[i % flips.length] ? b ^ 0x20 : b,
            );
            const o = observe(dialect, c.context, asInputs([varied], c.eof));
            if (sanity(o)) return `${c.t.name}: ${sanity(o)}`;
            return summary(o, true) === summary(c.base, true)
              ? undefined
              : `${c.t.name}: replies differ (beyond letter case) when the client changes case:\n  varied | ${escapeBytes(o.output, false)}\n  as recorded | ${escapeBytes(c.base.output, false)}`;
          },
          ([c, flips]) =>
            renderChunks(c.t.name, [
              c.data.map((b, i) =>
                /[A-Za-z]/.test(String.fromCharCode(b)) && flips[i % flips.length] ? b ^ 0x20 : b,
              ),
            ]),
          settings,
        ),
  );

  // 3. Garbage (random bytes mixed with real client lines) never throws; actions stay well-formed.
  const lines = clientLines(cases);
  const junk = fc.oneof(
    fc.uint8Array({ maxLength: 64 }),
    fc.constantFrom(...lines, enc('\r\n'), enc('\n')),
  );
  results.push(
    check(
      'random garbage gives an error or a close, never a throw',
      fc.tuple(fc.array(junk, { minLength: 1, maxLength: 20 }), fc.boolean()),
      ([chunks, eof]) => {
        const o = observe(dialect, cases[0]!.context, asInputs(chunks, eof));
        const bad = sanity(o);
        if (bad) return bad;
        if (eof && o.final.type === 'open') return 'still open after the client closed (eof)';
        return undefined;
      },
      ([chunks, eof]) => renderChunks(`garbage${eof ? ', then eof' : ''}`, chunks),
      settings,
    ),
  );

  // 4. Bytes pipelined after STARTTLS are handed back as trailing or discarded, never answered.
  const tlsCases = cases.filter((c) => c.base.final.type === 'starttls' && !c.eof);
  results.push(
    tlsCases.length === 0
      ? {
          name: 'nothing pipelined after STARTTLS survives',
          kind: 'property',
          ok: true,
          skipped: 'no transcript reaches STARTTLS',
          problems: [],
        }
      : check(
          'nothing pipelined after STARTTLS survives',
          fc.tuple(
            fc.constantFrom(...tlsCases),
            fc.array(junk, { minLength: 1, maxLength: 8 }),
            fc.nat(),
          ),
          ([c, extra, cut]) => {
            const f = c.base.final as Extract<Observation['final'], { type: 'starttls' }>;
            const chunks = inputsOf(c.t).flatMap((i) => (i.type === 'data' ? [i.bytes] : []));
            const upTo = chunks.slice(0, f.input + 1);
            const p = concat(extra);
            const at = cut % (p.length + 1);
            const fed = [
              ...upTo.slice(0, -1),
              concat([upTo.at(-1)!, p.subarray(0, at)]),
              p.subarray(at),
            ];
            const o = observe(dialect, c.context, asInputs(fed, false));
            const bad = sanity(o);
            if (bad) return `${c.t.name}: ${bad}`;
            if (o.final.type !== 'starttls')
              return `${c.t.name}: pipelined bytes changed the outcome (${o.final.type})`;
            if (!equal(o.output, c.base.output))
              return `${c.t.name}: pipelined bytes changed what was written`;
            const left = concat([o.final.trailing, p.subarray(at)]);
            if (!equal(left, concat([f.trailing, p]))) {
              return `${c.t.name}: trailing is not exactly the bytes after STARTTLS (${escapeBytes(o.final.trailing, false)})`;
            }
            return undefined;
          },
          ([c, extra]) => renderChunks(`${c.t.name}, then pipelined`, extra),
          settings,
        ),
  );

  // 5. Limits: a line without end is answered or closed (checked once: 1 MiB is slow to
  // shrink), and repeated abuse with bad lines ends in a close.
  results.push(floodCheck(dialect, cases[0]!.context));
  const badLine = fc
    .uint8Array({ minLength: 1, maxLength: 24 })
    .map((b) =>
      concat([enc('x'), b.filter((x) => x !== 10 && x !== 13 && x !== 0x7b), enc('\r\n')]),
    );
  results.push(
    check(
      'repeated bad commands end in a close',
      badLine,
      (line) => {
        const o = observe(dialect, cases[0]!.context, asInputs(Array(2000).fill(line), false));
        if (sanity(o)) return sanity(o);
        return o.final.type === 'open'
          ? '2000 bad commands and the connection is still open'
          : undefined;
      },
      (line) => renderChunks('2000 times', [line]),
      settings,
    ),
  );

  // 6. Time is bounded: the dialect asks for a timer, and when it fires, the session ends.
  results.push(idleTimer(dialect, cases[0]!.context));
  return results;
}

function floodCheck(dialect: Dialect<unknown>, context: SessionContext<unknown>): CheckResult {
  const name = 'limits hold: a 1 MiB line without end gets an error or a close';
  const flood = new Uint8Array(1 << 20).fill(0x41);
  const o = observe(
    dialect,
    context,
    asInputs([...splitAt(flood, [1000, 65536, 500000]), enc('\r\n')], false),
  );
  const bad =
    sanity(o) ??
    (o.output.length <= greetingLength(dialect, context) && o.final.type === 'open'
      ? 'no error reply and no close'
      : undefined);
  return { name, kind: 'property', ok: bad === undefined, problems: bad ? [bad] : [] };
}

function greetingLength(dialect: Dialect<unknown>, context: SessionContext<unknown>): number {
  return observe(dialect, context, []).output.length;
}

function idleTimer(dialect: Dialect<unknown>, context: SessionContext<unknown>): CheckResult {
  const name = 'an idle client is closed by the timer the dialect asks for';
  const r: CheckResult = { name, kind: 'property', ok: true, problems: [] };
  try {
    const s = dialect.create(context);
    let actions: Action[] = s.start(START);
    for (let i = 0; i < 10; i++) {
      const timer = actions.filter((a) => a.type === 'timer').at(-1);
      if (actions.some((a) => a.type === 'close')) return r;
      if (timer?.type !== 'timer') {
        return {
          ...r,
          ok: false,
          problems: ['no timer asked for: an idle client would be held until the engine deadline'],
        };
      }
      actions = s.timer(timer.at);
    }
    return { ...r, ok: false, problems: ['still open after 10 timer expiries'] };
  } catch (err) {
    return { ...r, ok: false, problems: [`threw: ${(err as Error).message}`] };
  }
}
