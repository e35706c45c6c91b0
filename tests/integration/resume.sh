#!/usr/bin/env bash
# XEP-0198 resumption across a process restart, against a real Prosody
# (TCP, wss://) and a real ejabberd (TCP, wss://, BOSH https://): a first
# process logs alice in, sends four tracked messages to bob (two reach the
# socket, two are only queued), saves the session state and dies without
# closing the stream. While alice is away bob writes to her full JID. A
# second process restores the state, resumes the same stream (same full
# JID), gets all four acknowledged — the two that never left the first
# process are sent again — and receives what bob wrote meanwhile. Bob gets
# each of the four exactly once. (Prosody 0.12 cannot resume over BOSH: its
# mod_smacks fails on a BOSH session, "field 'rawsend'"; ejabberd can.)
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

PEER=$EPODE_BUILD/resume_peer
if [ ! -x "$PEER" ]; then
  echo "FAIL setup: $PEER does not exist (build first)"
  exit 1
fi

# Uses the server env just sourced: SRV, PEER_ENV, BOB; starts bob's
# listener for $2 messages ($1 names the server).
listen_on() {
  local server=$1 count=$2
  SRV=(--server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
  PEER_ENV=(EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$ALICE_PASSWORD"
    EPODE_SERVER="127.0.0.1:$C2S_PORT" EPODE_CAFILE="$CA_FILE")
  BOB=(EPODE_JID="$BOB_JID" EPODE_PASSWORD="$BOB_PASSWORD")
  RUN_LIMIT=90 bg_epode "bob_$server" "${BOB[@]}" -- listen "${SRV[@]}" --count "$count" \
    --timeout 85
  BOB_PID=$BG_PID BOB_OUT=$BG_OUT BOB_ERR=$BG_ERR
  if ! wait_for "$BOB_ERR" "^epode: listening as bob@localhost/" 10 "$BOB_PID"; then
    fail "${server}_listener_ready" "bob's listener did not get ready" "$BOB_ERR"
    exit 1
  fi
  pass "${server}_listener_ready"
}

# Bob saw each message exactly once, in order, $2 times over.
bob_got_all() {
  local server=$1 rounds=$2
  wait_rc "$BOB_PID"
  ERR=$BOB_ERR
  if sane "${server}_bob_exit"; then
    [ "$RC" = 0 ] && pass "${server}_bob_exit" ||
      fail "${server}_bob_exit" "bob's listener exited $RC" "$BOB_ERR" "$BOB_OUT"
  fi
  local got want="" i
  got=$(grep -o 'restart-[0-9]*' "$BOB_OUT" | tr '\n' ' ' || true)
  for ((i = 0; i < rounds; i++)); do want+="restart-1 restart-2 restart-3 restart-4 "; done
  if [ "$got" = "$want" ]; then
    pass "${server}_exactly_once_in_order"
  else
    fail "${server}_exactly_once_in_order" "bob got '$got'" "$BOB_OUT" "$BOB_ERR"
  fi
}

# One round: alice's first process sends, saves and dies; bob writes to her
# while she is away; her second process resumes. $1 names the transport,
# $2 is its URL ("" for TCP), $3 bob's expected count so far.
round() {
  local t=$1 url=$2
  local st=$WORK/alice-$t.state
  set +e
  env "${PEER_ENV[@]}" EPODE_URL="$url" timeout -k 2 20 "$PEER" save "$st" "$BOB_JID" 4 2 \
    >"$WORK/save-$t.out" 2>"$WORK/save-$t.err"
  RC=$?
  set -e
  if [ "$RC" = 0 ] && grep -Eq '^saved unacked=4 jid=alice@localhost/restartable$' "$WORK/save-$t.out" &&
    [ -s "$st" ] && head -1 "$st" | grep -q '^epode-sm-state 1$'; then
    pass "${t}_saved_state"
  else
    fail "${t}_saved_state" "exit $RC; expected 'saved unacked=4 jid=alice@localhost/restartable'" \
      "$WORK/save-$t.out" "$WORK/save-$t.err"
  fi
  local old_jid
  old_jid=$(sed -n 's/^saved unacked=[0-9]* jid=//p' "$WORK/save-$t.out")
  sleep 0.5
  run_epode "${t}_bob_writes" "${BOB[@]}" -- send "${SRV[@]}" -m "while you were away ($t)" \
    "${old_jid:-alice@localhost/restartable}"
  expect "${t}_bob_writes" 0
  set +e
  env "${PEER_ENV[@]}" EPODE_URL="$url" timeout -k 2 20 "$PEER" resume "$st" 2 \
    >"$WORK/resume-$t.out" 2>"$WORK/resume-$t.err"
  RC=$?
  set -e
  if [ "$RC" = 0 ] && grep -q '^restored unacked=4$' "$WORK/resume-$t.out" &&
    grep -q "^resumed jid=$old_jid\$" "$WORK/resume-$t.out"; then
    pass "${t}_resumed_same_stream"
  else
    fail "${t}_resumed_same_stream" "exit $RC (2 = a fresh session instead of resumption)" \
      "$WORK/resume-$t.out" "$WORK/resume-$t.err"
  fi
  local n
  n=$(grep -c '^acked restart-[1-4]$' "$WORK/resume-$t.out" || true)
  if [ "$n" = 4 ]; then
    pass "${t}_all_acked"
  else
    fail "${t}_all_acked" "$n of 4 messages acknowledged after resuming" "$WORK/resume-$t.out"
  fi
  if grep -qx "got while you were away ($t)" "$WORK/resume-$t.out"; then
    pass "${t}_got_message_sent_while_away"
  else
    fail "${t}_got_message_sent_while_away" "the message bob sent during the outage did not arrive" \
      "$WORK/resume-$t.out" "$WORK/resume-$t.err"
  fi
}

start_prosody alice:alice-pw-R1 bob:bob-pw-R2
listen_on prosody 8
round prosody_tcp ""
round prosody_wss "$WSS_URL"
bob_got_all prosody 2

start_ejabberd alice:alice-pw-E1 bob:bob-pw-E2
listen_on ejabberd 12
round ejabberd_tcp ""
round ejabberd_wss "$WSS_URL"
round ejabberd_bosh "$BOSH_HTTPS_URL"
bob_got_all ejabberd 3

finish
