"""The package as a user installs it (issue 15): the library inside, no environment variable
needed, RAWBLOCK_LIB as an override, and a docstring and type hints on every public name.

`make py-test` runs these against the wheel installed in a fresh venv (it sets
RAWBLOCK_EXPECT_INSTALLED=1 and RAWBLOCK_WHEEL); from a checkout the installed-only checks skip.
"""

import dataclasses
import enum
import inspect
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rawblock

INSTALLED = os.environ.get("RAWBLOCK_EXPECT_INSTALLED") == "1"
needs_install = pytest.mark.skipif(not INSTALLED, reason="checks the installed wheel; make py-test sets RAWBLOCK_EXPECT_INSTALLED=1")
SOURCE_PACKAGE = Path(__file__).resolve().parents[1] / "rawblock"


def _import_in_subprocess(env_update, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("RAWBLOCK_LIB", "PYTHONPATH")}
    env.update(env_update)
    code = "import rawblock; print(rawblock.__file__); print(rawblock.library_path()); print(rawblock.version())"
    p = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.split("\n")[:3]


@needs_install
def test_the_installed_package_is_tested_not_the_source_tree():
    package = Path(rawblock.__file__).resolve().parent
    assert package != SOURCE_PACKAGE.resolve()
    assert "site-packages" in package.parts
    assert "RAWBLOCK_LIB" not in os.environ
    assert Path(rawblock.library_path()) == (package / "librawblock.so").resolve()
    assert (package / "py.typed").is_file()


@needs_install
def test_import_needs_no_environment_variable_and_no_rust(tmp_path):
    # No cargo on PATH, no RAWBLOCK_LIB, run from an unrelated directory.
    file, lib, version = _import_in_subprocess({"PATH": "/usr/bin:/bin"}, tmp_path)
    package = Path(file).resolve().parent
    assert Path(lib) == (package / "librawblock.so").resolve()
    assert version == rawblock.__version__


@needs_install
def test_the_wheel_carries_the_library_for_any_python3():
    wheel = Path(os.environ["RAWBLOCK_WHEEL"])
    assert "-py3-none-linux_" in wheel.name, wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "rawblock/librawblock.so" in names and "rawblock/py.typed" in names
    assert "rawblock/__init__.py" in names and "rawblock/_lib.py" in names


def test_rawblock_lib_stays_an_override(tmp_path):
    other = tmp_path / "elsewhere" / "librawblock.so"
    other.parent.mkdir()
    shutil.copyfile(rawblock.library_path(), other)
    _, lib, _ = _import_in_subprocess(
        {"RAWBLOCK_LIB": str(other), "PYTHONPATH": str(Path(rawblock.__file__).resolve().parents[1])}, tmp_path)
    assert Path(lib) == other.resolve()


def test_a_missing_override_is_named_in_the_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(RAWBLOCK_LIB=str(tmp_path / "nope.so"), PYTHONPATH=str(Path(rawblock.__file__).resolve().parents[1]))
    p = subprocess.run([sys.executable, "-c", "import rawblock"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode != 0 and "nope.so: not found" in p.stderr


def _public_members(cls):
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in ("__init__", "__getitem__", "__setitem__", "__delitem__",
                                                 "__contains__", "__len__", "__iter__", "__enter__", "__exit__"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if inspect.isfunction(member):
            yield name, member


def _auto_doc(obj):
    """The docstring dataclasses and enums write when a class has none."""
    doc = obj.__doc__ or ""
    return doc.startswith(obj.__name__ + "(") or doc in ("An enumeration.", "")


def test_every_public_name_has_a_docstring_and_type_hints():
    problems = []
    for name in rawblock.__all__:
        obj = getattr(rawblock, name)
        if name == "__version__":
            assert isinstance(obj, str)
            continue
        if inspect.isclass(obj):
            if _auto_doc(obj):
                problems.append(f"{name}: no docstring")
            members = _public_members(obj)
            if dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum):
                members = [(n, m) for n, m in members if n != "__init__"]  # generated
            if issubclass(obj, Exception):
                members = [(n, m) for n, m in members if n != "__init__" or m.__qualname__.startswith(name)]
        else:
            members = [(name, obj)]
        for mname, fn in members:
            where = f"{name}.{mname}" if inspect.isclass(obj) else name
            if not (fn.__doc__ or "").strip():
                problems.append(f"{where}: no docstring")
            sig = inspect.signature(fn)
            for p in sig.parameters.values():
                if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty:
                    problems.append(f"{where}: parameter {p.name} has no type hint")
            if sig.return_annotation is inspect.Signature.empty:
                problems.append(f"{where}: no return type hint")
    assert not problems, "\n".join(problems)
