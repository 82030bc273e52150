// Sans-I/O replay of a client transcript against a dialect's client side (issue 18): the real
// server's reads go to receive() as recorded (its end to eof()), and what the session writes to
// the server, when it writes it, how it ends and what it gives the local client are judged.
//
// Strict, like the server side (README "Client transcripts"):
// - every octet sent to the server (`send` data and a close's `data`) matches the `C:` lines,
//   nothing more, nothing less;
// - each `C:` block is sent in the very call that delivers the server's last octet before it
//   (or by start() when the server has said nothing yet, or by eof() after `!close`): not
//   earlier (STARTTLS before the capabilities came is the "did not check it is offered" bug),
//   not later (a client that waits for bytes the server only sends after our command hangs);
// - the outcome is the transcript's (`!tls` starttls, `!eof` close, `!plaintext`, none), in
//   the call that delivered its last server octet, so who closed is judged too: after `!close`
//   the session closes in eof(), before it on the server's bytes;
// - `toLocal` matches the `L:` lines (none: must be empty), `!state` the starttls state;
// - nothing but log lines after the outcome, no throw, every action well formed.
import { isDeepStrictEqual } from 'node:util';
import {
  type ClientAction,
  type ClientContext,
  type ClientDialect,
  type Dialect,
  resolveLimits,
  resolveOptions,
} from '@tlsproxy/dialect-kit';
import { type ClientOutcome, checkClientActions } from '@tlsproxy/dialect-kit/testing';
import { concat, escapeBytes } from './bytes.js';
import { type ClientTranscript, expectedOutcome } from './client-transcript.js';
import { formatMismatch, type Mismatch, matchOutput, matchSpans } from './pattern.js';
import type { Segment } from './transcript.js';

export type ClientInput = { type: 'data'; bytes: Uint8Array } | { type: 'eof' };

/** The position of the server's end: after every octet. */
export const EOF_POSITION = Number.MAX_SAFE_INTEGER;
/** The `now` every call gets: timers are not part of a transcript. */
export const CLIENT_START = 1_000_000;

export interface ClientCall {
  kind: 'start' | 'receive' | 'eof';
  /** Server octets delivered by this call: [from, to). start: [0, 0); eof: EOF_POSITION. */
  from: number;
  to: number;
  actions: ClientAction[];
}

export interface ClientObservation {
  calls: ClientCall[];
  /** Octets written to the server up to the outcome, and the call that wrote each piece. */
  sent: Uint8Array;
  pieces: { call: number; start: number; end: number }[];
  outcome?: { action: ClientOutcome; call: number };
  /** Actions other than log lines after the outcome (the engine no longer listens). */
  late: ClientAction[];
  threw?: string;
  malformed?: string;
}

/** Does this call deliver the server's octet just before position `t`? */
export function covers(c: ClientCall, t: number): boolean {
  if (c.kind === 'start') return t === 0;
  if (c.kind === 'eof') return t === EOF_POSITION;
  return c.from < t && t <= c.to;
}

/** A dialect with a client side: what the client replay, properties and run take. */
export type ClientSide = Pick<Dialect<unknown>, 'name'> &
  Required<Pick<Dialect<unknown>, 'client'>>;

/** The client context a transcript was recorded with: its names, options and limits. */
export function clientContextFor(
  dialect: ClientSide,
  userOptions: Record<string, unknown>,
  t: Pick<ClientTranscript, 'options' | 'limits' | 'hostname' | 'serverName'>,
): ClientContext<unknown> {
  const client = dialect.client as ClientDialect<unknown>;
  const side = { name: `${dialect.name} client`, options: client.options, limits: client.limits };
  const known = (o: Record<string, unknown>, spec: Record<string, unknown>) =>
    Object.fromEntries(Object.entries(o).filter(([k]) => Object.hasOwn(spec, k)));
  return {
    options: resolveOptions(side as unknown as Dialect<unknown>, {
      ...known(userOptions, client.options),
      ...known(t.options, client.options),
    }),
    limits: resolveLimits(side, known(t.limits, client.limits)),
    hostname: t.hostname,
    serverName: t.serverName,
    connectionId: 'conformance',
  };
}

const isOutcome = (a: ClientAction): a is ClientOutcome =>
  a.type === 'starttls' || a.type === 'close' || a.type === 'plaintext';

/** Run one client session over `inputs` (every one fed, even after the outcome). */
export function observeClient(
  dialect: ClientSide,
  context: ClientContext<unknown>,
  inputs: readonly ClientInput[],
  opts: { allowPlaintext?: boolean } = {},
): ClientObservation {
  const obs: ClientObservation = { calls: [], sent: new Uint8Array(), pieces: [], late: [] };
  const sent: Uint8Array[] = [];
  let offset = 0;
  const all: ClientAction[] = [];
  const take = (call: ClientCall): void => {
    const index = obs.calls.length;
    obs.calls.push(call);
    for (const a of call.actions) {
      all.push(a);
      if (obs.outcome) {
        if (a?.type !== 'log') obs.late.push(a);
        continue;
      }
      const data = a?.type === 'send' ? a.data : a?.type === 'close' ? a.data : undefined;
      if (data instanceof Uint8Array && data.length > 0) {
        const start = sent.reduce((n, b) => n + b.length, 0);
        sent.push(data);
        obs.pieces.push({ call: index, start, end: start + data.length });
      }
      if (isOutcome(a)) obs.outcome = { action: a, call: index };
    }
  };
  try {
    const session = (dialect.client as ClientDialect<unknown>).create(context);
    take({ kind: 'start', from: 0, to: 0, actions: session.start(CLIENT_START) });
    for (const input of inputs) {
      if (input.type === 'eof') {
        take({
          kind: 'eof',
          from: EOF_POSITION,
          to: EOF_POSITION,
          actions: session.eof?.(CLIENT_START) ?? [],
        });
        continue;
      }
      const from = offset;
      offset += input.bytes.length;
      // A copy: a session that keeps a view of its input must not see it change.
      take({
        kind: 'receive',
        from,
        to: offset,
        actions: session.receive(input.bytes.slice(), CLIENT_START),
      });
    }
  } catch (err) {
    obs.threw = err instanceof Error ? (err.stack ?? err.message) : String(err);
  }
  obs.sent = concat(sent);
  try {
    checkClientActions(all, opts);
  } catch (err) {
    obs.malformed = (err as Error).message;
  }
  return obs;
}

/** The transcript's server reads as recorded, and its end where the server closed. */
export function clientInputs(t: ClientTranscript): ClientInput[] {
  return t.steps.flatMap((s): ClientInput[] =>
    s.type === 'server'
      ? [{ type: 'data', bytes: s.bytes }]
      : s.type === 'close'
        ? [{ type: 'eof' }]
        : [],
  );
}

/** Each C: block (its segments) and the outcome, with the position that triggers it. */
export interface ClientPlan {
  blocks: { segments: Segment[]; line: number; at: number }[];
  /**
   * The outcome and where: a starttls at `at` exactly (the go-ahead's last octet ends its read);
   * a close or plaintext anywhere in the server read that ends at `at` — from octet `from` —
   * since the client may decide on a complete reply before the rest of that read (a body).
   */
  outcome: { type: ReturnType<typeof expectedOutcome>; at: number; from: number; line: number };
  /** Every server octet. */
  total: number;
}

export function clientPlan(t: ClientTranscript): ClientPlan {
  let offset = 0;
  let ended = false;
  const blocks: ClientPlan['blocks'] = [];
  let outcome: ClientPlan['outcome'] | undefined;
  const at = () => (ended ? EOF_POSITION : offset);
  let readStart = 0;
  for (const s of t.steps) {
    if (s.type === 'server') {
      readStart = offset;
      offset += s.bytes.length;
    } else if (s.type === 'close') ended = true;
    else if (s.type === 'client') blocks.push({ segments: s.segments, line: s.line, at: at() });
    else if (!outcome) {
      const type = expectedOutcome(t);
      const exact = type === 'starttls' || ended || t.injectedAt !== null;
      outcome = { type, at: at(), from: exact ? at() : readStart + 1, line: s.line };
    }
  }
  // Forged bytes after the go-ahead (!injected): the client knows once the read that ends the
  // go-ahead also brings the first of them, so that read is the one to close in.
  if (outcome && t.injectedAt !== null && outcome.at !== EOF_POSITION)
    outcome.at = t.injectedAt + 1;
  return {
    blocks,
    outcome: outcome ?? { type: 'open', at: EOF_POSITION, from: EOF_POSITION, line: 0 },
    total: offset,
  };
}

/** matchOutput speaks of a dialect and a server (the server side's roles): say it for a client. */
function clientWords(m: Mismatch, what: 'C:' | 'L:'): Mismatch {
  const reason = m.reason
    .replace('the dialect sent more than the server did', `more than the ${what} lines`)
    .replace('the dialect sent less than the server did', `less than the ${what} lines`);
  return { ...m, reason };
}

const where = (at: number): string =>
  at === EOF_POSITION ? "the server's end (!close)" : at === 0 ? 'start()' : `server octet ${at}`;

function callName(c: ClientCall): string {
  if (c.kind === 'start') return 'start()';
  if (c.kind === 'eof') return 'eof()';
  return `receive() of server octets ${c.from}..${c.to}`;
}

/** Judge an observation against the transcript; the problems, none when it conforms. */
export function judgeClient(t: ClientTranscript, obs: ClientObservation): string[] {
  const problems: string[] = [];
  if (obs.threw) problems.push(`threw: ${obs.threw.split('\n')[0]}`);
  if (obs.malformed) problems.push(`malformed actions: ${obs.malformed}`);
  const plan = clientPlan(t);
  const segments = plan.blocks.flatMap((b) => b.segments);
  // 1. Every octet to the server.
  const mismatch = matchOutput(segments, obs.sent);
  if (mismatch)
    problems.push(
      `what the client sent to the server differs:\n${formatMismatch(clientWords(mismatch, 'C:'))}`,
    );
  else {
    // 2. When each block was sent: in the call that delivered the server octet before it.
    const spans = matchSpans(segments, obs.sent)!;
    let k = 0;
    for (const block of plan.blocks) {
      const mine = spans.slice(k, k + block.segments.length);
      k += block.segments.length;
      const start = mine[0]?.start ?? 0;
      const end = mine.at(-1)?.end ?? 0;
      if (end <= start) continue;
      const due = obs.calls.findIndex((c) => covers(c, block.at));
      for (const p of obs.pieces) {
        if (p.end <= start || p.start >= end || p.call === due) continue;
        const c = obs.calls[p.call]!;
        const early = due < 0 || p.call < due;
        problems.push(
          `C: line ${block.line} sent ${early ? 'too early' : 'too late'}: by ${callName(c)}, ` +
            `but it answers ${where(block.at)}` +
            (early ? ' (the client did not wait for what the server says first)' : ''),
        );
        break;
      }
    }
  }
  // 3. The outcome, and the call that made it (who closed).
  const want = plan.outcome.type;
  const got = obs.outcome?.action.type ?? 'open';
  if (got !== want) {
    const why =
      obs.outcome?.action.type === 'close' || obs.outcome?.action.type === 'plaintext'
        ? ` (${obs.outcome.action.reason})`
        : '';
    problems.push(
      `outcome: expected ${want === 'open' ? 'none (still open)' : want}, got ${got === 'open' ? 'none (still open)' : got}${why}`,
    );
  } else if (obs.outcome) {
    const { at, from } = plan.outcome;
    const c0 = obs.calls[obs.outcome.call]!;
    const inRead =
      c0.kind === 'receive' && from < at && c0.from < at && c0.to >= from && c0.to > c0.from;
    if (!covers(c0, at) && !inRead) {
      const c = obs.calls[obs.outcome.call]!;
      problems.push(
        `${got} came in ${callName(c)}, expected ${from < at ? `in the server read of octets ${from - 1}..${at}` : `at ${where(at)}`} (line ${plan.outcome.line})` +
          (plan.outcome.at === EOF_POSITION
            ? ': the server closed first (!close before !eof), the client must not close before'
            : c.kind === 'eof'
              ? ': the client closed only because the server did (!eof comes before !close)'
              : ''),
      );
    }
  }
  // 4. What the local client is given.
  if (obs.outcome && got === want) {
    const a = obs.outcome.action;
    const toLocal = a.type === 'close' ? (a.toLocal ?? new Uint8Array()) : a.toLocal;
    const m = matchOutput(t.local ?? [], toLocal);
    if (m) {
      problems.push(
        `toLocal (what the local client is given) differs:\n${formatMismatch(clientWords(m, 'L:'))}`,
      );
    }
    if (a.type === 'starttls') {
      for (const s of t.state) {
        const actual = s.path
          .split('.')
          .reduce<unknown>(
            (v, key) =>
              v !== null && typeof v === 'object' && Object.hasOwn(v, key)
                ? (v as Record<string, unknown>)[key]
                : undefined,
            a.state,
          );
        if (!isDeepStrictEqual(actual, s.value)) {
          problems.push(
            `!state ${s.path}: expected ${JSON.stringify(s.value)}, got ${JSON.stringify(actual)}`,
          );
        }
      }
    }
  }
  // 5. Nothing after the outcome.
  if (obs.late.length > 0) {
    problems.push(
      `acted after its outcome: ${obs.late.map((a) => (a.type === 'send' ? `send ${escapeBytes(a.data, false).slice(0, 60)}` : a.type)).join(', ')}`,
    );
  }
  return problems;
}

/** Replay a client transcript as recorded. */
export function replayClient(
  dialect: ClientSide,
  t: ClientTranscript,
  userOptions: Record<string, unknown> = {},
  inputs: readonly ClientInput[] = clientInputs(t),
): { problems: string[]; observation: ClientObservation } {
  let context: ClientContext<unknown>;
  try {
    context = clientContextFor(dialect, userOptions, t);
  } catch (err) {
    return {
      problems: [`options: ${(err as Error).message}`],
      observation: { calls: [], sent: new Uint8Array(), pieces: [], late: [] },
    };
  }
  const observation = observeClient(dialect, context, inputs, {
    allowPlaintext: expectedOutcome(t) === 'plaintext',
  });
  return { problems: judgeClient(t, observation), observation };
}
