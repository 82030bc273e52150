// Shared test kit: drive one session with strings or bytes and read what it sent.
import type { Action } from '@tlsproxy/dialect-kit';
import { dec, driver, enc, only } from '@tlsproxy/dialect-kit/testing';
import { dialect, type SmtpOptions } from '../src/index.js';

export { dec, enc, only };

/**
 * `newSession(options, limits)`, `feed(chunks, options, limits)` → `{ session, actions, text }`
 * (all actions after start()), and `written(actions)`: send data and close data, in order.
 */
export const { newSession, feed, written } = driver<Partial<SmtpOptions>>(dialect, {
  hostname: 'mail.example',
  connectionId: 't1',
});

/** The one action of a type, asserting there is exactly one. */
export function one<T extends Action['type']>(actions: Action[], type: T) {
  const found = only(actions, type);
  if (found.length !== 1) throw new Error(`expected one ${type} action, got ${found.length}`);
  return found[0]!;
}
