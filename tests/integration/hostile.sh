#!/usr/bin/env bash
# The hostile-server suite (issue 7): epode against tests/tools/fake_server.py
# scenarios that a real server would never play. Each case checks the exit
# status (docs/epode.md), a message naming the cause, and that epode neither
# crashed nor hung. fake_server.sh covers the first hostile cases (DOCTYPE,
# billion laughs, 1.5 MiB stanza, invalid UTF-8, a direct-TLS certificate for
# another name); this file covers the rest:
#   deep nesting, a 100 MB stanza and a never-ending attribute (streamed;
#   refused after ~1 MiB, CPU time measured), overlong UTF-8 and surrogates,
#   NUL bytes, stream-header and restart storms, <success/> before <auth/>,
#   a stanza before the stream header, STARTTLS stripped (downgrade), a
#   STARTTLS certificate for another domain, empty, enormous and long
#   SASL mechanism lists (and 2000 junk mechanisms before PLAIN, which must
#   still log in).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/fake.sh
. "$(dirname "$0")/lib/fake.sh"

# check NAME SCENARIO CODE STDERR-REGEX EPODE-ARGS...: like fake_server.sh,
# and also records epode's CPU time (user+system, ms) in CPU_MS.
check() {
  local name=$1 sc=$2 code=$3 re=$4
  shift 4
  start_fake "$name" "$sc"
  local args=("${@//@PORT@/$FAKE_PORT}")
  OUT=$WORK/$name.out
  ERR=$WORK/$name.err
  local t0
  t0=$(date +%s%N)
  set +e
  # RUSAGE_CHILDREN of this Python covers epode (waited for by timeout).
  CPU_MS=$(env "${ACCT[@]}" "$PY" -c '
import resource, subprocess, sys
with open(sys.argv[1], "wb") as o, open(sys.argv[2], "wb") as e:
    rc = subprocess.call(sys.argv[3:], stdin=subprocess.DEVNULL, stdout=o, stderr=e)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(int((ru.ru_utime + ru.ru_stime) * 1000))
sys.exit(rc if rc >= 0 else 128 - rc)' "$OUT" "$ERR" timeout -k 2 "$RUN_LIMIT" "$EPODE" "${args[@]}")
  RC=$?
  set -e
  TOOK_MS=$((($(date +%s%N) - t0) / 1000000))
  fake_verdict "$name" "$code" "$re"
}

# streamed_at_most NAME BYTES: the fake server's log says it could push at
# most BYTES of its endless payload before epode closed the connection.
streamed_at_most() {
  local n
  n=$(sed -n 's/.*streamed \([0-9]*\) bytes before the client stopped.*/\1/p' "$FAKE_LOG" | tail -n 1)
  if [ -z "$n" ]; then
    fail "$1" "the client never stopped reading (fake server log: $(tail -n 1 "$FAKE_LOG"))"
  elif [ "$n" -gt "$2" ]; then
    fail "$1" "the server pushed $n bytes before epode gave up (limit $2)"
  else
    pass "$1 ($n bytes sent, ${CPU_MS} ms CPU, ${TOOK_MS} ms wall)"
  fi
}

# cpu_below NAME MS
cpu_below() {
  if [ "$CPU_MS" -lt "$2" ]; then pass "$1 (${CPU_MS} ms CPU)"; else
    fail "$1" "epode used ${CPU_MS} ms of CPU (limit $2 ms)"
  fi
}

# no_auth NAME: the client sent no <auth/> to the fake server.
no_auth() {
  if grep -q "C: .*<auth" "$FAKE_LOG"; then
    fail "$1" "the client sent <auth/> (its password) to the hostile server"
  else pass "$1"; fi
}

PLAIN=(--server "127.0.0.1:@PORT@" --allow-plaintext --timeout 10)

# --- size and shape ---------------------------------------------------------------
check deep_nesting deep-nesting 1 "limit.*(depth|nest)|(depth|nest).*limit" listen "${PLAIN[@]}"
cpu_below deep_nesting_cpu 1000

# 100 MB never built by either side: the client must hang up after about
# the 1 MiB stanza limit (plus what the kernel buffers: a few MiB at most).
check huge_stanza huge-stanza 1 "limit.*(stanza|bytes)|(stanza|bytes).*limit" listen "${PLAIN[@]}"
streamed_at_most huge_stanza_early $((12 * 1024 * 1024))
cpu_below huge_stanza_cpu 1000
check endless_attribute endless-attr 1 "limit.*(stanza|bytes)|(stanza|bytes).*limit" \
  listen "${PLAIN[@]}"
streamed_at_most endless_attribute_early $((12 * 1024 * 1024))
cpu_below endless_attribute_cpu 1000

# --- encodings ----------------------------------------------------------------------
check restart_storm restart-storm 1 "out of turn" listen "${PLAIN[@]}"
check early_success early-success 1 "out of turn" listen "${PLAIN[@]}"
check overlong_utf8 overlong-utf8 1 "UTF-8" listen "${PLAIN[@]}"
check surrogate_utf8 surrogate-utf8 1 "UTF-8" listen "${PLAIN[@]}"
check nul_in_body nul-byte 1 "UTF-8|NUL|malformed XML|invalid token|not well-formed" \
  listen "${PLAIN[@]}"
check nul_before_header nul-header 1 "UTF-8|NUL|malformed XML|invalid token|not well-formed" \
  listen "${PLAIN[@]}"

# --- stream and SASL order ---------------------------------------------------------
check header_storm header-storm 1 "limit.*(depth|nest)" listen "${PLAIN[@]}"
cpu_below header_storm_cpu 1000
check decl_storm decl-storm 1 "malformed XML.*declaration" listen "${PLAIN[@]}"
check stanza_first stanza-first 1 "stream|header|namespace|message" listen "${PLAIN[@]}"

# --- TLS downgrade and certificates ------------------------------------------------
check starttls_downgrade downgrade 4 "STARTTLS|plaintext|TLS" \
  listen --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10
no_auth starttls_downgrade_no_auth
FAKE_ARGS=(--cert "$WRONGHOST_CERT" --key "$WRONGHOST_KEY")
check starttls_wrong_domain starttls-cert 4 "certificate verification failed" \
  listen --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10
no_auth starttls_wrong_domain_no_auth
FAKE_ARGS=(--cert "$SERVER_CERT" --key "$SERVER_KEY")
check starttls_right_domain starttls-cert 0 "listening as tester@localhost/fake" \
  listen --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10 --count 1
FAKE_ARGS=()

# --- SASL mechanism lists ------------------------------------------------------------
check mech_empty mech-empty 5 "no acceptable SASL mechanism|mechanism" listen "${PLAIN[@]}"
check mech_enormous mech-enormous 1 "limit" listen "${PLAIN[@]}"
cpu_below mech_enormous_cpu 1000
check mech_long_name mech-long-name 5 "no acceptable SASL mechanism|mechanism" listen "${PLAIN[@]}"
check mech_many mech-many 0 "listening as tester@localhost/fake" listen "${PLAIN[@]}" --count 1

finish
