#!/usr/bin/python3
"""A scripted fake XMPP server for what a real server will not do.

    fake_server.py --port 0 --scenario NAME [--host 127.0.0.1]
                   [--cert PEM --key PEM] [--log FILE] [--list]

Prints the port it listens on as line 1 of stdout, accepts ONE connection,
plays the scenario and exits (0 when the scenario ran to the end, 1 on
error). It never waits more than --idle seconds (default 20) for anything,
so it cannot hang a test.

A scenario is data (SCENARIOS below): how far to negotiate with the client
("stage"), then what to send ("payload"), then what to do ("after").
Stages:
  header    answer the client's stream header with a header of our own and
            nothing else, then send the payload (it may be a stream error)
  raw       send the payload INSTEAD of our stream header (DOCTYPE, bombs)
  silent    read whatever the client sends, answer nothing
  starttls  offer only STARTTLS (required), answer <starttls/> with
            <proceed/>, then send the payload instead of a TLS handshake
  tls       TLS from the first byte (direct TLS) with --cert/--key, then
            behave like "ready" (for certificate tests)
  auth      offer SASL PLAIN (no STARTTLS), answer <auth/> with the payload
  xfoo      offer the joke mechanism X-FOO of examples/custom_mechanism.c
            (and PLAIN): expect "foo:PASSWORD", challenge "bar?", expect
            "baz", then <success/> with the payload as its data, bind
  ready     offer SASL PLAIN (no STARTTLS), accept any <auth/> with
            <success/>, restart, offer bind, answer the bind request with a
            JID, wait for the client's first stanza (or 0.3 s), then send the
            payload
  features  answer the client's stream header with our header followed by the
            payload (usually a <stream:features/> of our making), then hold
  starttls-tls  offer STARTTLS, answer <proceed/>, run a real TLS handshake
            with --cert/--key, then behave like "ready"
After: "close" (shutdown and close the socket), "hold" (keep reading until
the client closes or --idle passes), "end" (send </stream:stream>, then wait
for the client's and close).
A payload may also be a function of the Peer: it then does the sending
itself (to stream 100 MB without building it, or to answer every restart)
and returns whether it got to the end of its script.
READY_FEATURES names scenarios whose "ready" negotiation offers other SASL
features than PLAIN alone.
Standard library only; run it with /usr/bin/python3.
"""
import argparse
import re
import socket
import ssl
import sys
import time

NS_STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BOUND_JID = "tester@localhost/fake"

HEADER = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
          "xmlns:stream='%s' id='fake-%%d' from='localhost' version='1.0' "
          "xml:lang='en'>" % NS_STREAMS)
FEATURES_PLAIN = ("<stream:features><mechanisms xmlns='%s'><mechanism>PLAIN</mechanism>"
                  "</mechanisms></stream:features>" % SASL)
FEATURES_STARTTLS = ("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
                     "<required/></starttls></stream:features>")
FEATURES_BIND = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 "</stream:features>")


def stream_error(cond, text):
    return ("<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
            "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>%s</text></stream:error>"
            "</stream:stream>" % (cond, text)).encode()


def message(body_xml, frm="eve@localhost/x"):
    return ("<message from='%s' to='%s' type='chat' id='fake-m1'><body>%s</body></message>"
            % (frm, BOUND_JID, body_xml)).encode("utf-8")


BILLION_LAUGHS = (b"<?xml version='1.0'?>\n<!DOCTYPE lolz [\n<!ENTITY lol 'lol'>\n"
                  + b"".join(b"<!ENTITY lol%d '%s'>\n" % (i, (b"&lol%d;" % (i - 1) if i > 1
                                                              else b"&lol;") * 10)
                             for i in range(1, 10))
                  + b"]>\n<stream:stream xmlns='jabber:client' xmlns:stream='"
                  + NS_STREAMS.encode() + b"' from='localhost' version='1.0'>&lol9;")

# name: (stage, payload, after, description)
SCENARIOS = {
    # A well-behaved server: one message, then a clean close. Proves the
    # harness itself works, so the hostile scenarios fail for their reason.
    "message": ("ready", message("hello from the fake server"), "end",
                "one chat message, then </stream:stream>"),
    # Character references for CR and tab, quotes, a backslash, raw UTF-8 and
    # an astral character reference: what the two output formats must escape
    # (real servers may normalise a CR away, so only a fake can send it).
    "escapes": ("ready", message("q\"uote\\back&#13;&#10;tab&#9;&lt;&amp;&gt; \u00e9\u65e5 "
                                 "&#x1F44B; &apos;end&apos;"), "end",
                "one message whose body needs escaping in both output formats"),
    "malformed": ("ready", b"<message from='eve@localhost/x'><body>hi</bod></message>", "hold",
                  "mismatched end tag after the session is ready"),
    "doctype": ("raw", b"<?xml version='1.0'?><!DOCTYPE stream [<!ELEMENT stream ANY>]>"
                b"<stream:stream xmlns='jabber:client' xmlns:stream='" + NS_STREAMS.encode()
                + b"' from='localhost' version='1.0'>" + FEATURES_PLAIN.encode(), "hold",
                "a DOCTYPE before the stream header"),
    "entity-bomb": ("raw", BILLION_LAUGHS, "hold", "billion-laughs entity expansion"),
    "oversized": ("ready", None, "hold", "one 1.5 MiB message stanza (over the 1 MiB limit)"),
    "bad-utf8": ("ready", b"<message from='eve@localhost/x'><body>caf\xc3 \xff\xfe</body></message>",
                 "hold", "invalid UTF-8 inside a body"),
    "mid-stanza-close": ("ready", b"<message from='eve@localhost/x' type='chat'><body>half a st",
                         "close", "connection closed in the middle of a stanza"),
    "stream-error": ("header", stream_error("host-unknown", "fake: this server does not serve "
                                            "that domain"), "close",
                     "<stream:error><host-unknown/> right after the header"),
    "stream-error-ready": ("ready", stream_error("system-shutdown", "fake: going down"), "close",
                           "<stream:error><system-shutdown/> after the session is ready"),
    "sasl-failure": ("auth", ("<failure xmlns='%s'><not-authorized/><text xml:lang='en'>fake: "
                              "wrong password</text></failure>" % SASL).encode(), "hold",
                     "SASL <failure><not-authorized/> with a text"),
    "tls-garbage": ("starttls", b"this is not a TLS ServerHello\r\n" * 64, "close",
                    "<proceed/>, then plain-text garbage instead of a TLS handshake"),
    "tls": ("tls", message("hello over TLS"), "end",
            "direct TLS with --cert/--key, then one message"),
    "silent": ("silent", None, "hold", "accepts the connection and never answers"),
    "drop-after-message": ("ready", b"", "close",
                           "reads the client's first stanza, then drops the connection "
                           "without acknowledging or closing the stream"),
    "x-foo": ("xfoo", b"ok", "end", "the X-FOO exchange, the server proves itself"),
    "x-foo-imposter": ("xfoo", b"whatever", "hold",
                       "the X-FOO exchange, but the server cannot prove itself"),
}


def streamer(prefix, filler, total, suffix=b""):
    """A payload that sends `prefix`, then `filler` repeated up to `total`
    bytes in 64 KiB writes, then `suffix` — stopping as soon as the client
    closes. Never holds more than one chunk. Logs how much got out."""
    def send(p):
        chunk = filler * max(1, 65536 // len(filler))
        if not p.send(prefix):
            return False
        sent = len(prefix)
        p.sock.settimeout(p.idle)
        while sent < total:
            try:
                p.sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError, socket.timeout, OSError) as e:
                p.log("streamed %d bytes before the client stopped reading (%s)" % (sent, e))
                p.streamed = sent
                return True
            sent += len(chunk)
        p.log("streamed all %d bytes" % sent)
        p.streamed = sent
        return p.send(suffix)
    return send


def restart_storm(p):
    """After <success/>, answer every stream restart with another <success/>
    instead of the bind features: a client that restarts on each would loop
    forever. Up to 1000 rounds."""
    for i in range(1000):
        if not p.send(("<success xmlns='%s'/>" % SASL).encode()):
            return True
        if not p.recv_until(re.compile(rb"<(?:\w+:)?stream\b[^>]*>")):
            p.log("client stopped restarting after %d unexpected <success/>" % (i + 1))
            return True
        p.streams += 1
        if not p.send((HEADER % p.streams).encode()):
            return True
    return True


def mechanisms(names):
    return ("<stream:features><mechanisms xmlns='%s'>%s</mechanisms></stream:features>"
            % (SASL, "".join("<mechanism>%s</mechanism>" % n for n in names))).encode()


HOSTILE_HEADER = HEADER % 1
# 2000 made-up mechanisms (~70 KB, under the stanza limit), PLAIN last.
MANY_MECHS = ["X-HOSTILE-%05d" % i for i in range(2000)] + ["PLAIN"]
READY_FEATURES = {
    "mech-many": mechanisms(MANY_MECHS).decode(),
}

SCENARIOS.update({
    # --- issue 7 hostile-server suite (tests/integration/hostile.sh) -------------
    "deep-nesting": ("ready", b"<message from='eve@localhost/x'>" + b"<a>" * 100000, "hold",
                     "a stanza nested 100000 elements deep"),
    "huge-stanza": ("ready", streamer(b"<message from='eve@localhost/x' type='chat'><body>",
                                      b"A", 100 * 1024 * 1024, b"</body></message>"),
                    "hold", "a 100 MB message stanza, streamed"),
    "endless-attr": ("ready", streamer(b"<message from='eve@localhost/x' to='", b"A",
                                       100 * 1024 * 1024), "hold",
                     "an attribute value that never ends (100 MB without a quote)"),
    "overlong-utf8": ("ready", b"<message from='eve@localhost/x'><body>\xc0\xaf \xe0\x80\xaf"
                      b"</body></message>", "hold", "overlong UTF-8 encodings of '/'"),
    "surrogate-utf8": ("ready", b"<message from='eve@localhost/x'><body>\xed\xa0\x80</body>"
                       b"</message>", "hold", "a UTF-16 surrogate encoded as UTF-8"),
    "nul-byte": ("ready", b"<message from='eve@localhost/x'><body>a\x00b</body></message>",
                 "hold", "a NUL byte inside a body"),
    "nul-header": ("raw", b"<?xml version='1.0'?>\x00" + HOSTILE_HEADER.encode(), "hold",
                   "a NUL byte before the stream header"),
    "header-storm": ("header", HOSTILE_HEADER.split("?>", 1)[1].encode() * 20000, "hold",
                     "20000 stream headers inside the stream (nested stream elements)"),
    "decl-storm": ("header", HOSTILE_HEADER.encode() * 20000, "hold",
                   "20000 XML declarations and stream headers inside the stream"),
    "restart-storm": ("auth", restart_storm, "hold",
                      "<success/>, then another <success/> after every stream restart"),
    "early-success": ("header", ("<success xmlns='%s'/>" % SASL).encode() + FEATURES_PLAIN.encode(),
                      "hold", "SASL <success/> before the features, before any <auth/>"),
    "stanza-first": ("raw", b"<message from='eve@localhost/x'><body>hi</body></message>"
                     + HOSTILE_HEADER.encode(), "hold",
                     "a stanza before the stream header"),
    "downgrade": ("features", mechanisms(["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]), "hold",
                  "STARTTLS stripped: SASL offered over the unencrypted stream"),
    "mech-empty": ("features", mechanisms([]), "hold", "an empty SASL mechanism list"),
    "mech-enormous": ("features", mechanisms(["X-HOSTILE-%07d" % i for i in range(100000)]),
                      "hold", "a 3.4 MB SASL mechanism list (over the stanza limit)"),
    "mech-many": ("ready", message("logged in past 2000 mechanisms"), "end",
                  "2001 SASL mechanisms (70 KB), PLAIN last"),
    "mech-long-name": ("features", mechanisms(["X-" + "N" * 100000]), "hold",
                       "one SASL mechanism name of 100 KB"),
    "starttls-cert": ("starttls-tls", message("hello after STARTTLS"), "end",
                      "STARTTLS with --cert/--key (a certificate for another domain fails)"),
})


class Peer:
    def __init__(self, sock, idle, log):
        self.sock = sock
        self.idle = idle
        self.buf = b""
        self.log = log
        self.streams = 0
        self.streamed = 0

    def send(self, data):
        self.log("S: %r" % data[:300])
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError) as e:
            self.log("send: %s" % e)
            return False
        return True

    def recv_until(self, pattern):
        """Reads until `pattern` (a compiled bytes regex) matches the buffer;
        returns the match and drops the buffer up to its end. None on EOF/idle."""
        deadline = time.monotonic() + self.idle
        while True:
            m = pattern.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = deadline - time.monotonic()
            if left <= 0:
                self.log("timed out waiting for %r" % pattern.pattern)
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except (ConnectionResetError, ssl.SSLError, OSError) as e:
                self.log("recv: %s" % e)
                return None
            if not data:
                self.log("client closed")
                return None
            self.log("C: %r" % data[:300])
            self.buf += data

    def open_stream(self, features):
        if not self.recv_until(re.compile(rb"<(?:\w+:)?stream\b[^>]*>")):
            return False
        self.streams += 1
        return self.send((HEADER % self.streams + features).encode())

    def hold(self):
        self.recv_until(re.compile(rb"</(?:\w+:)?stream>"))


def negotiate_ready(p, features=FEATURES_PLAIN):
    if not p.open_stream(features):
        return False
    if not p.recv_until(re.compile(rb"<auth\b[^>]*?(?:/>|>.*?</auth>)", re.S)):
        return False
    if not p.send(("<success xmlns='%s'/>" % SASL).encode()):
        return False
    if not p.open_stream(FEATURES_BIND):
        return False
    m = p.recv_until(re.compile(rb"<iq\b([^>]*)>.*?</iq>", re.S))
    if not m:
        return False
    idm = re.search(rb"\bid=(['\"])(.*?)\1", m.group(1))
    iq_id = idm.group(2).decode() if idm else "bind"
    if not p.send(("<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   "<jid>%s</jid></bind></iq>" % (iq_id, BOUND_JID)).encode()):
        return False
    # Let the client send its first stanza (presence, a message) so the
    # payload arrives in the READY state, not racing with bind.
    saved = p.idle
    p.idle = 0.3
    p.recv_until(re.compile(rb"<(?:presence|message|iq)\b[^>]*?(?:/>|>)"))
    p.idle = saved
    return True


def negotiate_xfoo(p, proof):
    import base64
    if not p.open_stream("<stream:features><mechanisms xmlns='%s'><mechanism>PLAIN</mechanism>"
                         "<mechanism>X-FOO</mechanism></mechanisms></stream:features>" % SASL):
        return False
    m = p.recv_until(re.compile(rb"<auth\b([^>]*)>(.*?)</auth>", re.S))
    if not m:
        return False
    hello = base64.b64decode(m.group(2))
    if b"X-FOO" not in m.group(1) or not hello.startswith(b"foo:") or len(hello) < 5:
        p.send(("<failure xmlns='%s'><invalid-mechanism/><text>fake: expected X-FOO with "
                "foo:PASSWORD</text></failure>" % SASL).encode())
        return False
    p.send(("<challenge xmlns='%s'>%s</challenge>"
            % (SASL, base64.b64encode(b"bar?").decode())).encode())
    m = p.recv_until(re.compile(rb"<response\b[^>]*>(.*?)</response>", re.S))
    if not m or base64.b64decode(m.group(1)) != b"baz":
        p.send(("<failure xmlns='%s'><not-authorized/></failure>" % SASL).encode())
        return False
    p.send(("<success xmlns='%s'>%s</success>"
            % (SASL, base64.b64encode(proof).decode())).encode())
    if proof != b"ok":
        return True  # the client must refuse us now
    if not p.open_stream(FEATURES_BIND):
        return False
    m = p.recv_until(re.compile(rb"<iq\b([^>]*)>.*?</iq>", re.S))
    if not m:
        return False
    idm = re.search(rb"\bid=(['\"])(.*?)\1", m.group(1))
    return p.send(("<iq type='result' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                   "<jid>%s</jid></bind></iq>" % (idm.group(2).decode() if idm else "bind",
                                                  BOUND_JID)).encode())


def play(conn, scenario, args, log):
    stage, payload, after, _ = SCENARIOS[scenario]
    if scenario == "oversized":
        payload = message("A" * (1536 * 1024))
    p = Peer(conn, args.idle, log)
    send_payload = (lambda: payload(p)) if callable(payload) else (lambda: p.send(payload))
    if stage == "starttls-tls":
        if not (p.open_stream(FEATURES_STARTTLS)
                and p.recv_until(re.compile(rb"<starttls\b[^>]*?(?:/>|>\s*</starttls>)"))
                and p.send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")):
            return False
        if p.buf:
            log("client sent %r after <starttls/>" % p.buf[:100])
            return False
        stage = "tls"
    if stage == "tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["xmpp-client"])
        conn.settimeout(args.idle)
        try:
            p.sock = ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            # A client that rejects our certificate ends up here: expected.
            log("TLS handshake ended: %s" % e)
            return True
        stage = "ready"

    if stage == "raw":
        if not p.recv_until(re.compile(rb"<(?:\w+:)?stream\b[^>]*>")):
            return False
        ok = send_payload()
    elif stage == "header":
        ok = p.open_stream("") and send_payload()
    elif stage == "features":
        ok = p.open_stream("") and send_payload()
    elif stage == "silent":
        ok = True
    elif stage == "starttls":
        ok = (p.open_stream(FEATURES_STARTTLS)
              and p.recv_until(re.compile(rb"<starttls\b[^>]*?(?:/>|>\s*</starttls>)")) is not None
              and p.send(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
              and send_payload())
    elif stage == "auth":
        ok = (p.open_stream(FEATURES_PLAIN)
              and p.recv_until(re.compile(rb"<auth\b[^>]*?(?:/>|>.*?</auth>)", re.S)) is not None
              and send_payload())
    elif stage == "ready":
        feats = READY_FEATURES.get(scenario, FEATURES_PLAIN)
        ok = negotiate_ready(p, feats) and send_payload()
    elif stage == "xfoo":
        ok = negotiate_xfoo(p, payload)
    else:
        raise AssertionError(stage)

    if after == "hold":
        p.hold()
    elif after == "end":
        if ok:
            p.send(b"</stream:stream>")
        p.hold()
    try:
        p.sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    p.sock.close()
    return ok


def main():
    ap = argparse.ArgumentParser(description="scripted fake XMPP server (one connection)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--scenario")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--idle", type=float, default=20.0,
                    help="longest wait for anything, seconds (default 20)")
    ap.add_argument("--log", help="append a transcript to this file")
    ap.add_argument("--list", action="store_true", help="list the scenarios")
    args = ap.parse_args()
    if args.list:
        for name, (stage, _, after, desc) in SCENARIOS.items():
            print("%-20s %-9s %-6s %s" % (name, stage, after, desc))
        return 0
    if args.scenario not in SCENARIOS:
        ap.error("--scenario must be one of: " + ", ".join(SCENARIOS))
    if SCENARIOS[args.scenario][0] in ("tls", "starttls-tls") and not (args.cert and args.key):
        ap.error("scenario %s needs --cert and --key" % args.scenario)

    logf = open(args.log, "a") if args.log else None

    def log(msg):
        if logf:
            logf.write("%.3f %s\n" % (time.monotonic(), msg))
            logf.flush()

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    srv.settimeout(args.idle)
    try:
        conn, addr = srv.accept()
    except socket.timeout:
        log("no client connected")
        return 1
    srv.close()
    log("client %s:%d, scenario %s" % (addr[0], addr[1], args.scenario))
    ok = play(conn, args.scenario, args, log)
    log("done, ok=%s" % ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
