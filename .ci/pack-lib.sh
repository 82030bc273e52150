# Shared by the packaging tests (.ci/pack-test.sh, .ci/example-dialect.sh); source it, then call
# pack_init NAME. It gives: $root (the repository), $work (a temporary folder, removed on exit
# with whatever still runs from it), pids (background processes to end on exit), step (a
# progress line), pack_workspaces (npm pack into $work/packs), tgz NAME (one tarball's path) and
# check_tarballs (every tarball has its build output and its license).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pids=()
pack_name=pack

pack_init() {
  pack_name=$1
  work=$(mktemp -d /tmp/tlsproxy-pack.XXXXXX)
  trap pack_cleanup EXIT
}

pack_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # npx starts node as a child: end whatever still runs from the work folder.
  pkill -f "$work" 2>/dev/null || true
  rm -rf "$work"
}

step() { echo "== $pack_name: $*"; }

# pack_workspaces [WORKSPACE...]: `npm pack` (prepack builds each one) the named workspaces
# (e.g. @tlsproxy/core), or every workspace when none is named, into $work/packs (= $P).
# With TLSPROXY_PACKS set (CI runs both scripts in a row), every workspace is packed there once
# and each script copies what it asked for: the packing is the slow part (a build each).
pack_workspaces() {
  P="$work/packs"
  mkdir -p "$P"
  if [ -n "${TLSPROXY_PACKS:-}" ]; then
    if [ ! -e "$TLSPROXY_PACKS/.complete" ]; then
      mkdir -p "$TLSPROXY_PACKS"
      pack_into "$TLSPROXY_PACKS" --workspaces
      touch "$TLSPROXY_PACKS/.complete"
    fi
    local w
    if [ $# -eq 0 ]; then
      cp "$TLSPROXY_PACKS"/*.tgz "$P"/
    else
      for w in "$@"; do cp "$TLSPROXY_PACKS"/tlsproxy-"${w#@tlsproxy/}"-[0-9]*.tgz "$P"/; done
    fi
    return
  fi
  local args=(--workspaces)
  if [ $# -gt 0 ]; then
    args=()
    for w in "$@"; do args+=(--workspace "$w"); done
  fi
  pack_into "$P" "${args[@]}"
}

# pack_into DIR NPM-PACK-ARGS...: npm pack from the repository root into DIR; exits on failure.
pack_into() {
  local dest=$1
  shift
  if ! (cd "$root" && npm pack "$@" --pack-destination "$dest" --silent >"$work/pack.log" 2>&1); then
    cat "$work/pack.log"
    echo "npm pack failed (above)"
    exit 1
  fi
}

# tgz NAME: the path of @tlsproxy/NAME's tarball; fails when it was not packed.
tgz() { ls "$P"/tlsproxy-"$1"-[0-9]*.tgz; }

# No package may ship without its build output or its license.
check_tarballs() {
  local t list
  for t in "$P"/tlsproxy-*.tgz; do
    case "$t" in *example*) continue ;; esac
    list=$(tar -tzf "$t")
    grep -q '^package/LICENSE$' <<<"$list" || { echo "no LICENSE in $(basename "$t")"; exit 1; }
    grep -q '^package/dist/index.js$' <<<"$list" || { echo "no dist/index.js in $(basename "$t")"; exit 1; }
  done
}
