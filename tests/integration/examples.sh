#!/usr/bin/env bash
# The examples keep working: examples/poll_client.c (the host's own poll()
# loop through the fd + timeout API) and examples/loop_client.c (the built-in
# loop plus the host's stdin) each deliver a message to a real listener;
# examples/reliable_sender.c delivers through a proxy that cuts its first
# connection, and its messages survive a SIGTERM in the middle (state saved,
# the next run resumes the stream and learns their fate).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
RUN_LIMIT=60 bg_epode listen EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" \
  --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" --count 6 --timeout 55
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

# reliable_sender through a proxy whose first connection is cut mid-login.
start_proxy rs
RS=(env EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$ALICE_PASSWORD" timeout 30
  "$EPODE_BUILD/example_reliable_sender" --server "127.0.0.1:$PPORT" --cafile "$CA_FILE")
px rs "random-cuts 800 2500 1" >/dev/null
"${RS[@]}" "$BOB_JID" "reliable one" "reliable two" >"$WORK/rs1.out" 2>"$WORK/rs1.err"
rrc=$?
# A second run is stopped right after sending, before any acknowledgement
# (acks are asked for after 2 s): SIGTERM saves the state; a third run
# resumes the stream and learns the fate of both.
"${RS[@]}" --state "$WORK/rs.state" "$BOB_JID" "kept three" "kept four" >"$WORK/rs2.out" \
  2>"$WORK/rs2.err" &
RSPID=$!
BG_PIDS+=($RSPID)
for _ in $(seq 200); do grep -q "ready as" "$WORK/rs2.err" && break; sleep 0.05; done
sleep 0.3
kill -TERM "$RSPID"
wait "$RSPID"
src=$?
"${RS[@]}" --state "$WORK/rs.state" "$BOB_JID" >"$WORK/rs3.out" 2>"$WORK/rs3.err"
rrc3=$?
set -e
wait_rc "$LPID"
[ "$prc" = 0 ] && pass "poll_client exits 0" || fail "poll_client exits 0" "exit $prc" "$WORK/poll.err"
[ "$lrc" = 0 ] && pass "loop_client exits 0" || fail "loop_client exits 0" "exit $lrc" "$WORK/loop.err"
grep -q ": from the poll() example$" "$LOUT" && pass "poll_client's message arrived" ||
  fail "poll_client's message arrived" "not in the listener's output" "$LOUT"
grep -q ": from the loop example$" "$LOUT" && pass "loop_client's message arrived" ||
  fail "loop_client's message arrived" "not in the listener's output" "$LOUT"
[ "$rrc" = 0 ] && grep -q "connection lost" "$WORK/rs1.err" && pass "reliable_sender reconnects" ||
  fail "reliable_sender reconnects" "exit $rrc, or no connection lost" "$WORK/rs1.err"
[ "$(grep -c '^acknowledged ' "$WORK/rs1.out")" = 2 ] && pass "reliable_sender: both acknowledged" ||
  fail "reliable_sender: both acknowledged" "reports:" "$WORK/rs1.out" "$WORK/rs1.err"
[ "$src" = 3 ] && grep -q "(2 unacknowledged)" "$WORK/rs2.err" && pass "reliable_sender saves its state on SIGTERM" ||
  fail "reliable_sender saves its state on SIGTERM" "exit $src" "$WORK/rs2.err"
[ "$rrc3" = 0 ] && grep -q "resumed as alice@localhost/reliable-sender" "$WORK/rs3.err" &&
  pass "reliable_sender resumes the stream in a new process" ||
  fail "reliable_sender resumes the stream in a new process" "exit $rrc3" "$WORK/rs3.err"
[ "$(grep -c '^acknowledged ' "$WORK/rs3.out")" = 2 ] && pass "the kept messages are acknowledged" ||
  fail "the kept messages are acknowledged" "reports:" "$WORK/rs3.out" "$WORK/rs3.err"
for m in "reliable one" "reliable two" "kept three" "kept four"; do
  [ "$(grep -c ": $m\$" "$LOUT")" = 1 ] && pass "'$m' arrived exactly once" ||
    fail "'$m' arrived exactly once" "count $(grep -c ": $m\$" "$LOUT")" "$LOUT"
done
finish
