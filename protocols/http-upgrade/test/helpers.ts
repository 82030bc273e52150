// Shared test kit: drive one session with strings or bytes and read what it sent.
import { dec, driver, enc, only } from '@tlsproxy/dialect-kit/testing';
import { dialect, type HttpUpgradeOptions } from '../src/index.js';

export { dec, enc, only };

/**
 * `newSession(options, limits)`, `feed(chunks, options, limits)` → `{ session, actions, text }`
 * (all actions after start()), and `written(actions)`: send data, close data and the go-ahead, in order.
 */
export const { newSession, feed, written } = driver<Partial<HttpUpgradeOptions>>(dialect, {
  hostname: 'www.example',
  connectionId: 't1',
  goAhead: true,
});

/** The status line of the first response written. */
export const status = (text: string): string => text.split('\r\n')[0] ?? '';

/** An upgrade request as CUPS sends it (cups/http.c http_send with HTTP_FIELD_UPGRADE). */
export const CUPS_UPGRADE =
  'OPTIONS * HTTP/1.1\r\nDate: Thu, 27 Nov 2025 07:00:00 GMT\r\nAccept-Language: en-US\r\n' +
  'Connection: Upgrade\r\nHost: localhost:631\r\nUpgrade: TLS/1.2,TLS/1.1,TLS/1.0\r\n' +
  'User-Agent: CUPS/2.4.2 (Linux 6.1; x86_64) IPP/2.0\r\n\r\n';

export const UPGRADE =
  'OPTIONS * HTTP/1.1\r\nHost: a\r\nUpgrade: TLS/1.0\r\nConnection: Upgrade\r\n\r\n';
