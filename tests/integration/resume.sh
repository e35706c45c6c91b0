#!/usr/bin/env bash
# XEP-0198 resumption across a process restart, against a real Prosody:
# a first process logs alice in, sends four tracked messages to bob (two
# reach the socket, two are only queued), saves the session state and dies
# without closing the stream. While alice is away bob writes to her full
# JID. A second process restores the state, resumes the same stream (same
# full JID), gets all four acknowledged — the two that never left the first
# process are sent again — and receives what bob wrote meanwhile. Bob gets
# each of the four exactly once.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

PEER=$EPODE_BUILD/resume_peer
if [ ! -x "$PEER" ]; then
  echo "FAIL setup: $PEER does not exist (build first)"
  exit 1
fi
start_prosody alice:alice-pw-R1 bob:bob-pw-R2
SRV=(--server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
PEER_ENV=(EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$ALICE_PASSWORD"
  EPODE_SERVER="127.0.0.1:$C2S_PORT" EPODE_CAFILE="$CA_FILE")
BOB=(EPODE_JID="$BOB_JID" EPODE_PASSWORD="$BOB_PASSWORD")
STATE=$WORK/alice.state

bg_epode bob_listen "${BOB[@]}" -- listen "${SRV[@]}" --count 4 --timeout 20
BOB_PID=$BG_PID BOB_OUT=$BG_OUT BOB_ERR=$BG_ERR
if ! wait_for "$BOB_ERR" "^epode: listening as bob@localhost/" 10 "$BOB_PID"; then
  fail listener_ready "bob's listener did not get ready" "$BOB_ERR"
  exit 1
fi
pass listener_ready

# 1. The first process: send, save, die.
set +e
env "${PEER_ENV[@]}" timeout -k 2 20 "$PEER" save "$STATE" "$BOB_JID" 4 2 \
  >"$WORK/save.out" 2>"$WORK/save.err"
RC=$?
set -e
if [ "$RC" = 0 ] && grep -Eq '^saved unacked=4 jid=alice@localhost/restartable$' "$WORK/save.out" &&
  [ -s "$STATE" ] && head -1 "$STATE" | grep -q '^epode-sm-state 1$'; then
  pass saved_state
else
  fail saved_state "exit $RC; expected 'saved unacked=4 jid=alice@localhost/restartable'" \
    "$WORK/save.out" "$WORK/save.err"
fi
OLD_JID=$(sed -n 's/^saved unacked=[0-9]* jid=//p' "$WORK/save.out")

# 2. Bob writes to alice's full JID while her stream waits, hibernated.
sleep 0.5
run_epode bob_writes "${BOB[@]}" -- send "${SRV[@]}" -m "while you were away" "${OLD_JID:-alice@localhost/restartable}"
expect bob_writes 0

# 3. The second process resumes the stream.
set +e
env "${PEER_ENV[@]}" timeout -k 2 20 "$PEER" resume "$STATE" 2 \
  >"$WORK/resume.out" 2>"$WORK/resume.err"
RC=$?
set -e
if [ "$RC" = 0 ] && grep -q '^restored unacked=4$' "$WORK/resume.out" &&
  grep -q "^resumed jid=$OLD_JID\$" "$WORK/resume.out"; then
  pass resumed_same_stream
else
  fail resumed_same_stream "exit $RC (2 = a fresh session instead of resumption)" \
    "$WORK/resume.out" "$WORK/resume.err"
fi
for i in 1 2 3 4; do
  if grep -qx "acked restart-$i" "$WORK/resume.out"; then
    pass "acked_restart_$i"
  else
    fail "acked_restart_$i" "restart-$i was not acknowledged after resuming" "$WORK/resume.out"
  fi
done
if grep -qx "got while you were away" "$WORK/resume.out"; then
  pass got_message_sent_while_away
else
  fail got_message_sent_while_away "the message bob sent during the outage did not arrive" \
    "$WORK/resume.out" "$WORK/resume.err"
fi

# 4. Bob saw each message exactly once, in order.
wait_rc "$BOB_PID"
ERR=$BOB_ERR
if sane bob_exit; then
  [ "$RC" = 0 ] && pass bob_exit || fail bob_exit "bob's listener exited $RC" "$BOB_ERR" "$BOB_OUT"
fi
GOT=$(grep -o 'restart-[0-9]*' "$BOB_OUT" | tr '\n' ' ' || true)
if [ "$GOT" = "restart-1 restart-2 restart-3 restart-4 " ]; then
  pass exactly_once_in_order
else
  fail exactly_once_in_order "bob got '$GOT'" "$BOB_OUT" "$BOB_ERR"
fi

finish
