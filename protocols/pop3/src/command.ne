# RFC 1939 section 3 (Basic Operation): "Commands in the POP3 consist of a case-insensitive
# keyword, possibly followed by one or more arguments. All commands are terminated by a CRLF
# pair. Keywords and arguments consist of printable ASCII characters. Keywords and arguments
# are each separated by a single SPACE character." RFC 2449 section 3 restates this grammar.
#
# Input is ONE framed line (see framer.ts), terminator removed, decoded as latin1 so one char is
# one octet. Arguments may also carry octets 0x80-0xFF (UTF-8 user names and passwords, which
# clients send although RFC 1939 says ASCII); control characters, empty arguments (two spaces)
# and a trailing space are syntax errors.
#
# The grammar must stay unambiguous: every repetition is followed by a character it cannot
# contain (SP or the end), and tests assert exactly one parse. Postprocessors return offsets and
# lengths rather than strings, so a long line stays linear.

@preprocessor typescript

command -> keyword arguments {% (d) => ({ keyword: d[0], args: d[1] }) %}

arguments -> null {% () => null %}
  | " " argList {% (d) => d[1] %}

# A cons list, newest first: Earley shares partial results between derivations, so
# postprocessors must never mutate. parse.ts turns it into an array once.
argList -> arg {% (d) => ({ item: d[0], rest: null }) %}
  | argList " " arg {% (d) => ({ item: d[2], rest: d[0] }) %}

keyword -> keyChars {% (d, start) => ({ start, length: d[0] }) %}
arg -> argChars {% (d, start) => ({ start, length: d[0] }) %}

keyChars -> keyChar {% () => 1 %}
  | keyChars keyChar {% (d) => d[0] + 1 %}
argChars -> argChar {% () => 1 %}
  | argChars argChar {% (d) => d[0] + 1 %}

# printable ASCII except SP
keyChar -> [\x21-\x7E]
argChar -> [\x21-\x7E\x80-\xFF]
