# rawblock: build, test, bench. `make test` is what CI runs (via .ci/run).
CARGO    ?= cargo
PYTHON   ?= python3
CC       ?= cc
CBINDGEN_VERSION := 0.29.4
CBINDGEN := target/tools/bin/cbindgen
LIBDIR   := target/release
LIB      := $(LIBDIR)/librawblock.so

.PHONY: all build header check-header man man-check test wheel install install-test abi-snapshot abi-check abi-update examples-test rust-test powerloss c-test nvme-test py-test readme-example sanitize valgrind fuzz bench bench-data bench-smoke clean

all: build

# The ABI number's one home is src/ffi/abi.rs (build.rs reads it there too).
ABI      := $(shell sed -n 's/^pub const RB_ABI_VERSION: u32 = \([0-9]*\);$$/\1/p' src/ffi/abi.rs)
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

build:
	$(CARGO) build --release --lib --bins
	@ln -sf librawblock.so $(LIBDIR)/librawblock.so.$(ABI)  # the SONAME, for programs linked in-tree

# cbindgen is pinned and installed under target/ so a fresh machine needs nothing by hand.
$(CBINDGEN):
	$(CARGO) install cbindgen --version $(CBINDGEN_VERSION) --locked --root target/tools

header: $(CBINDGEN)
	$(CBINDGEN) -q --config cbindgen.toml --crate rawblock --output include/rawblock.h

check-header: $(CBINDGEN)
	@mkdir -p target
	$(CBINDGEN) -q --config cbindgen.toml --crate rawblock --output target/rawblock.h.generated
	@diff -u include/rawblock.h target/rawblock.h.generated \
	  || { echo "include/rawblock.h differs from the code: run 'make header' and commit it"; exit 1; }
	@echo "header: include/rawblock.h matches the code"

# The reference pages (docs/man/*.md, one per function): every function of the header has one,
# with the header's declaration as its SYNOPSIS, so the two cannot drift; `man` builds the roff.
man-check:
	$(PYTHON) docs/man/man.py check include/rawblock.h docs/man

man:
	@rm -rf target/man
	$(PYTHON) docs/man/man.py roff docs/man target/man

# The power-loss simulator's default sweep (2,500+ crash images, docs/RECOVERY.md) runs on
# its own so that its counts show.
rust-test:
	$(CARGO) test --release -- --skip powerloss_sweep
	$(CARGO) test --release --lib -q powerloss_sweep -- --nocapture

# A long power-loss sweep: POWERLOSS_IMAGES crash images from a fresh seed (printed; pass
# POWERLOSS_SEED=<seed> to replay one).
POWERLOSS_IMAGES ?= 100000
POWERLOSS_SEED ?= $(shell date +%s)
powerloss:
	POWERLOSS_IMAGES=$(POWERLOSS_IMAGES) POWERLOSS_SEED=$(POWERLOSS_SEED) \
	  $(CARGO) test --release --lib -q powerloss_sweep -- --nocapture

c-test: build
	CC="$(CC)" bash c-tests/run.sh

# NVMe passthrough for real (issue 14): a QEMU guest (TCG) with an emulated NVMe namespace runs
# the engine, recovery and data C tests and rb-bench with uring_cmd and with io_uring on the same
# namespace. Fetches QEMU, busybox and a Debian kernel into target/nvme-test (apt-get download,
# dpkg-deb -x; nothing installed system-wide). Last line: "nvme: N passed, M failed". Skips only
# where QEMU cannot run at all, and RB_REQUIRE_NVME=1 (.ci/run) turns that skip into a failure.
nvme-test: build
	CC="$(CC)" bash c-tests/nvme-test.sh

# The C example in README.md must compile and run as written.
readme-example: build
	@mkdir -p target
	awk '/^```c$$/{on=1;next} /^```$$/{if(on){exit}} on' README.md > target/readme-example.c
	$(CC) -std=c11 -Wall -Werror -Iinclude target/readme-example.c -L$(LIBDIR) -Wl,-rpath,$(CURDIR)/$(LIBDIR) -lrawblock -o target/readme-example
	./target/readme-example

# The Python package. `make wheel` builds target/wheels/rawblock-*.whl with librawblock.so
# inside (python/setup.py's build hook runs cargo), which installs on a machine without Rust.
# The tools venv (pip) lives under target/ so a fresh machine needs nothing by hand.
VENV := target/venv
WHEEL_DIR := target/wheels
$(VENV)/bin/pip:
	$(PYTHON) -m venv $(VENV)

wheel: build $(VENV)/bin/pip
	@rm -rf $(WHEEL_DIR) python/build && mkdir -p $(WHEEL_DIR)
	$(VENV)/bin/pip wheel --quiet --no-deps --wheel-dir $(WHEEL_DIR) ./python
	@ls $(WHEEL_DIR)/rawblock-*-py3-none-*.whl

# The Python tests run against the installed wheel in a fresh venv, from outside the source
# tree and without RAWBLOCK_LIB, so they test what a user gets (tests/test_packaging.py checks
# that the package imported is the installed one with its bundled library).
# numpy: the batched calls take numpy arrays as zero-copy destinations, and the tests prove it.
# tests/test_header.py compiles a probe with $(CC) against the header and checks _lib.py against it.
PY_TEST_VENV := target/py-test-venv
py-test: wheel
	@rm -rf $(PY_TEST_VENV) target/py-test && mkdir -p target/py-test
	$(PYTHON) -m venv $(PY_TEST_VENV)
	PATH=/usr/bin:/bin $(PY_TEST_VENV)/bin/pip install --quiet pytest numpy $(WHEEL_DIR)/rawblock-*.whl
	cd target/py-test && env -u RAWBLOCK_LIB RAWBLOCK_EXPECT_INSTALLED=1 RAWBLOCK_WHEEL="$$(ls $(CURDIR)/$(WHEEL_DIR)/rawblock-*.whl)" \
	  RAWBLOCK_HEADER=$(CURDIR)/include/rawblock.h CC="$(CC)" \
	  $(CURDIR)/$(PY_TEST_VENV)/bin/python -m pytest -q -rs -p no:cacheprovider $(CURDIR)/python/tests

# The C tests again under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included).
sanitize: build
	RB_CRASH_KILL_SCALE=4 RB_TEST_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  RB_TEST_OUT=target/c-tests-asan CC="$(CC)" bash c-tests/run.sh

# valgrind memcheck over every C test (about 35 s; the loop-device half of engines runs only in c-test).
# The crash harness waits 4 times longer before each kill: its writer runs slower under valgrind.
VALGRIND_TESTS ?= $(basename $(notdir $(wildcard c-tests/*.c)))
valgrind: build
	@if ! command -v valgrind >/dev/null; then echo "valgrind: skipped (valgrind is not installed)"; exit 0; fi; \
	mkdir -p target/c-tests-valgrind/tmp; \
	for t in $(VALGRIND_TESTS); do \
	  $(CC) -std=c11 -g -O1 -Iinclude c-tests/$$t.c -L$(LIBDIR) -Wl,-rpath,$(CURDIR)/$(LIBDIR) -lrawblock \
	    -o target/c-tests-valgrind/$$t || exit 1; \
	  rc=0; RB_TEST_TMP=$(CURDIR)/target/c-tests-valgrind/tmp RB_CRASH_KILL_SCALE=4 RB_CRASH_REPLACE_ITERATIONS=10 valgrind -q --error-exitcode=9 --leak-check=full \
	    --errors-for-leak-kinds=definite target/c-tests-valgrind/$$t > target/c-tests-valgrind/$$t.log 2>&1 || rc=$$?; \
	  case $$rc in 0) echo "valgrind: $$t clean" ;; \
	    77) echo "valgrind: $$t skipped ($$(grep -m1 '^skip' target/c-tests-valgrind/$$t.log))" ;; \
	    *) cat target/c-tests-valgrind/$$t.log; echo "valgrind: $$t FAILED"; exit 1 ;; esac; \
	done

# c-test comes last: its closing line "N passed, N failed, N skipped" ends the run.
test: check-header abi-check man-check rust-test readme-example bench-smoke py-test examples-test install-test sanitize valgrind nvme-test c-test

# Fuzzing (issue 7): libFuzzer through cargo-fuzz, which needs a nightly toolchain.
# Each target runs FUZZ_SECONDS from the committed corpus; a crash's input goes into
# fuzz/regressions/<target>/ so `cargo test` replays it from then on.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := superblock checkpoint slot_header open_recover
CARGO_FUZZ := target/tools/bin/cargo-fuzz
$(CARGO_FUZZ):
	$(CARGO) install cargo-fuzz --version 0.13.2 --locked --root target/tools

fuzz: $(CARGO_FUZZ)
	@rustup run nightly rustc --version >/dev/null 2>&1 || { echo "fuzz: skipped (no nightly toolchain: rustup toolchain install nightly)"; exit 0; }
	for t in $(FUZZ_TARGETS); do \
	  PATH="$(CURDIR)/target/tools/bin:$$PATH" cargo +nightly fuzz run $$t fuzz/corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 || exit 1; \
	done

# The main job: how fast does recovery go on this device, and is it right.
# BENCH_ARGS adds rb-bench flags, e.g. BENCH_ARGS="--device-path /dev/nvme0n1 --cache-space-gb 512".
BENCH_FIXTURE ?= target/bench/fixture.img
BENCH_ARGS ?=
bench: build
	@if [ ! -e $(BENCH_FIXTURE) ]; then \
	  ./target/release/rb-bench --device-path $(BENCH_FIXTURE) --prepare --i-understand-this-overwrites-device $(BENCH_ARGS); fi
	./target/release/rb-bench --device-path $(BENCH_FIXTURE) --measure --io-engine posix io_uring --threads 1 8 \
	  --repeats 5 --queue-depth 128 $$(command -v fio >/dev/null && echo --compare-fio) --json target/bench/last.json $(BENCH_ARGS)

	$(MAKE) --no-print-directory bench-data

# The data path (issue 12): batched and single puts and gets against fio, at 1 MiB and 16 MiB
# slots, on the file fixture's disk and on a fast device: a loop device with --direct-io=on over
# a file in /dev/shm, attached here and always detached.
DATA_ARGS ?= --queue-depth 16 --batch 64 --data-gib 2
DATA_FIO := $$(command -v fio >/dev/null && echo --compare-fio)
bench-data: build
	@mkdir -p target/bench
	for slot in 1048576 16777216; do \
	  ./target/release/rb-bench --workload data --device-path target/bench/data.img --cache-space-gb 6 \
	    --slot-bytes $$slot --i-understand-this-overwrites-device $(DATA_FIO) $(DATA_ARGS) || exit 1; \
	done; rm -f target/bench/data.img
	@shm=/dev/shm/rawblock-bench-data.img; truncate -s 6G $$shm; \
	loop=$$(losetup -f --show --direct-io=on $$shm) || { rm -f $$shm; echo "bench-data: no loop device"; exit 0; }; \
	trap 'losetup -d $$loop; rm -f $$shm' EXIT; \
	for slot in 1048576 16777216; do \
	  ./target/release/rb-bench --workload data --device-path $$loop --slot-bytes $$slot \
	    --i-understand-this-overwrites-device $(DATA_FIO) $(DATA_ARGS) || exit 1; \
	done

# rb-bench end to end on a tiny fixture (correctness only; make test runs it).
bench-smoke: build
	@rm -f target/bench/smoke.img; mkdir -p target/bench
	./target/release/rb-bench --device-path target/bench/smoke.img --cache-space-gb 0.25 --prepare --i-understand-this-overwrites-device
	@if ./target/release/rb-bench --device-path target/bench/smoke.img --cache-space-gb 0.25 --prepare 2>/dev/null; then \
	  echo "bench-smoke: rb-bench formatted a device holding data without the overwrite flag"; exit 1; fi
	@echo "bench-smoke: --prepare without --i-understand-this-overwrites-device refused a device holding data"
	./target/release/rb-bench --device-path target/bench/smoke.img --measure --io-engine posix io_uring uring_cmd \
	  --threads 1 8 --repeats 1 --queue-depth 32
	@sum1=$$(sha256sum < target/bench/smoke.img); \
	  ./target/release/rb-bench --device-path target/bench/smoke.img --measure --io-engine posix --threads 1 --repeats 1 >/dev/null; \
	  [ "$$sum1" = "$$(sha256sum < target/bench/smoke.img)" ] || { echo "bench-smoke: --measure modified its fixture"; exit 1; }
	@echo "bench-smoke: --measure left the fixture byte-for-byte unchanged"
	@rm -f target/bench/smoke.img
	./target/release/rb-bench --workload data --device-path target/bench/smoke-data.img --cache-space-gb 0.1 \
	  --slot-bytes 65536 --data-gib 0.02 --batch 8 --queue-depth 8 | grep -c '^data: op=' | grep -qx 4 \
	  || { echo "bench-smoke: --workload data did not print its four op lines"; exit 1; }
	@echo "bench-smoke: --workload data ran put_many, get_many, get and put"
	@rm -f target/bench/smoke-data.img

# The C++ and Go examples: each formats, puts, checkpoints, reopens, recovers and verifies.
CXX ?= c++
examples-test: build
	@mkdir -p target/examples
	$(CXX) -std=c++17 -Wall -Wextra -Werror -Iinclude examples/cpp/roundtrip.cpp -L$(LIBDIR) \
	  -Wl,-rpath,$(CURDIR)/$(LIBDIR) -lrawblock -o target/examples/roundtrip-cpp
	./target/examples/roundtrip-cpp target/examples/cpp.img
	@if command -v go >/dev/null; then \
	  cd examples/go && GOFLAGS=-mod=mod CGO_LDFLAGS="-Wl,-rpath,$(CURDIR)/$(LIBDIR)" GOCACHE=$(CURDIR)/target/go-cache \
	    go run ./cmd/roundtrip $(CURDIR)/target/examples/go.img; \
	else echo "examples-test: Go example skipped (no Go toolchain; apt-get install golang-go to run it)"; fi

# make install PREFIX=/usr/local [DESTDIR=...]: the library with its SONAME and symlinks,
# the header, rawblock.pc for pkg-config, the rawblock tool, and the man pages (rawblock(1),
# rawblock(3) and one per function).
PREFIX ?= /usr/local
DESTDIR ?=
install: build man
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(LIBDIR)/rawblock $(DESTDIR)$(PREFIX)/bin/rawblock
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/man/man3
	install -m 0644 target/man/man1/*.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 target/man/man3/*.3 $(DESTDIR)$(PREFIX)/share/man/man3/
	install -m 0755 $(LIB) $(DESTDIR)$(PREFIX)/lib/librawblock.so.$(ABI).0.0
	ln -sf librawblock.so.$(ABI).0.0 $(DESTDIR)$(PREFIX)/lib/librawblock.so.$(ABI)
	ln -sf librawblock.so.$(ABI) $(DESTDIR)$(PREFIX)/lib/librawblock.so
	install -m 0644 include/rawblock.h $(DESTDIR)$(PREFIX)/include/rawblock.h
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$${prefix}/lib' 'includedir=$${prefix}/include' '' \
	  'Name: rawblock' 'Description: Fixed-size KV-cache slots on a raw block device, with fast index recovery' \
	  'Version: $(VERSION)' 'Libs: -L$${libdir} -lrawblock' 'Cflags: -I$${includedir}' \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/rawblock.pc

# Installs into a scratch prefix and builds a C program with pkg-config against it.
install-test:
	@rm -rf target/install-test && mkdir -p target/install-test
	$(MAKE) --no-print-directory install PREFIX=$(CURDIR)/target/install-test/prefix
	@readelf -d target/install-test/prefix/lib/librawblock.so.$(ABI).0.0 | grep -q 'SONAME.*\[librawblock.so.$(ABI)\]' \
	  || { echo "install-test: SONAME is not librawblock.so.$(ABI)"; exit 1; }
	PKG_CONFIG_PATH=$(CURDIR)/target/install-test/prefix/lib/pkgconfig sh -c \
	  '$(CC) -std=c11 -Wall -Werror c-tests/open.c -o target/install-test/open $$(pkg-config --cflags --libs rawblock) \
	   -Wl,-rpath,$(CURDIR)/target/install-test/prefix/lib'
	@mkdir -p target/install-test/tmp
	RB_TEST_TMP=$(CURDIR)/target/install-test/tmp ./target/install-test/open > target/install-test/open.log \
	  || { cat target/install-test/open.log; exit 1; }
	@ldd target/install-test/open | grep -q "librawblock.so.$(ABI) => $(CURDIR)/target/install-test/prefix/lib" \
	  || { echo "install-test: the program did not load the installed library"; ldd target/install-test/open; exit 1; }
	@echo "install-test: built with pkg-config against an installed copy (SONAME librawblock.so.$(ABI)) and ran"
	@p=target/install-test/prefix; \
	for f in $$(sed -n 's/^.*[ *]\(rb_[a-z_0-9]*\)(.*/\1/p' include/rawblock.h) rawblock; do \
	  [ -s $$p/share/man/man3/$$f.3 ] || { echo "install-test: $$f(3) was not installed"; exit 1; }; done; \
	[ -s $$p/share/man/man1/rawblock.1 ] || { echo "install-test: rawblock(1) was not installed"; exit 1; }; \
	if command -v groff >/dev/null && command -v man >/dev/null; then \
	  out=$$(groff -man -Tutf8 -ww -z $$p/share/man/man1/*.1 $$p/share/man/man3/*.3 2>&1); \
	  [ -z "$$out" ] || { echo "install-test: groff warns about the man pages:"; echo "$$out"; exit 1; }; \
	  MANPATH=$$p/share/man man -P cat rb_open 2>/dev/null | grep -q 'rb_status rb_open(const char \*path' \
	    || { echo "install-test: man rb_open did not show the installed page"; exit 1; }; \
	else echo "install-test: man pages not rendered (groff or man is not installed)"; fi; \
	echo "install-test: $$(ls $$p/share/man/man3 | wc -l) pages in man3 and rawblock(1) installed"
	@p=$(CURDIR)/target/install-test/prefix; img=$(CURDIR)/target/install-test/tool.img; rm -f $$img; \
	$$p/bin/rawblock format $$img --capacity 8M --slot-bytes 64K >/dev/null && \
	printf 'value' | $$p/bin/rawblock put $$img key && [ "$$($$p/bin/rawblock get $$img key)" = value ] && \
	$$p/bin/rawblock check $$img --deep | grep -q '^no damage found$$' \
	  || { echo "install-test: the installed rawblock tool failed"; exit 1; }; rm -f $$img
	@echo "install-test: the installed rawblock tool formatted, put, got and checked an image"

# ABI guard: the exported symbols and the header's declarations must match the committed
# expectations in c-tests/abi/. An intended change: run 'make abi-update' and commit them.
ABI_DIR := c-tests/abi
abi-snapshot: build
	@mkdir -p $(ABI_DIR) target/abi
	nm -D --defined-only $(LIB) | awk '$$2 == "T" {print $$3}' | sort > target/abi/symbols
	sed -e 's|//.*||' -e 's|[[:space:]]*$$||' include/rawblock.h | grep -v '^$$' | sed -n '/^#define RAWBLOCK_H/,$$p' > target/abi/decls

abi-check: abi-snapshot
	@diff -u $(ABI_DIR)/symbols target/abi/symbols && diff -u $(ABI_DIR)/header.decls target/abi/decls \
	  || { echo "abi-check: the ABI changed. If intended, bump RB_ABI_VERSION when incompatible, run 'make abi-update' and commit $(ABI_DIR)"; exit 1; }
	@echo "abi-check: $$(wc -l < $(ABI_DIR)/symbols) exported symbols and the header declarations match $(ABI_DIR)"

abi-update: abi-snapshot
	cp target/abi/symbols $(ABI_DIR)/symbols
	cp target/abi/decls $(ABI_DIR)/header.decls

clean:
	$(CARGO) clean
