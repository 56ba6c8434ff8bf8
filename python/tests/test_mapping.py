"""A Device follows Python's mapping conventions for bytes keys (issue 15)."""

import pytest

import rawblock
from conftest import create


def test_getitem_get_contains_len_iter(path):
    with create(path) as dev:
        assert len(dev) == 0 and list(dev) == []
        dev[b"b"] = b"2"
        dev.put(b"a", b"1")
        dev[b"c"] = bytearray(b"3")
        assert dev[b"a"] == b"1" and dev[b"c"] == b"3"
        assert len(dev) == 3
        assert list(dev) == [b"a", b"b", b"c"] == list(dev.keys())  # bytewise order
        assert b"a" in dev and b"zz" not in dev
        with pytest.raises(KeyError) as e:
            dev[b"zz"]
        assert isinstance(e.value, rawblock.NotFound) and e.value.status == rawblock.Status.NOT_FOUND
        assert dev.get(b"zz") is None
        assert dev.get(b"zz", b"fallback") == b"fallback"
        assert dev.get(b"a", b"fallback") == b"1"
        del dev[b"b"]
        assert b"b" not in dev and len(dev) == 2 and list(dev) == [b"a", b"c"]
        with pytest.raises(KeyError):
            del dev[b"b"]
        assert dict((k, dev[k]) for k in dev) == {b"a": b"1", b"c": b"3"}


def test_get_still_raises_what_is_not_a_missing_key(path):
    with create(path) as dev:
        with pytest.raises(TypeError):
            dev.get("str is not bytes")
        with pytest.raises(TypeError):
            "str" in dev
        dev.close()
        with pytest.raises(rawblock.Closed):
            dev.get(b"a", b"default")  # a closed device is not a missing key


def test_len_and_iteration_after_recovery(path):
    with create(path) as dev:
        for i in range(50):
            dev[b"k%03d" % i] = b"v" * i
        dev.checkpoint()
    with rawblock.Device.open(path, read_only=True) as dev:
        dev.recover()
        assert len(dev) == 50
        assert list(dev) == [b"k%03d" % i for i in range(50)]
        assert dev[b"k049"] == b"v" * 49
