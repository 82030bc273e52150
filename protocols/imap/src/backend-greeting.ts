// The greeting a legacy IMAP server sends on connect (RFC 9051 section 7.1: "* OK", "* PREAUTH"
// or "* BYE"), for connect-mode backends: the client already got ours, so the engine swallows
// an OK greeting (Dovecot: "* OK [CAPABILITY ...] Dovecot ready."). PREAUTH and BYE are relayed:
// they are not a greeting the client may safely miss.
const OK = [0x2a, 0x20, 0x4f, 0x4b]; // "* OK" (case-insensitive)

export function backendGreeting(data: Uint8Array): number | null {
  for (let i = 0; i < OK.length && i < data.length; i++) {
    if ((data[i]! | (i >= 2 ? 0x20 : 0)) !== (OK[i]! | (i >= 2 ? 0x20 : 0))) return 0;
  }
  // "* OK" then SP, "[" or the line end.
  if (data.length > 4 && ![0x20, 0x0d, 0x0a].includes(data[4]!)) return 0;
  const lf = data.indexOf(0x0a);
  return lf < 0 ? null : lf + 1;
}
