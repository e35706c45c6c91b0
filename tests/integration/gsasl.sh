#!/usr/bin/env bash
# epode's SASL mechanisms against GNU SASL's `gsasl --server`, an
# independent implementation, through tests/tools/sasl_peer.c (which runs
# gsasl and speaks its line protocol; see the top of that file).
#
# Every positive case must end with BOTH sides satisfied: gsasl exits 0
# (it authenticated the client) and epode's mechanism verified the server
# (SCRAM server signature, DIGEST-MD5 rspauth). Every negative case must
# fail cleanly: gsasl rejects, epode reports that the server never proved
# itself, and sasl_peer exits 1 (2 would mean the sides disagree, 3 a setup
# problem or a hang; both are failures here).
#
# Not covered because gsasl cannot serve them: SCRAM-SHA-512(-PLUS),
# ANONYMOUS, EXTERNAL, OAUTHBEARER. Also left out, because gsasl 2.2.0
# deviates from RFC 2831 there (epode follows the RFC, as Cyrus SASL does):
# DIGEST-MD5 usernames with characters in U+0080..U+00FF (gsasl hashes the
# username as UTF-8 instead of converting it to ISO 8859-1) and usernames
# containing '"' or '\' (gsasl's parser does not undo quoted-pair escapes).
set -euo pipefail

: "${EPODE_BUILD:?EPODE_BUILD must point at the build directory}"
: "${EPODE_SRC:?EPODE_SRC must point at the source directory}"
PEER=$EPODE_BUILD/sasl_peer
# Longest a single exchange may take before it counts as a hang.
RUN_LIMIT=${RUN_LIMIT:-30}

PASSES=0
FAILS=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/epode-gsasl.XXXXXX")
cleanup() {
  local rc=$?
  if [ -n "${KEEP_WORK:-}" ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() {
  echo "PASS $1"
  PASSES=$((PASSES + 1))
}
fail() {
  echo "FAIL $1${2:+: $2}"
  FAILS=$((FAILS + 1))
}

# A missing peer is a failure, never a skip.
if ! command -v gsasl >/dev/null 2>&1; then
  echo "FAIL setup: gsasl is not installed (scripts/deps.sh installs it: apt-get install gsasl)"
  exit 1
fi
if ! command -v stdbuf >/dev/null 2>&1; then
  echo "FAIL setup: stdbuf (coreutils) is not installed; gsasl block-buffers without it"
  exit 1
fi
if [ ! -x "$PEER" ]; then
  echo "FAIL setup: $PEER does not exist (build first: cmake --build $EPODE_BUILD)"
  exit 1
fi
echo "using $(gsasl --version | head -n 1)"

# Single-quotes a word for /bin/sh (sasl_peer runs the server command
# with sh -c).
sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# gsasl_cmd MECH PASSWORD: the server command. -PLUS needs --hostname left
# out: with it gsasl never asks for channel-binding data.
gsasl_cmd() {
  local host="--hostname localhost"
  case $1 in *-PLUS) host="" ;; esac
  echo "stdbuf -oL gsasl --server --quiet -m $(sq "$1") -p $(sq "$2") --service xmpp $host" \
    "--realm localhost --quality-of-protection qop-auth"
}

N=0
# run NAME EXPECT-RC EXPECT-REGEX SERVER-PASSWORD MECH SASL_PEER-ARGS...:
# runs one exchange and checks sasl_peer's exit status and result line.
run() {
  local name=$1 want_rc=$2 want_re=$3 spw=$4 mech=$5
  shift 5
  N=$((N + 1))
  local out=$WORK/$N.out err=$WORK/$N.err rc=0
  timeout -k 5 $((RUN_LIMIT + 10)) "$PEER" "$mech" --timeout "$RUN_LIMIT" \
    --server-cmd "$(gsasl_cmd "$mech" "$spw")" "$@" >"$out" 2>"$err" || rc=$?
  local result
  result=$(grep -m 1 '^sasl_peer: ' "$out" || true)
  if [ "$rc" = "$want_rc" ] && [[ $result =~ $want_re ]]; then
    pass "$name"
  else
    fail "$name" "sasl_peer exited $rc (want $want_rc)"
    echo "    result: ${result:-<none>}"
    echo "    want:   /$want_re/"
    sed 's/^/    | /' "$err"
  fi
}

OK='server=accepted client=ok'
# gsasl ends the exchange without its final message: epode never saw the
# server prove itself and must not claim success.
REJ='server=rejected client=unverified'

PW=pencil
# Non-ASCII password, and one that SASLprep (RFC 4013) changes: the client
# is given a soft hyphen (mapped to nothing) and a no-break space (mapped
# to U+0020); the server gets the prepared form. The exchange succeeds only
# if epode applies SASLprep before PBKDF2.
PW_UTF8='pässwörd€'
PW_RAW=$(printf 'p\u00e4\u00adss\u00a0w\u00f6rd\u20ac')
PW_PREPPED=$(printf 'p\u00e4ss w\u00f6rd\u20ac')
# A username SCRAM must escape (=3D, =2C) and DIGEST-MD5 must quote.
USER_ESC='us=er,1'

# Channel-binding data (tls-unique is 12 bytes in TLS 1.2, tls-exporter
# 32 bytes per RFC 9266), and the same with one byte changed.
CB_UNIQUE=000102030405060708090a0b
CB_UNIQUE_BAD=000102030405060708090a0c
CB_EXPORTER=e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff
CB_EXPORTER_BAD=f0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff

cb_data() { if [ "$1" = tls-unique ]; then echo $CB_UNIQUE; else echo $CB_EXPORTER; fi; }
cb_bad() { if [ "$1" = tls-unique ]; then echo $CB_UNIQUE_BAD; else echo $CB_EXPORTER_BAD; fi; }

# ---------------------------------------------------------------- succeed
run "gsasl PLAIN" 0 "$OK" $PW PLAIN --user user --password $PW
run "gsasl PLAIN non-ASCII password" 0 "$OK" "$PW_UTF8" PLAIN --user user --password "$PW_UTF8"
run "gsasl DIGEST-MD5" 0 "$OK.*rspauth" $PW DIGEST-MD5 --user user --password $PW
run "gsasl DIGEST-MD5 rspauth as challenge" 0 "$OK.*rspauth" $PW DIGEST-MD5 --user user \
  --password $PW --final-as-challenge
run "gsasl DIGEST-MD5 user $USER_ESC" 0 "$OK" $PW DIGEST-MD5 --user "$USER_ESC" --password $PW
run "gsasl DIGEST-MD5 non-ASCII password" 0 "$OK" "$PW_UTF8" DIGEST-MD5 --user user \
  --password "$PW_UTF8"
for mech in SCRAM-SHA-1 SCRAM-SHA-256; do
  run "gsasl $mech" 0 "$OK.*server signature" $PW $mech --user user --password $PW
  run "gsasl $mech user $USER_ESC" 0 "$OK" $PW $mech --user "$USER_ESC" --password $PW
  run "gsasl $mech v= as challenge" 0 "$OK" $PW $mech --user user --password $PW \
    --final-as-challenge
done
run "gsasl SCRAM-SHA-256 non-ASCII password (SASLprep)" 0 "$OK" "$PW_PREPPED" SCRAM-SHA-256 \
  --user "$USER_ESC" --password "$PW_RAW"
run "gsasl SCRAM-SHA-1 non-ASCII password (SASLprep)" 0 "$OK" "$PW_PREPPED" SCRAM-SHA-1 \
  --user user --password "$PW_RAW"
# An authzid SCRAM must escape in a= (RFC 5802 5.1).
AUTHZ='a=b,c@localhost'
for mech in PLAIN DIGEST-MD5 SCRAM-SHA-256; do
  run "gsasl $mech authzid $AUTHZ" 0 "$OK" $PW $mech --user user --password $PW --authzid "$AUTHZ"
done
for mech in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
  for cb in tls-unique tls-exporter; do
    run "gsasl $mech $cb" 0 "$OK.*server signature" $PW $mech --user user --password $PW \
      --cb-type $cb --cb-data "$(cb_data $cb)"
    run "gsasl $mech $cb user $USER_ESC" 0 "$OK" $PW $mech --user "$USER_ESC" --password $PW \
      --cb-type $cb --cb-data "$(cb_data $cb)"
  done
done

# ---------------------------------------------------------------- must fail
run "gsasl PLAIN wrong password" 1 "$REJ" $PW PLAIN --user user --password $PW --wrong-password
run "gsasl DIGEST-MD5 wrong password" 1 "$REJ" $PW DIGEST-MD5 --user user --password $PW \
  --wrong-password
for mech in SCRAM-SHA-1 SCRAM-SHA-256; do
  run "gsasl $mech wrong password" 1 "$REJ" $PW $mech --user user --password $PW --wrong-password
done
for mech in SCRAM-SHA-1-PLUS SCRAM-SHA-256-PLUS; do
  for cb in tls-unique tls-exporter; do
    run "gsasl $mech $cb wrong password" 1 "$REJ" $PW $mech --user user --password $PW \
      --wrong-password --cb-type $cb --cb-data "$(cb_data $cb)"
    run "gsasl $mech $cb channel-binding mismatch" 1 "$REJ" $PW $mech --user user --password $PW \
      --cb-type $cb --cb-data "$(cb_data $cb)" --server-cb-data "$(cb_bad $cb)"
  done
done

# ---------------------------------------------------------------- the driver itself
# A fake DIGEST-MD5 server that accepts anything and answers with a forged
# rspauth: sasl_peer must not report success (exit 2: the sides disagree,
# epode refused the server's proof).
N=$((N + 1))
chal=$(printf 'realm="localhost",nonce="OA6MG9tEQGm2hh",qop="auth",charset=utf-8,algorithm=md5-sess' |
  base64 -w 0)
forged=$(printf 'rspauth=00000000000000000000000000000000' | base64 -w 0)
fake="printf 'DIGEST-MD5\\n$chal\\n'; read -r l; printf '$forged\\n'; read -r l; exit 0"
rc=0
timeout -k 5 $((RUN_LIMIT + 10)) "$PEER" DIGEST-MD5 --user user --password $PW \
  --timeout "$RUN_LIMIT" --server-cmd "$fake" >"$WORK/$N.out" 2>"$WORK/$N.err" || rc=$?
if [ $rc = 2 ] && grep -q 'server=accepted client=aborted.*rspauth does not match' "$WORK/$N.out"
then
  pass "sasl_peer refuses a forged DIGEST-MD5 rspauth"
else
  fail "sasl_peer refuses a forged DIGEST-MD5 rspauth" "exit $rc"
  sed 's/^/    | /' "$WORK/$N.out" "$WORK/$N.err"
fi

echo "$PASSES passed, $FAILS failed"
[ "$FAILS" = 0 ]
