#!/usr/bin/env python3
"""Runs every benchmark scenario for epode and libstrophe and prints one table.

    run.py BUILD_DIR [--only inbound,inbound_tls,outbound,login,many,transports]

BENCH_SCALE (default 1) scales message counts (1,000,000) and session counts
(1,000 and 10,000). The table also goes to bench/results/latest.md with the
date, the machine and the versions. See bench/README.md for what each row
means.
"""
import argparse
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SCALE = float(os.environ.get("BENCH_SCALE", "1"))
N_MSGS = max(1000, int(1_000_000 * SCALE))
SESSIONS = [max(10, int(1000 * SCALE)), max(100, int(10000 * SCALE))]
LOGINS = 5
REPEAT = max(1, int(os.environ.get("BENCH_REPEAT", "3")))
CERT = os.path.join(os.environ.get("TMPDIR", "/tmp"), "epode-bench-%d.pem" % os.getpid())
DELAY_MS = 25
rows = []   # (scenario, metric, epode, libstrophe, ratio, bound)
notes = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def stop_proc(p):
    """Closes a helper's stdin (its signal to stop) and returns its stdout."""
    try:
        p.stdin.close()
    except BrokenPipeError:
        pass
    out = p.stdout.read()
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return out


class Server:
    """bench_xserver on a free loopback port; stops when we close its stdin."""

    def __init__(self, build, *args):
        if "--tls" in args and args[args.index("--tls") + 1] != "none":
            args = (*args, "--cert-out", CERT)  # the clients verify against it
        self.p = subprocess.Popen([os.path.join(build, "bench_xserver"), *args, "--timeout", "900"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError("xserver did not start")
        self.port = int(line.split()[1])

    def stop(self):
        """Returns the STAT lines as dicts."""
        out = stop_proc(self.p)
        return [parse_kv(l[5:]) for l in out.splitlines() if l.startswith("STAT ")]


class Proxy:
    def __init__(self, upstream):
        self.p = subprocess.Popen([sys.executable, os.path.join(HERE, "delay_proxy.py"),
                                   str(upstream), "--delay-ms", str(DELAY_MS),
                                   "--max-seconds", "600"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.p.stdout.readline().split()[1])

    def stop(self):
        time.sleep(0.3)  # let the last connection's close travel through
        out = stop_proc(self.p)
        return [int(l.split()[1]) for l in out.splitlines() if l.startswith("TURNS ")]


def parse_kv(s):
    d = {}
    for tok in s.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            try:
                d[k] = float(v)
            except ValueError:
                d[k] = v
        else:
            d.setdefault("_", tok)
    return d


def client(build, prog, *args, timeout=900, env=None):
    """Runs a client; returns its RESULT lines as dicts (None if it failed)."""
    cmd = [os.path.join(build, prog), *map(str, args)]
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        log("  %s timed out" % " ".join(cmd))
        return None
    if r.returncode != 0:
        log("  %s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stderr.strip()[-500:]))
        return None
    return [parse_kv(l[7:]) for l in r.stdout.splitlines() if l.startswith("RESULT ")]


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 1e6:
        s = "{:,.0f}".format(v)
    elif abs(v) >= 100:
        s = "{:,.0f}".format(v)
    elif abs(v) >= 10:
        s = "{:.1f}".format(v)
    else:
        s = "{:.2f}".format(v)
    return s + unit


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "—"
    return "%.2f×" % (a / b)


def add(scenario, metric, e, s, bound=None, unit=""):
    rows.append((scenario, metric, fmt(e, unit), fmt(s, unit), ratio(e, s),
                 fmt(bound, unit) if bound is not None else "—"))


# ------------------------------------------------------------ scenarios

def inbound(build):
    log("inbound: %d messages" % N_MSGS)
    res, runs = {}, {"epode": [], "libstrophe": [], "bound": []}
    # REPEAT rounds, alternating the libraries; the median run of each counts.
    for _ in range(REPEAT):
        for name, prog in (("epode", "bench_epode"), ("libstrophe", "bench_strophe")):
            srv = Server(build, "--mode", "blast", "--count", str(N_MSGS), "--once")
            r = client(build, prog, "inbound", "--port", srv.port, "--count", N_MSGS)
            st = srv.stop()
            if r and st:
                r = r[0]
                r["server_cpu_pct"] = 100.0 * st[0]["cpu"] / st[0]["wall"] if st[0]["wall"] else 0
                r["bytes"] = st[0]["bytes"]
                runs[name].append(r)
            log("  %s: %s / server %s" % (name, r, st))
        b = client(build, "bench_expat", "--count", N_MSGS)
        if b:
            runs["bound"].append(b[0])
    for k, v in runs.items():
        if v:
            res[k] = sorted(v, key=lambda r: r["wall"])[len(v) // 2]
    bound = res.pop("bound", None)

    def rate(r, key="msgs"):
        return r[key] / r["wall"] if r else None

    e, s = res.get("epode"), res.get("libstrophe")
    add("1 inbound", "messages/s", rate(e), rate(s), rate(bound))
    mb = lambda r: r["bytes"] / r["wall"] / 1e6 if r else None
    add("1 inbound", "MB/s", mb(e), mb(s), mb(bound))
    if bound:
        be = rate(e) / rate(bound) if e else None
        bs = rate(s) / rate(bound) if s else None
        add("1 inbound", "fraction of the expat no-op bound", be, bs, 1.0)
    add("1 inbound", "client CPU µs/message", e and 1e6 * e["cpu"] / e["msgs"],
        s and 1e6 * s["cpu"] / s["msgs"], bound and 1e6 * bound["wall"] / bound["msgs"])
    add("1 inbound", "library allocations/message (own hooks)",
        e and e["epode_allocs_per_msg"], s and s["lib_allocs_per_msg"])
    add("1 inbound", "all mallocs/message (process)", e and e["mallocs_per_msg"],
        s and s["mallocs_per_msg"])
    add("1 inbound", "server CPU % while sending", e and e["server_cpu_pct"],
        s and s["server_cpu_pct"])
    return res


def inbound_tls(build):
    """Inbound over direct TLS, the server writing each message on its own, so
    that every message is a TLS record of its own and the client reads (and
    parses) one message at a time, as from a server that sends each stanza
    as it routes it."""
    n = max(1000, N_MSGS // 4)
    log("inbound over TLS, one record per message: %d messages" % n)
    res, runs = {}, {"epode": [], "libstrophe": []}
    for _ in range(REPEAT):
        for name, prog in (("epode", "bench_epode"), ("libstrophe", "bench_strophe")):
            srv = Server(build, "--mode", "blast", "--count", str(n), "--once", "--tls", "direct",
                         "--per-message")
            r = client(build, prog, "inbound", "--port", srv.port, "--count", n, "--tls", "direct",
                       "--cafile", CERT)
            srv.stop()
            if r:
                runs[name].append(r[0])
            log("  %s: %s" % (name, r))
    for k, v in runs.items():
        if v:
            res[k] = sorted(v, key=lambda r: r["wall"])[len(v) // 2]
    e, s = res.get("epode"), res.get("libstrophe")
    rate = lambda r: r["msgs"] / r["wall"] if r else None
    label = "1b inbound, TLS records"
    add(label, "messages/s", rate(e), rate(s))
    add(label, "client CPU µs/message", e and 1e6 * e["cpu"] / e["msgs"],
        s and 1e6 * s["cpu"] / s["msgs"])
    add(label, "all mallocs/message (process)", e and e["mallocs_per_msg"],
        s and s["mallocs_per_msg"])


def outbound(build):
    log("outbound: %d messages" % N_MSGS)
    res, runs = {}, {"epode": [], "libstrophe": []}
    for _ in range(REPEAT):
        for name, prog in (("epode", "bench_epode"), ("libstrophe", "bench_strophe")):
            srv = Server(build, "--mode", "sink", "--count", str(N_MSGS), "--once")
            r = client(build, prog, "outbound", "--port", srv.port, "--count", N_MSGS)
            st = srv.stop()
            if r and st:
                r = r[0]
                r["bytes"] = st[0]["bytes"]
                r["server_cpu_pct"] = 100.0 * st[0]["cpu"] / st[0]["wall"] if st[0]["wall"] else 0
                runs[name].append(r)
            log("  %s: %s / server %s" % (name, r, st))
    for k, v in runs.items():
        if v:
            res[k] = sorted(v, key=lambda r: r["wall"])[len(v) // 2]
    e, s = res.get("epode"), res.get("libstrophe")
    rate = lambda r: r["msgs"] / r["wall"] if r else None
    add("2 outbound", "messages/s", rate(e), rate(s))
    add("2 outbound", "MB/s (bytes the server counted)", e and e["bytes"] / e["wall"] / 1e6,
        s and s["bytes"] / s["wall"] / 1e6)
    add("2 outbound", "client CPU µs/message", e and 1e6 * e["cpu"] / e["msgs"],
        s and 1e6 * s["cpu"] / s["msgs"])
    add("2 outbound", "library allocations/message (own hooks)",
        e and e["epode_allocs_per_msg"], s and s["lib_allocs_per_msg"])
    add("2 outbound", "all mallocs/message (process)", e and e["mallocs_per_msg"],
        s and s["mallocs_per_msg"])
    add("2 outbound", "server CPU % while receiving", e and e["server_cpu_pct"],
        s and s["server_cpu_pct"])


def login_path(build, prog, tls):
    srv = Server(build, "--mode", "idle", "--tls", tls, "--scram", "--iter", "4096")
    px = Proxy(srv.port)
    r = client(build, prog, "login", "--port", px.port, "--count", LOGINS, "--tls", tls,
               "--cafile", CERT)
    turns = px.stop()
    srv.stop()
    if not r:
        return None, None
    ms = statistics.median(x["ms"] for x in r)
    return ms, (statistics.median(turns) if turns else None)


def login(build):
    log("login: %d logins per path, %d ms each way" % (LOGINS, DELAY_MS))
    e_direct = login_path(build, "bench_epode", "direct")
    e_start = login_path(build, "bench_epode", "starttls")
    s_start = login_path(build, "bench_strophe", "starttls")
    s_direct = login_path(build, "bench_strophe", "direct")
    log("  epode direct %s, epode starttls %s, libstrophe starttls %s, libstrophe direct %s"
        % (e_direct, e_start, s_start, s_direct))
    add("3 login", "round trips, epode direct TLS vs libstrophe STARTTLS", e_direct[1], s_start[1])
    add("3 login", "ms, epode direct TLS vs libstrophe STARTTLS", e_direct[0], s_start[0])
    add("3 login", "round trips, STARTTLS both", e_start[1], s_start[1])
    add("3 login", "ms, STARTTLS both", e_start[0], s_start[0])
    add("3 login", "round trips, direct TLS both", e_direct[1], s_direct[1])
    add("3 login", "ms, direct TLS both", e_direct[0], s_direct[0])


SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"
BUNDLE = os.path.join(os.environ.get("TMPDIR", "/tmp"), "epode-bench-bundle-%d.pem" % os.getpid())


def many(build):
    # (TLS mode, session counts, CA): the CA is the server's own certificate
    # as a CA file, or "system": OpenSSL's default store, which is what an
    # application that sets no CA file verifies against. The scripted
    # server's certificate is not in the system's store, so the default
    # store is pointed (SSL_CERT_FILE) at the system's bundle with that one
    # certificate appended: the clients load every system CA, as they would
    # for a real server.
    variants = [("none", SESSIONS, None), ("direct", SESSIONS, "file")]
    if os.path.exists(SYSTEM_CA):
        variants.append(("direct", SESSIONS[:1], "system"))
    else:
        notes.append("%s is missing (ca-certificates): the system CA store row was not run."
                     % SYSTEM_CA)
    for tls, counts, ca in variants:
        for n in counts:
            log("many: %d sessions, %s%s" % (n, "plain TCP" if tls == "none" else "direct TLS",
                                             ", system CA store" if ca == "system" else ""))
            res = {}
            for name, prog in (("epode", "bench_epode"), ("libstrophe", "bench_strophe")):
                srv = Server(build, "--mode", "idle", "--tls", tls)
                extra, env = (), None
                if ca == "file":
                    extra = ("--cafile", CERT)
                elif ca == "system":
                    with open(BUNDLE, "wb") as out:
                        for path in (SYSTEM_CA, CERT):
                            with open(path, "rb") as f:
                                out.write(f.read())
                    extra = ("--cafile", "system")
                    env = dict(os.environ, SSL_CERT_FILE=BUNDLE)
                r = client(build, prog, "many", "--port", srv.port, "--sessions", n, "--tls", tls,
                           *extra, env=env)
                srv.stop()
                res[name] = r[0] if r else None
                log("  %s: %s" % (name, res[name]))
            label = "4 many, %s × %s" % ("{:,}".format(n), "TCP" if tls == "none" else "TLS")
            if ca == "system":
                label += ", system CAs"
                try:
                    os.unlink(BUNDLE)
                except OSError:
                    pass

            def get(r, k):
                if r is None:
                    return None
                if "error" in r:
                    err = str(r["error"])
                    if err.startswith("select_fd_setsize"):
                        return "fails: select() FD_SETSIZE 1024"
                    return err
                if r.get("failed"):
                    return "%d of %d failed" % (r["failed"], n)
                return r[k]
            e, s = res["epode"], res["libstrophe"]
            add(label, "time to establish all (s)", get(e, "establish_s"), get(s, "establish_s"))
            add(label, "RSS KiB per session", get(e, "rss_kib_per_session"),
                get(s, "rss_kib_per_session"), 16.0 if tls == "none" else None)
            add(label, "CPU % while idle", get(e, "idle_cpu_pct"), get(s, "idle_cpu_pct"))


def transports(build, inbound_res):
    n = max(1000, N_MSGS // 4)
    log("transports: %d messages over WebSocket and BOSH" % n)
    srv = Server(build, "--mode", "blast", "--count", str(n), "--once", "--ws")
    r = client(build, "bench_epode", "inbound", "--url", "ws://127.0.0.1:%d/ws" % srv.port,
               "--count", n, "--port", 0)
    st = srv.stop()
    log("  ws: %s / %s" % (r, st))
    tcp = inbound_res.get("epode") if inbound_res else None
    ws = r[0]["msgs"] / r[0]["wall"] if r else None
    add("5 transports", "WebSocket inbound messages/s", ws, "not supported")
    if ws and tcp:
        notes.append("WebSocket inbound runs at %.0f %% of epode's TCP rate (%s messages)."
                     % (100 * ws / (tcp["msgs"] / tcp["wall"]), "{:,}".format(n)))
    srv = Server(build, "--mode", "blast", "--count", str(n), "--once", "--bosh")
    r = client(build, "bench_epode", "inbound", "--url", "http://127.0.0.1:%d/http-bind" % srv.port,
               "--count", n, "--port", 0, timeout=300)
    st = srv.stop()
    log("  bosh: %s / %s" % (r, st))
    if r:
        add("5 transports", "BOSH inbound messages/s", r[0]["msgs"] / r[0]["wall"],
            "not supported")
    else:
        add("5 transports", "BOSH inbound messages/s", "not available", "not supported")
        notes.append("BOSH: the epode client did not complete against the scripted server "
                     "(see the run's log); the row is marked not available.")


# ------------------------------------------------------------ report

def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True).stdout.strip()
    except Exception:
        return "?"


def machine():
    cpu = "?"
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                cpu = l.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": "%s CPUs (nproc), %s, Linux %s" % (os.cpu_count(), cpu, platform.release()),
        "epode": "%s (%s)" % (sh("git -C %s describe --always --dirty" % HERE), "RelWithDebInfo"),
        "libstrophe": sh("pkg-config --modversion libstrophe"),
        "expat": sh("pkg-config --modversion expat"),
        "openssl": sh("pkg-config --modversion openssl"),
        "compiler": sh("cc --version | head -1"),
        "scale": "BENCH_SCALE=%g: %s messages (median of %d runs), sessions %s" % (
            SCALE, "{:,}".format(N_MSGS), REPEAT,
            " and ".join("{:,}".format(s) for s in SESSIONS)),
    }


def table():
    head = ("scenario", "metric", "epode", "libstrophe", "ratio", "bound")
    w = [max(len(r[i]) for r in rows + [head]) for i in range(6)]
    line = lambda r: "| " + " | ".join(r[i].ljust(w[i]) for i in range(6)) + " |"
    out = [line(head), "|" + "|".join("-" * (x + 2) for x in w) + "|"]
    out += [line(r) for r in rows]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--only", default="inbound,inbound_tls,outbound,login,many,transports")
    a = ap.parse_args()
    only = a.only.split(",")
    m = machine()
    inbound_res = inbound(a.build) if "inbound" in only else None
    if "inbound_tls" in only:
        inbound_tls(a.build)
    if "outbound" in only:
        outbound(a.build)
    if "login" in only:
        login(a.build)
    if "many" in only:
        many(a.build)
    if "transports" in only:
        transports(a.build, inbound_res)
    t = table()
    hdr = ["# epode benchmark — %s" % m["date"], ""]
    hdr += ["- %s: %s" % (k, m[k]) for k in ("machine", "epode", "libstrophe", "expat", "openssl",
                                             "compiler", "scale")]
    hdr += ["- ratio = epode ÷ libstrophe (above 1 is better for rates, below 1 for costs);"
            " bound = expat with no-op callbacks over the same bytes in memory, or the target", ""]
    doc = "\n".join(hdr) + "\n" + t + "\n"
    if notes:
        doc += "\n" + "\n".join("- " + n for n in notes) + "\n"
    print(doc)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "latest.md"), "w") as f:
        f.write(doc)
    if os.path.exists(CERT):
        os.unlink(CERT)


if __name__ == "__main__":
    main()
