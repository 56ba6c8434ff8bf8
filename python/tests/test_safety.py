"""Pure Python must never reach undefined behaviour in the library (issue 11 item 6).

close() racing calls in flight, paths that are not str, NULs in paths and integers
outside their C type: each one either works as written or raises a Python exception.
"""

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import rawblock
from rawblock import Device, Engine, RecoverMode, Status

from conftest import SCRATCH, create

U32 = 2**32
U64 = 2**64

# ---- close() while other threads are inside calls -------------------------------------------

RACE = textwrap.dedent(
    """
    import sys, threading, time
    import rawblock

    path = sys.argv[1]
    for round in range(int(sys.argv[2])):
        dev = rawblock.Device.create(path, overwrite=True, capacity_bytes=16 << 20, slot_bytes=64 << 10)
        for i in range(8):
            dev.put(b"k%d" % i, b"v%d" % i * 100)
        go = threading.Barrier(17)
        outcomes = []

        def work(t):
            go.wait()
            n = 0
            try:
                while True:
                    key = b"k%d" % ((t + n) % 8)
                    if t % 4 == 0:
                        dev.put(key, b"v%d" % ((t + n) % 8) * 100)
                    elif t % 4 == 1:
                        assert key in dev
                    elif t % 4 == 2:
                        dev.read_headers_batched([0, 1, 2])
                    else:
                        assert dev.get(key) == key.replace(b"k", b"v") * 100
                    n += 1
            except rawblock.RawblockError as e:
                outcomes.append("closed" if "closed" in str(e) else repr(e))
            except Exception as e:
                outcomes.append(repr(e))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        go.wait()
        time.sleep(0.002 * (round % 10))
        dev.close()
        for t in threads:
            t.join()
        bad = [o for o in outcomes if o != "closed"]
        assert not bad and len(outcomes) == 16, (round, bad)
    print("race ok")
    """
)


def test_close_while_threads_call_does_not_crash(tmp_path):
    """Before the fix: 'malloc(): unaligned tcache chunk detected' / SIGSEGV in the child."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    img = SCRATCH / f"race-{os.getpid()}.img"
    script = tmp_path / "race.py"
    script.write_text(RACE)
    env = dict(os.environ, PYTHONPATH=str(Path(rawblock.__file__).resolve().parents[1]))
    try:
        p = subprocess.run([sys.executable, str(script), str(img), "40"], env=env, capture_output=True,
                           text=True, timeout=300)
    finally:
        img.unlink(missing_ok=True)
    assert p.returncode == 0 and "race ok" in p.stdout, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])


def test_close_waits_for_the_call_in_flight(path, monkeypatch):
    dev = create(path)
    dev.put(b"k", b"value")
    inside, release = threading.Event(), threading.Event()
    closed_early = threading.Event()
    real_get = rawblock._L.rb_get

    def slow_get(*args):
        inside.set()
        release.wait(10)
        if closed_early.is_set():  # the handle is gone: do not touch it
            return Status.STATE
        return real_get(*args)

    monkeypatch.setattr(rawblock._L, "rb_get", slow_get)
    got = []
    reader = threading.Thread(target=lambda: got.append(dev.get(b"k")))
    reader.start()
    assert inside.wait(10)
    closer = threading.Thread(target=dev.close)
    closer.start()
    closer.join(0.3)
    if not closer.is_alive():
        closed_early.set()
    try:
        assert closer.is_alive(), "close() returned while a call was still inside the library"
        # Closing has begun: a new call is refused at once rather than queued behind close.
        with pytest.raises(rawblock.Closed):
            b"k" in dev
    finally:
        release.set()
        reader.join(10)
        closer.join(10)
    assert got == [b"value"]  # the call in flight finished normally
    assert not closer.is_alive()
    with pytest.raises(rawblock.Closed):
        dev.get(b"k")


def test_calls_after_close_raise_closed(path):
    dev = create(path)
    dev.put(b"k", b"v")
    dev.close()
    calls = [lambda: dev.put(b"k", b"v"), lambda: dev.get(b"k"), lambda: dev.delete(b"k"),
             lambda: b"k" in dev, dev.checkpoint, dev.recover, lambda: dev.read_headers_batched([0]),
             dev.info, dev.io_stats, lambda: dev.inject_read_faults([0], 5, rawblock.Fault.PERSISTENT),
             dev.clear_read_faults]
    for call in calls:
        with pytest.raises(rawblock.Closed) as e:
            call()
        assert isinstance(e.value, rawblock.RawblockError) and isinstance(e.value, ValueError)
        assert "closed" in str(e.value)
    dev.close()  # still idempotent


def test_concurrent_closes_all_return_after_the_handle_is_closed(path):
    dev = create(path)
    errors = []

    def close():
        try:
            dev.close()
            # Whichever close returns, the device lock is released: a new writer can open it.
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=close) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    Device.open(path).close()


# ---- paths --------------------------------------------------------------------------------


class _PathLike:
    def __init__(self, p):
        self.p = p

    def __fspath__(self):
        return self.p


@pytest.mark.parametrize("kind", ["str", "bytes", "Path", "PathLike-str", "PathLike-bytes"])
def test_paths_of_every_kind_name_the_same_file(kind):
    d = SCRATCH / f"paths-{kind}-{os.getpid()}"
    d.mkdir(parents=True, exist_ok=True)
    target = d / "cache.img"
    given = {"str": str(target), "bytes": os.fsencode(target), "Path": target,
             "PathLike-str": _PathLike(str(target)), "PathLike-bytes": _PathLike(os.fsencode(target))}[kind]
    try:
        with Device.create(given, capacity_bytes=16 << 20, slot_bytes=64 << 10) as dev:
            dev.put(b"k", b"v")
            dev.checkpoint()
        assert os.listdir(d) == ["cache.img"]  # not "b'...cache.img'"
        with Device.open(given, read_only=True) as dev:
            dev.recover()
            assert dev.get(b"k") == b"v"
    finally:
        for f in d.iterdir():
            f.unlink()
        d.rmdir()


def test_undecodable_bytes_path_is_used_as_given():
    SCRATCH.mkdir(parents=True, exist_ok=True)
    name = b"raw-\xff-%d.img" % os.getpid()
    target = os.path.join(os.fsencode(SCRATCH), name)
    try:
        Device.create(target, capacity_bytes=16 << 20, slot_bytes=64 << 10).close()
        assert name in os.listdir(os.fsencode(SCRATCH))
    finally:
        if os.path.exists(target):
            os.unlink(target)


@pytest.mark.parametrize("nul", ["str", "bytes", "PathLike"])
def test_nul_in_path_is_refused(path, nul):
    bad = {"str": path + "\0.trailer", "bytes": os.fsencode(path) + b"\0.trailer",
           "PathLike": _PathLike(path + "\0.trailer")}[nul]
    with pytest.raises(ValueError, match="null"):
        Device.create(bad, capacity_bytes=16 << 20)
    assert not os.path.exists(path)  # not silently truncated to the part before the NUL


@pytest.mark.parametrize("bad", [3, None, 1.5, ["a"]])
def test_non_path_is_a_type_error(bad):
    with pytest.raises(TypeError):
        Device.open(bad)


# ---- integers outside their C type --------------------------------------------------------


def test_slot_beyond_u64_is_refused_not_wrapped(path):
    with create(path) as dev:
        for i in range(4):
            dev.put(b"k%d" % i, b"v")
        assert dev.read_headers_batched([1])[0].slot == 1
        for slot in [U64 + 1, U64, -1, -(U64 - 1)]:
            with pytest.raises(OverflowError, match="uint64_t"):
                dev.read_headers_batched([0, slot])
        with pytest.raises(TypeError):
            dev.read_headers_batched([1.0])
        with pytest.raises(rawblock.RawblockError) as e:  # in range for C: the library decides
            dev.read_headers_batched([U64 - 1])
        assert e.value.status == Status.INVALID_ARGUMENT


@pytest.mark.parametrize("option,value", [
    ("posix_threads", -1), ("posix_threads", U32), ("posix_threads", U32 + 4),
    ("queue_depth", -1), ("queue_depth", U32), ("queue_depth", U32 + 128),
    ("block_size", -4096), ("header_bytes", U32 + 4096), ("max_key_bytes", -1),
    ("slot_bytes", -1), ("slot_bytes", U64 + (64 << 10)), ("capacity_bytes", U64 + (16 << 20)),
    ("meta_bytes", -1), ("engine", -1), ("engine", U32 + 1),
])
def test_open_options_outside_their_c_type_are_refused(path, option, value):
    kw = dict(capacity_bytes=16 << 20, slot_bytes=64 << 10, engine=Engine.POSIX)
    kw[option] = value
    with pytest.raises(OverflowError, match=option):
        Device.create(path, **kw)
    assert not os.path.exists(path)  # refused before the library saw it


@pytest.mark.parametrize("option,value", [("posix_threads", 2.0), ("queue_depth", "8"), ("capacity_bytes", 1e9)])
def test_open_options_must_be_integers(path, option, value):
    with pytest.raises(TypeError):
        Device.create(path, **{option: value})


def test_in_range_posix_threads_reach_the_library(path):
    with create(path, engine=Engine.POSIX, posix_threads=U32 - 1) as dev:
        # In range for uint32_t, so Python passes it on; the library clamps it to its maximum.
        assert 1 < dev.info().queue_depth < U32 - 1


def test_other_integers_outside_their_c_type(path):
    with create(path) as dev:
        with pytest.raises(OverflowError, match="mode"):
            dev.recover(mode=-1)
        with pytest.raises(OverflowError, match="mode"):
            dev.recover(mode=U32 + RecoverMode.SCAN)
        with pytest.raises(OverflowError, match="errno"):
            dev.inject_read_faults([0], 2**31, rawblock.Fault.PERSISTENT)
        with pytest.raises(OverflowError, match="errno"):
            dev.inject_read_faults([0], -(2**31) - 1, rawblock.Fault.PERSISTENT)
        with pytest.raises(OverflowError, match="uint64_t"):
            dev.inject_read_faults([U64 + 1], 5, rawblock.Fault.PERSISTENT)
        with pytest.raises(OverflowError, match="mode"):
            dev.inject_read_faults([1], 5, U32 + rawblock.Fault.PERSISTENT)
        # Nothing was injected by the refused calls: slot 1 reads fine.
        dev.put(b"a", b"b")
        assert all(h.status != rawblock.HeaderStatus.IO_ERROR for h in dev.read_headers_batched([0, 1]))
