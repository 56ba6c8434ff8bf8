"""Builds librawblock with cargo and puts it inside the package, so `pip install ./python`
gives a package that imports with no environment variable.

A setuptools build hook rather than setuptools-rust or maturin: the library is a plain
cdylib loaded with ctypes (no Python extension module), so all the build needs is one
`cargo build` and one copy; this adds no build dependency beyond setuptools itself.
The wheel is tagged py3-none-<platform>: it holds a native library, but no CPython ABI.

RAWBLOCK_PREBUILT_LIB=/path/to/librawblock.so bundles that file instead of running cargo.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
LIBRARY = "librawblock.so"


def built_library() -> Path:
    """The librawblock.so to bundle: a prebuilt one, or cargo's release build of the checkout."""
    prebuilt = os.environ.get("RAWBLOCK_PREBUILT_LIB")
    if prebuilt:
        return Path(prebuilt)
    manifest = HERE.parent / "Cargo.toml"
    if not manifest.is_file():
        sys.exit(f"rawblock: no {manifest} to build librawblock from; "
                 "set RAWBLOCK_PREBUILT_LIB to a built librawblock.so")
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [cargo, "build", "--release", "--lib", "--manifest-path", str(manifest)]
    try:
        subprocess.run(cmd, check=True)
    except FileNotFoundError:
        sys.exit("rawblock: building librawblock needs a Rust toolchain (cargo; https://rustup.rs), "
                 "or RAWBLOCK_PREBUILT_LIB")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or HERE.parent / "target")
    return target / "release" / LIBRARY


class BuildPyWithLibrary(build_py):
    """build_py, then the library next to the package's modules."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "rawblock" / LIBRARY
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built_library(), dest)
        dest.chmod(0o755)


class BinaryDistribution(Distribution):
    """Carries a native library: installed as platform code (platlib), wheel not pure."""

    def has_ext_modules(self) -> bool:
        return True


class PlatformWheel(bdist_wheel):
    """A platform wheel (it carries a native library) for any Python 3 (no extension module)."""

    def get_tag(self) -> tuple:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
