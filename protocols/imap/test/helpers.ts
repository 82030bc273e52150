// Shared test kit: drive one session with strings or bytes and read what it sent.
import { dec, driver, enc, only } from '@tlsproxy/dialect-kit/testing';
import { dialect, type ImapOptions } from '../src/index.js';

export { dec, enc, only };

/**
 * `newSession(options, limits)`, `feed(chunks, options, limits)` → `{ session, actions, text }`
 * (all actions after start()), and `written(actions)`: send data and close data, in order.
 */
export const { newSession, feed, written } = driver<Partial<ImapOptions>>(dialect, {
  hostname: 'mail.example',
  connectionId: 't1',
});
