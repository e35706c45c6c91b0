#!/usr/bin/env bash
# Throwaway ejabberd for tests: loopback only, free ports, its own CA and
# certificates, everything inside one directory.
#
#   ejabberd.sh start DIR [NAME:PASSWORD ...]
#       Creates DIR (if needed) and in it: certs/ (a test CA; a server
#       certificate for localhost, *.localhost and 127.0.0.1 signed by it;
#       per account a client certificate whose subjectAltName is the
#       XEP-0178 id-on-xmppAddr NAME@localhost, signed by the CA, as PEM
#       files and as a PKCS#12 file), ejabberd.yml (from
#       tests/servers/ejabberd/ejabberd.yml.in), spool/ (Mnesia), logs/.
#       Starts the Erlang VM with ejabberd directly (not through ejabberdctl,
#       which as root re-runs itself as the user "ejabberd" and as any other
#       user refuses to run), registers the accounts (default: alice and bob
#       with fixed test passwords) inside the VM as soon as ejabberd is up,
#       waits until both c2s ports answer with stream features, and writes
#       DIR/env (shell-sourceable):
#         EJABBERD_PID (the beam.smp process) EJABBERD_DIR EJABBERD_LOG
#         EJABBERD_NODE ERL_DIST_PORT DOMAIN C2S_PORT (STARTTLS) TLS_PORT
#         (direct TLS) HTTP_PORT HTTPS_PORT BOSH_URL BOSH_HTTPS_URL WS_URL
#         WSS_URL CA_FILE SERVER_CERT SERVER_KEY P12_PASSWORD
#         ACCOUNTS="alice bob …", and per account NAME_JID, NAME_PASSWORD,
#         NAME_CERT, NAME_KEY, NAME_PEM (certificate + key in one file) and
#         NAME_P12 (upper-case name, e.g. ALICE_CERT).
#       Both listeners have tls_verify: every TLS handshake asks the client
#       for a certificate (optional: password logins work without one), and
#       SASL EXTERNAL is offered. Passwords are stored in the clear, so every
#       mechanism is offered: SCRAM-SHA-1/256/512, their -PLUS variants
#       (ejabberd 23.01 binds tls-unique only, correctly on TLS 1.2 only),
#       DIGEST-MD5, PLAIN, EXTERNAL.
#       BOSH (/bosh) and WebSocket (/ws) are served over plain HTTP on
#       HTTP_PORT (BOSH_URL http://127.0.0.1:…/bosh, WS_URL ws://…/ws) and
#       over HTTPS on HTTPS_PORT (BOSH_HTTPS_URL https://localhost:…/bosh,
#       WSS_URL wss://localhost:…/ws, the same certificate); no client
#       certificates there.
#       The Erlang distribution listens on 127.0.0.1:ERL_DIST_PORT with a
#       random cookie (DIR/vm.args, mode 0600); no epmd is started.
#       Exits non-zero, with nothing left running, if anything fails.
#       With EJABBERD_WATCH_PID=PID in the environment, a small watchdog
#       stops the server once that process is gone (a test killed with
#       SIGKILL by a timeout cannot run its trap).
#   ejabberd.sh ctl DIR COMMAND [ARG ...]
#       Runs an ejabberdctl command (register, registered_users localhost,
#       kick_session, …) against the server started in DIR.
#   ejabberd.sh stop DIR [--rm]
#       Stops the server started in DIR (SIGTERM to its PID, checked to still
#       be that server's VM; SIGKILL after 10 s), waits for it and its helper
#       process to exit; --rm then deletes DIR.
#
# Works as root and as any other user. Needs: ejabberd (Debian 12: 23.01),
# openssl, ss (iproute2), /usr/bin/python3 (scripts/deps.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3
DOMAIN=localhost
READY_TIMEOUT=${EJABBERD_READY_TIMEOUT:-30}
P12_PASSWORD=p12-pw-Kd4

die() {
  echo "ejabberd.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

need() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found: $2 (run scripts/deps.sh)"
}

# The directory that holds ejabberd-VERSION/ebin (ERL_LIBS for the VM): the
# one ejabberdctl sets, else wherever the package put ejabberd.app.
ejabberd_libs() {
  local ctl libs app
  ctl=$(command -v ejabberdctl 2>/dev/null || echo /usr/sbin/ejabberdctl)
  libs=$(sed -n "s/^ERL_LIBS='\(.*\)'\$/\1/p" "$ctl" 2>/dev/null | head -n 1)
  if [ -n "$libs" ] && compgen -G "$libs/ejabberd-*/ebin/ejabberd.app" >/dev/null; then
    echo "$libs"
    return 0
  fi
  for app in /usr/lib/*/ejabberd-*/ebin/ejabberd.app /usr/lib/erlang/lib/ejabberd-*/ebin/ejabberd.app; do
    [ -f "$app" ] || continue
    dirname "$(dirname "$(dirname "$app")")"
    return 0
  done
  return 1
}

check_tools() {
  need erl "install the Debian package ejabberd (it brings Erlang)"
  need openssl "install the Debian package openssl"
  need ss "install the Debian package iproute2"
  [ -x "$PY" ] || die "$PY not found (install the Debian package python3)"
  ERL_LIBS_DIR=$(ejabberd_libs) || die "ejabberd is not installed (install the Debian package ejabberd)"
}

# Environment of every VM we start: code path, a hosts file so that the node
# name's "localhost" never needs DNS, HOME inside DIR (Erlang would otherwise
# read or create ~/.erlang.cookie).
erl_env() { # DIR
  echo "ERL_LIBS=$ERL_LIBS_DIR" "ERL_INETRC=$1/inetrc" "HOME=$1"
}

# ------------------------------------------------------------------ certificates
# P-256 keys: generating them takes milliseconds, RSA would take most of the
# start-up budget.
gen_ca() { # NAME CN
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1.key" -out "$1.crt" -days 30 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

gen_leaf() { # CA OUT CN EKU SAN
  local ca=$1 out=$2 cn=$3 eku=$4 san=$5
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$out.key" -out "$out.csr" -subj "/CN=$cn" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=$eku" "subjectAltName=$san" >"$out.ext"
  openssl x509 -req -in "$out.csr" -CA "$ca.crt" -CAkey "$ca.key" -CAcreateserial \
    -CAserial "$out.srl" -days 30 -extfile "$out.ext" -out "$out.crt" 2>/dev/null
  rm -f "$out.csr" "$out.ext" "$out.srl"
}

make_certs() { # DIR NAME...
  local c=$1/certs name p pids=()
  shift
  mkdir -p "$c/server" "$c/client"
  gen_ca "$c/ca" "epode ejabberd test CA"
  # The leaves in parallel (each is a few openssl runs).
  (
    gen_leaf "$c/ca" "$c/server/localhost" localhost serverAuth \
      "DNS:localhost,DNS:*.localhost,IP:127.0.0.1"
    # ejabberd wants certificate and key in one file.
    cat "$c/server/localhost.crt" "$c/server/localhost.key" >"$c/server/localhost.pem"
  ) &
  pids+=($!)
  # Client certificates for SASL EXTERNAL (XEP-0178): the JID as an
  # id-on-xmppAddr otherName. Each with its own CA serial file: parallel
  # runs would otherwise race on ca.srl.
  for name in "$@"; do
    (
      gen_leaf "$c/ca" "$c/client/$name" "$name@$DOMAIN" clientAuth \
        "otherName:1.3.6.1.5.5.7.8.5;UTF8:$name@$DOMAIN"
      cat "$c/client/$name.crt" "$c/client/$name.key" >"$c/client/$name.pem"
      openssl pkcs12 -export -in "$c/client/$name.crt" -inkey "$c/client/$name.key" \
        -certfile "$c/ca.crt" -name "$name@$DOMAIN" -passout "pass:$P12_PASSWORD" \
        -out "$c/client/$name.p12" 2>/dev/null
    ) &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || die "creating the certificates failed"
  done
  chmod 600 "$c"/*.key "$c"/server/*.key "$c"/server/*.pem "$c"/client/*.key \
    "$c"/client/*.pem "$c"/client/*.p12
}

# ------------------------------------------------------------------ ports
# Several at once from the kernel (bound together, so they differ), then
# double-checked with ss.
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
write_files() { # DIR C2S TLS HTTP HTTPS ACCOUNT...
  local d=$1 c2s=$2 tls=$3 http=$4 https=$5
  shift 5
  sed -e "s|@DIR@|$d|g" -e "s|@C2S_PORT@|$c2s|g" -e "s|@TLS_PORT@|$tls|g" \
    -e "s|@HTTP_PORT@|$http|g" -e "s|@HTTPS_PORT@|$https|g" \
    "$HERE/ejabberd/ejabberd.yml.in" >"$d/ejabberd.yml"
  # Name resolution for the VM: "localhost" from here, the rest as usual.
  printf '%s\n' '{lookup,["file","native"]}.' '{host,{127,0,0,1},["localhost"]}.' >"$d/inetrc"
  # The cookie guards the distribution port (code execution as our user):
  # random, and in a file only we can read rather than on a command line.
  (
    umask 077
    printf -- '-setcookie %s\n' "$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" >"$d/vm.args"
  )
  # Accounts as Erlang terms, passwords as byte lists (no quoting to get wrong).
  "$PY" - "$d/accounts.eterm" "$@" <<'EOF'
import os, sys
with open(sys.argv[1], "w") as f:
    os.fchmod(f.fileno(), 0o600)
    for a in sys.argv[2:]:
        name, pw = a.split(":", 1)
        pwb = os.fsencode(pw)
        f.write('{<<"%s">>, <<%s>>}.\n' % (name, ",".join(str(b) for b in pwb)))
EOF
}

# Runs in the VM after `-s ejabberd` has returned (the application is up, the
# listeners may still be opening): registers the accounts (or resets their
# password when DIR is reused) and writes accounts.done: "ok", or what failed.
register_eval() { # DIR
  local d=$1
  cat <<EOF
R = fun(U, P) ->
      case ejabberd_auth:try_register(U, <<"$DOMAIN">>, P) of
        {error, exists} -> ejabberd_auth:set_password(U, <<"$DOMAIN">>, P);
        X -> X
      end
    end,
{ok, A} = file:consult("$d/accounts.eterm"),
L = [{U, R(U, P)} || {U, P} <- A],
Out = case lists:all(fun({_, X}) -> X =:= ok end, L) of
        true -> "ok\n";
        false -> io_lib:format("~p~n", [L])
      end,
ok = file:write_file("$d/accounts.tmp", Out),
ok = file:rename("$d/accounts.tmp", "$d/accounts.done").
EOF
}

# ------------------------------------------------------------------ start
cmd_start() {
  local dir=$1
  shift
  check_tools

  local accounts=("$@")
  [ ${#accounts[@]} -gt 0 ] || accounts=("alice:alice-pw-Aq7" "bob:bob-pw-Zx3")
  local a name names=()
  for a in "${accounts[@]}"; do
    name=${a%%:*}
    [[ "$a" == *:* && "$name" =~ ^[a-z][a-z0-9_]*$ && -n "${a#*:}" ]] ||
      die "bad account '$a' (want name:password, name in [a-z0-9_])"
    names+=("$name")
  done

  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  # The path goes into YAML, Erlang strings and sed: keep it to characters
  # that need no quoting in any of them.
  [[ "$dir" =~ ^[A-Za-z0-9._/+-]+$ ]] ||
    die "directory path '$dir' has characters the generated config cannot hold"
  [ ! -e "$dir/env" ] || die "$dir already holds a server (stop it first)"
  mkdir -p "$dir/spool" "$dir/logs"
  rm -f "$dir/accounts.done" "$dir/accounts.tmp"
  make_certs "$dir" "${names[@]}"

  local ports c2s tls dist http https try
  for try in 1 2 3 4 5; do
    ports=$(free_ports 5)
    read -r c2s tls dist http https <<<"$ports"
    if ! port_busy "$c2s" && ! port_busy "$tls" && ! port_busy "$dist" &&
      ! port_busy "$http" && ! port_busy "$https"; then break; fi
    [ "$try" != 5 ] || die "could not find free loopback ports"
  done
  write_files "$dir" "$c2s" "$tls" "$http" "$https" "${accounts[@]}"
  # Mnesia (spool/) belongs to the node name it was created by: keep the
  # first one when DIR is reused (with no epmd, names need not be unique).
  local node
  [ -s "$dir/node" ] || echo "epode$dist@localhost" >"$dir/node"
  node=$(cat "$dir/node")

  # What ejabberdctl foreground runs, minus the su and the epmd: a node name
  # of its own, the distribution on a fixed loopback port without epmd.
  # `erl` execs erlexec, which execs beam.smp: $! is the VM itself.
  # Output to files: an inherited stdout would hold the caller's pipes (ctest,
  # $(…)) open for as long as the server runs.
  (
    cd "$dir"
    # shellcheck disable=SC2046
    exec env $(erl_env "$dir") \
      EJABBERD_CONFIG_PATH="$dir/ejabberd.yml" EJABBERD_LOG_PATH="$dir/logs/ejabberd.log" \
      ERL_CRASH_DUMP="$dir/logs/erl_crash.dump" ERL_DIST_PORT="$dist" \
      erl -sname "$node" -noinput -args_file "$dir/vm.args" \
      -erl_epmd_port "$dist" -start_epmd false \
      -kernel inet_dist_use_interface '{127,0,0,1}' \
      -mnesia dir "\"$dir/spool\"" \
      -s ejabberd -eval "$(register_eval "$dir")"
  ) >"$dir/logs/console.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/server.pid"
  # From here on, any failure must not leave it running.
  trap 'stop_pid '"$pid"' '"$dir"' || true' EXIT

  local fail=""
  if ! wait_accounts "$dir" "$pid"; then
    fail="the accounts were not registered"
  elif ! ready_both "$c2s" "$tls" "$pid"; then
    fail="the server did not become ready"
  else
    # Ready, but is it *our* server on every port? (The HTTP listeners
    # open along with the c2s ones; give them a moment.)
    local port
    for port in "$c2s" "$tls" "$dist" "$http" "$https"; do
      if ! held_by "$port" "$pid"; then
        ss -Htlnp "sport = :$port" >&2 || true
        fail="port $port is not held by ejabberd $pid"
        break
      fi
    done
  fi
  if [ -n "$fail" ]; then
    echo "ejabberd.sh: $fail; console and log:" >&2
    tail -n 30 "$dir/logs/console.log" >&2 2>/dev/null || true
    grep -E '\[(warning|error|critical)\]' "$dir/logs/ejabberd.log" 2>/dev/null | tail -n 10 >&2 || true
    stop_pid "$pid" "$dir" || true
    rm -f "$dir/server.pid"
    trap - EXIT
    exit 1
  fi

  {
    printf 'EJABBERD_PID=%q\n' "$pid"
    printf 'EJABBERD_DIR=%q\n' "$dir"
    printf 'EJABBERD_CONFIG=%q\n' "$dir/ejabberd.yml"
    printf 'EJABBERD_LOG=%q\n' "$dir/logs/ejabberd.log"
    printf 'EJABBERD_NODE=%q\n' "$node"
    printf 'ERL_DIST_PORT=%q\n' "$dist"
    printf 'DOMAIN=%q\n' "$DOMAIN"
    printf 'C2S_PORT=%q\nTLS_PORT=%q\n' "$c2s" "$tls"
    printf 'HTTP_PORT=%q\nHTTPS_PORT=%q\n' "$http" "$https"
    printf 'BOSH_URL=%q\nBOSH_HTTPS_URL=%q\n' "http://127.0.0.1:$http/bosh" \
      "https://localhost:$https/bosh"
    printf 'WS_URL=%q\nWSS_URL=%q\n' "ws://127.0.0.1:$http/ws" "wss://localhost:$https/ws"
    printf 'CA_FILE=%q\n' "$dir/certs/ca.crt"
    printf 'SERVER_CERT=%q\nSERVER_KEY=%q\n' "$dir/certs/server/localhost.crt" \
      "$dir/certs/server/localhost.key"
    printf 'P12_PASSWORD=%q\n' "$P12_PASSWORD"
    local up
    for a in "${accounts[@]}"; do
      name=${a%%:*}
      up=$(printf '%s' "$name" | tr '[:lower:]' '[:upper:]')
      printf '%s_JID=%q\n' "$up" "$name@$DOMAIN"
      printf '%s_PASSWORD=%q\n' "$up" "${a#*:}"
      printf '%s_CERT=%q\n' "$up" "$dir/certs/client/$name.crt"
      printf '%s_KEY=%q\n' "$up" "$dir/certs/client/$name.key"
      printf '%s_PEM=%q\n' "$up" "$dir/certs/client/$name.pem"
      printf '%s_P12=%q\n' "$up" "$dir/certs/client/$name.p12"
    done
    printf 'ACCOUNTS=%q\n' "${names[*]}"
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  trap - EXIT
  if [ -n "${EJABBERD_WATCH_PID:-}" ]; then
    local watch=$EJABBERD_WATCH_PID
    (
      while kill -0 "$watch" 2>/dev/null && [ -d "/proc/$pid" ]; do sleep 1; done
      stop_pid "$pid" "$dir"
    ) </dev/null >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
  fi
  echo "ejabberd.sh: ejabberd $pid ready on 127.0.0.1: c2s $c2s (STARTTLS)," \
    "$tls (direct TLS), BOSH/WebSocket $http (http) $https (https)," \
    "Erlang distribution $dist; $dir/env" >&2
}

# Both listeners answer with stream features (probed at the same time).
ready_both() { # C2S TLS PID
  local a b
  "$PY" "$HERE/ready.py" "$1" "$DOMAIN" "$READY_TIMEOUT" --pid "$3" &
  a=$!
  "$PY" "$HERE/ready.py" "$2" "$DOMAIN" "$READY_TIMEOUT" --tls --pid "$3" &
  b=$!
  wait "$a" || { wait "$b" || true; return 1; }
  wait "$b"
}

# PORT is listened on by PID (within a second: ejabberd opens its listeners
# one after the other).
held_by() { # PORT PID
  local i
  for ((i = 0; i < 20; i++)); do
    ss -Htlnp "sport = :$1" 2>/dev/null | grep -q "pid=$2," && return 0
    sleep 0.05
  done
  return 1
}

# Waits for the registration the VM does at start-up (see register_eval).
wait_accounts() { # DIR PID
  local d=$1 pid=$2 i
  for ((i = 0; i < READY_TIMEOUT * 20; i++)); do
    if [ -f "$d/accounts.done" ]; then
      [ "$(cat "$d/accounts.done")" = ok ] && return 0
      echo "ejabberd.sh: registering accounts failed: $(cat "$d/accounts.done")" >&2
      return 1
    fi
    if ! alive "$pid"; then
      echo "ejabberd.sh: ejabberd $pid exited during start-up" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "ejabberd.sh: accounts not registered after ${READY_TIMEOUT}s" >&2
  return 1
}

# ------------------------------------------------------------------ ctl
cmd_ctl() {
  local dir=$1
  shift
  check_tools
  [ -f "$dir/env" ] || die "no server running in $dir"
  dir=$(cd "$dir" && pwd)
  local node dist
  node=$(sed -n 's/^EJABBERD_NODE=//p' "$dir/env")
  dist=$(sed -n 's/^ERL_DIST_PORT=//p' "$dir/env")
  # A hidden, non-listening node that talks to the server's distribution
  # port directly (no epmd), as `ejabberdctl COMMAND` does.
  # shellcheck disable=SC2046
  env $(erl_env "$dir") ERL_CRASH_DUMP_SECONDS=0 \
    erl -sname "ctl$$-$RANDOM@localhost" -hidden -noinput -args_file "$dir/vm.args" \
    -erl_epmd_port "$dist" -start_epmd false -dist_listen false \
    -s ejabberd_ctl -extra "$node" "$@" </dev/null
}

# ------------------------------------------------------------------ stop
alive() { # PID: exists and is not a zombie
  [ -d "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

# Is PID still the VM of this directory? (PIDs get reused.)
is_our_vm() { # PID DIR
  local cmdline
  cmdline=$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") || return 1
  [[ "$cmdline" == *beam* && "$cmdline" == *"\"$2/spool\""* ]]
}

# The VM's direct children (erl_child_setup, the port-program helper).
children_of() { # PID
  cat /proc/"$1"/task/*/children 2>/dev/null || true
}

stop_pid() { # PID DIR
  local pid=$1 dir=$2 kids i c
  is_our_vm "$pid" "$dir" || return 0
  kids=$(children_of "$pid")
  # SIGTERM makes the VM run init:stop(): ejabberd closes its listeners and
  # Mnesia, then the VM exits (about 1 s).
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do # 10 s for a clean shutdown
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    echo "ejabberd.sh: ejabberd $pid ignored SIGTERM for 10 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
      alive "$pid" || break
      sleep 0.05
    done
  fi
  # erl_child_setup exits when the VM does; make sure, by PID.
  for c in $kids; do
    for ((i = 0; i < 20; i++)); do
      alive "$c" || break
      sleep 0.05
    done
    if alive "$c" && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$c/cmdline")" == *erl_child_setup* ]]; then
      kill -KILL "$c" 2>/dev/null || true
    fi
  done
}

cmd_stop() {
  local dir=$1 rm=0
  [ "${2:-}" != "--rm" ] || rm=1
  [ -d "$dir" ] || die "no such directory: $dir"
  dir=$(cd "$dir" && pwd)
  local pid=""
  [ ! -f "$dir/server.pid" ] || pid=$(cat "$dir/server.pid")
  if [ -n "$pid" ]; then
    stop_pid "$pid" "$dir"
  fi
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
  ctl)
    [ $# -ge 3 ] || usage
    shift
    cmd_ctl "$@"
    ;;
  stop)
    if [ $# -lt 2 ] || [ $# -gt 3 ]; then usage; fi
    cmd_stop "$2" "${3:-}"
    ;;
  *) usage ;;
esac
