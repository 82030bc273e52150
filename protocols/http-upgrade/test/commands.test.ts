// Issue 17 item 4: the request before TLS is reported by method with the kit's act.command
// (the engine counts `bad-command` events in tlsproxy_bad_commands_total and logs the name,
// never the target or a field). The report comes before the action that ends the preamble:
// the engine drops whatever a dialect returns after it.
import type { Action } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import { CUPS_UPGRADE, feed, UPGRADE } from './helpers.js';

const events = (actions: readonly Action[]) =>
  actions.flatMap((a) => (a.type === 'log' && a.event ? [`${a.event} ${a.command}`] : []));
const ending = (actions: readonly Action[]) =>
  actions.findIndex((a) => a.type === 'starttls' || a.type === 'plaintext' || a.type === 'close');
const reportIndex = (actions: readonly Action[]) =>
  actions.findIndex((a) => a.type === 'log' && a.event !== undefined);

describe('the request method is reported as a command', () => {
  it('an upgrade (OPTIONS *) as a command, before the starttls action', () => {
    for (const request of [UPGRADE, CUPS_UPGRADE]) {
      const { actions } = feed([request]);
      expect(events(actions)).toEqual(['command OPTIONS']);
      expect(reportIndex(actions)).toBeLessThan(ending(actions));
    }
  });

  it('a request without the upgrade as a bad command (426), before the close', () => {
    const { actions } = feed(['GET / HTTP/1.1\r\nHost: a\r\n\r\n']);
    expect(events(actions)).toEqual(['bad-command GET']);
    expect(reportIndex(actions)).toBeLessThan(ending(actions));
  });

  it('an upgrade with a method not in upgradeMethods as a bad command (400)', () => {
    const { actions } = feed([
      'POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n',
    ]);
    expect(events(actions)).toEqual(['bad-command POST']);
  });

  it('a plaintext hand-off as a command, before the plaintext action', () => {
    const { actions } = feed(['GET / HTTP/1.1\r\nHost: a\r\n\r\n'], { plaintext: 'handoff' });
    expect(events(actions)).toEqual(['command GET']);
    expect(reportIndex(actions)).toBeLessThan(ending(actions));
  });

  it('a request that does not parse, or an unknown method, as a bad "unknown" command', () => {
    expect(events(feed(['\x16\x03\x01\x02\x00\x01\x00']).actions)).toEqual(['bad-command unknown']);
    expect(events(feed(['HUNTER2 / HTTP/1.1\r\nHost: a\r\n\r\n']).actions)).toEqual([
      'bad-command unknown',
    ]);
  });
});
