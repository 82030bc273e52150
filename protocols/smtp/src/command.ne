# RFC 5321 section 4.1.1 (Command Semantics and Syntax) and 4.1.2 (Command Argument Syntax);
# RFC 3207 section 4 (STARTTLS); RFC 4954 section 4 (AUTH); RFC 3030 section 2 (BDAT);
# RFC 1985 (ETRN).
#
# Input is ONE framed line (see framer.ts) without its CRLF and without trailing spaces, decoded
# as latin1 so one char is one octet. Command words are case-insensitive (RFC 5321 section 2.4).
# Arguments are parsed only as far as this front end needs: which command it is, the EHLO name,
# and whether the shape is right. MAIL and RCPT paths are kept as text; in MX mode the MAIL line
# goes to the backend verbatim and the backend's own parser decides.
#
# The grammar must stay unambiguous: every repetition is followed by a character it cannot
# contain (or by the end), and tests assert exactly one parse. Postprocessors return offsets and
# lengths, not strings built char by char, which keeps a long line linear.

@preprocessor typescript

command -> "EHLO"i SP domain {% (d) => ({ verb: 'EHLO', arg: d[2] }) %}
  | "HELO"i SP domain {% (d) => ({ verb: 'HELO', arg: d[2] }) %}
  | "MAIL"i SP "FROM:"i text {% (d) => ({ verb: 'MAIL', arg: d[3] }) %}
  | "RCPT"i SP "TO:"i text {% (d) => ({ verb: 'RCPT', arg: d[3] }) %}
  | "DATA"i {% () => ({ verb: 'DATA', arg: null }) %}
  | "BDAT"i SP size bdatLast {% (d) => ({ verb: 'BDAT', arg: d[2] }) %}
  | "RSET"i {% () => ({ verb: 'RSET', arg: null }) %}
  | "NOOP"i optText {% (d) => ({ verb: 'NOOP', arg: d[1] }) %}
  | "HELP"i optText {% (d) => ({ verb: 'HELP', arg: d[1] }) %}
  | "QUIT"i {% () => ({ verb: 'QUIT', arg: null }) %}
  | "STARTTLS"i {% () => ({ verb: 'STARTTLS', arg: null }) %}
  | "AUTH"i SP mechanism optText {% (d) => ({ verb: 'AUTH', arg: d[2] }) %}
  | "VRFY"i SP text {% (d) => ({ verb: 'VRFY', arg: d[2] }) %}
  | "EXPN"i SP text {% (d) => ({ verb: 'EXPN', arg: d[2] }) %}
  | "ETRN"i SP text {% (d) => ({ verb: 'ETRN', arg: d[2] }) %}

SP -> " " {% () => null %}

optText -> null {% () => null %}
  | SP text {% (d) => d[1] %}

bdatLast -> null {% () => null %}
  | SP "LAST"i {% () => null %}

# Domain / address-literal (RFC 5321 section 4.1.2), loosely: one word of visible characters
# (UTF-8 octets allowed for RFC 6531 SMTPUTF8 names). Real servers accept sloppy HELO names.
domain -> dchars {% (d, start) => ({ start, length: d[0] }) %}
# sasl-mech = 1*20(UPPER-ALPHA / DIGIT / "-" / "_") (RFC 4422), any case here.
mechanism -> mchars {% (d, start) => ({ start, length: d[0] }) %}
# chunk-size = 1*DIGIT (RFC 3030 section 2)
size -> digits {% (d, start) => ({ start, length: d[0] }) %}
digits -> digit {% () => 1 %}
  | digits digit {% (d) => d[0] + 1 %}
# String / Reverse-path and parameters: visible characters and spaces, no controls.
text -> tchars {% (d, start) => ({ start, length: d[0] }) %}

dchars -> dchar {% () => 1 %}
  | dchars dchar {% (d) => d[0] + 1 %}
mchars -> mchar {% () => 1 %}
  | mchars mchar {% (d) => d[0] + 1 %}
tchars -> tchar {% () => 1 %}
  | tchars tchar {% (d) => d[0] + 1 %}

digit -> [0-9]
dchar -> [\x21-\x7E\x80-\xFF]
mchar -> [A-Za-z0-9_-]
tchar -> [\x20-\x7E\x80-\xFF]
