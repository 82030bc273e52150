// check-config prints the effective limits from the same declarations docs/limits.md is
// generated from (core's LISTENER_LIMITS, POOL_LIMITS; each dialect's `limits`).
import { LISTENER_LIMITS, loadDialect, POOL_LIMITS } from '@tlsproxy/core';
import { describe, expect, it } from 'vitest';
import type { LoadedConfig } from '../src/config.js';
import { describeLimits, LISTENER_DEFAULTS } from '../src/limits.js';

describe('check-config reads the limit declarations', () => {
  it('prints every declared listener limit with its declared default, and the dialect limits', async () => {
    const imap = await loadDialect('imap');
    const config = {
      raw: {},
      listeners: [{ dialect: 'imap', listen: 143, backend: 'unix:/x' }],
    } as unknown as LoadedConfig;
    const out = describeLimits(config, { count: 1, isDefault: true }, [imap]).join('\n');
    for (const [name, d] of LISTENER_LIMITS) {
      expect(LISTENER_DEFAULTS[name]).toBe(d.default);
      const shown = name === 'idleTimeoutMs' && d.default === 0 ? '0 = off' : String(d.default);
      expect(out).toMatch(new RegExp(`^ {2}${name} +${shown} \\(default\\)$`, 'm'));
    }
    const hs = POOL_LIMITS.find((l) => l.name === 'handshakeTimeoutMs');
    expect(out).toMatch(new RegExp(`^ {2}handshakeTimeoutMs +${hs?.default} \\(default\\)$`, 'm'));
    for (const [name, spec] of Object.entries(imap.limits)) {
      expect(out).toContain(`limits.${name}`);
      expect(out).toMatch(new RegExp(`limits\\.${name} +${spec.default} \\(default\\)`));
    }
  });
});
