// reportKnownCommand: only names from the dialect's own table reach logs and metrics.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { reportKnownCommand } from '../src/index.js';

const KNOWN = new Set(['STARTTLS', 'CAPABILITY', 'LOGIN']);

describe('reportKnownCommand', () => {
  it('folds ASCII case only: U+017F (ſ) is not an s, so "ſtarttls" is unknown', () => {
    expect(reportKnownCommand('starttls', false, KNOWN).command).toBe('STARTTLS');
    expect(reportKnownCommand('\u017ftarttls', false, KNOWN).command).toBe('unknown');
    expect(reportKnownCommand('\u0131d', false, new Set(['ID'])).command).toBe('unknown');
  });

  it('property: a reported name is a table name or "unknown", never the client’s own text', () => {
    fc.assert(
      fc.property(
        fc.option(fc.string({ unit: 'binary' }), { nil: null }),
        fc.boolean(),
        (n, bad) => {
          const a = reportKnownCommand(n, bad, KNOWN);
          expect(a.command === 'unknown' || KNOWN.has(a.command ?? '')).toBe(true);
          if (a.command !== 'unknown')
            expect(a.command).toBe(n?.replace(/[a-z]/g, (c) => c.toUpperCase()));
          expect(a.event).toBe(bad ? 'bad-command' : 'command');
        },
      ),
    );
  });
});
