#!/usr/bin/env bash
# `make demo`: start a throwaway Prosody on loopback, let juliet listen,
# send her a message from romeo, show it arriving, stop the server.
#   bash scripts/demo.sh BUILD_DIR
# Exits non-zero if the message did not arrive. Leaves nothing running.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-build}
[ -d "$BUILD" ] || { echo "demo: build directory '$BUILD' not found (run make)" >&2; exit 1; }
EPODE=$(cd "$BUILD" && pwd)/epode
[ -x "$EPODE" ] || { echo "demo: $EPODE not found (run make)" >&2; exit 1; }

if [ -t 1 ]; then B=$'\033[1m' D=$'\033[2m' G=$'\033[32m' R=$'\033[31m' N=$'\033[0m'
else B="" D="" G="" R="" N=""; fi
step() { printf '\n%s==> %s%s\n' "$B" "$*" "$N"; }
say() { printf '    %s\n' "$*"; }
show() { printf '    %s$ %s%s\n' "$D" "$*" "$N"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/epode-demo.XXXXXX")
LISTENER=""
SERVER_UP=0
cleanup() {
  local rc=$?
  if [ -n "$LISTENER" ]; then kill -TERM "$LISTENER" 2>/dev/null || true; wait "$LISTENER" 2>/dev/null || true; fi
  if [ $SERVER_UP = 1 ]; then
    step "Stopping the demo server"
    bash "$SRC/tests/servers/prosody.sh" stop "$WORK/server" || true
  fi
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "Starting a throwaway Prosody XMPP server on 127.0.0.1"
say "It gets its own test CA and certificate for 'localhost', free ports, and two"
say "accounts, romeo@localhost and juliet@localhost. Everything lives in $WORK"
say "and is deleted when the demo ends."
bash "$SRC/tests/servers/prosody.sh" start "$WORK/server" \
  romeo:wherefore-art-thou juliet:parting-is-sweet-sorrow 2>"$WORK/server.log" || {
  cat "$WORK/server.log" >&2
  echo "${R}demo: the server did not start (is the Debian package prosody installed?" \
    "scripts/deps.sh installs it)${N}" >&2
  exit 1
}
SERVER_UP=1
# shellcheck disable=SC1091
. "$WORK/server/env"
say "Server ready: STARTTLS on port $C2S_PORT, direct TLS on port $TLS_PORT."

SRV="--server 127.0.0.1:$C2S_PORT --cafile $CA_FILE"
step "Juliet listens for one message"
say "--server points epode at the demo server instead of looking 'localhost' up in"
say "DNS; --cafile makes it trust the demo CA (the certificate is still verified)."
say "The password comes from the environment, never from the command line."
show "EPODE_PASSWORD=$JULIET_PASSWORD $EPODE listen --jid $JULIET_JID $SRV --count 1 --timeout 30 &"
EPODE_PASSWORD=$JULIET_PASSWORD "$EPODE" listen --jid "$JULIET_JID" $SRV --count 1 --timeout 30 \
  >"$WORK/juliet.out" 2>"$WORK/juliet.err" &
LISTENER=$!
for _ in $(seq 1 200); do
  grep -q "listening as" "$WORK/juliet.err" 2>/dev/null && break
  kill -0 "$LISTENER" 2>/dev/null || break
  sleep 0.05
done
if ! grep -q "listening as" "$WORK/juliet.err"; then
  cat "$WORK/juliet.err" >&2
  echo "${R}demo: juliet's listener did not connect${N}" >&2
  exit 1
fi
say "$(grep "listening as" "$WORK/juliet.err")"

MSG="But soft, what light through yonder window breaks? 🌅"
step "Romeo sends her a message"
show "EPODE_PASSWORD=$ROMEO_PASSWORD $EPODE send --jid $ROMEO_JID $SRV -m '$MSG' $JULIET_JID"
if ! EPODE_PASSWORD=$ROMEO_PASSWORD "$EPODE" send --jid "$ROMEO_JID" $SRV -m "$MSG" \
  "$JULIET_JID"; then
  echo "${R}demo: sending failed${N}" >&2
  exit 1
fi
say "epode send exited 0: connected, authenticated (SCRAM over TLS), sent, closed cleanly."

step "What juliet's epode printed (FROM: BODY, one line per message)"
set +e
wait "$LISTENER"
rc=$?
set -e
LISTENER=""
sed 's/^/    /' "$WORK/juliet.out"
if [ $rc = 0 ] && grep -qF "romeo@localhost/" "$WORK/juliet.out" &&
  grep -qF "$MSG" "$WORK/juliet.out"; then
  printf '\n    %sThe message arrived.%s\n' "$G" "$N"
else
  cat "$WORK/juliet.err" >&2
  echo "${R}demo: the message did not arrive (listener exit status $rc)${N}" >&2
  exit 1
fi

step "Try it yourself"
say "Against a real server, drop --server and --cafile; epode finds the server"
say "through DNS SRV records and checks its certificate against the system CAs:"
show "EPODE_PASSWORD=... $EPODE send --jid you@example.org -m 'hello' friend@example.org"
show "$EPODE listen --jid you@example.org --password-cmd 'pass show xmpp' --json"
say "See '$EPODE --help' and docs/epode.md (man page: docs/epode.1)."
say "Your own throwaway server: bash tests/servers/prosody.sh start /tmp/xmpp"
say "(then source /tmp/xmpp/env; stop it with: bash tests/servers/prosody.sh stop /tmp/xmpp --rm)"
