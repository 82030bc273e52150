// The plugin as the engine will load it: the kit's shape check and option/limit resolution, the
// same functions core re-exports and runs on every listener.

import { dialectProblems, resolveLimits, resolveOptions } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { dialect } from '../src/index.js';
import { feed, HEADER_C2S } from './helpers.js';

describe('core contract', () => {
  it('passes core dialectProblems()', () => {
    expect(dialectProblems(dialect)).toEqual([]);
  });

  it('resolves default options and limits and runs with them', () => {
    const options = resolveOptions(dialect, {});
    const limits = resolveLimits(dialect as never, { maxStanzaSize: 50 });
    const s = dialect.create({ options, limits, hostname: 'h', connectionId: 'c' });
    expect(s.start(0).length).toBeGreaterThan(0);
    expect(feed([HEADER_C2S], options, limits).text).toMatch(/<policy-violation /);
  });

  it('refuses bad options through core', () => {
    expect(() => resolveOptions(dialect, { domains: ['not a domain'] })).toThrow();
    expect(() => resolveOptions(dialect, { lang: "en'><x" })).toThrow();
    expect(resolveOptions(dialect, { domains: ['*.example.com', 'example.com'] })).toMatchObject({
      domains: ['*.example.com', 'example.com'],
    });
  });

  it('the built package has no runtime import of core', async () => {
    const { readFileSync, readdirSync } = await import('node:fs');
    const dir = new URL('../src/', import.meta.url);
    for (const f of readdirSync(dir)) {
      const src = readFileSync(new URL(f, dir), 'utf8');
      for (const m of src.matchAll(/^import (?!type)[^;]*from '([^']+)'/gm)) {
        expect(m[1]).not.toMatch(/@tlsproxy\/core/);
      }
    }
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
