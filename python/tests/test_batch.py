"""Batched calls from Python: lists in and out, writable buffers as destinations."""
import ctypes
import mmap

import pytest

import rawblock
from rawblock import Device


def create(path, **kw):
    return Device.create(path, overwrite=True, capacity_bytes=16 << 20, slot_bytes=256 << 10, **kw)


def value(i, n):
    return bytes((i * 131 + j * 7 + 1) & 0xFF for j in range(n))


@pytest.mark.parametrize("engine", [rawblock.Engine.POSIX, rawblock.Engine.IO_URING])
def test_put_many_get_many_lists(path, engine):
    with create(path, engine=engine) as dev:
        items = [(b"k%d" % i, value(i, n)) for i, n in enumerate([0, 1, 4095, 4096, 4097, 100_000])]
        assert dev.put_many(items) == [None] * len(items)
        got = dev.get_many([k for k, _ in items] + [b"missing"])
        assert got[:-1] == [v for _, v in items]
        assert isinstance(got[-1], rawblock.NotFound)
        assert dev.contains_many([b"k0", b"missing"]) == [True, False]
        assert dev.count_present_prefix([b"k0", b"k1", b"missing", b"k2"]) == 2


def test_get_many_into_writable_buffers(path):
    with create(path) as dev:
        dev.put_many([(b"a", value(1, 8192)), (b"b", value(2, 5000)), (b"c", value(3, 10))])
        aligned = mmap.mmap(-1, 8192)  # page-aligned: the zero-copy path
        into = [memoryview(aligned), bytearray(5000), bytearray(4)]
        res = dev.get_many([b"a", b"b", b"c"], into=into)
        assert res[0] == 8192 and bytes(aligned[:8192]) == value(1, 8192)
        assert res[1] == 5000 and bytes(into[1]) == value(2, 5000)
        assert isinstance(res[2], rawblock.RawblockError) and res[2].status == rawblock.Status.BUFFER_TOO_SMALL
        with pytest.raises(TypeError):
            dev.get_many([b"a"], into=[b"read-only bytes"])
        numpy = pytest.importorskip("numpy", reason="numpy is not installed in the test venv")
        arr = numpy.zeros(5000, dtype=numpy.uint8)
        assert dev.get_many([b"b"], into=[arr]) == [5000] and arr.tobytes() == value(2, 5000)


def test_put_many_from_buffers_and_duplicates(path):
    with create(path) as dev:
        page = mmap.mmap(-1, 4096)
        page[:] = value(9, 4096)
        errs = dev.put_many([(b"x", memoryview(page)), (b"y", bytearray(b"abc")), (b"x", b"last")])
        assert errs == [None, None, None]
        assert dev.get(b"x") == b"last" and dev.get(b"y") == b"abc"
        errs = dev.put_many([(b"", b"v"), (b"z", b"ok")])
        assert isinstance(errs[0], rawblock.RawblockError) and errs[0].status == rawblock.Status.INVALID_ARGUMENT
        assert errs[1] is None
        res = dev.delete_many([b"x", b"x", b"nope"])
        assert res[0] is None and isinstance(res[1], rawblock.NotFound) and isinstance(res[2], rawblock.NotFound)


def test_registered_memory_round_trip(path):
    with create(path, engine=rawblock.Engine.IO_URING) as dev:
        pool = mmap.mmap(-1, 16 * 8192)  # page-aligned, like a serving engine's pinned pool
        with dev.register_memory(pool) as region:
            assert isinstance(region.id, int)
            views = [memoryview(pool)[i * 8192:(i + 1) * 8192] for i in range(16)]
            for i, v in enumerate(views):
                v[:] = value(i, 8192)
            assert dev.put_many([(b"r%d" % i, v) for i, v in enumerate(views)]) == [None] * 16
            pool[:] = bytes(len(pool))
            assert dev.get_many([b"r%d" % i for i in range(16)], into=views) == [8192] * 16
            assert all(bytes(v) == value(i, 8192) for i, v in enumerate(views))
            assert dev.io_stats().registered_buffers
        region.unregister()  # idempotent
        with pytest.raises(ValueError):
            dev.register_memory(bytearray(0))


def test_eviction_lru_reports_the_evicted_keys(path):
    with Device.create(path, overwrite=True, capacity_bytes=8 << 20, slot_bytes=64 << 10) as dev:
        slots = dev.info().slot_count
        for i in range(slots):
            dev.put(b"k%04d" % i, b"v")
        with pytest.raises(rawblock.NoSpace):
            dev.put(b"extra", b"x")
        dev.set_eviction(rawblock.Eviction.LRU)
        dev.get(b"k0000")  # now the most recently used
        dev.put(b"extra", b"x")
        gone = dev.take_evicted()
        assert [k.key for k in gone] == [b"k0001"]
        assert b"k0001" not in dev and b"k0000" in dev
        assert dev.take_evicted() == []
        assert dev.metrics().evictions == 1
        with pytest.raises(rawblock.RawblockError):
            dev.set_eviction(rawblock.Eviction.FIFO, low_watermark_permille=1001)


def test_aligned_buffers_and_numpy_arrays_are_filled_without_a_copy(path):
    """The zero-copy path shows: the device's read lands in the destination whole, so the
    record's zero padding after the value overwrites the destination's tail; a bounce copy
    would move only the value's bytes and leave the tail as it was."""
    numpy = pytest.importorskip("numpy", reason="numpy is not installed in the test venv")
    with create(path) as dev:
        dev.put(b"v", value(5, 5000))
        pool = mmap.mmap(-1, 2 * 8192)  # page-aligned
        arr = numpy.frombuffer(pool, dtype=numpy.uint8)  # a writable numpy view of it
        arr[:] = 0xAA
        lengths = dev.get_many([b"v", b"v"], into=[arr[:8192], memoryview(pool)[8192:]])
        assert lengths == [5000, 5000]
        for start in (0, 8192):
            assert arr[start:start + 5000].tobytes() == value(5, 5000)
            assert not arr[start + 5000:start + 8192].any(), "the tail was not written: a copy, not the device's read"
