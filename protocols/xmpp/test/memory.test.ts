// Issue 14: memory and CPU per pending connection must be O(line) with a small constant: an
// unfinished line (or PDU) is kept once, and framing work per received octet is O(1) — no
// per-read copies of what is pending, no re-scan of the whole buffer on every read, no parser
// state per octet.
import type { DialectSession } from '@tlsproxy/dialect-kit';
import { describePendingCost } from '@tlsproxy/dialect-kit/testing';
import { describe, it } from 'vitest';
import { enc, newSession } from './helpers.js';

const LIMIT = 10_000; // maxStanzaSize
const HEADER =
  "<?xml version='1.0'?><stream:stream to='localhost' version='1.0' " +
  "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
/** A start tag whose attribute value has not ended: limit - 1 octets, no '>' yet. */
const PENDING = enc(`<iq id='${'x'.repeat(LIMIT - 1 - 8)}`);
/** With the limit raised, a 120,000-octet attribute value. */
const LONG = enc(`<iq id='${'x'.repeat(120_000)}`);

function open(): DialectSession {
  const s = newSession({}, { maxStanzaSize: 200_000 });
  s.start(0);
  s.receive(enc(HEADER), 0);
  return s;
}

describePendingCost({ describe, it }, { what: 'stanza', open, pending: PENDING, long: LONG });
