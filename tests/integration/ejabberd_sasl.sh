#!/usr/bin/env bash
# SASL against a real ejabberd (tests/servers/ejabberd.sh): every mechanism
# it offers, over STARTTLS, direct TLS, WebSocket (ws:// and wss://) and BOSH
# (http:// and https://), each one forced with --mechanisms and confirmed in
# the traffic log (-v shows the <auth mechanism='…'> element with the payload
# redacted). Over TCP (starttls, direct):
#   SCRAM-SHA-1/256/512, DIGEST-MD5, PLAIN           password
#   SCRAM-SHA-1/256/512-PLUS with --tls-max 1.2      tls-unique channel binding
#                                                    (ejabberd 23.01 binds only
#                                                    tls-unique, correctly only
#                                                    on TLS 1.2)
#   EXTERNAL with --cert/--key, one PEM, --pkcs12    client certificate, no password
#   wrong password on each mechanism                 exit 5, not-authorized
#   EXTERNAL as bob with alice's certificate         exit 5
#   no --mechanisms, TLS 1.2 and TLS 1.3             what a user gets by default
# ejabberd's c2s listeners have tls_verify: every handshake asks for a client
# certificate, so each password case also shows that a client without one
# still logs in.
# Over BOSH and WebSocket (ws, wss, bosh-http, bosh-https) ejabberd offers
# exactly DIGEST-MD5, PLAIN, SCRAM-SHA-512/256/1 and X-OAUTH2 (which epode
# does not have): no -PLUS, even over wss on TLS 1.2, and no EXTERNAL (its
# HTTP listener asks for no client certificate). There:
#   SCRAM-SHA-1/256/512, DIGEST-MD5, PLAIN           password, and wrong password
#   no --mechanisms (TLS 1.2 and 1.3 on wss/https)   SCRAM-SHA-512; what is
#                                                    offered is checked
#   SCRAM-SHA-512-PLUS forced                        exit 5, nothing sent
#   EXTERNAL with a certificate and no password      exit 5, nothing sent (not
#                                                    offered)
# ws and bosh-http are unencrypted (--allow-plaintext): the logins there must
# print the warning, and PLAIN goes through as --allow-plaintext allows.
#
# The epode runs are independent, so they run EJ_PARALLEL (default 8) at a
# time (each lasts about --timeout 1 second, which also bounds connecting and
# logging in, so not all at once); results are then checked in a fixed order.
# Env: EPODE_BUILD, EPODE_SRC. Prints PASS/FAIL lines, then "N passed, N failed".
set -euo pipefail

# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

EJ_PARALLEL=${EJ_PARALLEL:-8}
start_ejabberd

# ------------------------------------------------------------------ cases
# launch NAME CODE REGEXES [ENV=VALUE...] -- EPODE-ARGS...
#   Starts one epode run in the background. It passes if it exits with CODE
#   and its stderr matches every regex in REGEXES (newline-separated); a
#   regex written !RE must match nothing.
C_NAME=()
C_CODE=()
C_RES=()
C_PID=()
C_ERR=()
C_OUT=()
launch() {
  local name=$1 code=$2 res=$3
  shift 3
  local i=${#C_NAME[@]}
  while [ "$(jobs -rp | wc -l)" -ge "$EJ_PARALLEL" ]; do sleep 0.02; done
  bg_epode "case$i" "$@"
  C_NAME+=("$name")
  C_CODE+=("$code")
  C_RES+=("$res")
  C_PID+=("$BG_PID")
  C_ERR+=("$BG_ERR")
  C_OUT+=("$BG_OUT")
}

check_all() {
  local i re ok
  for i in "${!C_NAME[@]}"; do
    wait_rc "${C_PID[$i]}"
    ERR=${C_ERR[$i]}
    OUT=${C_OUT[$i]}
    sane "${C_NAME[$i]}" || continue
    if [ "$RC" != "${C_CODE[$i]}" ]; then
      fail "${C_NAME[$i]}" "exit status $RC, expected ${C_CODE[$i]}" "$ERR" "$OUT"
      continue
    fi
    ok=1
    while IFS= read -r re; do
      [ -n "$re" ] || continue
      if [ "${re:0:1}" = "!" ]; then
        if grep -Eq -- "${re:1}" "$ERR"; then
          fail "${C_NAME[$i]}" "stderr matches /${re:1}/" "$ERR"
          ok=0
          break
        fi
      elif ! grep -Eq -- "$re" "$ERR"; then
        fail "${C_NAME[$i]}" "stderr does not match /$re/" "$ERR"
        ok=0
        break
      fi
    done <<<"${C_RES[$i]}"
    [ $ok = 0 ] || pass "${C_NAME[$i]}"
  done
}

re_mech() { printf "<auth [^>]*mechanism='%s'" "$1"; }
LOGGED_IN_ALICE='^epode: listening as alice@localhost/'
TLS12='TLS established: TLSv1\.2 '

# Two ways in: STARTTLS on the c2s port, direct TLS (XEP-0368) on the other.
declare -A TRANSPORT=(
  [starttls]="--tls starttls --server 127.0.0.1:$C2S_PORT"
  [direct]="--tls direct --server 127.0.0.1:$TLS_PORT"
)
COMMON=(-v --cafile "$CA_FILE" --timeout 1)

for t in starttls direct; do
  read -r -a tr <<<"${TRANSPORT[$t]}"

  for m in SCRAM-SHA-1 SCRAM-SHA-256 SCRAM-SHA-512 DIGEST-MD5 PLAIN; do
    launch "ejabberd $t $m" 0 "$(re_mech "$m")"$'\n'"$LOGGED_IN_ALICE" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
      --jid "$ALICE_JID" --mechanisms "$m"
    launch "ejabberd $t $m wrong password" 5 "$(re_mech "$m")"$'\n'"not-authorized" \
      "EPODE_PASSWORD=not-$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
      --jid "$ALICE_JID" --mechanisms "$m"
  done

  for m in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS SCRAM-SHA-512-PLUS; do
    launch "ejabberd $t $m tls-unique" 0 \
      "$TLS12"$'\n'"$(re_mech "$m")"$'\n'"$LOGGED_IN_ALICE" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --tls-max 1.2 \
      --jid "$ALICE_JID" --mechanisms "$m"
    launch "ejabberd $t $m tls-unique wrong password" 5 \
      "$TLS12"$'\n'"$(re_mech "$m")"$'\n'"not-authorized" \
      "EPODE_PASSWORD=not-$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --tls-max 1.2 \
      --jid "$ALICE_JID" --mechanisms "$m"
  done

  # EXTERNAL: no password anywhere (EPODE_PASSWORD unset), no --mechanisms:
  # a configured certificate must be enough for the default choice.
  launch "ejabberd $t EXTERNAL --cert --key" 0 "$(re_mech EXTERNAL)"$'\n'"$LOGGED_IN_ALICE" \
    -u EPODE_PASSWORD -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$ALICE_JID" --cert "$ALICE_CERT" --key "$ALICE_KEY"
  launch "ejabberd $t EXTERNAL --cert (certificate and key in one PEM)" 0 \
    "$(re_mech EXTERNAL)"$'\n'"$LOGGED_IN_ALICE" \
    -u EPODE_PASSWORD -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$ALICE_JID" --cert "$ALICE_PEM"
  launch "ejabberd $t EXTERNAL --pkcs12" 0 "$(re_mech EXTERNAL)"$'\n'"$LOGGED_IN_ALICE" \
    -u EPODE_PASSWORD "EPODE_PKCS12_PASSWORD=$P12_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$ALICE_JID" --pkcs12 "$ALICE_P12"
  # Configured as bob, holding alice's certificate: must not end up logged
  # in (as anyone).
  launch "ejabberd $t EXTERNAL bob's JID with alice's certificate" 5 "$(re_mech EXTERNAL)" \
    -u EPODE_PASSWORD -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$BOB_JID" --cert "$ALICE_CERT" --key "$ALICE_KEY"

  # What a user gets with no --mechanisms: the strongest offered mechanism
  # is SCRAM-SHA-512-PLUS. On TLS 1.2 it binds tls-unique.
  launch "ejabberd $t default mechanisms TLS 1.2" 0 \
    "$TLS12"$'\n'"$(re_mech SCRAM-SHA-512-PLUS)"$'\n'"$LOGGED_IN_ALICE" \
    "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --tls-max 1.2 \
    --jid "$ALICE_JID"
  # On TLS 1.3 ejabberd 23.01 still offers the -PLUS mechanisms but accepts
  # none of the standard channel bindings (RFC 9266 tls-exporter,
  # tls-server-end-point) and advertises no XEP-0440 list; a default login
  # must still succeed.
  launch "ejabberd $t default mechanisms TLS 1.3" 0 \
    "TLS established: TLSv1\.3 "$'\n'"$LOGGED_IN_ALICE" \
    "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$ALICE_JID"
done

# ------------------------------------------------------------------ BOSH, WebSocket
TRANSPORT[ws]="--url $WS_URL --allow-plaintext"
TRANSPORT[wss]="--url $WSS_URL"
TRANSPORT[bosh-http]="--url $BOSH_URL --allow-plaintext"
TRANSPORT[bosh-https]="--url $BOSH_HTTPS_URL"
PLAINTEXT_WARNING='^epode: WARNING: the stream is not encrypted'
# What ejabberd offers over BOSH and WebSocket: these six, in any order, and
# nothing else.
OFFERED_HTTP="<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>(<mechanism>(DIGEST-MD5|PLAIN\
|SCRAM-SHA-512|SCRAM-SHA-256|SCRAM-SHA-1|X-OAUTH2)</mechanism>){6}</mechanisms>"
NOTHING_SENT='!^-> <auth '

for t in ws wss bosh-http bosh-https; do
  read -r -a tr <<<"${TRANSPORT[$t]}"
  # Over ws/bosh-http every login warns that the stream is unencrypted;
  # over wss the TLS version is in the log (over BOSH libcurl does the TLS).
  case $t in
  ws | bosh-http) sec=$PLAINTEXT_WARNING ;;
  wss) sec='TLS established: TLSv1\.3 ' ;;
  *) sec='' ;;
  esac

  for m in SCRAM-SHA-1 SCRAM-SHA-256 SCRAM-SHA-512 DIGEST-MD5 PLAIN; do
    launch "ejabberd $t $m" 0 "$(re_mech "$m")"$'\n'"$LOGGED_IN_ALICE"$'\n'"$sec" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
      --jid "$ALICE_JID" --mechanisms "$m"
    launch "ejabberd $t $m wrong password" 5 "$(re_mech "$m")"$'\n'"not-authorized" \
      "EPODE_PASSWORD=not-$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" \
      --jid "$ALICE_JID" --mechanisms "$m"
  done

  case $t in
  ws | bosh-http)
    launch "ejabberd $t default without TLS is SCRAM-SHA-512 (offered: no -PLUS, no EXTERNAL)" 0 \
      "$OFFERED_HTTP"$'\n'"$(re_mech SCRAM-SHA-512)"$'\n'"$LOGGED_IN_ALICE"$'\n'"$sec" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --jid "$ALICE_JID"
    ;;
  *)
    why="no -PLUS offered"
    [ $t = wss ] || why="no -PLUS offered, no channel binding over BOSH"
    tls12=""
    [ $t = wss ] && tls12=$TLS12
    launch "ejabberd $t default on TLS 1.2 is SCRAM-SHA-512 ($why)" 0 \
      "$OFFERED_HTTP"$'\n'"$(re_mech SCRAM-SHA-512)"$'\n'"$LOGGED_IN_ALICE"$'\n'"$tls12" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --tls-max 1.2 \
      --jid "$ALICE_JID"
    launch "ejabberd $t default on TLS 1.3 is SCRAM-SHA-512 ($why)" 0 \
      "$OFFERED_HTTP"$'\n'"$(re_mech SCRAM-SHA-512)"$'\n'"$LOGGED_IN_ALICE"$'\n'"$sec" \
      "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --jid "$ALICE_JID"
    ;;
  esac
  # A certificate and no password: nothing to log in with.
  launch "ejabberd $t EXTERNAL not offered: exit 5, nothing sent" 5 \
    "no acceptable SASL mechanism.*the server offers \[[^]]*\]"$'\n'"$NOTHING_SENT" \
    -u EPODE_PASSWORD -- listen "${COMMON[@]}" "${tr[@]}" \
    --jid "$ALICE_JID" --cert "$ALICE_CERT" --key "$ALICE_KEY"
  launch "ejabberd $t SCRAM-SHA-512-PLUS forced: not offered" 5 \
    "no acceptable SASL mechanism.*not in the allow-list"$'\n'"$NOTHING_SENT" \
    "EPODE_PASSWORD=$ALICE_PASSWORD" -- listen "${COMMON[@]}" "${tr[@]}" --tls-max 1.2 \
    --jid "$ALICE_JID" --mechanisms SCRAM-SHA-512-PLUS
done

check_all
finish
