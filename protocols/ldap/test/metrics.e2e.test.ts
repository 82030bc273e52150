// Issue 17 item 4: the LDAP dialect's command reports reach the engine: through a real
// TlsProxy the refused simple bind is counted in tlsproxy_bad_commands_total and logged by name
// (packages/core connection-log.ts), and nothing else the client sent is logged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engineHarness, session } from '../../../fixtures/e2e.mjs';
import { dialect } from '../src/index.js';
import { simpleBind } from './helpers.js';

const h = engineHarness(dialect, { metrics: true });
let port: number;
beforeAll(async () => {
  port = await h.listen();
});
afterAll(h.close);

describe('LDAP command reports through the engine', () => {
  it('a refused simple bind is counted and logged by name, without its content', async () => {
    const before = await h.badCommands();
    await session(port, [simpleBind(1, 'cn=admin', 'hunter2')]);
    const after = await h.badCommandsReaching(before + 1);
    expect(after - before).toBe(1);
    expect(h.lines.filter((l) => l.includes('bad command')).join('\n')).toMatch(/"command":"BIND"/);
    expect(h.lines.join('\n')).not.toContain('hunter2');
  }, 20_000);
});
