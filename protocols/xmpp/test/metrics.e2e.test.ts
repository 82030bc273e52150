// Issue 17 item 4: the XMPP dialect's command reports reach the engine: through a real
// TlsProxy the refused SASL <auth/> is counted in tlsproxy_bad_commands_total and logged by name
// (packages/core connection-log.ts), and nothing else the client sent is logged.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { engineHarness, session } from '../../../fixtures/e2e.mjs';
import { dialect } from '../src/index.js';

const h = engineHarness(dialect, {
  listener: { options: { domains: ['localhost'] } },
  metrics: true,
});
let port: number;
beforeAll(async () => {
  port = await h.listen();
});
afterAll(h.close);

describe('XMPP command reports through the engine', () => {
  it('a refused SASL <auth/> is counted and logged by name, without its content', async () => {
    const before = await h.badCommands();
    await session(port, [
      new TextEncoder().encode(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>",
      ),
      new TextEncoder().encode(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAGh1bnRlcjI=</auth>",
      ),
      new TextEncoder().encode('<presence/>'),
    ]);
    const after = await h.badCommandsReaching(before + 2);
    expect(after - before).toBe(2);
    expect(h.lines.filter((l) => l.includes('bad command')).join('\n')).toMatch(
      /"command":"AUTH"[\s\S]*"command":"PRESENCE"/,
    );
    expect(h.lines.join('\n')).not.toContain('AGFsaWNlAGh1bnRlcjI=');
  }, 20_000);
});
