#!/usr/bin/env bash
# Builds every c-tests/*.c against include/rawblock.h and the release cdylib,
# runs each, and ends with "N passed, N failed, N skipped".
# A test exits 0 to pass, 77 to skip (printing why), anything else to fail.
# Each program is a list of cases (see c-tests/test.h). One program, or one of its cases:
#   bash c-tests/run.sh data                # c-tests/data.c only
#   bash c-tests/run.sh data stale_header   # its test_stale_header case only
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
program=${1:-}
case_name=${2:-}
if [ -n "$program" ] && [ ! -e "$root/c-tests/$program.c" ]; then
  echo "c-tests: no program c-tests/$program.c (the programs: $(cd "$root/c-tests" && echo *.c | sed 's/\.c//g'))" >&2
  exit 2
fi
cc=${CC:-cc}
# RB_TEST_CFLAGS adds flags (e.g. sanitizers); RB_TEST_OUT separates such builds.
out="$root/${RB_TEST_OUT:-target/c-tests}"
# The release cdylib. Its SONAME is librawblock.so.<ABI>: a program linked with -lrawblock asks
# the loader for that name, which 'make build' links next to it and a plain 'cargo build' does not.
libdir="$root/target/release"
if [ ! -e "$libdir/librawblock.so" ]; then
  echo "c-tests: $libdir/librawblock.so is missing; build it first: make build (or cargo build --release)" >&2
  exit 2
fi
if ! command -v readelf >/dev/null; then
  echo "c-tests: readelf (binutils) is needed to read the library's SONAME" >&2
  exit 2
fi
soname=$(readelf -d "$libdir/librawblock.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
if [ -n "$soname" ] && [ "$soname" != librawblock.so ] && [ ! -e "$libdir/$soname" ]; then
  ln -sf librawblock.so "$libdir/$soname"
  echo "c-tests: linked target/release/$soname -> librawblock.so (the SONAME the tests load; make build does the same)"
fi
export RB_TEST_TMP="$out/tmp"
mkdir -p "$out" "$RB_TEST_TMP"
# A loop device with 4096-byte sectors for the tests that also run on a block device.
loop=""
if [ "$(id -u)" != 0 ]; then
  export RB_TEST_BLOCK_DEVICE_SKIP="not root: cannot attach a loop device"
elif ! command -v losetup >/dev/null; then
  export RB_TEST_BLOCK_DEVICE_SKIP="losetup is not installed"
else
  truncate -s 96M "$RB_TEST_TMP/loop-backing.img"
  if loop=$(losetup -f --show --direct-io=on --sector-size 4096 "$RB_TEST_TMP/loop-backing.img" 2>"$RB_TEST_TMP/losetup.err"); then
    trap 'losetup -d "$loop"; rm -f "$RB_TEST_TMP/loop-backing.img"' EXIT
    export RB_TEST_BLOCK_DEVICE="$loop"
    echo "block device tests on $loop (4096-byte sectors)"
  else
    loop=""
    export RB_TEST_BLOCK_DEVICE_SKIP="losetup failed: $(cat "$RB_TEST_TMP/losetup.err")"
  fi
fi
pass=0 fail=0 skip=0
for src in "$root"/c-tests/${program:-*}.c; do
  name=$(basename "$src" .c)
  if ! "$cc" -std=c11 -Wall -Wextra -Werror -g -O1 ${RB_TEST_CFLAGS:-} -I"$root/include" "$src" \
       -L"$libdir" -Wl,-rpath,"$libdir" -lrawblock -lpthread \
       -o "$out/$name" 2>"$out/$name.build.log"; then
    echo "FAIL $name (does not compile)"; cat "$out/$name.build.log"; fail=$((fail + 1)); continue
  fi
  timeout 300 "$out/$name" ${case_name:+"$case_name"} >"$out/$name.log" 2>&1
  rc=$?
  sed 's/^/  /' "$out/$name.log"
  case $rc in
    0) echo "PASS $name"; pass=$((pass + 1)) ;;
    77) echo "SKIP $name"; skip=$((skip + 1)) ;;
    *) echo "FAIL $name (exit $rc)"; fail=$((fail + 1)) ;;
  esac
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
