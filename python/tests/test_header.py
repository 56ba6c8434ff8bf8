"""python/rawblock/_lib.py against include/rawblock.h (issue 10 item 1).

_lib.py copies the header's constants, structs and prototypes by hand. This test makes the
header the authority: it reads the header's declarations, writes a C probe that prints
sizeof/_Alignof/offsetof of every struct and field and the value of every #define, compiles
it with the system C compiler against the header, and compares the lot with ctypes. Every
declaration the header has must be matched in Python, and every one Python has must be in
the header; a declaration this test cannot read fails it rather than going unchecked.
"""

import ctypes
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import rawblock
from rawblock import _lib

# `make py-test` sets RAWBLOCK_HEADER; then a missing header or compiler fails instead of skipping.
REQUIRED = bool(os.environ.get("RAWBLOCK_HEADER"))
HEADER = Path(os.environ.get("RAWBLOCK_HEADER") or Path(__file__).resolve().parents[2] / "include" / "rawblock.h")
CC = os.environ.get("CC") or "cc"

# C scalar types the header may use -> their ctypes type.
SCALARS = {
    "size_t": ctypes.c_size_t, "bool": ctypes.c_bool, "char": ctypes.c_char,
    "int8_t": ctypes.c_int8, "uint8_t": ctypes.c_uint8, "int16_t": ctypes.c_int16, "uint16_t": ctypes.c_uint16,
    "int32_t": ctypes.c_int32, "uint32_t": ctypes.c_uint32, "int64_t": ctypes.c_int64, "uint64_t": ctypes.c_uint64,
}

# Header constants that are neither an enum member nor a flag keyword, and where Python uses them.
PLAIN_CONSTANTS = {
    "RB_ABI_VERSION": "_lib.load() refuses a library of another ABI",
    "RB_HEADER_KEY_INLINE": "the length of SlotHeader.key",
    "RB_ENGINE_NOTE_BYTES": "the length of DeviceInfo.engine_note",
}


@dataclass
class Header:
    defines: dict = field(default_factory=dict)  # name -> value text
    typedefs: dict = field(default_factory=dict)  # alias -> C type
    opaque: set = field(default_factory=set)  # struct tags declared without a body
    structs: dict = field(default_factory=dict)  # tag -> [(field, C type, array length text or None)]
    functions: dict = field(default_factory=dict)  # name -> (return C type, [parameter C types])


def _norm(t: str) -> str:
    return re.sub(r"\s*\*\s*", " *", re.sub(r"\s+", " ", t)).strip()


def _split_decl(decl: str) -> tuple[str, str, str]:
    """'const struct rb_options *opts' -> ('const struct rb_options *', 'opts', None); 'uint8_t key[16]' -> array."""
    m = re.fullmatch(r"(.*?[\w*])\s*\b(\w+)\s*(?:\[\s*([^\]]+?)\s*\])?", decl.strip(), re.S)
    assert m and m.group(1).strip(), f"cannot read the declaration {decl!r}"
    return _norm(m.group(1)), m.group(2), m.group(3)


def parse(path: Path) -> Header:
    text = path.read_text()
    h = Header()
    guard = re.search(r"^\s*#\s*ifndef\s+(\w+)", text, re.M).group(1)
    for name, value in re.findall(r"^\s*#\s*define\s+(\w+)(.*)$", text, re.M):
        value = re.sub(r"//.*|/\*.*?\*/", "", value).strip()
        if name == guard and not value:
            continue
        assert value and "(" not in name, f"#define {name} {value!r}: the probe handles object-like constants only"
        h.defines[name] = value
    # Everything else from the preprocessed header (comments and the __cplusplus block gone),
    # without its #includes so that only rawblock's own declarations remain.
    src = re.sub(r"^\s*#\s*include\b.*$", "", text, flags=re.M)
    cpp = [*shlex.split(CC), "-E", "-P", "-x", "c", "-"]
    code = subprocess.run(cpp, input=src, capture_output=True, text=True, check=True).stdout
    depth, start, decls = 0, 0, []
    for i, ch in enumerate(code):
        depth += ch == "{"
        depth -= ch == "}"
        if ch == ";" and depth == 0:
            decls.append(code[start:i].strip())
            start = i + 1
    assert not code[start:].strip(), f"trailing text in the header: {code[start:]!r}"
    for d in decls:
        d = re.sub(r"\s+", " ", d)
        if m := re.fullmatch(r"typedef struct (\w+) \{(.*)\} (\w+)", d):
            tag, body, alias = m.groups()
            assert tag == alias, d
            fields = [f.strip() for f in body.split(";") if f.strip()]
            for f in fields:
                assert not re.search(r"[(){}:]", f), f"struct {tag}: cannot read the field {f!r} (extend the probe)"
            h.structs[tag] = [_split_decl(f) for f in fields]
        elif m := re.fullmatch(r"typedef struct (\w+) (\w+)", d):
            assert m.group(1) == m.group(2), d
            h.opaque.add(m.group(1))
        elif m := re.fullmatch(r"typedef ([\w ]+) (\w+)", d):
            h.typedefs[m.group(2)] = _norm(m.group(1))
        elif m := re.fullmatch(r"([\w *]+?)\s*\b(rb_\w+)\s*\((.*)\)", d):
            params = [] if m.group(3).strip() in ("", "void") else [_split_decl(p)[0] for p in m.group(3).split(",")]
            h.functions[m.group(2)] = (_norm(m.group(1)), params)
        else:
            pytest.fail(f"the header declares something this test cannot check; extend it: {d!r}")
    return h


PROBE_PRELUDE = r"""
#include <stddef.h>
#include <stdio.h>
#include "rawblock.h"
static void def_i(const char *n, long long v) { printf("define %s %lld\n", n, v); }
static void def_u(const char *n, unsigned long long v) { printf("define %s %llu\n", n, v); }
static void def_s(const char *n, const char *v) { printf("define %s \"%s\"\n", n, v); }
#define DEF(n) _Generic((n), char *: def_s, const char *: def_s, unsigned: def_u, unsigned long: def_u, \
                        unsigned long long: def_u, default: def_i)(#n, (n))
#define STRUCT(s) printf("struct %s %zu %zu\n", #s, sizeof(struct s), _Alignof(struct s))
#define FIELD(s, f) printf("field %s %s %zu %zu\n", #s, #f, offsetof(struct s, f), sizeof(((struct s *)0)->f))
int main(void) {
"""


@pytest.fixture(scope="module")
def header():
    skip = pytest.fail if REQUIRED else pytest.skip
    if not HEADER.exists():
        skip(f"{HEADER} not found (an installed package? run from a checkout or set RAWBLOCK_HEADER)")
    if not shutil.which(shlex.split(CC)[0]):
        skip(f"no C compiler ({CC}); set CC")
    return parse(HEADER)


@pytest.fixture(scope="module")
def probe(header, tmp_path_factory):
    """{'define': {name: value}, 'struct': {tag: (size, align)}, 'field': {(tag, name): (offset, size)}}"""
    lines = [PROBE_PRELUDE]
    lines += [f"    DEF({n});" for n in header.defines]
    for tag, fields in header.structs.items():
        lines.append(f"    STRUCT({tag});")
        lines += [f"    FIELD({tag}, {name});" for _, name, _ in fields]
    lines.append("    return 0;\n}\n")
    d = tmp_path_factory.mktemp("probe")
    (d / "probe.c").write_text("\n".join(lines))
    cc = subprocess.run([*shlex.split(CC), "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{HEADER.parent}",
                         str(d / "probe.c"), "-o", str(d / "probe")], capture_output=True, text=True)
    assert cc.returncode == 0, f"the probe does not compile:\n{cc.stderr}"
    out = {"define": {}, "struct": {}, "field": {}}
    for line in subprocess.run([str(d / "probe")], capture_output=True, text=True, check=True).stdout.splitlines():
        kind, *rest = line.split(" ", 3 if line.startswith("field") else 2)
        if kind == "define":
            name, value = rest
            out["define"][name] = value[1:-1] if value.startswith('"') else int(value)
        elif kind == "struct":
            out["struct"][rest[0]] = tuple(map(int, rest[1].split()))
        else:
            tag, name, nums = rest
            out["field"][(tag, name)] = tuple(map(int, nums.split()))
    assert len(out["define"]) == len(header.defines)
    return out


def _scalar(header: Header, ctype: str):
    base = re.sub(r"\bconst\b", "", ctype).strip()
    base = header.typedefs.get(base, base)
    return SCALARS.get(base)


def _expected_ctype(header: Header, ctype: str):
    """The ctypes type _lib should use for a parameter, return or field of C type `ctype`."""
    t = re.sub(r"\bconst\b", "", ctype).strip()
    if t == "void":
        return None
    if t.endswith("*"):
        pointee = t[:-1].strip()
        if pointee == "char":
            return ctypes.c_char_p
        if pointee == "void" or pointee.removeprefix("struct ") in header.opaque:
            return ctypes.c_void_p  # untyped memory, or a handle
        inner = _expected_ctype(header, pointee)
        assert inner is not None, f"no ctypes equivalent for {ctype!r}"
        return ctypes.POINTER(inner)
    if t.startswith("struct "):
        return _lib.STRUCTS.get(t[len("struct "):])
    return _scalar(header, t)


def test_every_define_is_in_lib_with_the_compiled_value(header, probe):
    ours = {n: v for n, v in vars(_lib).items() if re.fullmatch(r"RB_[A-Z0-9_]+", n)}
    problems = [f"{n} = {v!r} in the header, missing from _lib.py" for n, v in probe["define"].items() if n not in ours]
    problems += [f"_lib.{n} = {v!r}, the header says {probe['define'][n]!r}" for n, v in ours.items()
                 if n in probe["define"] and v != probe["define"][n]]
    problems += [f"_lib.{n} is not in the header (removed or renamed?)" for n in ours if n not in probe["define"]]
    assert not problems, "\n".join(problems)


def test_every_struct_matches_the_header_layout(header, probe):
    problems = [f"struct {t} is in the header, missing from _lib.STRUCTS" for t in header.structs
                if t not in _lib.STRUCTS]
    problems += [f"_lib.STRUCTS[{t!r}] is not in the header" for t in _lib.STRUCTS if t not in header.structs]
    declared = {c for c in vars(_lib).values() if isinstance(c, type) and issubclass(c, ctypes.Structure)}
    problems += [f"_lib.{c.__name__} is not in _lib.STRUCTS" for c in declared - set(_lib.STRUCTS.values())]
    for tag, fields in header.structs.items():
        cls = _lib.STRUCTS.get(tag)
        if cls is None:
            continue
        size, align = probe["struct"][tag]
        if (ctypes.sizeof(cls), ctypes.alignment(cls)) != (size, align):
            problems.append(f"{tag}: sizeof/alignment {ctypes.sizeof(cls)}/{ctypes.alignment(cls)} in Python, "
                            f"{size}/{align} in C")
        names = [f[0] for f in cls._fields_]
        if names != [name for _, name, _ in fields]:
            problems.append(f"{tag}: fields {names} in Python, {[name for _, name, _ in fields]} in the header")
            continue
        for (ctype, name, length), (_, pytype) in zip(fields, cls._fields_):
            offset, fsize = probe["field"][(tag, name)]
            desc = getattr(cls, name)
            if (desc.offset, desc.size) != (offset, fsize):
                problems.append(f"{tag}.{name}: offset/size {desc.offset}/{desc.size} in Python, {offset}/{fsize} in C")
            want = _expected_ctype(header, ctype)
            got = pytype
            if length is not None:
                if not issubclass(pytype, ctypes.Array):
                    problems.append(f"{tag}.{name}: an array [{length}] in C, {pytype.__name__} in Python")
                    continue
                got = pytype._type_
            if want is None or got is not want:
                problems.append(f"{tag}.{name}: C type {ctype!r} wants {getattr(want, '__name__', want)}, "
                                f"Python has {got.__name__}")
    assert not problems, "\n".join(problems)


def test_every_function_signature_matches_the_header(header):
    problems = [f"{f} is in the header, missing from _lib.SIGNATURES" for f in header.functions
                if f not in _lib.SIGNATURES]
    problems += [f"_lib.SIGNATURES[{f!r}] is not in the header" for f in _lib.SIGNATURES if f not in header.functions]
    for name, (ret, params) in header.functions.items():
        if name not in _lib.SIGNATURES:
            continue
        restype, argtypes = _lib.SIGNATURES[name]
        want = (_expected_ctype(header, ret), [_expected_ctype(header, p) for p in params])
        if (restype, list(argtypes)) != want:
            show = lambda t: getattr(t, "__name__", repr(t))  # noqa: E731
            problems.append(f"{name}: ({show(restype)}, {[show(a) for a in argtypes]}) in Python, "
                            f"({show(want[0])}, {[show(a) for a in want[1]]}) from {ret} {name}({', '.join(params)})")
        fn = getattr(rawblock._L, name)
        if (fn.restype, fn.argtypes) != (restype, argtypes):
            problems.append(f"{name}: the loaded library's function was not declared from SIGNATURES")
    assert not problems, "\n".join(problems)


def test_every_constant_is_exposed_by_the_python_api(header, probe):
    """Each header constant is an enum member, the bit of a flag keyword, or a listed plain constant."""
    defines = probe["define"]
    claims: dict[str, list[str]] = {}
    problems = []

    def claim(cname: str, by: str, value: int) -> None:
        claims.setdefault(cname, []).append(by)
        if defines.get(cname) != value:
            problems.append(f"{by} = {value}, but {cname} = {defines.get(cname)!r} in the header")

    enums = [(rawblock.Status, lambda m: "RB_OK" if m == "OK" else "RB_E_" + m),
             (rawblock.Engine, "RB_ENGINE_{}".format), (rawblock.RecoverMode, "RB_RECOVER_{}".format),
             (rawblock.Source, "RB_RECOVERED_{}".format), (rawblock.HeaderStatus, "RB_HEADER_{}".format),
             (rawblock.Fault, "RB_FAULT_{}".format), (rawblock.SuperblockSource, "RB_SUPERBLOCK_{}".format),
             (rawblock.Eviction, "RB_EVICT_{}".format)]
    for enum, cname in enums:
        for m in enum:
            claim(cname(m.name), f"{enum.__name__}.{m.name}", m.value)
    for kw, cname in rawblock._OPEN_FLAG_NAMES.items():
        claim(cname, f"Device({kw}=True)", rawblock._OPEN_FLAGS[kw])
    for kw, cname in rawblock._RECOVER_FLAG_NAMES.items():
        claim(cname, f"Device.recover({kw}=True)", rawblock._RECOVER_FLAGS[kw])
    for cname, use in PLAIN_CONSTANTS.items():
        claim(cname, use, getattr(_lib, cname))
    problems += [f"{n}: not reachable from the Python API (add it to an enum, a flag keyword, or PLAIN_CONSTANTS)"
                for n in defines if n not in claims]
    problems += [f"{n}: claimed twice, by {by}" for n, by in claims.items() if len(by) > 1]
    assert not problems, "\n".join(problems)
