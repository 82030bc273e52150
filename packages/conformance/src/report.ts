// The human report: one line per transcript and property, problems indented beneath, the seed
// and a command to reproduce at the end.
import type { Report } from './runner.js';

export function formatReport(r: Report): string {
  const lines = [`tlsproxy-conformance: dialect ${r.dialect}, ${r.transcripts.length} transcripts`];
  for (const kind of ['replay', 'engine', 'property'] as const) {
    const group = r.results.filter((x) => x.kind === kind);
    if (group.length === 0) continue;
    lines.push(
      '',
      `${kind === 'replay' ? 'sans-I/O replay' : kind === 'engine' ? 'engine replay (loopback, real TLS)' : 'properties'}:`,
    );
    for (const x of group) {
      const status = x.skipped ? 'skip' : x.known ? 'known' : x.ok ? 'pass' : 'FAIL';
      const runs = x.runs !== undefined ? ` (${x.runs} runs)` : '';
      const why = x.skipped ?? x.known;
      lines.push(`  ${status.padEnd(5)} ${x.name}${runs}${why ? ` — ${why}` : ''}`);
      for (const p of x.problems) lines.push(...p.split('\n').map((l) => `        ${l}`));
      if (x.counterexample) {
        lines.push(
          '        counterexample:',
          ...x.counterexample.split('\n').map((l) => `          ${l}`),
        );
      }
    }
  }
  const failed = r.results.filter((x) => !x.ok).length;
  lines.push(
    '',
    failed === 0
      ? `all ${r.results.length} checks passed`
      : `${failed} of ${r.results.length} checks FAILED`,
    `seed ${r.seed} — reproduce with: ${r.rerun}`,
  );
  return lines.join('\n');
}
