#!/usr/bin/python3
"""Writes the hand-made seed inputs of every fuzz target into
tests/fuzz/corpus/<target>/<sha1>. Idempotent: existing files are kept
(libFuzzer's own finds, merged by `make fuzz`, are named the same way).

    python3 tests/fuzz/make_seeds.py [TARGET...]

The session seeds replay tests/data/transcripts/*.txt as a server would
(every S:/E: line a turn); SASL seeds are complete, valid exchanges
(SCRAM proofs and the DIGEST-MD5 rspauth computed here), so the fuzzer
starts from the deep end of each mechanism."""
import base64
import hashlib
import hmac
import os
import re
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SEP = b"\x00\xff"


def put(target, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()
    path = os.path.join(d, name)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)


def unescape(s):
    return s.replace("\\n", "\n").replace("\\\\", "\\").encode("utf-8", "surrogateescape")


def fz_random(ctr, n):
    """fuzz_common.h's fz_random from counter `ctr`: (bytes, new ctr)."""
    out = bytes(((ctr + i) * 131 + 7) & 0xFF for i in range(n))
    return out, ctr + n


# ------------------------------------------------------------------ session
def transcripts():
    tdir = os.path.join(ROOT, "tests", "data", "transcripts")
    for name in sorted(os.listdir(tdir)):
        with open(os.path.join(tdir, name), encoding="utf-8", errors="surrogateescape") as f:
            yield name, f.read().splitlines()


def session_seeds():
    stream_all = []
    for name, lines in transcripts():
        framing, tls, plain = 0, 0, 0
        turns = []
        for ln in lines:
            if ln.startswith("config framing websocket"):
                framing = 1
            elif ln.startswith("config framing bosh"):
                framing = 2
            elif ln.startswith("config plaintext"):
                plain = 8
            elif ln.startswith("start tls"):
                tls = 4
            elif ln[:3] in ("S: ", "S+ ", "E: "):
                turns.append(unescape(ln[3:]))
        if not turns:
            continue
        body = SEP.join(turns)
        for chunk in (0, 7):
            put("fuzz_session", bytes([framing | tls | plain, chunk, 0]) + body)
        if framing == 0:
            stream_all.append(b"".join(turns))
    # The same conversations with tiny limits, traffic logging, channel
    # binding and a stanza queued before READY.
    for name, lines in transcripts():
        if name.startswith(("01_", "03_", "30_", "33_")):
            turns = [unescape(ln[3:]) for ln in lines if ln[:3] in ("S: ", "S+ ", "E: ")]
            fr = 1 if name.startswith("30") else 2 if name.startswith("33") else 0
            put("fuzz_session", bytes([fr | 8 | 16 | 32 | 128, 3, 8]) + SEP.join(turns))
            put("fuzz_session", bytes([fr | 4 | 8 | 64, 0, 0]) + SEP.join(turns))
    # Every mechanism offered alone, each allow-list.
    hdr = ("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
           "'http://etherx.jabber.org/streams' id='s1' from='example.org' version='1.0'>")
    for i, mech in enumerate(["", "ANONYMOUS", "EXTERNAL", "DIGEST-MD5", "OAUTHBEARER",
                              "SCRAM-SHA-1", "SCRAM-SHA-512-PLUS", "PLAIN"]):
        m = mech or "SCRAM-SHA-256"
        feats = ("<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
                 "<mechanism>%s</mechanism></mechanisms></stream:features>" % m)
        chal = ("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</challenge>"
                % base64.b64encode(b"r=abc,s=QSXCR+Q6sek8bf92,i=16").decode())
        succ = "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"
        put("fuzz_session", bytes([4 | 32, 0, i]) + SEP.join(
            x.encode() for x in (hdr + feats, chal, succ)))
    return stream_all


# ------------------------------------------------------------------ xml
def xml_seeds(streams):
    for s in streams:
        put("fuzz_xml", bytes([0, 0]) + s)
        put("fuzz_xml", bytes([8, 5]) + s)
    frags = [
        b"<message xmlns='jabber:client' to='a@b' type='chat'><body>hi &amp; &#x1F44B;</body></message>",
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.org' version='1.0'/>",
        b"<iq xmlns='jabber:client' type='result' id='x'><q xmlns='urn:x' xmlns:p='urn:p' p:a='1'/></iq>",
        b"<a><![CDATA[<not markup>]]></a><b/>",
        b"<a xml:lang='en'>text</a>",
    ]
    for f in frags:
        put("fuzz_xml", bytes([1, 0]) + f)
        put("fuzz_xml", bytes([1 | 4, 1]) + f + f + f)
    head = (b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            b"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>")
    hostile = [
        b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
        b"<!-- comment --><m/>",
        b"<?pi data?><m/>",
        b"<m>&lt;&gt;&amp;&apos;&quot;&#65;&#x42;&undefined;</m>",
        b"<m>" + b"<d>" * 70 + b"</d>" * 70 + b"</m>",
        b"<m " + b" ".join(b"a%d='v'" % i for i in range(70)) + b"/>",
        b"<m>caf\xc3 \xff\xfe</m>",
        b"<m>\xc0\xaf\xe0\x80\xaf\xf0\x80\x80\xaf</m>",
        b"<m>a\x00b</m>",
        b"<m a='never ending" + b"A" * 600,
        b"<p:m/>",
        b"text at stream level",
        b"</stream:stream>trailing",
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
    ]
    for h in hostile:
        put("fuzz_xml", bytes([0, 0]) + head + h)
        put("fuzz_xml", bytes([2, 3]) + head + h)
    put("fuzz_xml", bytes([0, 0]) + b"<?xml version='1.0' encoding='ISO-8859-1'?><s/>")
    put("fuzz_xml", bytes([0, 0]) + b"<?xml version='1.1'?><s/>")


# ------------------------------------------------------------------ sasl
MECHS = ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "SCRAM-SHA-1-PLUS",
         "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS", "DIGEST-MD5", "ANONYMOUS", "OAUTHBEARER",
         "EXTERNAL"]


def scram_exchange(idx, opts, plus):
    hname = {1: "sha1", 2: "sha256", 3: "sha512"}[(idx - 1) % 3 + 1]
    raw, _ = fz_random(1, 24)
    cnonce = base64.b64encode(raw).decode()
    authzid = "admin@example.org" if opts & 2 else None
    if plus:
        # TLS 1.2 (opts bit 0 clear), cb types unknown: tls-unique.
        gs2 = "p=tls-unique," + ("a=" + authzid.replace("=", "=3D").replace(",", "=2C")
                                 if authzid else "") + ","
        cbdata = gs2.encode() + bytes([0x11] * 12)
    else:
        # TLS is up and the server offered no -PLUS: "y" (RFC 5802 6).
        gs2 = "y," + ("a=" + authzid if authzid else "") + ","
        cbdata = gs2.encode()
    first_bare = "n=user,r=" + cnonce
    salt = b"saltysalt"
    server_first = "r=%sSERVER,s=%s,i=16" % (cnonce, base64.b64encode(salt).decode())
    final_wo = "c=%s,r=%sSERVER" % (base64.b64encode(cbdata).decode(), cnonce)
    auth = ",".join([first_bare, server_first, final_wo]).encode()
    salted = hashlib.pbkdf2_hmac(hname, b"pencil", salt, 16)
    server_key = hmac.new(salted, b"Server Key", hname).digest()
    v = base64.b64encode(hmac.new(server_key, auth, hname).digest()).decode()
    return server_first.encode(), ("v=" + v).encode()


def digest_exchange(opts):
    raw, _ = fz_random(1, 24)
    cnonce = base64.b64encode(raw).decode()
    nonce = "OA6MG9tEQGm2hh"
    chal = ('realm="example.org",nonce="%s",qop="auth",charset=utf-8,algorithm=md5-sess'
            % nonce).encode()
    h = lambda b: hashlib.md5(b).digest()
    hx = lambda b: hashlib.md5(b).hexdigest()
    a1 = h(b"user:example.org:pencil") + (":%s:%s" % (nonce, cnonce)).encode()
    if opts & 2:
        a1 += b":admin@example.org"
    a2 = b":xmpp/example.org"
    rsp = hx(("%s:%s:00000001:%s:auth:%s" % (hx(a1), nonce, cnonce, hx(a2))).encode())
    return chal, ("rspauth=" + rsp).encode()


def sasl_seeds():
    for opts in (0, 2, 8, 1):
        for idx in range(1, 7):
            sf, sv = scram_exchange(idx, opts, idx >= 4)
            put("fuzz_sasl", bytes([idx, opts]) + sf + SEP + b"S" + sv)
            put("fuzz_sasl", bytes([idx, opts]) + sf + SEP + sv + SEP + b"S")
        chal, rsp = digest_exchange(opts)
        put("fuzz_sasl", bytes([7, opts]) + chal + SEP + rsp + SEP + b"S")
        put("fuzz_sasl", bytes([7, opts]) + chal + SEP + b"S" + rsp)
    put("fuzz_sasl", bytes([0, 0]) + b"S")
    put("fuzz_sasl", bytes([0, 0]) + b"unexpected challenge")
    put("fuzz_sasl", bytes([8, 0]) + b"S")
    put("fuzz_sasl", bytes([9, 0]) + b'{"status":"invalid_token","scope":"example_scope",'
        b'"openid-configuration":"https://example.org/.well-known/openid-configuration"}'
        + SEP + b"S")
    put("fuzz_sasl", bytes([9, 0]) + b"S")
    put("fuzz_sasl", bytes([10, 0]) + b"S")
    put("fuzz_sasl", bytes([10, 2]) + b"" + SEP + b"S")
    put("fuzz_sasl", bytes([1, 0]) + b"r=x,s=QSXCR+Q6sek8bf92,i=4096" + SEP + b"e=other-error")
    put("fuzz_sasl", bytes([1, 64]) + b"m=ext,r=x")
    put("fuzz_sasl", bytes([7, 0]) + b'nonce="a",nonce="b",qop="auth-int",stale=true,maxbuf=0')


# ------------------------------------------------------------------ ws
def ws_frame(op, payload, fin=True, mask=None, force16=False):
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    if n < 126 and not force16:
        hdr = bytes([b0, (0x80 if mask else 0) | n])
    elif n < 65536:
        hdr = bytes([b0, (0x80 if mask else 0) | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, (0x80 if mask else 0) | 127]) + struct.pack(">Q", n)
    if mask:
        payload = bytes(c ^ mask[i % 4] for i, c in enumerate(payload))
        hdr += mask
    return hdr + payload


def ws_seeds():
    openel = (b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='example.org' "
              b"id='x' version='1.0'/>")
    frames = [
        ws_frame(1, openel),
        ws_frame(1, b"<mess", fin=False) + ws_frame(9, b"p") + ws_frame(0, b"age/>"),
        ws_frame(9, b"ping!") + ws_frame(10, b"pong"),
        ws_frame(8, struct.pack(">H", 1000) + b"bye"),
        ws_frame(8, b""),
        ws_frame(1, b"x" * 200, force16=True),
        ws_frame(2, b"\x00\x01binary"),
        ws_frame(1, b"caf\xc3\xa9 \xe2\x82"),
        ws_frame(1, b"masked", mask=b"\x01\x02\x03\x04"),
        bytes([0x81, 0x7f]) + struct.pack(">Q", 1 << 62),
        bytes([0xf1, 0x00]),
        ws_frame(8, struct.pack(">H", 1005)),
    ]
    for f in frames:
        put("fuzz_ws", bytes([1, 0]) + f)
        put("fuzz_ws", bytes([1 | 4 | 8, 3]) + ws_frame(1, openel) + ws_frame(1, b"<a/>") + f)
    put("fuzz_ws", bytes([1 | 2, 0]) + ws_frame(1, b"y" * 100))
    resps = [
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n",
        b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        b"HTTP/1.0 101\r\n" + b"X-Long: " + b"a" * 300 + b"\r\n\r\n",
        b"garbage\n\n",
    ]
    for r in resps:
        put("fuzz_ws", bytes([0, 0]) + r)
        put("fuzz_ws", bytes([0, 1]) + r)


# ------------------------------------------------------------------ jid
def jid_seeds():
    for j in ["alice@example.org", "alice@example.org/res", "example.org", "example.org/r/x",
              "a@EXAMPLE.Org.", "@example.org", "alice@", "alice@example.org/", "a\"b@x",
              "caf\u00e9@exampl\u00e9.org/\u65e5\u672c", "a@b@c", "[::1]", "a@[2001:db8::1]/r",
              "x" * 1024 + "@example.org", "a@" + "d" * 1100, "a@b/" + "r" * 1024,
              "a b@c", "a@b\x01", "a@..", "a@b..", "."]:
        put("fuzz_jid", j.encode("utf-8"))
    put("fuzz_jid", b"a@b/\xff\xfe")
    put("fuzz_jid", b"\xc0\xafa@b")


# ------------------------------------------------------------------ srv
def dns_name(n):
    if n == ".":
        return b"\x00"
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".")) + b"\x00"


def srv_rr(prio, weight, port, target):
    rdata = struct.pack(">HHH", prio, weight, port) + dns_name(target)
    return b"\xc0\x0c" + struct.pack(">HHIH", 33, 1, 3600, len(rdata)) + rdata


def a_rr(addr):
    return b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 3600, 4) + bytes(addr)


def aaaa_rr(addr16):
    return b"\xc0\x0c" + struct.pack(">HHIH", 28, 1, 3600, 16) + bytes(addr16)


def srv_seeds():
    v6 = [0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [1]
    built = lambda rcode, rrs: bytes([rcode << 4, len(rrs)]) + b"".join(rrs)
    addr_answers = [built(0, [a_rr([192, 0, 2, 10])]), built(0, [aaaa_rr(v6)]),
                    built(3, []), built(0, [a_rr([192, 0, 2, 11]), a_rr([192, 0, 2, 12])])]
    for mode in (0, 1, 2):
        srv1 = built(0, [srv_rr(5, 10, 5223, "xmpp.example.org"),
                         srv_rr(5, 0, 5223, "192.0.2.1")])
        srv2 = built(0, [srv_rr(10, 60, 5222, "a.example.org"),
                         srv_rr(10, 40, 5222, "b.example.org"),
                         srv_rr(20, 0, 5222, "2001:db8::2")])
        put("fuzz_srv", bytes([mode]) + SEP.join([srv1, srv2] + addr_answers * 3))
        put("fuzz_srv", bytes([mode]) + SEP.join([built(0, [srv_rr(0, 0, 0, ".")]),
                                                  built(3, [])] + addr_answers))
        put("fuzz_srv", bytes([mode]) + SEP.join([built(2, []), built(0, [])]))
        put("fuzz_srv", bytes([mode]) + SEP.join([b"\x01" + b"\x12\x34\x81\x80\x00\x01\x00\x05",
                                                  b"\x02" + built(0, [])]))
    many = [srv_rr(i % 3, i, 5222, "h%d.example.org" % i) for i in range(40)]
    put("fuzz_srv", bytes([1]) + built(0, many[:40]))


# ------------------------------------------------------------------ bosh
HTTPBIND = ("<body xmlns='http://jabber.org/protocol/httpbind' "
            "xmlns:stream='http://etherx.jabber.org/streams'")
CONDITIONS = ["bad-request", "host-gone", "host-unknown", "improper-addressing",
              "internal-server-error", "item-not-found", "other-request", "policy-violation",
              "remote-connection-failed", "remote-stream-error", "see-other-uri",
              "system-shutdown", "undefined-condition", "made-up-condition", ""]


def bosh_body(children="", sid="sid-1", attrs=""):
    head = HTTPBIND + (" sid='%s'" % sid if sid is not None else "") + attrs
    return (head + (">" + children + "</body>" if children else "/>")).encode()


def bosh_seeds():
    """fuzz_bosh: one response body per turn, as Prosody/ejabberd send them;
    the login gets to READY (the bind id is what fuzz_bosh's session uses)."""
    create = bosh_body(
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        "<mechanism>PLAIN</mechanism></mechanisms>"
        "</stream:features>",
        attrs=" wait='60' requests='2' hold='1' ver='1.6' polling='5' inactivity='60' "
              "maxpause='120' from='localhost' authid='a1' xmpp:version='1.0' "
              "xmlns:xmpp='urn:xmpp:xbosh'")
    login = [
        create,
        bosh_body("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>"),
        bosh_body("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                  "<sm xmlns='urn:xmpp:sm:3'/></stream:features>"),
        bosh_body("<iq xmlns='jabber:client' type='result' id='ep-8a0d901300000001'>"
                  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>alice@localhost/res</jid>"
                  "</bind></iq>"),
        bosh_body("<message xmlns='jabber:client' from='bob@localhost/x' type='chat'>"
                  "<body>hi &amp; bye</body></message>\n"
                  "<presence xmlns='jabber:client' from='bob@localhost/x'/>"
                  "<iq xmlns='jabber:client' type='get' id='p1' from='localhost'>"
                  "<ping xmlns='urn:xmpp:ping'/></iq>"),
        bosh_body(),
        bosh_body(sid=None),
    ]
    for flags in (4, 4 | 16 | 64, 4 | 128, 4 | 32, 4 | 2):
        put("fuzz_bosh", bytes([flags]) + SEP.join(login))
    put("fuzz_bosh", bytes([4]) + SEP.join(
        login[:-2] + [bosh_body("<message xmlns='jabber:client'><body>last</body></message>",
                                attrs=" type='terminate' condition='system-shutdown'")]))
    # Every condition: refusing the session, and ending it with a stanza.
    for c in CONDITIONS:
        extra = ""
        if c == "see-other-uri":
            extra = "<uri>https://other.example/http-bind</uri>"
        elif c == "remote-stream-error":
            extra = ("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                     "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new "
                     "connection</text></stream:error>")
        attrs = " type='terminate'" + (" condition='%s'" % c if c else "")
        put("fuzz_bosh", bytes([0]) + bosh_body(extra, attrs=attrs))
        put("fuzz_bosh", bytes([1]) + bosh_body(
            extra + "<message xmlns='jabber:client'><body>x</body></message>", attrs=attrs))
    # The transport's other ways out.
    big = bosh_body("<message xmlns='jabber:client'><body>" + "A" * 600 + "</body></message>")
    deep = bosh_body("<message xmlns='jabber:client'>" + "<a>" * 8 + "</a>" * 8 + "</message>")
    attrs = bosh_body("<message xmlns='jabber:client' " +
                      " ".join("a%d='v'" % i for i in range(8)) + "/>")
    hostile = [
        b"",
        b"   \r\n",
        b"not xml at all",
        b"<?xml version='1.0' encoding='utf-8'?>\n" + bosh_body(),
        b"<?xml version='1.0'",
        b"<?xml version='1.0' encoding='ISO-8859-1'?>" + bosh_body(),
        b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'/>",
        b"<body xmlns='urn:other' sid='sid-1'/>",
        b"<body sid='sid-1'/>",
        b"<x:body xmlns:x='http://jabber.org/protocol/httpbind' sid='sid-1'/>",
        bosh_body() + bosh_body(),
        bosh_body("<message xmlns='jabber:client'>")[:-7],
        bosh_body(sid="other"),
        bosh_body(sid=""),
        bosh_body(sid="has space"),
        bosh_body(sid="s" * 129),
        bosh_body(attrs=" type='error'"),
        bosh_body(attrs=" type='terminate' condition='bad\x01\x1fcond'"),
        big, deep, attrs,
        bosh_body("text only, no element"),
        bosh_body("<![CDATA[<message/>]]><message xmlns='jabber:client'/>"),
        bosh_body("<p:message xmlns:p='jabber:client'/>"),
        bosh_body("<message/>"),
        bosh_body("<!-- comment --><message xmlns='jabber:client'/>"),
        b"<!DOCTYPE body [<!ENTITY a 'b'>]>" + bosh_body("&a;"),
        HTTPBIND.encode() + b" sid='sid-1'><message xmlns='jabber:client'><body>caf\xc3 \xff"
        b"</body></message></body>",
        bosh_body("<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                  "</stream:error>"),
    ]
    for h in hostile:
        put("fuzz_bosh", bytes([1]) + h)
    put("fuzz_bosh", bytes([0]) + bosh_body(sid=None))
    put("fuzz_bosh", bytes([0]) + bosh_body(sid="sid\ttab"))
    put("fuzz_bosh", bytes([1 | 32]) + deep + SEP + attrs)  # over the tiny limits
    put("fuzz_bosh", bytes([1 | 2]) + big)  # over the small size cap
    put("fuzz_bosh", bytes([0]) + SEP.join([create, bosh_body(attrs=" type='error'"),
                                            bosh_body("<success xmlns='urn:ietf:params:xml:ns:"
                                                      "xmpp-sasl'/>")]))


def sm_record(key, value):
    if isinstance(value, str):
        value = value.encode()
    return b"%s %d\n%s\n" % (key.encode(), len(value), value)


def sm_state(stanzas, hin=2, hsent=3, hacked=1, jid="alice@localhost/res", sid="sm-1",
             framing="stream"):
    out = b"epode-sm-state 1\n"
    for k, v in (("account", "alice@localhost"), ("jid", jid), ("framing", framing),
                 ("id", sid), ("hin", str(hin)), ("hsent", str(hsent)),
                 ("hacked", str(hacked))):
        out += sm_record(k, v)
    for seq, tracked, stanza_id, data in stanzas:
        out += sm_record("seq", str(seq))
        if tracked:
            out += sm_record("track", "1")
        if stanza_id is not None:
            out += sm_record("sid", stanza_id)
        out += sm_record("data", data)
    return out


def sm_state_seeds():
    msg = "<message id='m%d' to='bob@localhost'><body>m%d &amp; more</body></message>"
    put("fuzz_sm_state", sm_state([]))
    put("fuzz_sm_state", sm_state([(2, True, "m2", msg % (2, 2)), (3, False, None, msg % (3, 3))]))
    put("fuzz_sm_state", sm_state([(4294967295, True, "w", msg % (9, 9)),
                                   (0, True, "x", msg % (0, 0))],
                                  hsent=0, hacked=4294967294))
    put("fuzz_sm_state", sm_state([(1, True, "a\nb", "<iq type='get' id='q'/>")], hsent=1,
                                  hacked=0, sid="id with spaces & 'quotes'"))
    put("fuzz_sm_state", sm_state([], framing="websocket"))
    put("fuzz_sm_state", sm_state([(2, True, "m2", msg % (2, 2))])[:-7])  # truncated


def main():
    """With target names (fuzz_bosh …), writes only their seeds."""
    only = set(sys.argv[1:])
    if not only or only & {"fuzz_session", "fuzz_xml"}:
        streams = session_seeds()
        if not only or "fuzz_xml" in only:
            xml_seeds(streams)
    for name, fn in (("fuzz_sasl", sasl_seeds), ("fuzz_ws", ws_seeds), ("fuzz_jid", jid_seeds),
                     ("fuzz_srv", srv_seeds), ("fuzz_bosh", bosh_seeds),
                     ("fuzz_sm_state", sm_state_seeds)):
        if not only or name in only:
            fn()
    for t in sorted(os.listdir(os.path.join(HERE, "corpus"))):
        print("%-14s %d files" % (t, len(os.listdir(os.path.join(HERE, "corpus", t)))))


if __name__ == "__main__":
    main()
