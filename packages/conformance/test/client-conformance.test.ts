// Every built-in dialect's client side (issue 18) against its client transcripts, recorded from
// the real servers (fixtures/client-transcripts/<dialect>/, fixtures/record/client-record.mjs):
// the strict sans-I/O replay and the client property suite, as `tlsproxy-conformance run --role
// client` runs them.
import { fileURLToPath } from 'node:url';
import type { Dialect } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { main } from '../src/cli.js';
import { runClientConformance } from '../src/client-runner.js';
import { formatReport } from '../src/report.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const BUILT_IN = ['imap', 'pop3', 'smtp', 'ldap', 'xmpp', 'http-upgrade'];

describe('client transcripts of the built-in dialects', () => {
  for (const name of BUILT_IN) {
    it(`${name}: every client transcript and property passes`, async () => {
      const report = await runClientConformance({
        dialect: name,
        seconds: 2,
        cwd: repo,
        seed: 42,
        createEngine,
      });
      expect(report.transcripts.length).toBeGreaterThanOrEqual(3);
      // The three cases every dialect has: STARTTLS, not offered, injection after the go-ahead.
      const names = report.results.filter((r) => r.kind === 'replay').map((r) => r.name);
      expect(names).toEqual(expect.arrayContaining(['starttls', 'no-starttls', 'injection']));
      expect(report.ok, formatReport(report)).toBe(true);
    }, 60_000);
  }
});

describe('tlsproxy-conformance run --role client', () => {
  it('runs the client side and exits 0; --role server is the default run', async () => {
    const out: string[] = [];
    const cwd = process.cwd();
    process.chdir(repo);
    try {
      const code = await main(
        ['run', '--role', 'client', '--dialect', 'imap', '--seconds', '1', '--seed', '3'],
        (s) => out.push(s),
      );
      expect(code, out.join('\n')).toBe(0);
    } finally {
      process.chdir(cwd);
    }
    const text = out.join('\n');
    expect(text).toContain('imap (client side)');
    expect(text).toContain('pass  starttls');
    // The folder that was found is named, so the line works from any directory.
    expect(text).toContain(
      `reproduce with: tlsproxy-conformance run --role client --dialect imap --transcripts ${repo}fixtures/client-transcripts/imap --seed 3 --seconds 1`,
    );
  }, 60_000);

  it('refuses an unknown role (exit 2) and a dialect without a client side', async () => {
    expect(await main(['run', '--role', 'proxy', '--dialect', 'imap'], () => {})).toBe(2);
    const { dialect } = (await import('@tlsproxy/dialect-imap')) as { dialect: Dialect<unknown> };
    await expect(
      runClientConformance({ dialect: { ...dialect, client: undefined }, cwd: repo, seconds: 1 }),
    ).rejects.toMatchObject({ code: 'TLSPROXY_ERR_CONFORMANCE_USAGE' });
  });
});
