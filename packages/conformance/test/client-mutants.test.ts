// Would the client suite catch the mistakes client state machines make? Each built-in dialect's
// real client, changed one way (every session of the run), must FAIL `run --role client` (the
// sans-I/O replay and the properties; the engine replay is left out for speed) against its
// recorded transcripts, while the unchanged client passes (client-conformance.test.ts).
import { fileURLToPath } from 'node:url';
import type {
  ClientAction,
  ClientContext,
  ClientDialect,
  ClientDialectSession,
  Dialect,
} from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { runClientConformance } from '../src/client-runner.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const BUILT_IN = ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade'];
const isOutcome = (a: ClientAction) =>
  a.type === 'starttls' || a.type === 'close' || a.type === 'plaintext';

/** A session changed by `change`, which sees each call's actions and the call's kind. */
type Change = (
  acts: ClientAction[],
  call: 'start' | 'receive' | 'timer' | 'eof',
  st: { done: boolean; held: ClientAction[]; sends: number },
) => ClientAction[];

const MUTANTS: Record<string, Change> = {
  // Sends each command twice.
  'repeat-send': (acts) => acts.flatMap((a): ClientAction[] => (a.type === 'send' ? [a, a] : [a])),
  // Leaves its first command out.
  'drop-first-send': (acts, _c, st) => acts.filter((a) => !(a.type === 'send' && st.sends++ === 0)),
  // Starts TLS where it should close, and closes where it should start TLS.
  'flip-outcome': (acts) =>
    acts.map(
      (a): ClientAction =>
        a.type === 'starttls'
          ? { type: 'close', reason: 'mutant' }
          : a.type === 'close'
            ? { type: 'starttls', toLocal: new Uint8Array(), state: {} }
            : a,
    ),
  // Gives the local client one octet more.
  'leak-to-local': (acts) =>
    acts.map(
      (a): ClientAction =>
        a.type === 'starttls' || a.type === 'close' || a.type === 'plaintext'
          ? { ...a, toLocal: new Uint8Array([...(a.toLocal ?? []), 0x2a]) }
          : a,
    ),
  // Never asks for a timer.
  'no-timer': (acts) => acts.filter((a) => a.type !== 'timer'),
  // Each call's commands go out with the next call.
  'late-send': (acts, _c, st) => {
    const out = [...st.held, ...acts.filter((a) => a.type !== 'send')];
    st.held = acts.filter((a) => a.type === 'send');
    return out;
  },
  // Keeps talking after its outcome.
  'act-after-outcome': (acts, _c, st) => {
    if (st.done) return [{ type: 'send', data: new Uint8Array([0x0a]) }, ...acts];
    if (acts.some(isOutcome)) st.done = true;
    return acts;
  },
  // Does not close when the server hangs up.
  'ignore-eof': (acts, call) => (call === 'eof' ? [] : acts),
};

function mutate(inner: ClientDialect<unknown>, change: Change): ClientDialect<unknown> {
  return {
    ...inner,
    create(context: ClientContext<unknown>): ClientDialectSession {
      const s = inner.create(context);
      const st = { done: false, held: [] as ClientAction[], sends: 0 };
      return {
        start: (now) => change(s.start(now), 'start', st),
        receive: (data, now) => change(s.receive(data, now), 'receive', st),
        timer: (now) => change(s.timer(now), 'timer', st),
        eof: (now) => change(s.eof?.(now) ?? [], 'eof', st),
      };
    },
  };
}

describe('client mutants: the suite fails each', () => {
  for (const name of BUILT_IN) {
    it(`${name}: every mutant of its client is caught`, async () => {
      const { dialect } = (await import(`@tlsproxy/dialect-${name}`)) as {
        dialect: Dialect<unknown>;
      };
      const survived: string[] = [];
      for (const [cls, change] of Object.entries(MUTANTS)) {
        const report = await runClientConformance({
          dialect: { ...dialect, client: mutate(dialect.client!, change) },
          transcriptDir: `${repo}fixtures/client-transcripts/${name}`,
          seconds: 0.5,
          seed: 5,
          engine: false,
          cwd: repo,
        });
        if (report.ok) survived.push(cls);
      }
      expect(survived).toEqual([]);
    }, 120_000);
  }
});
