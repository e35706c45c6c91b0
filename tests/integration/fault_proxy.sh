#!/usr/bin/env bash
# tests/tools/fault_proxy.py, the fault-injecting proxy other integration
# tests put between epode and a server: checked with real sockets against a
# small echo server. Bytes flow both ways and half-closes pass; cut, cut rst,
# cut-after (on the exact byte, in either direction), random-cuts (within
# bounds, COUNT of them), silence, stall (the client's writes block, nothing
# is lost), refuse, stats, bounded buffering, a target that is down and comes
# back, peers that reset, no fd leaks, quit and SIGTERM, and the proxy under
# both /usr/bin/python3 and the python3 first on PATH.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

PROXY=$SRC/tests/tools/fault_proxy.py
CTL=$WORK/fp.sock
ECHO_LOG=$WORK/echo.log
RELEASE=$WORK/echo.release
: >"$ECHO_LOG"

# --- the echo server: echoes every connection; logs "tag=<first 12 bytes>
# in=<bytes received> <eof|error>" per connection. A stream starting with
# HOLD is not read until $RELEASE exists (a server that stops reading); a
# chunk starting with SLOW is echoed after 1 s.
cat >"$WORK/echo.py" <<'PYEOF'
import os, socket, sys, threading, time
port_file, log_file, release, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
lock = threading.Lock()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(64)
with open(port_file + ".tmp", "w") as f:
    f.write("%d\n" % srv.getsockname()[1])
os.replace(port_file + ".tmp", port_file)

def handle(c):
    total, head, how = 0, b"", "eof"
    try:
        while True:
            d = c.recv(65536)
            if not d:
                c.shutdown(socket.SHUT_WR)
                break
            if total == 0 and d.startswith(b"HOLD"):
                end = time.monotonic() + 20
                while not os.path.exists(release) and time.monotonic() < end:
                    time.sleep(0.02)
            if d.startswith(b"SLOW"):
                time.sleep(1.0)
            if len(head) < 12:
                head += d[:12 - len(head)]
            total += len(d)
            c.sendall(d)
    except OSError:
        how = "error"
    finally:
        c.close()
        with lock, open(log_file, "a") as f:
            f.write("tag=%s in=%d %s\n" % (head.decode("ascii", "replace"), total, how))

while True:
    c, _ = srv.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
PYEOF

# --- the client side of every check (one function per check) --------------
cat >"$WORK/driver.py" <<'PYEOF'
import hashlib, os, re, select, socket, sys, time

CTL = os.environ["FP_CTL"]
PORT = int(os.environ["FP_PORT"])
ECHO_LOG = os.environ.get("ECHO_LOG", "")
RELEASE = os.environ.get("ECHO_RELEASE", "")
PID = os.environ.get("FP_PID", "")


class Fail(Exception):
    pass


def ctl(cmd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(CTL)
    s.sendall(cmd.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            break
        data += d
    s.close()
    return data.decode().strip()


def expect_reply(cmd, want):
    r = ctl(cmd)
    if r != want:
        raise Fail("%r answered %r, expected %r" % (cmd, r, want))


STATS_RE = re.compile(r"^ok conns=(\d+) open=(\d+) cuts=(\d+) up=(\d+) down=(\d+)$")


def stats():
    r = ctl("stats")
    m = STATS_RE.match(r)
    if not m:
        raise Fail("stats answered %r" % r)
    return dict(zip(("conns", "open", "cuts", "up", "down"), map(int, m.groups())))


def delta(a, b):
    return {k: b[k] - a[k] for k in a}


def wait_until(pred, secs, what):
    end = time.monotonic() + secs
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise Fail("timed out after %gs waiting for %s" % (secs, what))
        time.sleep(0.02)


def wait_open(n, secs=3):
    last = {}

    def ok():
        last["s"] = stats()
        return last["s"]["open"] == n
    try:
        wait_until(ok, secs, "open=%d" % n)
    except Fail as e:
        raise Fail("%s (last stats %s)" % (e, last.get("s")))
    return last["s"]


def connect():
    return socket.create_connection(("127.0.0.1", PORT), timeout=5)


def recv_exact(s, n, secs=3):
    buf = b""
    s.settimeout(secs)
    while len(buf) < n:
        try:
            d = s.recv(n - len(buf))
        except socket.timeout:
            raise Fail("got %d of %d bytes in %gs" % (len(buf), n, secs))
        if not d:
            raise Fail("EOF after %d of %d bytes" % (len(buf), n))
        buf += d
    return buf


def read_to_end(s, secs=3):
    """Everything until EOF or reset: (bytes, 'eof'|'reset'|'timeout')."""
    buf = b""
    end = time.monotonic() + secs
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return buf, "timeout"
        s.settimeout(left)
        try:
            d = s.recv(65536)
        except socket.timeout:
            return buf, "timeout"
        except ConnectionResetError:
            return buf, "reset"
        if not d:
            return buf, "eof"
        buf += d


def echo(s, data):
    s.sendall(data)
    got = recv_exact(s, len(data))
    if got != data:
        raise Fail("echo differs: sent %r..., got %r..." % (data[:20], got[:20]))


def quiet(s, secs):
    """True if nothing (no data, no EOF) becomes readable within secs."""
    r, _, _ = select.select([s], [], [], secs)
    return not r


def echo_line(tag, secs=3):
    def find():
        with open(ECHO_LOG) as f:
            for line in f:
                if line.startswith("tag=" + tag + " "):
                    return line.split()
        return None
    return wait_until(find, secs, "the echo server to log tag %s" % tag)


def rss_kib():
    with open("/proc/%s/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS for pid %s" % PID)


def cpu_seconds():
    """CPU time the proxy has used (user + system)."""
    with open("/proc/%s/stat" % PID) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_cpu(secs):
    """CPU the proxy uses over secs while nothing can move: no busy loop."""
    c0 = cpu_seconds()
    time.sleep(secs)
    used = cpu_seconds() - c0
    if used > secs / 2:
        raise Fail("the proxy used %.2fs of CPU in %.2fs while blocked (busy loop?)"
                   % (used, secs))
    return used


def fill_until_blocked(s, sent_hash, cap=256 << 20):
    """Non-blocking sends until EAGAIN; returns bytes sent (hashed)."""
    s.setblocking(False)
    chunk = os.urandom(65536)
    total = 0
    while total < cap:
        try:
            n = s.send(chunk)
        except BlockingIOError:
            return total
        sent_hash.update(chunk[:n])
        total += n
    raise Fail("sent %d bytes without the send ever blocking" % total)


def fill_until_stuck(s, sent_hash):
    """Fills until the client cannot send at all any more: a momentary
    EAGAIN proves nothing (a reader without bounds lags behind too), so send
    again after pauses until nothing at all goes. Returns bytes sent."""
    total = fill_until_blocked(s, sent_hash)
    for _ in range(15):
        time.sleep(0.2)
        n = fill_until_blocked(s, sent_hash)
        total += n
        if n == 0:
            return total
    raise Fail("%d bytes sent and the client can still send more: the proxy does not stop"
               " reading" % total)


def finish_exchange(s, sent_total, sent_hash, extra, secs=10):
    """Sends `extra` more bytes and reads until every byte sent came back;
    compares the hashes."""
    s.setblocking(False)
    got_hash = hashlib.sha256()
    got = 0
    more = os.urandom(extra)
    end = time.monotonic() + secs
    while got < sent_total + len(more) or more:
        if time.monotonic() > end:
            raise Fail("after %gs: %d of %d bytes echoed" % (secs, got, sent_total + extra))
        r, w, _ = select.select([s], [s] if more else [], [], 0.5)
        if w:
            try:
                n = s.send(more)
                sent_hash.update(more[:n])
                sent_total += n
                more = more[n:]
            except BlockingIOError:
                pass
        if r:
            d = s.recv(1 << 20)
            if not d:
                raise Fail("EOF after %d of %d bytes echoed" % (got, sent_total))
            got_hash.update(d)
            got += len(d)
    if got != sent_total:
        raise Fail("%d bytes echoed, %d sent" % (got, sent_total))
    if got_hash.digest() != sent_hash.digest():
        raise Fail("the %d bytes echoed differ from those sent" % got)
    return got


# --- checks -------------------------------------------------------------
def check_flow():
    wait_open(0)
    s = connect()
    echo(s, b"hello")
    data = os.urandom(3 << 20)
    h = hashlib.sha256(data)
    # interleaved, so neither side's buffers have to hold it all
    s.setblocking(False)
    sent = 0
    got = hashlib.sha256()
    n_got = 0
    end = time.monotonic() + 10
    while n_got < len(data):
        if time.monotonic() > end:
            raise Fail("3 MiB: %d bytes echoed after 10 s" % n_got)
        r, w, _ = select.select([s], [s] if sent < len(data) else [], [], 0.5)
        if w:
            try:
                sent += s.send(data[sent:sent + 262144])
            except BlockingIOError:
                pass
        if r:
            d = s.recv(1 << 20)
            if not d:
                raise Fail("EOF after %d bytes" % n_got)
            got.update(d)
            n_got += len(d)
    if got.digest() != h.digest():
        raise Fail("3 MiB echoed with different content")
    s.close()
    wait_open(0)


def check_halfclose():
    wait_open(0)
    s = connect()
    data = b"TAG:halfcls:" + os.urandom(5000)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    got, how = read_to_end(s)
    if got != data or how != "eof":
        raise Fail("after our SHUT_WR: %d of %d bytes back, then %s (want all, then EOF)"
                   % (len(got), len(data), how))
    line = echo_line("TAG:halfcls:")
    if line[1:] != ["in=%d" % len(data), "eof"]:
        raise Fail("the echo server saw %s" % " ".join(line))
    wait_open(0)  # closed by the proxy once both directions are done
    s.close()


def check_cut():
    wait_open(0)
    st0 = stats()
    a, b = connect(), connect()
    echo(a, b"a")
    echo(b, b"b")
    expect_reply("cut", "ok cut 2")
    for name, s in (("first", a), ("second", b)):
        got, how = read_to_end(s, 2)
        if got or how != "eof":
            raise Fail("%s connection after cut: %d bytes then %s (want EOF)" % (name, len(got), how))
    d = delta(st0, stats())
    if d["cuts"] != 2 or d["open"] != 0:
        raise Fail("stats after cutting 2: %s" % d)


def check_cut_tail():
    # The client does not read: what the proxy forwarded before a plain cut
    # sits in kernel buffers and must still arrive, then EOF.
    wait_open(0)
    st0 = stats()
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", PORT))
    s.sendall(os.urandom(400000))
    wait_until(lambda: stats()["up"] == st0["up"] + 400000, 3, "400000 bytes up")
    last = [-1]

    def stable():
        d = stats()["down"]
        same, last[0] = d == last[0], d
        return same
    wait_until(lambda: time.sleep(0.1) or stable(), 3, "down to stop moving")
    expect_reply("cut", "ok cut 1")
    down = delta(st0, stats())["down"]
    got, how = read_to_end(s, 5)
    if len(got) != down or how != "eof":
        raise Fail("%d bytes forwarded down before the cut, %d arrived, then %s"
                   % (down, len(got), how))
    s.close()
    return "%d bytes delivered after the cut" % down


def check_cut_rst():
    wait_open(0)
    s = connect()
    echo(s, b"x" * 10)
    expect_reply("cut rst", "ok cut 1")
    got, how = read_to_end(s, 2)
    if how != "reset":
        raise Fail("after cut rst: %d bytes then %s (want a reset)" % (len(got), how))


def check_cut_after_100():
    wait_open(0)
    s = connect()
    wait_open(1)
    st0 = stats()
    expect_reply("cut-after 100", "ok cut-after 1")
    data = b"TAG:cut100::" + os.urandom(988)
    s.sendall(data)
    got, how = read_to_end(s, 3)
    if how != "eof":
        raise Fail("not cut: %d bytes back, then %s" % (len(got), how))
    d = delta(st0, stats())
    if d["up"] + d["down"] != 100 or d["cuts"] != 1:
        raise Fail("1000 bytes sent through cut-after 100: forwarded %s" % d)
    line = echo_line("TAG:cut100::")
    if line[1] != "in=%d" % d["up"]:
        raise Fail("the proxy forwarded %d bytes up, the server got %s" % (d["up"], line[1]))
    if got != data[:d["down"]]:
        raise Fail("the client got %d bytes back, the proxy forwarded %d down"
                   % (len(got), d["down"]))


def check_cut_after_down():
    # 30 bytes up, then the echo: the 50th byte is the 20th coming back.
    wait_open(0)
    s = connect()
    wait_open(1)
    st0 = stats()
    expect_reply("cut-after 50", "ok cut-after 1")
    data = b"TAG:cut50:::" + b"0123456789abcdefgh"
    s.sendall(data)
    got, how = read_to_end(s, 3)
    if got != data[:20] or how != "eof":
        raise Fail("cut-after 50 with 30 bytes echoed: got %r then %s (want %r then EOF)"
                   % (got, how, data[:20]))
    d = delta(st0, stats())
    if (d["up"], d["down"], d["cuts"]) != (30, 20, 1):
        raise Fail("stats delta %s, want up=30 down=20 cuts=1" % d)


def stream_until_cut(s, cap=4000):
    """Echoes 50-byte chunks until the connection ends; bytes sent."""
    sent = 0
    while sent < cap:
        chunk = os.urandom(50)
        try:
            s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            return sent
        sent += 50
        got, how = b"", ""
        s.settimeout(3)
        while len(got) < 50:
            try:
                d = s.recv(50 - len(got))
            except ConnectionResetError:
                return sent
            except socket.timeout:
                raise Fail("no echo within 3 s")
            if not d:
                return sent
            got += d
        if got != chunk:
            raise Fail("echo differs")
    raise Fail("not cut after %d bytes each way" % cap)


def check_random_cuts():
    lo, hi, count = 200, 400, 3
    wait_open(0)
    s0, idle = connect(), connect()
    echo(s0, os.urandom(300))  # before arming: does not count
    wait_open(2)
    base = stats()
    expect_reply("random-cuts %d %d %d" % (lo, hi, count), "ok random-cuts %d" % count)
    seen = []
    before = stats()
    stream_until_cut(s0)
    after = stats()
    seen.append(after["up"] + after["down"] - before["up"] - before["down"])
    for _ in range(count - 1):
        wait_open(1)
        before = stats()
        s = connect()
        stream_until_cut(s)
        after = stats()
        seen.append(after["up"] + after["down"] - before["up"] - before["down"])
        s.close()
    bad = [n for n in seen if not lo <= n <= hi]
    if bad:
        raise Fail("cut after %s bytes, bounds [%d, %d]" % (seen, lo, hi))
    if delta(base, stats())["cuts"] != count:
        raise Fail("%d cuts counted, want %d" % (delta(base, stats())["cuts"], count))
    # COUNT reached: no more cuts, for new connections nor for `idle`, armed
    # with the others but not cut yet.
    wait_open(1)
    keep = idle
    for _ in range(2):
        s = connect()
        for _ in range(20):
            echo(s, os.urandom(100))
            echo(keep, os.urandom(100))
        s.close()
    d = delta(base, stats())
    if d["cuts"] != count:
        raise Fail("a cut after COUNT (%d) was reached: %d cuts" % (count, d["cuts"]))
    keep.close()
    print("random thresholds hit: %s" % seen)


def check_silence():
    wait_open(0)
    s = connect()
    echo(s, b"before")
    st0 = stats()
    s.sendall(b"SLOW1")  # echoed 1 s later, while silent
    wait_until(lambda: stats()["up"] == st0["up"] + 5, 2, "SLOW1 to be forwarded")
    expect_reply("silence on", "ok silence on")
    s.sendall(b"lost!")
    if not quiet(s, 1.5):
        got, how = read_to_end(s, 0.2)
        raise Fail("while silent the client got %r (%s)" % (got, how))
    st1 = stats()
    d = delta(st0, st1)
    if (d["up"], d["down"], st1["open"]) != (5, 0, 1):
        raise Fail("while silent: forwarded up=%d down=%d, open=%d (want 5, 0, 1)"
                   % (d["up"], d["down"], st1["open"]))
    expect_reply("silence off", "ok silence off")
    if not quiet(s, 0.3):
        raise Fail("bytes discarded while silent were delivered after all")
    echo(s, b"after")  # the first bytes back are these: nothing older leaked
    s.close()


def check_stall():
    wait_open(0)
    s = connect()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    echo(s, b"before")
    st0 = stats()
    s.sendall(b"SLOW")  # its echo must come back while stalled
    wait_until(lambda: stats()["up"] == st0["up"] + 4, 2, "SLOW to be forwarded")
    expect_reply("stall on", "ok stall on")
    h = hashlib.sha256()
    n = fill_until_blocked(s, h)
    idle_cpu(0.5)
    if stats()["up"] != st0["up"] + 4:
        raise Fail("the proxy went on reading the client while stalled")
    s.setblocking(True)
    if recv_exact(s, 4, 3) != b"SLOW":
        raise Fail("server -> client did not flow while stalled")
    expect_reply("stall off", "ok stall off")
    got = finish_exchange(s, n, h, 100000)  # SLOW's 4 bytes came back already
    print("client blocked after %d bytes; all %d echoed exactly" % (n, got + 4))
    s.close()


def check_bounded():
    wait_open(0)
    st0 = stats()
    s = connect()
    s.sendall(b"HOLD")
    wait_until(lambda: stats()["up"] == st0["up"] + 4, 2, "HOLD to be forwarded")
    rss0 = rss_kib()
    h = hashlib.sha256(b"HOLD")
    n = fill_until_stuck(s, h)
    idle_cpu(0.5)
    grew = rss_kib() - rss0
    if grew > 16 * 1024:
        raise Fail("the proxy grew by %d KiB while the server did not read" % grew)
    with open(RELEASE, "w"):
        pass
    got = finish_exchange(s, n + 4, h, 0)
    print("client blocked after %d bytes; proxy grew %d KiB; %d echoed" % (n, grew, got))
    s.close()


def check_refuse():
    wait_open(0)
    old = connect()
    echo(old, b"old")
    st0 = stats()
    expect_reply("refuse on", "ok refuse on")
    t0 = time.monotonic()
    s = connect()
    got, how = read_to_end(s, 2)
    took = time.monotonic() - t0
    if how not in ("eof", "reset") or got or took > 1.0:
        raise Fail("refused connection: %d bytes, %s after %.2fs" % (len(got), how, took))
    d = delta(st0, stats())
    if d["conns"] != 1 or d["open"] != 0:
        raise Fail("stats delta after a refused connection: %s" % d)
    echo(old, b"still there")
    expect_reply("refuse off", "ok refuse off")
    s2 = connect()
    echo(s2, b"welcome back")
    for x in (old, s2, s):
        x.close()


def check_stats():
    wait_open(0)
    st0 = stats()
    a, b = connect(), connect()
    echo(a, b"x" * 10)
    echo(b, b"y" * 20)
    d = delta(st0, stats())
    want = {"conns": 2, "open": 2, "cuts": 0, "up": 30, "down": 30}
    if d != want:
        raise Fail("after two connections echoing 10 and 20 bytes: delta %s, want %s" % (d, want))
    a.close()
    wait_open(1)
    expect_reply("cut", "ok cut 1")
    d = delta(st0, stats())
    want = {"conns": 2, "open": 0, "cuts": 1, "up": 30, "down": 30}
    if d != want:
        raise Fail("after a close and a cut: delta %s, want %s" % (d, want))
    b.close()


def check_resets():
    wait_open(0)
    for i in range(5):
        s = connect()
        s.sendall(os.urandom(200000))
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        s.close()  # unread echo (or linger 0): a reset
    wait_open(0)
    expect_reply("ping", "ok pong")
    s = connect()
    echo(s, b"alive")
    s.close()


def check_target_down():
    wait_open(0)
    s = connect()
    got, how = read_to_end(s, 2)
    if got or how not in ("eof", "reset"):
        raise Fail("with the target down: %d bytes, then %s (want closed at once)"
                   % (len(got), how))
    wait_open(0)


def check_errors():
    for cmd in ("bogus", "cut-after", "cut-after x", "cut-after -1", "random-cuts 5 1 2",
                "silence maybe", "cut now"):
        r = ctl(cmd)
        if not r.startswith("error "):
            raise Fail("%r answered %r (want error ...)" % (cmd, r))
    expect_reply("ping", "ok pong")


if __name__ == "__main__":
    try:
        note = globals()["check_" + sys.argv[1]]()
        if note:
            print(note)
    except Fail as e:
        print(e)
        sys.exit(1)
PYEOF

# check NAME FUNCTION: runs driver.py's check_FUNCTION against the proxy.
check() {
  local name=$1 fn=$2 out rc
  set +e
  out=$(FP_CTL=$CTL FP_PORT=$PPORT FP_PID=$PPID_ ECHO_LOG=$ECHO_LOG ECHO_RELEASE=$RELEASE \
    timeout -k 1 20 "$PY" "$WORK/driver.py" "$fn" 2>&1)
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    pass "$name${out:+ ($out)}"
  else
    fail "$name" "exit $rc: $out" "$WORK/proxy.err"
  fi
}

# start_echo [PORT]: sets EPORT, EPID.
start_echo() {
  rm -f "$WORK/echo.port"
  "$PY" "$WORK/echo.py" "$WORK/echo.port" "$ECHO_LOG" "$RELEASE" "${1:-0}" \
    2>>"$WORK/echo.err" &
  EPID=$!
  BG_PIDS+=("$EPID")
  if ! wait_for "$WORK/echo.port" '^[0-9]+$' 10 "$EPID"; then
    echo "FAIL setup: the echo server did not start"
    cat "$WORK/echo.err"
    exit 1
  fi
  EPORT=$(cat "$WORK/echo.port")
}

# start_proxy PYTHON CONTROL PORTFILE TAG: sets PPORT, PPID_.
start_proxy() {
  local py=$1 ctl=$2 pf=$3 tag=$4
  "$py" "$PROXY" --target "127.0.0.1:$EPORT" --listen-port 0 --control "$ctl" \
    --port-file "$pf" --seed 12345 --verbose >"$WORK/$tag.out" 2>"$WORK/$tag.err" &
  PPID_=$!
  BG_PIDS+=("$PPID_")
  if ! wait_for "$pf" '^[0-9]+$' 10 "$PPID_"; then
    echo "FAIL setup: fault_proxy.py ($py) did not start"
    cat "$WORK/$tag.err"
    exit 1
  fi
  PPORT=$(cat "$pf")
}

fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }

start_echo
start_proxy "$PY" "$CTL" "$WORK/fp.port" proxy
MAIN_PID=$PPID_
if wait_for "$WORK/proxy.out" "^PORT $PPORT\$" 5 "$MAIN_PID" && [ -S "$CTL" ]; then
  pass "startup: port file, 'PORT $PPORT' on stdout, control socket"
else
  fail "startup" "stdout does not say PORT $PPORT, or no socket at $CTL" "$WORK/proxy.out"
fi
FDS0=$(fd_count "$MAIN_PID")

# --- the control client (--send) ------------------------------------------
set +e
REPLY=$("$PY" "$PROXY" --control "$CTL" --send stats)
RC=$?
set -e
if [ "$RC" = 0 ] && [[ $REPLY =~ ^ok\ conns=0\ open=0\ cuts=0\ up=0\ down=0$ ]]; then
  pass "--send stats: exit 0, '$REPLY'"
else
  fail "--send stats" "exit $RC, reply '$REPLY'"
fi
set +e
REPLY=$("$PY" "$PROXY" --control "$CTL" --send "no-such-command 1")
RC=$?
set -e
if [ "$RC" = 1 ] && [[ $REPLY == error\ * ]]; then
  pass "--send of an unknown command: exit 1, '$REPLY'"
else
  fail "--send of an unknown command" "exit $RC, reply '$REPLY'"
fi
set +e
REPLY=$("$PY" "$PROXY" --control "$WORK/nothing.sock" --send stats)
RC=$?
set -e
if [ "$RC" = 1 ] && [[ $REPLY == error\ * ]]; then
  pass "--send without a proxy: exit 1"
else
  fail "--send without a proxy" "exit $RC, reply '$REPLY'"
fi

check "bytes flow both ways (5 bytes, then 3 MiB interleaved)" flow
check "half-close passes both ways, then the proxy closes" halfclose
check "stats count connections, open ones, cuts and bytes" stats
check "cut closes every open connection (EOF)" cut
check "a plain cut still delivers what was forwarded, then EOF" cut_tail
check "cut rst resets" cut_rst
check "cut-after 100: 1000 bytes sent, exactly 100 forwarded" cut_after_100
check "cut-after lands on the exact byte coming back" cut_after_down
check "random-cuts 200 400 3: cuts within bounds, then no more" random_cuts
check "silence: nothing forwarded, nothing closed; off resumes" silence
check "stall: client's writes block, down still flows, nothing lost" stall
check "a server that stops reading: client blocks, proxy memory bounded" bounded
check "refuse: new connections closed at once, old ones untouched" refuse
check "peers that reset do not hurt the proxy" resets
check "bad commands get 'error ...'" errors

# --- the target goes down and comes back (on the same port) ---------------
kill "$EPID"
wait "$EPID" 2>/dev/null || true
check "target down: the client is closed at once" target_down
start_echo "$EPORT"
check "target back on the same port: bytes flow again" flow

# --- no fd leaks: once everything is closed (a plain cut lingers <= 2 s) ---
end=$((SECONDS + 5))
while [ "$(fd_count "$MAIN_PID")" != "$FDS0" ] && [ $SECONDS -le $end ]; do sleep 0.1; done
if [ "$(fd_count "$MAIN_PID")" = "$FDS0" ]; then
  pass "no fd leaks ($FDS0 fds, as at startup)"
else
  fail "no fd leaks" "$(fd_count "$MAIN_PID") fds open, $FDS0 at startup: $(ls -l "/proc/$MAIN_PID/fd")"
fi

if grep -q "cut" "$WORK/proxy.err" && grep -q "accepted" "$WORK/proxy.err" &&
  ! grep -q Traceback "$WORK/proxy.err"; then
  pass "--verbose logs accepts and cuts, no traceback"
else
  fail "--verbose log" "no accept/cut lines, or a traceback" "$WORK/proxy.err"
fi

# --- SIGTERM: clean exit, control socket removed ----------------------------
kill -TERM "$MAIN_PID"
set +e
timeout 5 tail --pid="$MAIN_PID" -f /dev/null
wait "$MAIN_PID"
RC=$?
set -e
if [ "$RC" = 0 ] && [ ! -e "$CTL" ]; then
  pass "SIGTERM: exit 0, control socket removed"
else
  fail "SIGTERM" "exit $RC, socket still there: $([ -e "$CTL" ] && echo yes || echo no)" \
    "$WORK/proxy.err"
fi

# --- the python3 first on PATH, and quit ------------------------------------
PY2=$(command -v python3 || true)
if [ -z "$PY2" ]; then
  fail "python3 on PATH" "no python3 on PATH"
else
  CTL=$WORK/fp2.sock
  start_proxy "$PY2" "$CTL" "$WORK/fp2.port" proxy2
  check "under $PY2 ($("$PY2" -V 2>&1)): bytes flow" flow
  check "under $PY2: cut-after lands on the exact byte" cut_after_down
  set +e
  REPLY=$("$PY2" "$PROXY" --control "$CTL" --send quit)
  RC=$?
  timeout 5 tail --pid="$PPID_" -f /dev/null
  wait "$PPID_"
  PRC=$?
  set -e
  if [ "$RC" = 0 ] && [ "$REPLY" = "ok quit" ] && [ "$PRC" = 0 ] && [ ! -e "$CTL" ]; then
    pass "quit: 'ok quit', exit 0, control socket removed"
  else
    fail "quit" "reply '$REPLY' (exit $RC), proxy exit $PRC" "$WORK/proxy2.err"
  fi
fi
finish
