#!/usr/bin/env bash
# make nvme-test: NVMe passthrough for real. Boots a QEMU guest (TCG: no KVM needed) with an
# emulated NVMe controller and one namespace of 4096-byte LBAs, and runs there the engine,
# recovery and data C tests with RB_ENGINE_URING_CMD (/dev/ng0n1) and with the block
# io_uring engine (/dev/nvme0n1) on the same namespace, then rb-bench with both.
#
# What it needs is fetched with apt-get download and unpacked with dpkg-deb under
# target/nvme-test/ (nothing is installed system-wide): qemu-system-x86 with the libraries
# this machine lacks, busybox-static, and the Debian kernel linux-image-amd64 names (6.1 on
# bookworm: only its NVMe modules and their CRC dependencies are unpacked).
#
# The last line is "nvme: N passed, M failed". Where QEMU cannot run at all it says why and
# skips, which fails when RB_REQUIRE_NVME=1 (.ci/run sets it).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/target/nvme-test"
work="$cache/run"
mkdir -p "$cache/debs"

skip() {
    echo "nvme-test: skipped: $*"
    if [ "${RB_REQUIRE_NVME:-0}" = 1 ]; then
        echo "nvme-test: RB_REQUIRE_NVME=1: a skip is a failure"
        echo "nvme: 0 passed, 1 failed"
        exit 1
    fi
    echo "nvme: 0 passed, 0 failed"
    exit 0
}

# apt-get download PKG... into the cache; one apt-get update when the lists are stale.
fetch_debs() {
    command -v apt-get >/dev/null || return 1
    (cd "$cache/debs" && apt-get download "$@" >/dev/null 2>"$cache/apt.err") && return 0
    [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 || return 1
    (cd "$cache/debs" && apt-get download "$@" >/dev/null 2>"$cache/apt.err")
}

# --- QEMU: the machine's own, or Debian's unpacked under target/ with the libraries it lacks.
qemu=$(command -v qemu-system-x86_64 || true)
qemu_env=()
qemu_dirs=()
if [ -z "$qemu" ]; then
    qroot="$cache/qemu-root"
    if [ ! -x "$qroot/usr/bin/qemu-system-x86_64" ]; then
        command -v apt-get >/dev/null || skip "no qemu-system-x86_64 and no apt-get to fetch it"
        # Exactly the packages this machine lacks (a simulated install names them).
        pkgs=$(apt-get install -s --no-install-recommends qemu-system-x86 2>/dev/null | awk '/^Inst/{print $2}')
        [ -n "$pkgs" ] || skip "apt-get cannot resolve qemu-system-x86: $(apt-get install -s qemu-system-x86 2>&1 | tail -1)"
        echo "nvme-test: fetching $(echo $pkgs | wc -w) packages for QEMU into target/nvme-test"
        rm -f "$cache"/debs/*.deb
        # shellcheck disable=SC2086
        fetch_debs $pkgs || skip "apt-get download failed: $(tail -1 "$cache/apt.err")"
        rm -rf "$qroot.tmp" && mkdir -p "$qroot.tmp"
        for d in "$cache"/debs/*.deb; do dpkg-deb -x "$d" "$qroot.tmp" || skip "dpkg-deb -x $d failed"; done
        rm -rf "$qroot" && mv "$qroot.tmp" "$qroot"
    fi
    qemu="$qroot/usr/bin/qemu-system-x86_64"
    qemu_env=(env "LD_LIBRARY_PATH=$qroot/usr/lib/x86_64-linux-gnu:$qroot/lib/x86_64-linux-gnu")
    qemu_dirs=(-L "$qroot/usr/share/qemu" -L "$qroot/usr/share/seabios" -L "$qroot/usr/lib/ipxe/qemu")
fi
"${qemu_env[@]}" "$qemu" --version >"$cache/qemu-version.txt" 2>&1 || skip "QEMU does not run here: $(tail -1 "$cache/qemu-version.txt")"

# --- The guest kernel and busybox.
kroot="$cache/kernel"
if ! ls "$kroot"/boot/vmlinuz-* >/dev/null 2>&1; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1)
    [ -n "$kpkg" ] || skip "apt-cache names no kernel for linux-image-amd64"
    echo "nvme-test: fetching $kpkg"
    rm -f "$cache"/debs/*.deb
    fetch_debs "$kpkg" || skip "apt-get download $kpkg failed: $(tail -1 "$cache/apt.err")"
    rm -rf "$kroot.tmp" && mkdir -p "$kroot.tmp"
    dpkg-deb --fsys-tarfile "$cache"/debs/linux-image-*.deb | tar -x -C "$kroot.tmp" --wildcards \
        './boot/vmlinuz-*' './lib/modules/*/kernel/lib/crc64*' './lib/modules/*/kernel/crypto/crc64*' \
        './lib/modules/*/kernel/crypto/crct10dif*' './lib/modules/*/kernel/lib/crc-t10dif*' \
        './lib/modules/*/kernel/block/t10-pi*' './lib/modules/*/kernel/drivers/nvme/host/nvme*' \
        || skip "unpacking $kpkg failed"
    rm -rf "$kroot" && mv "$kroot.tmp" "$kroot"
fi
busybox="$cache/busybox/bin/busybox"
if [ ! -x "$busybox" ]; then
    rm -f "$cache"/debs/*.deb
    fetch_debs busybox-static || skip "apt-get download busybox-static failed: $(tail -1 "$cache/apt.err")"
    rm -rf "$cache/busybox" && dpkg-deb -x "$cache"/debs/busybox-static_*.deb "$cache/busybox" || skip "unpacking busybox failed"
fi
vmlinuz=$(ls "$kroot"/boot/vmlinuz-* | head -1)
moddir=$(ls -d "$kroot"/lib/modules/*/kernel | head -1)

# --- The initramfs: busybox, the modules, the test programs and rb-bench with their libraries.
libdir="$root/target/release"
[ -e "$libdir/librawblock.so" ] && [ -x "$libdir/rb-bench" ] || { echo "nvme-test: run make build first"; exit 2; }
rm -rf "$work" && mkdir -p "$work/initramfs"/{bin,lib,modules,proc,sys,dev,tmp} "$work/bin"
ird="$work/initramfs"
cp "$busybox" "$ird/bin/busybox"
for m in lib/crc64 crypto/crc64_rocksoft_generic lib/crc64-rocksoft crypto/crct10dif_common \
         crypto/crct10dif_generic lib/crc-t10dif block/t10-pi drivers/nvme/host/nvme-core drivers/nvme/host/nvme; do
    cp "$moddir/$m.ko" "$ird/modules/" || { echo "nvme-test: module $m missing from the kernel package"; exit 2; }
done
for t in engines nvme stress; do
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -O1 -I"$root/include" "$root/c-tests/$t.c" -L"$libdir" -lrawblock -lpthread \
        -o "$work/bin/$t" || { echo "nvme-test: c-tests/$t.c does not compile"; exit 2; }
done
cp "$libdir/rb-bench" "$work/bin/rb-bench"
# The library's unit tests that need a namespace (engine::uring_cmd::tests::nvme_guest_*).
unit=$(cd "$root" && ${CARGO:-cargo} test --release --lib --no-run 2>&1 | sed -n 's/.*Executable unittests src\/lib.rs (\(.*\))$/\1/p')
[ -n "$unit" ] && [ -x "$root/$unit" ] || { echo "nvme-test: cannot build the library's unit tests"; exit 2; }
cp "$root/$unit" "$work/bin/rawblock-unit"
soname=$(readelf -d "$libdir/librawblock.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
strip -o "$ird/lib/${soname:-librawblock.so}" "$libdir/librawblock.so"
for b in "$work"/bin/*; do
    strip -o "$ird/bin/$(basename "$b")" "$b"
    # The host's C library and friends, at the paths the programs' interpreter expects.
    for l in $(ldd "$b" | awk '/=> \//{print $3} /^\t\/lib/{print $1}'); do
        case "$l" in *librawblock*) continue ;; esac
        mkdir -p "$ird$(dirname "$l")" && cp -L "$l" "$ird$l"
    done
done
cp "$root/c-tests/nvme-guest.sh" "$ird/init" && chmod +x "$ird/init"
(cd "$ird" && find . | sort | python3 "$root/c-tests/newc.py" > "$work/initrd.cpio") || { echo "nvme-test: building the initramfs failed"; exit 2; }

# --- The namespace: 192 MiB, 4096-byte LBAs, fresh every run.
rm -f "$work/nvme.img" && truncate -s 192M "$work/nvme.img"
echo "nvme-test: booting $(basename "$vmlinuz") under $(head -1 "$cache/qemu-version.txt") (TCG, -smp 2, 1 GiB)"
start=$(date +%s)
timeout "${RB_NVME_TIMEOUT:-900}" "${qemu_env[@]}" "$qemu" "${qemu_dirs[@]}" -machine q35 -accel tcg -m 1024 -smp 2 \
    -nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$work/initrd.cpio" \
    -append "console=ttyS0 quiet panic=-1" \
    -drive "file=$work/nvme.img,if=none,id=nv0,format=raw" -device nvme,serial=rb0,id=nvme0 \
    -device nvme-ns,drive=nv0,bus=nvme0,nsid=1,logical_block_size=4096,physical_block_size=4096 \
    </dev/null >"$work/console.log" 2>&1
qrc=$?
tr -d '\r' < "$work/console.log" > "$work/console.txt"
sed -n '/^guest: /,$p' "$work/console.txt" | grep -v '^\[' | sed 's/^/  /'
echo "nvme-test: QEMU exited with $qrc after $(( $(date +%s) - start )) s (console: target/nvme-test/run/console.txt)"
if ! grep -q '^guest: started' "$work/console.txt"; then
    echo "nvme-test: the guest never started its tests"; tail -20 "$work/console.txt"
    echo "nvme: 0 passed, 1 failed"; exit 1
fi
pass=$(grep -c '^RESULT .* PASS$' "$work/console.txt")
fail=$(grep -c '^RESULT .* FAIL' "$work/console.txt")
skipped=$(grep -c '^RESULT .* SKIP$' "$work/console.txt")
if ! grep -q '^guest: done' "$work/console.txt"; then
    echo "nvme-test: the guest did not finish (timeout or crash)"; fail=$((fail + 1))
fi
# Every program must run for real here: a skip inside the guest is a failure.
[ "$skipped" -eq 0 ] || { echo "nvme-test: $skipped program(s) skipped inside the guest"; fail=$((fail + skipped)); }
# The guest's ratios, uring_cmd over io_uring (TCG emulates the CPU: they say little about a real drive).
awk '/^ +io_uring\(qd=[0-9]+\): median/ {for (i = 1; i <= NF; i++) if ($i ~ /^headers\/s=/) { split($i, a, "="); io = a[2] } }
     /^ +uring_cmd\(qd=[0-9]+\): median/ {for (i = 1; i <= NF; i++) if ($i ~ /^headers\/s=/) { split($i, a, "="); uc = a[2] } }
     /^ +data: .* engine=/ { for (i = 1; i <= NF; i++) if ($i ~ /^engine=/) { split($i, a, "="); eng = a[2] } }
     /^ +data: op=/ { split($2, o, "="); for (i = 1; i <= NF; i++) if ($i ~ /^GB\/s=/) { split($i, a, "="); rate[eng "," o[2]] = a[2] }; ops[o[2]] = 1 }
     END {
       line = "nvme-test: uring_cmd/io_uring in the guest (TCG, noisy):"
       if (io > 0) line = line sprintf(" recovery headers/s %.2fx", uc / io)
       for (op in ops) if (rate["io_uring," op] > 0) line = line sprintf(", %s %.2fx", op, rate["uring_cmd," op] / rate["io_uring," op])
       print line
     }' "$work/console.txt"
echo "nvme: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
