#!/usr/bin/env python3
"""Writes a cpio archive in the kernel's initramfs format (newc) to stdout from the paths on
stdin (relative to the working directory): files, directories and symlinks, owned by root."""
import os
import stat
import sys

out = sys.stdout.buffer


def entry(name: str, mode: int, data: bytes, ino: int, nlink: int = 1) -> None:
    name_b = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0)
    out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name_b)
    out.write(b"\0" * (-(110 + len(name_b)) % 4))
    out.write(data)
    out.write(b"\0" * (-len(data) % 4))


for ino, line in enumerate(sys.stdin, start=1):
    path = line.rstrip("\n")
    name = os.path.normpath(path)
    if name == ".":
        continue
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        entry(name, st.st_mode, os.readlink(path).encode(), ino)
    elif stat.S_ISDIR(st.st_mode):
        entry(name, st.st_mode, b"", ino, 2)
    elif stat.S_ISREG(st.st_mode):
        with open(path, "rb") as f:
            entry(name, st.st_mode, f.read(), ino)
entry("TRAILER!!!", 0, b"", 0)
