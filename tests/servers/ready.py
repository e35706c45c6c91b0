#!/usr/bin/python3
"""Waits until an XMPP server answers a client stream with </stream:features>.

    ready.py PORT DOMAIN TIMEOUT [--tls] [--pid PID] [--host HOST]

Opens a c2s stream to HOST (default 127.0.0.1) on PORT, sends a stream header
for DOMAIN and exits 0 as soon as the server's features are complete.
--tls wraps the socket in TLS first (direct TLS, XEP-0368; no certificate
check, readiness only). --pid: give up at once (exit 2) if that process is
gone, so a server that died during start-up is reported without waiting for
the whole TIMEOUT. Exits 1 on timeout. Standard library only.

A stream header is sent and the socket kept open until the features arrive:
a half-close (as `nc -q1` does) makes Prosody drop the stream first.
"""
import os
import socket
import ssl
import sys
import time


def usage():
    sys.stderr.write(__doc__)
    sys.exit(64)


def probe(host, port, domain, use_tls):
    header = ("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
              "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % domain).encode()
    with socket.create_connection((host, port), timeout=2) as raw:
        sock = raw
        if use_tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=domain)
        sock.sendall(header)
        buf = b""
        while b"</stream:features>" not in buf:
            data = sock.recv(4096)
            if not data:
                return False
            buf += data
        try:
            sock.sendall(b"</stream:stream>")
        except OSError:
            pass
        return True


def main(argv):
    pos, use_tls, pid, host = [], False, None, "127.0.0.1"
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--tls":
            use_tls = True
        elif a in ("--pid", "--host") and i + 1 < len(argv):
            if a == "--pid":
                pid = int(argv[i + 1])
            else:
                host = argv[i + 1]
            i += 1
        elif a.startswith("-"):
            usage()
        else:
            pos.append(a)
        i += 1
    if len(pos) != 3:
        usage()
    port, domain, timeout = int(pos[0]), pos[1], float(pos[2])
    deadline = time.monotonic() + timeout
    last = "no attempt"
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                sys.stderr.write("ready.py: server process %d exited during start-up\n" % pid)
                return 2
            except PermissionError:
                pass
        try:
            if probe(host, port, domain, use_tls):
                return 0
            last = "stream closed before </stream:features>"
        except (OSError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.03)
    sys.stderr.write("ready.py: %s:%d not ready after %.1f s (%s)\n" % (host, port, timeout, last))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
