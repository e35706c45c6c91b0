#!/usr/bin/env bash
# epode send --each-line: every line of standard input is its own message,
# over one session, in order — from a pipe (read as it comes) and from a
# regular file; bad lines are reported without stopping the rest.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
SRV=(--server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
N=300

check_lines() { # NAME EXPECTED-FILE JSON-FILE
  if "$PY" - "$2" "$3" <<'PYEOF'; then
import json, sys
want = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l]
got = [json.loads(l)["body"] for l in open(sys.argv[2], encoding="utf-8")]
if got != want:
    print("  %d bodies, expected %d; first difference at %s" % (
        len(got), len(want),
        next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))))
    sys.exit(1)
PYEOF
    pass "$1"
  else
    fail "$1" "bodies differ" "$3"
  fi
}

for how in pipe file; do
  "$PY" -c "
for i in range(1, $N + 1):
    print('line %d of $how: <&> \"q\" ünïcødé' % i)" >"$WORK/lines-$how"
  bg_epode "listen_$how" EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" "${SRV[@]}" \
    --json --count $N --timeout 30
  LPID=$BG_PID LOUT=$BG_OUT LERR=$BG_ERR
  wait_for "$LERR" "^epode: listening as" 10 "$LPID" || { fail "listener $how" "not ready" "$LERR"; continue; }
  if [ $how = pipe ]; then
    set +e
    # shellcheck disable=SC2002
    cat "$WORK/lines-$how" | EPODE_PASSWORD="$ALICE_PASSWORD" timeout 30 "$EPODE" send \
      --jid "$ALICE_JID" "${SRV[@]}" --each-line "$BOB_JID" >"$WORK/send-$how.out" \
      2>"$WORK/send-$how.err"
    RC=$?
    set -e
  else
    STDIN=$WORK/lines-$how run_epode "send_$how" EPODE_PASSWORD="$ALICE_PASSWORD" -- send \
      --jid "$ALICE_JID" "${SRV[@]}" --each-line "$BOB_JID"
    cp "$ERR" "$WORK/send-$how.err"
  fi
  [ "$RC" = 0 ] && pass "send --each-line from a $how exits 0" ||
    fail "send --each-line from a $how exits 0" "exit $RC" "$WORK/send-$how.err"
  wait_rc "$LPID"
  check_lines "$N lines from a $how arrive in order, bodies exact" "$WORK/lines-$how" "$LOUT"
done

# A line XML cannot carry is reported; the others still go; exit non-zero.
printf 'good one\nbad \001 control\ngood two\n' >"$WORK/mixed"
bg_epode listen_mixed EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" "${SRV[@]}" \
  --json --count 2 --timeout 30
LPID=$BG_PID LOUT=$BG_OUT LERR=$BG_ERR
wait_for "$LERR" "^epode: listening as" 10 "$LPID" || fail "listener mixed" "not ready" "$LERR"
STDIN=$WORK/mixed run_epode send_mixed EPODE_PASSWORD="$ALICE_PASSWORD" -- send \
  --jid "$ALICE_JID" "${SRV[@]}" --each-line "$BOB_JID"
if [ "$RC" = 1 ] && grep -q "line 2 not sent" "$ERR"; then pass "a bad line is reported (exit 1)"
else fail "a bad line is reported" "exit $RC" "$ERR"; fi
wait_rc "$LPID"
printf 'good one\ngood two\n' >"$WORK/mixed.want"
check_lines "the good lines around it arrive" "$WORK/mixed.want" "$LOUT"
finish
