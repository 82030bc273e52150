# RFC 9112 section 3 (Request Line) and section 5 (Field Syntax), RFC 9110 section 5.6.2 (Tokens)
# and 5.5 (Field Values):
#
#   request-line = method SP request-target SP HTTP-version
#   HTTP-version = HTTP-name "/" DIGIT "." DIGIT          ; HTTP-name = %s"HTTP", case-sensitive
#   field-line   = field-name ":" OWS field-value OWS
#   field-value  = *field-content
#   field-content = field-vchar [ 1*( SP / HTAB / field-vchar ) field-vchar ]
#
# Input is ONE line, framed by hand (framer.ts cuts at LF, drops the CR before it, and refuses a
# bare CR), decoded as latin1 so one char is one octet. Two start symbols share this file:
# `requestLine` (the compiled default) and `fieldLine` (parse.ts switches ParserStart).
#
# Unambiguous by construction, and tests assert exactly one parse: every repetition is followed
# by a char it cannot contain, and a field value starts and ends with a field-vchar so the OWS
# around it has exactly one place to go (an empty value has its own alternative). obs-fold (a
# line starting with SP or HTAB) and whitespace before the colon do not parse: RFC 9112 section
# 5.1 and 5.2 require a server to reject both with 400. Postprocessors return offsets and
# lengths, never strings, so a long line costs linear time.

@preprocessor typescript

requestLine -> method " " target " " version
  {% (d) => ({ method: d[0], target: d[2], version: d[4] }) %}

method -> tchars {% (d, start) => ({ start, length: d[0] }) %}

# request-target: origin-form, absolute-form, authority-form or asterisk-form (RFC 9112 section
# 3.2). URIs are ASCII (RFC 3986), so any VCHAR run here; which form it is gets checked in code.
target -> vchars {% (d, start) => ({ start, length: d[0] }) %}

version -> "HTTP/" [0-9] "." [0-9] {% (d) => ({ major: Number(d[1]), minor: Number(d[3]) }) %}

fieldLine -> fieldName ":" ows {% (d) => ({ name: d[0], value: null }) %}
  | fieldName ":" ows fieldValue ows {% (d) => ({ name: d[0], value: d[3] }) %}

fieldName -> tchars {% (d, start) => ({ start, length: d[0] }) %}

fieldValue -> fieldVchar {% (_d, start) => ({ start, length: 1 }) %}
  | fieldVchar valueMiddle fieldVchar {% (d, start) => ({ start, length: d[1] + 2 }) %}

valueMiddle -> null {% () => 0 %}
  | valueMiddle valueChar {% (d) => d[0] + 1 %}

ows -> null {% () => null %}
  | ows [ \t] {% () => null %}

tchars -> tchar {% () => 1 %}
  | tchars tchar {% (d) => d[0] + 1 %}
vchars -> vchar {% () => 1 %}
  | vchars vchar {% (d) => d[0] + 1 %}

# tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~"
#       / DIGIT / ALPHA
tchar -> [!#$%&'*+\-.^_`|~0-9A-Za-z]
vchar -> [\x21-\x7E]
# field-vchar = VCHAR / obs-text (obs-text = %x80-FF)
fieldVchar -> [\x21-\x7E\x80-\xFF]
valueChar -> [\t\x20-\x7E\x80-\xFF]
