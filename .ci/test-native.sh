#!/usr/bin/env bash
# `npm run test:native`: the suites again with the native TLS engine embedded instead of node:tls
# (TLSPROXY_TEST_ENGINE=native, fixtures/engine.mjs), in two groups at once — core and the CLI's
# example backend; the dialects, the client and the conformance engine replay. Each group spends
# much of its time waiting on sockets and timers: one after the other they took 5 min of the
# 30-minute CI budget on the 2-core machine. Exit status: non-zero if either group failed.
set -uo pipefail
cd "$(dirname "$0")/.."
npx turbo run build || exit 1
export TLSPROXY_TEST_ENGINE=native
(
  npm run test -w @tlsproxy/core &&
    (cd packages/cli && npx vitest run test/example-backend.test.ts)
) &
core=$!
(
  npm run test -w @tlsproxy/dialect-imap -w @tlsproxy/dialect-pop3 -w @tlsproxy/dialect-smtp \
    -w @tlsproxy/dialect-xmpp -w @tlsproxy/dialect-ldap -w @tlsproxy/dialect-http-upgrade \
    -w @tlsproxy/client &&
    npm run test:engine -w @tlsproxy/conformance
) &
rest=$!
rc=0
wait "$core" || rc=$?
wait "$rest" || rc=$?
[ "$rc" -eq 0 ] && echo "test:native: both groups passed" || echo "test:native: a group failed (exit $rc)"
exit "$rc"
