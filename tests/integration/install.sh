#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a small program
# against it twice: with pkg-config (shared library) and with CMake's
# find_package (static library). Both must run and print the version.
set -euo pipefail
: "${EPODE_BUILD:?}" "${EPODE_SRC:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL $*"; exit 1; }

cmake --install "$EPODE_BUILD" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "cmake --install"; }
libdir=$(find "$tmp/prefix" -name 'libepode.so' -printf '%h\n' | head -1)
[ -n "$libdir" ] || fail "no shared library installed"
for f in "$libdir/libepode.a" "$libdir/pkgconfig/epode.pc" "$libdir/cmake/epode/epodeConfig.cmake" \
  "$tmp/prefix/include/epode/epode.h" "$tmp/prefix/bin/epode"; do
  [ -e "$f" ] || fail "not installed: ${f#$tmp/prefix/}"
done
echo "PASS install layout"

# Only the public API is exported from the shared library.
if nm -D --defined-only "$libdir/libepode.so" | awk '$2 != "A" {print $3}' | grep -v '^epode_[a-z]' | grep -q .; then
  nm -D --defined-only "$libdir/libepode.so" | awk '$2 != "A" {print $3}' | grep -v '^epode_[a-z]' | head
  fail "symbols outside the public API are exported"
fi
echo "PASS exports only epode_*"

cat >"$tmp/main.c" <<'C'
#include <epode/epode.h>
#include <stdio.h>
#include <string.h>
int main(void) {
  epode_jid *jid;
  if (epode_jid_parse(&jid, NULL, "Alice@Example.ORG/phone") != EPODE_OK) return 1;
  printf("%s %s %s\n", epode_version(), epode_jid_bare(jid), epode_strerror(EPODE_ERR_AUTH));
  epode_jid_free(jid);
  return strcmp(epode_version(), EPODE_VERSION_STRING) != 0;
}
C
export PKG_CONFIG_PATH="$libdir/pkgconfig"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Werror "$tmp/main.c" -o "$tmp/via_pc" $(pkg-config --cflags --libs epode)
out=$(LD_LIBRARY_PATH="$libdir" "$tmp/via_pc") || fail "pkg-config program did not run"
[ "$out" = "0.1.0 Alice@example.org authentication failed" ] || fail "pkg-config program printed: $out"
echo "PASS pkg-config build"

mkdir -p "$tmp/cm"
cp "$tmp/main.c" "$tmp/cm/main.c"
cat >"$tmp/cm/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.18)
project(consumer C)
find_package(epode REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE epode::epode_static)
CM
cmake -S "$tmp/cm" -B "$tmp/cm/build" -DCMAKE_PREFIX_PATH="$tmp/prefix" >"$tmp/cm.log" 2>&1 &&
  cmake --build "$tmp/cm/build" >>"$tmp/cm.log" 2>&1 || { cat "$tmp/cm.log"; fail "CMake find_package build"; }
out=$("$tmp/cm/build/consumer") || fail "CMake program did not run"
[ "$out" = "0.1.0 Alice@example.org authentication failed" ] || fail "CMake program printed: $out"
echo "PASS CMake find_package build"
echo "3 passed, 0 failed"
