#!/bin/sh
# Line coverage of src/ reached by replaying the committed fuzz corpora:
# builds the replay programs with clang's source-based coverage in BUILD_DIR
# (default /tmp/epode-fuzz-cov), replays every corpus, and prints
# llvm-cov's per-file report for src/ (and the total).
#
#   tests/fuzz/coverage.sh [BUILD_DIR]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-/tmp/epode-fuzz-cov}
profdata=$(command -v llvm-profdata || command -v llvm-profdata-14)
cov=$(command -v llvm-cov || command -v llvm-cov-14)
CC=clang cmake -S "$root" -B "$build" -DEPODE_UNIT_ONLY=ON -DEPODE_WERROR=OFF \
  -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS="-fprofile-instr-generate -fcoverage-mapping" \
  >/dev/null 2>&1
targets=$(cd "$here" && ls fuzz_*.c | sed 's/\.c$//')
# shellcheck disable=SC2086
cmake --build "$build" -j "$(nproc 2>/dev/null || echo 2)" --target $targets >/dev/null 2>&1
rm -f "$build"/cov-*.profraw
objs=""
for t in $targets; do
  LLVM_PROFILE_FILE="$build/cov-$t.profraw" "$build/$t" "$here/corpus/$t" >/dev/null
  if [ -z "$objs" ]; then objs="$build/$t"; else objs="$objs -object $build/$t"; fi
done
"$profdata" merge -sparse "$build"/cov-*.profraw -o "$build/fuzz.profdata"
# shellcheck disable=SC2086
"$cov" report $objs -instr-profile "$build/fuzz.profdata" "$root/src"
