#!/usr/bin/python3
"""Scripted BOSH connection manager for tests/unit/test_bosh.c.

Usage: test_bosh_server.py LOG [--tls CERT KEY [--cafile CA]]

Prints "HTTP_PORT DNS_PORT" on stdout once listening (both on 127.0.0.1),
then serves until killed. Every request is written to LOG as one line:

  REQ <ms> <conn> <inflight> <rid> <path> <body with newlines removed>

plus event lines (DROP, SENT-OOO …). The URL path picks the behaviour:

  /echo            a hold=1 connection manager: each stanza with an id is
                   answered by <message id='ID-echo'/> (SASL <auth/> by
                   <success/>, a bind iq by its result); a held request is
                   answered as soon as the next one arrives (or after wait)
  /drop            as /echo, but the first request carrying stanzas is cut
                   off once without an answer
  /dropall         every request after session creation is cut off
  /ooo             answers the request that arrives second before the held
                   one (out of order)
  /term/COND       terminates with COND on the first request after creation
  /termcreate/COND terminates with COND at creation
  /notxml /wrongroot /wrongns /nosid /wrongsid   malformed answers
  /status/N        answers session creation with HTTP N
  /status503once   503 to the first request, then as /echo
  /big /bigchunked an oversized response after creation
  /poll            requests=1 hold=0: every request answered at once, empty

Query parameters override the session attributes: wait, polling, requests,
hold.

The DNS port answers A queries with 127.0.0.1 (NXDOMAIN for names starting
with "nx"), AAAA with no records.
"""
import os
import socket
import ssl
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse, parse_qs

NS = "http://jabber.org/protocol/httpbind"
LOCK = threading.Condition()
SESSIONS = {}
LOGF = None
COUNTER = [0]
STATE = {"status503": 0, "drop_done": set()}
START = time.monotonic()


def log(line):
    with LOCK:
        LOGF.write(line.replace("\n", " ") + "\n")
        LOGF.flush()


class Sess:
    def __init__(self, sid, scenario, params):
        self.sid = sid
        self.scenario = scenario
        self.params = params
        self.out = []
        self.held = None  # token of the request being held
        self.inflight = 0
        self.max_inflight = 0
        self.reqs = 0
        self.terminated = False


def features(inner):
    return ("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>%s"
            "</stream:features>" % inner)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def reply(self, body, status=200, chunked=False):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml; charset=utf-8")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = 4096
            for i in range(0, len(data), step):
                piece = data[i:i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        self.wfile.flush()

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def body(self, inner="", attrs=""):
        return "<body xmlns='%s'%s>%s</body>" % (NS, attrs, inner)

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n).decode("utf-8", "replace")
        url = urlparse(self.path)
        path = url.path
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        try:
            el = ET.fromstring(raw)
        except ET.ParseError:
            log("BADREQ %s" % raw)
            self.reply("", 400)
            return
        rid = el.get("rid", "?")
        sid = el.get("sid")
        ms = int((time.monotonic() - START) * 1000)
        with LOCK:
            COUNTER[0] += 1
            conn = id(self.connection) % 100000
            s = SESSIONS.get(sid) if sid else None
            if s:
                s.inflight += 1
                s.max_inflight = max(s.max_inflight, s.inflight)
                s.reqs += 1
            infl = s.inflight if s else 1
        log("REQ %d %d %d %s %s %s" % (ms, conn, infl, rid, path, raw))
        try:
            if sid is None:
                self.create(el, path, q)
            elif s is None:
                self.reply("", 404)
            else:
                self.session_request(s, el, raw)
        finally:
            if s:
                with LOCK:
                    s.inflight -= 1
                    LOCK.notify_all()

    # -------------------------------------------------------------- creation
    def create(self, el, path, q):
        if path.startswith("/status/"):
            self.reply("<html>no</html>", int(path.split("/")[2]))
            return
        if path == "/status503once" and STATE["status503"] == 0:
            STATE["status503"] = 1
            log("SENT-503")
            self.reply("busy", 503)
            return
        if path == "/notxml":
            self.reply("this is not XML at all")
            return
        if path == "/wrongroot":
            self.reply("<html xmlns='http://www.w3.org/1999/xhtml'><p>hi</p></html>")
            return
        if path == "/wrongns":
            self.reply("<body xmlns='urn:wrong' sid='x'/>")
            return
        if path.startswith("/termcreate/"):
            cond = path.split("/")[2]
            self.reply(self.body("", " type='terminate' condition='%s'" % cond))
            return
        with LOCK:
            sid = "sid-%d" % (len(SESSIONS) + 1)
            poll = path == "/poll"
            params = {
                "wait": q.get("wait", "2"),
                "polling": q.get("polling", "1" if poll else "5"),
                "requests": q.get("requests", "1" if poll else "2"),
                "hold": q.get("hold", "0" if poll else "1"),
            }
            SESSIONS[sid] = Sess(sid, path, params)
        extra = ""
        try:
            cert = self.connection.getpeercert()
        except AttributeError:
            cert = None
        if cert:
            cn = [v for rdn in cert.get("subject", ()) for (k, v) in rdn if k == "commonName"]
            extra = "<client-cert xmlns='urn:test' cn='%s'/>" % (cn[0] if cn else "?")
        sidattr = "" if path == "/nosid" else " sid='%s'" % sid
        attrs = (" xmlns:xmpp='urn:xmpp:xbosh'%s wait='%s' requests='%s' hold='%s'"
                 " polling='%s' inactivity='60' maxpause='120' ver='1.11' from='localhost'"
                 " authid='a1' xmpp:version='1.0'" % (
                     sidattr, params["wait"], params["requests"], params["hold"],
                     params["polling"]))
        inner = features("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                         "<mechanism>PLAIN</mechanism></mechanisms>") + extra
        self.reply(self.body(inner, attrs))

    # -------------------------------------------------------------- session
    def session_request(self, s, el, raw):
        sc = s.scenario
        kids = list(el)
        if sc == "/dropall":
            log("DROP %s" % el.get("rid"))
            self.drop()
            return
        if sc == "/drop" and kids:
            with LOCK:
                first = el.get("rid") not in STATE["drop_done"]
                STATE["drop_done"].add(el.get("rid"))
            if first:
                log("DROP %s" % el.get("rid"))
                self.drop()
                return
        if sc.startswith("/term/"):
            cond = sc.split("/")[2]
            inner = ""
            if cond == "remote-stream-error":
                inner = ("<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
                         "<conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                         "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new"
                         " connection</text></stream:error>")
            elif cond == "see-other-uri":
                inner = "<uri>https://other.example/bosh</uri>"
            self.reply(self.body(inner, " type='terminate' condition='%s'" % cond))
            return
        if sc == "/wrongsid":
            self.reply(self.body("", " sid='not-yours'"))
            return
        if sc == "/big" or sc == "/bigchunked":
            pad = "<message xmlns='jabber:client'><body>%s</body></message>" % ("x" * 1000)
            self.reply(self.body(pad * 100), chunked=(sc == "/bigchunked"))
            return
        if sc == "/poll":
            self.reply(self.body())
            return
        if sc == "/ooo" and kids:
            # Answer this (later) request first; the held one after it.
            with LOCK:
                s.out_first = "<message xmlns='jabber:client' id='first'/>"
            self.reply(self.body("<message xmlns='jabber:client' id='second'/>"))
            log("SENT-OOO second rid=%s" % el.get("rid"))
            time.sleep(0.3)
            with LOCK:
                s.release_first = True
                LOCK.notify_all()
            return
        self.echo(s, el, kids)

    def echo(self, s, el, kids):
        restart = el.get("{urn:xmpp:xbosh}restart") == "true"
        terminate = el.get("type") == "terminate"
        with LOCK:
            for k in kids:
                s.out.extend(answer(k))
            if restart:
                s.out.append(features("<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"))
            if terminate:
                s.terminated = True
            # hold=1: the request already held is answered now.
            token = object()
            s.held = token
            LOCK.notify_all()
        if terminate:
            log("TERMINATE %s" % el.get("rid"))
            self.reply(self.body("", " type='terminate'"))
            return
        deadline = time.monotonic() + float(s.params["wait"])
        with LOCK:
            while True:
                if s.scenario == "/ooo" and getattr(s, "release_first", False):
                    s.release_first = False
                    out = [s.out_first]
                    break
                if s.scenario != "/ooo" and (s.out or s.held is not token or s.terminated):
                    out, s.out = s.out, []
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    out, s.out = s.out, []
                    break
                LOCK.wait(left)
            if s.held is token:
                s.held = None
        self.reply(self.body("".join(out)))


def answer(k):
    """Just enough of an XMPP server for a real session: SASL succeeds,
    binding returns user@localhost/bosh, stanzas with an id are echoed."""
    tag, kid = k.tag, k.get("id")
    if tag == "{urn:ietf:params:xml:ns:xmpp-sasl}auth":
        return ["<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"]
    if tag == "{jabber:client}iq" and k.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None:
        return ["<iq xmlns='jabber:client' type='result' id='%s'><bind xmlns='urn:ietf:params:"
                "xml:ns:xmpp-bind'><jid>user@localhost/bosh</jid></bind></iq>" % kid]
    if kid:
        return ["<message xmlns='jabber:client' from='echo' id='%s-echo'/>" % kid]
    return []


def dns_server(sock):
    while True:
        try:
            data, addr = sock.recvfrom(2048)
        except OSError:
            return
        if len(data) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", data[:6])
        i, labels = 12, []
        while i < len(data) and data[i] != 0:
            ln = data[i]
            labels.append(data[i + 1:i + 1 + ln].decode("ascii", "replace"))
            i += 1 + ln
        qend = i + 5
        qtype = struct.unpack("!H", data[i + 1:i + 3])[0]
        question = data[12:qend]
        name = ".".join(labels)
        rcode, answers = 0, b""
        if name.startswith("nx"):
            rcode = 3
        elif qtype == 1:
            answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
        an = 1 if answers else 0
        hdr = struct.pack("!HHHHHH", qid, 0x8180 | rcode, 1, an, 0, 0)
        sock.sendto(hdr + question + answers, addr)
        log("DNS %s type=%d" % (name, qtype))


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # Clients that hang up (failed TLS verification, tests ending) are
        # expected; note them in the log rather than on stderr.
        log("EXC %s" % (sys.exc_info()[1],))


def main():
    global LOGF
    LOGF = open(sys.argv[1], "a")
    args = sys.argv[2:]
    httpd = Server(("127.0.0.1", 0), Handler)
    if args and args[0] == "--tls":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args[1], args[2])
        if len(args) > 4 and args[3] == "--cafile":
            ctx.load_verify_locations(args[4])
            ctx.verify_mode = ssl.CERT_OPTIONAL
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dns.bind(("127.0.0.1", 0))
    threading.Thread(target=dns_server, args=(dns,), daemon=True).start()
    sys.stdout.write("%d %d\n" % (httpd.server_address[1], dns.getsockname()[1]))
    sys.stdout.flush()
    httpd.serve_forever()


if __name__ == "__main__":
    main()
