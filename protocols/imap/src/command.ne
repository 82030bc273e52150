# RFC 9051 section 9 (Formal Syntax) and RFC 3501 section 9: `command`, `tag`, `atom`,
# `quoted`, `literal`, parenthesised lists; RFC 7888 for `{n+}` non-synchronizing literals.
#
# Input is ONE framed command (see framer.ts): line parts joined with literal data removed, so a
# literal appears only as its `{n}` / `{n+}` marker and the framer records where each real
# literal marker ends. Text is decoded as latin1 so that one char is one byte.
#
# The grammar must stay unambiguous: every repetition is followed by a character it cannot
# contain, and tests assert exactly one parse. Postprocessors return offsets and lengths rather
# than building strings char by char, which keeps a long line linear instead of quadratic.

@preprocessor typescript

# tag = 1*<any ASTRING-CHAR except "+">
command -> tag " " name arguments {% (d) => ({ tag: d[0], name: d[2], args: d[3] }) %}

arguments -> null {% () => null %}
  | " " argList {% (d) => d[1] %}

# A cons list, newest first: Earley shares partial results between derivations (every prefix
# of an atom completes an `arg`), so postprocessors must never mutate, and copying an array on
# each step would be quadratic. parse.ts turns it into an array once.
argList -> arg {% (d) => ({ item: d[0], rest: null }) %}
  | argList " " arg {% (d) => ({ item: d[2], rest: d[0] }) %}

arg -> atom {% id %}
  | quoted {% id %}
  | literal {% id %}
  | list {% id %}

list -> "(" ")" {% (_d, start) => ({ type: 'list', start, items: null }) %}
  | "(" argList ")" {% (d, start) => ({ type: 'list', start, items: d[1] }) %}

tag -> tagChars {% (d, start) => ({ start, length: d[0] }) %}
name -> atomChars {% (d, start) => ({ start, length: d[0] }) %}

# Arguments are looser than ATOM-CHAR: "%", "*", "]" and "\" (flags) are allowed, because this
# front end only needs to find where arguments end, not to validate every command's syntax.
atom -> argChars {% (d, start) => ({ type: 'atom', start, length: d[0] }) %}

quoted -> "\"" quotedChars "\"" {% (d, start) => ({ type: 'quoted', start, length: d[1] + 2 }) %}

# literal = "{" number64 ["+"] "}" CRLF *CHAR8 -- only the marker is in the text.
literal -> "{" digits "}" {% (d, start) => ({ type: 'literal', start, length: d[1] + 2, sync: true }) %}
  | "{" digits "+}" {% (d, start) => ({ type: 'literal', start, length: d[1] + 3, sync: false }) %}

tagChars -> tagChar {% () => 1 %}
  | tagChars tagChar {% (d) => d[0] + 1 %}
atomChars -> atomChar {% () => 1 %}
  | atomChars atomChar {% (d) => d[0] + 1 %}
argChars -> argChar {% () => 1 %}
  | argChars argChar {% (d) => d[0] + 1 %}
digits -> [0-9] {% () => 1 %}
  | digits [0-9] {% (d) => d[0] + 1 %}
quotedChars -> null {% () => 0 %}
  | quotedChars quotedChar {% (d) => d[0] + d[1] %}

# QUOTED-CHAR = <any TEXT-CHAR except quoted-specials> / "\" quoted-specials / UTF8-2..4
# (UTF-8 bytes arrive as latin1 chars 0x80-0xFF).
quotedChar -> [\x01-\x09\x0B\x0C\x0E-\x21\x23-\x5B\x5D-\xFF] {% () => 1 %}
  | "\\" ["\\] {% () => 2 %}

# ASTRING-CHAR except "+": ATOM-CHAR plus "]" (resp-specials), minus "+".
tagChar -> [\x21\x23\x24\x26\x27\x2C-\x5B\x5D-\x7A\x7C-\x7E]
# ATOM-CHAR: any CHAR except atom-specials "(" ")" "{" SP CTL "%" "*" DQUOTE "\" "]"
atomChar -> [\x21\x23\x24\x26\x27\x2B-\x5B\x5E-\x7A\x7C-\x7E]
argChar -> [\x21\x23-\x27\x2A-\x7A\x7C-\x7E]
