// Sans-I/O replay: drive a dialect session with a transcript's client chunks, exactly as the
// engine would (start, receive per chunk, eof), and judge what it wrote against what the real
// server wrote. No sockets, no timers: the clock is a number that moves 1 ms per step.
import {
  type Action,
  type Dialect,
  resolveLimits,
  resolveOptions,
  type SessionContext,
} from '@tlsproxy/dialect-kit';
import { concat, show } from './bytes.js';
import { formatMismatch, type Mismatch, matchOutput } from './pattern.js';
import { serverSegments, type Transcript } from './transcript.js';

export type Input = { type: 'data'; bytes: Uint8Array } | { type: 'eof' };

export interface Observation {
  /** What the client would read: sends, close data, and the go-ahead the engine writes. */
  output: Uint8Array;
  final:
    | { type: 'starttls'; state: Record<string, unknown>; trailing: Uint8Array; input: number }
    | { type: 'close'; reason: string }
    | { type: 'open' };
  /** Actions the dialect returned after STARTTLS or close (only log, timer, bare close allowed). */
  late: Action[];
  /** Bytes given to receive() after the STARTTLS command's chunk. */
  discarded: number;
  threw?: string;
  malformed: string[];
  actions: Action[];
}

export const START = 1_000_000;

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
  let now = START;
  const take = (actions: Action[], input: number): void => {
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
        obs.final = { type: 'close', reason: a.reason };
      } else if (a.type === 'starttls') {
        out.push(a.goAhead);
        obs.final = { type: 'starttls', state: a.state, trailing: a.trailing, input };
      } else if (a.type === 'plaintext') {
        obs.final = { type: 'close', reason: 'plaintext hand-off' };
      }
    }
  };
  try {
    const session = dialect.create(context);
    take(session.start(now), -1);
    inputs.forEach((input, i) => {
      now += 1;
      if (obs.final.type === 'starttls' && input.type === 'data')
        obs.discarded += input.bytes.length;
      if (obs.final.type === 'close') return;
      if (input.type === 'data') take(session.receive(input.bytes, now), i);
      else take(session.eof?.(now) ?? [{ type: 'close', reason: 'client closed' }], i);
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

/** Judge an observation against the transcript; each problem is one readable paragraph. */
export function judge(
  t: Transcript,
  obs: Observation,
): { problems: string[]; mismatch?: Mismatch } {
  const problems: string[] = [];
  if (obs.threw) problems.push(`the dialect threw: ${obs.threw.split('\n')[0]}`);
  for (const m of new Set(obs.malformed)) problems.push(`malformed action: ${m}`);
  const mismatch = matchOutput(serverSegments(t), obs.output);
  if (mismatch) problems.push(`server output differs:\n${formatMismatch(mismatch)}`);
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
  if (wantClose && obs.final.type === 'open') {
    problems.push('the server closed the connection; the dialect kept it open');
  }
  if (!wantClose && obs.final.type === 'close' && !wantTls) {
    problems.push(`the dialect closed (${obs.final.reason}); the server kept the connection open`);
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
      : 'in TLS';
}

export function replay(
  dialect: Dialect<unknown>,
  t: Transcript,
  userOptions: Record<string, unknown> = {},
): { problems: string[]; mismatch?: Mismatch; observation: Observation } {
  const obs = observe(dialect, contextFor(dialect, userOptions, t), inputsOf(t));
  return { ...judge(t, obs), observation: obs };
}
