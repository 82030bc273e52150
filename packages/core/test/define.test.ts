// Option and limit names come from the operator's config: a name that happens to be an
// Object.prototype member (`toString`, `constructor`, `__proto__`) is an unknown name like any
// other, never a silently accepted one.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { resolveLimits, resolveOptions } from '../src/define.js';
import type { Dialect } from '../src/dialect.js';

const dialect: Dialect = {
  name: 'd',
  defaultPorts: {},
  options: { greeting: { type: 'string', default: 'hi', description: 'x' } },
  limits: { maxLine: { default: 10, description: 'x' } },
  create: () => ({ start: () => [], receive: () => [], timer: () => [], tlsUnavailable: () => [] }),
};
const protoNames = Object.getOwnPropertyNames(Object.prototype);

describe('resolveOptions / resolveLimits', () => {
  it('prototype names are unknown options and limits', () => {
    for (const name of protoNames) {
      const raw = JSON.parse(`{"${name}": 1}`) as Record<string, unknown>;
      expect(() => resolveOptions(dialect, raw), name).toThrow(/unknown option/);
      expect(() => resolveLimits(dialect, raw), name).toThrow(/unknown limit/);
    }
  });

  it('any other unknown name is refused, known ones are taken', () => {
    fc.assert(
      fc.property(fc.string(), (name) => {
        const raw = Object.fromEntries([[name, 5]]);
        if (name === 'maxLine') expect(resolveLimits(dialect, raw).maxLine).toBe(5);
        else expect(() => resolveLimits(dialect, raw)).toThrow(/unknown limit/);
      }),
    );
  });
});
