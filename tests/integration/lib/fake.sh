# Sourced, after lib/common.sh, by the suites that run epode against
# tests/tools/fake_server.py (fake_server.sh, hostile.sh). Not a test itself.
#
# Sourcing it creates the test certificates (no Prosody needed) and loads
# their paths (CA_FILE, SERVER_CERT, WRONGHOST_CERT, …). Provides FAKE (the
# server), ACCT (the account's environment for epode), FAKE_ARGS (extra
# server arguments, e.g. a certificate), start_fake, stop_fake and
# fake_verdict.

FAKE=$SRC/tests/tools/fake_server.py
if ! bash "$HARNESS" certs "$WORK/c" >/dev/null; then
  echo "FAIL setup: could not create test certificates (openssl missing?)"
  exit 1
fi
# shellcheck disable=SC1091
. "$WORK/c/certs.env"

# shellcheck disable=SC2034 # used by the suites that source this
ACCT=(EPODE_JID=tester@localhost EPODE_PASSWORD=fake-password)
FAKE_ARGS=()

# start_fake NAME SCENARIO: starts the fake server with FAKE_ARGS; sets
# FAKE_PORT, FAKE_PID and FAKE_LOG (its transcript).
start_fake() {
  local sc=$2 portfile=$WORK/fake-$1.port
  FAKE_LOG=$WORK/fake-$1.log
  : >"$portfile"
  "$PY" "$FAKE" --port 0 --scenario "$sc" --idle 15 --log "$FAKE_LOG" \
    "${FAKE_ARGS[@]}" >"$portfile" 2>"$WORK/fake-$1.err" &
  FAKE_PID=$!
  BG_PIDS+=("$FAKE_PID")
  for _ in $(seq 1 100); do
    FAKE_PORT=$(head -n 1 "$portfile")
    [ -n "$FAKE_PORT" ] && return 0
    kill -0 "$FAKE_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "FAIL setup: fake server ($sc) did not start"
  cat "$WORK/fake-$1.err"
  exit 1
}

stop_fake() {
  kill -TERM "$FAKE_PID" 2>/dev/null || true
  wait "$FAKE_PID" 2>/dev/null || true
}

# fake_verdict NAME CODE STDERR-REGEX: stops the fake server and checks the
# last run (RC, OUT, ERR) with `expect`; on failure shows the end of the
# server's transcript, and a failing run must print an "epode: <cause>" line.
fake_verdict() {
  local name=$1 code=$2 re=$3
  stop_fake
  local before=$FAILS
  expect "$name" "$code" "$re"
  if [ "$FAILS" != "$before" ]; then
    echo "  --- fake server transcript:"
    tail -n 12 "$FAKE_LOG" 2>/dev/null | cut -c1-300 | sed 's/^/  | /'
    return
  fi
  # Every failure prints an "epode: <cause>" line.
  if [ "$code" != 0 ] && ! grep -Eq "^epode: .{12,}" "$ERR"; then
    fail "${name}_message" "no 'epode: <cause>' line" "$ERR"
  fi
}
