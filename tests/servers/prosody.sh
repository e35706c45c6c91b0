#!/usr/bin/env bash
# Throwaway Prosody for tests and the demo: loopback only, free ports, its own
# CA and certificates, everything inside one directory.
#
#   prosody.sh start DIR [NAME:PASSWORD ...]
#       Creates DIR (if needed) and in it: certs/ (a test CA, a server
#       certificate for localhost and the extra virtual hosts below signed by
#       it, a second "untrusted" CA with a localhost certificate of its own, a
#       localhost-named certificate for the wrong host signed by the trusted
#       CA, and client certificates, see below), prosody.cfg.lua, data/,
#       prosody.log. Registers the accounts (default: alice and bob with fixed
#       test passwords) on DOMAIN, starts a small HTTPS OAuth token validator
#       (oauth_validator.py, log in DIR/oauth.log) and `prosody -F`, waits
#       until both c2s ports answer with stream features, and writes DIR/env
#       (shell-sourceable):
#         PROSODY_PID PROSODY_DIR PROSODY_LOG DOMAIN C2S_PORT TLS_PORT
#         HTTP_PORT HTTPS_PORT BOSH_URL BOSH_HTTPS_URL WS_URL WSS_URL
#         CA_FILE UNTRUSTED_CA_FILE UNTRUSTED_CERT UNTRUSTED_KEY
#         WRONGHOST_CERT WRONGHOST_KEY SERVER_CERT SERVER_KEY
#         ACCOUNTS="alice bob …", and per account NAME_JID / NAME_PASSWORD
#         (upper-case name, e.g. ALICE_JID=alice@localhost);
#       for SASL beyond passwords (all on the same two ports):
#         ANON_DOMAIN=anon.localhost     authentication = "anonymous"
#         CCERT_DOMAIN=ccert.localhost   authentication = "ccert" (EXTERNAL,
#                                        prosody-modules mod_auth_ccert)
#         CLIENT_JID=alice@ccert.localhost, and its certificate (signed by
#           CA_FILE, subjectAltName id-on-xmppAddr CLIENT_JID, clientAuth):
#           CLIENT_CERT CLIENT_KEY (PEM), CLIENT_PEM (both in one file),
#           CLIENT_P12 (PKCS#12, with CA) + CLIENT_P12_PASSWORD
#         ROGUE_CERT ROGUE_KEY   self-signed, same xmppAddr: Prosody must
#                                refuse it (account-disabled)
#         OTHERDOMAIN_CERT OTHERDOMAIN_KEY  signed by CA_FILE, xmppAddr
#                                alice@localhost: not for CCERT_DOMAIN
#         OAUTH_DOMAIN=oauth.localhost   authentication = "oauthbearer"
#         OAUTH_JID=alice@oauth.localhost, OAUTH_TOKEN (the one token the
#           validator accepts), OAUTH_PORT OAUTH_PID OAUTH_LOG (validator)
#       Prosody requests (never requires) a client certificate, verified
#       against CA_FILE and, if the environment has PROSODY_CLIENT_CA=FILE
#       (PEM, one or more CAs), those CAs too (tests/integration/cert_recipe.sh
#       makes its own CA). CA_KEY (the test CA's key) is in DIR/env as well.
#       Exits non-zero, with nothing left running, if anything fails.
#       With PROSODY_WATCH_PID=PID in the environment, a small watchdog
#       stops the server once that process is gone (a test killed with
#       SIGKILL by a timeout cannot run its trap).
#   prosody.sh certs DIR
#       Only creates DIR/certs (same files as start) and writes DIR/certs.env
#       (CA_FILE SERVER_CERT SERVER_KEY UNTRUSTED_* WRONGHOST_* CLIENT_*
#       ROGUE_* OTHERDOMAIN_*), for tests that need the certificates but no
#       server.
#   prosody.sh stop DIR [--rm]
#       Stops the server and the OAuth validator started in DIR (by their
#       PIDs, checked to still be those processes), waits for them to exit;
#       --rm then deletes DIR.
#
# Works as root (run_as_root) and as any other user. Needs: prosody,
# prosody-modules, openssl, ss (iproute2), /usr/bin/python3 (scripts/deps.sh
# installs them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
DOMAIN=localhost
ANON_DOMAIN=anon.$DOMAIN
CCERT_DOMAIN=ccert.$DOMAIN
OAUTH_DOMAIN=oauth.$DOMAIN
CLIENT_JID=alice@$CCERT_DOMAIN
OAUTH_JID=alice@$OAUTH_DOMAIN
# Fixed test secrets (nothing here protects anything real).
CLIENT_P12_PASSWORD=p12-pw-Kd8
OAUTH_CLIENT_ID=epode-test
OAUTH_CLIENT_SECRET=oauth-client-secret-Vb2
OAUTH_TOKEN=good-token-Rt5Lm9
# The xmppAddr otherName (RFC 6120 13.7.1.4) as OpenSSL writes it.
XMPPADDR_OID=1.3.6.1.5.5.7.8.5
READY_TIMEOUT=${PROSODY_READY_TIMEOUT:-15}

die() {
  echo "prosody.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2 (run scripts/deps.sh)"
}

# ------------------------------------------------------------------ certificates
# P-256 keys: generating them takes milliseconds, RSA would take most of the
# start-up budget.
gen_key_csr() { # KEY CSR CN
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1" -out "$2" -subj "/CN=$3" 2>/dev/null
}

gen_ca() { # NAME CN
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.crt" -days 30 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

gen_leaf() { # CA OUT SAN CN
  local ca=$1 out=$2 san=$3 cn=$4
  gen_key_csr "$out.key" "$out.csr" "$cn"
  printf '%s\n' "basicConstraints=CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" "subjectAltName=$san" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -days 30 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext"
}

# A client certificate for SASL EXTERNAL (XEP-0178): the JID as
# id-on-xmppAddr in subjectAltName, extendedKeyUsage clientAuth. With CA
# "-" it is self-signed.
gen_client() { # CA OUT JID
  local ca=$1 out=$2 jid=$3
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=clientAuth" "subjectAltName=otherName:$XMPPADDR_OID;UTF8:$jid" \
    >"$out.ext"
  if [ "$ca" = - ]; then
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$out.key" -out "$out.crt" -days 30 -subj "/CN=$jid" \
      -addext "subjectAltName=otherName:$XMPPADDR_OID;UTF8:$jid" \
      -addext "extendedKeyUsage=clientAuth" 2>/dev/null
  else
    gen_key_csr "$out.key" "$out.csr" "$jid"
    openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
      -days 30 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  fi
  rm -f "$out.csr" "$out.ext"
}

make_certs() { # DIR
  local c=$1/certs
  mkdir -p "$c/server" "$c/other" "$c/client"
  gen_ca "$c/ca" "epode test CA"
  # Every virtual host by name: OpenSSL matches no wildcard directly under a
  # one-label name like "*.localhost".
  gen_leaf "$c/ca" "$c/server/localhost" "DNS:localhost,DNS:$ANON_DOMAIN,DNS:$CCERT_DOMAIN,\
DNS:$OAUTH_DOMAIN,IP:127.0.0.1" localhost
  gen_client "$c/ca" "$c/client/alice" "$CLIENT_JID"
  cat "$c/client/alice.crt" "$c/client/alice.key" >"$c/client/alice.pem"
  P12PW=$CLIENT_P12_PASSWORD openssl pkcs12 -export -in "$c/client/alice.crt" \
    -inkey "$c/client/alice.key" -certfile "$c/ca.crt" -name "$CLIENT_JID" \
    -passout env:P12PW -out "$c/client/alice.p12"
  gen_client - "$c/client/rogue" "$CLIENT_JID"
  gen_client "$c/ca" "$c/client/otherdomain" "alice@$DOMAIN"
  # Trusted CA, wrong name: for hostname-verification tests (fake server).
  gen_leaf "$c/ca" "$c/other/wronghost" "DNS:wrong.example" wrong.example
  # A CA nobody trusts, and a localhost certificate it signed.
  gen_ca "$c/untrusted-ca" "epode untrusted CA"
  gen_leaf "$c/untrusted-ca" "$c/other/untrusted" "DNS:localhost,IP:127.0.0.1" localhost
}

cert_env() { # DIR
  local d=$1
  printf 'CA_FILE=%q\nCA_KEY=%q\n' "$d/certs/ca.crt" "$d/certs/ca.key"
  printf 'SERVER_CERT=%q\nSERVER_KEY=%q\n' "$d/certs/server/localhost.crt" \
    "$d/certs/server/localhost.key"
  printf 'UNTRUSTED_CA_FILE=%q\n' "$d/certs/untrusted-ca.crt"
  printf 'UNTRUSTED_CERT=%q\nUNTRUSTED_KEY=%q\n' "$d/certs/other/untrusted.crt" \
    "$d/certs/other/untrusted.key"
  printf 'WRONGHOST_CERT=%q\nWRONGHOST_KEY=%q\n' "$d/certs/other/wronghost.crt" \
    "$d/certs/other/wronghost.key"
  local k=$d/certs/client
  printf 'CLIENT_JID=%q\n' "$CLIENT_JID"
  printf 'CLIENT_CERT=%q\nCLIENT_KEY=%q\nCLIENT_PEM=%q\n' "$k/alice.crt" "$k/alice.key" \
    "$k/alice.pem"
  printf 'CLIENT_P12=%q\nCLIENT_P12_PASSWORD=%q\n' "$k/alice.p12" "$CLIENT_P12_PASSWORD"
  printf 'ROGUE_CERT=%q\nROGUE_KEY=%q\n' "$k/rogue.crt" "$k/rogue.key"
  printf 'OTHERDOMAIN_CERT=%q\nOTHERDOMAIN_KEY=%q\n' "$k/otherdomain.crt" "$k/otherdomain.key"
}

cmd_certs() {
  local dir=$1
  need openssl "install the Debian package openssl"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  make_certs "$dir"
  cert_env "$dir" >"$dir/certs.env"
}

# ------------------------------------------------------------------ ports
# Two at once from the kernel (bound together, so they differ), then
# double-checked with ss: Prosody does not exit when a port is taken, and a
# readiness probe would then talk to whoever holds it.
free_ports() { # N
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

port_busy() {
  ss -Htln "sport = :$1" 2>/dev/null | grep -q .
}

# ------------------------------------------------------------------ config
write_config() { # DIR C2S TLS OAUTH_PORT HTTP HTTPS
  local d=$1
  cat >"$d/prosody.cfg.lua" <<EOF
-- Generated by tests/servers/prosody.sh: a throwaway test server.
run_as_root = true            -- CI runs as root; harmless otherwise
pidfile = "$d/prosody.pid"
data_path = "$d/data"
log = { { levels = { min = "info" }, to = "file", filename = "$d/prosody.log" } }

interfaces = { "127.0.0.1" }
c2s_ports = { $2 }
c2s_direct_tls_ports = { $3 } -- XEP-0368
s2s_ports = {}
local_interfaces = { "127.0.0.1" }
admin_interfaces = {}
-- BOSH (/http-bind) and WebSocket (/xmpp-websocket) over http and https.
http_ports = { $5 }
https_ports = { $6 }
http_interfaces = { "127.0.0.1" }
https_interfaces = { "127.0.0.1" }
-- Let http:// and ws:// through despite c2s_require_encryption, so the
-- plaintext transports can be tested at all; the client refuses them
-- unless told otherwise (--allow-plaintext), which is what tests check.
consider_bosh_secure = true
consider_websocket_secure = true
cross_domain_bosh = true
cross_domain_websocket = true

-- Only what a client test needs. No "limits" (it throttles c2s to a few
-- kB/s), no registration, no posix (we run in the foreground with -F).
modules_enabled = { "roster"; "saslauth"; "tls"; "disco"; "ping"; "presence"; "offline";
                    "bosh"; "websocket"; "smacks" }
modules_disabled = { "s2s"; "admin_shell"; "admin_socket" }
allow_registration = false

c2s_require_encryption = true
allow_unencrypted_plain_auth = false
-- Plain-text store: Prosody then offers SCRAM-SHA-1 and SCRAM-SHA-256.
authentication = "internal_plain"
storage = "internal"

certificates = "$d/certs/server"
ssl = {
  certificate = "$d/certs/server/localhost.crt";
  key = "$d/certs/server/localhost.key";
  -- Client certificates (SASL EXTERNAL): request one, never require it
  -- (the core default verifyext "lsec_continue" goes on without one or with
  -- a bad one; mod_auth_ccert then looks at the verification result).
  cafile = "$d/certs/client-cas.pem";
  verify = { "peer"; "client_once" };
  -- The core default "lsec_ignore_purpose" checks client certificates as if
  -- they were server certificates: one with extendedKeyUsage=clientAuth
  -- then fails ("unsuitable certificate purpose").
  verifyext = { lsec_ignore_purpose = false };
}

VirtualHost "$DOMAIN"

-- SASL ANONYMOUS: any client gets a random JID on this host.
VirtualHost "$ANON_DOMAIN"
  authentication = "anonymous"

-- SASL EXTERNAL (XEP-0178) with a client certificate signed by the CA above
-- whose subjectAltName id-on-xmppAddr is user@$CCERT_DOMAIN; no passwords.
-- (prosody-modules mod_auth_ccert; the other way, mod_client_certs, enrols
-- certificates per account instead of trusting a CA.)
VirtualHost "$CCERT_DOMAIN"
  authentication = "ccert"
  certificate_match = "xmppaddr"

-- SASL OAUTHBEARER (RFC 7628): the token is checked by an HTTPS GET to the
-- validator (oauth_validator.py) with HTTP Basic client credentials; any 2xx
-- means valid. (LuaSec's ssl.https, which does the GET, verifies no
-- certificate: the validator's CA-signed certificate is not checked.)
VirtualHost "$OAUTH_DOMAIN"
  authentication = "oauthbearer"
  modules_enabled = { "sasl_oauthbearer" }
  oauth_client_id = "$OAUTH_CLIENT_ID"
  oauth_client_secret = "$OAUTH_CLIENT_SECRET"
  oauth_url = "https://127.0.0.1:$4/validate/{{password}}"
EOF
}

# ------------------------------------------------------------------ OAuth validator
# Is PID still the validator of DIR? (PIDs get reused.)
is_our_validator() { # PID DIR
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *oauth_validator.py* && "$cmdline" == *"$2/"* ]]
}

stop_validator() { # DIR
  local dir=$1 pid
  [ -f "$dir/oauth.pid" ] || return 0
  pid=$(cat "$dir/oauth.pid")
  if is_our_validator "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
      [ -d "/proc/$pid" ] || break
      [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$dir/oauth.pid"
}

# Starts the validator; sets OAUTH_PID and OAUTH_PORT.
start_validator() { # DIR
  local dir=$1
  rm -f "$dir/oauth.port"
  "$PY" "$HERE/oauth_validator.py" --cert "$dir/certs/server/localhost.crt" \
    --key "$dir/certs/server/localhost.key" --client-id "$OAUTH_CLIENT_ID" \
    --client-secret "$OAUTH_CLIENT_SECRET" --port-file "$dir/oauth.port" \
    --log "$dir/oauth.log" "$OAUTH_TOKEN" >"$dir/oauth.console.log" 2>&1 </dev/null &
  OAUTH_PID=$!
  echo "$OAUTH_PID" >"$dir/oauth.pid"
  local end=$((SECONDS + READY_TIMEOUT))
  while [ ! -s "$dir/oauth.port" ]; do
    if ! kill -0 "$OAUTH_PID" 2>/dev/null || [ $SECONDS -gt "$end" ]; then
      cat "$dir/oauth.console.log" >&2 2>/dev/null || true
      stop_validator "$dir"
      die "the OAuth validator did not start"
    fi
    sleep 0.02
  done
  OAUTH_PORT=$(cat "$dir/oauth.port")
}

# prosody-modules (Debian) puts its modules next to Prosody's own.
need_modules() {
  local m d found
  for m in auth_ccert auth_oauthbearer sasl_oauthbearer; do
    found=0
    for d in /usr/lib/prosody/modules /usr/local/lib/prosody/modules; do
      if [ -e "$d/mod_$m.lua" ] || [ -e "$d/mod_$m/mod_$m.lua" ]; then found=1; fi
    done
    [ $found = 1 ] || die "Prosody module mod_$m not found: install the Debian package" \
      "prosody-modules (run scripts/deps.sh)"
  done
}

# ------------------------------------------------------------------ start
cmd_start() {
  local dir=$1
  shift
  need prosody "install the Debian package prosody"
  need prosodyctl "install the Debian package prosody"
  need openssl "install the Debian package openssl"
  need ss "install the Debian package iproute2"
  [ -x "$PY" ] || die "$PY not found (install the Debian package python3)"
  need_modules

  local accounts=("$@")
  [ ${#accounts[@]} -gt 0 ] || accounts=("alice:alice-pw-Aq7" "bob:bob-pw-Zx3")
  local a name
  for a in "${accounts[@]}"; do
    name=${a%%:*}
    [[ "$a" == *:* && "$name" =~ ^[a-z][a-z0-9_]*$ && -n "${a#*:}" ]] ||
      die "bad account '$a' (want name:password, name in [a-z0-9_])"
  done

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # The path goes into a Lua config: keep it to characters that need no quoting.
  [[ "$dir" =~ ^[A-Za-z0-9._/+-]+$ ]] ||
    die "directory path '$dir' has characters the generated config cannot hold"
  [ ! -e "$dir/env" ] || die "$dir already holds a server (stop it first)"
  mkdir -p "$dir/data"
  make_certs "$dir"
  cp "$dir/certs/ca.crt" "$dir/certs/client-cas.pem"
  if [ -n "${PROSODY_CLIENT_CA:-}" ]; then
    grep -q -- "-----BEGIN CERTIFICATE-----" "$PROSODY_CLIENT_CA" 2>/dev/null ||
      die "PROSODY_CLIENT_CA=$PROSODY_CLIENT_CA is not a PEM certificate file"
    cat "$PROSODY_CLIENT_CA" >>"$dir/certs/client-cas.pem"
  fi

  local ports c2s tls http https try
  for try in 1 2 3 4 5; do
    ports=$(free_ports 4)
    read -r c2s tls http https <<<"$ports"
    if ! port_busy "$c2s" && ! port_busy "$tls" && ! port_busy "$http" && ! port_busy "$https"
    then break; fi
    [ "$try" != 5 ] || die "could not find free loopback ports"
  done
  start_validator "$dir"
  # From here on, any failure must not leave it running.
  trap 'stop_validator '"$dir" EXIT
  write_config "$dir" "$c2s" "$tls" "$OAUTH_PORT" "$http" "$https"
  local cfg=$dir/prosody.cfg.lua

  # prosodyctl starts a Lua interpreter each time (~0.1 s): run them together.
  local pids=()
  for a in "${accounts[@]}"; do
    prosodyctl --config "$cfg" register "${a%%:*}" "$DOMAIN" "${a#*:}" \
      >>"$dir/prosodyctl.log" 2>&1 </dev/null &
    pids+=($!)
  done
  local p
  for p in "${pids[@]}"; do
    wait "$p" || { cat "$dir/prosodyctl.log" >&2; die "prosodyctl register failed"; }
  done

  # Output to files: an inherited stdout would hold the caller's pipes (ctest,
  # $(…)) open for as long as the server runs.
  prosody -F --config "$cfg" >"$dir/console.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/server.pid"
  # From here on, any failure must not leave them running.
  trap 'kill -TERM '"$pid"' 2>/dev/null || true; stop_validator '"$dir" EXIT

  if ! "$PY" "$HERE/ready.py" "$c2s" "$DOMAIN" "$READY_TIMEOUT" --pid "$pid" ||
    ! "$PY" "$HERE/ready.py" "$tls" "$DOMAIN" "$READY_TIMEOUT" --tls --pid "$pid"; then
    echo "prosody.sh: server did not become ready; console and log:" >&2
    tail -n 30 "$dir/console.log" "$dir/prosody.log" >&2 2>/dev/null || true
    stop_pid "$pid" "$cfg" || true
    stop_validator "$dir"
    rm -f "$dir/server.pid"
    trap - EXIT
    exit 1
  fi

  # Ready, but is it *our* server on both ports? (Prosody keeps running when
  # a port is taken, so something that grabbed one since ss looked could
  # have answered the probe.)
  local port
  for port in "$c2s" "$tls" "$http" "$https"; do
    if ! ss -Htlnp "sport = :$port" 2>/dev/null | grep -q "pid=$pid,"; then
      echo "prosody.sh: port $port is not held by Prosody $pid:" >&2
      ss -Htlnp "sport = :$port" >&2 || true
      tail -n 20 "$dir/prosody.log" >&2 2>/dev/null || true
      stop_pid "$pid" "$cfg" || true
      stop_validator "$dir"
      rm -f "$dir/server.pid"
      trap - EXIT
      exit 1
    fi
  done

  {
    printf 'PROSODY_PID=%q\n' "$pid"
    printf 'PROSODY_DIR=%q\n' "$dir"
    printf 'PROSODY_CONFIG=%q\n' "$cfg"
    printf 'PROSODY_LOG=%q\n' "$dir/prosody.log"
    printf 'DOMAIN=%q\n' "$DOMAIN"
    printf 'C2S_PORT=%q\nTLS_PORT=%q\n' "$c2s" "$tls"
    printf 'HTTP_PORT=%q\nHTTPS_PORT=%q\n' "$http" "$https"
    printf 'BOSH_URL=%q\nBOSH_HTTPS_URL=%q\n' "http://127.0.0.1:$http/http-bind" \
      "https://localhost:$https/http-bind"
    printf 'WS_URL=%q\nWSS_URL=%q\n' "ws://127.0.0.1:$http/xmpp-websocket" \
      "wss://localhost:$https/xmpp-websocket"
    cert_env "$dir"
    local names="" up
    for a in "${accounts[@]}"; do
      name=${a%%:*}
      up=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
      names="$names${names:+ }$name"
      printf '%s_JID=%q\n' "$up" "$name@$DOMAIN"
      printf '%s_PASSWORD=%q\n' "$up" "${a#*:}"
    done
    printf 'ACCOUNTS=%q\n' "$names"
    printf 'ANON_DOMAIN=%q\nCCERT_DOMAIN=%q\nOAUTH_DOMAIN=%q\n' "$ANON_DOMAIN" \
      "$CCERT_DOMAIN" "$OAUTH_DOMAIN"
    printf 'OAUTH_JID=%q\nOAUTH_TOKEN=%q\n' "$OAUTH_JID" "$OAUTH_TOKEN"
    printf 'OAUTH_PORT=%q\nOAUTH_PID=%q\nOAUTH_LOG=%q\n' "$OAUTH_PORT" "$OAUTH_PID" \
      "$dir/oauth.log"
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  trap - EXIT
  if [ -n "${PROSODY_WATCH_PID:-}" ]; then
    local watch=$PROSODY_WATCH_PID
    (
      while kill -0 "$watch" 2>/dev/null && [ -d "/proc/$pid" ]; do sleep 1; done
      stop_pid "$pid" "$cfg"
      stop_validator "$dir"
    ) </dev/null >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
  fi
  echo "prosody.sh: Prosody $pid ready on 127.0.0.1: c2s $c2s (STARTTLS), $tls (direct TLS)," \
    "OAuth validator $OAUTH_PID on $OAUTH_PORT; $dir/env" >&2
}

# ------------------------------------------------------------------ stop
# Is PID still the Prosody of this config? (PIDs get reused.)
is_our_prosody() { # PID CFG
  local cmdline
  cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *prosody* && "$cmdline" == *"$2"* ]]
}

stop_pid() { # PID CFG
  local pid=$1 cfg=$2
  is_our_prosody "$pid" "$cfg" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  # Wait for the process itself to go (its cmdline empties while it exits,
  # before its ports are released, so is_our_prosody is not the test here).
  for _ in $(seq 1 100); do # 5 s for a clean shutdown
    [ -d "/proc/$pid" ] || return 0
    # A zombie child of ours counts as gone.
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || return 0
    sleep 0.05
  done
  echo "prosody.sh: Prosody $pid ignored SIGTERM; killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.1
}

cmd_stop() {
  local dir=$1 rm=0
  [ "${2:-}" != "--rm" ] || rm=1
  [ -d "$dir" ] || die "no such directory: $dir"
  dir=$(cd "$dir" && pwd)
  local pid=""
  [ ! -f "$dir/server.pid" ] || pid=$(cat "$dir/server.pid")
  if [ -n "$pid" ]; then
    stop_pid "$pid" "$dir/prosody.cfg.lua"
  fi
  stop_validator "$dir"
  rm -f "$dir/server.pid" "$dir/env"
  if [ $rm = 1 ]; then
    rm -rf "$dir"
  fi
}

case "${1:-}" in
  start)
    [ $# -ge 2 ] || usage
    shift
    cmd_start "$@"
    ;;
  certs)
    [ $# -eq 2 ] || usage
    cmd_certs "$2"
    ;;
  stop)
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
    cmd_stop "$2" "${3:-}"
    ;;
  *) usage ;;
esac
