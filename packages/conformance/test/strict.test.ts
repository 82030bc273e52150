// The strict checks of issue 17, item 3, each shown failing on a deliberately broken dialect and
// passing on a correct one: who closed, extra replies/PDUs the byte pattern let through, auth
// before TLS, reply classes, the unavailable reply, the relaxation directives, the injected clock
// and the reproduce line. (test/mutate.test.ts does the same systematically.)
import { join } from 'node:path';
import type { Action, Dialect, DialectSession } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { fromLatin1, latin1 } from '../src/bytes.js';
import { main } from '../src/cli.js';
import { engineReplay } from '../src/engine.js';
import { runProperties } from '../src/properties.js';
import { contextFor, inputsOf, observe, replay, START } from '../src/replay.js';
import { REPLY_RULES } from '../src/replies.js';
import { loadSuite, rerunCommand, runConformance } from '../src/runner.js';
import { parseTranscript, type Transcript } from '../src/transcript.js';

const repo = join(import.meta.dirname, '../../..');
const fixture = (d: string, f: string) => join(repo, 'fixtures/transcripts', d, `${f}.txt`);
const send = (s: string): Action => ({ type: 'send', data: fromLatin1(s) });
const HEAD = '@server hand-written\n@client test\n@dialect toy\n';

/** A toy line dialect: greets, answers QUIT with `bye` and closes — or, `linger`, closes only
 * when the client does (the dialect that "never closes"). `stamp` puts `now` in each reply. */
function toy({ linger = false, stamp = false } = {}): Dialect<unknown> {
  return {
    name: 'toy',
    defaultPorts: {},
    options: {},
    limits: {},
    create(): DialectSession {
      let buf = '';
      let closed = false;
      return {
        start: (now) => [
          send(stamp ? `hi ${now}\r\n` : 'hi\r\n'),
          { type: 'timer', at: now + 60_000 },
        ],
        receive(data, now) {
          if (closed) return [];
          buf += latin1(data);
          const out: Action[] = [];
          for (let lf = buf.indexOf('\n'); lf >= 0; lf = buf.indexOf('\n')) {
            const line = buf.slice(0, lf + 1);
            buf = buf.slice(lf + 1);
            if (/^QUIT\r\n$/i.test(line)) {
              closed = true;
              if (linger) return [...out, send('bye\r\n')];
              return [...out, { type: 'close', data: fromLatin1('bye\r\n'), reason: 'quit' }];
            }
            out.push(send(stamp ? `ok ${now}\r\n` : 'ok\r\n'));
          }
          return out;
        },
        timer: () => [{ type: 'close', reason: 'idle' }],
        tlsUnavailable: () => [],
        eof: () => [{ type: 'close', reason: 'client closed' }],
      };
    },
  };
}

/** The real dialect with `f` applied to the bytes of every send, close and go-ahead. */
function rewriting(
  dialect: Dialect<unknown>,
  f: (s: string, a: Action) => string,
  unavailable?: (s: string) => string,
): Dialect<unknown> {
  const map = (actions: Action[]): Action[] =>
    actions.map((a) => {
      if (a.type === 'send') return { ...a, data: fromLatin1(f(latin1(a.data), a)) };
      if (a.type === 'close' && a.data) return { ...a, data: fromLatin1(f(latin1(a.data), a)) };
      if (a.type === 'starttls' && unavailable)
        return { ...a, unavailable: fromLatin1(unavailable(latin1(a.unavailable))) };
      return a;
    });
  return {
    ...dialect,
    create(context) {
      const s = dialect.create(context);
      return {
        start: (now) => map(s.start(now)),
        receive: (d, now) => map(s.receive(d, now)),
        timer: (now) => map(s.timer(now)),
        tlsUnavailable: (now) => map(s.tlsUnavailable(now)),
        eof: (now) => map(s.eof?.(now) ?? [{ type: 'close', reason: 'client closed' }]),
      };
    },
  };
}

async function real(name: string): Promise<{ dialect: Dialect<unknown>; all: Transcript[] }> {
  const { dialect, transcripts } = await loadSuite({ dialect: name, cwd: repo });
  return { dialect, all: transcripts };
}
const load = async (d: string, f: string) =>
  (await loadSuite({ dialect: d, cwd: repo, transcripts: [fixture(d, f)] })).transcripts[0]!;

describe('who closed', () => {
  const serverCloses = parseTranscript(
    `${HEAD}S: hi\\r\\n\nC: QUIT\\r\\n\nS: bye\\r\\n\n!close\n!eof\n`,
  );
  const clientCloses = parseTranscript(
    `${HEAD}S: hi\\r\\n\nC: NOOP\\r\\n\nS: ok\\r\\n\n!eof\n!close\n`,
  );

  it('a server that closed by itself needs a dialect that closes, not one that waits for the client', () => {
    expect(replay(toy(), serverCloses).problems).toEqual([]);
    const lingering = replay(toy({ linger: true }), serverCloses).problems;
    expect(lingering.join('\n')).toMatch(/closed only because the client closed/);
  });

  it('a server that waited for the client needs a dialect that waits too', () => {
    expect(replay(toy(), clientCloses).problems).toEqual([]);
    const eager: Dialect<unknown> = {
      ...toy(),
      create: (c) => {
        const s = toy().create(c);
        return {
          ...s,
          receive: (d, now) => [...s.receive(d, now), { type: 'close', reason: 'eager' }],
        };
      },
    };
    expect(replay(eager, clientCloses).problems.join('\n')).toMatch(/the dialect closed first/);
  });

  it('through the engine too', async () => {
    const [good] = await engineReplay(toy(), [serverCloses], {}, createEngine);
    expect(good!.problems).toEqual([]);
    const [bad] = await engineReplay(toy({ linger: true }), [serverCloses], {}, createEngine);
    expect(bad!.problems.join('\n')).toMatch(/stayed open until the client closed/);
  }, 30_000);

  it('the POP3 dialect that never closes on an overlong line fails overlong-line', async () => {
    const { dialect } = await real('pop3');
    const t = await load('pop3', 'overlong-line');
    expect(replay(dialect, t).problems).toEqual([]);
    const neverCloses: Dialect<unknown> = {
      ...dialect,
      create(c) {
        const s = dialect.create(c);
        const keepOpen = (as: Action[]): Action[] =>
          as.flatMap((a): Action[] =>
            a.type === 'close' ? (a.data ? [{ type: 'send', data: a.data }] : []) : [a],
          );
        return {
          start: (now) => s.start(now),
          receive: (d, now) => keepOpen(s.receive(d, now)),
          timer: (now) => keepOpen(s.timer(now)),
          tlsUnavailable: (now) => s.tlsUnavailable(now),
          eof: () => [{ type: 'close', reason: 'client closed' }],
        };
      },
    };
    expect(replay(neverCloses, t).problems.join('\n')).toMatch(
      /closed only because the client closed/,
    );
  });
});

describe('no extra replies or PDUs', () => {
  it('an extra SMTP reply after EHLO (inside a recorded any-placeholder) fails', async () => {
    const { dialect } = await real('smtp');
    const t = await load('smtp', 'ehlo-quit');
    expect(replay(dialect, t).problems).toEqual([]);
    const extra = rewriting(dialect, (s) => (s.startsWith('250-') ? `${s}250 2.0.0 Ok\r\n` : s));
    expect(replay(extra, t).problems.join('\n')).toMatch(/reply 3: /);
  });

  it('an extra LDAP response PDU fails, in a reply and in the unavailable reply', async () => {
    const { dialect } = await real('ldap');
    const t = await load('ldap', 'bind-before-tls');
    expect(replay(dialect, t).problems).toEqual([]);
    const pdu = '\x30\x0c\x02\x01\x01\x61\x07\x0a\x01\x00\x04\x00\x04\x00'; // bindResponse success
    const inReply = rewriting(dialect, (s) => (s.charCodeAt(5) === 0x61 ? s + pdu : s));
    expect(replay(inReply, t).problems.length).toBeGreaterThan(0);
    // No backend can take the connection: the refusal gets a second PDU. The byte pattern never
    // sees this reply, so before the strict checks it passed.
    const inUnavailable = rewriting(
      dialect,
      (s) => s,
      (u) => u + u,
    );
    expect(replay(inUnavailable, t).problems.join('\n')).toMatch(
      /unavailable reply .* must refuse/,
    );
  });

  it('`!relax replies` takes a server chunk out of the reply count, on purpose', async () => {
    const { dialect } = await real('smtp');
    const t = await load('smtp', 'ehlo-quit');
    const relaxed = parseTranscript(
      (await import('node:fs'))
        .readFileSync(t.file, 'utf8')
        .replace(/(S\| \$\{any:250-ENHANCED[^\n]*\n)/, '$1!relax replies\n'),
      t.file,
    );
    const extra = rewriting(dialect, (s) => (s.startsWith('250-') ? `${s}250 2.0.0 Ok\r\n` : s));
    expect(replay(extra, relaxed).problems).toEqual([]);
    expect(() => parseTranscript(`${HEAD}S: hi\\r\\n\n!relax everything\n`)).toThrow(
      /unknown !relax everything/,
    );
    expect(() => parseTranscript(`${HEAD}C: x\n!relax replies\n`)).toThrow(
      /must follow a server chunk/,
    );
  });
});

describe('TLS or close', () => {
  it('a plaintext hand-off is neither: it fails a transcript that allows TLS or close', async () => {
    const { dialect } = await real('imap');
    const t = await load('imap', 'pipelined-after-starttls');
    expect(t.steps.some((s) => s.type === 'tls-or-close')).toBe(true);
    expect(replay(dialect, t).problems).toEqual([]);
    const plaintext: Dialect<unknown> = {
      ...dialect,
      create(c) {
        const s = dialect.create(c);
        const swap = (as: Action[]): Action[] =>
          as.flatMap((a): Action[] =>
            a.type === 'starttls'
              ? [
                  { type: 'send', data: a.goAhead },
                  {
                    type: 'plaintext',
                    buffered: a.trailing,
                    state: a.state,
                    unavailable: a.unavailable,
                  },
                ]
              : [a],
          );
        return {
          start: (now) => s.start(now),
          receive: (d, now) => swap(s.receive(d, now)),
          timer: (now) => s.timer(now),
          tlsUnavailable: (now) => s.tlsUnavailable(now),
        };
      },
    };
    // Before: taken for a close, which !tls-or-close accepts.
    expect(replay(plaintext, t).problems.join('\n')).toMatch(
      /handing the connection over in plaintext/,
    );
  });
});

describe('reply classes', () => {
  it('a status line hidden in a POP3 capability list (inside a recorded any-placeholder) fails', async () => {
    const { dialect } = await real('pop3');
    const t = await load('pop3', 'capa-stls');
    expect(replay(dialect, t).problems).toEqual([]);
    const hidden = rewriting(dialect, (s) =>
      s.replace('\r\nSTLS\r\n', '\r\n-ERR oops\r\nSTLS\r\n'),
    );
    expect(replay(hidden, t).problems.join('\n')).toMatch(/reply 2: a reply of another class/);
  });

  it('a dialect without rules (third party) is judged by its byte pattern alone', () => {
    const t = parseTranscript(`${HEAD}S: hi\\r\\n\nC: QUIT\\r\\n\nS: bye\\r\\n\n!close\n`);
    expect(replay(toy(), t).problems).toEqual([]);
  });
});

describe('no authentication before TLS', () => {
  it('AUTH in EHLO (inside a recorded any-placeholder) fails unless the transcript says !allow auth-before-tls', async () => {
    const { dialect } = await real('smtp');
    const t = await load('smtp', 'ehlo-quit');
    const auth = rewriting(dialect, (s) =>
      s.replace(/^250([- ])STARTTLS\r\n/m, '250-AUTH PLAIN LOGIN\r\n250$1STARTTLS\r\n'),
    );
    expect(replay(auth, t).problems.join('\n')).toMatch(
      /security: the dialect advertises AUTH PLAIN LOGIN in EHLO/,
    );
    expect(replay(auth, { ...t, allow: ['auth-before-tls'] }).problems).toEqual([]);
  });

  it('XMPP <mechanisms/> before TLS, and an IMAP LOGIN accepted, fail', async () => {
    const x = await real('xmpp');
    const t = await load('xmpp', 'openssl-s_client');
    const mech = rewriting(x.dialect, (s) =>
      s.replace(
        '</stream:features>',
        "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
      ),
    );
    expect(replay(mech, t).problems.join('\n')).toMatch(/offers SASL <mechanisms\/>/);
    const i = await real('imap');
    const login = await load('imap', 'login-before-tls');
    const accepts = rewriting(i.dialect, (s) => s.replace(/^a NO .*$/m, 'a OK Logged in.\r'));
    expect(replay(accepts, login).problems.join('\n')).toMatch(
      /accepts authentication before TLS \(a OK\)/,
    );
  });

  it("each protocol's other ways to authenticate before TLS are caught too", () => {
    const check = (dialect: string, server: string, client = '') => {
      const rules = REPLY_RULES.get(dialect)!;
      return rules.authBeforeTls(server, rules.replies(server), client);
    };
    // IMAP PREAUTH: the client is logged in before TLS.
    expect(check('imap', '* PREAUTH [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n')).toMatch(
      /PREAUTH/,
    );
    expect(
      check('imap', '* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] hi\r\n'),
    ).toBeUndefined();
    // POP3 APOP: a timestamp in the greeting offers APOP.
    expect(check('pop3', '+OK ready <1896.697170952@dbc.mtview.ca.us>\r\n')).toMatch(/APOP/);
    expect(check('pop3', '+OK Dovecot (Debian) ready.\r\n')).toBeUndefined();
    // SMTP: the old AUTH= form in EHLO.
    expect(check('smtp', '220 x\r\n250-x\r\n250 AUTH=LOGIN PLAIN\r\n')).toMatch(/AUTH/);
    // XMPP: legacy iq-auth (XEP-0078) offered as a stream feature.
    expect(
      check(
        'xmpp',
        "<stream:features><auth xmlns='http://jabber.org/features/iq-auth'/></stream:features>",
      ),
    ).toMatch(/iq-auth/);
    // LDAP: supportedSASLMechanisms with values in a root DSE entry.
    const attr = (name: string, values: string[]) => {
      const vals = values.map((v) => `\x04${String.fromCharCode(v.length)}${v}`).join('');
      const set = `\x31${String.fromCharCode(vals.length)}${vals}`;
      const seq = `\x04${String.fromCharCode(name.length)}${name}${set}`;
      return `\x30${String.fromCharCode(seq.length)}${seq}`;
    };
    const entry = (attrs: string) => {
      const body = `\x04\x00\x30${String.fromCharCode(attrs.length)}${attrs}`;
      const op = `\x64${String.fromCharCode(body.length)}${body}`;
      const msg = `\x02\x01\x01${op}`;
      return `\x30${String.fromCharCode(msg.length)}${msg}`;
    };
    expect(check('ldap', entry(attr('supportedSASLMechanisms', ['PLAIN'])))).toMatch(
      /supportedSASLMechanisms/,
    );
    expect(check('ldap', entry(attr('supportedSASLMechanisms', [])))).toBeUndefined();
    expect(check('ldap', entry(attr('supportedLDAPVersion', ['3'])))).toBeUndefined();
  });

  it('`!allow` takes known names only', () => {
    expect(parseTranscript(`${HEAD}!allow auth-before-tls\nS: hi\\r\\n\n`).allow).toEqual([
      'auth-before-tls',
    ]);
    expect(() => parseTranscript(`${HEAD}!allow anything\n`)).toThrow(/unknown !allow anything/);
  });
});

describe('the clock is injected', () => {
  it('replies that carry `now` are the same under any chunking', () => {
    const t = parseTranscript(
      `${HEAD}S: hi 1000000\\r\\n\nC: NOOP\\r\\nNOOP\\r\\nNOOP\\r\\n\nS: ok 1000000\\r\\nok 1000000\\r\\nok 1000000\\r\\n\n`,
    );
    expect(replay(toy({ stamp: true }), t).problems).toEqual([]);
    const [chunking] = runProperties(toy({ stamp: true }), [t], {}, { seed: 1, seconds: 1 });
    expect(chunking!.name).toBe('any chunking gives the same replies');
    expect(chunking!.problems).toEqual([]);
    expect(chunking!.ok).toBe(true);
  });

  it('the HTTP dialect answers a long request the same, one byte at a time or at once', async () => {
    // With a clock that moved 1 ms per call, 1200 one-byte reads crossed a second boundary and
    // the Date field differed from the one-read answer: the chunking property failed at random.
    const { dialect } = await real('http-upgrade');
    const t = await load('http-upgrade', 'get-upgrade-refused');
    const req = fromLatin1(
      `GET /printers/ HTTP/1.1\r\nHost: localhost\r\nX-Pad: ${'p'.repeat(1200)}\r\nConnection: Upgrade\r\nUpgrade: TLS/1.0\r\n\r\n`,
    );
    const ctx = contextFor(dialect, {}, t);
    const whole = observe(dialect, ctx, [{ type: 'data', bytes: req }]);
    const bytewise = observe(
      dialect,
      ctx,
      [...req].map((b) => ({ type: 'data' as const, bytes: Uint8Array.of(b) })),
    );
    expect(latin1(whole.output)).toContain('\r\nDate: ');
    expect(latin1(bytewise.output)).toBe(latin1(whole.output));
    // The old clock (1 ms per call) shows the difference this test guards against.
    const oldClock = (call: number) => START + call;
    const oldBytewise = observe(
      dialect,
      ctx,
      [...req].map((b) => ({ type: 'data' as const, bytes: Uint8Array.of(b) })),
      oldClock,
    );
    const oldWhole = observe(dialect, ctx, [{ type: 'data', bytes: req }], oldClock);
    expect(latin1(oldBytewise.output)).not.toBe(latin1(oldWhole.output));
  });

  it("HTTP's Date is the injected now", async () => {
    const { dialect } = await real('http-upgrade');
    const t = await load('http-upgrade', 'get-upgrade-refused');
    const at = Date.UTC(2026, 11, 4, 12, 0, 0);
    const o = observe(dialect, contextFor(dialect, {}, t), inputsOf(t), () => at);
    expect(latin1(o.output)).toContain('\r\nDate: Fri, 04 Dec 2026 12:00:00 GMT\r\n');
  });
});

describe('the reproduce line', () => {
  it('repeats every argument, with paths made absolute', () => {
    expect(
      rerunCommand(
        {
          dialect: './my dialect',
          cwd: '/work/x',
          transcripts: ['t/a.txt'],
          transcriptDir: 'ignored-when-files-given',
          options: { greeting: "it's me" },
          seconds: 2,
          engine: false,
          json: true,
        },
        'toy',
        7,
      ),
    ).toBe(
      `tlsproxy-conformance run --dialect '/work/x/my dialect' --options '{"greeting":"it'\\''s me"}' --transcripts /work/x/ignored-when-files-given --seed 7 --seconds 2 --no-engine --json /work/x/t/a.txt`,
    );
    expect(rerunCommand({ dialect: 'imap', optionsFile: 'o.json', cwd: '/w' }, 'imap', 1)).toBe(
      'tlsproxy-conformance run --dialect imap --options /w/o.json --seed 1 --seconds 5',
    );
  });

  it('names the transcript folder it found, so the line does not depend on where it is run', async () => {
    const report = await runConformance({
      dialect: 'imap',
      cwd: repo,
      seed: 3,
      seconds: 1,
      engine: false,
    });
    expect(report.rerun).toBe(
      `tlsproxy-conformance run --dialect imap --transcripts ${join(repo, 'fixtures/transcripts/imap')} --seed 3 --seconds 1 --no-engine`,
    );
  }, 30_000);

  it('the printed line reproduces the run', async () => {
    const rel = 'fixtures/transcripts/imap/capability-noop-logout.txt';
    const report = await runConformance({
      dialect: './protocols/imap',
      cwd: repo,
      transcripts: [rel],
      seed: 99,
      seconds: 1,
      engine: false,
    });
    expect(report.rerun).toBe(
      `tlsproxy-conformance run --dialect ${join(repo, 'protocols/imap')} --seed 99 --seconds 1 --no-engine ${join(repo, rel)}`,
    );
    const out: string[] = [];
    const args = report.rerun.split(' ').slice(2);
    expect(await main(['run', ...args, '--json'], (s) => out.push(s))).toBe(report.ok ? 0 : 1);
    const again = JSON.parse(out.at(-1)!);
    expect(again.seed).toBe(99);
    expect(again.results.map((r: { ok: boolean }) => r.ok)).toEqual(
      report.results.map((r) => r.ok),
    );
  }, 30_000);
});
