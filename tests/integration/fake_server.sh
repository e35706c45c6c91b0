#!/usr/bin/env bash
# epode against tests/tools/fake_server.py: what a real server will not do
# (hostile or broken input, TLS failures, silence). Each case checks the
# exit status the man page promises and a message naming the cause, and
# that epode neither crashes nor hangs.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
# shellcheck source=lib/fake.sh
. "$(dirname "$0")/lib/fake.sh"

# check NAME SCENARIO CODE STDERR-REGEX EPODE-ARGS... ("@PORT@" in the
# arguments becomes the fake server's port).
check() {
  local name=$1 sc=$2 code=$3 re=$4
  shift 4
  start_fake "$name" "$sc"
  local args=("${@//@PORT@/$FAKE_PORT}")
  local t0
  t0=$(date +%s%N)
  run_epode "$name" "${ACCT[@]}" -- "${args[@]}"
  TOOK_MS=$((($(date +%s%N) - t0) / 1000000))
  fake_verdict "$name" "$code" "$re"
}

PLAIN=(--server "127.0.0.1:@PORT@" --allow-plaintext --timeout 10)

# --- control: a well-behaved scenario (if this fails, the harness is broken) ---
check control_message message 0 "listening as tester@localhost/fake" listen "${PLAIN[@]}" --count 1
if [ "$(cat "$OUT")" = "eve@localhost/x: hello from the fake server" ]; then
  pass control_message_output
else
  fail control_message_output "unexpected output" "$OUT"
fi

# --allow-plaintext warns when the stream really is unencrypted.
grep -q "WARNING: the stream is not encrypted" "$ERR" && pass plaintext_warning ||
  fail plaintext_warning "no warning about the unencrypted stream" "$ERR"

# --- output escaping, byte for byte (CR, tab, quotes, backslash, UTF-8) --------
check escapes_plain escapes 0 "listening as" listen "${PLAIN[@]}" --count 1
printf 'eve@localhost/x: q"uote\\\\back\\r\\ntab\t<&> \xc3\xa9\xe6\x97\xa5 \xf0\x9f\x91\x8b '"'end'"'\n' \
  >"$WORK/escapes_plain.want"
if cmp -s "$OUT" "$WORK/escapes_plain.want"; then pass escapes_plain_bytes; else
  fail escapes_plain_bytes "plain line differs (want: $(od -c "$WORK/escapes_plain.want" | head -3))" \
    "$OUT"
fi
check escapes_json escapes 0 "listening as" listen "${PLAIN[@]}" --count 1 --json
printf '{"from":"eve@localhost/x","to":"tester@localhost/fake","type":"chat","id":"fake-m1",'\
'"body":"q\\"uote\\\\back\\r\\ntab\\t<&> \xc3\xa9\xe6\x97\xa5 \xf0\x9f\x91\x8b '"'end'"'"}\n' \
  >"$WORK/escapes_json.want"
if cmp -s "$OUT" "$WORK/escapes_json.want"; then pass escapes_json_bytes; else
  fail escapes_json_bytes "JSON line differs from $(cat "$WORK/escapes_json.want")" "$OUT"
fi

# --- hostile XML -------------------------------------------------------------
# A message the server never acknowledged (no XEP-0198 ack, no clean close):
# epode send says so and exits non-zero.
check send_unacknowledged drop-after-message 1 "not acknowledged by the server" send \
  "${PLAIN[@]}" -m "lost?" eve@localhost
check malformed_xml malformed 1 "malformed XML" listen "${PLAIN[@]}"
check doctype doctype 1 "not allowed.*(DTD|DOCTYPE)|DTD|DOCTYPE" listen "${PLAIN[@]}"
check entity_bomb entity-bomb 1 "not allowed|DTD|DOCTYPE|entit" listen "${PLAIN[@]}"
check oversized_stanza oversized 1 "limit" listen "${PLAIN[@]}"
check invalid_utf8 bad-utf8 1 "UTF-8" listen "${PLAIN[@]}"
check mid_stanza_close mid-stanza-close 1 "closed" listen "${PLAIN[@]}"

# --- stream errors and SASL failure ---------------------------------------------
check stream_error stream-error 7 "stream error.*\(host-unknown\).*fake: this server does not" \
  listen "${PLAIN[@]}"
check stream_error_ready stream-error-ready 7 "\(system-shutdown\).*fake: going down" \
  listen "${PLAIN[@]}"
check stream_error_send stream-error 7 "host-unknown" send "${PLAIN[@]}" -m hi bob@localhost
check sasl_failure sasl-failure 5 \
  "authentication failed \(not-authorized\): fake: wrong password \[mechanism PLAIN\]" \
  listen "${PLAIN[@]}"

# --- TLS ---------------------------------------------------------------------------
# Plaintext-only server without --allow-plaintext: refused before any password.
check plaintext_refused message 4 "STARTTLS|plaintext" \
  listen --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10
if grep -q "<auth" "$FAKE_LOG"; then
  fail plaintext_no_auth "the client sent <auth> over an unencrypted stream"
else pass plaintext_no_auth; fi

check tls_garbage tls-garbage 4 "TLS" \
  listen --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10

FAKE_ARGS=(--cert "$SERVER_CERT" --key "$SERVER_KEY")
check tls_direct_ok tls 0 "listening as tester@localhost/fake" \
  listen --tls direct --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10 --count 1
grep -q "stream is not encrypted" "$ERR" && fail tls_no_plaintext_warning "plaintext warning over TLS" "$ERR" ||
  pass tls_no_plaintext_warning
FAKE_ARGS=(--cert "$UNTRUSTED_CERT" --key "$UNTRUSTED_KEY")
check tls_untrusted tls 4 "certificate verification failed" \
  listen --tls direct --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10
FAKE_ARGS=(--cert "$WRONGHOST_CERT" --key "$WRONGHOST_KEY")
check tls_wrong_name tls 4 "certificate verification failed" \
  listen --tls direct --server "127.0.0.1:@PORT@" --cafile "$CA_FILE" --timeout 10
FAKE_ARGS=(--cert "$WRONGHOST_CERT" --key "$WRONGHOST_KEY")
check tls_wrong_name_insecure tls 0 "WARNING: --insecure" \
  listen --tls direct --server "127.0.0.1:@PORT@" --insecure --timeout 10 --count 1
FAKE_ARGS=()

# --- a server that never answers --------------------------------------------------
check silent_listen silent 6 "timed out" \
  listen --server "127.0.0.1:@PORT@" --allow-plaintext --timeout 2
if [ "$TOOK_MS" -lt 1500 ] || [ "$TOOK_MS" -gt 6000 ]; then
  fail silent_listen_time "gave up after ${TOOK_MS} ms with --timeout 2"
else pass silent_listen_time; fi
check silent_send silent 6 "timed out" \
  send --server "127.0.0.1:@PORT@" --allow-plaintext --timeout 2 -m hi bob@localhost
if [ "$TOOK_MS" -gt 6000 ]; then
  fail silent_send_time "gave up after ${TOOK_MS} ms with --timeout 2"
else pass silent_send_time; fi

finish
