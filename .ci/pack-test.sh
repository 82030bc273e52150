#!/usr/bin/env bash
# Packaging test (issue 16): the packages work from their tarballs, with no workspace links.
#  1. `npm pack` every workspace (prepack builds each one);
#  2. @tlsproxy/cli + @tlsproxy/dialect-imap (and what they depend on) into an empty folder:
#     `tlsproxy --help`, `tlsproxy check-config` on a sample, and a real STARTTLS session with
#     `openssl s_client` through the installed proxy to a backend built on the installed
#     @tlsproxy/backend;
#     — on the native engine, loaded from the prebuild in its tarball (issue 15: no compiler run);
#  3. the client role (issue 18): `tlsproxy --role client` of that install, and
#     @tlsproxy/client's connectStartTls from its own tarball, both through the proxy of step 2;
#  4. @tlsproxy/conformance + @tlsproxy/dialect-imap with --ignore-scripts (no compiler, no
#     native addon in the tree): the conformance suite on IMAP and the mutation self-check.
set -euo pipefail
source "$(dirname "$0")/pack-lib.sh"
pack_init pack-test

step "npm pack every workspace"
pack_workspaces
for name in fdpass core pool backend handoff cli conformance dialect-kit dialect-imap client; do
  tgz "$name" >/dev/null
done
check_tarballs
# The native addons ship compiled (issue 15): npm 11 does not run a dependency's install script,
# so without a prebuild in the tarball a user would get no native engine.
for name in fdpass engine-native; do
  list=$(tar -tzf "$(tgz "$name")") # (not piped into grep -q: pipefail and tar's SIGPIPE)
  grep -q '^package/prebuilds/linux-x64/.*\.node$' <<<"$list" ||
    { echo "no linux-x64 prebuild in the $name tarball"; exit 1; }
done

step "install the CLI and the IMAP dialect from their tarballs"
mkdir "$work/app"
cd "$work/app"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent \
  "$(tgz cli)" "$(tgz core)" "$(tgz pool)" "$(tgz backend)" "$(tgz handoff)" "$(tgz fdpass)" \
  "$(tgz engine-native)" \
  "$(tgz dialect-kit)" "$(tgz dialect-imap)"
[ ! -L node_modules/@tlsproxy/core ] || { echo "workspace link, not a tarball"; exit 1; }
# The engine loads from its prebuild: no build/ folder (no compiler was run), OpenSSL is node's.
[ ! -e node_modules/@tlsproxy/engine-native/build ] || { echo "engine-native was compiled at install"; exit 1; }
node --input-type=module -e "
  const m = await import('@tlsproxy/engine-native');
  m.checkNative();
  console.log('engine-native loads from its prebuild; OpenSSL', m.opensslVersion());
"
npx tlsproxy --help >/dev/null
cert="$root/fixtures/certs"
cat >sample.yaml <<YAML
identities:
  - { cert: $cert/server.pem, key: $cert/server.key }
listeners:
  - { dialect: imap, listen: 127.0.0.1:0, backend: unix:$work/imapd.sock, exempt: [127.0.0.1] }
YAML
checked=$(npx tlsproxy check-config sample.yaml)
echo "$checked"
# The default engine from the tarballs is the native one (its prebuild), not the fallback.
grep -q '^engine: native' <<<"$checked" || { echo "the packed CLI does not default to the native engine"; exit 1; }

step "a real STARTTLS session through the installed proxy"
cat >backend.mjs <<'JS'
import { listen } from '@tlsproxy/backend';
const server = await listen({ path: process.argv[2] });
console.log('backend ready');
for (;;) {
  const { socket, info } = await server.accept();
  socket.write(`* OK [ALERT] tls=${info.tls?.version} dialect=${info.dialect}\r\n`);
  socket.on('data', (d) => {
    const tag = String(d).split(' ')[0];
    socket.write(`${tag} OK done\r\n`);
  });
  socket.on('error', () => {});
}
JS
node backend.mjs "$work/imapd.sock" >"$work/backend.log" 2>&1 &
pids+=($!)
port=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
npx tlsproxy --dialect imap --listen "127.0.0.1:$port" --backend "unix:$work/imapd.sock" \
  --cert "$cert/server.pem" --key "$cert/server.key" --workers 1 >"$work/proxy.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/proxy.log" && grep -q ready "$work/backend.log" && break; sleep 0.2; done
out=$( (sleep 2; printf 'a NOOP\r\n'; sleep 1) | timeout 15 openssl s_client -starttls imap \
  -connect "127.0.0.1:$port" -servername localhost -CAfile "$cert/ca.pem" -verify_return_error \
  -crlf -quiet 2>&1 || true)
grep -q 'tls=TLSv1.3 dialect=imap' <<<"$out" || { echo "$out"; cat "$work/proxy.log"; exit 1; }
grep -q '^a OK done' <<<"$out" || { echo "$out"; exit 1; }
grep -q 'engine=native' "$work/proxy.log" || { echo "the session did not run on the native engine"; cat "$work/proxy.log"; exit 1; }

step "the client role of the installed CLI, through the installed proxy (issue 18)"
cport=$(node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")
npx tlsproxy --role client --dialect imap --listen "127.0.0.1:$cport" --connect "127.0.0.1:$port" \
  --server-name localhost --ca "$cert/ca.pem" --workers 1 >"$work/client-role.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q listening "$work/client-role.log" && break; sleep 0.2; done
out=$( (printf 'a NOOP\r\n'; sleep 2) | timeout 15 nc 127.0.0.1 "$cport" || true)
grep -q 'tls=TLSv1.3 dialect=imap' <<<"$out" || { echo "$out"; cat "$work/client-role.log"; exit 1; }
grep -q '^a OK done' <<<"$out" || { echo "$out"; exit 1; }
grep -q 'engine=native' "$work/client-role.log" || { echo "the client role did not run on the native engine"; cat "$work/client-role.log"; exit 1; }

step "@tlsproxy/client from its tarball: connectStartTls through the installed proxy"
mkdir "$work/lib"
cd "$work/lib"
npm init -y >/dev/null
npm pkg set type=module
npm install --no-audit --no-fund --silent \
  "$(tgz client)" "$(tgz pool)" "$(tgz fdpass)" "$(tgz dialect-kit)" "$(tgz dialect-imap)"
cat >lib.mjs <<'JS'
import { readFileSync } from 'node:fs';
import { connectStartTls } from '@tlsproxy/client';
const [port, ca] = process.argv.slice(2);
const { socket, info } = await connectStartTls({
  dialect: 'imap', host: '127.0.0.1', port: Number(port), serverName: 'localhost',
  ca: readFileSync(ca, 'utf8'),
});
let got = '';
socket.on('data', (d) => {
  got += d;
  if (got.includes('tls=TLSv1.3')) {
    console.log(`verified ${info.serverIdentity.subject} ${info.version}`);
    socket.destroy();
    process.exit(0);
  }
});
setTimeout(() => { console.log(`timeout: ${JSON.stringify(got)}`); process.exit(1); }, 10000);
JS
node lib.mjs "$port" "$cert/ca.pem"

step "conformance + dialect-imap with --ignore-scripts"
mkdir "$work/dialect"
cd "$work/dialect"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent --ignore-scripts \
  "$(tgz conformance)" "$(tgz dialect-kit)" "$(tgz dialect-imap)"
if [ -e node_modules/@tlsproxy/fdpass ]; then
  echo "the native addon is in the conformance suite's dependency tree"; exit 1
fi
# The sans-I/O replay of the transcripts the dialect ships, and the properties (the engine
# replay needs @tlsproxy/core and its native addon, which this install leaves out on purpose).
npx tlsproxy-conformance run --dialect @tlsproxy/dialect-imap --no-engine
# The built-in short name finds the same package and its shipped transcripts (issue 17), and the
# mutation self-check kills at least 95 % of the mutants of the installed dialect.
npx tlsproxy-conformance run --dialect imap --no-engine >/dev/null
npx tlsproxy-conformance run --role client --dialect imap --no-engine >/dev/null
npx tlsproxy-conformance mutate --dialect imap
step "ok"
