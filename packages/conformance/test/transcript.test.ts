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
