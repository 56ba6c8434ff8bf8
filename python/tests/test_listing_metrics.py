"""Issue 12 items 5, 7 and 8 from Python: list_keys, open_or_create, metrics."""
import threading

import pytest

import rawblock
from rawblock import Device, Source, Status

from conftest import create


def test_list_keys_in_order_with_lengths_and_generations(path):
    with create(path) as dev:
        keys = [b"k%03d" % i for i in range(200)] + [b"k", b"k\xff", b"\x00", b"z" * 900]
        for i, k in enumerate(keys):
            dev.put(k, b"v" * (i % 50))
        got = list(dev.list_keys(page_keys=7))
        assert [k.key for k in got] == sorted(keys), "every key once, in bytewise order"
        lengths = {k: i % 50 for i, k in enumerate(keys)}
        assert all(k.value_len == lengths[k.key] for k in got)
        by_key = {k.key: k.generation for k in got}
        assert by_key[keys[1]] > by_key[keys[0]], "generations grow with each put"
        assert [k.key for k in dev.list_keys(after=b"k198")] == [b"k199", b"k\xff", b"z" * 900]
        with pytest.raises(ValueError):
            list(dev.list_keys(page_keys=0))


def test_list_keys_after_recovery_rebuilds_an_index(path):
    with create(path) as dev:
        for i in range(100):
            dev.put(b"chunk-%03d" % i, b"x" * i)
        dev.delete(b"chunk-050")
        dev.checkpoint()
    with Device.open(path) as dev:
        with pytest.raises(rawblock.RawblockError) as e:
            next(dev.list_keys())
        assert e.value.status == Status.STATE
        dev.recover()
        index = {k.key: k.value_len for k in dev.list_keys(page_keys=16)}
        assert len(index) == 99 and b"chunk-050" not in index and index[b"chunk-099"] == 99


def test_list_keys_under_concurrent_writes(path):
    with Device.create(path, overwrite=True, capacity_bytes=64 << 20, slot_bytes=16 << 10) as dev:
        stable = [b"stable-%04d" % i for i in range(300)]
        for k in stable:
            dev.put(k, b"v")
        stop = threading.Event()
        rounds = [0]

        def writer(t):
            i = 0
            while not stop.is_set():
                churn = b"stable-%04d-churn-%d" % (i * 37 % 300, t)
                dev.put(churn, b"x")
                dev.put(stable[(i * 13 + t) % 300], b"w" * (i % 5))
                if i % 2 == 0:
                    dev.delete(churn)
                i += 1
                rounds[0] += 1

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(2)]
        for t in threads:
            t.start()
        try:
            for page in (1, 5, 64, 4096):
                seen = [k.key for k in dev.list_keys(page_keys=page)]
                assert len(seen) == len(set(seen)), "no key twice"
                assert seen == sorted(seen)
                assert set(stable) <= set(seen), "every key present throughout comes back"
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert rounds[0] > 0


def test_open_or_create_is_one_code_path(path):
    kw = dict(capacity_bytes=16 << 20, slot_bytes=64 << 10)
    for start in range(3):
        with Device.open_or_create(path, **kw) as dev:
            assert dev.info().formatted == (start == 0)
            r = dev.recover()
            assert r.indexed == start
            assert r.source == (Source.NOTHING if start == 0 else Source.JOURNAL)
            dev.put(b"k%d" % start, b"v")
            dev.checkpoint()


def test_open_or_create_never_formats_over_data(path):
    data = bytes(range(256)) * 64
    with open(path, "wb") as f:
        f.write(data)
    with pytest.raises(rawblock.RawblockError) as e:
        Device.open_or_create(path, capacity_bytes=16 << 20)
    assert e.value.status == Status.EXISTS
    with open(path, "rb") as f:
        assert f.read() == data
    with pytest.raises(rawblock.RawblockError) as e:
        Device.open_or_create(path, overwrite=True, capacity_bytes=16 << 20)
    assert e.value.status == Status.INVALID_ARGUMENT


def test_recover_on_a_fresh_handle_is_empty_until_the_first_write(path):
    with create(path) as dev:
        assert dev.info().formatted
        r = dev.recover()
        assert (r.source, r.indexed, r.header_reads) == (Source.NOTHING, 0, 0)
        dev.put(b"k", b"v")
        with pytest.raises(rawblock.RawblockError) as e:
            dev.recover()
        assert e.value.status == Status.STATE


def test_metrics(path):
    with create(path) as dev:
        m = dev.metrics()
        assert (m.gets, m.puts, m.get.count, m.get.p99_ns) == (0, 0, 0, 0)
        dev.put(b"a", b"x" * 1000)
        dev.put(b"b", b"y" * 10)
        assert dev.get(b"a") == b"x" * 1000
        with pytest.raises(rawblock.NotFound):
            dev[b"nope"]
        dev.delete(b"b")
        dev.put_many([(b"c", b"1"), (b"d", b"22")])
        dev.get_many([b"c", b"d", b"zz"])
        m = dev.metrics()
        # get_many without buffers asks twice: lengths first (c, d: buffer too small, zz: a miss),
        # then the values (two hits, a miss). Every ask that reached the index is a get.
        assert (m.hits, m.misses, m.puts, m.deletes) == (1 + 2, 1 + 2, 4, 1)
        assert m.gets == m.hits + m.misses + 2
        assert (m.bytes_written, m.bytes_read) == (1013, 1000 + 3)
        assert (m.corrupt, m.io_errors, m.evictions) == (0, 0, 0)
        assert (m.get.count, m.put.count, m.get_many.count, m.put_many.count) == (2, 2, 2, 1)
        for lat in (m.get, m.put, m.get_many, m.put_many):
            assert 0 < lat.p50_ns <= lat.p99_ns <= lat.p999_ns <= lat.max_ns
        assert dev.metrics(reset=True) == m
        assert dev.metrics().gets == 0
        dev.get(b"a")
        dev.reset_metrics()
        assert dev.metrics() == rawblock.Metrics(*([0] * 10), *([rawblock.Latency(0, 0, 0, 0, 0)] * 4))


def test_metrics_count_evictions(path):
    with create(path) as dev:
        dev.set_eviction(rawblock.Eviction.LRU)
        slots = dev.info().slot_count
        for i in range(slots + 5):
            dev.put(b"k%d" % i, b"v")
        m = dev.metrics()
        assert m.evictions >= 5 and m.puts == slots + 5
        assert dev.info().indexed + m.evictions == slots + 5, "every key put is indexed or was evicted"
