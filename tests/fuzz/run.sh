#!/bin/sh
# Runs every libFuzzer target of a fuzz build (`make fuzz` builds it) for
# FUZZ_SECONDS each, starting from tests/fuzz/corpus/<target>/, then merges
# the result back: the corpus is minimised over old and new inputs (files
# named by their SHA-1, as libFuzzer names them), so it only grows with
# coverage. Crashes are left as
# crash-<sha1> files in $OUT and make the run fail.
#
#   tests/fuzz/run.sh BUILD_DIR [SECONDS] [TARGET...]
set -eu
build=${1:?usage: run.sh BUILD_DIR [SECONDS] [TARGET...]}
secs=${2:-${FUZZ_SECONDS:-60}}
[ $# -ge 2 ] && shift 2 || shift $#
here=$(cd "$(dirname "$0")" && pwd)
out=${FUZZ_OUT:-$build/fuzz-out}
mkdir -p "$out"
targets=${*:-$(cd "$here" && ls fuzz_*.c | sed 's/\.c$//')}
# Small inputs keep the corpus small and every execution fast; the session
# target needs room for a whole login.
maxlen() { case $1 in fuzz_session) echo 8192 ;; fuzz_jid) echo 4096 ;; *) echo 4096 ;; esac; }
status=0
summary=$out/summary.txt
: >"$summary"
for t in $targets; do
  bin=$build/$t
  [ -x "$bin" ] || { echo "run.sh: $bin missing (make fuzz builds it)" >&2; exit 1; }
  corpus=$here/corpus/$t
  new=$out/$t.new
  rm -rf "$new"
  mkdir -p "$new" "$corpus"
  echo "== $t: ${secs}s from $(ls "$corpus" | wc -l) corpus files"
  log=$out/$t.log
  set +e
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:symbolize=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$secs" -max_len="$(maxlen "$t")" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/" "$new" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')
  if [ "$rc" != 0 ]; then
    echo "   CRASH (exit $rc): see $log and $out/crash-*"
    grep -E 'ERROR:|SUMMARY:|runtime error' "$log" | head -n 5
    status=1
  fi
  # Minimise: the smallest set of old and new inputs that keeps every
  # feature, so the committed corpus stays a few hundred small files.
  before=$(ls "$corpus" | wc -l)
  min=$out/$t.min
  rm -rf "$min"
  mkdir -p "$min"
  # -use_counters=0: keep inputs for new edges, not for new hit counts.
  if "$bin" -merge=1 -use_counters=0 -max_len="$(maxlen "$t")" "$min" "$corpus" "$new" \
    >"$out/$t.merge.log" 2>&1 &&
    [ -n "$(ls "$min")" ]; then
    rm -f "$corpus"/*
    cp "$min"/* "$corpus"/
  fi
  rm -rf "$min"
  after=$(ls "$corpus" | wc -l)
  printf '%-14s %10s execs in %ss (%s/s)  cov %s  corpus %s -> %s  exit %s\n' "$t" "${runs:-?}" \
    "$secs" "$(( ${runs:-0} / secs ))" "${cov:-?}" "$before" "$after" "$rc" | tee -a "$summary"
  rm -rf "$new"
done
echo "summary in $summary"
exit $status
