#!/usr/bin/env bash
# docs/client-certificates.md works: its shell blocks, taken from the page
# (each is the fenced block right after a "<!-- recipe: NAME -->" line) and
# run exactly as written, make a CA, a client certificate for a JID, check
# it, bundle it, and log in with SASL EXTERNAL and no password, against the
# harness's Prosody (whose ccert host runs the page's Prosody settings).
#
# The page's settings block ("<!-- recipe-settings -->") is not run: each
# pass sets those variables itself (JID on the ccert host, CONNECT pointing
# at the harness's port and CA):
#   1. the page's own CA (Prosody is started trusting it: PROSODY_CLIENT_CA);
#   2. "use your own CA": the harness's test CA;
#   3. a CA Prosody does not trust: the same login must be refused.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

DOC=$SRC/docs/client-certificates.md
# The blocks this test runs, and the Lua block it compares with the server.
KNOWN="ca client check bundle prosody login"
# The variables the page's settings block must set (and nothing else).
SETTINGS="CA_CERT CA_KEY CONNECT EPODE_PKCS12_PASSWORD JID"
# Fixed by tests/servers/prosody.sh; checked against its env once it runs.
CCERT=ccert.localhost
P12PW=recipe-p12-Hn4

# extract NAME: the fenced block right after the marker line, without the
# fences; fails if there is none (or it is empty).
extract() {
  awk -v m="<!-- recipe: $1 -->" '
    state == 0 && $0 == m { state = 1; next }
    state == 1 { if ($0 ~ /^```/) { state = 2; next } else exit 1 }
    state == 2 { if ($0 ~ /^```/) { done = 1; exit } print; n++ }
    END { if (!done || !n) exit 1 }' "$DOC"
}

# ------------------------------------------------------------------ the page
if [ ! -f "$DOC" ]; then
  echo "FAIL setup: $DOC does not exist"
  exit 1
fi
markers=$(sed -n 's/^<!-- recipe: \([a-z0-9-]*\) -->$/\1/p' "$DOC" | xargs)
if [ "$markers" = "$KNOWN" ]; then
  pass "recipe blocks: $markers"
else
  # A block this test does not know would go untested.
  fail "recipe blocks" "the page marks '$markers', this test runs '$KNOWN'"
fi
for b in $KNOWN; do
  if ! extract "$b" >"$WORK/block-$b"; then
    echo "FAIL setup: no fenced block after '<!-- recipe: $b -->' in $DOC"
    exit 1
  fi
done
settings=$(awk '$0 == "<!-- recipe-settings -->" { s = 1; next }
  s == 1 && /^```/ { s = 2; next } s == 2 && /^```/ { exit } s == 2 { print }' "$DOC" |
  grep -Eo '(^|[[:space:]])(export )?[A-Z_][A-Z0-9_]*=' | sed 's/export //; s/[ =]//g' | sort |
  xargs)
if [ "$settings" = "$SETTINGS" ]; then
  pass "recipe settings set $settings"
else
  fail "recipe settings" "the settings block sets '$settings', this test sets '$SETTINGS'"
fi

# run_blocks NAME DIR VARS-FILE BLOCK...: runs the blocks, in order, in DIR
# with bash -e after the variables, with no password in the environment and
# the built epode first on PATH; sets RC, OUT (stdout + stderr).
run_blocks() {
  local name=$1 dir=$2 vars=$3
  shift 3
  local script=$WORK/$name.sh b
  {
    echo "set -euo pipefail"
    cat "$vars"
    for b in "$@"; do
      echo "# --- block $b"
      cat "$WORK/block-$b"
    done
  } >"$script"
  OUT=$WORK/$name.out
  set +e
  (cd "$dir" && env -u EPODE_PASSWORD -u EPODE_JID -u EPODE_OAUTH_TOKEN PATH="$EPODE_BUILD:$PATH" \
    timeout -k 2 60 bash "$script" </dev/null >"$OUT" 2>&1)
  RC=$?
  set -e
}

# vars FILE JID CA_CERT CA_KEY: the settings for one pass (CONNECT once the
# server runs).
vars() {
  {
    printf 'JID=%q\nCA_CERT=%q\nCA_KEY=%q\n' "$2" "$3" "$4"
    printf 'export EPODE_PKCS12_PASSWORD=%q\n' "$P12PW"
    if [ -n "${C2S_PORT:-}" ]; then
      printf 'CONNECT=(--server %q --cafile %q)\n' "127.0.0.1:$C2S_PORT" "$CA_FILE"
    else
      echo 'CONNECT=()'
    fi
  } >"$1"
}

# made NAME DIR JID: the certificate blocks worked and made what they say.
made() {
  local name=$1 dir=$2 jid=$3
  if [ "$RC" != 0 ]; then
    fail "$name" "the blocks failed (exit status $RC)" "$OUT"
  elif ! grep -qx " *othername: XmppAddr::$jid" "$OUT" || ! grep -qx "client.crt: OK" "$OUT"; then
    fail "$name" "the check block did not show the xmppAddr and a verified chain" "$OUT"
  elif ! openssl x509 -in "$dir/client.crt" -noout -ext extendedKeyUsage 2>/dev/null |
    grep -q "TLS Web Client Authentication"; then
    fail "$name" "client.crt is not for TLS client authentication" "$OUT"
  elif ! openssl pkcs12 -in "$dir/client.p12" -passin "pass:$P12PW" -nokeys 2>/dev/null |
    openssl x509 -noout -subject 2>/dev/null | grep -qF "$jid"; then
    fail "$name" "client.p12 does not open with the passphrase or lacks the certificate" "$OUT"
  elif ! cmp -s <(cat "$dir/client.crt" "$dir/client.key") "$dir/client.pem"; then
    fail "$name" "client.pem is not the certificate followed by the key" "$OUT"
  else
    pass "$name"
  fi
}

# logged_in NAME JID: the login block ran all its logins as JID.
logged_in() {
  local name=$1 jid=$2 want n
  want=$(grep -c '^epode listen' "$WORK/block-login")
  n=$(grep -c "^epode: listening as $jid/" "$OUT" || true)
  if [ "$RC" != 0 ]; then
    fail "$name" "the login block failed (exit status $RC)" "$OUT"
  elif [ "$n" != "$want" ] || [ "$want" = 0 ]; then
    fail "$name" "$n of $want logins got in as $jid" "$OUT"
  else
    pass "$name"
  fi
}

# ------------------------------------------------------------------ 1. own CA
A=$WORK/own-ca
mkdir -p "$A"
JID_A=carol@$CCERT
vars "$WORK/vars-a" "$JID_A" "$A/ca.crt" "$A/ca.key"
run_blocks own-ca-make "$A" "$WORK/vars-a" ca client check bundle
made "recipe: CA, certificate for $JID_A, check, PKCS#12 and PEM" "$A" "$JID_A"
if [ ! -s "$A/ca.crt" ]; then
  echo "FAIL setup: the recipe made no CA; cannot go on"
  exit 1
fi

export PROSODY_CLIENT_CA=$A/ca.crt
start_prosody alice:alice-pw-Aq7
unset PROSODY_CLIENT_CA
if [ "$CCERT_DOMAIN" != "$CCERT" ]; then
  echo "FAIL setup: the harness's certificate host is $CCERT_DOMAIN, this test assumes $CCERT"
  exit 1
fi

# The page's Prosody settings are the ones the server runs with.
norm() { sed 's/--.*//; s/[[:space:]]\+/ /g; s/^ //; s/ $//'; }
KEYS='^(verify|verifyext|authentication|certificate_match) ='
missing=""
while IFS= read -r line; do
  grep -qxF -- "$line" <(norm <"$PROSODY_CONFIG") || missing="$missing [$line]"
done < <(norm <"$WORK/block-prosody" | grep -E "$KEYS")
n=$(norm <"$WORK/block-prosody" | grep -cE "$KEYS" || true)
if [ "$n" != 4 ]; then
  fail "recipe Prosody settings" "expected verify, verifyext, authentication, certificate_match" \
    "$WORK/block-prosody"
elif [ -n "$missing" ]; then
  fail "recipe Prosody settings" "not in the test server's configuration:$missing" \
    "$PROSODY_CONFIG"
else
  pass "recipe Prosody settings are the test server's"
fi

vars "$WORK/vars-a" "$JID_A" "$A/ca.crt" "$A/ca.key"
run_blocks own-ca-login "$A" "$WORK/vars-a" login
logged_in "recipe: log in as $JID_A (own CA) with --cert/--key, --pkcs12, PEM, no password" \
  "$JID_A"

# What the recipe's login did, seen on the wire: EXTERNAL, nothing else.
run_epode own-ca-v -u EPODE_PASSWORD -- listen -v --jid "$JID_A" --cert "$A/client.crt" \
  --key "$A/client.key" --server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE" --timeout 1
mechs=$(grep -o "^-> <auth [^>]*>" "$ERR" | sed -n "s/.*mechanism='\([^']*\)'.*/\1/p" | xargs ||
  true)
if [ "$RC" = 0 ] && [ "$mechs" = EXTERNAL ]; then
  pass "recipe certificate logs in with EXTERNAL"
else
  fail "recipe certificate logs in with EXTERNAL" "exit status $RC, <auth> mechanisms '$mechs'" \
    "$ERR"
fi

# ------------------------------------------------------------------ 2. your own CA
B=$WORK/harness-ca
mkdir -p "$B"
JID_B=dave@$CCERT
vars "$WORK/vars-b" "$JID_B" "$CA_FILE" "$CA_KEY"
run_blocks harness-ca-make "$B" "$WORK/vars-b" client check bundle
made "recipe with an existing CA: certificate for $JID_B, check, PKCS#12 and PEM" "$B" "$JID_B"
run_blocks harness-ca-login "$B" "$WORK/vars-b" login
logged_in "recipe: log in as $JID_B (existing CA), no password" "$JID_B"

# ------------------------------------------------------------------ 3. untrusted CA
# The control: the same steps with a CA the server does not trust fail, so
# it is the CA that lets the recipe's certificates in.
C=$WORK/untrusted
mkdir -p "$C"
vars "$WORK/vars-c" "erin@$CCERT" "$C/ca.crt" "$C/ca.key"
run_blocks untrusted-make "$C" "$WORK/vars-c" ca client check bundle
made "recipe with an untrusted CA: certificate for erin@$CCERT" "$C" "erin@$CCERT"
run_blocks untrusted-login "$C" "$WORK/vars-c" login
if [ "$RC" = 5 ] && ! grep -q "listening as" "$OUT" &&
  grep -q "authentication failed (account-disabled) \[mechanism EXTERNAL\]" "$OUT"; then
  pass "recipe certificate from an untrusted CA is refused (account-disabled)"
else
  fail "recipe certificate from an untrusted CA is refused (account-disabled)" \
    "exit status $RC" "$OUT"
fi

finish
