#!/usr/bin/python3
"""A one-purpose HTTPS server for XEP-0156 tests: serves
/.well-known/host-meta (XRD) and /.well-known/host-meta.json with the links
given on the command line, on 127.0.0.1:PORT, until killed or --max-seconds.

    host_meta.py --port 443 --cert CRT --key KEY [--websocket URL] [--bosh URL]
                 [--only xrd|json] [--max-seconds 60]

Prints "ready" on stdout once it listens. Standard library only."""
import argparse
import http.server
import json
import ssl
import sys
import threading

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--cert", required=True)
ap.add_argument("--key", required=True)
ap.add_argument("--websocket")
ap.add_argument("--bosh")
ap.add_argument("--only", choices=["xrd", "json"])
ap.add_argument("--max-seconds", type=float, default=60)
args = ap.parse_args()

links = []
if args.websocket:
    links.append(("urn:xmpp:alt-connections:websocket", args.websocket))
if args.bosh:
    links.append(("urn:xmpp:alt-connections:xbosh", args.bosh))
XRD = ("<?xml version='1.0' encoding='utf-8'?>\n"
       "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n"
       + "".join("  <Link rel='%s' href='%s'/>\n" % l for l in links) + "</XRD>\n").encode()
JSON = json.dumps({"links": [{"rel": r, "href": h} for r, h in links]}).encode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ctype = None
        if self.path == "/.well-known/host-meta" and args.only != "json":
            body, ctype = XRD, "application/xrd+xml"
        elif self.path == "/.well-known/host-meta.json" and args.only != "xrd":
            body, ctype = JSON, "application/json"
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *a):
        sys.stderr.write("host_meta: " + fmt % a + "\n")


srv = http.server.HTTPServer(("127.0.0.1", args.port), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(args.cert, args.key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
threading.Timer(args.max_seconds, srv.shutdown).start()
print("ready", flush=True)
srv.serve_forever()
