#!/usr/bin/env bash
# examples/custom_mechanism.c against the scripted server that offers its
# joke mechanism X-FOO (no real server has it): the exchange runs through
# the registry, and a server that cannot prove itself is refused with the
# mechanism's own explanation.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

EXAMPLE=$EPODE_BUILD/example_custom_mechanism
[ -x "$EXAMPLE" ] || { echo "FAIL setup: $EXAMPLE not built"; exit 1; }

# run_fake SCENARIO: starts the fake server, sets FAKE_PORT and FAKE_PID.
run_fake() {
  "$PY" "$SRC/tests/tools/fake_server.py" --port 0 --scenario "$1" --idle 10 \
    --log "$WORK/fake-$1.log" >"$WORK/fake-$1.port" &
  FAKE_PID=$!
  BG_PIDS+=("$FAKE_PID")
  for _ in $(seq 100); do
    FAKE_PORT=$(head -n1 "$WORK/fake-$1.port" 2>/dev/null || true)
    [ -n "$FAKE_PORT" ] && return 0
    sleep 0.05
  done
  echo "FAIL setup: fake server for $1 did not start"
  exit 1
}

run_fake x-foo
set +e
EPODE_PASSWORD=hunter2 timeout 20 "$EXAMPLE" --server "127.0.0.1:$FAKE_PORT" --allow-plaintext \
  tester@localhost >"$WORK/ok.out" 2>"$WORK/ok.err"
rc=$?
set -e
if [ $rc = 0 ] && grep -q "authenticated with X-FOO, bound as tester@localhost/fake" "$WORK/ok.out" &&
  grep -q "S: b\"<success" "$WORK/fake-x-foo.log"; then
  pass "scripted server: custom mechanism X-FOO logs in"
else
  fail "scripted server: custom mechanism X-FOO logs in" "exit $rc" "$WORK/ok.out" "$WORK/ok.err" \
    "$WORK/fake-x-foo.log"
fi
wait "$FAKE_PID" 2>/dev/null || true

run_fake x-foo-imposter
set +e
EPODE_PASSWORD=hunter2 timeout 20 "$EXAMPLE" --server "127.0.0.1:$FAKE_PORT" --allow-plaintext \
  tester@localhost >"$WORK/bad.out" 2>"$WORK/bad.err"
rc=$?
set -e
if [ $rc = 1 ] && grep -q "did not answer \"ok\"" "$WORK/bad.err" &&
  grep -q "mechanism X-FOO" "$WORK/bad.err"; then
  pass "scripted server: X-FOO refuses a server that cannot prove itself"
else
  fail "scripted server: X-FOO refuses a server that cannot prove itself" "exit $rc" \
    "$WORK/bad.out" "$WORK/bad.err" "$WORK/fake-x-foo-imposter.log"
fi
finish
