// A transcript's placeholder name selects a pattern class: `${constructor}` or `${toString}`
// must be an unknown placeholder, not an Object.prototype member taken for a class.
import { describe, expect, it } from 'vitest';
import { checkPlaceholder } from '../src/pattern.js';

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
