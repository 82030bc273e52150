// The mutation self-check (issue 17, item 3): does the runner catch real mistakes?
//
// Take a real dialect and one transcript it passes. Wrap the dialect's session so that one
// output action — the k-th send, close or starttls of that session — is changed the way a buggy
// dialect would change it (advertise AUTH before TLS, accept a login, answer with the wrong
// status, send one reply too many, give the go-ahead where the server refused, never close,
// echo pipelined bytes ...), replay that transcript against the mutant with the runner's
// sans-I/O judge, and count it killed when the runner fails it. Every class, every k, every
// transcript: a mutant that changes nothing there (no k-th action, or nothing of its kind to
// change) is not applicable and not counted. Each transcript must catch the mistakes made in
// its own conversation, so a survivor names the transcript (and the check) that let it through.
//
// Everything here is sans-I/O and deterministic: the same dialect and transcripts give the same
// mutants and the same kill rate.
import type { Action, Dialect, DialectSession } from '@tlsproxy/dialect-kit';
import { fromLatin1, latin1 } from './bytes.js';
import { contextFor, inputsOf, judge, observe } from './replay.js';
import { REPLY_RULES, type ReplyRules } from './replies.js';
import type { Transcript } from './transcript.js';

/** What a mutant class may see when it changes one action. */
export interface MutationSite {
  dialect: string;
  rules: ReplyRules | undefined;
  /** The client bytes of the receive() call being answered (empty for start). */
  input: string;
}

/** How a session continues after a mutation: as the real one, or swallowing everything. */
export type Aftermath = 'continue' | 'silent';

export interface MutantClass {
  name: string;
  description: string;
  /**
   * The replacement for one output action (send, close, starttls), or undefined when the class
   * has nothing to change there. `silent`: from now on the session answers nothing (a dialect
   * that never closes), and the client's eof ends the connection.
   */
  apply(a: Action, site: MutationSite): { actions: Action[]; after?: Aftermath } | undefined;
}

const dataOf = (a: Action): string | undefined =>
  a.type === 'send' ? latin1(a.data) : a.type === 'close' && a.data ? latin1(a.data) : undefined;
/** The same action with other bytes. */
function withData(a: Action, data: string): Action {
  if (a.type === 'close') return { ...a, data: fromLatin1(data) };
  return { type: 'send', data: fromLatin1(data) };
}
/** A text rewrite of a send or close action: undefined when it changes nothing. */
function rewrite(a: Action, f: (s: string) => string): { actions: Action[] } | undefined {
  const d = dataOf(a);
  if (d === undefined) return undefined;
  const changed = f(d);
  return changed === d ? undefined : { actions: [withData(a, changed)] };
}

// ---- per-dialect rewrites (a Map keyed by dialect name; absent: not applicable)

type Rewrites = Map<string, (s: string, input: string) => string>;

const ADVERTISE_AUTH: Rewrites = new Map([
  [
    'nntp',
    (s) =>
      s.startsWith('101') ? s.replace(/\r\nSTARTTLS\r\n/, '\r\nSTARTTLS\r\nAUTHINFO USER\r\n') : s,
  ],
  [
    'imap',
    (s) =>
      /CAPABILITY/i.test(s)
        ? / LOGINDISABLED/.test(s)
          ? s.replace(/ LOGINDISABLED/g, ' AUTH=PLAIN')
          : s.replace(/CAPABILITY /g, 'CAPABILITY AUTH=PLAIN ')
        : s,
  ],
  [
    'pop3',
    (s) =>
      /^\+OK/.test(s) && /\r\n\.\r\n$/.test(s) && /\r\nSTLS\r\n/.test(s)
        ? s.replace(/\r\nSTLS\r\n/, '\r\nSTLS\r\nSASL PLAIN\r\n')
        : s,
  ],
  [
    'smtp',
    (s) => s.replace(/^250([- ])STARTTLS\r\n/m, '250-AUTH PLAIN LOGIN\r\n250$1STARTTLS\r\n'),
  ],
  [
    'xmpp',
    (s) =>
      s.replace(
        '</stream:features>',
        "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
      ),
  ],
  [
    'http-upgrade',
    (s) =>
      s.replace(/^(HTTP\/[0-9.]+ [0-9]{3}[^\r\n]*\r\n)/, '$1WWW-Authenticate: Basic realm="x"\r\n'),
  ],
]);

const ADVERTISE_USER: Rewrites = new Map([
  [
    'pop3',
    (s) =>
      /^\+OK/.test(s) && /\r\n\.\r\n$/.test(s) && /\r\nSTLS\r\n/.test(s)
        ? s.replace(/\r\nSTLS\r\n/, '\r\nSTLS\r\nUSER\r\n')
        : s,
  ],
  ['imap', (s) => (/CAPABILITY/i.test(s) ? s.replace(/ LOGINDISABLED/g, '') : s)],
]);

/** Authenticated or offered from the greeting on: IMAP PREAUTH, a POP3 APOP timestamp. */
const GREET_AUTH: Rewrites = new Map([
  ['imap', (s) => s.replace(/^\* OK /, '* PREAUTH ')],
  ['pop3', (s) => s.replace(/^(\+OK [^\r\n]*)\r\n$/, '$1 <1896.697170952@mail.example.test>\r\n')],
]);

/** STARTTLS left out of what the server offers. */
const HIDE_STARTTLS = new Map<string, (s: string) => string>([
  ['imap', (s) => (/CAPABILITY/i.test(s) ? s.replace(/ STARTTLS\b/g, '') : s)],
  [
    'pop3',
    (s) => (/^\+OK/.test(s) && /\r\n\.\r\n$/.test(s) ? s.replace(/\r\nSTLS\r\n/, '\r\n') : s),
  ],
  [
    'smtp',
    (s) =>
      s
        .replace(/^250-STARTTLS\r\n/m, '')
        .replace(
          /^(250-[^\r\n]*\r\n)250 STARTTLS\r\n/m,
          (_m, prev: string) => `250 ${prev.slice(4)}`,
        ),
  ],
  [
    'xmpp',
    (s) =>
      s.replace(
        /<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>(<required\/>)?<\/starttls>|<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'\/>/,
        '',
      ),
  ],
]);

/** BER: the k-th LDAPResult's resultCode in a response PDU, as [offset] of its value byte. */
function ldapResultOffsets(s: string, rules: ReplyRules | undefined): number[] {
  if (!rules) return [];
  const out: number[] = [];
  for (const r of rules.replies(s)) {
    if (!/ result [0-9]+$/.test(r.cls)) continue;
    // 0x0a 0x01 CODE is the first ENUMERATED after the op header.
    const at = s.indexOf('\x0a\x01', r.start + 4);
    if (at >= 0 && at + 2 < r.end) out.push(at + 2);
  }
  return out;
}
const setByte = (s: string, at: number, v: number): string =>
  s.slice(0, at) + String.fromCharCode(v) + s.slice(at + 1);

const ACCEPT_AUTH: Map<string, (s: string, input: string, rules?: ReplyRules) => string> = new Map<
  string,
  (s: string, input: string, rules?: ReplyRules) => string
>([
  [
    'nntp',
    (s, input) =>
      /^AUTHINFO\b/im.test(input)
        ? s.replace(/^[45][0-9][0-9] [^\r\n]*/, '281 Authentication accepted')
        : s,
  ],
  [
    'imap',
    (s, input) =>
      /^\S+ (LOGIN|AUTHENTICATE)\b/im.test(input)
        ? s.replace(/^([^*+\s]\S*) (NO|BAD) [^\r\n]*/m, '$1 OK Logged in.')
        : s,
  ],
  [
    'pop3',
    (s, input) =>
      /^(USER|PASS|APOP|AUTH)\b/im.test(input) ? s.replace(/^-ERR[^\r\n]*/, '+OK Logged in.') : s,
  ],
  [
    'smtp',
    (s, input) =>
      /^AUTH\b/im.test(input)
        ? s.replace(/^5[0-9][0-9][ -][^\r\n]*/, '235 2.7.0 Authentication successful')
        : s,
  ],
  [
    'xmpp',
    (s, input) =>
      /<auth[\s>]/.test(input)
        ? s.replace(
            /<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>.*?<\/failure>|<stream:error>.*?<\/stream:error>/,
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
          )
        : s,
  ],
  [
    'ldap',
    (s, _input, rules) => {
      for (const r of rules?.replies(s) ?? []) {
        if (!/bindResponse result [1-9]/.test(r.cls)) continue;
        const at = ldapResultOffsets(s.slice(r.start, r.end), rules)[0];
        if (at !== undefined) return setByte(s, r.start + at, 0);
      }
      return s;
    },
  ],
]);

const WRONG_CLASS: Map<string, (s: string, rules?: ReplyRules) => string> = new Map<
  string,
  (s: string, rules?: ReplyRules) => string
>([
  [
    'nntp',
    (s) => {
      const to = new Map([
        ['1', '5'],
        ['2', '5'],
        ['3', '5'],
        ['4', '2'],
        ['5', '2'],
      ]).get(s[0] ?? '');
      return to && /^[0-9]{3}/.test(s) ? to + s.slice(1) : s;
    },
  ],
  [
    'imap',
    (s) => {
      const m = /^(\S+) (OK|NO|BAD|BYE)\b/m.exec(s);
      if (!m) return s;
      const flip = new Map([
        ['OK', m[1] === '*' ? 'BYE' : 'NO'],
        ['NO', 'OK'],
        ['BAD', 'OK'],
        ['BYE', 'OK'],
      ]).get(m[2]!)!;
      return `${s.slice(0, m.index)}${m[1]} ${flip}${s.slice(m.index + m[0].length)}`;
    },
  ],
  [
    'pop3',
    (s) =>
      s.startsWith('+OK') ? `-ERR${s.slice(3)}` : s.startsWith('-ERR') ? `+OK${s.slice(4)}` : s,
  ],
  [
    'smtp',
    (s) => {
      const m = /^([0-9])([0-9]{2})/.exec(s);
      if (!m) return s;
      const to = new Map([
        ['2', '5'],
        ['3', '5'],
        ['4', '2'],
        ['5', '2'],
      ]).get(m[1]!);
      if (!to) return s;
      // Every line of the first reply keeps one code.
      const code = m[0];
      let out = '';
      let rest = s;
      while (rest.startsWith(code)) {
        const lf = rest.indexOf('\n');
        const line = lf < 0 ? rest : rest.slice(0, lf + 1);
        out += to + line.slice(1);
        rest = rest.slice(line.length);
        if (line[3] !== '-') break;
      }
      return out + rest;
    },
  ],
  [
    'ldap',
    (s, rules) => {
      const at = ldapResultOffsets(s, rules)[0];
      if (at === undefined) return s;
      return setByte(s, at, s.charCodeAt(at) === 0 ? 53 : 0);
    },
  ],
  [
    'xmpp',
    (s) => {
      if (s.includes('<proceed ')) return s.replace('<proceed ', '<failure ');
      const cond = /<(stream:error|failure[^>]*)><([a-z-]+)/.exec(s);
      if (cond) {
        const other = cond[2] === 'not-authorized' ? 'undefined-condition' : 'not-authorized';
        return s.replace(`<${cond[1]}><${cond[2]}`, `<${cond[1]}><${other}`);
      }
      const stanza = /<(iq|message|presence)([^>]*) type='error'/.exec(s);
      if (stanza) return s.replace(stanza[0], `<${stanza[1]}${stanza[2]} type='result'`);
      return s;
    },
  ],
  [
    'http-upgrade',
    (s) =>
      s.replace(/^(HTTP\/[0-9.]+ )([0-9]{3}) [^\r\n]*/, (_all, v: string, code: string) =>
        code === '200' ? `${v}400 Bad Request` : `${v}200 OK`,
      ),
  ],
]);

/** Text protocols whose "one more line" is a line; the others repeat their last reply unit. */
const LINE_PROTOCOLS = new Set(['imap', 'pop3', 'smtp', 'nntp']);

function lastUnit(s: string, site: MutationSite): string | undefined {
  if (LINE_PROTOCOLS.has(site.dialect)) {
    const body = s.endsWith('\n') ? s.slice(0, -1) : s;
    const lf = body.lastIndexOf('\n');
    return s.slice(lf + 1) || undefined;
  }
  const r = site.rules?.replies(s).at(-1);
  return r ? s.slice(r.start, r.end) : s || undefined;
}

const isRefusal = (s: string, site: MutationSite): boolean => {
  const r = site.rules?.replies(s);
  return !!r && r.length > 0 && site.rules!.refusal(r[0]!.cls);
};

export const MUTANT_CLASSES: readonly MutantClass[] = [
  {
    name: 'advertise-auth',
    description: 'advertises an authentication mechanism before TLS (AUTH=, SASL, mechanisms)',
    apply: (a, site) => {
      const f = ADVERTISE_AUTH.get(site.dialect);
      return f && a.type === 'send' ? rewrite(a, (s) => f(s, site.input)) : undefined;
    },
  },
  {
    name: 'offer-login',
    description: 'offers plaintext login before TLS (IMAP LOGIN without LOGINDISABLED, POP3 USER)',
    apply: (a, site) => {
      const f = ADVERTISE_USER.get(site.dialect);
      return f && a.type === 'send' ? rewrite(a, (s) => f(s, site.input)) : undefined;
    },
  },
  {
    name: 'greet-authenticated',
    description: 'greets with IMAP PREAUTH or a POP3 APOP timestamp before TLS',
    apply: (a, site) => {
      const f = GREET_AUTH.get(site.dialect);
      return f && a.type === 'send' && site.input === ''
        ? rewrite(a, (s) => f(s, site.input))
        : undefined;
    },
  },
  {
    name: 'accept-auth',
    description: 'accepts an authentication command before TLS',
    apply: (a, site) => {
      const f = ACCEPT_AUTH.get(site.dialect);
      return f ? rewrite(a, (s) => f(s, site.input, site.rules)) : undefined;
    },
  },
  {
    name: 'wrong-class',
    description:
      'answers with the wrong reply class (OK/NO, +OK/-ERR, 2xx/5xx, result code, condition, status)',
    apply: (a, site) => {
      const f = WRONG_CLASS.get(site.dialect);
      return f ? rewrite(a, (s) => f(s, site.rules)) : undefined;
    },
  },
  {
    name: 'extra-reply',
    description: 'sends its reply twice (an extra PDU / reply)',
    apply: (a) => {
      if (a.type === 'starttls') return { actions: [a, { type: 'send', data: a.goAhead }] }; // a reply after the go-ahead
      return rewrite(a, (s) => s + s);
    },
  },
  {
    name: 'extra-line',
    description: 'sends one line (or PDU, element, response) more than the reply has',
    apply: (a, site) =>
      rewrite(a, (s) => {
        const u = lastUnit(s, site);
        return u ? s + u : s;
      }),
  },
  {
    name: 'drop-reply',
    description: 'does not send a reply',
    apply: (a) => (a.type === 'send' && a.data.length > 0 ? { actions: [] } : undefined),
  },
  {
    name: 'goahead-on-refusal',
    description: 'starts TLS where it refuses (the refusal becomes a go-ahead)',
    apply: (a, site) => {
      const d = a.type === 'send' ? latin1(a.data) : undefined;
      if (d === undefined || !isRefusal(d, site)) return undefined;
      const bytes = fromLatin1(d);
      return {
        actions: [
          {
            type: 'starttls',
            goAhead: bytes,
            unavailable: bytes,
            state: {},
            trailing: new Uint8Array(),
          },
        ],
        after: 'silent',
      };
    },
  },
  {
    name: 'unavailable-is-goahead',
    description: 'answers "no backend can take the connection" with the go-ahead',
    apply: (a) =>
      a.type === 'starttls' ? { actions: [{ ...a, unavailable: a.goAhead }] } : undefined,
  },
  {
    name: 'plaintext-instead-of-tls',
    description: 'hands the connection over in plaintext where it should start TLS',
    apply: (a) =>
      a.type === 'starttls'
        ? {
            actions: [
              { type: 'send', data: a.goAhead },
              {
                type: 'plaintext',
                buffered: a.trailing,
                state: a.state,
                unavailable: a.unavailable,
              },
            ],
            after: 'silent',
          }
        : undefined,
  },
  {
    name: 'hide-starttls',
    description:
      'leaves STARTTLS out of what it offers (capabilities, EHLO, CAPA, stream features)',
    apply: (a, site) => {
      const f = HIDE_STARTTLS.get(site.dialect);
      return f && a.type === 'send' ? rewrite(a, f) : undefined;
    },
  },
  {
    name: 'never-close',
    description: 'never closes (writes its last words, then waits for the client to close)',
    apply: (a) =>
      a.type === 'close'
        ? { actions: a.data?.length ? [{ type: 'send', data: a.data }] : [], after: 'silent' }
        : undefined,
  },
  {
    name: 'close-early',
    description: 'closes the connection after a reply that should leave it open',
    apply: (a) =>
      a.type === 'send' && a.data.length > 0
        ? { actions: [{ type: 'close', data: a.data, reason: 'mutant' }], after: 'silent' }
        : undefined,
  },
  {
    name: 'echo-pipelined',
    description: 'answers bytes pipelined after STARTTLS (echoes them after the go-ahead)',
    apply: (a) =>
      a.type === 'starttls' && a.trailing.length > 0
        ? { actions: [a, { type: 'send', data: a.trailing }] }
        : undefined,
  },
  {
    name: 'echo-input',
    description: 'echoes the client bytes it is answering into its reply',
    apply: (a, site) =>
      site.input.length > 0 && a.type === 'send' ? rewrite(a, (s) => s + site.input) : undefined,
  },
];

const isOutput = (a: Action): boolean =>
  a?.type === 'send' || a?.type === 'close' || a?.type === 'starttls';

/** The real dialect with its sessions' `point`-th output action changed by `cls`. */
export function mutantDialect(
  dialect: Dialect<unknown>,
  cls: MutantClass,
  point: number,
): { dialect: Dialect<unknown>; applied: () => number } {
  let applied = 0;
  const rules = REPLY_RULES.get(dialect.name);
  const mutant: Dialect<unknown> = {
    ...dialect,
    create(context) {
      const inner = dialect.create(context);
      let n = 0;
      let silent = false;
      let input = '';
      const wrap = (actions: Action[]): Action[] => {
        if (silent || !Array.isArray(actions)) return silent ? [] : actions;
        const out: Action[] = [];
        for (const a of actions) {
          if (silent) break;
          if (!isOutput(a)) {
            out.push(a);
            continue;
          }
          const here = n++;
          const r =
            here === point ? cls.apply(a, { dialect: dialect.name, rules, input }) : undefined;
          if (!r) {
            out.push(a);
            continue;
          }
          applied++;
          out.push(...r.actions);
          if (r.after === 'silent') silent = true;
        }
        return out;
      };
      const session: DialectSession = {
        start: (now) => wrap(inner.start(now)),
        receive: (data, now) => {
          input = latin1(data);
          return wrap(inner.receive(data, now));
        },
        timer: (now) => wrap(inner.timer(now)),
        tlsUnavailable: (now) => wrap(inner.tlsUnavailable(now)),
        eof: (now) => {
          if (silent) return [{ type: 'close', reason: 'client closed' }];
          input = '';
          return wrap(inner.eof?.(now) ?? [{ type: 'close', reason: 'client closed' }]);
        },
      };
      if (inner.overflow) session.overflow = (now) => inner.overflow!(now);
      if (inner.expired) session.expired = (now) => inner.expired!(now);
      return session;
    },
  };
  return { dialect: mutant, applied: () => applied };
}

export interface MutantResult {
  cls: string;
  /** The transcript whose session is mutated, and the index of the output action changed. */
  transcript: string;
  point: number;
  /** Whether the class had anything to change there (no: not counted). */
  applicable: boolean;
  killed: boolean;
  /** The runner's first problem with the mutant. */
  problem?: string;
}

export interface MutationReport {
  dialect: string;
  transcripts: number;
  /** Transcripts the real dialect fails or diverges on: no mutants are judged on them. */
  excluded: string[];
  mutants: MutantResult[];
  applicable: number;
  killed: number;
  /** killed / applicable (1 when nothing was applicable). */
  rate: number;
}

export interface MutationOptions {
  /** At most this many output actions per transcript are mutated, spread evenly (default 16). */
  maxPoints?: number;
  classes?: readonly MutantClass[];
  /** Judge with the strict checks (default); false shows what the byte pattern alone catches. */
  strict?: boolean;
}

/**
 * For each transcript the real dialect passes, each mutant class and each output action of
 * that transcript's session (at most `maxPoints`, chosen evenly and deterministically): change
 * that one action, replay that transcript, and see whether the runner fails it. A mutant that
 * changed nothing is not applicable and not counted.
 */
export function mutationCheck(
  dialect: Dialect<unknown>,
  transcripts: readonly Transcript[],
  userOptions: Record<string, unknown> = {},
  { maxPoints = 16, classes = MUTANT_CLASSES, strict = true }: MutationOptions = {},
): MutationReport {
  const run = (d: Dialect<unknown>, t: Transcript) =>
    observe(d, contextFor(d, userOptions, t), inputsOf(t));
  const excluded: string[] = [];
  const mutants: MutantResult[] = [];
  for (const t of transcripts) {
    const base = run(dialect, t);
    if (t.headers.divergence || judge(t, base, dialect.name, { strict }).problems.length > 0) {
      excluded.push(t.name);
      continue;
    }
    const points = spread(base.actions.filter(isOutput).length, maxPoints);
    for (const cls of classes) {
      for (const point of points) {
        const m = mutantDialect(dialect, cls, point);
        const problems = judge(t, run(m.dialect, t), dialect.name, { strict }).problems;
        const result: MutantResult = {
          cls: cls.name,
          transcript: t.name,
          point,
          applicable: m.applied() > 0,
          killed: m.applied() > 0 && problems.length > 0,
        };
        if (result.killed) result.problem = problems[0]!.split('\n')[0]!;
        mutants.push(result);
      }
    }
  }
  const applicable = mutants.filter((m) => m.applicable).length;
  const killed = mutants.filter((m) => m.killed).length;
  return {
    dialect: dialect.name,
    transcripts: transcripts.length,
    excluded,
    mutants,
    applicable,
    killed,
    rate: applicable === 0 ? 1 : killed / applicable,
  };
}

/** `n` points 0..n-1, or `max` of them spread evenly (always the first and the last). */
function spread(n: number, max: number): number[] {
  if (n <= max) return Array.from({ length: n }, (_, i) => i);
  const out = new Set<number>();
  for (let i = 0; i < max; i++) out.add(Math.round((i * (n - 1)) / (max - 1)));
  return [...out];
}

export function formatMutationReport(r: MutationReport): string {
  const lines = [
    `mutation check: dialect ${r.dialect}, ${r.transcripts} transcripts` +
      (r.excluded.length > 0
        ? ` (${r.excluded.length} not used: the real dialect fails or diverges on ${r.excluded.join(', ')})`
        : ''),
  ];
  const byClass = new Map<string, MutantResult[]>();
  for (const m of r.mutants) byClass.set(m.cls, [...(byClass.get(m.cls) ?? []), m]);
  for (const [cls, ms] of byClass) {
    const app = ms.filter((m) => m.applicable);
    const k = app.filter((m) => m.killed).length;
    lines.push(
      `  ${cls.padEnd(24)} ${String(k).padStart(4)} of ${String(app.length).padEnd(4)} killed`,
    );
    for (const m of app.filter((x) => !x.killed))
      lines.push(`      survived: ${m.transcript}, output action ${m.point + 1}`);
  }
  lines.push(
    `  kill rate ${(r.rate * 100).toFixed(1)} % (${r.killed} of ${r.applicable} applicable mutants)`,
  );
  return lines.join('\n');
}
