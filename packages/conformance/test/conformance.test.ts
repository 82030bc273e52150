// Every dialect in protocols/* that has transcripts runs through the suite here, so `npm test`
// (CI) holds all of them to the recordings; and a broken dialect must fail readably.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { main } from '../src/cli.js';
import { formatReport } from '../src/report.js';
import { runConformance } from '../src/runner.js';

const repo = join(import.meta.dirname, '../../..');
const dialects = readdirSync(join(repo, 'protocols'))
  .map((d) => JSON.parse(readFileSync(join(repo, 'protocols', d, 'package.json'), 'utf8')))
  .filter((p) =>
    existsSync(join(repo, 'fixtures/transcripts', p.name.replace('@tlsproxy/dialect-', ''))),
  );

describe('dialects in this repository', () => {
  it('at least IMAP has transcripts', () =>
    expect(dialects.map((d) => d.name)).toContain('@tlsproxy/dialect-imap'));
  it.each(dialects.map((d) => d.name))(
    '%s passes its transcripts and the properties',
    async (name) => {
      const report = await runConformance({
        dialect: name,
        seconds: 3,
        cwd: repo,
        seed: 42,
        createEngine,
      });
      expect(report.ok, formatReport(report)).toBe(true);
      expect(report.results.filter((r) => r.kind === 'engine').length).toBeGreaterThan(0);
    },
    60_000,
  );
});

describe('a broken dialect', () => {
  const broken = join(import.meta.dirname, 'fixtures/broken-dialect.mjs');

  it('fails with a readable diff and a reproducible seed', async () => {
    const report = await runConformance({
      dialect: broken,
      seconds: 2,
      cwd: repo,
      seed: 7,
      createEngine,
    });
    expect(report.ok).toBe(false);
    const text = formatReport(report);
    const failed = report.results.filter((r) => !r.ok).map((r) => `${r.kind}:${r.name}`);
    // Answering pipelined commands after STARTTLS:
    expect(failed).toContain('replay:pipelined-after-starttls');
    expect(failed).toContain('property:nothing pipelined after STARTTLS survives');
    // The bare LF where the server sent CRLF, shown side by side:
    expect(failed).toContain('replay:capability-noop-logout');
    expect(text).toContain('expected | a OK CAPABILITY completed\\r\\n');
    expect(text).toContain('actual   | a OK CAPABILITY completed\\n');
    expect(text).toContain('seed 7 — reproduce with: tlsproxy-conformance run');
  }, 60_000);

  it('makes the CLI exit non-zero; the good one exits zero', async () => {
    const out: string[] = [];
    const args = [
      '--no-engine',
      '--seconds',
      '1',
      '--seed',
      '1',
      join(repo, 'fixtures/transcripts/imap'),
    ];
    expect(await main(['run', '--dialect', broken, ...args], (s) => out.push(s))).toBe(1);
    expect(out.join('\n')).toContain('FAIL');
    expect(
      await main(['run', '--dialect', '@tlsproxy/dialect-imap', '--json', ...args], (s) =>
        out.push(s),
      ),
    ).toBe(0);
    expect(JSON.parse(out.at(-1)!).ok).toBe(true);
    expect(await main(['run'])).toBe(2);
  }, 60_000);
});
