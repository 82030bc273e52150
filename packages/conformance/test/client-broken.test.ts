// The client suite must FAIL broken clients (issue 18 item 4): each one below has a bug real
// STARTTLS clients have had, and `run --role client` must catch it against the recorded
// transcripts (fixtures/client-transcripts/), naming what is wrong.
//   - naive IMAP: sends STARTTLS without checking that it is offered (stunnel's client mode
//     does this), and hands bytes that came after the go-ahead to the local client;
//   - IMAP with a wrong tag on its STARTTLS command;
//   - SMTP that pipelines STARTTLS with EHLO, before it knows STARTTLS is offered;
//   - POP3 that never arms a timer;
//   - LDAP that starts TLS even with bytes after the go-ahead (response injection).
import { fileURLToPath } from 'node:url';
import imap from '@tlsproxy/dialect-imap';
import type {
  ClientAction,
  ClientContext,
  ClientDialect,
  ClientDialectSession,
  Dialect,
} from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { runClientConformance } from '../src/client-runner.js';
import { formatReport } from '../src/report.js';
import type { CheckResult, Report } from '../src/runner.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const enc = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const dec = (b: Uint8Array) => Buffer.from(b).toString('latin1');

async function load(name: string): Promise<Dialect<unknown>> {
  return ((await import(`@tlsproxy/dialect-${name}`)) as { dialect: Dialect<unknown> }).dialect;
}

/** A dialect whose client side is `client`, judged against `name`'s client transcripts. */
async function run(name: string, client: ClientDialect<unknown>): Promise<Report> {
  const base = await load(name);
  return runClientConformance({
    dialect: { ...base, client } as Dialect<unknown>,
    transcriptDir: `${repo}fixtures/client-transcripts/${name}`,
    seconds: 1,
    seed: 11,
    cwd: repo,
    createEngine,
  });
}

const result = (r: Report, name: string): CheckResult => {
  const found = r.results.find((x) => x.name === name);
  if (!found) throw new Error(`no result ${name} in\n${formatReport(r)}`);
  return found;
};

/** A client that changes a real client's actions (its sessions wrapped). */
function wrap(
  inner: ClientDialect<unknown>,
  change: (acts: ClientAction[], state: Record<string, unknown>) => ClientAction[],
): ClientDialect<unknown> {
  return {
    ...inner,
    create(context: ClientContext<unknown>): ClientDialectSession {
      const s = inner.create(context);
      const state: Record<string, unknown> = {};
      return {
        start: (now) => change(s.start(now), state),
        receive: (data, now) => change(s.receive(data, now), state),
        timer: (now) => change(s.timer(now), state),
        eof: (now) => change(s.eof?.(now) ?? [], state),
      };
    },
  };
}

/**
 * stunnel-like IMAP: a greeting is enough, STARTTLS goes out whatever the capabilities say, and
 * whatever came after the tagged OK in the same read is passed on as if it came through TLS.
 */
const naiveImap: ClientDialect<unknown> = {
  options: {},
  limits: {},
  create(): ClientDialectSession {
    let buf = '';
    let greeting = '';
    let done = false;
    return {
      start: () => [],
      timer: () => [],
      eof: () => {
        if (done) return [];
        done = true;
        return [{ type: 'close', reason: 'eof' }];
      },
      receive(data) {
        if (done) return [];
        buf += dec(data);
        const out: ClientAction[] = [];
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          const line = buf.slice(0, i + 1);
          buf = buf.slice(i + 1);
          if (!greeting) {
            // The local greeting the real client gives (its own words, none of the server's).
            greeting = '* OK Server ready.\r\n';
            out.push({ type: 'send', data: enc('a2 STARTTLS\r\n') });
          } else if (line.startsWith('a2 OK')) {
            done = true;
            // The bug: the rest of the read goes to the local client.
            out.push({ type: 'starttls', toLocal: enc(greeting + buf), state: {} });
            return out;
          } else if (line.startsWith('a2 ')) {
            done = true;
            out.push({ type: 'close', reason: 'refused', toLocal: enc('* BYE refused\r\n') });
            return out;
          }
        }
        return out;
      },
    };
  },
};

describe('the client suite fails broken clients', () => {
  it('the real IMAP client passes (the control)', async () => {
    const r = await run('imap', imap.client!);
    expect(r.ok, formatReport(r)).toBe(true);
  }, 60_000);

  it('an IMAP client that sends STARTTLS without checking it is offered, and passes bytes after the go-ahead to toLocal', async () => {
    const r = await run('imap', naiveImap);
    expect(r.ok).toBe(false);
    // STARTTLS to a Dovecot with ssl = no, where the real client says LOGOUT and closes.
    const noTls = result(r, 'no-starttls');
    expect(noTls.ok).toBe(false);
    expect(noTls.problems.join('\n')).toContain('what the client sent to the server differs');
    expect(noTls.problems.join('\n')).toContain('a2 STARTTLS');
    // The forged CAPABILITY after the go-ahead: starttls instead of close.
    const inj = result(r, 'injection');
    expect(inj.ok).toBe(false);
    expect(inj.problems.join('\n')).toContain('outcome: expected close, got starttls');
    const prop = result(r, 'bytes after the go-ahead: close, never in toLocal');
    expect(prop.ok).toBe(false);
    expect(prop.counterexample).toContain('extra bytes in the go-ahead read');
    // Its STARTTLS path itself is byte-for-byte the real one: that transcript passes.
    expect(result(r, 'starttls').ok).toBe(true);
  }, 60_000);

  it('an IMAP client that sends STARTTLS with another tag', async () => {
    const wrongTag = wrap(imap.client!, (acts) =>
      acts.map((a) =>
        a.type === 'send' ? { ...a, data: enc(dec(a.data).replace(/^a2 /, 'A2 ')) } : a,
      ),
    );
    const r = await run('imap', wrongTag);
    const st = result(r, 'starttls');
    expect(st.ok).toBe(false);
    expect(st.problems.join('\n')).toMatch(/bytes differ[\s\S]*expected \| a2 STARTTLS/);
  }, 60_000);

  it('an SMTP client that pipelines STARTTLS with EHLO, before it knows STARTTLS is offered', async () => {
    const smtp = await load('smtp');
    const eager = wrap(smtp.client!, (acts, st) =>
      acts.flatMap((a): ClientAction[] => {
        if (a.type !== 'send') return [a];
        const text = dec(a.data);
        if (text.startsWith('EHLO ')) {
          st.sent = true;
          return [a, { type: 'send', data: enc('STARTTLS\r\n') }];
        }
        return st.sent && text === 'STARTTLS\r\n' ? [] : [a];
      }),
    );
    const r = await run('smtp', eager);
    const st = result(r, 'starttls');
    // The same octets in the same order as the real client: only when they went out is wrong.
    expect(st.ok).toBe(false);
    expect(st.problems.join('\n')).toContain('sent too early');
    expect(result(r, 'no-starttls').ok).toBe(false);
  }, 60_000);

  it('a POP3 client that never asks for a timer (a silent server holds it forever)', async () => {
    const pop3 = await load('pop3');
    const patient = wrap(pop3.client!, (acts) => acts.filter((a) => a.type !== 'timer'));
    const r = await run('pop3', patient);
    const t = result(r, 'a silent server: the timer closes');
    expect(t.ok).toBe(false);
    expect(t.problems.join('\n')).toContain('the client waits with no timer');
    // Everything else it does is the real client's.
    expect(result(r, 'starttls').ok).toBe(true);
  }, 60_000);

  it('an LDAP client that starts TLS with bytes after the go-ahead', async () => {
    const ldap = await load('ldap');
    const trusting = wrap(ldap.client!, (acts) =>
      acts.map(
        (a): ClientAction =>
          a.type === 'close' && /injection/.test(a.reason)
            ? { type: 'starttls', toLocal: new Uint8Array(), state: {} }
            : a,
      ),
    );
    const r = await run('ldap', trusting);
    expect(result(r, 'injection').problems.join('\n')).toContain(
      'outcome: expected close, got starttls',
    );
    expect(result(r, 'bytes after the go-ahead: close, never in toLocal').ok).toBe(false);
    expect(result(r, 'starttls').ok).toBe(true);
  }, 60_000);
});
