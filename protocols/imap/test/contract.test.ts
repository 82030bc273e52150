// The plugin as the engine will load it: the kit's shape check and option/limit resolution, the
// same functions core re-exports and runs on every listener.

import { dialectProblems, resolveLimits, resolveOptions } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import { feed } from './helpers.js';

describe('core contract', () => {
  it('passes core dialectProblems()', () => {
    expect(dialectProblems(dialect)).toEqual([]);
  });

  it('resolves default options and limits and runs with them', () => {
    const options = resolveOptions(dialect, {});
    const limits = resolveLimits(dialect as never, { maxCommands: 2 });
    const s = dialect.create({ options, limits, hostname: 'h', connectionId: 'c' });
    expect(s.start(0).length).toBeGreaterThan(0);
    expect(feed(['a NOOP\r\nb NOOP\r\nc NOOP\r\n'], options, limits).text).toMatch(/\* BYE/);
  });

  it('refuses bad options through core', () => {
    expect(() => resolveOptions(dialect, { capabilities: ['IMAP4rev1', 'AUTH=PLAIN'] })).toThrow(
      /AUTH=/,
    );
    expect(() => resolveOptions(dialect, { greeting: 'bad\r\n* OK injected' })).toThrow();
    expect(() => resolveOptions(dialect, { idResponse: '("a" "b"' })).toThrow();
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
