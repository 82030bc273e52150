// The plugin as the engine will load it: the kit's shape check and option/limit resolution, the
// same functions core re-exports and runs on every listener.

import {
  dialectProblems,
  optionProblem,
  resolveLimits,
  resolveOptions,
} from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import dialectDefault, { dialect } from '../src/index.js';
import { feed, status, UPGRADE } from './helpers.js';

describe('core contract', () => {
  it('passes core dialectProblems() and has sourced limits', () => {
    expect(dialectDefault).toBe(dialect);
    expect(dialectProblems(dialect)).toEqual([]);
    expect(dialect.name).toBe('http-upgrade');
    for (const spec of Object.values(dialect.limits)) {
      expect(spec.default).toBeGreaterThan(0);
      expect(spec.source).toBeTruthy();
    }
    for (const [name, spec] of Object.entries(dialect.options)) {
      expect(optionProblem(spec, spec.default), name).toBeUndefined();
    }
  });

  it('resolves default options and limits and runs with them', () => {
    const options = resolveOptions(dialect, {});
    expect(options).toEqual({
      plaintext: 'refuse',
      rawRequest: false,
      upgradeMethods: ['OPTIONS'],
    });
    const limits = resolveLimits(dialect as never, { maxHeaderFields: 2 });
    const s = dialect.create({ options, limits, hostname: 'h', connectionId: 'c' });
    expect(s.start(0)).toEqual([{ type: 'timer', at: 60_000 }]);
    expect(status(feed([UPGRADE], options, limits).text)).toBe(
      'HTTP/1.1 431 Request Header Fields Too Large',
    );
  });

  it('refuses bad options through core', () => {
    expect(() => resolveOptions(dialect, { plaintext: 'yes' })).toThrow(/refuse/);
    expect(() => resolveOptions(dialect, { rawRequest: 'yes' })).toThrow();
    for (const bad of [[], ['GET', 'GET'], ['GET /'], [''], 'GET', [1]]) {
      expect(() => resolveOptions(dialect, { upgradeMethods: bad }), JSON.stringify(bad)).toThrow();
    }
    expect(resolveOptions(dialect, { upgradeMethods: ['OPTIONS', 'GET'] })).toMatchObject({
      upgradeMethods: ['OPTIONS', 'GET'],
    });
    expect(resolveOptions(dialect, { plaintext: 'handoff' })).toMatchObject({
      plaintext: 'handoff',
    });
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
