// The plugin as the engine will load it: the kit's shape check and option/limit resolution, the
// same functions core re-exports and runs on every listener.

import { dialectProblems, resolveLimits, resolveOptions } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import { cat, feed, search } from './helpers.js';

describe('core contract', () => {
  it('passes core dialectProblems()', () => {
    expect(dialectProblems(dialect)).toEqual([]);
  });

  it('resolves default options and limits and runs with them', () => {
    const options = resolveOptions(dialect, {});
    expect(options).toEqual({ namingContexts: [], startTlsResponseName: true });
    const limits = resolveLimits(dialect as never, { maxPdus: 2 });
    const s = dialect.create({ options, limits, hostname: 'h', connectionId: 'c' });
    expect(s.start(0)).toEqual([{ type: 'timer', at: 60_000 }]);
    const { actions } = feed(
      [cat(search(1, '', 0), search(2, '', 0), search(3, '', 0))],
      options,
      limits,
    );
    expect(actions.at(-1)?.type).toBe('close');
  });

  it('refuses bad options through core', () => {
    expect(() => resolveOptions(dialect, { namingContexts: ['dc=x\0'] })).toThrow(/DN/);
    expect(() => resolveOptions(dialect, { startTlsResponseName: 'no' })).toThrow();
    const ok = resolveOptions(dialect, { namingContexts: ['dc=example,dc=test'] });
    expect(ok.namingContexts).toEqual(['dc=example,dc=test']);
  });
});

describe('limits as data (issue 16)', () => {
  it('declares every limit with its unit, phase and source', () => {
    for (const [name, spec] of Object.entries(dialect.limits)) {
      expect(['bytes', 'ms', 'count'], name).toContain(spec.unit);
      expect(spec.phase, name).toBe('preamble');
      expect(spec.source, name).toBeTruthy();
    }
  });
});
