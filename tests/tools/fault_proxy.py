#!/usr/bin/python3
"""A fault-injecting TCP proxy for loopback integration tests.

    fault_proxy.py --target HOST:PORT --control PATH [--listen-port N]
                   [--port-file FILE] [--seed N] [--verbose]
    fault_proxy.py --control PATH --send "COMMAND"

Proxy mode listens on 127.0.0.1:N (N = 0, the default, picks a free port).
Every accepted connection gets its own connection to HOST:PORT (connected
without blocking; if that fails the client is closed), and bytes flow both
ways. A half-close is passed on: EOF from one side becomes shutdown(SHUT_WR)
towards the other once everything before it was delivered; the connection is
closed when both directions are done. A reset or error on one side: what was
already read from it is still delivered to the other side, then that side is
closed too. Each direction buffers at most 1 MiB; a side is not read while
the buffer it fills is full, so the proxy's memory stays bounded whatever
the peers do.

When both sockets are ready, the proxy writes the port to FILE (a temporary
file renamed into place, so a reader never sees half of it; a stale FILE is
removed at start) and prints "PORT <n>" on stdout. Wait for either, then
connect. SIGTERM, SIGINT and the quit command exit cleanly (status 0) and
remove the control socket. --verbose logs each accept, cut and close on
stderr. Single-threaded (selectors), Python 3 standard library only.

Control channel: a UNIX stream socket at PATH. One command per line; each
gets one reply line, "ok ..." or "error <why>". Any number of control
clients may be connected at once. silence, stall and refuse are modes of the
whole proxy: they apply to connections accepted later too. A byte counts as
forwarded once the proxy has written it to the other side's socket.
--seed seeds random-cuts (default: a random seed, logged with --verbose).

  cut [rst]      close every open proxied connection now, both sides; reply
                 "ok cut <n>" (n connections cut). A plain cut sends FIN to
                 both peers after the bytes already forwarded (those are
                 always delivered) and discards what they still send (for
                 up to 2 s, then closes);
                 "cut rst" resets both sides (SO_LINGER 0) instead.
  cut-after N    each connection open now is cut (as by a plain cut) once N
                 more bytes have been forwarded, both directions counted. The
                 cut lands on exactly that byte: a chunk is forwarded only up
                 to it, so cuts fall in the middle of XML elements. Reply
                 "ok cut-after <n>" (n connections armed). "cut-after off"
                 disarms.
  random-cuts MIN MAX COUNT
                 arm COUNT cuts: every connection, open now or accepted later,
                 gets a threshold drawn from [MIN, MAX] (random.Random(seed)),
                 counted from the moment it was armed or accepted, both
                 directions; reaching it cuts the connection as cut-after
                 does. Once COUNT such cuts happened in total, the remaining
                 thresholds are dropped and nothing more is cut. COUNT 0
                 disarms. Replaces an earlier cut-after/random-cuts arming.
                 Reply "ok random-cuts <COUNT>".
  silence on|off while on, nothing is forwarded either way and nothing is
                 closed: both sides are still read and the bytes discarded (a
                 dead path, a silent peer). Bytes read but not yet forwarded
                 when it is turned on are discarded too, and an EOF seen while
                 silent is passed on only after "off". "off" forwards new data
                 again.
  stall on|off   while on, clients are not read (client -> server), so their
                 kernel buffers fill and their writes block (a peer that
                 stopped reading); server -> client still flows. "off"
                 resumes; nothing is lost.
  refuse on|off  while on, newly accepted connections are closed at once (a
                 server that is down); open ones are not touched.
  stats          "ok conns=<accepted total> open=<open now> cuts=<cuts total>
                 up=<bytes forwarded client->server>
                 down=<bytes forwarded server->client>". conns counts refused
                 connections too; bytes discarded by silence are not
                 forwarded.
  ping           "ok pong".
  quit           reply "ok quit", close everything and exit 0.

Client mode (--send) connects to PATH, sends one command, prints the reply,
and exits 0 if it began with "ok", 1 otherwise (also when the proxy cannot
be reached, with "error <why>" printed), so shell tests need no socat or nc.

Example (bash; the server listens on 5222):

    PROXY=$SRC/tests/tools/fault_proxy.py
    python3 "$PROXY" --target 127.0.0.1:5222 --control "$WORK/fp.sock" \\
        --port-file "$WORK/fp.port" --seed 42 --verbose 2>"$WORK/fp.log" &
    while [ ! -s "$WORK/fp.port" ]; do sleep 0.05; done
    PROXY_PORT=$(cat "$WORK/fp.port")          # clients connect here
    python3 "$PROXY" --control "$WORK/fp.sock" --send "random-cuts 200 5000 10"
    python3 "$PROXY" --control "$WORK/fp.sock" --send stats
    # ok conns=3 open=1 cuts=2 up=10422 down=9817
    python3 "$PROXY" --control "$WORK/fp.sock" --send quit
"""
import argparse
import errno
import os
import random
import selectors
import signal
import socket
import stat
import struct
import sys
import time
import traceback

BUF_CAP = 1 << 20      # bytes buffered per direction and connection
CHUNK = 1 << 16        # largest single recv
LINGER_SECONDS = 2.0   # how long a plainly cut socket is drained before close
CTL_LINE_MAX = 4096    # longest control line
CTL_OUT_MAX = 1 << 16  # unread replies kept for one control client
READ = selectors.EVENT_READ
WRITE = selectors.EVENT_WRITE

VERBOSE = False


def log(msg):
    if VERBOSE:
        try:
            sys.stderr.write("fault_proxy: %s\n" % msg)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class Stop(Exception):
    """Raised (also from signal handlers) to leave the loop and clean up."""


def close_quietly(sock, rst=False):
    if sock is None:
        return
    if rst:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    try:
        sock.close()
    except OSError:
        pass


class Pipe:
    """One direction: bytes read from one socket, waiting to be written to
    the other. eof: nothing more will come from the source. done: nothing
    more goes to the destination (shut down for writing, or gone)."""

    __slots__ = ("name", "buf", "eof", "done")

    def __init__(self, name):
        self.name = name
        self.buf = bytearray()
        self.eof = False
        self.done = False


class Conn:
    def __init__(self, proxy, cid, client, peer):
        self.p = proxy
        self.id = cid
        self.peer = peer
        self.client = client
        self.server = None
        self.connecting = True
        self.up = Pipe("up")        # client -> server
        self.down = Pipe("down")    # server -> client
        self.budget = None          # bytes left before a cut, or None
        self.budget_random = False  # the budget came from random-cuts
        self.forwarded = 0
        self.closed = False
        self.again = False
        self.masks = {}
        self.cbs = {}

    # -- selector bookkeeping ---------------------------------------------
    def _set(self, sock, mask):
        if sock is None:
            return
        old = self.masks.get(sock, 0)
        if old == mask:
            return
        sel = self.p.sel
        if old == 0:
            cb = self.cbs.get(sock)
            if cb is None:
                cb = self.cbs[sock] = (lambda m, s=sock: self.on_event(s, m))
            sel.register(sock, mask, cb)
        elif mask == 0:
            sel.unregister(sock)
        else:
            sel.modify(sock, mask, self.cbs[sock])
        self.masks[sock] = mask

    def _forget(self, sock):
        """Unregisters sock; the caller closes or hands it on."""
        if sock is None:
            return
        if self.masks.get(sock, 0):
            self.p.sel.unregister(sock)
        self.masks.pop(sock, None)
        self.cbs.pop(sock, None)

    def update(self):
        if self.closed:
            return
        p = self.p
        cm = 0
        sm = 0
        up, down = self.up, self.down
        if self.client is not None:
            if (not up.eof and not up.done and not p.stall
                    and (p.silence or len(up.buf) < BUF_CAP)):
                cm |= READ
            if down.buf and not down.done and not p.silence:
                cm |= WRITE
        if self.server is not None:
            if self.connecting:
                sm = WRITE
            else:
                if not down.eof and not down.done and (p.silence or len(down.buf) < BUF_CAP):
                    sm |= READ
                if up.buf and not up.done and not p.silence:
                    sm |= WRITE
        self._set(self.client, cm)
        self._set(self.server, sm)

    # -- connect ----------------------------------------------------------
    def start(self):
        """Starts the upstream connect; False if it failed at once."""
        family, addr = self.p.target_addr
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            log("#%d upstream socket: %s" % (self.id, e))
            return False
        s.setblocking(False)
        self.server = s
        rc = s.connect_ex(addr)
        if rc in (0, errno.EISCONN):
            self._connected()
        elif rc not in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY, errno.EINTR):
            log("#%d upstream connect failed: %s" % (self.id, os.strerror(rc)))
            return False
        return True

    def _connected(self):
        self.connecting = False
        try:
            self.server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        log("#%d upstream connected" % self.id)

    # -- events -----------------------------------------------------------
    def on_event(self, sock, mask):
        # A bug here must not take every other connection down with the
        # proxy: report it loudly (stderr, always) and drop this connection.
        try:
            self._on_event(sock, mask)
        except Stop:
            raise
        except Exception:
            traceback.print_exc()
            self.close("internal error")

    def _on_event(self, sock, mask):
        if self.closed or (sock is not self.client and sock is not self.server):
            return
        if sock is self.server and self.connecting:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                log("#%d upstream connect failed: %s" % (self.id, os.strerror(err)))
                self.close("upstream connect failed")
                return
            self._connected()
        elif mask & READ:
            if sock is self.client:
                self._read(sock, self.up)
            else:
                self._read(sock, self.down)
        if not self.closed:
            self.pump()
        if not self.closed:
            self.update()

    def _read(self, sock, pipe):
        p = self.p
        n = CHUNK if p.silence else min(CHUNK, BUF_CAP - len(pipe.buf))
        if n <= 0:
            return
        try:
            data = sock.recv(n)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._side_failed(sock, e)
            return
        if not data:
            pipe.eof = True
            log("#%d EOF from %s" % (self.id, "client" if sock is self.client else "server"))
        elif p.silence:
            p.discarded += len(data)
        else:
            pipe.buf += data

    def _side_failed(self, sock, err):
        """sock is unusable: what it sent still goes to the other side, what
        was meant for it is dropped, and it is closed now."""
        if sock is self.client:
            from_it, to_it, name = self.up, self.down, "client"
            self.client = None
        else:
            from_it, to_it, name = self.down, self.up, "server"
            self.server = None
        log("#%d %s failed: %s" % (self.id, name, err))
        self.again = True
        from_it.eof = True
        to_it.buf.clear()
        to_it.eof = True
        to_it.done = True
        self._forget(sock)
        close_quietly(sock)

    def pump(self):
        """Writes what can be written without blocking, passes EOFs on, and
        cuts or closes the connection when its time has come. Runs again
        when a side failed meanwhile, since that may leave the other
        direction with only an EOF to pass on (no event would come for it)."""
        while True:
            self.again = False
            self._pump_once()
            if self.closed or not self.again:
                return

    def _pump_once(self):
        p = self.p
        if p.silence:
            return
        for pipe, dst in ((self.up, self.server), (self.down, self.client)):
            if self.closed:
                return
            if pipe.done or dst is None or (dst is self.server and self.connecting):
                continue
            while pipe.buf:
                n = len(pipe.buf)
                if self.budget is not None:
                    n = min(n, self.budget)
                try:
                    with memoryview(pipe.buf) as mv, mv[:n] as part:
                        sent = dst.send(part)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as e:
                    self._side_failed(dst, e)
                    break
                del pipe.buf[:sent]
                self.forwarded += sent
                if pipe is self.up:
                    p.up_bytes += sent
                else:
                    p.down_bytes += sent
                if self.budget is not None:
                    self.budget -= sent
                    if self.budget <= 0:
                        self.cut_by_budget()
                        return
                if sent < n:
                    break
            if self.closed:
                return
            if pipe.eof and not pipe.buf and not pipe.done:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                pipe.done = True
                log("#%d %s: EOF passed on" % (self.id, pipe.name))
        if self.up.done and self.down.done:
            self.close("both directions done")

    # -- cutting and closing ----------------------------------------------
    def arm(self, budget, is_random):
        self.budget = budget
        self.budget_random = is_random
        if budget <= 0:
            self.cut_by_budget()

    def cut_by_budget(self):
        was_random = self.budget_random
        self.cut("after %d bytes forwarded%s" % (self.forwarded, " (random)" if was_random else ""))
        if was_random:
            self.p.random_cut_happened()

    def cut(self, why, rst=False):
        if self.closed:
            return
        p = self.p
        p.cuts += 1
        log("#%d cut%s: %s" % (self.id, " (rst)" if rst else "", why))
        for sock in (self.client, self.server):
            if sock is None:
                continue
            self._forget(sock)
            if rst or (sock is self.server and self.connecting):
                close_quietly(sock, rst=rst)
            else:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    close_quietly(sock)
                    continue
                p.linger(sock)
        self.client = self.server = None
        self._finish()

    def close(self, why):
        if self.closed:
            return
        log("#%d closed: %s (%d bytes forwarded)" % (self.id, why, self.forwarded))
        for sock in (self.client, self.server):
            self._forget(sock)
            close_quietly(sock)
        self.client = self.server = None
        self._finish()

    def _finish(self):
        self.closed = True
        self.up.buf = bytearray()
        self.down.buf = bytearray()
        self.p.conns.pop(self.id, None)


class Control:
    def __init__(self, proxy, sock):
        self.p = proxy
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closed = False
        self.mask = READ
        proxy.sel.register(sock, READ, self.on_event)

    def on_event(self, mask):
        if self.closed:
            return
        if mask & READ:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self.close()
                return
            if data == b"":
                self.close()
                return
            if data:
                self.inbuf += data
                while not self.closed:
                    nl = self.inbuf.find(b"\n")
                    if nl < 0:
                        if len(self.inbuf) > CTL_LINE_MAX:
                            self.reply("error line too long")
                            self.flush()
                            self.close()
                        break
                    line = bytes(self.inbuf[:nl]).decode("utf-8", "replace").strip()
                    del self.inbuf[:nl + 1]
                    if line:
                        self.reply(self.p.command(line))
                        if self.p.quitting:
                            self.flush()
                            raise Stop()
        self.flush()

    def reply(self, text):
        if len(self.outbuf) > CTL_OUT_MAX:
            self.close()  # a client that never reads its replies
            return
        self.outbuf += text.encode() + b"\n"

    def flush(self):
        if self.closed:
            return
        while self.outbuf:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self.outbuf[:n]
        want = READ | (WRITE if self.outbuf else 0)
        if want != self.mask:
            self.p.sel.modify(self.sock, want, self.on_event)
            self.mask = want

    def close(self):
        if self.closed:
            return
        self.closed = True
        self.p.controls.discard(self)
        try:
            self.p.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        close_quietly(self.sock)


class Proxy:
    def __init__(self, args):
        self.args = args
        self.sel = selectors.DefaultSelector()
        self.rng = random.Random(args.seed)
        self.conns = {}
        self.controls = set()
        self.lingering = {}  # socket -> deadline
        self.next_id = 1
        self.accepted = 0
        self.cuts = 0
        self.up_bytes = 0
        self.down_bytes = 0
        self.discarded = 0
        self.silence = False
        self.stall = False
        self.refuse = False
        self.random_left = 0
        self.random_min = 0
        self.random_max = 0
        self.quitting = False
        self.accept_resume = None  # when accepting resumes after EMFILE
        self.listener = None
        self.ctl_listener = None
        self.ctl_path = args.control
        self.ctl_bound = False
        self.target_addr = resolve(args.target)

    # -- setup ------------------------------------------------------------
    def open(self):
        a = self.args
        if a.port_file:
            try:
                os.unlink(a.port_file)
            except FileNotFoundError:
                pass
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", a.listen_port))
        ls.listen(128)
        ls.setblocking(False)
        self.listener = ls
        self.sel.register(ls, READ, lambda m: self.on_accept())

        try:
            st = os.lstat(self.ctl_path)
            if stat.S_ISSOCK(st.st_mode):
                os.unlink(self.ctl_path)  # stale, from a proxy that was killed
        except FileNotFoundError:
            pass
        cs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cs.bind(self.ctl_path)
        self.ctl_bound = True
        cs.listen(16)
        cs.setblocking(False)
        self.ctl_listener = cs
        self.sel.register(cs, READ, lambda m: self.on_control_accept())

        port = ls.getsockname()[1]
        if a.port_file:
            tmp = "%s.tmp.%d" % (a.port_file, os.getpid())
            with open(tmp, "w") as f:
                f.write("%d\n" % port)
            os.replace(tmp, a.port_file)
        try:
            sys.stdout.write("PORT %d\n" % port)
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        log("listening on 127.0.0.1:%d, target %s, control %s, seed %s"
            % (port, a.target, self.ctl_path, a.seed))

    # -- accepting --------------------------------------------------------
    def on_accept(self):
        for _ in range(64):
            try:
                s, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as e:
                # Out of fds or memory: the listener stays readable, so stop
                # watching it for a moment rather than spin.
                log("accept: %s (pausing accepts)" % e)
                self.sel.unregister(self.listener)
                self.accept_resume = time.monotonic() + 0.2
                return
            self.accepted += 1
            cid = self.next_id
            self.next_id += 1
            if self.refuse:
                log("#%d from %s:%d refused" % (cid, peer[0], peer[1]))
                close_quietly(s)
                continue
            s.setblocking(False)
            try:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            c = Conn(self, cid, s, peer)
            self.conns[cid] = c
            log("#%d accepted from %s:%d" % (cid, peer[0], peer[1]))
            if not c.start():
                c.close("upstream connect failed")
                continue
            if self.random_left > 0:
                c.arm(self.rng.randint(self.random_min, self.random_max), True)
            if not c.closed:
                c.update()

    def on_control_accept(self):
        for _ in range(16):
            try:
                s, _addr = self.ctl_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log("control accept: %s" % e)
                return
            s.setblocking(False)
            self.controls.add(Control(self, s))

    # -- lingering after a plain cut --------------------------------------
    def linger(self, sock):
        self.lingering[sock] = time.monotonic() + LINGER_SECONDS
        self.sel.register(sock, READ, lambda m, s=sock: self.on_linger(s))

    def on_linger(self, sock):
        if sock not in self.lingering:
            return
        try:
            while True:
                data = sock.recv(CHUNK)
                if not data:
                    break
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.end_linger(sock)

    def end_linger(self, sock):
        if self.lingering.pop(sock, None) is None:
            return
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        close_quietly(sock)

    def expire_lingering(self):
        now = time.monotonic()
        for sock, deadline in list(self.lingering.items()):
            if deadline <= now:
                self.end_linger(sock)

    # -- control commands -------------------------------------------------
    def random_cut_happened(self):
        if self.random_left <= 0:
            return
        self.random_left -= 1
        if self.random_left == 0:
            log("random cuts: all done")
            for c in self.conns.values():
                if c.budget_random:
                    c.budget = None
                    c.budget_random = False

    def refresh_all(self):
        for c in list(self.conns.values()):
            if not c.closed:
                c.pump()
            if not c.closed:
                c.update()

    def command(self, line):
        words = line.split()
        cmd, rest = words[0].lower(), words[1:]
        try:
            return self._command(cmd, rest)
        except ValueError as e:
            return "error %s" % e

    def _command(self, cmd, rest):
        if cmd == "ping" and not rest:
            return "ok pong"
        if cmd == "stats" and not rest:
            return "ok conns=%d open=%d cuts=%d up=%d down=%d" % (
                self.accepted, len(self.conns), self.cuts, self.up_bytes, self.down_bytes)
        if cmd == "quit" and not rest:
            self.quitting = True
            return "ok quit"
        if cmd == "cut":
            if rest not in ([], ["rst"]):
                raise ValueError("usage: cut [rst]")
            victims = list(self.conns.values())
            for c in victims:
                c.cut("cut command", rst=bool(rest))
            return "ok cut %d" % len(victims)
        if cmd == "cut-after":
            if rest == ["off"]:
                for c in self.conns.values():
                    if not c.budget_random:
                        c.budget = None
                return "ok cut-after off"
            if len(rest) != 1:
                raise ValueError("usage: cut-after N|off")
            n = count_arg(rest[0], "N")
            armed = list(self.conns.values())
            for c in armed:
                c.arm(n, False)
            return "ok cut-after %d" % len(armed)
        if cmd == "random-cuts":
            if len(rest) != 3:
                raise ValueError("usage: random-cuts MIN MAX COUNT")
            lo = count_arg(rest[0], "MIN")
            hi = count_arg(rest[1], "MAX")
            count = count_arg(rest[2], "COUNT")
            if lo > hi:
                raise ValueError("MIN is larger than MAX")
            self.random_min, self.random_max, self.random_left = lo, hi, count
            for c in list(self.conns.values()):
                if c.closed or self.random_left <= 0:
                    continue
                if count > 0:
                    c.arm(self.rng.randint(lo, hi), True)
            if count == 0:
                for c in self.conns.values():
                    if c.budget_random:
                        c.budget = None
                        c.budget_random = False
            return "ok random-cuts %d" % count
        if cmd in ("silence", "stall", "refuse"):
            if len(rest) != 1 or rest[0] not in ("on", "off"):
                raise ValueError("usage: %s on|off" % cmd)
            on = rest[0] == "on"
            if cmd == "silence":
                if on and not self.silence:
                    for c in self.conns.values():
                        c.up.buf.clear()
                        c.down.buf.clear()
                self.silence = on
            elif cmd == "stall":
                self.stall = on
            else:
                self.refuse = on
            log("%s %s" % (cmd, rest[0]))
            self.refresh_all()
            return "ok %s %s" % (cmd, rest[0])
        raise ValueError("unknown command or arguments: %s" % " ".join([cmd] + rest))

    # -- main loop --------------------------------------------------------
    def run(self):
        while True:
            deadlines = list(self.lingering.values())
            if self.accept_resume is not None:
                deadlines.append(self.accept_resume)
            timeout = None
            if deadlines:
                timeout = max(0.0, min(deadlines) - time.monotonic())
            for key, mask in self.sel.select(timeout):
                key.data(mask)
            if self.lingering:
                self.expire_lingering()
            if self.accept_resume is not None and time.monotonic() >= self.accept_resume:
                self.accept_resume = None
                self.sel.register(self.listener, READ, lambda m: self.on_accept())

    def shutdown(self):
        for c in list(self.conns.values()):
            c.close("proxy exiting")
        for sock in list(self.lingering):
            self.end_linger(sock)
        for ctl in list(self.controls):
            ctl.close()
        for s in (self.listener, self.ctl_listener):
            if s is not None:
                try:
                    self.sel.unregister(s)
                except (KeyError, ValueError):
                    pass
                close_quietly(s)
        if self.ctl_bound:
            try:
                os.unlink(self.ctl_path)
            except OSError:
                pass
        self.sel.close()


def count_arg(text, name):
    try:
        n = int(text, 10)
    except ValueError:
        raise ValueError("%s must be a number, not %r" % (name, text))
    if n < 0:
        raise ValueError("%s must not be negative" % name)
    return n


def resolve(target):
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit("fault_proxy: --target must be HOST:PORT, not %r" % target)
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), 0, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise SystemExit("fault_proxy: cannot resolve %s: %s" % (host, e))
    return infos[0][0], infos[0][4]


def send_command(path, command):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        s.sendall(command.strip().encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
    except OSError as e:
        print("error cannot talk to the proxy at %s: %s" % (path, e))
        return 1
    line = data.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not line:
        print("error no reply from the proxy")
        return 1
    print(line)
    return 0 if line == "ok" or line.startswith("ok ") else 1


def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description="Fault-injecting TCP proxy for loopback tests.")
    ap.add_argument("--target", help="HOST:PORT to forward to")
    ap.add_argument("--listen-port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    ap.add_argument("--control", required=True, help="UNIX socket path for commands")
    ap.add_argument("--port-file", help="write the chosen port here (atomically)")
    ap.add_argument("--seed", type=int, default=None, help="seed for random-cuts")
    ap.add_argument("--verbose", action="store_true", help="log accepts, cuts, closes to stderr")
    ap.add_argument("--send", metavar="COMMAND", help="client mode: send one command, print reply")
    args = ap.parse_args()
    if args.send is not None:
        sys.exit(send_command(args.control, args.send))
    if not args.target:
        ap.error("--target is required (or --send for client mode)")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    VERBOSE = args.verbose

    def on_signal(signum, frame):
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    proxy = Proxy(args)
    try:
        proxy.open()
        proxy.run()
    except Stop:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        log("exiting")
    except OSError as e:
        sys.stderr.write("fault_proxy: %s\n" % e)
        proxy.shutdown()
        sys.exit(1)
    proxy.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
