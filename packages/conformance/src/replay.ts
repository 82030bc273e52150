// Sans-I/O replay: drive a dialect session with a transcript's client chunks, exactly as the
// engine would (start, receive per chunk, eof), and judge what it wrote against what the real
// server wrote. No sockets, no timers: the clock is injected (`now` for start/receive/eof), by
// default one fixed instant, so nothing a dialect derives from `now` (HTTP's Date) can depend on
// how the input was chunked.
import {
  type Action,
  type Dialect,
  resolveLimits,
  resolveOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { concat, equal, latin1, show } from './bytes.js';
import { formatMismatch, type Mismatch, matchOutput, matchSpans } from './pattern.js';
import { REPLY_RULES, type Reply, type ReplyRules } from './replies.js';
import { type Segment, serverSegments, type Transcript } from './transcript.js';

export type Input = { type: 'data'; bytes: Uint8Array } | { type: 'eof' };

export interface Observation {
  /** What the client would read: sends, close data, and the go-ahead the engine writes. */
  output: Uint8Array;
  final:
    | { type: 'starttls'; state: Record<string, unknown>; trailing: Uint8Array; input: number }
    | {
        type: 'close';
        reason: string;
        /** What the dialect was answering when it closed: client bytes, the client's eof
         * (the connection ended because the client closed), or its own start. */
        on: 'data' | 'eof' | 'start';
        /** Index of the input being handled (-1: start). */
        input: number;
      }
    /** Handed over without TLS (the `plaintext` action: SMTP MX mode). */
    | { type: 'plaintext'; state: Record<string, unknown>; buffered: Uint8Array; input: number }
    | { type: 'open' };
  /** The starttls action's `unavailable` reply, when there was one. */
  unavailable?: Uint8Array;
  /** The starttls action's go-ahead, when there was one. */
  goAhead?: Uint8Array;
  /** Actions the dialect returned after STARTTLS or close (only log, timer, bare close allowed). */
  late: Action[];
  /** Bytes given to receive() after the STARTTLS command's chunk. */
  discarded: number;
  threw?: string;
  malformed: string[];
  actions: Action[];
}

export const START = 1_000_000;

/** The `now` a session is given for its n-th call (0: start): one fixed instant by default. */
export type Clock = (call: number) => number;
export const FIXED_CLOCK: Clock = () => START;

/** Problems with an action's shape, whatever the protocol: the engine would choke on these. */
export function actionProblem(a: Action): string | undefined {
  switch (a?.type) {
    case 'send':
      return a.data instanceof Uint8Array ? undefined : 'send without Uint8Array data';
    case 'starttls':
      return a.goAhead instanceof Uint8Array &&
        a.unavailable instanceof Uint8Array &&
        a.trailing instanceof Uint8Array &&
        typeof a.state === 'object' &&
        a.state !== null
        ? undefined
        : 'starttls needs goAhead, unavailable, trailing (Uint8Array) and state (object)';
    case 'plaintext':
      return a.buffered instanceof Uint8Array ? undefined : 'plaintext without buffered bytes';
    case 'close':
      return typeof a.reason === 'string' && (a.data === undefined || a.data instanceof Uint8Array)
        ? undefined
        : 'close needs a reason and optional Uint8Array data';
    case 'timer':
      return Number.isFinite(a.at) ? undefined : 'timer.at must be a finite number';
    case 'log':
      return typeof a.message === 'string' ? undefined : 'log without a message';
    default:
      return `unknown action ${JSON.stringify((a as { type?: unknown })?.type)}`;
  }
}

/** Options and limits for a transcript: the user's, then the transcript's server settings. */
export function contextFor(
  dialect: Dialect<unknown>,
  userOptions: Record<string, unknown>,
  t?: Pick<Transcript, 'options' | 'limits'>,
  extraLimits: Record<string, unknown> = {},
): SessionContext<unknown> {
  const known = (o: Record<string, unknown>, spec: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).filter(([k]) => k in spec));
  return {
    options: resolveOptions(dialect, {
      ...userOptions,
      ...known(t?.options ?? {}, dialect.options),
    }),
    limits: resolveLimits(dialect, {
      ...known(t?.limits ?? {}, dialect.limits),
      ...known(extraLimits, dialect.limits),
    }),
    hostname: 'mail.example.test',
    connectionId: 'conformance',
  };
}

/** Run one session over the inputs, collecting what a client would observe. */
export function observe(
  dialect: Dialect<unknown>,
  context: SessionContext<unknown>,
  inputs: readonly Input[],
  clock: Clock = FIXED_CLOCK,
): Observation {
  const obs: Observation = {
    output: new Uint8Array(),
    final: { type: 'open' },
    late: [],
    discarded: 0,
    malformed: [],
    actions: [],
  };
  const out: Uint8Array[] = [];
  const take = (actions: Action[], input: number, on: 'data' | 'eof' | 'start'): void => {
    if (!Array.isArray(actions)) {
      obs.malformed.push('a session method did not return an array of actions');
      return;
    }
    for (const a of actions) {
      obs.actions.push(a);
      const problem = actionProblem(a);
      if (problem) {
        obs.malformed.push(problem);
        continue;
      }
      if (obs.final.type !== 'open') {
        if (a.type !== 'log' && a.type !== 'timer' && !(a.type === 'close' && !a.data?.length))
          obs.late.push(a);
        continue;
      }
      if (a.type === 'send') out.push(a.data);
      else if (a.type === 'close') {
        if (a.data) out.push(a.data);
        obs.final = { type: 'close', reason: a.reason, on, input };
      } else if (a.type === 'starttls') {
        out.push(a.goAhead);
        obs.final = { type: 'starttls', state: a.state, trailing: a.trailing, input };
        obs.unavailable = a.unavailable;
        obs.goAhead = a.goAhead;
      } else if (a.type === 'plaintext') {
        obs.final = { type: 'plaintext', state: a.state, buffered: a.buffered, input };
      }
    }
  };
  try {
    const session = dialect.create(context);
    take(session.start(clock(0)), -1, 'start');
    inputs.forEach((input, i) => {
      const now = clock(i + 1);
      if (obs.final.type === 'starttls' && input.type === 'data')
        obs.discarded += input.bytes.length;
      if (obs.final.type === 'close' || obs.final.type === 'plaintext') return;
      if (input.type === 'data') take(session.receive(input.bytes, now), i, 'data');
      else take(session.eof?.(now) ?? [{ type: 'close', reason: 'client closed' }], i, 'eof');
    });
  } catch (err) {
    obs.threw = err instanceof Error ? (err.stack ?? err.message) : String(err);
  }
  obs.output = concat(out);
  return obs;
}

export function inputsOf(t: Transcript): Input[] {
  return t.steps.flatMap((s): Input[] =>
    s.type === 'client'
      ? [{ type: 'data', bytes: s.bytes }]
      : s.type === 'eof'
        ? [{ type: 'eof' }]
        : [],
  );
}

function get(obj: unknown, path: string): unknown {
  let cur = obj;
  for (const k of path.split('.')) cur = (cur as Record<string, unknown> | undefined)?.[k];
  return cur;
}

/** Where the server closed in the transcript: after how many inputs, and before the client's eof. */
function closePoint(t: Transcript): { inputs: number; beforeEof: boolean } | undefined {
  let inputs = 0;
  let eofSeen = false;
  for (const s of t.steps) {
    if (s.type === 'client') inputs++;
    else if (s.type === 'eof') {
      inputs++;
      eofSeen = true;
    } else if (s.type === 'close') return { inputs, beforeEof: !eofSeen };
  }
  return undefined;
}

const text = (b: Uint8Array): string => latin1(b);
const within = (at: number, ranges: { start: number; end: number }[]): boolean =>
  ranges.some((r) => at >= r.start && at < r.end);

function showReply(out: string, r: Reply | undefined): string {
  if (!r) return '(nothing)';
  return `${r.cls} | ${show(new Uint8Array(Buffer.from(out.slice(r.start, r.end), 'latin1')), 80)}`;
}

/**
 * The reply check: the recorded output and the dialect's, cut into replies by the dialect's
 * rules, must have the same classes in the same order. A chunk marked `!relax replies` is left
 * out on both sides. An `${untagged}` placeholder (optional informational lines) is left out of
 * the order, but what the dialect sends there must be of a class the server sent there: an
 * extra `* OK` or `* BYE` cannot hide where the server wrote `* BAD [ALERT]`.
 */
function replyProblem(t: Transcript, rules: ReplyRules, output: Uint8Array): string | undefined {
  const segs: { seg: Segment; skip: 'relax' | 'optional' | undefined }[] = [];
  for (const s of t.steps) {
    if (s.type !== 'server') continue;
    const relaxed = s.relax?.includes('replies') ?? false;
    for (const seg of s.segments) {
      const optional = seg.type === 'placeholder' && seg.name === 'untagged';
      segs.push({ seg, skip: relaxed ? 'relax' : optional ? 'optional' : undefined });
    }
  }
  const spans = matchSpans(
    segs.map((x) => x.seg),
    output,
  );
  if (!spans) return undefined; // the byte pattern already failed, and says where
  let recorded = '';
  const recSkip: { start: number; end: number }[] = [];
  const actSkip: { start: number; end: number }[] = [];
  const optional: { rec: { start: number; end: number }; act: { start: number; end: number } }[] =
    [];
  segs.forEach(({ seg, skip }, i) => {
    const start = recorded.length;
    recorded += seg.type === 'bytes' ? text(seg.bytes) : seg.recorded ? text(seg.recorded) : '';
    if (skip) {
      recSkip.push({ start, end: recorded.length });
      actSkip.push(spans[i]!);
    }
    if (skip === 'optional')
      optional.push({ rec: { start, end: recorded.length }, act: spans[i]! });
  });
  const actual = text(output);
  const allWant = rules.replies(recorded);
  const allGot = rules.replies(actual);
  for (const o of optional) {
    const allowed = new Set(allWant.filter((r) => within(r.start, [o.rec])).map((r) => r.cls));
    const stray = allGot.find((r) => within(r.start, [o.act]) && !allowed.has(r.cls));
    if (stray) {
      return (
        `a reply of a class the server did not send here (only ${[...allowed].join(', ') || 'nothing'} may be left out or added):\n` +
        `    actual   | ${showReply(actual, stray)}`
      );
    }
  }
  const want = allWant.filter((r) => !within(r.start, recSkip));
  const got = allGot.filter((r) => !within(r.start, actSkip));
  for (let i = 0; i < Math.max(want.length, got.length); i++) {
    if (want[i]?.cls === got[i]?.cls) continue;
    const what =
      i >= want.length
        ? 'the dialect sent a reply more than the server did'
        : i >= got.length
          ? 'the dialect sent fewer replies than the server did'
          : "a reply of another class than the server's";
    return (
      `reply ${i + 1}: ${what}:\n` +
      `    expected | ${showReply(recorded, want[i])}\n` +
      `    actual   | ${showReply(actual, got[i])}`
    );
  }
  return undefined;
}

/**
 * The strict checks on what a client read (reply classes, no authentication before TLS), for
 * the sans-I/O replay and the engine replay alike. Empty for a dialect without reply rules.
 */
export function outputProblems(t: Transcript, output: Uint8Array, dialectName: string): string[] {
  const rules = REPLY_RULES.get(dialectName);
  if (!rules) return [];
  const problems: string[] = [];
  const replies = replyProblem(t, rules, output);
  if (replies) problems.push(replies);
  if (!t.allow.includes('auth-before-tls')) {
    const out = text(output);
    const client = text(concat(t.steps.flatMap((s) => (s.type === 'client' ? [s.bytes] : []))));
    const auth = rules.authBeforeTls(out, rules.replies(out), client);
    if (auth) {
      problems.push(
        `security: the dialect ${auth} (a transcript of a server that does so says !allow auth-before-tls)`,
      );
    }
  }
  return problems;
}

/**
 * Judge an observation against the transcript; each problem is one readable paragraph.
 * `dialectName` selects the reply rules (REPLY_RULES); without rules only the byte pattern and
 * the session's ending are judged.
 */
export function judge(
  t: Transcript,
  obs: Observation,
  dialectName: string = t.headers.dialect ?? '',
  { strict = true }: { strict?: boolean } = {},
): { problems: string[]; mismatch?: Mismatch } {
  const problems: string[] = [];
  if (obs.threw) problems.push(`the dialect threw: ${obs.threw.split('\n')[0]}`);
  for (const m of new Set(obs.malformed)) problems.push(`malformed action: ${m}`);
  const mismatch = matchOutput(serverSegments(t), obs.output);
  if (mismatch) problems.push(`server output differs:\n${formatMismatch(mismatch)}`);
  // strict: false is the runner before issue 17 (byte pattern and ending only), kept so the
  // mutation check can show what the strict checks add.
  const rules = strict ? REPLY_RULES.get(dialectName) : undefined;
  if (strict && obs.final.type === 'starttls' && obs.unavailable && obs.goAhead) {
    // Whatever the protocol: "no backend can take you" must not read as "go ahead".
    if (equal(obs.unavailable, obs.goAhead) || obs.unavailable.length === 0)
      problems.push(
        `the starttls action's unavailable reply (written when no backend can take the connection) ${obs.unavailable.length === 0 ? 'is empty' : 'is the go-ahead itself'}: the client would start TLS with nobody`,
      );
  }
  if (rules) {
    problems.push(...outputProblems(t, obs.output, dialectName));
    if (obs.unavailable) {
      const u = text(obs.unavailable);
      const r = rules.replies(u);
      // One refusal (an extra PDU or line here is as wrong as anywhere), and at most what
      // ends the conversation after it (XMPP: <failure/> then </stream:stream>, RFC 6120 §5.4.2.2).
      const [first, ...rest] = r;
      if (!first || !rules.refusal(first.cls) || !rest.every((x) => rules.closing?.(x.cls))) {
        problems.push(
          `the starttls action's unavailable reply (written when no backend can take the connection) must refuse, not: ${r.map((x) => x.cls).join(', ') || '(nothing)'} | ${show(obs.unavailable, 80)}`,
        );
      }
    }
  }
  const either = t.steps.some((s) => s.type === 'tls-or-close');
  const wantTls = t.steps.some((s) => s.type === 'tls') || (either && obs.final.type !== 'close');
  const wantClose =
    t.steps.some((s) => s.type === 'close') || (either && obs.final.type === 'close');
  if (wantTls && obs.final.type !== 'starttls') {
    problems.push(`the server started TLS; the dialect ended ${describe(obs.final)}`);
  }
  if (!wantTls && obs.final.type === 'starttls') {
    problems.push('the dialect started TLS; the server did not');
  }
  if (!wantTls && obs.final.type === 'plaintext') {
    // No transcript of a server that starts TLS can want this; none records a plaintext
    // hand-off (the engine's MX-mode tests cover it).
    problems.push('the dialect handed the connection over in plaintext; the server did not');
  }
  if (wantClose && obs.final.type === 'open') {
    problems.push('the server closed the connection; the dialect kept it open');
  }
  if (!wantClose && obs.final.type === 'close' && !wantTls) {
    problems.push(`the dialect closed (${obs.final.reason}); the server kept the connection open`);
  }
  // Who closed: a server that closed by itself (before the client's eof) must be matched by a
  // dialect that closes on the client's bytes, not one that only closes when the client does.
  const at = strict ? closePoint(t) : undefined;
  if (at && obs.final.type === 'close') {
    const f = obs.final;
    if (at.beforeEof && (f.on === 'eof' || f.input >= at.inputs)) {
      problems.push(
        f.on === 'eof'
          ? `the server closed the connection itself; the dialect closed only because the client closed (${f.reason})`
          : `the server closed the connection after input ${at.inputs}; the dialect only after input ${f.input + 1} (${f.reason})`,
      );
    } else if (!at.beforeEof && f.on !== 'eof') {
      problems.push(
        `the server kept the connection open until the client closed; the dialect closed first (${f.reason})`,
      );
    }
  }
  if (obs.late.length > 0) {
    const what = obs.late
      .map((a) =>
        a.type === 'send' || a.type === 'close'
          ? `${a.type} ${show(a.data ?? new Uint8Array())}`
          : a.type,
      )
      .join(', ');
    problems.push(`the dialect acted on bytes sent after STARTTLS or close: ${what}`);
  }
  for (const s of t.steps) {
    if (s.type !== 'state') continue;
    const actual = obs.final.type === 'starttls' ? get(obs.final.state, s.path) : undefined;
    if (JSON.stringify(actual) !== JSON.stringify(s.value)) {
      problems.push(
        `hand-off state ${s.path}: expected ${JSON.stringify(s.value)}, got ${JSON.stringify(actual)}`,
      );
    }
  }
  return mismatch ? { problems, mismatch } : { problems };
}

function describe(f: Observation['final']): string {
  return f.type === 'close'
    ? `by closing (${f.reason})`
    : f.type === 'open'
      ? 'still open'
      : f.type === 'plaintext'
        ? 'by handing the connection over in plaintext, without TLS'
        : 'in TLS';
}

export function replay(
  dialect: Dialect<unknown>,
  t: Transcript,
  userOptions: Record<string, unknown> = {},
  clock: Clock = FIXED_CLOCK,
): { problems: string[]; mismatch?: Mismatch; observation: Observation } {
  const obs = observe(dialect, contextFor(dialect, userOptions, t), inputsOf(t), clock);
  return { ...judge(t, obs, dialect.name), observation: obs };
}
