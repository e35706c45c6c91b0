#!/usr/bin/env bash
# SASL against a real Prosody, over STARTTLS and over direct TLS: every
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
# The logins of the matrix run concurrently (each one listens for a few
# seconds once it is in, to leave the connect budget of --timeout generous);
# their results are then checked and printed in order, one line per cell:
#   PASS prosody starttls SCRAM-SHA-256-PLUS tls-unique
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
# MECH-REGEX (anchored), over that TLS version if given.
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
  elif [ -n "$tlsv" ] && ! grep -q "TLS established: TLSv$tlsv " "$ERR"; then
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

# ------------------------------------------------------------------ the matrix
for mode in starttls direct; do
  if [ $mode = starttls ]; then
    T=(--tls starttls --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
  else
    T=(--tls direct --server "127.0.0.1:$TLS_PORT" --cafile "$CA_FILE")
  fi
  p="prosody $mode"
  for m in SCRAM-SHA-1 SCRAM-SHA-256 PLAIN; do
    spawn "$p $m" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms "$m" "${T[@]}"
  done
  for m in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
    spawn "$p $m tls-unique" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms "$m" --tls-max 1.2 \
      "${T[@]}"
  done
  spawn "$p default on TLS 1.2 is SCRAM-SHA-256-PLUS" "${PW[@]}" -- --jid "$ALICE_JID" \
    --tls-max 1.2 "${T[@]}"
  spawn "$p default on TLS 1.3 is SCRAM-SHA-256" "${PW[@]}" -- --jid "$ALICE_JID" "${T[@]}"
  spawn "$p ANONYMOUS" -- --jid "$ANON_DOMAIN" "${T[@]}"
  if [ $mode = starttls ]; then
    spawn "$p OAUTHBEARER" EPODE_OAUTH_TOKEN="$OAUTH_TOKEN" -- --jid "$OAUTH_JID" "${T[@]}"
  else
    spawn "$p OAUTHBEARER" -- --jid "$OAUTH_JID" --oauth-token-cmd "cat '$WORK/token'" "${T[@]}"
  fi
  spawn "$p OAUTHBEARER bad token" EPODE_OAUTH_TOKEN="bad-token-$mode" -- --jid "$OAUTH_JID" \
    "${T[@]}"
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
  spawn "$p EXTERNAL without a certificate" EPODE_PASSWORD=unused -- --jid "$CLIENT_JID" "${T[@]}"
  spawn "$p EXTERNAL bob's JID with alice's certificate" -- --jid "bob@$CCERT_DOMAIN" \
    --cert "$CLIENT_CERT" --key "$CLIENT_KEY" "${T[@]}"
  spawn "$p wrong password" EPODE_PASSWORD="not-$ALICE_PASSWORD" -- --jid "$ALICE_JID" "${T[@]}"
  spawn "$p --mechanisms not offered" "${PW[@]}" -- --jid "$ALICE_JID" --mechanisms DIGEST-MD5 \
    "${T[@]}"
done

A='alice@localhost'
for mode in starttls direct; do
  p="prosody $mode"
  for m in SCRAM-SHA-1 SCRAM-SHA-256 PLAIN; do
    ok "$p $m" "$m" "$A"
  done
  for m in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
    # Prosody 0.12 binds with tls-unique only: a -PLUS login that succeeds
    # is a tls-unique binding that the server checked.
    ok "$p $m tls-unique" "$m" "$A" 1.2
  done
  ok "$p default on TLS 1.2 is SCRAM-SHA-256-PLUS" "SCRAM-SHA-256-PLUS" "$A" 1.2
  ok "$p default on TLS 1.3 is SCRAM-SHA-256" "SCRAM-SHA-256" "$A" 1.3
  # ... and that is because the server offers no -PLUS there (if it ever
  # does, the default above should become -PLUS: this line then says so).
  offered=$(offered_mechs)
  if [ "$offered" = "PLAIN SCRAM-SHA-1 SCRAM-SHA-256" ]; then
    pass "$p TLS 1.3 offers no -PLUS"
  else
    fail "$p TLS 1.3 offers no -PLUS" "offered on TLS 1.3: '$offered'" "$ERR"
  fi
  ok "$p ANONYMOUS" ANONYMOUS "[^@/ ]+@$ANON_DOMAIN"
  ok "$p OAUTHBEARER" OAUTHBEARER "$OAUTH_JID"
  bad "$p OAUTHBEARER bad token" 5 \
    "authentication failed \(not-authorized\).*\[mechanism OAUTHBEARER\]" OAUTHBEARER
  # The server really asked the validator (and got its 401).
  if grep -qx "401 bad-token-$mode" "$OAUTH_LOG"; then
    pass "$p OAUTHBEARER bad token checked by the validator"
  else
    fail "$p OAUTHBEARER bad token checked by the validator" "no '401 bad-token-$mode'" \
      "$OAUTH_LOG"
  fi
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
  # in at all, in particular not as alice (the server takes the account from
  # the certificate when the authzid is empty).
  bad "$p EXTERNAL bob's JID with alice's certificate" 5 "authentication failed.*EXTERNAL" \
    EXTERNAL
  bad "$p wrong password" 5 \
    "authentication failed \(not-authorized\).*\[mechanism SCRAM-SHA-256\]" SCRAM-SHA-256
  bad "$p --mechanisms not offered" 5 \
    "no acceptable SASL mechanism.*offers \[[^]]*SCRAM-SHA-256[^]]*\].*not in the allow-list" -
done
# The good token was accepted by the validator (both times).
if [ "$(grep -cx "200 $OAUTH_TOKEN" "$OAUTH_LOG")" = 2 ]; then
  pass "prosody OAUTHBEARER good token checked by the validator"
else
  fail "prosody OAUTHBEARER good token checked by the validator" "not 2 x '200 <token>'" \
    "$OAUTH_LOG"
fi

# ------------------------------------------------------------------ delivery
# A message sent by an EXTERNAL-authenticated `epode send` arrives, exactly.
BODY='EXTERNAL says: <hello> & "ünïcode" \ ok'
bg_epode ext_listen EPODE_PASSWORD="$BOB_PASSWORD" -- listen --jid "$BOB_JID" \
  --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" --count 1 --timeout 15
LPID=$BG_PID
LOUT=$BG_OUT
LERR=$BG_ERR
name="prosody EXTERNAL send -> listen"
if ! wait_for "$LERR" "listening as" 10 "$LPID"; then
  fail "$name" "the listener never got ready" "$LERR"
else
  run_epode ext_send -- send -v --jid "$CLIENT_JID" --resource ext-sender --cert "$CLIENT_CERT" \
    --key "$CLIENT_KEY" --tls direct --server "127.0.0.1:$TLS_PORT" --cafile "$CA_FILE" \
    --timeout 10 -m "$BODY" "$BOB_JID"
  sent=$(sent_mechs)
  if ! sane "$name"; then :
  elif [ "$RC" != 0 ]; then fail "$name" "send: exit status $RC" "$ERR"
  elif [ "$sent" != EXTERNAL ]; then fail "$name" "send used '$sent', not EXTERNAL" "$ERR"
  else
    wait_rc "$LPID"
    want="$CLIENT_JID/ext-sender: ${BODY//\\/\\\\}"
    if [ "$RC" != 0 ]; then
      fail "$name" "listen: exit status $RC" "$LERR" "$LOUT"
    elif [ "$(cat "$LOUT")" != "$want" ]; then
      fail "$name" "received '$(cat "$LOUT")', expected '$want'" "$LERR"
    else
      pass "$name"
    fi
  fi
fi

finish
