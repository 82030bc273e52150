// Small constructors so dialects read as protocol code, not object literals.
import type { Action, CloseAction, LogAction, SendAction, TimerAction } from './dialect.js';

const enc = new TextEncoder();

export function send(data: string | Uint8Array): SendAction {
  return { type: 'send', data: typeof data === 'string' ? enc.encode(data) : data };
}
export function close(reason: string, data?: string | Uint8Array): CloseAction {
  return data === undefined
    ? { type: 'close', reason }
    : { type: 'close', reason, data: typeof data === 'string' ? enc.encode(data) : data };
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
export function bytes(s: string): Uint8Array {
  return enc.encode(s);
}
export type { Action };
