# rawblock: build, test, bench. `make test` is what CI runs (via .ci/run).
CARGO    ?= cargo
PYTHON   ?= python3
CC       ?= cc
CBINDGEN_VERSION := 0.29.4
CBINDGEN := target/tools/bin/cbindgen
LIBDIR   := target/release
LIB      := $(LIBDIR)/librawblock.so

.PHONY: all build header check-header test rust-test c-test py-test readme-example sanitize valgrind fuzz bench bench-smoke clean

all: build

build:
	$(CARGO) build --release --lib --bins

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

rust-test:
	$(CARGO) test --release

c-test: build
	CC="$(CC)" bash c-tests/run.sh

# The C example in README.md must compile and run as written.
readme-example: build
	@mkdir -p target
	awk '/^```c$$/{on=1;next} /^```$$/{if(on){exit}} on' README.md > target/readme-example.c
	$(CC) -std=c11 -Wall -Werror -Iinclude target/readme-example.c -L$(LIBDIR) -Wl,-rpath,$(CURDIR)/$(LIBDIR) -lrawblock -o target/readme-example
	./target/readme-example

# The Python package's tests, in a venv under target/ so a fresh machine needs nothing by hand.
VENV := target/venv
$(VENV)/bin/pytest:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet pytest

py-test: build $(VENV)/bin/pytest
	cd python && RAWBLOCK_LIB=$(CURDIR)/$(LIB) PYTHONPATH=. ../$(VENV)/bin/python -m pytest -q tests

# The C tests again under AddressSanitizer + UndefinedBehaviorSanitizer (leaks included).
sanitize: build
	RB_TEST_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
	  RB_TEST_OUT=target/c-tests-asan CC="$(CC)" bash c-tests/run.sh

# valgrind memcheck over the C tests that do not fork or spin many threads.
VALGRIND_TESTS := open baddev
valgrind: build
	@if ! command -v valgrind >/dev/null; then echo "valgrind: skipped (valgrind is not installed)"; exit 0; fi; \
	mkdir -p target/c-tests-valgrind/tmp; \
	for t in $(VALGRIND_TESTS); do \
	  $(CC) -std=c11 -g -O1 -Iinclude c-tests/$$t.c -L$(LIBDIR) -Wl,-rpath,$(CURDIR)/$(LIBDIR) -lrawblock \
	    -o target/c-tests-valgrind/$$t || exit 1; \
	  RB_TEST_TMP=$(CURDIR)/target/c-tests-valgrind/tmp valgrind -q --error-exitcode=9 --leak-check=full \
	    --errors-for-leak-kinds=definite target/c-tests-valgrind/$$t > target/c-tests-valgrind/$$t.log 2>&1 \
	    || { cat target/c-tests-valgrind/$$t.log; echo "valgrind: $$t FAILED"; exit 1; }; \
	  echo "valgrind: $$t clean"; \
	done

# c-test comes last: its closing line "N passed, N failed, N skipped" ends the run.
test: check-header rust-test readme-example bench-smoke py-test sanitize valgrind c-test

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

clean:
	$(CARGO) clean
