#!/usr/bin/env bash
# The guide works for an author outside this repository (issue 17, item 5):
#  1. `npm pack` the packages a dialect author installs (prepack builds each one);
#  2. from the repository root: `tlsproxy-conformance run --dialect ./examples/dialect-nntp`;
#  3. examples/dialect-nntp copied to a folder outside the workspace, made to depend on those
#     tarballs (file: paths), installed (with its scripts: the conformance suite's engine replay
#     loads @tlsproxy/core and its native addon), type-checked with its own tsconfig.json (no
#     `extends` into the repository), and then, from inside it, its unit tests and
#     `npx tlsproxy-conformance run --dialect .` and `run --role client --dialect .` — the
#     commands docs/writing-a-dialect.md gives;
#  4. the example packed (npm pack) and installed by name in another project: it imports, and
#     the suite finds the transcripts it ships.
# Every step fails loudly: a missing tarball, a workspace link instead of a tarball, a
# transcript the suite did not find, a skipped engine replay.
set -euo pipefail
source "$(dirname "$0")/pack-lib.sh"
pack_init example-dialect
example="$root/examples/dialect-nntp"

step "npm pack the packages a dialect author installs"
needed=(dialect-kit conformance core pool fdpass handoff backend)
workspaces=()
for name in "${needed[@]}"; do workspaces+=("@tlsproxy/$name"); done
# Each prepack builds its package from clean against the others' dist/: build them all first
# (a no-op after `npm test`), so this also runs on its own after `npm ci`.
(cd "$root" && npx turbo run build --output-logs=errors-only "${workspaces[@]/#/--filter=}")
pack_workspaces "${workspaces[@]}"
for name in "${needed[@]}"; do tgz "$name" >/dev/null; done
check_tarballs

# The transcripts the example ships: the suite must find and pass every one of them.
count=$(find "$example/transcripts" -name '*.txt' | wc -l)
[ "$count" -gt 0 ] || { echo "no transcripts in $example/transcripts"; exit 1; }
ccount=$(find "$example/client-transcripts" -name '*.txt' | wc -l)
[ "$ccount" -gt 0 ] || { echo "no client transcripts in $example/client-transcripts"; exit 1; }

# check_run LOG: the suite loaded the dialect, replayed every transcript twice (sans-I/O and
# through the engine on loopback) and passed everything.
check_run() {
  local log=$1
  grep -q "^tlsproxy-conformance: dialect nntp, $count transcripts" "$log" ||
    { cat "$log"; echo "the suite did not find the $count transcripts"; exit 1; }
  grep -q '^engine replay' "$log" || { cat "$log"; echo "the engine replay did not run"; exit 1; }
  grep -qE '^all [0-9]+ checks passed' "$log" || { cat "$log"; echo "not every check passed"; exit 1; }
  if grep -qE '^ +(FAIL|skip)' "$log"; then cat "$log"; echo "a check failed or was skipped"; exit 1; fi
}
# check_client_run LOG: the same for the client side (run --role client).
check_client_run() {
  local log=$1
  grep -q "^tlsproxy-conformance: dialect nntp (client side), $ccount transcripts" "$log" ||
    { cat "$log"; echo "the suite did not find the $ccount client transcripts"; exit 1; }
  grep -q '^engine replay' "$log" || { cat "$log"; echo "the client engine replay did not run"; exit 1; }
  grep -qE '^all [0-9]+ checks passed' "$log" || { cat "$log"; echo "not every client check passed"; exit 1; }
}

step "tlsproxy-conformance run --dialect ./examples/dialect-nntp (from the repository root)"
cd "$root"
node packages/conformance/bin/tlsproxy-conformance.js run --dialect ./examples/dialect-nntp \
  --seconds 3 >"$work/root-run.log" 2>&1 || { cat "$work/root-run.log"; exit 1; }
check_run "$work/root-run.log"
node packages/conformance/bin/tlsproxy-conformance.js run --role client \
  --dialect ./examples/dialect-nntp --seconds 3 >"$work/root-client.log" 2>&1 ||
  { cat "$work/root-client.log"; exit 1; }
check_client_run "$work/root-client.log"

step "copy examples/dialect-nntp outside the workspace, depend on the tarballs"
app="$work/dialect-nntp"
mkdir "$app"
(cd "$example" && tar --exclude=node_modules -cf - .) | tar -xf - -C "$app"
cd "$app"
# Nothing above it may be an npm project or workspace (the copy must stand alone).
dir=$(dirname "$app")
while [ "$dir" != / ]; do
  [ ! -e "$dir/package.json" ] || { echo "$dir/package.json: not outside a project"; exit 1; }
  dir=$(dirname "$dir")
done
grep -q '"extends"' tsconfig.json && { echo "tsconfig.json extends another config"; exit 1; }
# What docs/writing-a-dialect.md tells an author: the kit as a dependency; the suite, the engine
# it replays through, the backend library and TypeScript as dev dependencies. Without a registry
# that has @tlsproxy/*, every one of them (and what they depend on) is a file: path to a tarball.
npm pkg set "dependencies.@tlsproxy/dialect-kit=file:$(tgz dialect-kit)"
for name in conformance core backend pool fdpass handoff; do
  npm pkg set "devDependencies.@tlsproxy/$name=file:$(tgz "$name")"
done
npm pkg set 'devDependencies.typescript=~5.9.3' 'devDependencies.@types/node=^20.19.0'

step "npm install (outside the workspace)"
npm install --no-audit --no-fund --silent
for name in "${needed[@]}"; do
  [ -d "node_modules/@tlsproxy/$name" ] || { echo "@tlsproxy/$name not installed"; exit 1; }
  [ ! -L "node_modules/@tlsproxy/$name" ] || { echo "@tlsproxy/$name is a link, not a tarball"; exit 1; }
done
# Every @tlsproxy package came from a tarball here, none from a registry.
node -e '
  const lock = require("./package-lock.json");
  const bad = Object.entries(lock.packages)
    .filter(([p, v]) => p.includes("node_modules/@tlsproxy/") && !String(v.resolved).startsWith("file:"))
    .map(([p, v]) => `${p} (${v.resolved})`);
  if (bad.length) { console.error("not from a tarball:", bad.join(", ")); process.exit(1); }
'

step "typecheck with its own tsconfig.json"
npx tsc -p tsconfig.json

step "unit tests, then tlsproxy-conformance run --dialect . (from inside the copy)"
node --test test/*.test.mjs >"$work/unit.log" 2>&1 || { cat "$work/unit.log"; exit 1; }
grep -q '^# fail 0' "$work/unit.log" || { cat "$work/unit.log"; exit 1; }
npx tlsproxy-conformance run --dialect . --seconds 3 >"$work/run.log" 2>&1 ||
  { cat "$work/run.log"; exit 1; }
check_run "$work/run.log"
tail -n 3 "$work/run.log"
npx tlsproxy-conformance run --role client --dialect . --seconds 3 >"$work/client.log" 2>&1 ||
  { cat "$work/client.log"; exit 1; }
check_client_run "$work/client.log"
tail -n 3 "$work/client.log"

step "the example packed as a package: installed by name in another project, with its transcripts"
(cd "$app" && npm pack --pack-destination "$work/packs" --silent >/dev/null)
mkdir "$work/consumer"
cd "$work/consumer"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent --ignore-scripts \
  "$(tgz dialect-kit)" "$(tgz conformance)" "$(tgz example-dialect-nntp)"
# Everything the package imports is in its tarball (package.json "files").
node -e 'import("@tlsproxy/example-dialect-nntp").then((m) => {
  if (typeof m.default.create !== "function" || typeof m.default.client?.create !== "function") process.exit(1);
})'
npx tlsproxy-conformance run --dialect @tlsproxy/example-dialect-nntp --no-engine --seconds 2 \
  >"$work/pkg-run.log" 2>&1 || { cat "$work/pkg-run.log"; exit 1; }
grep -q "^tlsproxy-conformance: dialect nntp, $count transcripts" "$work/pkg-run.log" ||
  { cat "$work/pkg-run.log"; echo "the packed example did not bring its $count transcripts"; exit 1; }
grep -qE '^all [0-9]+ checks passed' "$work/pkg-run.log" || { cat "$work/pkg-run.log"; exit 1; }
npx tlsproxy-conformance run --role client --dialect @tlsproxy/example-dialect-nntp --no-engine \
  --seconds 2 >"$work/pkg-client.log" 2>&1 || { cat "$work/pkg-client.log"; exit 1; }
grep -q "^tlsproxy-conformance: dialect nntp (client side), $ccount transcripts" "$work/pkg-client.log" ||
  { cat "$work/pkg-client.log"; echo "the packed example did not bring its client transcripts"; exit 1; }
grep -qE '^all [0-9]+ checks passed' "$work/pkg-client.log" || { cat "$work/pkg-client.log"; exit 1; }
step "ok"
