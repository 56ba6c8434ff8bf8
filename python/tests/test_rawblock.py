import ctypes
import errno
import inspect
import os
import threading
from pathlib import Path

import pytest

import rawblock
from rawblock import Device, Engine, Fault, HeaderStatus, RecoverMode, Source, Status, _lib

from conftest import create


def test_version():
    assert rawblock.version().count(".") == 2
    assert rawblock.abi_version() == 1


def test_round_trips_and_errors(path):
    with create(path) as dev:
        info = dev.info()
        # AUTO either picked io_uring (no note) or says why it did not.
        assert (info.engine == rawblock.Engine.IO_URING) == (info.engine_note == ""), info
        assert info.superblock_source == rawblock.SuperblockSource.PRIMARY
        for n in [0, 1, 4095, 4096, 4097, info.max_payload]:
            value = os.urandom(n)
            dev.put(b"k%d" % n, value)
            assert dev.get(b"k%d" % n) == value
        assert b"k1" in dev and b"missing" not in dev
        dev.put(b"k1", b"replaced")
        assert dev.get(b"k1") == b"replaced"
        dev.delete(b"k1")
        assert dev.get(b"k1") is None
        with pytest.raises(rawblock.NotFound) as e:
            dev[b"k1"]
        assert e.value.status == Status.NOT_FOUND and "not found" in e.value.message
        assert isinstance(e.value, KeyError)
        with pytest.raises(rawblock.RawblockError) as e:
            dev.put(b"x" * (info.max_key_bytes + 1), b"v")
        assert e.value.status == Status.TOO_LARGE and "key" in e.value.message
        with pytest.raises(rawblock.RawblockError) as e:
            dev.put(b"big", bytes(info.max_payload + 1))
        assert e.value.status == Status.TOO_LARGE
        with pytest.raises(TypeError):
            dev.put("str is not bytes", b"v")


def test_checkpoint_close_reopen_recover(path):
    with create(path) as dev:
        for i in range(50):
            dev.put(b"key-%d" % i, b"value-%d" % i)
        dev.checkpoint()
    with Device.open(path, read_only=True, engine=Engine.POSIX, posix_threads=4) as dev:
        with pytest.raises(rawblock.RawblockError) as e:
            dev.get(b"key-1")
        assert e.value.status == Status.STATE
        r = dev.recover()
        assert r.source == Source.JOURNAL and r.engine == Engine.POSIX
        assert (r.checkpoint_sequence, r.checkpoint_entries, r.indexed) == (1, 50, 50)
        assert (r.trusted_unread, r.recovered_since_checkpoint) == (50, 0)
        assert r.header_reads == r.leased_slots, "fast recovery reads only the leased slots"
        r = dev.recover(RecoverMode.CHECKPOINT)
        assert r.source == Source.CHECKPOINT and r.engine == Engine.POSIX
        assert (r.checkpoint_sequence, r.checkpoint_entries, r.indexed) == (1, 50, 50)
        assert (r.dropped_stale, r.dropped_unreadable, r.header_reads) == (0, 0, 50)
        assert r.elapsed_ns > 0 and r.io.reads_submitted == 50
        assert dev.get(b"key-7") == b"value-7"
        with pytest.raises(rawblock.ReadOnly):
            dev.put(b"x", b"y")
        assert dev.recover(scrub_free=True).orphans == 0
        scan = dev.recover(RecoverMode.SCAN)
        assert scan.source == Source.SCAN and scan.indexed == 50
        assert scan.empty_slots == dev.info().slot_count - 50


def test_headers_and_faults(path):
    with create(path, engine=Engine.IO_URING, queue_depth=8) as dev:
        for i in range(20):
            dev.put(b"h-%02d" % i, b"v" * i)
        heads = dev.read_headers_batched([5, 0, 25])
        assert [h.slot for h in heads] == [5, 0, 25]
        assert heads[0].status == HeaderStatus.VALID and heads[0].key == b"h-05" and heads[0].payload_len == 5
        assert heads[2].status == HeaderStatus.EMPTY
        dev.inject_read_faults([3], errno.EIO, Fault.PERSISTENT)
        heads = dev.read_headers_batched(range(20))
        assert heads[3].status == HeaderStatus.IO_ERROR and heads[3].os_errno == errno.EIO
        assert all(h.status == HeaderStatus.VALID for i, h in enumerate(heads) if i != 3)
        dev.clear_read_faults()
        dev.io_stats(reset=True)
        dev.inject_read_faults([4], errno.EIO, Fault.TRANSIENT)
        assert all(h.status == HeaderStatus.VALID for h in dev.read_headers_batched(range(20)))
        stats = dev.io_stats()
        assert stats.fallbacks == 1 and stats.failed == 0 and stats.registered_buffers
        with pytest.raises(rawblock.RawblockError) as e:
            dev.read_headers_batched([dev.info().slot_count])
        assert e.value.status == Status.INVALID_ARGUMENT and "out of range" in e.value.message


def test_open_errors(path):
    with pytest.raises(rawblock.RawblockError) as e:
        Device.open(path)
    assert e.value.status == Status.IO
    Path(path).write_bytes(bytes(1 << 20))
    with pytest.raises(rawblock.RawblockError) as e:
        Device.open(path)
    assert e.value.status == Status.FORMAT and "never formatted" in e.value.message
    with pytest.raises(rawblock.RawblockError) as e:
        Device.create(path, capacity_bytes=16 << 20, engine=Engine.URING_CMD, overwrite=True)
    assert e.value.status == Status.UNSUPPORTED
    dev = create(path)
    with pytest.raises(rawblock.Busy):
        Device.open(path)
    dev.close()
    dev.close()  # idempotent
    with pytest.raises(rawblock.RawblockError):
        dev.put(b"k", b"v")


def test_context_manager_closes(path):
    with create(path) as dev:
        dev.put(b"k", b"v")
        dev.checkpoint()
    # The lock is released, so a new writer can open it.
    with Device.open(path) as again:
        assert again.recover().indexed == 1


def test_threads_share_a_device(path):
    with create(path) as dev:
        errors = []

        def work(t):
            try:
                for i in range(50):
                    key = b"t%d-%d" % (t, i % 5)
                    dev.put(key, key * 10)
                    assert dev.get(key) == key * 10
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert dev.info().indexed == 20


def test_no_default_number_is_repeated_in_python():
    """Defaults have one home, the library's rb_options_init / rb_recover_options_init."""
    for name, p in inspect.signature(Device.__init__).parameters.items():
        if p.kind is p.KEYWORD_ONLY:
            assert p.default is None, f"Device({name}=...) defaults to {p.default!r}, not the library's default"
    for name, p in inspect.signature(Device.recover).parameters.items():
        if name != "self":
            assert p.default is None, f"recover({name}=...) defaults to {p.default!r}"


def test_unset_options_take_the_library_defaults(path):
    defaults = _lib.Options()
    assert rawblock._L.rb_options_init(ctypes.byref(defaults)) == 0
    with create(path, engine=Engine.POSIX) as dev:
        assert dev.info().queue_depth == defaults.posix_threads
    with create(path, engine=Engine.POSIX, posix_threads=3) as dev:
        assert dev.info().queue_depth == 3
    with create(path, engine=Engine.IO_URING) as dev:
        assert dev.info().queue_depth == defaults.queue_depth
    with create(path, engine=Engine.IO_URING, queue_depth=16) as dev:
        assert dev.info().queue_depth == 16
    with create(path) as dev:
        dev.put(b"k", b"v")
        dev.checkpoint()
    with Device.open(path, read_only=True) as dev:
        r = dev.recover()  # RB_RECOVER_AUTO from rb_recover_options_init: fast, from the checkpoint
        assert r.source == Source.JOURNAL and r.orphans == 0 and r.kept_unverified == 0


def test_a_library_of_another_abi_is_refused(monkeypatch):
    """_lib's structs describe RB_ABI_VERSION only; load() must not pair them with another ABI."""
    monkeypatch.setattr(_lib, "RB_ABI_VERSION", _lib.RB_ABI_VERSION + 1)
    with pytest.raises(OSError, match="ABI version"):
        _lib.load()


def test_preallocate_allocates_the_whole_file(path):
    # Without it only the metadata region is allocated (the slots stay sparse); with it, every byte.
    with create(path) as dev:
        info = dev.info()
    sparse = os.stat(path).st_blocks * 512
    assert info.meta_bytes <= sparse < (16 << 20) // 2
    os.unlink(path)
    with create(path, preallocate=True) as dev:
        pass
    assert os.stat(path).st_blocks * 512 >= info.data_base + info.slot_count * info.slot_bytes


def test_puts_since_the_checkpoint_survive_a_restart_and_verification_drops_deleted_keys(path):
    with create(path) as dev:
        for i in range(20):
            dev.put(b"k%d" % i, b"v%d" % i)
        dev.checkpoint()
        dev.put(b"after", b"the checkpoint")
        dev.delete(b"k3")
        dev.sync()
    # No checkpoint since: the handle is closed as a killed process would leave it.
    with Device.open(path) as dev:
        r = dev.recover()
        assert r.source == Source.JOURNAL and r.recovered_since_checkpoint == 1
        assert dev.get(b"after") == b"the checkpoint"
        p = dev.verify_step(0)
        assert (p.checked, p.remaining) == (0, r.trusted_unread)
        done = dev.verify_step(1000)
        assert (done.checked, done.dropped, done.remaining) == (r.trusted_unread, 1, 0), "k3 was deleted"
        assert b"k3" not in dev and dev.get(b"k4") == b"v4"


def test_auto_checkpoint_policy(path):
    with create(path) as dev:
        dev.set_auto_checkpoint(every_changes=10)
        for i in range(25):
            dev.put(b"a%d" % i, b"v")
    with Device.open(path, read_only=True) as dev:
        r = dev.recover()
        assert (r.checkpoint_sequence, r.checkpoint_entries, r.recovered_since_checkpoint) == (2, 20, 5)
