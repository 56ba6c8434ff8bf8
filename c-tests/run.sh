#!/usr/bin/env bash
# Builds every c-tests/*.c against include/rawblock.h and the release cdylib,
# runs each, and ends with "N passed, N failed, N skipped".
# A test exits 0 to pass, 77 to skip (printing why), anything else to fail.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cc=${CC:-cc}
# RB_TEST_CFLAGS adds flags (e.g. sanitizers); RB_TEST_OUT separates such builds.
out="$root/${RB_TEST_OUT:-target/c-tests}"
export RB_TEST_TMP="$out/tmp"
mkdir -p "$out" "$RB_TEST_TMP"
pass=0 fail=0 skip=0
for src in "$root"/c-tests/*.c; do
  name=$(basename "$src" .c)
  if ! "$cc" -std=c11 -Wall -Wextra -Werror -g -O1 ${RB_TEST_CFLAGS:-} -I"$root/include" "$src" \
       -L"$root/target/release" -Wl,-rpath,"$root/target/release" -lrawblock -lpthread \
       -o "$out/$name" 2>"$out/$name.build.log"; then
    echo "FAIL $name (does not compile)"; cat "$out/$name.build.log"; fail=$((fail + 1)); continue
  fi
  timeout 300 "$out/$name" >"$out/$name.log" 2>&1
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
