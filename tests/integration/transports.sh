#!/usr/bin/env bash
# The same session over every transport against Prosody: TCP (STARTTLS and
# direct TLS), WebSocket (ws:// and wss://) and BOSH (http:// and https://).
# Logins, messages crossing transports with exact bodies, the plaintext
# policy, HTTP-level errors, and SASL EXTERNAL over the TLS transports.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
CA=(--cafile "$CA_FILE")
ALICE=(EPODE_PASSWORD="$ALICE_PASSWORD")
BOB=(EPODE_PASSWORD="$BOB_PASSWORD")

# The transports, as epode options.
declare -A T
T[tcp-starttls]="--server 127.0.0.1:$C2S_PORT --tls starttls"
T[tcp-direct]="--server 127.0.0.1:$TLS_PORT --tls direct"
T[ws]="--url $WS_URL --allow-plaintext"
T[wss]="--url $WSS_URL"
T[bosh-http]="--url $BOSH_URL --allow-plaintext"
T[bosh-https]="--url $BOSH_HTTPS_URL"
NAMES=(tcp-starttls tcp-direct ws wss bosh-http bosh-https)

# 1. Log in over each transport; -v shows the mechanism and, for the framed
# transports, the RFC 7395 <open/>.
for t in "${NAMES[@]}"; do
  # shellcheck disable=SC2086
  run_epode "login_$t" "${ALICE[@]}" -- listen --jid "$ALICE_JID" "${CA[@]}" ${T[$t]} \
    --timeout 2 -v
  if sane "login_$t"; then
    if [ "$RC" = 0 ] && grep -q "^epode: listening as alice@localhost/" "$ERR" &&
      grep -q "mechanism='SCRAM-SHA-256" "$ERR"; then
      case $t in
      ws | wss | bosh-*)
        if grep -q "^-> <open xmlns='urn:ietf:params:xml:ns:xmpp-framing'" "$ERR"; then
          pass "login over $t"
        else fail "login over $t" "no <open/> framing in the traffic" "$ERR"; fi ;;
      *) pass "login over $t" ;;
      esac
    else
      fail "login over $t" "exit $RC" "$ERR"
    fi
  fi
done

# 2. Messages across transports, bodies compared exactly.
BODY=$("$PY" -c '
import random, string
r = random.Random(7)
s = "".join(r.choice(string.ascii_letters + string.digits + " ") for _ in range(10000))
print("Grüße 👋 — 日本語 <tag> & \"quotes\" '"'"'apos'"'"' \\ " + s, end="")')
deliver() { # FROM_T TO_T
  local from=$1 to=$2 name="deliver $1 -> $2"
  # shellcheck disable=SC2086
  bg_epode "listen_${from}_$to" "${BOB[@]}" -- listen --jid "$BOB_JID" "${CA[@]}" ${T[$to]} \
    --json --count 1 --timeout 15
  local lpid=$BG_PID lout=$BG_OUT lerr=$BG_ERR
  if ! wait_for "$lerr" "^epode: listening as" 10 "$lpid"; then
    fail "$name" "the listener over $to did not get ready" "$lerr"
    return
  fi
  # shellcheck disable=SC2086
  run_epode "send_${from}_$to" "${ALICE[@]}" -- send --jid "$ALICE_JID" "${CA[@]}" ${T[$from]} \
    -m "$BODY" "$BOB_JID"
  local src=$RC serr=$ERR
  wait_rc "$lpid"
  if [ "$src" != 0 ] || [ "$RC" != 0 ]; then
    fail "$name" "send exit $src, listen exit $RC" "$serr" "$lerr"
    return
  fi
  if BODY="$BODY" "$PY" -c '
import json, os, sys
m = json.loads(open(sys.argv[1], encoding="utf-8").readline())
sys.exit(0 if m["body"] == os.environ["BODY"] else 1)' "$lout"; then
    pass "$name (body exact, ${#BODY} chars)"
  else
    fail "$name" "the body differs" "$lout"
  fi
}
deliver tcp-starttls wss
deliver wss tcp-direct
deliver ws wss
deliver bosh-https wss
deliver wss bosh-https
deliver bosh-http tcp-starttls
deliver tcp-direct bosh-http

# 3. Policy and errors.
run_epode ws_refused "${ALICE[@]}" -- listen --jid "$ALICE_JID" --url "$WS_URL" --timeout 2
if sane ws_refused; then
  if [ "$RC" = 4 ] && grep -q "ws:// transport is not encrypted" "$ERR"; then
    pass "ws:// refused without --allow-plaintext (exit 4)"
  else fail "ws:// refused without --allow-plaintext" "exit $RC" "$ERR"; fi
fi
run_epode wss_404 "${ALICE[@]}" -- listen --jid "$ALICE_JID" "${CA[@]}" \
  --url "wss://localhost:$HTTPS_PORT/no-such-endpoint" --timeout 2
if sane wss_404; then
  if [ "$RC" = 3 ] && grep -q "HTTP 404" "$ERR"; then
    pass "wss:// wrong path: HTTP 404 named (exit 3)"
  else fail "wss:// wrong path" "exit $RC" "$ERR"; fi
fi
run_epode bosh_refused "${ALICE[@]}" -- listen --jid "$ALICE_JID" --url "$BOSH_URL" --timeout 2
if sane bosh_refused; then
  if [ "$RC" = 4 ] && grep -q "BOSH http:// transport is not encrypted" "$ERR"; then
    pass "BOSH http:// refused without --allow-plaintext (exit 4)"
  else fail "BOSH http:// refused without --allow-plaintext" "exit $RC" "$ERR"; fi
fi
run_epode bosh_404 "${ALICE[@]}" -- listen --jid "$ALICE_JID" "${CA[@]}" \
  --url "https://localhost:$HTTPS_PORT/no-such-endpoint" --timeout 2
if sane bosh_404; then
  if [ "$RC" != 0 ] && [ "$RC" -lt 128 ] && grep -q "404" "$ERR"; then
    pass "BOSH wrong path: HTTP 404 named (exit $RC)"
  else fail "BOSH wrong path" "exit $RC" "$ERR"; fi
fi
run_epode bosh_untrusted "${ALICE[@]}" -- listen --jid "$ALICE_JID" --url "$BOSH_HTTPS_URL" \
  --timeout 2
if sane bosh_untrusted; then
  if [ "$RC" = 4 ]; then pass "BOSH https:// verifies the certificate (exit 4 without the CA)"
  else fail "BOSH https:// verifies the certificate" "exit $RC" "$ERR"; fi
fi
run_epode wss_untrusted "${ALICE[@]}" -- listen --jid "$ALICE_JID" --url "$WSS_URL" --timeout 2
if sane wss_untrusted; then
  if [ "$RC" = 4 ]; then pass "wss:// verifies the certificate (exit 4 without the CA)"
  else fail "wss:// verifies the certificate" "exit $RC" "$ERR"; fi
fi

# 4. SASL EXTERNAL with a client certificate over the TLS transports.
for t in wss bosh-https; do
  # shellcheck disable=SC2086
  run_epode "external_$t" -- listen --jid "$CLIENT_JID" --cert "$CLIENT_CERT" --key "$CLIENT_KEY" \
    "${CA[@]}" ${T[$t]} --timeout 2 -v
  if sane "external_$t"; then
    if [ "$RC" = 0 ] && grep -q "mechanism='EXTERNAL'" "$ERR" &&
      grep -q "^epode: listening as $CLIENT_JID/" "$ERR"; then
      pass "EXTERNAL with a client certificate over $t (no password)"
    else fail "EXTERNAL over $t" "exit $RC" "$ERR"; fi
  fi
done
# 5. WebSocket see-other-uri (RFC 7395): followed once, to the real server;
# a second redirect is a failure naming the condition.
fake_ws() { # NAME REDIRECT CONNECTIONS [MORE ARGS]
  "$PY" "$SRC/tests/tools/fake_ws.py" --redirect "$2" --connections "$3" --idle 15 "${@:4}" \
    >"$WORK/fakews-$1.port" 2>"$WORK/fakews-$1.err" &
  BG_PIDS+=($!)
  local i
  for i in $(seq 100); do
    FAKE_WS_PORT=$(head -n1 "$WORK/fakews-$1.port" 2>/dev/null || true)
    [ -n "$FAKE_WS_PORT" ] && return 0
    sleep 0.05
  done
  echo "FAIL setup: fake WebSocket server did not start"
  exit 1
}
fake_ws once "$WSS_URL" 1
run_epode redirect_once "${ALICE[@]}" -- listen --jid "$ALICE_JID" "${CA[@]}" --allow-plaintext \
  --url "ws://127.0.0.1:$FAKE_WS_PORT/xmpp-websocket" --timeout 5 -v
if sane redirect_once; then
  if [ "$RC" = 0 ] && grep -q "redirects to $WSS_URL" "$ERR" &&
    grep -q "^epode: listening as alice@localhost/" "$ERR"; then
    pass "WebSocket see-other-uri followed to the real server"
  else fail "WebSocket see-other-uri followed" "exit $RC" "$ERR"; fi
fi
fake_ws loop "ws://127.0.0.1:1/xmpp-websocket" 1
fake_ws twice "ws://127.0.0.1:$FAKE_WS_PORT/xmpp-websocket" 1
run_epode redirect_twice "${ALICE[@]}" -- listen --jid "$ALICE_JID" --allow-plaintext \
  --url "ws://127.0.0.1:$FAKE_WS_PORT/xmpp-websocket" --timeout 5
if sane redirect_twice; then
  if [ "$RC" = 7 ] && grep -q "see-other-uri" "$ERR"; then
    pass "WebSocket see-other-uri followed only once (exit 7)"
  else fail "WebSocket see-other-uri followed only once" "exit $RC" "$ERR"; fi
fi
# 6. A server that drops the WebSocket without <close/>: the close code and
# reason reach the user.
fake_ws bare "unused" 1 --close-code 1001 --reason "going away for maintenance"
run_epode ws_bare_close "${ALICE[@]}" -- listen --jid "$ALICE_JID" --allow-plaintext \
  --url "ws://127.0.0.1:$FAKE_WS_PORT/xmpp-websocket" --timeout 5
if sane ws_bare_close; then
  if [ "$RC" != 0 ] && grep -q "without <close/> (code 1001: going away for maintenance)" "$ERR"
  then pass "WebSocket closed without <close/>: code and reason reported (exit $RC)"
  else fail "WebSocket closed without <close/>" "exit $RC" "$ERR"; fi
fi
finish
