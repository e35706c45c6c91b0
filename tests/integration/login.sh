#!/usr/bin/env bash
# Logging in to a real Prosody: STARTTLS + SCRAM, direct TLS, wrong password,
# certificate verification, --insecure, connection refused, usage errors,
# the password command, signals and the listen timeout; login, wrong password,
# certificate verification and --insecure over WebSocket and BOSH too
# (ws_login, wss_untrusted_ca, bosh-https_insecure, …).
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
A=(EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$ALICE_PASSWORD")
ST=(--server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
DT=(--tls direct --server "127.0.0.1:$TLS_PORT" --cafile "$CA_FILE")

# --- STARTTLS + SCRAM ------------------------------------------------------
run_epode starttls_scram "${A[@]}" -- listen -v "${ST[@]}" --timeout 1
expect starttls_scram 0 "^epode: listening as alice@localhost/[^ ]+$"
# The traffic log shows STARTTLS, then SCRAM (not PLAIN), and never the
# password or the SASL payloads.
if ! grep -q "^-> <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'" "$ERR"; then
  fail starttls_used "no <starttls/> in the -v traffic" "$ERR"
else pass starttls_used; fi
if ! grep -Eq "^-> <auth [^>]*mechanism=.SCRAM-SHA-(256|1)." "$ERR"; then
  fail scram_used "no SCRAM <auth> in the -v traffic" "$ERR"
else pass scram_used; fi
if grep -q -- "$ALICE_PASSWORD" "$ERR" || ! grep -q "\[redacted\]" "$ERR"; then
  fail sasl_redacted "the password appears in, or SASL payloads are not redacted from, -v" "$ERR"
else pass sasl_redacted; fi

# --- direct TLS --------------------------------------------------------------
run_epode direct_tls "${A[@]}" -- listen "${DT[@]}" --timeout 1
expect direct_tls 0 "^epode: listening as alice@localhost/"

# --- account from the option, resource, password command --------------------
run_epode resource EPODE_PASSWORD="$ALICE_PASSWORD" -- \
  listen --jid "$ALICE_JID" --resource epode-test "${ST[@]}" --timeout 1
expect resource 0 "^epode: listening as alice@localhost/epode-test$"

printf '%s\nsecond line is ignored\n' "$BOB_PASSWORD" >"$WORK/pw"
run_epode password_cmd EPODE_PASSWORD=wrong-and-ignored -- \
  listen --jid "$BOB_JID" --password-cmd "cat '$WORK/pw'" "${ST[@]}" --timeout 1
expect password_cmd 0 "^epode: listening as bob@localhost/"

run_epode password_cmd_fails -- listen --jid "$BOB_JID" --password-cmd "exit 3" "${ST[@]}" \
  --timeout 1
expect password_cmd_fails 1 "password command failed"

# --- wrong password ------------------------------------------------------------
run_epode wrong_password EPODE_JID="$ALICE_JID" EPODE_PASSWORD="not-the-password" -- \
  listen "${ST[@]}" --timeout 5
expect wrong_password 5 "authentication failed \(not-authorized\).*\[mechanism SCRAM-SHA-"

run_epode unknown_user EPODE_JID="mallory@localhost" EPODE_PASSWORD="x" -- \
  listen "${ST[@]}" --timeout 5
expect unknown_user 5 "not-authorized"

# --- certificate verification ------------------------------------------------
# No --cafile: the system store does not know the test CA.
run_epode untrusted_system_store "${A[@]}" -- listen --server "127.0.0.1:$C2S_PORT" --timeout 5
expect untrusted_system_store 4 "certificate verification failed"
if grep -q "listening as" "$ERR"; then
  fail untrusted_no_session "a session was established despite the failed verification" "$ERR"
else pass untrusted_no_session; fi

run_epode untrusted_ca "${A[@]}" -- listen --server "127.0.0.1:$C2S_PORT" \
  --cafile "$UNTRUSTED_CA_FILE" --timeout 5
expect untrusted_ca 4 "certificate verification failed"

run_epode untrusted_ca_direct "${A[@]}" -- listen --tls direct --server "127.0.0.1:$TLS_PORT" \
  --cafile "$UNTRUSTED_CA_FILE" --timeout 5
expect untrusted_ca_direct 4 "certificate verification failed"

# Direct TLS for a domain the server does not serve: TLS must fail (Prosody
# rejects the SNI; the certificate name check itself is covered by
# fake_server.sh with a trusted certificate for the wrong name).
run_epode wrong_domain EPODE_JID="alice@example.org" EPODE_PASSWORD=x -- \
  listen --tls direct --server "127.0.0.1:$TLS_PORT" --cafile "$CA_FILE" --timeout 5
expect wrong_domain 4 "TLS"

run_epode insecure "${A[@]}" -- listen --server "127.0.0.1:$C2S_PORT" --insecure --timeout 1
expect insecure 0 "WARNING: --insecure"
grep -q "listening as alice@localhost/" "$ERR" && pass insecure_session ||
  fail insecure_session "no session with --insecure" "$ERR"

# --- the same over WebSocket and BOSH -------------------------------------------
# Login, wrong password and certificate verification over ws://, wss://,
# BOSH http:// and https:// (the unencrypted ones with --allow-plaintext;
# they have no certificate to verify). The runs are independent: all at
# once, checked in order.
declare -A URL=([ws]=$WS_URL [wss]=$WSS_URL [bosh-http]=$BOSH_URL [bosh-https]=$BOSH_HTTPS_URL)
HTTP_MODES=(ws wss bosh-http bosh-https)
# http_cells MODE: the checks of that transport, one "NAME|PASSWORD|ARGS" a
# line. A successful login listens for its --timeout; failures end at once.
http_cells() {
  local pt=""
  case $1 in ws | bosh-http) pt=--allow-plaintext ;; esac
  printf '%s\n' "login|$ALICE_PASSWORD|--cafile $CA_FILE $pt --timeout 2" \
    "wrong_password|not-the-password|--cafile $CA_FILE $pt --timeout 5"
  if [ -z "$pt" ]; then
    printf '%s\n' "untrusted_system_store|$ALICE_PASSWORD|--timeout 5" \
      "untrusted_ca|$ALICE_PASSWORD|--cafile $UNTRUSTED_CA_FILE --timeout 5" \
      "insecure|$ALICE_PASSWORD|--insecure --timeout 2"
  fi
}
declare -A HPID
for t in "${HTTP_MODES[@]}"; do
  while IFS='|' read -r c pw args; do
    read -r -a xa <<<"$args"
    bg_epode "${t}_$c" EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$pw" -- listen --url "${URL[$t]}" \
      "${xa[@]}"
    HPID[${t}_$c]=$BG_PID
  done < <(http_cells "$t")
done
for t in "${HTTP_MODES[@]}"; do
  while IFS='|' read -r c _ _; do
    n=${t}_$c
    wait_rc "${HPID[$n]}"
    ERR=$WORK/$n.err
    OUT=$WORK/$n.out
    case $c in
    login) expect "$n" 0 "^epode: listening as alice@localhost/[^ ]+$" ;;
    wrong_password)
      expect "$n" 5 "authentication failed \(not-authorized\).*\[mechanism SCRAM-SHA-" ;;
    untrusted_*)
      expect "$n" 4 "certificate verification failed"
      if grep -q "listening as" "$ERR"; then
        fail "${n}_no_session" "a session was established despite the failed verification" "$ERR"
      else pass "${n}_no_session"; fi ;;
    insecure)
      expect "$n" 0 "WARNING: --insecure"
      if grep -q "listening as alice@localhost/" "$ERR"; then pass "${n}_session"
      else fail "${n}_session" "no session with --insecure" "$ERR"; fi ;;
    esac
  done < <(http_cells "$t")
done

# --- connection refused, bad usage ------------------------------------------------
PORT=$(closed_port)
run_epode refused "${A[@]}" -- listen --server "127.0.0.1:$PORT" --cafile "$CA_FILE" --timeout 5
expect refused 3 "could not connect.*(refused|Connection refused)"

# An IPv6 literal in brackets is parsed as host + port (refused: exit 3 and
# the address named; no IPv6 listener is needed for this).
run_epode ipv6_literal "${A[@]}" -- listen --server "[::1]:$PORT" --cafile "$CA_FILE" --timeout 5
expect ipv6_literal 3 "::1.*$PORT|$PORT.*::1"

# A host name for --server goes through the resolver (localhost may give ::1
# first; Prosody listens on 127.0.0.1 only, so the next address must be tried).
run_epode server_hostname "${A[@]}" -- listen --server "localhost:$C2S_PORT" --cafile "$CA_FILE" \
  --timeout 2
expect server_hostname 0 "listening as alice@localhost/"

run_epode usage_unknown_option "${A[@]}" -- listen --no-such-option
expect usage_unknown_option 2 "unknown option '--no-such-option'"
run_epode usage_password_option "${A[@]}" -- send --password secret bob@localhost
expect usage_password_option 2 "EPODE_PASSWORD"
run_epode usage_no_jid EPODE_PASSWORD=x -- listen "${ST[@]}"
expect usage_no_jid 2 "--jid"
run_epode usage_bad_jid EPODE_PASSWORD=x -- send --jid "a@b@c" -m hi bob@localhost
expect usage_bad_jid 2 "invalid account JID"
run_epode usage_bad_recipient "${A[@]}" -- send -m hi "bob@"
expect usage_bad_recipient 2 "invalid recipient JID"
run_epode usage_no_recipient "${A[@]}" -- send -m hi
expect usage_no_recipient 2 "no recipient"
run_epode usage_bad_tls "${A[@]}" -- listen --tls sometimes
expect usage_bad_tls 2 "--tls must be"
run_epode usage_bad_server "${A[@]}" -- listen --server "[::1"
expect usage_bad_server 2 "--server"
run_epode usage_bad_count "${A[@]}" -- listen --count 0
expect usage_bad_count 2 "--count"
run_epode usage_unknown_command -- frobnicate
expect usage_unknown_command 2 "unknown command"
run_epode usage_no_password EPODE_JID="$ALICE_JID" -- listen "${ST[@]}"
expect usage_no_password 2 "EPODE_PASSWORD"

run_epode help -- --help
expect help 0 "" "^Exit status:"
grep -q "^  5  authentication failed" "$OUT" && pass help_exit_codes ||
  fail help_exit_codes "--help lacks the exit code table" "$OUT"
# One exit code table: --help, the man page and the Markdown page list the
# same codes 0-7 and nothing else.
help_codes=$(sed -n '/^Exit status:/,/^$/p' "$OUT" | grep -Eo '^  [0-9]+ ' | tr -d ' ' | xargs)
man_codes=$(sed -n '/^\.SH EXIT STATUS/,/^\.SH /p' "$SRC/docs/epode.1" | grep -Eo '^\.B [0-9]+$' |
  cut -d' ' -f2 | xargs)
md_codes=$(sed -n '/^## Exit status/,/^## /p' "$SRC/docs/epode.md" | grep -Eo '^\| [0-9]+ ' |
  tr -d '| ' | xargs)
if [ "$help_codes" = "0 1 2 3 4 5 6 7" ] && [ "$man_codes" = "$help_codes" ] &&
  [ "$md_codes" = "$help_codes" ]; then
  pass exit_code_tables
else
  fail exit_code_tables "--help: '$help_codes', man: '$man_codes', md: '$md_codes'"
fi
run_epode send_help -- send --help
expect send_help 0 "" "^Usage: epode send"
run_epode version -- --version
expect version 0 "" "^epode [0-9]+\.[0-9]+\.[0-9]+"

# --- listen: --count not reached in --timeout, signals --------------------------
run_epode count_timeout "${A[@]}" -- listen "${ST[@]}" --count 1 --timeout 1
expect count_timeout 6 "timed out: received 0 of 1 message"

for sig in TERM INT; do
  bg_epode "sig$sig" "${A[@]}" -- listen "${ST[@]}"
  if ! wait_for "$BG_ERR" "listening as" 10 "$BG_PID"; then
    fail "sigterm_$sig" "listen never got ready" "$BG_ERR"
    continue
  fi
  t0=$(date +%s%N)
  kill -"$sig" "$BG_PID"
  wait_rc "$BG_PID"
  ms=$((($(date +%s%N) - t0) / 1000000))
  ERR=$BG_ERR
  if ! sane "signal_$sig"; then :
  elif [ "$RC" != 0 ]; then fail "signal_$sig" "exit status $RC after SIG$sig, expected 0" "$BG_ERR"
  elif [ "$ms" -gt 3000 ]; then fail "signal_$sig" "took ${ms} ms to close after SIG$sig"
  else pass "signal_$sig"; fi
done

finish
