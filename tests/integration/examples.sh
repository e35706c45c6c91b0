#!/usr/bin/env bash
# The examples keep working: examples/poll_client.c (the host's own poll()
# loop through the fd + timeout API) and examples/loop_client.c (the built-in
# loop plus the host's stdin) each deliver a message to a real listener.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
bg_epode listen EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" \
  --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" --count 2 --timeout 20
LPID=$BG_PID LOUT=$BG_OUT LERR=$BG_ERR
wait_for "$LERR" "^epode: listening as" 10 "$LPID" || { fail listener "not ready" "$LERR"; finish; }

set +e
EPODE_PASSWORD="$ALICE_PASSWORD" timeout 20 "$EPODE_BUILD/example_poll_client" \
  --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" --jid "$ALICE_JID" "$BOB_JID" \
  "from the poll() example" >"$WORK/poll.out" 2>"$WORK/poll.err"
prc=$?
printf 'from the loop example\n' | EPODE_PASSWORD="$ALICE_PASSWORD" timeout 20 \
  "$EPODE_BUILD/example_loop_client" --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" \
  --jid "$ALICE_JID" "$BOB_JID" >"$WORK/loop.out" 2>"$WORK/loop.err"
lrc=$?
set -e
wait_rc "$LPID"
[ "$prc" = 0 ] && pass "poll_client exits 0" || fail "poll_client exits 0" "exit $prc" "$WORK/poll.err"
[ "$lrc" = 0 ] && pass "loop_client exits 0" || fail "loop_client exits 0" "exit $lrc" "$WORK/loop.err"
grep -q ": from the poll() example$" "$LOUT" && pass "poll_client's message arrived" ||
  fail "poll_client's message arrived" "not in the listener's output" "$LOUT"
grep -q ": from the loop example$" "$LOUT" && pass "loop_client's message arrived" ||
  fail "loop_client's message arrived" "not in the listener's output" "$LOUT"
finish
