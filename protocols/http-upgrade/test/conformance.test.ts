// The recorded cupsd transcripts (fixtures/transcripts/http-upgrade) through @tlsproxy/conformance:
// the sans-I/O replay and the engine replay (real TLS on loopback) must pass or be a recorded
// @divergence. The generic property suite runs too; the transcripts say `@case sensitive`, so its
// "command case does not matter" check skips them (method and HTTP-version are case-sensitive:
// RFC 9110 section 9.1, RFC 9112 section 2.3; header-name case is covered by our own properties).
import { fileURLToPath } from 'node:url';
import { runConformance } from '@tlsproxy/conformance';
import { expect, it } from 'vitest';
import { createEngine } from '../../../fixtures/engine.mjs';
import { dialect } from '../src/index.js';

const dir = fileURLToPath(new URL('../../../fixtures/transcripts/http-upgrade', import.meta.url));

it('passes tlsproxy-conformance on the cupsd transcripts', { timeout: 60_000 }, async () => {
  const report = await runConformance({
    dialect,
    transcriptDir: dir,
    seconds: 3,
    seed: 42,
    createEngine,
  });
  expect(report.transcripts.length).toBeGreaterThanOrEqual(14);
  const failed = report.results.filter((r) => !r.ok).map((r) => `${r.kind} ${r.name}`);
  expect(failed).toEqual([]);
  const known = report.results.filter((r) => r.known).map((r) => r.name);
  expect(new Set(known)).toEqual(
    new Set([
      'garbage',
      'http10-upgrade',
      'lowercase-upgrade',
      'no-upgrade',
      'upgrade-list',
      'websocket-only',
    ]),
  );
});
