# epode — top-level wrapper around CMake/ctest.
#   make          build the library, the program and the examples
#   make check    install missing Debian packages, build, run every test
#                 (unit, integration against a real Prosody, and the unit
#                 suite again under ASan+UBSan)
#   make demo     build, start a throwaway Prosody, show a message arriving
#   make install  install into PREFIX (default /usr/local)
BUILD ?= build
ASAN_BUILD ?= build-asan
PREFIX ?= /usr/local
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_FLAGS ?=

.PHONY: all deps build check unit integration asan demo install clean format fuzz

all: build

deps:
	@sh scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

unit: build
	cd $(BUILD) && ctest -L unit --output-on-failure -j $(JOBS)

integration: build
	cd $(BUILD) && ctest -L integration --output-on-failure

$(ASAN_BUILD)/CMakeCache.txt:
	cmake -S . -B $(ASAN_BUILD) -DEPODE_SANITIZE=ON -DEPODE_UNIT_ONLY=ON -DCMAKE_BUILD_TYPE=Debug

asan: deps $(ASAN_BUILD)/CMakeCache.txt
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest -L unit --output-on-failure -j $(JOBS)

check: build asan
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

# make fuzz: clang + libFuzzer + ASan/UBSan build of tests/fuzz/fuzz_*.c, each
# target run FUZZ_SECONDS from its corpus; new coverage is merged back into
# tests/fuzz/corpus/<target>/ (review and commit it). FUZZ_TARGETS narrows it.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?=
FUZZ_CFLAGS = -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined \
  -fno-omit-frame-pointer -gline-tables-only

$(FUZZ_BUILD)/CMakeCache.txt:
	CC=clang cmake -S . -B $(FUZZ_BUILD) -DEPODE_FUZZ=ON -DEPODE_UNIT_ONLY=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS="$(FUZZ_CFLAGS)" \
	  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined"

fuzz: $(FUZZ_BUILD)/CMakeCache.txt
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all
	sh tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# make bench: builds bench/ in its own directory (EPODE_BENCH=ON, needs
# Debian's libstrophe-dev) and runs every scenario for epode and libstrophe;
# prints the table and writes bench/results/latest.md. BENCH_SCALE=0.1 runs
# a tenth of the counts. See bench/README.md.
BENCH_BUILD ?= build-bench
BENCH_TARGETS = bench_xserver bench_epode bench_strophe bench_expat
.PHONY: bench
bench:
	@pkg-config --exists libstrophe || { echo "bench: libstrophe-dev is missing (apt-get install libstrophe-dev)" >&2; exit 1; }
	cmake -S . -B $(BENCH_BUILD) -DEPODE_BENCH=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
	cmake --build $(BENCH_BUILD) -j $(JOBS) --target $(BENCH_TARGETS)
	sh bench/run.sh $(BENCH_BUILD)

demo: build
	@bash scripts/demo.sh $(BUILD)

install: build
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)
