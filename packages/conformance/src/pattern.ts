// Matching what a dialect sent against what a real server sent. Literal bytes match exactly
// (tags, status words, response codes, CRLF: what clients parse); placeholders stand for the text
// servers are free to word differently. The matcher (below) works like one anchored RegExp over
// latin1 text, in time linear in segments × output; on a mismatch the longest matching prefix
// tells where the first differing byte is. The `re` of each class is its definition, used to
// check a placeholder's recorded text.
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

// ---- The matcher. Not a RegExp: adjacent placeholders (`${any}${any}…`, as a capability list
// with optional lines has) make a backtracking RegExp exponential on output that does not match,
// and a wrong dialect must not hang the runner. Instead, per segment, the set of output offsets
// reachable from the start and the set from which the rest of the pattern can still match are
// computed once (O(segments × output)); a forward walk then picks, segment by segment, the end
// a backtracking RegExp would pick (greedy classes the longest, `${any}` the shortest) among
// those from which the rest still matches — so spans and error positions are the RegExp's.

type Matcher =
  | { kind: 'bytes'; text: string }
  | { kind: 'class'; ok: (c: number) => boolean; min: number }
  | { kind: 'any' }
  | { kind: 'untagged' };

const inRange = (lo: number, hi: number) => (c: number) => c >= lo && c <= hi;
const CLASS = new Map<string, Matcher>([
  ['text', { kind: 'class', ok: (c) => c !== 13 && c !== 10, min: 0 }],
  ['words', { kind: 'class', ok: (c) => c !== 13 && c !== 10, min: 0 }],
  ['word', { kind: 'class', ok: (c) => c > 0x20 && c !== 0x7f, min: 1 }],
  [
    'host',
    {
      kind: 'class',
      ok: (c) =>
        inRange(0x41, 0x5a)(c) ||
        inRange(0x61, 0x7a)(c) ||
        inRange(0x30, 0x3a)(c) || // digits and ':'
        c === 0x2e ||
        c === 0x5f ||
        c === 0x5b ||
        c === 0x5d ||
        c === 0x2d,
      min: 1,
    },
  ],
  ['number', { kind: 'class', ok: inRange(0x30, 0x39), min: 1 }],
  ['any', { kind: 'any' }],
  ['untagged', { kind: 'untagged' }],
]);

function matcherOf(seg: Segment): Matcher {
  if (seg.type === 'bytes') return { kind: 'bytes', text: latin1(seg.bytes) };
  return CLASS.get(seg.name)!;
}

/** Ends of one segment started at `p`, in the order a backtracking RegExp tries them. */
function ends(m: Matcher, text: string, p: number): number[] {
  switch (m.kind) {
    case 'bytes':
      return text.startsWith(m.text, p) ? [p + m.text.length] : [];
    case 'class': {
      let run = p;
      while (run < text.length && m.ok(text.charCodeAt(run))) run++;
      const out: number[] = [];
      for (let e = run; e >= p + m.min; e--) out.push(e); // greedy: longest first
      return out;
    }
    case 'any': {
      const out: number[] = [];
      for (let e = p; e <= text.length; e++) out.push(e); // lazy: shortest first
      return out;
    }
    case 'untagged': {
      // (?:\* [^\r\n]*\r?\n)* — each line is deterministic; greedy: most lines first.
      const out = [p];
      let q = p;
      while (text.startsWith('* ', q)) {
        let e = q + 2;
        while (e < text.length && text[e] !== '\r' && text[e] !== '\n') e++;
        if (text[e] === '\n') q = e + 1;
        else if (text[e] === '\r' && text[e + 1] === '\n') q = e + 2;
        else break;
        out.push(q);
      }
      return out.reverse();
    }
  }
}

/** Whether some end of `m` from `p` is in `set`: O(1) amortised for the interval classes. */
function canReach(
  m: Matcher,
  text: string,
  p: number,
  set: Uint8Array,
  suffix: Int32Array,
): boolean {
  switch (m.kind) {
    case 'bytes':
      return text.startsWith(m.text, p) && set[p + m.text.length] === 1;
    case 'class':
      throw new Error('class segments are handled in one pass by walk()');
    case 'any':
      return suffix[p]! !== -1;
    case 'untagged':
      return ends(m, text, p).some((e) => set[e] === 1);
  }
}

function suffixOf(set: Uint8Array): Int32Array {
  const out = new Int32Array(set.length + 1).fill(-1);
  for (let i = set.length - 1; i >= 0; i--) out[i] = set[i] === 1 ? i : out[i + 1]!;
  return out;
}

/**
 * Match the first `k` segments against a prefix of the output (to its end when `whole`): the
 * end offset of each segment, or undefined when they cannot match.
 */
function walk(ms: Matcher[], text: string, k: number, finals: Uint8Array): number[] | undefined {
  const n = text.length;
  // can[i]: offsets from which segments i..k-1 reach a final offset.
  const can: Uint8Array[] = new Array(k + 1);
  can[k] = finals;
  for (let i = k - 1; i >= 0; i--) {
    const next = can[i + 1]!;
    const suffix = suffixOf(next);
    const here = new Uint8Array(n + 1);
    const m = ms[i]!;
    if (m.kind === 'class') {
      // One pass right to left: where the class run from p ends is shared by the whole run
      // (scanning from every offset would be quadratic on a long line).
      let runEnd = n;
      for (let p = n; p >= 0; p--) {
        if (p < n && !m.ok(text.charCodeAt(p))) runEnd = p;
        const lo = p + m.min;
        // Some offset in [lo, runEnd] can finish: suffix[lo] is the first such offset >= lo.
        here[p] = lo <= runEnd && suffix[lo]! !== -1 && suffix[lo]! <= runEnd ? 1 : 0;
      }
    } else {
      for (let p = 0; p <= n; p++) here[p] = canReach(m, text, p, next, suffix) ? 1 : 0;
    }
    can[i] = here;
  }
  if (can[0]![0] !== 1) return undefined;
  const out: number[] = [];
  let pos = 0;
  for (let i = 0; i < k; i++) {
    const next = can[i + 1]!;
    const m = ms[i]!;
    let chosen = -1;
    if (m.kind === 'any') {
      for (let e = pos; e <= n; e++)
        if (next[e] === 1) {
          chosen = e;
          break;
        }
    } else if (m.kind === 'class') {
      let run = pos;
      while (run < n && m.ok(text.charCodeAt(run))) run++;
      for (let e = run; e >= pos + m.min; e--)
        if (next[e] === 1) {
          chosen = e;
          break;
        }
    } else {
      chosen = ends(m, text, pos).find((e) => next[e] === 1) ?? -1;
    }
    out.push(chosen);
    pos = chosen;
  }
  return out;
}

/** Offsets reachable from the start after each segment (forward sets), for the longest prefix. */
function longestPrefix(ms: Matcher[], text: string): { k: number; reach: Uint8Array } {
  const n = text.length;
  let reach = new Uint8Array(n + 1);
  reach[0] = 1;
  let k = 0;
  for (; k < ms.length; k++) {
    const m = ms[k]!;
    const next = new Uint8Array(n + 1);
    let any = false;
    if (m.kind === 'any') {
      const first = reach.indexOf(1);
      if (first >= 0) next.fill(1, first);
      any = first >= 0;
    } else if (m.kind === 'class') {
      // Mark [p + min, runEnd(p)] for each reachable p, with a difference array.
      const diff = new Int32Array(n + 2);
      let runEnd = n;
      const runEnds = new Int32Array(n + 1);
      for (let p = n; p >= 0; p--) {
        if (p < n && !m.ok(text.charCodeAt(p))) runEnd = p;
        runEnds[p] = runEnd;
      }
      for (let p = 0; p <= n; p++) {
        if (reach[p] !== 1) continue;
        const lo = p + m.min;
        const hi = runEnds[p]!;
        if (lo > hi) continue;
        diff[lo]! += 1;
        diff[hi + 1]! -= 1;
      }
      let acc = 0;
      for (let p = 0; p <= n; p++) {
        acc += diff[p]!;
        if (acc > 0) {
          next[p] = 1;
          any = true;
        }
      }
    } else {
      for (let p = 0; p <= n; p++) {
        if (reach[p] !== 1) continue;
        for (const e of ends(m, text, p)) {
          next[e] = 1;
          any = true;
        }
      }
    }
    if (!any) break;
    reach = next;
  }
  return { k, reach };
}

/** Where each segment ends in a whole-output match, or undefined (linear, see above). */
function spansOf(segments: readonly Segment[], text: string): number[] | undefined {
  const finals = new Uint8Array(text.length + 1);
  finals[text.length] = 1;
  return walk(segments.map(matcherOf), text, segments.length, finals);
}

/** Match the whole actual output against the pattern; undefined when it matches. */
export function matchOutput(
  segments: readonly Segment[],
  actual: Uint8Array,
): Mismatch | undefined {
  const text = latin1(actual);
  const endsAt = spansOf(segments, text);
  if (endsAt) {
    let start = 0;
    for (let i = 0; i < segments.length; i++) {
      const seg = segments[i]!;
      const end = endsAt[i]!;
      if (seg.type === 'placeholder') {
        const problem = constraintProblem(seg.constraints, text.slice(start, end));
        if (problem) return mismatch(actual, start, [seg], `\${${seg.name}}: ${problem}`);
      }
      start = end;
    }
    return undefined;
  }
  // The longest prefix of the pattern that matches a prefix of the output, and where the
  // RegExp `^seg1…segk` would have ended.
  const ms = segments.map(matcherOf);
  const { k, reach } = longestPrefix(ms, text);
  const endsK = k === 0 ? [] : walk(ms, text, k, reach)!;
  const end = k === 0 ? 0 : endsK[k - 1]!;
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
  const endsAt = spansOf(segments, latin1(actual));
  if (!endsAt) return undefined;
  return endsAt.map((end, i) => ({ start: i === 0 ? 0 : endsAt[i - 1]!, end }));
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
