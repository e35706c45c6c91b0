#!/usr/bin/env bash
# XEP-0156: given only the JID, epode finds the WebSocket or BOSH endpoint
# from https://DOMAIN/.well-known/host-meta(.json) and logs in through it.
# The host-meta server is a small HTTPS server on 127.0.0.1:443 (the port
# discovery uses) with the test CA's certificate for localhost; port 443 must
# be free and bindable (CI runs as root).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7
ALICE=(EPODE_PASSWORD="$ALICE_PASSWORD")

# host_meta NAME ARGS...: starts the server; sets HM_PID.
host_meta() {
  local name=$1
  shift
  "$PY" "$SRC/tests/servers/host_meta.py" --port 443 --cert "$SERVER_CERT" --key "$SERVER_KEY" \
    --max-seconds 60 "$@" >"$WORK/hm-$name.out" 2>"$WORK/hm-$name.err" &
  HM_PID=$!
  BG_PIDS+=("$HM_PID")
  if ! wait_for "$WORK/hm-$name.out" "^ready" 10 "$HM_PID"; then
    echo "FAIL setup: the host-meta server could not listen on 127.0.0.1:443"
    cat "$WORK/hm-$name.err"
    exit 1
  fi
}
stop_host_meta() {
  kill "$HM_PID" 2>/dev/null || true
  wait "$HM_PID" 2>/dev/null || true
}

check_login() { # NAME TRANSPORT URL-EXPECTED
  local name=$1 transport=$2 url=$3
  run_epode "$name" "${ALICE[@]}" -- listen --jid "$ALICE_JID" --cafile "$CA_FILE" \
    --transport "$transport" --timeout 5 -v
  if sane "$name"; then
    if [ "$RC" = 0 ] && grep -qF "discovered $url" "$ERR" &&
      grep -q "^epode: listening as alice@localhost/" "$ERR"; then
      pass "$name"
    else
      fail "$name" "exit $RC" "$ERR"
    fi
  fi
}

host_meta xrd --websocket "$WSS_URL" --bosh "$BOSH_HTTPS_URL" --only xrd
check_login "websocket found in host-meta (XRD)" websocket "$WSS_URL"
check_login "BOSH found in host-meta (XRD)" bosh "$BOSH_HTTPS_URL"
stop_host_meta

host_meta json --websocket "$WSS_URL" --only json
check_login "websocket found in host-meta.json" websocket "$WSS_URL"
# No BOSH link there: a clear error naming the domain.
run_epode no_bosh "${ALICE[@]}" -- listen --jid "$ALICE_JID" --cafile "$CA_FILE" \
  --transport bosh --timeout 5
if sane no_bosh; then
  if [ "$RC" != 0 ] && grep -q "no BOSH endpoint for localhost" "$ERR"; then
    pass "no BOSH link: clear error (exit $RC)"
  else fail "no BOSH link: clear error" "exit $RC" "$ERR"; fi
fi
stop_host_meta

# Discovery verifies the certificate of the host-meta server.
host_meta untrusted --websocket "$WSS_URL"
run_epode untrusted "${ALICE[@]}" -- listen --jid "$ALICE_JID" --transport websocket --timeout 5
if sane untrusted; then
  if [ "$RC" = 4 ]; then pass "host-meta over HTTPS is verified (exit 4 without the CA)"
  else fail "host-meta over HTTPS is verified" "exit $RC" "$ERR"; fi
fi
stop_host_meta
finish
