// Small constructors so dialects read as protocol code, not object literals. Text is encoded as
// UTF-8 (ASCII for the text protocols' replies); octets pass through unchanged.
import { ascii } from './bytes.js';
import type { Action, CloseAction, LogAction, SendAction, TimerAction } from './contract.js';
import { upperAscii } from './lines.js';

const toBytes = (data: string | Uint8Array): Uint8Array =>
  typeof data === 'string' ? ascii(data) : data;

export function send(data: string | Uint8Array): SendAction {
  return { type: 'send', data: toBytes(data) };
}
/** Close, writing `data` first when there is any (an empty reply writes nothing). */
export function close(reason: string, data?: string | Uint8Array): CloseAction {
  return data === undefined || data.length === 0
    ? { type: 'close', reason }
    : { type: 'close', reason, data: toBytes(data) };
}
export function timer(at: number): TimerAction {
  return { type: 'timer', at };
}
export function log(level: LogAction['level'], message: string): LogAction {
  return { type: 'log', level, message };
}
/** Report a pre-TLS command by NAME for the engine's logs and metrics (`bad`: refused as invalid). */
export function reportCommand(name: string, bad = false): LogAction {
  return {
    type: 'log',
    level: bad ? 'info' : 'debug',
    message: bad ? 'bad command' : 'command',
    event: bad ? 'bad-command' : 'command',
    command: name,
  };
}
/**
 * Report a pre-TLS command for the engine's logs and `tlsproxy_bad_commands_total`. Only names
 * from the dialect's own command table are reported, as `unknown` otherwise, so a client's words
 * (a password typed as a command) never reach a log.
 */
export function reportKnownCommand(
  name: string | null,
  bad: boolean,
  known: ReadonlySet<string>,
): LogAction {
  // ASCII-only: toUpperCase() folds 'ſtarttls' (U+017F) into STARTTLS, a name the client never sent.
  const upper = name === null ? undefined : upperAscii(name);
  return reportCommand(upper !== undefined && known.has(upper) ? upper : 'unknown', bad);
}
export function bytes(s: string): Uint8Array {
  return ascii(s);
}
/** The same builders as one object, for dialects that write `act.send(...)`. */
export const act = {
  send,
  close,
  timer,
  log,
  command: reportKnownCommand,
} as const;
export type { Action };
