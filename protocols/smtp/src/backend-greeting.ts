// The greeting a legacy SMTP server sends on connect (RFC 5321 section 4.2 and 4.3.1: "220",
// possibly multi-line "220-..." ... "220 ..."), for connect-mode backends: the client already got
// ours, so the engine swallows it. Any other code (554 "no service", 421) is relayed so the
// client sees the server's own reply.

/**
 * A judge for one complete reply with `code` (RFC 5321 section 4.2.1 multi-line form): its length
 * once complete, null while incomplete, 0 if it is a reply with another code.
 */
export function replyJudge(code: string): (data: Uint8Array) => number | null {
  const want = [...code].map((c) => c.charCodeAt(0));
  const matches = (data: Uint8Array, at: number, n: number) =>
    want.slice(0, n).every((c, i) => data[at + i] === c);
  return (data) => {
    let at = 0;
    for (;;) {
      const avail = Math.min(3, data.length - at);
      if (!matches(data, at, avail)) return 0;
      const lf = data.indexOf(0x0a, at);
      if (lf < 0) {
        // Fourth octet must be "-", SP or the line end.
        if (data.length > at + 3 && ![0x2d, 0x20, 0x0d].includes(data[at + 3]!)) return 0;
        return null;
      }
      const sep = data[at + 3];
      if (lf < at + 3 || (sep !== 0x2d && sep !== 0x20 && sep !== 0x0d && sep !== 0x0a)) return 0;
      if (sep !== 0x2d) return lf + 1;
      at = lf + 1;
    }
  };
}

export const backendGreeting: (data: Uint8Array) => number | null = replyJudge('220');
