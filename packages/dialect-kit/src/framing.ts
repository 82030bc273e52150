// Framers for the common shapes beyond CRLF lines (`lines.ts`), reusable by any dialect:
// IMAP-style atoms, quoted strings and `{n}`/`{n+}` literals (`CommandFramer`, `tokenizeLine`),
// and PDUs that carry their own length — a length field or a BER definite length
// (`PduFramer` with `lengthPrefixed` or `berDefiniteLength`). All are sans-I/O, O(input), take
// their limits as data and never throw on peer input: a refusal is an event.
export * from './framing-pdu.js';
export * from './framing-strings.js';
