// The transcript format: the grammar gives exactly one parse per line, every recorded file
// matches its own recording, and the recorder's escaping reads back byte for byte.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapeBytes } from '../src/bytes.js';
import { formatMismatch, matchOutput } from '../src/pattern.js';
import { renderTranscript } from '../src/record.js';
import {
  clientChunks,
  parseLine,
  parseTranscript,
  recordedServerBytes,
  serverSegments,
} from '../src/transcript.js';

const root = join(import.meta.dirname, '../../../fixtures/transcripts');
const files = readdirSync(root).flatMap((d) =>
  readdirSync(join(root, d))
    .filter((f) => f.endsWith('.txt'))
    .map((f) => join(root, d, f)),
);

describe('recorded transcripts', () => {
  it('there are some', () => expect(files.length).toBeGreaterThan(10));
  it.each(files)('%s: one parse per line, and it matches its own recording', (file) => {
    const source = readFileSync(file, 'utf8');
    for (const line of source.split('\n')) {
      if (line.trim() === '' || line.startsWith('#')) continue;
      expect(parseLine(line)).not.toHaveProperty('error');
    }
    const t = parseTranscript(source, file);
    const recorded = recordedServerBytes(t);
    expect(recorded).not.toBeNull();
    expect(matchOutput(serverSegments(t), recorded!)).toBeUndefined();
  });
});

describe('format', () => {
  it('escapes read back byte for byte, including runs, binary and a trailing space', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 }),
        (chunks) => {
          const text = renderTranscript(
            { server: 's', client: 'c', dialect: 'x' },
            chunks.map((bytes) => ({ from: 'client' as const, bytes })),
          );
          const t = parseTranscript(text);
          expect(Buffer.concat(clientChunks(t))).toEqual(Buffer.concat(chunks));
          expect(clientChunks(t)).toHaveLength(chunks.length);
        },
      ),
      { numRuns: 300 },
    );
    expect(escapeBytes(new Uint8Array(Buffer.from('a'.repeat(20))))).toBe('\\*20(a)');
  });

  it('says which line is wrong', () => {
    expect(() =>
      parseTranscript('@server s\n@client c\n@dialect x\nC: a\nX: b\n', 'f.txt'),
    ).toThrow(/f\.txt:5: syntax error/);
    expect(() => parseTranscript('@server s\n@client c\nC: a\n', 'f.txt')).toThrow(
      /missing header @dialect/,
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholder syntax
    expect(() => parseTranscript('@server s\n@client c\n@dialect x\nS: ${nope:x}\n')).toThrow(
      /unknown placeholder/,
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholder syntax
    expect(() => parseTranscript('@server s\n@client c\n@dialect x\nS: ${number:abc}\n')).toThrow(
      /is not a \$\{number\}/,
    );
  });

  it('a client transcript is refused here (run --role client reads it)', () => {
    const client = join(
      import.meta.dirname,
      '../../../fixtures/client-transcripts/ldap/starttls.txt',
    );
    expect(() => parseTranscript(readFileSync(client, 'utf8'), client)).toThrow(/--role client/);
  });

  it('shows the first differing byte side by side', () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholder syntax
    const t = parseTranscript('@server s\n@client c\n@dialect x\nS: a OK ${text:done}\\r\\n\n');
    const m = matchOutput(serverSegments(t), new Uint8Array(Buffer.from('a NO done\r\n')))!;
    // biome-ignore lint/suspicious/noTemplateCurlyInString: transcript placeholder syntax
    expect(formatMismatch(m)).toContain('expected | a OK ${text}\\r\\n');
    expect(formatMismatch(m)).toContain('actual   | a NO done\\r\\n');
    expect(m.offset).toBe(2);
  });
});

// Issue 14: parsing is line by line (each line its own nearley parse, nothing carried over),
// and each line costs O(its length): no array copy per hex byte in the grammar, no copy of the
// bytes so far per item, no copy of the chunk so far per continuation line.
describe('cost is linear in the input', () => {
  const HEAD = '@server s\n@client c\n@dialect x\n';

  it('a long hex run', () => {
    const n = 20_000;
    const t0 = performance.now();
    const t = parseTranscript(`${HEAD}C: \\<${'0a '.repeat(n - 1)}0a>\n`);
    expect(clientChunks(t)[0]).toEqual(new Uint8Array(n).fill(10));
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('a long line of plain bytes', () => {
    const n = 60_000;
    const t0 = performance.now();
    const t = parseTranscript(`${HEAD}C: ${'x'.repeat(n)}\n`);
    expect(clientChunks(t)[0]!.length).toBe(n);
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('many continuation lines of one chunk', () => {
    const n = 20_000;
    const t0 = performance.now();
    const t = parseTranscript(`${HEAD}C: x\n${'C| \\*64(y)\n'.repeat(n)}`);
    expect(clientChunks(t)).toHaveLength(1);
    expect(clientChunks(t)[0]!.length).toBe(1 + 64 * n);
    expect(performance.now() - t0).toBeLessThan(3000);
  });

  it('refuses a repeat count no transcript needs, instead of allocating it', () => {
    expect(() => parseTranscript(`${HEAD}C: \\*99999999999(x)\n`)).toThrow(/repeat count/);
  });
});
