#!/usr/bin/env bash
# SASL against a real Prosody, over every transport: STARTTLS, direct TLS,
# WebSocket (ws:// and wss://) and BOSH (http:// and https://). Every
# mechanism epode has that Prosody 0.12 offers, each forced or chosen by
# default and confirmed from the -v traffic (the <auth mechanism=…> element
# actually sent), and the failures a user meets (wrong password, wrong token,
# rogue certificate, wrong PKCS#12 password, nothing acceptable offered).
#
# The server (tests/servers/prosody.sh) has one host per way to log in:
#   localhost        passwords: SCRAM-SHA-1/-256, PLAIN; -PLUS (tls-unique,
#                    the only channel binding Prosody 0.12 has) on TLS 1.2 only
#   anon.localhost   ANONYMOUS
#   ccert.localhost  EXTERNAL with a client certificate (mod_auth_ccert)
#   oauth.localhost  OAUTHBEARER, tokens checked by oauth_validator.py
#
# Where a cell does not apply, the column says what happens instead:
#   -PLUS            over TCP and wss epode holds the TLS connection and binds
#                    tls-unique on TLS 1.2; over BOSH libcurl does the TLS and
#                    there is no channel binding (Prosody offers no -PLUS there
#                    either): the default is a plain SCRAM; over ws/bosh-http
#                    there is no TLS at all
#   EXTERNAL         needs TLS: over ws/bosh-http it is refused before any
#                    <auth/>; over wss and https the client certificate goes
#                    in the TLS handshake (libcurl's for BOSH)
#   PLAIN, OAUTHBEARER over ws/bosh-http: sent, because --allow-plaintext
#                    allows it (include/epode/sasl.h), with the warning
#
# The logins of the matrix run concurrently (each one listens for a few
# seconds once it is in, to leave the connect budget of --timeout generous);
# their results are then checked and printed in order, one line per cell:
#   PASS prosody starttls SCRAM-SHA-256-PLUS tls-unique
#   PASS prosody bosh-https OAUTHBEARER good token
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3
# How long a successful `listen` stays in; also its connect budget.
LISTEN=3

# ------------------------------------------------------------------ helpers
declare -A PID_OF
CASES=()

# spawn NAME [ENV=VALUE...] -- ARGS...: starts `epode listen -v ARGS` in the
# background for the matrix cell NAME.
spawn() {
  local name=$1 key
  shift
  key=$(printf '%s' "$name" | tr -c 'A-Za-z0-9_.-' '_')
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    envs+=("$1")
    shift
  done
  [ "${1:-}" = "--" ] && shift
  while [ "$(jobs -rp | wc -l)" -ge "$PARALLEL" ]; do sleep 0.02; done
  bg_epode "$key" "${envs[@]}" -- listen -v --timeout "$LISTEN" "$@"
  PID_OF[$name]=$BG_PID
  CASES+=("$name")
}

# collect NAME: waits for the cell's run; sets RC and ERR (its stderr).
collect() {
  local key
  key=$(printf '%s' "$1" | tr -c 'A-Za-z0-9_.-' '_')
  wait_rc "${PID_OF[$1]}"
  ERR=$WORK/$key.err
}

# The mechanisms of the <auth/> elements epode sent, space-separated.
sent_mechs() {
  { grep -o "^-> <auth [^>]*>" "$ERR" || true; } | sed -n "s/.*mechanism='\([^']*\)'.*/\1/p" |
    xargs
}

# The mechanisms the server offered (the last <mechanisms/> seen).
offered_mechs() {
  { grep -o "<mechanism>[^<]*</mechanism>" "$ERR" || true; } | sed 's/<[^>]*>//g' | sort | xargs
}

# ok NAME MECH-REGEX JID-REGEX [TLS-VERSION]: the login succeeded, bound a
# JID matching JID-REGEX, sent exactly one <auth/> whose mechanism matches
# MECH-REGEX (anchored), over that TLS version if given ("none": no TLS at
# all, and epode warned that the stream is unencrypted).
ok() {
  local name=$1 mre=$2 jre=$3 tlsv=${4:-} sent
  collect "$name"
  sane "$name" || return 0
  sent=$(sent_mechs)
  if [ "$RC" != 0 ]; then
    fail "$name" "exit status $RC, expected 0" "$ERR"
  elif ! grep -Eq "^epode: listening as $jre/[^ ]+$" "$ERR"; then
    fail "$name" "no 'listening as' line for /$jre/" "$ERR"
  elif ! [[ "$sent" =~ ^($mre)$ ]]; then
    fail "$name" "<auth> mechanisms sent: '$sent', expected exactly one matching /$mre/" "$ERR"
  elif [ "$tlsv" = none ] && ! grep -q "^epode: WARNING: the stream is not encrypted" "$ERR"; then
    fail "$name" "no warning that the stream is unencrypted" "$ERR"
  elif [ "$tlsv" = none ] && grep -q "TLS established" "$ERR"; then
    fail "$name" "TLS on a transport that should have none" "$ERR"
  elif [ -n "$tlsv" ] && [ "$tlsv" != none ] && ! grep -q "TLS established: TLSv$tlsv " "$ERR"
  then
    fail "$name" "the TLS version was not $tlsv" "$ERR"
  else
    pass "$name"
  fi
}

# bad NAME CODE STDERR-REGEX [MECH]: the login failed with that exit status
# and message; with MECH, after sending <auth mechanism=MECH> (and only that);
# "-" for MECH: no <auth/> may have been sent at all.
bad() {
  local name=$1 code=$2 re=$3 mech=${4:-} sent
  collect "$name"
  sane "$name" || return 0
  sent=$(sent_mechs)
  if [ "$RC" != "$code" ]; then
    fail "$name" "exit status $RC, expected $code" "$ERR"
  elif ! grep -Eq -- "$re" "$ERR"; then
    fail "$name" "stderr does not match /$re/" "$ERR"
  elif grep -q "listening as" "$ERR"; then
    fail "$name" "a session was established" "$ERR"
  elif [ "$mech" = - ] && [ -n "$sent" ]; then
    fail "$name" "<auth> sent ($sent) although nothing should have been tried" "$ERR"
  elif [ -n "$mech" ] && [ "$mech" != - ] && [ "$sent" != "$mech" ]; then
    fail "$name" "<auth> mechanisms sent: '$sent', expected '$mech'" "$ERR"
  else
    pass "$name"
  fi
}

PW=(EPODE_PASSWORD="$ALICE_PASSWORD")
printf '%s\n' "$OAUTH_TOKEN" >"$WORK/token"

# ------------------------------------------------------------------ transports
# The columns of the matrix, as epode options. http:// and ws:// are
# unencrypted (--allow-plaintext); wss:// and https:// are verified against
# the URL's host (localhost) with the test CA.
MODES=(starttls direct ws wss bosh-http bosh-https)
declare -A TR=(
  [starttls]="--tls starttls --server 127.0.0.1:$C2S_PORT"
  [direct]="--tls direct --server 127.0.0.1:$TLS_PORT"
  [ws]="--url $WS_URL --allow-plaintext"
  [wss]="--url $WSS_URL"
  [bosh-http]="--url $BOSH_URL --allow-plaintext"
  [bosh-https]="--url $BOSH_HTTPS_URL"
)
# What each column can do. TLS: the stream is encrypted (EXTERNAL works,
# a TLS version can be checked). CB: epode holds the TLS connection itself
# and so has channel-binding data (-PLUS); over BOSH libcurl does the TLS
# and epode has none.
is_tls() { [ "$1" != ws ] && [ "$1" != bosh-http ]; }
has_cb() { is_tls "$1" && [ "$1" != bosh-https ]; }

# The logins run in parallel, at most this many at a time (each one stays
# LISTEN seconds).
PARALLEL=${PROSODY_SASL_PARALLEL:-40}

# ------------------------------------------------------------------ the matrix
for mode in "${MODES[@]}"; do
  read -r -a T <<<"${TR[$mode]} --cafile $CA_FILE"
  p="prosody $mode"
  for m in SCRAM-SHA-1 SCRAM-SHA-256 PLAIN; do
    spawn "$p $m" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms "$m" "${T[@]}"
  done
  if has_cb "$mode"; then
    for m in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
      spawn "$p $m tls-unique" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms "$m" --tls-max 1.2 \
        "${T[@]}"
    done
    spawn "$p default on TLS 1.2 is SCRAM-SHA-256-PLUS" "${PW[@]}" -- --jid "$ALICE_JID" \
      --tls-max 1.2 "${T[@]}"
    spawn "$p default on TLS 1.3 is SCRAM-SHA-256" "${PW[@]}" -- --jid "$ALICE_JID" "${T[@]}"
  elif is_tls "$mode"; then
    spawn "$p default on TLS 1.2 is SCRAM-SHA-256, not -PLUS (no channel binding over BOSH)" \
      "${PW[@]}" -- --jid "$ALICE_JID" --tls-max 1.2 "${T[@]}"
    spawn "$p default on TLS 1.3 is SCRAM-SHA-256, not -PLUS (no channel binding over BOSH)" \
      "${PW[@]}" -- --jid "$ALICE_JID" "${T[@]}"
    spawn "$p SCRAM-SHA-256-PLUS forced: refused, not offered over BOSH" "${PW[@]}" -- \
      --jid "$ALICE_JID" --mechanisms SCRAM-SHA-256-PLUS --tls-max 1.2 "${T[@]}"
  else
    spawn "$p default without TLS is SCRAM-SHA-256, not -PLUS" "${PW[@]}" -- \
      --jid "$ALICE_JID" "${T[@]}"
  fi
  spawn "$p ANONYMOUS" -- --jid "$ANON_DOMAIN" "${T[@]}"
  case $mode in
  starttls | ws | bosh-http)
    spawn "$p OAUTHBEARER good token" EPODE_OAUTH_TOKEN="$OAUTH_TOKEN" -- --jid "$OAUTH_JID" \
      "${T[@]}" ;;
  *)
    spawn "$p OAUTHBEARER good token" -- --jid "$OAUTH_JID" --oauth-token-cmd "cat '$WORK/token'" \
      "${T[@]}" ;;
  esac
  spawn "$p OAUTHBEARER bad token" EPODE_OAUTH_TOKEN="bad-token-$mode" -- --jid "$OAUTH_JID" \
    "${T[@]}"
  if is_tls "$mode"; then
    spawn "$p EXTERNAL --cert --key" -- --jid "$CLIENT_JID" --cert "$CLIENT_CERT" \
      --key "$CLIENT_KEY" "${T[@]}"
    spawn "$p EXTERNAL combined PEM" -- --jid "$CLIENT_JID" --cert "$CLIENT_PEM" "${T[@]}"
    spawn "$p EXTERNAL --pkcs12" EPODE_PKCS12_PASSWORD="$CLIENT_P12_PASSWORD" -- \
      --jid "$CLIENT_JID" --pkcs12 "$CLIENT_P12" "${T[@]}"
    spawn "$p EXTERNAL --pkcs12 wrong password" EPODE_PKCS12_PASSWORD="not-$CLIENT_P12_PASSWORD" \
      -- --jid "$CLIENT_JID" --pkcs12 "$CLIENT_P12" "${T[@]}"
    spawn "$p EXTERNAL rogue certificate" -- --jid "$CLIENT_JID" --cert "$ROGUE_CERT" \
      --key "$ROGUE_KEY" "${T[@]}"
    spawn "$p EXTERNAL certificate for another domain" -- --jid "$CLIENT_JID" \
      --cert "$OTHERDOMAIN_CERT" --key "$OTHERDOMAIN_KEY" "${T[@]}"
    spawn "$p EXTERNAL without a certificate" EPODE_PASSWORD=unused -- --jid "$CLIENT_JID" \
      "${T[@]}"
    spawn "$p EXTERNAL bob's JID with alice's certificate" -- --jid "bob@$CCERT_DOMAIN" \
      --cert "$CLIENT_CERT" --key "$CLIENT_KEY" "${T[@]}"
  else
    spawn "$p EXTERNAL refused without TLS" -- --jid "$CLIENT_JID" --cert "$CLIENT_CERT" \
      --key "$CLIENT_KEY" "${T[@]}"
  fi
  spawn "$p wrong password" EPODE_PASSWORD="not-$ALICE_PASSWORD" -- --jid "$ALICE_JID" "${T[@]}"
  spawn "$p --mechanisms not offered" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms DIGEST-MD5 \
    "${T[@]}"
done

# offers_no_plus NAME: the server's last <mechanisms/> (of the cell just
# collected) is exactly the password mechanisms, no -PLUS.
offers_no_plus() {
  local offered
  offered=$(offered_mechs)
  if [ "$offered" = "PLAIN SCRAM-SHA-1 SCRAM-SHA-256" ]; then
    pass "$1"
  else
    fail "$1" "offered: '$offered'" "$ERR"
  fi
}

A='alice@localhost'
for mode in "${MODES[@]}"; do
  p="prosody $mode"
  # The TLS version of the password cells: none at all on ws/bosh-http
  # (and the plaintext warning printed); not logged over BOSH (libcurl).
  v=""
  is_tls "$mode" || v=none
  for m in SCRAM-SHA-1 SCRAM-SHA-256 PLAIN; do
    ok "$p $m" "$m" "$A" "$v"
  done
  if has_cb "$mode"; then
    for m in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
      # Prosody 0.12 binds with tls-unique only: a -PLUS login that succeeds
      # is a tls-unique binding that the server checked.
      ok "$p $m tls-unique" "$m" "$A" 1.2
    done
    ok "$p default on TLS 1.2 is SCRAM-SHA-256-PLUS" "SCRAM-SHA-256-PLUS" "$A" 1.2
    ok "$p default on TLS 1.3 is SCRAM-SHA-256" "SCRAM-SHA-256" "$A" 1.3
    # ... and that is because the server offers no -PLUS there (if it ever
    # does, the default above should become -PLUS: this line then says so).
    offers_no_plus "$p TLS 1.3 offers no -PLUS"
  elif is_tls "$mode"; then
    # Prosody's BOSH offers no -PLUS either (its BOSH sessions carry no TLS
    # connection to bind to); epode could not use one anyway.
    ok "$p default on TLS 1.2 is SCRAM-SHA-256, not -PLUS (no channel binding over BOSH)" \
      SCRAM-SHA-256 "$A"
    offers_no_plus "$p TLS 1.2 offers no -PLUS"
    ok "$p default on TLS 1.3 is SCRAM-SHA-256, not -PLUS (no channel binding over BOSH)" \
      SCRAM-SHA-256 "$A"
    bad "$p SCRAM-SHA-256-PLUS forced: refused, not offered over BOSH" 5 \
      "no acceptable SASL mechanism.*offers \[[^]]*\].*not in the allow-list" -
  else
    ok "$p default without TLS is SCRAM-SHA-256, not -PLUS" SCRAM-SHA-256 "$A" none
    offers_no_plus "$p without TLS offers no -PLUS"
  fi
  ok "$p ANONYMOUS" ANONYMOUS "[^@/ ]+@$ANON_DOMAIN" "$v"
  ok "$p OAUTHBEARER good token" OAUTHBEARER "$OAUTH_JID" "$v"
  bad "$p OAUTHBEARER bad token" 5 \
    "authentication failed \(not-authorized\).*\[mechanism OAUTHBEARER\]" OAUTHBEARER
  # The server really asked the validator (and got its 401).
  if grep -qx "401 bad-token-$mode" "$OAUTH_LOG"; then
    pass "$p OAUTHBEARER bad token checked by the validator"
  else
    fail "$p OAUTHBEARER bad token checked by the validator" "no '401 bad-token-$mode'" \
      "$OAUTH_LOG"
  fi
  if is_tls "$mode"; then
    ok "$p EXTERNAL --cert --key" EXTERNAL "$CLIENT_JID"
    ok "$p EXTERNAL combined PEM" EXTERNAL "$CLIENT_JID"
    ok "$p EXTERNAL --pkcs12" EXTERNAL "$CLIENT_JID"
    bad "$p EXTERNAL --pkcs12 wrong password" 4 "wrong password for the PKCS#12 file" -
    bad "$p EXTERNAL rogue certificate" 5 "authentication failed \(account-disabled\).*EXTERNAL" \
      EXTERNAL
    bad "$p EXTERNAL certificate for another domain" 5 \
      "authentication failed \(not-authorized\).*EXTERNAL" EXTERNAL
    bad "$p EXTERNAL without a certificate" 5 \
      "offers \[EXTERNAL\].*EXTERNAL \(no client certificate is configured\)" -
    # Configured as bob, holding alice's certificate: must not end up logged
    # in at all, in particular not as alice (the server takes the account
    # from the certificate when the authzid is empty).
    bad "$p EXTERNAL bob's JID with alice's certificate" 5 "authentication failed.*EXTERNAL" \
      EXTERNAL
  else
    # A client certificate needs TLS: nothing is tried, and the reason is
    # given.
    bad "$p EXTERNAL refused without TLS" 5 "EXTERNAL needs TLS" -
  fi
  bad "$p wrong password" 5 \
    "authentication failed \(not-authorized\).*\[mechanism SCRAM-SHA-256\]" SCRAM-SHA-256
  bad "$p --mechanisms not offered" 5 \
    "no acceptable SASL mechanism.*offers \[[^]]*SCRAM-SHA-256[^]]*\].*not in the allow-list" -
done
# The good token was accepted by the validator (once per transport).
if [ "$(grep -cx "200 $OAUTH_TOKEN" "$OAUTH_LOG")" = ${#MODES[@]} ]; then
  pass "prosody OAUTHBEARER good token checked by the validator (${#MODES[@]} transports)"
else
  fail "prosody OAUTHBEARER good token checked by the validator" \
    "not ${#MODES[@]} x '200 <token>'" "$OAUTH_LOG"
fi

# ------------------------------------------------------------------ delivery
# A message sent by an EXTERNAL-authenticated `epode send` arrives, exactly,
# from each TLS transport that can carry a client certificate to a listener
# on another transport. The three run at once, each to its own resource of
# bob (a message to the bare JID would reach every listener).
BODY='EXTERNAL says: <hello> & "ünïcode" \ ok'
DELIVERIES=("direct starttls" "wss bosh-http" "bosh-https ws")
declare -A LPID LOUT LERR
for d in "${DELIVERIES[@]}"; do
  read -r from to <<<"$d"
  read -r -a T <<<"${TR[$to]} --cafile $CA_FILE"
  bg_epode "ext_listen_$to" EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" \
    --resource "l-$to" "${T[@]}" --count 1 --timeout 15
  LPID[$d]=$BG_PID
  LOUT[$d]=$BG_OUT
  LERR[$d]=$BG_ERR
done
declare -A SPID
for d in "${DELIVERIES[@]}"; do
  read -r from to <<<"$d"
  name="prosody EXTERNAL send over $from -> listen over $to"
  if ! wait_for "${LERR[$d]}" "listening as" 10 "${LPID[$d]}"; then
    fail "$name" "the listener never got ready" "${LERR[$d]}"
    continue
  fi
  read -r -a T <<<"${TR[$from]} --cafile $CA_FILE"
  bg_epode "ext_send_$from" -- send -v --jid "$CLIENT_JID" --resource "s-$from" \
    --cert "$CLIENT_CERT" --key "$CLIENT_KEY" "${T[@]}" --timeout 10 -m "$BODY" \
    "$BOB_JID/l-$to"
  SPID[$d]=$BG_PID
done
for d in "${DELIVERIES[@]}"; do
  read -r from to <<<"$d"
  name="prosody EXTERNAL send over $from -> listen over $to"
  [ -n "${SPID[$d]:-}" ] || continue
  wait_rc "${SPID[$d]}"
  ERR=$WORK/ext_send_$from.err
  sent=$(sent_mechs)
  if ! sane "$name"; then :
  elif [ "$RC" != 0 ]; then fail "$name" "send: exit status $RC" "$ERR"
  elif [ "$sent" != EXTERNAL ]; then fail "$name" "send used '$sent', not EXTERNAL" "$ERR"
  else
    wait_rc "${LPID[$d]}"
    want="$CLIENT_JID/s-$from: ${BODY//\\/\\\\}"
    if [ "$RC" != 0 ]; then
      fail "$name" "listen: exit status $RC" "${LERR[$d]}" "${LOUT[$d]}"
    elif [ "$(cat "${LOUT[$d]}")" != "$want" ]; then
      fail "$name" "received '$(cat "${LOUT[$d]}")', expected '$want'" "${LERR[$d]}"
    else
      pass "$name"
    fi
  fi
done

finish
