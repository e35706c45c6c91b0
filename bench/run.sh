#!/bin/sh
# bench/run.sh BUILD_DIR — runs every benchmark scenario (bench/run.py) with the
# programs built in BUILD_DIR (cmake -DEPODE_BENCH=ON). `make bench` calls it.
# BENCH_SCALE=0.1 scales the counts down for a quick run.
set -eu
build=${1:?usage: bench/run.sh BUILD_DIR}
here=$(cd "$(dirname "$0")" && pwd)
for p in bench_xserver bench_epode bench_strophe bench_expat; do
  [ -x "$build/$p" ] || { echo "bench: $build/$p is missing (configure with -DEPODE_BENCH=ON)" >&2; exit 1; }
done
# 10,000 sessions need about 10,100 descriptors in the client and in the
# server; the programs raise their soft limit to the hard one themselves and
# report when that is not enough.
echo "bench: descriptor limit soft $(ulimit -Sn), hard $(ulimit -Hn)" >&2
exec python3 "$here/run.py" "$build"
