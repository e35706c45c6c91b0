#!/usr/bin/python3
"""A scripted WebSocket XMPP endpoint (RFC 7395) for what a real server will
not do on demand: redirect with see-other-uri.

    fake_ws.py --redirect URL [--connections N] [--idle S]
    fake_ws.py --close-code CODE [--reason TEXT]

Listens on 127.0.0.1 (port printed as line 1 of stdout), and for each of up
to N connections (default 1): completes the HTTP upgrade (subprotocol xmpp),
reads the client's <open/>, answers with <open/> and
<close see-other-uri='URL'/>, then closes; with --close-code it instead ends
with a bare WebSocket close frame (no <close/>). Standard library only."""
import argparse
import base64
import hashlib
import socket
import struct
import sys

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def read_frame(sock):
    def exact(n):
        b = b""
        while len(b) < n:
            d = sock.recv(n - len(b))
            if not d:
                raise EOFError
            b += d
        return b
    h = exact(2)
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    mask = exact(4) if h[1] & 0x80 else b"\0\0\0\0"
    data = exact(n)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def frame(text):
    d = text.encode()
    if len(d) < 126:
        return bytes([0x81, len(d)]) + d
    return bytes([0x81, 126]) + struct.pack(">H", len(d)) + d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--redirect")
    ap.add_argument("--close-code", type=int)
    ap.add_argument("--reason", default="")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--idle", type=float, default=20)
    a = ap.parse_args()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    srv.settimeout(a.idle)
    print(srv.getsockname()[1], flush=True)
    for _ in range(a.connections):
        try:
            c, _ = srv.accept()
        except socket.timeout:
            return 1
        c.settimeout(a.idle)
        req = b""
        while b"\r\n\r\n" not in req:
            d = c.recv(4096)
            if not d:
                break
            req += d
        key = ""
        for line in req.decode("latin-1").split("\r\n"):
            if line.lower().startswith("sec-websocket-key:"):
                key = line.split(":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                   "Sec-WebSocket-Protocol: xmpp\r\n\r\n" % accept).encode())
        try:
            opened = read_frame(c).decode()
            sys.stderr.write("fake_ws: client sent %s\n" % opened)
            c.sendall(frame("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='localhost' "
                            "id='fake' version='1.0' xml:lang='en'/>"))
            if a.close_code:
                payload = struct.pack(">H", a.close_code) + a.reason.encode()
                c.sendall(bytes([0x88, len(payload)]) + payload)
            else:
                c.sendall(frame("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing' "
                                "see-other-uri='%s'/>" % a.redirect))
            c.settimeout(2)
            while c.recv(4096):
                pass
        except (EOFError, OSError):
            pass
        c.close()
    return 0


sys.exit(main())
