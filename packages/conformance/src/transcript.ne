# The transcript line grammar (packages/conformance/README.md, "Transcript format").
#
# Input is ONE line of a transcript file, already framed by hand in transcript.ts: no line end,
# and comment or blank lines never reach nearley. Every repetition is a left-recursive cons list
# (newest first) and ends at a character it cannot contain, so the grammar stays unambiguous and
# a long line costs linear time; transcript.ts asserts exactly one parse per line. Postprocessors
# never copy what they are given (an array spread per element is quadratic in the line).

@preprocessor typescript

line -> header {% id %}
  | data {% id %}
  | directive {% id %}

# @server Dovecot 2.3.19.1 (imap-login) on Debian 12
header -> "@" key " " text {% (d) => ({ kind: 'header', key: d[1], value: d[3] }) %}

# C: / S: start a new chunk (one read from that side), C| / S| continue the previous chunk.
data -> dir sep " " items {% (d) => ({ kind: 'data', from: d[0], cont: d[1], items: d[3] }) %}
dir -> "C" {% () => 'client' %}
  | "S" {% () => 'server' %}
sep -> ":" {% () => false %}
  | "|" {% () => true %}

items -> item {% (d) => ({ item: d[0], rest: null }) %}
  | items item {% (d) => ({ item: d[1], rest: d[0] }) %}

item -> byte {% (d) => ({ type: 'bytes', bytes: [d[0]] }) %}
  | hexRun {% id %}
  | repeat {% id %}
  | placeholder {% id %}

# Printable ASCII stands for itself, except "\" and "$" which always start an escape.
byte -> plain {% (d) => d[0].charCodeAt(0) %}
  | escape {% id %}
plain -> [\x20-\x23\x25-\x5B\x5D-\x7E] {% id %}
escape -> "\\r" {% () => 13 %}
  | "\\n" {% () => 10 %}
  | "\\t" {% () => 9 %}
  | "\\0" {% () => 0 %}
  | "\\\\" {% () => 92 %}
  | "\\$" {% () => 36 %}
  | "\\}" {% () => 125 %}
  | "\\x" hex hex {% (d) => parseInt(d[1] + d[2], 16) %}

# \<30 0c 02 01 01> : a run of raw bytes in hex, for binary protocols (LDAP's BER).
# A cons list like `items`: copying an array per byte (as this rule once did) is quadratic.
hexRun -> "\\<" hexBytes ">" {% (d) => ({ type: 'hex', bytes: d[1] }) %}
hexBytes -> hexByte {% (d) => ({ item: d[0], rest: null }) %}
  | hexBytes hexByte {% (d) => ({ item: d[1], rest: d[0] }) %}
  | hexBytes " " hexByte {% (d) => ({ item: d[2], rest: d[0] }) %}
hexByte -> hex hex {% (d) => parseInt(d[0] + d[1], 16) %}
hex -> [0-9a-fA-F] {% id %}

# \*8200(x) : 8200 copies of one byte, so overlong-line transcripts stay readable.
repeat -> "\\*" digits "(" byte ")" {% (d) => ({ type: 'repeat', count: d[1], byte: d[3] }) %}
digits -> [0-9] {% (d) => Number(d[0]) %}
  | digits [0-9] {% (d) => d[0] * 10 + Number(d[1]) %}

# ${class +MUST !MUSTNOT:recorded text} : server text that may differ between servers. The
# recorded bytes stay in the file, so the transcript still says exactly what the server sent.
placeholder -> "${" word constraints recorded "}" {% (d) => ({ type: 'placeholder', name: d[1], constraints: d[2], recorded: d[3] }) %}
constraints -> null {% () => null %}
  | constraints " " constraint {% (d) => ({ item: d[2], rest: d[0] }) %}
constraint -> "+" cword {% (d) => ({ must: true, word: d[1] }) %}
  | "!" cword {% (d) => ({ must: false, word: d[1] }) %}
recorded -> null {% () => null %}
  | ":" pbytes {% (d) => ({ rec: d[1] }) %}
pbytes -> null {% () => null %}
  | pbytes pbyte {% (d) => ({ item: d[1], rest: d[0] }) %}
pbyte -> pplain {% (d) => d[0].charCodeAt(0) %}
  | escape {% id %}
pplain -> [\x20-\x23\x25-\x5B\x5D-\x7C\x7E] {% id %}

word -> [a-z] {% id %}
  | word [a-z] {% (d) => d[0] + d[1] %}
cword -> cchar {% id %}
  | cword cchar {% (d) => d[0] + d[1] %}
cchar -> [\x21-\x39\x3B-\x7C\x7E] {% id %}

# !tls  !close  !eof  !no-leftover  !state tag = "a"
#
# The runner is strict (README "What run checks"); two directives relax it, each on purpose:
#   !allow auth-before-tls   the whole transcript: the recorded server advertises or accepts an
#                            authentication mechanism before TLS, and so may the dialect;
#   !relax replies           the server chunk just above (its S: line and S| lines): judged by
#                            its byte pattern only, its replies are not counted or classed.
directive -> "!" key {% (d) => ({ kind: 'directive', name: d[1], path: null, value: null }) %}
  | "!allow " keys {% (d) => ({ kind: 'directive', name: 'allow', path: null, value: d[1] }) %}
  | "!relax " keys {% (d) => ({ kind: 'directive', name: 'relax', path: null, value: d[1] }) %}
  | "!state " path " = " text {% (d) => ({ kind: 'directive', name: 'state', path: d[1], value: d[3] }) %}
keys -> key {% id %}
  | keys " " key {% (d) => `${d[0]} ${d[2]}` %}
path -> pchar {% id %}
  | path pchar {% (d) => d[0] + d[1] %}
pchar -> [A-Za-z0-9_.] {% id %}

key -> [a-z] {% id %}
  | key [a-z-] {% (d) => d[0] + d[1] %}
text -> [\x20-\x7E] {% id %}
  | text [\x20-\x7E] {% (d) => d[0] + d[1] %}
