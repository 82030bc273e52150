#!/usr/bin/env bash
# Record transcripts/ from Debian's INN 2.7 (nnrpd) on loopback, as root:
#
#   DEBIAN_FRONTEND=noninteractive apt-get install -y inn2   # needs "domain:" in inn.conf, see below
#   ./record.sh                                  # in this repository: its test certificate
#   CERT=server.pem KEY=server.key CA=ca.pem ./record.sh   # anywhere else: your own
#
# A throwaway nnrpd (INN's reader daemon, which implements STARTTLS, RFC 4642) runs in the
# foreground of this script on the loopback alias 127.0.0.2 (all of 127/8 is loopback on Linux,
# nothing to configure), so the recorder's connection to it comes from another address than the
# server's own: servers that trust "local" clients (Dovecot treats a client on its own address
# as secure and offers AUTH= before TLS) then behave as they do for a remote client. It has a
# private inn.conf (CERT/KEY as tlscertfile/tlskeyfile, a private overview directory) and a
# readers.conf that lets anyone read. Each case is one connection relayed by
# `tlsproxy-conformance record` from 127.0.0.1:$RELAY_PORT; the clients verify the server's
# certificate against CA. The server is stopped by its process id when the script ends,
# whatever happens. OUT=DIR records somewhere else than transcripts/.
#
# Debian's inn2 post-install script fails on a host whose name has no domain: set one with
#   sed -i 's/^#domain:$/domain: example.net/' /etc/news/inn.conf && dpkg --configure inn2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$here/transcripts}
certs="$here/../../fixtures/certs" # this repository's test PKI, when run inside it
cert=${CERT:-$certs/server.pem}
key=${KEY:-$certs/server.key}
ca=${CA:-$certs/ca.pem}
for f in "$cert" "$key" "$ca"; do
  [ -r "$f" ] || { echo "record.sh: $f missing: set CERT, KEY and CA" >&2; exit 1; }
done
server_ip=127.0.0.2
# The recorder of the installed @tlsproxy/conformance (a dev dependency, or this workspace's).
recorder=$(cd "$here" && node -p "require('node:path').join(require.resolve('@tlsproxy/conformance/package.json'), '../bin/tlsproxy-conformance.js')")
up=${NNRPD_PORT:-11119}
P=${RELAY_PORT:-11998}
nnrpd=/usr/lib/news/bin/nnrpd

[ -x "$nnrpd" ] || { echo "record.sh: $nnrpd missing: apt-get install -y inn2" >&2; exit 1; }
state=$(mktemp -d /tmp/nntp-record.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$state"
}
trap cleanup EXIT

# --- a private INN configuration ------------------------------------------------------------
chmod 755 "$state"
mkdir -p "$state/overview" "$state/run" "$state/tmp"
cp "$cert" "$state/server.pem"
cp "$key" "$state/server.key"
chmod 600 "$state/server.key"
sed -e "s|^#tlscertfile:.*|tlscertfile: $state/server.pem|" \
  -e "s|^#tlskeyfile:.*|tlskeyfile: $state/server.key|" \
  -e "s|^pathoverview:.*|pathoverview: $state/overview|" \
  -e "s|^pathrun:.*|pathrun: $state/run|" -e "s|^pathtmp:.*|pathtmp: $state/tmp|" \
  -e 's|^#domain:$|domain: example.net|' /etc/news/inn.conf >"$state/inn.conf"
cat >"$state/readers.conf" <<'EOF'
auth "anyone" {
    hosts: "*"
    default: "<reader>"
}
access "reader" {
    users: "<reader>"
    newsgroups: "*"
    access: RPA
}
EOF
chown -R news:news "$state"
export INNCONF=$state/inn.conf
# nnrpd opens the overview read-only; build an empty one (no articles) for it.
su news -s /bin/sh -c "INNCONF=$INNCONF timeout 60 /usr/lib/news/bin/makehistory -O -x -F"
start_nnrpd() {
  (cd "$state" && exec timeout 900 "$nnrpd" -D -f -n -o -4 "$server_ip" -p "$up" -c "$state/readers.conf") &
  pid=$!
  for _ in $(seq 50); do (echo >/dev/tcp/"$server_ip"/"$up") 2>/dev/null && break; sleep 0.1; done
}
start_nnrpd
version=$(printf 'QUIT\r\n' | timeout 5 bash -c "exec 3<>/dev/tcp/$server_ip/$up; cat <&0 >&3 & head -1 <&3" |
  sed -n 's/.*\(INN [0-9.]*\).*/\1/p')
server="$version (nnrpd -D, Debian $(dpkg-query -W -f='${Version}' inn2)) on Debian $(cat /etc/debian_version), tlscertfile set, readers.conf: anyone may read and post"

# --- one recorded connection --------------------------------------------------------------
#   record_one NAME CLIENT-TEXT -- CLIENT-COMMAND...   (the command connects to 127.0.0.1:$P)
record_one() {
  local name=$1 client=$2
  shift 3
  local log
  log=$(mktemp)
  node "$recorder" record --listen "127.0.0.1:$P" --upstream "$server_ip:$up" --dialect nntp \
    --out "$out/$name.txt" --server "$server" --client "$client" >"$log" 2>&1 &
  local rec=$!
  for _ in $(seq 50); do grep -q listening "$log" && break; sleep 0.1; done
  "$@" >/dev/null 2>&1 </dev/null || true
  for _ in $(seq 50); do kill -0 "$rec" 2>/dev/null || break; sleep 0.1; done
  kill "$rec" 2>/dev/null || true
  wait "$rec" 2>/dev/null || true
  rm -f "$log"
  annotate "$out/$name.txt"
  echo "recorded $out/$name.txt"
}

# Placeholders (see packages/conformance/README.md): reply codes and line ends stay exact, the
# human-readable text after a code is ${text}. In the CAPABILITIES list, VERSION 2, READER,
# STARTTLS and the final "." are exact; every other capability INN offers (IMPLEMENTATION,
# AUTHINFO SASL, COMPRESS, HDR, LIST, OVER, POST, SASL, XPAT) is an ${any}, so a dialect may
# leave it out (and must: AUTHINFO, SASL and COMPRESS have no place before TLS).
annotate() {
  sed -E -i \
    -e '/^S[:|] (VERSION 2|READER|STARTTLS|\.)\\r\\n$/b' \
    -e 's/^(S[:|] )([0-9]{3}) (.*)\\r\\n$/\1\2 ${text:\3}\\r\\n/' \
    -e 's/^(S[:|] )([A-Z][A-Z0-9 .=-]*)\\r\\n$/\1${any:\2\\r\\n}/' \
    "$1"
}

mkdir -p "$out"
drive() { echo "node drive.mjs --ca CA.pem PORT $*"; }

record_one openssl-s_client \
  "timeout 10 openssl s_client -starttls nntp -connect 127.0.0.1:PORT -CAfile CA.pem -servername localhost </dev/null" -- \
  timeout 10 openssl s_client -starttls nntp -connect "127.0.0.1:$P" -CAfile "$ca" -servername localhost
record_one python-nntplib "python3 nntplib-client.py PORT CA.pem (Python $(python3 -c 'import sys; print(sys.version.split()[0])') nntplib)" -- \
  timeout 10 python3 "$here/nntplib-client.py" "$P" "$ca"

# name | steps for drive.mjs (a real exchange, then a TLS handshake or QUIT)
cases=(
  "capabilities-mode-reader-quit|wait:^20|send:CAPABILITIES\\r\\n|wait:^\\.\\r|send:MODE READER\\r\\n|wait:^20|send:QUIT\\r\\n|wait:^205|pause:300"
  "authinfo-user-before-tls|wait:^20|send:AUTHINFO USER alice\\r\\n|wait:^4|send:STARTTLS\\r\\n|wait:^382|tls"
  "authinfo-sasl-before-tls|wait:^20|send:AUTHINFO SASL PLAIN AGFsaWNlAHNlY3JldA==\\r\\n|wait:^4|send:STARTTLS\\r\\n|wait:^382|tls"
  "unknown-command|wait:^20|send:FROB\\r\\n|wait:^5|send:STARTTLS\\r\\n|wait:^382|tls"
  "starttls-with-arguments|wait:^20|send:STARTTLS now\\r\\n|wait:^5|send:STARTTLS\\r\\n|wait:^382|tls"
  "pipelined-after-starttls|wait:^20|send:STARTTLS\\r\\nCAPABILITIES\\r\\nAUTHINFO USER alice\\r\\n|wait:^382|tls"
  "lowercase|wait:^20|send:capabilities\\r\\n|wait:^\\.\\r|send:mode reader\\r\\n|wait:^20|send:starttls\\r\\n|wait:^382|tls"
  "bare-lf|wait:^20|send:CAPABILITIES\\n|wait:^\\.\\r|send:STARTTLS\\n|wait:^382|tls"
  "split-command|wait:^20|send:CAPA|pause:100|send:BILITIES\\r|pause:100|send:\\nSTAR|pause:100|send:TTLS\\r\\n|wait:^382|tls"
  "overlong-line|wait:^20|send:MODE rep(600,x)\\r\\n|wait:^5|send:STARTTLS\\r\\n|wait:^382|tls"
  "eof-before-starttls|wait:^20|send:MODE READER\\r\\n|wait:^20|end|pause:300"
)
for c in "${cases[@]}"; do
  name=${c%%|*}
  IFS='|' read -r -a steps <<<"${c#*|}"
  record_one "$name" "$(drive "${steps[@]}")" -- node "$here/drive.mjs" --ca "$ca" "$P" "${steps[@]}"
done

# --- client transcripts: our client side (client.mjs) against the same INN -------------------
# injection.txt and no-starttls.txt are derived from starttls.txt by hand (see their @client).
cout=${CLIENT_OUT:-$here/client-transcripts}
mkdir -p "$cout"
node "$here/record-client.mjs" --ca "$ca" --upstream "$server_ip:$up" --out "$cout/starttls.txt" \
  --server "$server"
# Without a certificate INN still lists STARTTLS, and answers it with 580.
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
pid=
sed -i -e '/^tlscertfile:/d' -e '/^tlskeyfile:/d' "$state/inn.conf"
start_nnrpd
node "$here/record-client.mjs" --ca "$ca" --upstream "$server_ip:$up" \
  --out "$cout/starttls-refused.txt" --server "${server/tlscertfile set/no tlscertfile (it still lists STARTTLS)}"
