// biome-ignore-all lint/suspicious/noTemplateCurlyInString: transcript placeholders are ${...} text
// --annotate: the protocol name comes from the command line, so it selects rules through a Map;
// a protocol without rules of its own gets the generic reply shapes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { annotateLine } from '../src/annotate.js';

const line = (s: string) => new TextEncoder().encode(s);

describe('annotateLine', () => {
  it('prototype names are not protocols: no throw, the generic rules apply', () => {
    for (const name of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      expect(annotateLine(name, line('200 news.example ready\r\n'))).toBe(
        '200 ${text:news.example ready}\\r\\n',
      );
    }
  });

  it('generic rules for any other line protocol (NNTP, ManageSieve); exact otherwise', () => {
    expect(annotateLine('nntp', line('382 Continue with TLS negotiation\r\n'))).toBe(
      '382 ${text:Continue with TLS negotiation}\\r\\n',
    );
    expect(annotateLine('sieve', line('OK "Begin TLS negotiation now."\r\n'))).toBe(
      'OK ${text:"Begin TLS negotiation now."}\\r\\n',
    );
    expect(annotateLine('nntp', line('STARTTLS\r\n'))).toBe('STARTTLS\\r\\n');
    // No --annotate: byte-exact.
    expect(annotateLine(undefined, line('200 x\r\n'))).toBe('200 x\\r\\n');
  });

  it('property: any protocol name and any line give a string, never a throw', () => {
    fc.assert(
      fc.property(fc.string(), fc.uint8Array({ maxLength: 200 }), (name, bytes) => {
        expect(typeof annotateLine(name, bytes)).toBe('string');
      }),
    );
  });
});
