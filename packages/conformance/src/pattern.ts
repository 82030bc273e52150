// Matching what a dialect sent against what a real server sent. Literal bytes match exactly
// (tags, status words, response codes, CRLF: what clients parse); placeholders stand for the text
// servers are free to word differently. A pattern compiles to one anchored RegExp over latin1
// text; on a mismatch the longest matching prefix tells where the first differing byte is.
import { escapeBytes, latin1 } from './bytes.js';
import type { Constraint, Segment } from './transcript.js';

/** Placeholder classes: what each may match. Constraints (+WORD / !WORD) apply to `words`.
 * Null prototype: a transcript's `${constructor}` must be an unknown placeholder, not a match. */
export const PLACEHOLDERS: Record<string, { re: string; description: string }> = Object.assign(
  Object.create(null) as Record<string, { re: string; description: string }>,
  {
    text: { re: '[^\\r\\n]*', description: 'human-readable text up to the line end' },
    word: { re: '[^\\x00-\\x20\\x7f]+', description: 'one token without spaces' },
    host: { re: '[A-Za-z0-9._:\\[\\]-]+', description: 'a host name or address' },
    number: { re: '[0-9]+', description: 'a decimal number' },
    words: { re: '[^\\r\\n]*', description: 'space-separated tokens, e.g. a capability list' },
    untagged: {
      re: '(?:\\* [^\\r\\n]*\\r?\\n)*',
      description: 'zero or more IMAP untagged lines (informational, e.g. * BAD [ALERT])',
    },
    any: { re: '[\\s\\S]*?', description: 'any bytes, line ends included (fewest possible)' },
  },
);

const reEscape = (s: string): string => s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');

function source(seg: Segment): string {
  if (seg.type === 'bytes') return reEscape(latin1(seg.bytes));
  return `(${PLACEHOLDERS[seg.name]!.re})`;
}

function wordMatches(pattern: string, word: string): boolean {
  const p = pattern.toUpperCase();
  const w = word.toUpperCase();
  return p.endsWith('*') ? w.startsWith(p.slice(0, -1)) : w === p;
}

export function constraintProblem(constraints: Constraint[], text: string): string | undefined {
  const words = text.split(' ').filter((w) => w !== '');
  for (const c of constraints) {
    const has = words.some((w) => wordMatches(c.word, w));
    if (c.must && !has) return `must contain ${c.word}`;
    if (!c.must && has) return `must not contain ${c.word}`;
  }
  return undefined;
}

/** A placeholder must name a known class, and its recorded text must be one it matches. */
export function checkPlaceholder(seg: Segment): string | undefined {
  if (seg.type !== 'placeholder') return undefined;
  const cls = PLACEHOLDERS[seg.name];
  if (!cls)
    return `unknown placeholder \${${seg.name}} (known: ${Object.keys(PLACEHOLDERS).join(', ')})`;
  if (seg.constraints.length > 0 && seg.name !== 'words') {
    return `only \${words} takes +WORD / !WORD constraints`;
  }
  if (seg.recorded === null) return undefined;
  const text = latin1(seg.recorded);
  if (!new RegExp(`^(?:${cls.re})$`).test(text)) {
    return `recorded text "${escapeBytes(seg.recorded)}" is not a \${${seg.name}}`;
  }
  const bad = constraintProblem(seg.constraints, text);
  return bad ? `recorded text of \${words}: ${bad}` : undefined;
}

export interface Mismatch {
  /** Byte offset in the actual output where it first differs. */
  offset: number;
  reason: string;
  expected: string;
  actual: string;
  /** Column of the first difference in both rendered lines. */
  column: number;
}

/** Transcript-style rendering of a pattern, placeholders as `${name}`. */
export function renderSegments(segments: readonly Segment[]): string {
  return segments
    .map((s) =>
      s.type === 'bytes'
        ? escapeBytes(s.bytes, false)
        : `\${${[s.name, ...s.constraints.map((c) => `${c.must ? '+' : '!'}${c.word}`)].join(' ')}}`,
    )
    .join('');
}

function upToLineEnd(s: string): string {
  const i = s.indexOf('\\n');
  return i < 0 ? s : s.slice(0, i + 2);
}

function mismatch(actual: Uint8Array, offset: number, rest: Segment[], reason: string): Mismatch {
  let lineStart = offset;
  while (lineStart > 0 && actual[lineStart - 1] !== 10) lineStart--;
  const same = escapeBytes(actual.subarray(lineStart, offset), false);
  const expectedRest = rest.length === 0 ? '(end of output)' : upToLineEnd(renderSegments(rest));
  let end = offset;
  while (end < actual.length && actual[end] !== 10) end++;
  const actualRest =
    offset >= actual.length
      ? '(end of output)'
      : escapeBytes(actual.subarray(offset, Math.min(end + 1, offset + 200)), false);
  return {
    offset,
    reason,
    expected: same + expectedRest,
    actual: same + actualRest,
    column: same.length,
  };
}

/** Match the whole actual output against the pattern; undefined when it matches. */
export function matchOutput(
  segments: readonly Segment[],
  actual: Uint8Array,
): Mismatch | undefined {
  const text = latin1(actual);
  const full = new RegExp(`^${segments.map(source).join('')}$`, 'd').exec(text);
  if (full) {
    let group = 1;
    for (const seg of segments) {
      if (seg.type !== 'placeholder') continue;
      const [start] = full.indices![group]!;
      const problem = constraintProblem(seg.constraints, full[group]!);
      group++;
      if (problem) return mismatch(actual, start, [seg], `\${${seg.name}}: ${problem}`);
    }
    return undefined;
  }
  // The longest prefix of the pattern that matches a prefix of the output.
  let k = segments.length;
  let end = 0;
  for (; k >= 0; k--) {
    const m = new RegExp(`^${segments.slice(0, k).map(source).join('')}`).exec(text);
    if (m) {
      end = m[0].length;
      break;
    }
  }
  if (k >= segments.length) {
    return mismatch(actual, end, [], 'the dialect sent more than the server did');
  }
  const next = segments[k]!;
  if (next.type === 'bytes') {
    let i = 0;
    while (i < next.bytes.length && end + i < actual.length && next.bytes[i] === actual[end + i])
      i++;
    const rest: Segment[] = [
      { type: 'bytes', bytes: next.bytes.subarray(i) },
      ...segments.slice(k + 1),
    ];
    const reason =
      end + i >= actual.length ? 'the dialect sent less than the server did' : 'bytes differ';
    return mismatch(actual, end + i, rest, reason);
  }
  return mismatch(actual, end, segments.slice(k), `no \${${next.name}} here`);
}

/**
 * Where each segment matched in the actual output (latin1 offsets), or undefined when the
 * output does not match. The reply checks use it to pair recorded replies with actual ones.
 */
export function matchSpans(
  segments: readonly Segment[],
  actual: Uint8Array,
): { start: number; end: number }[] | undefined {
  const re = new RegExp(
    `^${segments.map((s) => (s.type === 'bytes' ? `(${source(s)})` : source(s))).join('')}$`,
    'd',
  );
  const m = re.exec(latin1(actual));
  if (!m) return undefined;
  return segments.map((_, i) => {
    const [start, end] = m.indices![i + 1]!;
    return { start, end };
  });
}

/** Two rows, aligned, with a caret under the first differing byte. */
export function formatMismatch(m: Mismatch, indent = '    '): string {
  return [
    `${indent}${m.reason} (at byte ${m.offset} of the output)`,
    `${indent}  expected | ${m.expected}`,
    `${indent}  actual   | ${m.actual}`,
    `${indent}             ${' '.repeat(m.column)}^`,
  ].join('\n');
}
