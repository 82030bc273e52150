// The greeting a legacy POP3 server sends on connect (RFC 1939 section 4: "+OK ..." on one
// line), for connect-mode backends: the client already got ours, so the engine swallows it.
// "-ERR" (e.g. too many connections) is relayed so the client sees the server's reason.
const OK = [0x2b, 0x4f, 0x4b]; // "+OK" (case-insensitive)

export function backendGreeting(data: Uint8Array): number | null {
  for (let i = 0; i < OK.length && i < data.length; i++) {
    if ((data[i]! | (i >= 1 ? 0x20 : 0)) !== (OK[i]! | (i >= 1 ? 0x20 : 0))) return 0;
  }
  if (data.length > 3 && ![0x20, 0x0d, 0x0a].includes(data[3]!)) return 0;
  const lf = data.indexOf(0x0a);
  return lf < 0 ? null : lf + 1;
}
