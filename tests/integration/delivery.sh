#!/usr/bin/env bash
# Messages from alice to bob through a real Prosody arrive exactly: ASCII,
# Unicode, XML metacharacters, quotes, a 10 kB body, a multi-line body from
# stdin, message types, one send to two JIDs, and the plain output format.
set -euo pipefail
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

start_prosody alice:alice-pw-Aq7 bob:bob-pw-Zx3 carol:carol-pw-Kw9
SRV=(--server "127.0.0.1:$C2S_PORT" --cafile "$CA_FILE")
ALICE=(EPODE_JID="$ALICE_JID" EPODE_PASSWORD="$ALICE_PASSWORD")
BOB=(EPODE_JID="$BOB_JID" EPODE_PASSWORD="$BOB_PASSWORD")
CAROL=(EPODE_JID="$CAROL_JID" EPODE_PASSWORD="$CAROL_PASSWORD")

# Expected bodies, one file each (exact bytes), in sending order.
B=$WORK/bodies
mkdir -p "$B"
printf '%s' 'Hello, Bob! Plain ASCII 0123456789.' >"$B/01-ascii"
printf '%s' 'Grüße 👋 — 日本語 Ωμέγα' >"$B/02-unicode"
printf '%s' '<' >"$B/03-lt"
printf '%s' '&' >"$B/04-amp"
printf '%s' "quotes ' and \" and </body> &amp; <![CDATA[x]]>" >"$B/05-quotes"
"$PY" -c '
import random, string, sys
r = random.Random(20240611)
alphabet = string.ascii_letters + string.digits + string.punctuation + " "
sys.stdout.write("".join(r.choice(alphabet) for _ in range(10240)))' >"$B/06-10kB"
printf 'line one\nline two\ttabbed\n\n  indented \\ backslash\nlast line\n' >"$B/07-stdin"
N=7

# bob listens for all of them (as JSON) plus the normal and headline ones.
bg_epode bob_json "${BOB[@]}" -- listen "${SRV[@]}" --json --count $((N + 2)) --timeout 15
BOB_PID=$BG_PID BOB_OUT=$BG_OUT BOB_ERR=$BG_ERR
if ! wait_for "$BOB_ERR" "^epode: listening as bob@localhost/" 10 "$BOB_PID"; then
  fail listener_ready "bob's listener did not get ready" "$BOB_ERR"
  exit 1
fi
pass listener_ready

for f in "$B"/0[1-6]-*; do
  name=send_$(basename "$f")
  run_epode "$name" "${ALICE[@]}" -- send "${SRV[@]}" --resource sender -m "$(cat "$f")" \
    "$BOB_JID"
  expect "$name" 0
done
STDIN=$B/07-stdin run_epode send_07-stdin "${ALICE[@]}" -- send "${SRV[@]}" --resource sender \
  "$BOB_JID"
expect send_07-stdin 0
run_epode send_type_normal "${ALICE[@]}" -- send "${SRV[@]}" --resource sender --type normal \
  -m "a normal message" "$BOB_JID"
expect send_type_normal 0
run_epode send_type_headline "${ALICE[@]}" -- send "${SRV[@]}" --resource sender -t headline \
  -m "a headline" "$BOB_JID"
expect send_type_headline 0

wait_rc "$BOB_PID"
ERR=$BOB_ERR
if sane listener_exit; then
  [ "$RC" = 0 ] && pass listener_exit ||
    fail listener_exit "bob's listener exited $RC (expected 0 after --count)" "$BOB_ERR" "$BOB_OUT"
fi

# Compare every JSON line with the bytes that were sent.
if "$PY" - "$BOB_OUT" "$B" "$ALICE_JID/sender" "$BOB_JID" <<'EOF'; then
import json, os, sys
out, bodies, sender, rcpt = sys.argv[1:5]
names = sorted(os.listdir(bodies))
expected = [(open(os.path.join(bodies, n), "rb").read().decode("utf-8"), "chat", n) for n in names]
expected += [("a normal message", "normal", "normal"), ("a headline", "headline", "headline")]
raw = open(out, "rb").read().decode("utf-8")
lines = raw.split("\n")
ok = True
if lines[-1] != "":
    print("  output does not end with a newline"); ok = False
lines = lines[:-1]
if len(lines) != len(expected):
    print("  %d lines, expected %d" % (len(lines), len(expected))); ok = False
for line, (body, typ, name) in zip(lines, expected):
    try:
        m = json.loads(line)
    except ValueError as e:
        print("  %s: not JSON (%s): %r" % (name, e, line[:200])); ok = False; continue
    problems = []
    if m.get("body") != body:
        problems.append("body %r != %r" % (m.get("body", "")[:80], body[:80]))
    if m.get("from") != sender:
        problems.append("from %r" % m.get("from"))
    if m.get("to") != rcpt and not str(m.get("to", "")).startswith(rcpt + "/"):
        problems.append("to %r" % m.get("to"))
    if m.get("type") != typ:
        problems.append("type %r != %r" % (m.get("type"), typ))
    if not isinstance(m.get("id"), str) or not m["id"]:
        problems.append("id %r" % m.get("id"))
    if set(m) != {"from", "to", "type", "id", "body"}:
        problems.append("keys %r" % sorted(m))
    if problems:
        print("  %s: %s" % (name, "; ".join(problems))); ok = False
    else:
        print("  ok %s (%d chars)" % (name, len(body)))
sys.exit(0 if ok else 1)
EOF
  pass bodies_exact
else
  fail bodies_exact "received messages differ from what was sent" "$BOB_ERR"
fi

# --- one send to two JIDs at once; bob prints the plain format --------------------
bg_epode bob_plain "${BOB[@]}" -- listen "${SRV[@]}" --count 1 --timeout 15
BOB_PID=$BG_PID BOB_OUT=$BG_OUT BOB_ERR=$BG_ERR
bg_epode carol_json "${CAROL[@]}" -- listen "${SRV[@]}" --json --count 1 --timeout 15
CAROL_PID=$BG_PID CAROL_OUT=$BG_OUT CAROL_ERR=$BG_ERR
if wait_for "$BOB_ERR" "listening as" 10 "$BOB_PID" &&
  wait_for "$CAROL_ERR" "listening as" 10 "$CAROL_PID"; then
  TWO=$'to both\\of you\nsecond line'
  run_epode send_two "${ALICE[@]}" -- send "${SRV[@]}" --resource sender -m "$TWO" \
    "$BOB_JID" "$CAROL_JID"
  expect send_two 0
  wait_rc "$BOB_PID"
  ERR=$BOB_ERR
  sane two_bob && { [ "$RC" = 0 ] && pass two_bob_exit || fail two_bob_exit "exit $RC" "$BOB_ERR"; }
  wait_rc "$CAROL_PID"
  ERR=$CAROL_ERR
  sane two_carol && { [ "$RC" = 0 ] && pass two_carol_exit ||
    fail two_carol_exit "exit $RC" "$CAROL_ERR"; }
  # Plain format: "FROM: BODY", backslash doubled, newline as \n, one line.
  want='alice@localhost/sender: to both\\of you\nsecond line'
  if [ "$(cat "$BOB_OUT")" = "$want" ] && [ "$(wc -l <"$BOB_OUT")" = 1 ]; then
    pass two_bob_plain
  else
    fail two_bob_plain "expected the line '$want'" "$BOB_OUT"
  fi
  if "$PY" -c '
import json, sys
m = json.loads(open(sys.argv[1], encoding="utf-8").read())
sys.exit(0 if m["body"] == sys.argv[2] and m["to"].startswith("carol@localhost") else 1)' \
    "$CAROL_OUT" "$TWO"; then
    pass two_carol_json
  else
    fail two_carol_json "carol did not get the exact body" "$CAROL_OUT" "$CAROL_ERR"
  fi
else
  fail two_listeners "bob's or carol's listener did not get ready" "$BOB_ERR" "$CAROL_ERR"
fi

# --- a 200 kB body to 12 JIDs at once (2.4 MB: sent as the socket drains) -------
"$PY" -c '
import random, string, sys
r = random.Random(7)
sys.stdout.write("".join(r.choice(string.ascii_letters + "<&>\"'"'"' ") for _ in range(200000)))' \
  >"$WORK/big"
bg_epode big_bob "${BOB[@]}" -- listen "${SRV[@]}" --json --count 1 --timeout 15
BOB_PID=$BG_PID BOB_OUT=$BG_OUT BOB_ERR=$BG_ERR
bg_epode big_carol "${CAROL[@]}" -- listen "${SRV[@]}" --json --count 1 --timeout 15
CAROL_PID=$BG_PID CAROL_OUT=$BG_OUT CAROL_ERR=$BG_ERR
if wait_for "$BOB_ERR" "listening as" 10 "$BOB_PID" &&
  wait_for "$CAROL_ERR" "listening as" 10 "$CAROL_PID"; then
  STDIN=$WORK/big run_epode send_big_many "${ALICE[@]}" -- send "${SRV[@]}" "$BOB_JID" \
    nobody{0,1,2,3,4}@localhost "$CAROL_JID" nobody{5,6,7,8,9}@localhost
  expect send_big_many 0
  for who in bob carol; do
    if [ $who = bob ]; then pid=$BOB_PID out=$BOB_OUT err=$BOB_ERR; else
      pid=$CAROL_PID out=$CAROL_OUT err=$CAROL_ERR; fi
    wait_rc "$pid"
    if [ "$RC" = 0 ] && "$PY" -c '
import json, sys
m = json.loads(open(sys.argv[1], encoding="utf-8").read())
sys.exit(0 if m["body"] == open(sys.argv[2], encoding="utf-8").read() else 1)' "$out" "$WORK/big"
    then pass "big_many_$who"; else fail "big_many_$who" "exit $RC or body differs" "$err"; fi
  done
else
  fail big_listeners "bob's or carol's listener did not get ready" "$BOB_ERR" "$CAROL_ERR"
fi

# --- over the server's stanza size limit (Prosody: 256 KiB): its stream error ----
"$PY" -c 'import sys; sys.stdout.write("x" * 300000)' >"$WORK/too-big"
STDIN=$WORK/too-big run_epode send_too_big "${ALICE[@]}" -- send "${SRV[@]}" "$BOB_JID"
expect send_too_big 7 "stream error received from the server \((policy-violation|not-allowed|resource-constraint)\)"

# --- bodies that must be refused before connecting ---------------------------------
printf 'bad \xff\xfe utf-8' >"$WORK/bad-utf8"
STDIN=$WORK/bad-utf8 run_epode reject_bad_utf8 "${ALICE[@]}" -- send "${SRV[@]}" "$BOB_JID"
expect reject_bad_utf8 2 "invalid UTF-8"
printf 'bell \a here' >"$WORK/ctrl"
STDIN=$WORK/ctrl run_epode reject_control "${ALICE[@]}" -- send "${SRV[@]}" "$BOB_JID"
expect reject_control 2 "control character"
STDIN=/dev/null run_epode reject_empty "${ALICE[@]}" -- send "${SRV[@]}" "$BOB_JID"
expect reject_empty 2 "empty"

finish
