// A transcript's placeholder name selects a pattern class: `${constructor}` or `${toString}`
// must be an unknown placeholder, not an Object.prototype member taken for a class.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { latin1 } from '../src/bytes.js';
import { checkPlaceholder, matchOutput, matchSpans, PLACEHOLDERS } from '../src/pattern.js';
import type { Segment } from '../src/transcript.js';

describe('placeholder names', () => {
  it('Object.prototype names are unknown placeholders', () => {
    for (const name of Object.getOwnPropertyNames(Object.prototype)) {
      const problem = checkPlaceholder({
        type: 'placeholder',
        name,
        constraints: [],
        recorded: new TextEncoder().encode('x'),
      });
      expect(problem, name).toMatch(/unknown placeholder/);
    }
  });

  it('known ones still check their recorded text', () => {
    const seg = { type: 'placeholder' as const, name: 'number', constraints: [] };
    expect(checkPlaceholder({ ...seg, recorded: new TextEncoder().encode('42') })).toBeUndefined();
    expect(checkPlaceholder({ ...seg, recorded: new TextEncoder().encode('x') })).toMatch(/not a/);
  });
});

// A dialect's wrong output must not hang the runner: adjacent `${any}` placeholders (as the NNTP
// example's CAPABILITIES list has) against output that does not match backtracked for minutes in
// the RegExp matcher (found by the mutation check: echo-input on bare-lf.txt, 64 s per replay).
describe('matching cost', () => {
  it('adjacent any-placeholders against output that does not match is fast', async () => {
    const { matchOutput } = await import('../src/pattern.js');
    const { parseTranscript, serverSegments } = await import('../src/transcript.js');
    const anys = ['a', 'b', 'c', 'd', 'e', 'f', 'g'].map((x) => `\${any:${x}\\r\\n}`).join('');
    const t = parseTranscript(
      `@server s\n@client c\n@dialect x\nS: 101 x\\r\\n${anys}READER\\r\\n.\\r\\n\n`,
    );
    const out = new TextEncoder().encode(
      `101 x\r\n${'LINE\r\n'.repeat(30)}READER\r\n.\r\nEXTRA\r\n`,
    );
    const t0 = performance.now();
    const m = matchOutput(serverSegments(t), out);
    expect(m?.reason).toBe('the dialect sent more than the server did');
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});

// The linear matcher gives what the RegExp matcher gave: same verdict, same spans, same first
// differing byte (differential property against the RegExp, on inputs small enough for it).
describe('the matcher agrees with the RegExp it replaced', () => {
  const reEscape = (s: string): string => s.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
  const src = (seg: Segment): string =>
    seg.type === 'bytes' ? reEscape(latin1(seg.bytes)) : `(${PLACEHOLDERS[seg.name]!.re})`;
  /** The old matcher's verdict: the full-match spans, or the longest-prefix end. */
  function reference(segments: Segment[], text: string) {
    const full = new RegExp(
      `^${segments.map((s) => (s.type === 'bytes' ? `(${src(s)})` : src(s))).join('')}$`,
      'd',
    ).exec(text);
    if (full) return { spans: segments.map((_, i) => full.indices![i + 1]![1]) };
    for (let k = segments.length; k >= 0; k--) {
      const m = new RegExp(`^${segments.slice(0, k).map(src).join('')}`).exec(text);
      if (m) return { k, end: m[0].length };
    }
    return { k: 0, end: 0 };
  }
  const enc = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
  const seg = fc.oneof(
    fc
      .constantFrom('a', 'b', ' ', '\r\n', '* ', '1')
      .map((t): Segment => ({ type: 'bytes', bytes: enc(t) })),
    fc
      .constantFrom('text', 'word', 'number', 'any', 'untagged', 'words', 'host')
      .map((name): Segment => ({ type: 'placeholder', name, constraints: [], recorded: null })),
  );
  const out = fc.array(fc.constantFrom('a', 'b', ' ', '\r', '\n', '* ', '1', ':'), {
    maxLength: 14,
  });

  it('same verdict, spans and error position', () => {
    fc.assert(
      fc.property(fc.array(seg, { minLength: 1, maxLength: 6 }), out, (segments, chars) => {
        const text = chars.join('');
        const ref = reference(segments, text);
        const spans = matchSpans(segments, enc(text));
        const m = matchOutput(segments, enc(text));
        if ('spans' in ref) {
          expect(spans?.map((s) => s.end)).toEqual(ref.spans);
          expect(m).toBeUndefined();
        } else {
          expect(spans).toBeUndefined();
          expect(m).toBeDefined();
          const next = segments[ref.k];
          let at = ref.end;
          if (next?.type === 'bytes')
            while (
              at - ref.end < next.bytes.length &&
              text.charCodeAt(at) === next.bytes[at - ref.end]
            )
              at++;
          expect(m!.offset).toBe(at);
        }
      }),
      { numRuns: 3000 },
    );
  });
});
