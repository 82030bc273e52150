// Client transcripts (README "Client transcripts"): the format's rules, and the judge's checks
// that the broken-client tests do not reach — who closed, a block sent too late, placeholders
// in C: lines, the package-declared folder.
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type {
  ClientAction,
  ClientContext,
  ClientDialect,
  ClientDialectSession,
  Dialect,
} from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { replayClient } from '../src/client-replay.js';
import { packageClientTranscriptDir } from '../src/client-runner.js';
import { parseClientTranscript } from '../src/client-transcript.js';
import { parseTranscript } from '../src/transcript.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const fixture = (p: string) => readFileSync(join(repo, 'fixtures', p), 'utf8');
const HEAD = '@role client\n@server s\n@client c\n@dialect imap\n';
const parse = (body: string) => parseClientTranscript(`${HEAD}${body}`, 't.txt');

async function load(name: string): Promise<Dialect<unknown>> {
  return ((await import(`@tlsproxy/dialect-${name}`)) as { dialect: Dialect<unknown> }).dialect;
}

function wrap(
  inner: ClientDialect<unknown>,
  make: (s: ClientDialectSession) => ClientDialectSession,
): ClientDialect<unknown> {
  return { ...inner, create: (c: ClientContext<unknown>) => make(inner.create(c)) };
}

describe('client transcript format', () => {
  it('parses a recorded one: server reads exact, client lines a pattern, the outcome, L:', () => {
    const t = parseClientTranscript(
      fixture('client-transcripts/imap/starttls.txt'),
      'starttls.txt',
    );
    expect(t.steps.map((s) => s.type)).toEqual(['server', 'client', 'server', 'tls']);
    expect(t.local).not.toBeNull();
    expect(t.hostname).toBe('client.example.test');
    expect(t.serverName).toBe('localhost');
  });

  it('a server transcript is not a client one, and the other way round', () => {
    expect(() =>
      parseClientTranscript(fixture('transcripts/imap/openssl-s_client.txt'), 'x.txt'),
    ).toThrow(/missing header @role client before the conversation/);
    expect(() =>
      parseTranscript(fixture('client-transcripts/imap/starttls.txt'), 'starttls.txt'),
    ).toThrow(/syntax error/);
  });

  it.each([
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholders, not JavaScript
    ['S: ${text:x}\\r\\n\n', /server lines of a client transcript are its input/],
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholders, not JavaScript
    ['C: a ${any:x}\\r\\n\n', /cannot stand in a client line/],
    ['C: a1 CAPABILITY\\r\\n\n!tls\n', /!tls must follow the server chunk/],
    ['S: * OK\\r\\n\nL: x\n', /after !tls, !eof or !plaintext/],
    ['S: a OK\\r\\n\n!injected\nC: x\n', /!injected must be followed by S\| lines/],
    ['S: a OK\\r\\n\n!tls\nS: more\n', /nothing from the server after !tls/],
    ['S: a OK\\r\\n\n!eof\nC: x\n', /sends nothing after its outcome/],
    ['S: a OK\\r\\n\n!no-leftover\n', /not a client-transcript directive/],
    ['S: x\n!close\nS: y\n', /nothing from the server after !close/],
  ])('refuses %j', (body, message) => {
    expect(() => parse(body)).toThrow(message);
  });

  it('needs @role client, not another role', () => {
    expect(() =>
      parseClientTranscript('@role server\n@server s\n@client c\n@dialect imap\nS: x\n', 't'),
    ).toThrow(/a client transcript says @role client/);
  });
});

describe('client judge', () => {
  it('who closed: a client that closes only when the server hangs up fails !eof-before-!close', async () => {
    const imap = await load('imap');
    const t = parseClientTranscript(
      fixture('client-transcripts/imap/no-starttls.txt'),
      'no-starttls.txt',
    );
    expect(replayClient(imap as never, t).problems).toEqual([]);
    // Holds its decision back until eof(): what it sends and gives is the same, but late.
    const lazy = wrap(imap.client!, (s) => {
      let held: ClientAction[] = [];
      return {
        start: (now) => s.start(now),
        timer: (now) => s.timer(now),
        receive: (data, now) => {
          const acts = s.receive(data, now);
          const i = acts.findIndex((a) => a.type === 'close');
          if (i < 0) return acts;
          held = acts.slice(i);
          return acts.slice(0, i);
        },
        eof: () => held,
      };
    });
    const problems = replayClient({ ...imap, client: lazy } as never, t).problems.join('\n');
    expect(problems).toContain('the client closed only because the server did');
  });

  it('a command held back to the next read is sent too late', async () => {
    const imap = await load('imap');
    const t = parseClientTranscript(fixture('client-transcripts/imap/starttls.txt'), 's.txt');
    const slow = wrap(imap.client!, (s) => {
      let held: ClientAction[] = [];
      return {
        start: (now) => s.start(now),
        timer: (now) => s.timer(now),
        // Each read's sends go out with the next read.
        receive: (data, now) => {
          const acts = s.receive(data, now);
          const out = [...held, ...acts.filter((a) => a.type !== 'send')];
          held = acts.filter((a) => a.type === 'send');
          return out;
        },
      };
    });
    const problems = replayClient({ ...imap, client: slow } as never, t).problems.join('\n');
    expect(problems).toMatch(/C: line \d+ sent too late/);
  });

  it('placeholders in C: lines: another EHLO name matches a host placeholder', async () => {
    const smtp = await load('smtp');
    const text = fixture('client-transcripts/smtp/starttls.txt')
      .replace('@hostname client.example.test', '@hostname other.example.test')
      // biome-ignore lint/suspicious/noTemplateCurlyInString: a transcript placeholder
      .replace('C: EHLO client.example.test\\r\\n', 'C: EHLO ${host:client.example.test}\\r\\n');
    const t = parseClientTranscript(text, 'starttls.txt');
    expect(replayClient(smtp as never, t).problems).toEqual([]);
    // Without the placeholder the other name is a difference.
    const exact = parseClientTranscript(
      fixture('client-transcripts/smtp/starttls.txt').replace(
        '@hostname client.example.test',
        '@hostname other.example.test',
      ),
      'starttls.txt',
    );
    expect(replayClient(smtp as never, exact).problems.join('\n')).toContain('bytes differ');
  });
});

describe('client transcripts shipped by a dialect package', () => {
  const pkg = (json: Record<string, unknown>, dirs: string[]) => {
    const root = mkdtempSync(join(tmpdir(), 'conf-client-pkg-'));
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'x', ...json }));
    for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
    return root;
  };
  it('uses the folder declared as "clientTranscripts", else client-transcripts/', () => {
    const a = pkg({ tlsproxy: { clientTranscripts: 'rec-client' } }, ['rec-client']);
    expect(packageClientTranscriptDir(a, '/')).toBe(join(a, 'rec-client'));
    const b = pkg({}, ['client-transcripts']);
    expect(packageClientTranscriptDir(b, '/')).toBe(join(b, 'client-transcripts'));
    expect(packageClientTranscriptDir(pkg({}, []), '/')).toBeUndefined();
  });
  it('a module file of the package (--dialect ./src/d.mjs): its nearest package.json', () => {
    const root = pkg({ tlsproxy: { clientTranscripts: 'rec-client' } }, ['rec-client', 'src']);
    writeFileSync(join(root, 'src', 'd.mjs'), 'export default {};\n');
    expect(packageClientTranscriptDir('./src/d.mjs', root)).toBe(join(root, 'rec-client'));
  });
});
