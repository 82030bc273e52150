// MX mode into a legacy (connect-mode) server: the dialect answered the client's EHLO itself, so
// the server never heard it and would refuse the MAIL command that follows with "503 5.5.1 send
// HELO/EHLO first" (RFC 5321 section 4.1.4: a session starts with EHLO or HELO). Replay the
// client's own greeting command and swallow the server's 250 reply — the client already got ours.
import { replyJudge } from './backend-greeting.js';

const encoder = new TextEncoder();

/** `state` is the plaintext action's: `{ ehlo: name | null, esmtp: boolean }`. */
export function backendReplay(
  state: Record<string, unknown>,
): { send: Uint8Array; reply: (data: Uint8Array) => number | null } | null {
  const name = state.ehlo;
  // The dialect checked the name when the client sent it; check again, as this crosses a process.
  if (typeof name !== 'string' || !/^[\x21-\x7e]{1,255}$/.test(name)) return null;
  const verb = state.esmtp === false ? 'HELO' : 'EHLO';
  return { send: encoder.encode(`${verb} ${name}\r\n`), reply: okReply };
}

/** A complete 250 reply (one line or "250-" ... "250 "): swallowed; any other code: relayed. */
const okReply = replyJudge('250');
