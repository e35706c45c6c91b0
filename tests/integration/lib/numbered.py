#!/usr/bin/python3
"""Numbered lines for the reconnection tests (tests/integration/reconnect.sh).

    numbered.py gen COUNT [--prefix P] [--start N] [--pad BYTES] [--rate LPS]
                          [--progress FILE] [--hold-after K --hold-file F]
        Writes COUNT lines "P<number, 7 digits>" (plus " " and BYTES filler
        characters with --pad) to stdout, numbers from --start (default 1),
        in blocking writes of up to 64 lines. --rate limits the lines per
        second. --progress FILE holds the number of lines written so far
        (fully handed to the pipe), updated after every write: a reader that
        stops reading shows up as a number that stops growing. With
        --hold-after K it writes K lines, then waits until file F exists
        before the rest (so a test can change the network in between).

    numbered.py check COUNT FILE [--prefix P] [--start N] [--unacked ERRFILE]
                          [--order] [--exactly-once]
        Reads `epode listen` plain output (FROM: BODY) from FILE and looks at
        the bodies that start with P. Prints one line of findings and exits
        0 when they hold:
          --exactly-once  every number start..start+COUNT-1 appears exactly
                          once (and nothing else with the prefix)
          --order         they appear in increasing order
          --unacked ERRFILE  the "epode: not acknowledged: line K" lines of
                          the sender's stderr (K 1-based, input line K holds
                          number start+K-1); every number must have arrived
                          or be listed there (or both), none may vanish
        Missing / duplicate / out-of-order numbers are summarised (first few).
"""
import argparse
import os
import re
import sys
import time


def gen(a):
    fill = (" " + ("x" * (a.pad - 1))) if a.pad > 0 else ""
    out = sys.stdout.fileno()
    prog = None
    if a.progress:
        prog = os.open(a.progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def note(n):
        if prog is not None:
            s = b"%d\n" % n
            os.pwrite(prog, s.ljust(16), 0)

    note(0)
    written = 0
    t0 = time.monotonic()
    n = a.start
    end = a.start + a.count
    held = a.hold_after <= 0
    while n < end:
        if not held and written >= a.hold_after:
            while not os.path.exists(a.hold_file):
                time.sleep(0.02)
            held = True
            t0 = time.monotonic() - (written / a.rate if a.rate else 0)
        k = min(64, end - n)
        if not held:
            k = min(k, a.hold_after - written)
        if a.rate:
            # Never ahead of COUNT lines per second.
            k = min(k, max(1, a.rate // 20))
            due = t0 + written / a.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
        chunk = "".join("%s%07d%s\n" % (a.prefix, i, fill) for i in range(n, n + k)).encode()
        view = memoryview(chunk)
        try:
            while view:
                w = os.write(out, view)
                view = view[w:]
        except BrokenPipeError:
            return 1
        n += k
        written += k
        note(written)
    return 0


def check(a):
    pre = a.prefix
    got = []
    other = 0
    with open(a.file, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            sep = line.find(": ")
            body = line[sep + 2:] if sep >= 0 else line
            if not body.startswith(pre):
                other += 1
                continue
            m = re.match(re.escape(pre) + r"(\d+)", body)
            if not m:
                other += 1
                continue
            got.append(int(m.group(1)))
    want = set(range(a.start, a.start + a.count))
    seen = {}
    for x in got:
        seen[x] = seen.get(x, 0) + 1
    missing = sorted(want - set(seen))
    dups = sorted(x for x, c in seen.items() if c > 1)
    strange = sorted(x for x in seen if x not in want)
    disorder = [i for i in range(1, len(got)) if got[i] <= got[i - 1]]
    unacked = set()
    if a.unacked:
        with open(a.unacked, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = re.match(r"epode: not acknowledged: line (\d+)", line)
                if m:
                    unacked.add(a.start + int(m.group(1)) - 1)
    vanished = sorted(want - set(seen) - unacked)
    ok = True
    notes = ["%d received (%d distinct), %d expected" % (len(got), len(seen), len(want))]
    if a.unacked:
        both = len(unacked & set(seen))
        notes.append("%d reported not acknowledged (%d of them arrived anyway)" %
                     (len(unacked), both))
        if vanished:
            ok = False
            notes.append("%d vanished (neither received nor reported): %s" %
                         (len(vanished), vanished[:10]))
    if a.exactly_once:
        if missing:
            ok = False
            notes.append("%d missing: %s" % (len(missing), missing[:10]))
        if dups:
            ok = False
            notes.append("%d duplicated: %s" % (len(dups), dups[:10]))
    if strange:
        ok = False
        notes.append("%d unexpected numbers: %s" % (len(strange), strange[:10]))
    if a.order and disorder:
        ok = False
        i = disorder[0]
        notes.append("%d out of order, first at position %d: %d after %d" %
                     (len(disorder), i, got[i], got[i - 1]))
    print("; ".join(notes))
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("count", type=int)
    g.add_argument("--prefix", default="")
    g.add_argument("--start", type=int, default=1)
    g.add_argument("--pad", type=int, default=0)
    g.add_argument("--rate", type=int, default=0)
    g.add_argument("--progress")
    g.add_argument("--hold-after", type=int, default=0)
    g.add_argument("--hold-file")
    c = sub.add_parser("check")
    c.add_argument("count", type=int)
    c.add_argument("file")
    c.add_argument("--prefix", default="")
    c.add_argument("--start", type=int, default=1)
    c.add_argument("--unacked")
    c.add_argument("--order", action="store_true")
    c.add_argument("--exactly-once", action="store_true")
    a = p.parse_args()
    return gen(a) if a.cmd == "gen" else check(a)


if __name__ == "__main__":
    sys.exit(main())
