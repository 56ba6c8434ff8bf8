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
from rawblock import Device, Status

from conftest import SCRATCH, create

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
