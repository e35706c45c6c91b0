#!/usr/bin/python3
"""A tiny OAuth 2.0 token validator for Prosody's mod_auth_oauthbearer.

    oauth_validator.py --cert CRT --key KEY --client-id ID --client-secret S
                       --port-file FILE [--log FILE] TOKEN [TOKEN...]

Serves HTTPS on 127.0.0.1 on a port the kernel picks, and writes that port
to --port-file (atomically: FILE.tmp, then rename) once it accepts
connections. mod_auth_oauthbearer checks a token with

    GET /validate/TOKEN   Authorization: Basic base64(ID:S)

(its oauth_url is "https://127.0.0.1:PORT/validate/{{password}}") and takes
any 2xx as "valid". This answers 200 for the TOKENs given, 401 for any other
token or wrong client credentials, 404 for any other path. Every request is
logged to --log as one line: "<status> <token-or-path>", so a test can see
that the server really asked. Standard library only; runs until SIGTERM.
"""
import argparse
import base64
import http.server
import os
import signal
import ssl
import sys
import urllib.parse


def main():
    ap = argparse.ArgumentParser(usage=__doc__)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log")
    ap.add_argument("tokens", nargs="+")
    args = ap.parse_args()

    good = set(args.tokens)
    basic = "Basic " + base64.b64encode(
        ("%s:%s" % (args.client_id, args.client_secret)).encode()).decode()
    log = open(args.log, "a", buffering=1) if args.log else None

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            path = urllib.parse.urlsplit(self.path).path
            if not path.startswith("/validate/"):
                status, what = 404, path
            else:
                token = urllib.parse.unquote(path[len("/validate/"):])
                what = token
                if self.headers.get("Authorization") != basic:
                    status, what = 401, token + " (wrong client credentials)"
                else:
                    status = 200 if token in good else 401
            body = b'{"active": true}' if status == 200 else b'{"active": false}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            if log:
                log.write("%d %s\n" % (status, what))

        def log_message(self, *a):  # quiet: the --log file is the record
            pass

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)

    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % httpd.server_address[1])
    os.rename(tmp, args.port_file)
    try:
        httpd.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass


if __name__ == "__main__":
    main()
