# Sourced by tests/integration/*.sh (not a test itself: CMake registers only
# the *.sh files directly in tests/integration/).
#
# Provides: EPODE (the binary), SRC, PY, WORK (a temp dir removed at exit),
# pass/fail/finish, start_prosody (fills in the harness's env), run_epode
# (runs the binary under `timeout`, sets RC/OUT/ERR), bg_epode + wait_for,
# and checks that turn a crash or a hang into a failure.

: "${EPODE_BUILD:?EPODE_BUILD must point at the build directory}"
: "${EPODE_SRC:?EPODE_SRC must point at the source directory}"
EPODE=$EPODE_BUILD/epode
SRC=$EPODE_SRC
PY=/usr/bin/python3
HARNESS=$SRC/tests/servers/prosody.sh
EJ_HARNESS=$SRC/tests/servers/ejabberd.sh
PROXY=$SRC/tests/tools/fault_proxy.py
# Longest any single epode run may take before we call it a hang.
RUN_LIMIT=${RUN_LIMIT:-20}

PASSES=0
FAILS=0
BG_PIDS=()
PROSODY_STARTED=0
EJ_STARTED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/epode-it.XXXXXX")

if [ ! -x "$EPODE" ]; then
  echo "FAIL setup: $EPODE does not exist (build first)"
  exit 1
fi
if [ ! -x "$PY" ]; then
  echo "FAIL setup: $PY not found (scripts/deps.sh installs python3)"
  exit 1
fi

cleanup() {
  local rc=$?
  local p
  for p in "${BG_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BG_PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [ "$PROSODY_STARTED" = 1 ]; then
    if [ "$FAILS" != 0 ] || [ "$rc" != 0 ]; then
      echo "--- last lines of the Prosody log ($WORK/prosody/prosody.log)"
      tail -n 25 "$WORK/prosody/prosody.log" 2>/dev/null || true
    fi
    bash "$HARNESS" stop "$WORK/prosody" || true
  fi
  if [ "$EJ_STARTED" = 1 ]; then
    if [ "$FAILS" != 0 ] || [ "$rc" != 0 ]; then
      echo "--- warnings and errors in the ejabberd log ($WORK/ejabberd/logs/ejabberd.log)"
      grep -E '\[(warning|error|critical)\]' "$WORK/ejabberd/logs/ejabberd.log" 2>/dev/null |
        tail -n 25 || true
    fi
    bash "$EJ_HARNESS" stop "$WORK/ejabberd" || true
  fi
  if [ -n "${KEEP_WORK:-}" ]; then
    echo "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
  echo "PASS $1"
  PASSES=$((PASSES + 1))
}

# fail NAME WHY [FILE...]: prints the reason and the files (epode's stderr…).
fail() {
  local name=$1 why=$2
  shift 2
  echo "FAIL $name: $why"
  local f
  for f in "$@"; do
    [ -s "$f" ] || continue
    echo "  --- $(basename "$f"):"
    head -c 4000 "$f" | sed 's/^/  | /'
  done
  FAILS=$((FAILS + 1))
}

finish() {
  echo "$PASSES passed, $FAILS failed"
  [ "$FAILS" = 0 ]
}

# start_prosody [NAME:PASSWORD ...]: starts the harness in $WORK/prosody and
# sources its env. A missing or broken Prosody is a failure, never a skip.
start_prosody() {
  if ! PROSODY_WATCH_PID=$$ bash "$HARNESS" start "$WORK/prosody" "$@"; then
    echo "FAIL setup: the Prosody test server did not start (is the Debian package prosody" \
      "installed? scripts/deps.sh installs it)"
    exit 1
  fi
  PROSODY_STARTED=1
  # shellcheck disable=SC1091
  . "$WORK/prosody/env"
}

# start_ejabberd [NAME:PASSWORD ...]: the same for ejabberd, in $WORK/ejabberd
# (EJ_DIR); its env replaces Prosody's variables of the same names.
start_ejabberd() {
  EJ_DIR=$WORK/ejabberd
  if ! EJABBERD_WATCH_PID=$$ bash "$EJ_HARNESS" start "$EJ_DIR" "$@"; then
    echo "FAIL setup: the ejabberd test server did not start (is the Debian package ejabberd" \
      "installed? scripts/deps.sh installs it)"
    exit 1
  fi
  EJ_STARTED=1
  # shellcheck disable=SC1091
  . "$EJ_DIR/env"
}

# start_proxy NAME: a fault proxy in front of Prosody's c2s port, controlled
# through $WORK/NAME.sock; sets PPORT.
start_proxy() {
  local pf=$WORK/$1.port pid
  "$PY" "$PROXY" --target "127.0.0.1:$C2S_PORT" --control "$WORK/$1.sock" --port-file "$pf" \
    --seed "${PROXY_SEED:-$RANDOM}" --verbose >"$WORK/$1.proxy.out" 2>"$WORK/$1.proxy.err" &
  pid=$!
  BG_PIDS+=("$pid")
  if ! wait_for "$pf" '^[0-9]+$' 10 "$pid"; then
    echo "FAIL setup: fault_proxy.py did not start"
    cat "$WORK/$1.proxy.err"
    exit 1
  fi
  PPORT=$(cat "$pf")
}
# px NAME COMMAND: one control command; prints the reply.
px() { "$PY" "$PROXY" --control "$WORK/$1.sock" --send "$2"; }

# run_epode NAME [ENV=VALUE...] -- ARGS...: runs epode (stdin from $STDIN if
# set, else /dev/null) under `timeout`; sets RC, OUT (file), ERR (file).
run_epode() {
  local name=$1
  shift
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    envs+=("$1")
    shift
  done
  [ "${1:-}" = "--" ] && shift
  OUT=$WORK/$name.out
  ERR=$WORK/$name.err
  set +e
  env "${envs[@]}" timeout -k 2 "$RUN_LIMIT" "$EPODE" "$@" <"${STDIN:-/dev/null}" >"$OUT" 2>"$ERR"
  RC=$?
  set -e
}

# sane NAME: the last run neither crashed (signal) nor hung (timeout).
sane() {
  if [ "$RC" = 124 ] || [ "$RC" = 137 ]; then
    fail "$1" "epode hung: killed after ${RUN_LIMIT}s" "$ERR"
    return 1
  fi
  if [ "$RC" -ge 128 ]; then
    fail "$1" "epode died of signal $((RC - 128))" "$ERR"
    return 1
  fi
  return 0
}

# expect NAME CODE [STDERR-REGEX [STDOUT-REGEX]]: checks the last run.
expect() {
  local name=$1 code=$2 err_re=${3:-} out_re=${4:-}
  sane "$name" || return 0
  if [ "$RC" != "$code" ]; then
    fail "$name" "exit status $RC, expected $code" "$ERR" "$OUT"
    return 0
  fi
  if [ -n "$err_re" ] && ! grep -Eq -- "$err_re" "$ERR"; then
    fail "$name" "stderr does not match /$err_re/" "$ERR"
    return 0
  fi
  if [ -n "$out_re" ] && ! grep -Eq -- "$out_re" "$OUT"; then
    fail "$name" "stdout does not match /$out_re/" "$OUT" "$ERR"
    return 0
  fi
  pass "$name"
}

# bg_epode NAME [ENV=VALUE...] -- ARGS...: starts epode in the background;
# sets BG_PID, BG_OUT, BG_ERR.
bg_epode() {
  local name=$1
  shift
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    envs+=("$1")
    shift
  done
  [ "${1:-}" = "--" ] && shift
  BG_OUT=$WORK/$name.out
  BG_ERR=$WORK/$name.err
  env "${envs[@]}" timeout -k 2 "$RUN_LIMIT" "$EPODE" "$@" </dev/null >"$BG_OUT" 2>"$BG_ERR" &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
}

# wait_for FILE REGEX SECONDS [PID]: until FILE has a line matching REGEX;
# fails early if PID exits.
wait_for() {
  local file=$1 re=$2 secs=$3 pid=${4:-}
  local end=$((SECONDS + secs))
  while [ $SECONDS -le $end ]; do
    grep -Eq -- "$re" "$file" 2>/dev/null && return 0
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
      grep -Eq -- "$re" "$file" 2>/dev/null && return 0
      return 1
    fi
    sleep 0.05
  done
  return 1
}

# wait_rc PID: waits for a background job; sets RC (and treats hangs/crashes
# like run_epode does through `sane`).
wait_rc() {
  set +e
  wait "$1"
  RC=$?
  set -e
}

# A loopback port nothing listens on (bound, then released).
closed_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
