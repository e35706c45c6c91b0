#!/usr/bin/env python3
"""Loopback TCP proxy that delays each direction by a fixed time.

    delay_proxy.py UPSTREAM_PORT [--delay-ms 25] [--max-seconds 300]

Listens on 127.0.0.1 (a free port, printed as "PORT <n>"), connects each
client to 127.0.0.1:UPSTREAM_PORT, and forwards every chunk in each direction
DELAY ms after it arrived, in order. The TCP handshake itself is not delayed
(count one more round trip for it on a real network: it is the same for
every client).

For each connection it prints, when it ends,
    "TURNS <n> <ms>"
where n counts client flights: client-to-server data that arrives after the
server has sent something since the client's previous flight (the first
flight counts). That is the number of times the client had to wait for the
server, i.e. round trips; data a client pipelines without waiting does not
add one.

It stops when its standard input closes or after --max-seconds, whichever
comes first, so it never outlives the benchmark.
"""
import argparse
import asyncio
import sys
import time


class Turns:
    def __init__(self):
        self.turns = 0
        self.server_spoke = True
        self.t0 = time.monotonic()

    def client_data(self):
        if self.server_spoke:
            self.turns += 1
            self.server_spoke = False

    def server_data(self):
        self.server_spoke = True


async def pump(reader, writer, delay, note):
    """Reads chunks and hands them to a sender that writes each at t + delay."""
    q = asyncio.Queue()

    async def sender():
        while True:
            due, data = await q.get()
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if data is None:
                try:
                    writer.close()
                except Exception:
                    pass
                return
            try:
                writer.write(data)
                await writer.drain()
            except Exception:
                return

    task = asyncio.ensure_future(sender())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            note()
            q.put_nowait((time.monotonic() + delay, data))
    except Exception:
        pass
    q.put_nowait((time.monotonic() + delay, None))
    await task


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("upstream", type=int)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    a = ap.parse_args()
    delay = a.delay_ms / 1000.0

    async def handle(cr, cw):
        t = Turns()
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", a.upstream)
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, sw, delay, t.client_data), pump(sr, cw, delay, t.server_data))
        print("TURNS %d %.1f" % (t.turns, (time.monotonic() - t.t0) * 1000.0), flush=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_reader(sys.stdin.fileno(), lambda: (sys.stdin.buffer.raw.read(4096) or b"")
                    or (not stop.done() and stop.set_result(None)))
    try:
        await asyncio.wait_for(stop, a.max_seconds)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
