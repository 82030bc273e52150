// Issue 17 item 4: every request before StartTLS is reported by operation name with the kit's
// act.command (the engine counts `bad-command` events in tlsproxy_bad_commands_total and logs
// the name, never the request's content).
import type { Action } from '@tlsproxy/dialect-kit';
import { describe, expect, it } from 'vitest';
import {
  abandon,
  extended,
  feed,
  int,
  msg,
  search,
  seq,
  simpleBind,
  startTls,
  str,
  tlv,
  unbind,
} from './helpers.js';

const events = (actions: readonly Action[]) =>
  actions.flatMap((a) => (a.type === 'log' && a.event ? [`${a.event} ${a.command}`] : []));
const run = (...pdus: Uint8Array[]) => events(feed(pdus, {}, { maxBadPdus: 100 }).actions);

describe('LDAP operations are reported as commands', () => {
  it('StartTLS as STARTTLS, the root DSE search as SEARCH', () => {
    expect(run(search(1, '', 0, ['supportedExtension']), startTls(2))).toEqual([
      'command SEARCH',
      'command STARTTLS',
    ]);
  });

  it('refused requests as bad commands, by operation', () => {
    expect(
      run(
        simpleBind(1, 'cn=admin,dc=example', 'secret'),
        search(2, 'dc=example', 2),
        extended(3, '1.3.6.1.4.1.4203.1.11.3'), // Who am I?
        extended(4, '1.3.6.1.4.1.1466.20037', 'value'), // StartTLS with a value
        msg(5, tlv(0x4a, new TextEncoder().encode('cn=x'))), // delete
        msg(6, tlv(0x66, str('cn=x'), seq())), // modify
        msg(7, tlv(0x68, str('cn=x'), seq())), // add
        msg(8, tlv(0x6c, str('cn=x'), str('cn=y'), tlv(0x01, Uint8Array.of(0)))), // modDN
        msg(9, tlv(0x6e, str('cn=x'), seq(str('cn'), str('x')))), // compare
      ),
    ).toEqual([
      'bad-command BIND',
      'bad-command SEARCH',
      'bad-command EXTENDED',
      'bad-command STARTTLS',
      'bad-command DELETE',
      'bad-command MODIFY',
      'bad-command ADD',
      'bad-command MODDN',
      'bad-command COMPARE',
    ]);
  });

  it('ABANDON and UNBIND as commands', () => {
    expect(run(abandon(1, 7), unbind(2))).toEqual(['command ABANDON', 'command UNBIND']);
  });

  it('an unknown request or malformed BER as a bad "unknown" command', () => {
    expect(run(msg(1, tlv(0x7f, int(1))))).toEqual(['bad-command unknown']);
    expect(run(Uint8Array.of(0x31, 0x00))).toEqual(['bad-command unknown']);
  });

  it('the password of a bind never reaches a log action', () => {
    const { actions } = feed([simpleBind(1, 'cn=admin', 'hunter2')]);
    for (const a of actions) {
      if (a.type === 'log') expect(JSON.stringify(a)).not.toContain('hunter2');
    }
  });
});
