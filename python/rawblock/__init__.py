"""rawblock from Python: fixed-size KV-cache slots on a raw block device, via ctypes.

    import rawblock
    with rawblock.Device.create("cache.img", capacity_bytes=64 << 20) as dev:
        dev.put(b"key", b"value")
        dev.checkpoint()
    with rawblock.Device.open("cache.img") as dev:
        report = dev.recover()
        assert dev.get(b"key") == b"value"

A Device may be used from several threads at once (the library locks
internally; ctypes releases the GIL during each call). Close it once, after
every other call on it has returned.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Optional

from . import _lib

__all__ = [
    "Device", "RawblockError", "NotFound", "Corrupt", "NoSpace", "ReadOnly", "Busy",
    "Status", "Engine", "RecoverMode", "HeaderStatus", "Fault", "RecoverReport", "IoStats", "SlotHeader",
    "DeviceInfo", "version", "abi_version",
]

_L = _lib.load()


class Status(IntEnum):
    OK = 0
    INVALID_ARGUMENT = 1
    IO = 2
    FORMAT = 3
    NO_SPACE = 4
    TOO_LARGE = 5
    NOT_FOUND = 6
    CORRUPT = 7
    BUFFER_TOO_SMALL = 8
    UNSUPPORTED = 9
    READ_ONLY = 10
    BUSY = 11
    STATE = 12
    EXISTS = 13
    PANIC = 14


class Engine(IntEnum):
    AUTO = 0
    POSIX = 1
    IO_URING = 2
    URING_CMD = 3


class RecoverMode(IntEnum):
    AUTO = 0
    CHECKPOINT = 1
    SCAN = 2


class Source(IntEnum):
    NOTHING = 0
    CHECKPOINT = 1
    SCAN = 2


class HeaderStatus(IntEnum):
    VALID = 0
    EMPTY = 1
    CORRUPT = 2
    FOREIGN = 3
    IO_ERROR = 4


class Fault(IntEnum):
    PERSISTENT = 1
    TRANSIENT = 2
    SUBMIT = 3


_OPEN_CREATE, _OPEN_OVERWRITE_OK, _OPEN_READ_ONLY, _OPEN_BUFFERED, _OPEN_SYNC_WRITES = 1, 2, 4, 8, 16
_RECOVER_KEEP_UNREADABLE, _RECOVER_SCRUB_FREE = 1, 2


class RawblockError(Exception):
    """A failed call: `.status` is the rb_status, `.message` the library's explanation."""

    def __init__(self, status: int, message: str):
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.message = message
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"{name}: {message}")


class NotFound(RawblockError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its argument; keep the plain message
        return Exception.__str__(self)


class Corrupt(RawblockError):
    pass


class NoSpace(RawblockError):
    pass


class ReadOnly(RawblockError):
    pass


class Busy(RawblockError):
    pass


_ERRORS = {Status.NOT_FOUND: NotFound, Status.CORRUPT: Corrupt, Status.NO_SPACE: NoSpace,
           Status.READ_ONLY: ReadOnly, Status.BUSY: Busy}


def _check(status: int) -> None:
    if status != Status.OK:
        msg = (_L.rb_last_error_message() or b"").decode("utf-8", "replace")
        raise _ERRORS.get(status, RawblockError)(status, msg)


def version() -> str:
    return _L.rb_version().decode()


def abi_version() -> int:
    return _L.rb_abi_version()


@dataclass(frozen=True)
class IoStats:
    reads_submitted: int
    submit_calls: int
    max_in_flight: int
    fallbacks: int
    retries: int
    failed: int
    registered_buffers: bool
    registered_file: bool

    @classmethod
    def _from(cls, s: _lib.IoStats) -> "IoStats":
        return cls(s.reads_submitted, s.submit_calls, s.max_in_flight, s.fallbacks, s.retries, s.failed,
                   bool(s.registered_buffers), bool(s.registered_file))


@dataclass(frozen=True)
class RecoverReport:
    source: Source
    engine: Engine
    checkpoint_sequence: int
    checkpoint_entries: int
    indexed: int
    dropped_stale: int
    dropped_unreadable: int
    kept_unverified: int
    empty_slots: int
    header_reads: int
    elapsed_ns: int
    checkpoint_load_ns: int
    validate_ns: int
    first_errno: int
    queue_depth: int
    io: IoStats
    orphans: int


@dataclass(frozen=True)
class SlotHeader:
    slot: int
    status: HeaderStatus
    os_errno: int
    generation: int
    payload_len: int
    payload_crc: int
    key: bytes
    """The key, or its first 256 bytes when `key_len` is longer."""
    key_len: int


@dataclass(frozen=True)
class DeviceInfo:
    device_id: bytes
    block_size: int
    header_bytes: int
    slot_bytes: int
    slot_count: int
    meta_bytes: int
    data_base: int
    max_key_bytes: int
    max_payload: int
    engine: Engine
    queue_depth: int
    read_only: bool
    direct_io: bool
    indexed: int


def _buf(data: bytes) -> tuple[ctypes.c_char_p, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    return ctypes.c_char_p(data), len(data)


class Device:
    """An open rawblock device. Use Device.create() to format, Device.open() to reopen."""

    def __init__(self, path: str, *, create: bool = False, overwrite: bool = False, read_only: bool = False,
                 buffered: bool = False, sync_writes: bool = False, engine: Engine = Engine.AUTO,
                 posix_threads: int = 1, queue_depth: int = 128, capacity_bytes: int = 0, slot_bytes: int = 0,
                 header_bytes: int = 0, block_size: int = 0, meta_bytes: int = 0, max_key_bytes: int = 0):
        opts = _lib.Options()
        _check(_L.rb_options_init(ctypes.byref(opts)))
        opts.engine = int(engine)
        opts.flags = ((_OPEN_CREATE if create else 0) | (_OPEN_OVERWRITE_OK if overwrite else 0)
                      | (_OPEN_READ_ONLY if read_only else 0) | (_OPEN_BUFFERED if buffered else 0)
                      | (_OPEN_SYNC_WRITES if sync_writes else 0))
        opts.posix_threads = posix_threads
        opts.queue_depth = queue_depth
        opts.capacity_bytes = capacity_bytes
        opts.slot_bytes = slot_bytes
        opts.header_bytes = header_bytes
        opts.block_size = block_size
        opts.meta_bytes = meta_bytes
        opts.max_key_bytes = max_key_bytes
        handle = ctypes.c_void_p()
        _check(_L.rb_open(str(path).encode(), ctypes.byref(opts), ctypes.byref(handle)))
        self._h: Optional[ctypes.c_void_p] = handle

    @classmethod
    def create(cls, path: str, *, overwrite: bool = False, **kw) -> "Device":
        """Formats `path` (a block device, or a file sized by capacity_bytes) and opens it."""
        return cls(path, create=True, overwrite=overwrite, **kw)

    @classmethod
    def open(cls, path: str, **kw) -> "Device":
        """Opens a formatted device; call recover() before reading or writing."""
        return cls(path, **kw)

    def _handle(self) -> ctypes.c_void_p:
        if self._h is None:
            raise RawblockError(Status.INVALID_ARGUMENT, "the device is closed")
        return self._h

    def close(self) -> None:
        """Closes the handle (idempotent). Does not checkpoint."""
        if self._h is not None:
            h, self._h = self._h, None
            _check(_L.rb_close(h))

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def put(self, key: bytes, value: bytes) -> None:
        k, kl = _buf(key)
        v, vl = _buf(value)
        _check(_L.rb_put(self._handle(), k, kl, v, vl))

    def get(self, key: bytes) -> bytes:
        """The value of `key`, verified; raises NotFound, or Corrupt rather than return wrong bytes."""
        k, kl = _buf(key)
        n = ctypes.c_size_t(0)
        cap = 64 * 1024
        while True:
            out = ctypes.create_string_buffer(cap)
            s = _L.rb_get(self._handle(), k, kl, out, cap, ctypes.byref(n))
            if s == Status.BUFFER_TOO_SMALL:
                cap = n.value
                continue
            _check(s)
            return out.raw[: n.value]

    def delete(self, key: bytes) -> None:
        k, kl = _buf(key)
        _check(_L.rb_delete(self._handle(), k, kl))

    def __contains__(self, key: bytes) -> bool:
        k, kl = _buf(key)
        found = ctypes.c_bool(False)
        _check(_L.rb_contains(self._handle(), k, kl, ctypes.byref(found)))
        return bool(found.value)

    def checkpoint(self) -> None:
        _check(_L.rb_checkpoint(self._handle()))

    def recover(self, mode: RecoverMode = RecoverMode.AUTO, keep_unreadable: bool = False,
                scrub_free: bool = False) -> RecoverReport:
        opts = _lib.RecoverOptions()
        _check(_L.rb_recover_options_init(ctypes.byref(opts)))
        opts.mode = int(mode)
        opts.flags = (_RECOVER_KEEP_UNREADABLE if keep_unreadable else 0) | (_RECOVER_SCRUB_FREE if scrub_free else 0)
        r = _lib.RecoverReport()
        r.struct_size = ctypes.sizeof(r)
        _check(_L.rb_recover(self._handle(), ctypes.byref(opts), ctypes.byref(r)))
        return RecoverReport(Source(r.source), Engine(r.engine), r.checkpoint_sequence, r.checkpoint_entries,
                             r.indexed, r.dropped_stale, r.dropped_unreadable, r.kept_unverified, r.empty_slots,
                             r.header_reads, r.elapsed_ns, r.checkpoint_load_ns, r.validate_ns, r.first_errno,
                             r.queue_depth, IoStats._from(r.io), r.orphans)

    def read_headers_batched(self, slots: Iterable[int]) -> list[SlotHeader]:
        slots = list(slots)
        if not slots:
            return []
        arr = (ctypes.c_uint64 * len(slots))(*slots)
        out = (_lib.SlotHeader * len(slots))()
        out[0].struct_size = ctypes.sizeof(_lib.SlotHeader)
        _check(_L.rb_read_headers_batched(self._handle(), arr, len(slots), out))
        return [SlotHeader(h.slot, HeaderStatus(h.status), h.os_errno, h.generation, h.payload_len, h.payload_crc,
                           bytes(h.key[: min(h.key_len, _lib.HEADER_KEY_INLINE)]), h.key_len) for h in out]

    def info(self) -> DeviceInfo:
        i = _lib.DeviceInfo()
        i.struct_size = ctypes.sizeof(i)
        _check(_L.rb_get_info(self._handle(), ctypes.byref(i)))
        return DeviceInfo(bytes(i.device_id), i.block_size, i.header_bytes, i.slot_bytes, i.slot_count, i.meta_bytes,
                          i.data_base, i.max_key_bytes, i.max_payload, Engine(i.engine), i.queue_depth,
                          bool(i.read_only), bool(i.direct_io), i.indexed)

    def io_stats(self, reset: bool = False) -> IoStats:
        s = _lib.IoStats()
        s.struct_size = ctypes.sizeof(s)
        _check(_L.rb_get_io_stats(self._handle(), ctypes.byref(s)))
        if reset:
            _check(_L.rb_reset_io_stats(self._handle()))
        return IoStats._from(s)

    def inject_read_faults(self, slots: Iterable[int], errno: int, mode: Fault) -> None:
        """Testing aid: makes reads of `slots` fail with `errno` inside the engine (see the C header)."""
        slots = list(slots)
        arr = (ctypes.c_uint64 * max(1, len(slots)))(*slots)
        _check(_L.rb_test_inject_read_faults(self._handle(), arr, len(slots), errno, int(mode)))

    def clear_read_faults(self) -> None:
        _check(_L.rb_test_clear_read_faults(self._handle()))
