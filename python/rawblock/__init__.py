"""rawblock from Python: fixed-size KV-cache slots on a raw block device, via ctypes.

    import rawblock
    with rawblock.Device.create("cache.img", capacity_bytes=64 << 20) as dev:
        dev[b"key"] = b"value"          # or dev.put(b"key", b"value")
        dev.checkpoint()
    with rawblock.Device.open("cache.img") as dev:
        report = dev.recover()
        assert dev[b"key"] == b"value"  # KeyError (NotFound) when absent
        assert dev.get(b"nope") is None and b"key" in dev and len(dev) == 1
        for k in dev.list_keys():       # rebuild your own index: key, value_len, generation
            ...

A Device follows Python's mapping conventions for bytes keys and values: dev[key],
dev.get(key, default=None), dev[key] = value, del dev[key], key in dev, len(dev) and
iteration over the keys (in bytewise order). The batched calls (get_many, put_many,
delete_many, contains_many) take lists and answer lists, and get_many reads into writable
buffers (bytearray, memoryview, numpy arrays) without a copy when they are 4096-aligned.

The package carries its own librawblock.so (pip builds it with cargo); RAWBLOCK_LIB names
another library to load instead.

One code path for a first start and a restart: Device.open_or_create() formats a
device that holds no rawblock format (never one holding data) and opens one that
does; recover() then answers an empty report on the fresh one.

A Device may be used from several threads at once (the library locks
internally; ctypes releases the GIL during each call). close() may be called
from any thread at any time: it refuses new calls at once (they raise Closed),
waits for the calls already inside the library to return, then closes.
"""

from __future__ import annotations

import ctypes
import operator
import os
import threading
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Iterable, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

from . import _lib

__all__ = [
    "Device", "RawblockError", "Closed", "NotFound", "Corrupt", "NoSpace", "ReadOnly", "Busy",
    "Status", "Engine", "RecoverMode", "HeaderStatus", "Fault", "RecoverReport", "IoStats", "SlotHeader",
    "DeviceInfo", "SuperblockSource", "Region", "Eviction", "KeyInfo", "Metrics", "Latency", "VerifyProgress",
    "version", "abi_version", "Source", "library_path", "__version__",
]

_L = _lib.load()

_T = TypeVar("_T")
Buffer = Any
"""Any object with the buffer protocol: bytes, bytearray, memoryview, array.array, numpy array."""

__version__: str = _L.rb_version().decode()
"""The version of the library this package carries (it is the package's version too)."""


# The values live in _lib (copied from include/rawblock.h and checked against it by
# tests/test_header.py); each enum names them without the RB_ prefix.
class Status(IntEnum):
    """An rb_status: OK, or the reason a call failed (RawblockError.status)."""
    OK = _lib.RB_OK
    INVALID_ARGUMENT = _lib.RB_E_INVALID_ARGUMENT
    IO = _lib.RB_E_IO
    FORMAT = _lib.RB_E_FORMAT
    NO_SPACE = _lib.RB_E_NO_SPACE
    TOO_LARGE = _lib.RB_E_TOO_LARGE
    NOT_FOUND = _lib.RB_E_NOT_FOUND
    CORRUPT = _lib.RB_E_CORRUPT
    BUFFER_TOO_SMALL = _lib.RB_E_BUFFER_TOO_SMALL
    UNSUPPORTED = _lib.RB_E_UNSUPPORTED
    READ_ONLY = _lib.RB_E_READ_ONLY
    BUSY = _lib.RB_E_BUSY
    STATE = _lib.RB_E_STATE
    EXISTS = _lib.RB_E_EXISTS
    PANIC = _lib.RB_E_PANIC
    NO_MEMORY = _lib.RB_E_NO_MEMORY


class SuperblockSource(IntEnum):
    """Which superblock copy a handle was opened from."""
    PRIMARY = _lib.RB_SUPERBLOCK_PRIMARY
    COPY = _lib.RB_SUPERBLOCK_COPY
    """The primary was damaged; a writable handle has rewritten it from the copy."""


class Eviction(IntEnum):
    """What a put does when no slot is free (Device.set_eviction)."""
    NONE = _lib.RB_EVICT_NONE
    LRU = _lib.RB_EVICT_LRU
    FIFO = _lib.RB_EVICT_FIFO


class Engine(IntEnum):
    """The I/O engine a Device asks for at open (DeviceInfo.engine says which runs)."""
    AUTO = _lib.RB_ENGINE_AUTO
    POSIX = _lib.RB_ENGINE_POSIX
    IO_URING = _lib.RB_ENGINE_IO_URING
    URING_CMD = _lib.RB_ENGINE_URING_CMD


class RecoverMode(IntEnum):
    """How recover() rebuilds the index: AUTO (fast: the checkpoint and the slots leased since),
    CHECKPOINT (full validation of the checkpoint only), or SCAN (every slot header)."""
    AUTO = _lib.RB_RECOVER_AUTO
    CHECKPOINT = _lib.RB_RECOVER_CHECKPOINT
    SCAN = _lib.RB_RECOVER_SCAN


class Source(IntEnum):
    """Where a RecoverReport's index came from."""
    NOTHING = _lib.RB_RECOVERED_NOTHING
    CHECKPOINT = _lib.RB_RECOVERED_CHECKPOINT
    SCAN = _lib.RB_RECOVERED_SCAN
    JOURNAL = _lib.RB_RECOVERED_JOURNAL


class HeaderStatus(IntEnum):
    """What a slot's header block holds (SlotHeader.status)."""
    VALID = _lib.RB_HEADER_VALID
    EMPTY = _lib.RB_HEADER_EMPTY
    CORRUPT = _lib.RB_HEADER_CORRUPT
    FOREIGN = _lib.RB_HEADER_FOREIGN
    IO_ERROR = _lib.RB_HEADER_IO_ERROR


class Fault(IntEnum):
    """Testing aid: how an injected read fault behaves (Device.inject_read_faults)."""
    PERSISTENT = _lib.RB_FAULT_PERSISTENT
    TRANSIENT = _lib.RB_FAULT_TRANSIENT
    SUBMIT = _lib.RB_FAULT_SUBMIT


# Device() / recover() keyword -> the C name of the flag bit it sets.
_OPEN_FLAG_NAMES = {"create": "RB_OPEN_CREATE", "overwrite": "RB_OPEN_OVERWRITE_OK", "read_only": "RB_OPEN_READ_ONLY",
                    "buffered": "RB_OPEN_BUFFERED", "sync_writes": "RB_OPEN_SYNC_WRITES",
                    "preallocate": "RB_OPEN_PREALLOCATE", "create_if_empty": "RB_OPEN_CREATE_IF_EMPTY"}
_RECOVER_FLAG_NAMES = {"keep_unreadable": "RB_RECOVER_KEEP_UNREADABLE", "scrub_free": "RB_RECOVER_SCRUB_FREE"}
_OPEN_FLAGS = {kw: getattr(_lib, c) for kw, c in _OPEN_FLAG_NAMES.items()}
_RECOVER_FLAGS = {kw: getattr(_lib, c) for kw, c in _RECOVER_FLAG_NAMES.items()}


class RawblockError(Exception):
    """A failed call: `.status` is the rb_status, `.message` the library's explanation."""

    def __init__(self, status: int, message: str) -> None:
        """`status` the rb_status code, `message` the library's rb_last_error_message()."""
        self.status = Status(status) if status in Status._value2member_map_ else status
        self.message = message
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"{name}: {message}")


class Closed(RawblockError, ValueError):
    """A call on a Device that is closed or closing (a ValueError, like I/O on a closed file)."""

    def __init__(self) -> None:
        """Status STATE, message "the device is closed"."""
        super().__init__(Status.STATE, "the device is closed")


class NotFound(RawblockError, KeyError):
    """The key is not indexed; a KeyError, so dev[key] behaves like a dict's."""

    def __str__(self) -> str:
        """The plain message (KeyError would quote it)."""
        return Exception.__str__(self)


class Corrupt(RawblockError):
    """A header or payload failed its CRC: the library returns no bytes rather than wrong ones."""


class NoSpace(RawblockError):
    """Every slot is in use (and no eviction policy is set), or a checkpoint does not fit."""


class ReadOnly(RawblockError):
    """A write on a Device opened with read_only=True."""


class Busy(RawblockError):
    """Another handle or process holds the device for writing."""


_ERRORS = {Status.NOT_FOUND: NotFound, Status.CORRUPT: Corrupt, Status.NO_SPACE: NoSpace,
           Status.READ_ONLY: ReadOnly, Status.BUSY: Busy}


def _error(status: int, message: str) -> RawblockError:
    return _ERRORS.get(status, RawblockError)(status, message)


def _check(status: int) -> None:
    if status != Status.OK:
        msg = (_L.rb_last_error_message() or b"").decode("utf-8", "replace")
        raise _ERRORS.get(status, RawblockError)(status, msg)


def version() -> str:
    """The loaded library's version, e.g. "0.1.0"."""
    return _L.rb_version().decode()


def abi_version() -> int:
    """The ABI version the loaded library implements (this package checks it at import)."""
    return _L.rb_abi_version()


def library_path() -> str:
    """The path of the librawblock this package loaded (the bundled one unless RAWBLOCK_LIB says otherwise)."""
    return os.path.realpath(_L._name)


@dataclass(frozen=True)
class IoStats:
    """Counters of a handle's batched reads (rb_io_stats): reads submitted, submit calls, the most
    in flight at once, per-slot fallbacks and retries, failed reads, and whether io_uring used
    registered buffers and a registered file."""
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
    """What recover() did (rb_recover_report): where the index came from, how many entries it
    indexed, dropped as stale or unreadable, kept unverified, empty slots and orphans seen,
    header reads, and the time spent in each phase (nanoseconds)."""
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
    trusted_unread: int
    leased_slots: int
    recovered_since_checkpoint: int


@dataclass(frozen=True)
class VerifyProgress:
    """Where background verification stands (Device.verify_step)."""
    checked: int
    verified: int
    dropped: int
    unreadable: int
    remaining: int


@dataclass(frozen=True)
class SlotHeader:
    """One decoded slot header (Device.read_headers_batched): its status, and for a valid
    header the generation, payload length and CRC and the key."""
    slot: int
    status: HeaderStatus
    os_errno: int
    generation: int
    payload_len: int
    payload_crc: int
    key: bytes
    """The key, or its first RB_HEADER_KEY_INLINE bytes when `key_len` is longer."""
    key_len: int


@dataclass(frozen=True)
class DeviceInfo:
    """The device's geometry and the handle's engine settings (rb_device_info)."""
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
    engine_note: str
    """Why Engine.AUTO did not pick io_uring; "" when it did or an engine was named."""
    superblock_source: SuperblockSource
    formatted: bool
    """This handle formatted the device when it opened (create, or open_or_create finding none)."""


@dataclass(frozen=True)
class KeyInfo:
    """One indexed key, as Device.list_keys() yields it."""
    key: bytes
    value_len: int
    generation: int


@dataclass(frozen=True)
class Latency:
    """Nanoseconds; a percentile is at most 1/64 above the true value, never above max_ns."""
    count: int
    p50_ns: int
    p99_ns: int
    p999_ns: int
    max_ns: int

    @classmethod
    def _from(cls, l: _lib.Latency) -> "Latency":
        return cls(l.count, l.p50_ns, l.p99_ns, l.p999_ns, l.max_ns)


@dataclass(frozen=True)
class Metrics:
    """A handle's data-path counters since open or reset_metrics (see rb_metrics in the header).

    gets = hits + misses + failed reads; puts and deletes count successes; get and put time
    single calls, get_many and put_many whole batched calls."""
    gets: int
    hits: int
    misses: int
    puts: int
    deletes: int
    evictions: int
    bytes_read: int
    bytes_written: int
    corrupt: int
    io_errors: int
    get: Latency
    put: Latency
    get_many: Latency
    put_many: Latency


def _buf(data: bytes) -> tuple[ctypes.c_char_p, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    return ctypes.c_char_p(data), len(data)


def _readable(value) -> tuple[int, int, object]:
    """Address and length of a readable buffer (bytes, bytearray, memoryview, numpy array),
    and the object that must stay alive while the address is used."""
    mv = memoryview(value).cast("B")
    if mv.nbytes == 0:
        return 0, 0, value
    if mv.readonly:
        # ctypes can point into read-only memory only through a bytes object.
        raw = value if isinstance(value, bytes) else mv.tobytes()
        return ctypes.cast(ctypes.c_char_p(raw), ctypes.c_void_p).value, len(raw), raw
    return ctypes.addressof(ctypes.c_char.from_buffer(mv)), mv.nbytes, mv


def _writable(buf) -> tuple[int, int]:
    """Address and length of a writable, contiguous buffer."""
    mv = memoryview(buf)
    if mv.readonly:
        raise TypeError(f"{type(buf).__name__} is read-only; pass a bytearray, memoryview or numpy array")
    if not mv.c_contiguous:
        raise ValueError("the buffer must be contiguous")
    mv = mv.cast("B")
    return (ctypes.addressof(ctypes.c_char.from_buffer(mv)) if mv.nbytes else 0), mv.nbytes


def _path(path: "str | bytes | os.PathLike") -> bytes:
    """The path as the OS takes it: str, bytes or os.PathLike, like open() (never str(b'..'))."""
    p = os.fsencode(path)  # TypeError for anything else
    if b"\0" in p:  # C would stop at the NUL and open a different file
        raise ValueError(f"embedded null byte in path {p!r}")
    return p


def _int_range(ctype) -> tuple[int, int, str]:
    bits = 8 * ctypes.sizeof(ctype)
    if ctype(-1).value < 0:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1, f"int{bits}_t"
    return 0, (1 << bits) - 1, f"uint{bits}_t"


def _c_int(value, ctype, what: str) -> int:
    """`value` as an int that fits the C type, or OverflowError: ctypes would silently wrap it."""
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}") from None
    lo, hi, name = _int_range(ctype)
    if not lo <= v <= hi:
        raise OverflowError(f"{what}={v} is out of range for {name} ({lo}..{hi})")
    return v


def _c_ints(values: Iterable[int], ctype, what: str) -> list[int]:
    try:
        vs = [operator.index(v) for v in values]
    except TypeError as e:
        raise TypeError(f"{what} must be integers ({e})") from None
    lo, hi, name = _int_range(ctype)
    if vs and not (lo <= min(vs) and max(vs) <= hi):
        i, v = next((i, v) for i, v in enumerate(vs) if not lo <= v <= hi)
        raise OverflowError(f"{what}[{i}]={v} is out of range for {name} ({lo}..{hi})")
    return vs


def _arg(fn: str, i: int):
    """The C type of argument `i` of `fn` (the pointee for a pointer), as _lib.SIGNATURES declares it."""
    t = _lib.SIGNATURES[fn][1][i]
    return getattr(t, "_type_", t) if issubclass(t, ctypes._Pointer) else t


def _set_flag(flags: int, bit: int, on: Optional[bool]) -> int:
    if on is None:
        return flags  # the library's default
    return (flags | bit) if on else (flags & ~bit)


def _override(opts: ctypes.Structure, **given) -> None:
    """Sets the fields the caller gave, range-checked for the field's C type; a None leaves
    what the library's *_init filled in."""
    types = dict(type(opts)._fields_)
    for name, value in given.items():
        if value is not None:
            setattr(opts, name, _c_int(value, types[name], name))


class _CallGuard:
    """Keeps the C handle alive while calls are inside the library.

    Every call enters (a shared count, refused once closing began) and leaves; shut()
    refuses new calls, waits until none is in flight and only then hands the handle
    over for rb_close, so no thread can reach a freed handle (rb_close's contract:
    "with no call in progress on it").
    """

    __slots__ = ("_cv", "_handle", "_calls", "_closing", "_closed")

    def __init__(self, handle: ctypes.c_void_p):
        self._cv = threading.Condition(threading.Lock())
        self._handle = handle
        self._calls = 0
        self._closing = False
        self._closed = False

    def __enter__(self) -> ctypes.c_void_p:
        with self._cv:
            if self._closing:
                raise Closed()
            self._calls += 1
            return self._handle

    def __exit__(self, *exc) -> None:
        with self._cv:
            self._calls -= 1
            if self._calls == 0 and self._closing:
                self._cv.notify_all()

    def shut(self, rb_close) -> None:
        with self._cv:
            if self._closing:  # closed, or another thread is closing: return once it is closed
                self._cv.wait_for(lambda: self._closed)
                return
            self._closing = True
            self._cv.wait_for(lambda: self._calls == 0)
            handle, self._handle = self._handle, None
        try:
            rb_close(handle)
        finally:
            with self._cv:
                self._closed = True
                self._cv.notify_all()


class Region:
    """Memory registered with a Device (Device.register_memory); unregisters on exit."""

    def __init__(self, device: "Device", region: int, buffer: Buffer) -> None:
        """Made by Device.register_memory; `id` names the region."""
        self._device, self.id, self._buffer = device, region, buffer

    def unregister(self) -> None:
        """Waits for calls in flight that use the region, then releases it (idempotent)."""
        if self._buffer is not None:
            with self._device._guard as h:
                _check(_L.rb_unregister_memory(h, self.id))
            self._buffer = None

    def __enter__(self) -> "Region":
        """Returns the region; leaving the block unregisters it."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Unregisters the region."""
        self.unregister()


class Device:
    """An open rawblock device. Use Device.create() to format, Device.open() to reopen.

    Every option left at None takes the library's default (rb_options_init); 0 in a
    number also means its default there.
    """

    def __init__(self, path: "str | bytes | os.PathLike", *, create: Optional[bool] = None,
                 overwrite: Optional[bool] = None, read_only: Optional[bool] = None, buffered: Optional[bool] = None,
                 sync_writes: Optional[bool] = None, preallocate: Optional[bool] = None,
                 create_if_empty: Optional[bool] = None,
                 engine: Optional[Engine] = None,
                 posix_threads: Optional[int] = None, queue_depth: Optional[int] = None,
                 capacity_bytes: Optional[int] = None, slot_bytes: Optional[int] = None,
                 header_bytes: Optional[int] = None, block_size: Optional[int] = None,
                 meta_bytes: Optional[int] = None, max_key_bytes: Optional[int] = None) -> None:
        """Opens (create=True: formats) the device or file at `path`; see rb_open(3) for every option.

        Options left at None take the library's defaults; capacity_bytes sizes a new file."""
        opts = _lib.Options()
        _check(_L.rb_options_init(ctypes.byref(opts)))
        flags = opts.flags
        for kw, on in (("create", create), ("overwrite", overwrite), ("read_only", read_only),
                       ("buffered", buffered), ("sync_writes", sync_writes), ("preallocate", preallocate),
                       ("create_if_empty", create_if_empty)):
            flags = _set_flag(flags, _OPEN_FLAGS[kw], on)
        _override(opts, flags=flags, engine=engine, posix_threads=posix_threads, queue_depth=queue_depth,
                  capacity_bytes=capacity_bytes, slot_bytes=slot_bytes, header_bytes=header_bytes,
                  block_size=block_size, meta_bytes=meta_bytes, max_key_bytes=max_key_bytes)
        c_path = _path(path)
        handle = ctypes.c_void_p()
        _check(_L.rb_open(c_path, ctypes.byref(opts), ctypes.byref(handle)))
        self._guard = _CallGuard(handle)

    @classmethod
    def create(cls, path: "str | bytes | os.PathLike", *, overwrite: Optional[bool] = None, **kw: Any) -> "Device":
        """Formats `path` (a block device, or a file sized by capacity_bytes) and opens it."""
        return cls(path, create=True, overwrite=overwrite, **kw)

    @classmethod
    def open(cls, path: "str | bytes | os.PathLike", **kw: Any) -> "Device":
        """Opens a formatted device; call recover() before reading or writing."""
        return cls(path, **kw)

    @classmethod
    def open_or_create(cls, path: "str | bytes | os.PathLike", **kw: Any) -> "Device":
        """Opens a rawblock device, or formats one holding none (a new or empty file, or zeros) with
        the geometry given (capacity_bytes for a file); never formats over data (RawblockError
        EXISTS). Either way, call recover() next: on a device it just formatted that returns an
        empty report. info().formatted says which happened."""
        return cls(path, create_if_empty=True, **kw)

    def close(self) -> None:
        """Closes the handle (idempotent, from any thread). Does not checkpoint.

        New calls raise Closed from now on; calls already inside the library finish first.
        """
        guard = getattr(self, "_guard", None)  # absent when __init__ failed
        if guard is not None:
            guard.shut(lambda h: _check(_L.rb_close(h)))

    def __enter__(self) -> "Device":
        """Returns the device; leaving the block closes it."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Closes the device (without a checkpoint)."""
        self.close()

    def __del__(self) -> None:
        """Closes a device nobody closed; errors are ignored here."""
        try:
            self.close()
        except Exception:
            pass

    def put(self, key: bytes, value: bytes) -> None:
        """Stores `value` under `key`, replacing any previous value (its old slot is invalidated
        before this returns). Raises NoSpace when every slot is in use."""
        k, kl = _buf(key)
        v, vl = _buf(value)
        with self._guard as h:
            _check(_L.rb_put(h, k, kl, v, vl))

    def __setitem__(self, key: bytes, value: bytes) -> None:
        """dev[key] = value: put()."""
        self.put(key, value)

    def get(self, key: bytes, default: Optional[_T] = None) -> Union[bytes, _T, None]:
        """The value of `key`, or `default` when it is not indexed. Raises Corrupt rather than
        return wrong bytes."""
        try:
            return self[key]
        except NotFound:
            return default

    def __getitem__(self, key: bytes) -> bytes:
        """dev[key]: the value of `key`, verified; raises NotFound (a KeyError) when it is not
        indexed, or Corrupt rather than return wrong bytes."""
        k, kl = _buf(key)
        n = ctypes.c_size_t(0)
        cap = 64 * 1024
        with self._guard as h:
            while True:
                out = ctypes.create_string_buffer(cap)
                s = _L.rb_get(h, k, kl, out, cap, ctypes.byref(n))
                if s == Status.BUFFER_TOO_SMALL:
                    cap = n.value
                    continue
                _check(s)
                return out.raw[: n.value]

    # Batched calls: one call into the library for many keys, each item with its own outcome.

    @staticmethod
    def _items(keys: Sequence[bytes]) -> tuple[ctypes.Array, list]:
        """An rb_item array for `keys`, and the buffers that must stay alive while it is used."""
        keep, arr = [], (_lib.Item * max(len(keys), 1))()
        arr[0].struct_size = ctypes.sizeof(_lib.Item)
        for i, key in enumerate(keys):
            k, kl = _buf(key)
            keep.append(k)
            arr[i].key, arr[i].key_len = ctypes.cast(k, ctypes.c_void_p), kl
        return arr, keep

    def _run_many(self, fn: str, arr: ctypes.Array, n: int) -> None:
        if n:
            with self._guard as h:
                _check(getattr(_L, fn)(h, arr, n))

    @staticmethod
    def _item_error(item: _lib.Item, what: str) -> RawblockError:
        return _error(item.status, f"{what}: {Status(item.status).name if item.status in Status._value2member_map_ else item.status}")

    def put_many(self, items: Iterable[Tuple[bytes, Buffer]]) -> List[Optional[RawblockError]]:
        """Stores every (key, value) in one call; result i is None or item i's error.

        Values may be bytes or any buffer (bytearray, memoryview, numpy array); a value at a
        4096-byte boundary whose length is a multiple of the block size is written without a copy.
        The last of several items with one key wins."""
        items = list(items)
        arr, keep = self._items([k for k, _ in items])
        for i, (_, value) in enumerate(items):
            ptr, n, alive = _readable(value)
            keep.append(alive)
            arr[i].value, arr[i].value_len = ptr, n
        self._run_many("rb_put_many", arr, len(items))
        return [None if arr[i].status == Status.OK else self._item_error(arr[i], f"put item {i}") for i in range(len(items))]

    def get_many(self, keys: Sequence[bytes], into: Optional[Sequence[Buffer]] = None) -> List[Any]:
        """Gets every key in one call.

        Without `into`: a list of bytes, or the item's error (NotFound, Corrupt, ...).
        With `into` (writable buffers: bytearray, memoryview, numpy arrays): each value is read
        into its buffer -- without a copy when the buffer starts at a 4096-byte boundary and
        holds the value rounded up to the block size -- and the list holds each value's length,
        or the item's error. A failed item leaves its buffer's contents unspecified."""
        keys = list(keys)
        if into is None:
            return self._get_many_bytes(keys)
        if len(into) != len(keys):
            raise ValueError(f"{len(keys)} keys but {len(into)} buffers")
        arr, keep = self._items(keys)
        for i, buf in enumerate(into):
            ptr, n = _writable(buf)
            keep.append(buf)
            arr[i].value, arr[i].value_len = ptr, n
        self._run_many("rb_get_many", arr, len(keys))
        return [arr[i].len if arr[i].status == Status.OK else self._item_error(arr[i], f"get item {i}")
                for i in range(len(keys))]

    def _get_many_bytes(self, keys: List[bytes]) -> List[Any]:
        arr, keep = self._items(keys)
        self._run_many("rb_get_many", arr, len(keys))  # no buffers: every present key says its length
        bufs = [ctypes.create_string_buffer(max(arr[i].len, 1)) for i in range(len(keys))]
        for i, b in enumerate(bufs):
            arr[i].value, arr[i].value_len = ctypes.cast(b, ctypes.c_void_p), len(b)
        self._run_many("rb_get_many", arr, len(keys))
        return [bufs[i].raw[:arr[i].len] if arr[i].status == Status.OK else self._item_error(arr[i], f"get item {i}")
                for i in range(len(keys))]

    def delete_many(self, keys: Sequence[bytes]) -> List[Optional[RawblockError]]:
        """Deletes every key in one call; result i is None or item i's error (NotFound, ...)."""
        keys = list(keys)
        arr, keep = self._items(keys)
        self._run_many("rb_delete_many", arr, len(keys))
        return [None if arr[i].status == Status.OK else self._item_error(arr[i], f"delete item {i}") for i in range(len(keys))]

    def contains_many(self, keys: Sequence[bytes]) -> List[bool]:
        """Whether each key is indexed (no device read)."""
        keys = list(keys)
        arr, keep = self._items(keys)
        self._run_many("rb_contains_many", arr, len(keys))
        out = []
        for i in range(len(keys)):
            if arr[i].status not in (Status.OK, Status.NOT_FOUND):
                raise self._item_error(arr[i], f"contains item {i}")
            out.append(arr[i].status == Status.OK)
        return out

    def count_present_prefix(self, keys: Sequence[bytes]) -> int:
        """How many of `keys`, in order, are present before the first absent one."""
        keys = list(keys)
        if not keys:
            return 0
        arr, keep = self._items(keys)
        count = ctypes.c_size_t(0)
        with self._guard as h:
            _check(_L.rb_count_present_prefix(h, arr, len(keys), ctypes.byref(count)))
        return count.value

    def set_eviction(self, policy: Eviction, low_watermark_permille: int = 0) -> None:
        """Evict the coldest entries (LRU or FIFO) when a put finds no free slot, down to
        `low_watermark_permille` thousandths of the slots free (0: the library's default)."""
        policy = _c_int(policy, ctypes.c_uint32, "policy")
        permille = _c_int(low_watermark_permille, ctypes.c_uint32, "low_watermark_permille")
        with self._guard as h:
            _check(_L.rb_set_eviction(h, policy, permille))

    def register_memory(self, buffer: Buffer) -> "Region":
        """Registers a writable buffer (e.g. an mmap'ed or pinned pool) so batched calls moving
        data into and out of it use io_uring fixed buffers. Use the returned Region as a context
        manager, or call its unregister(); the buffer must stay alive until then."""
        ptr, n = _writable(buffer)
        if n == 0:
            raise ValueError("cannot register an empty buffer")
        region = ctypes.c_uint32(0)
        with self._guard as h:
            _check(_L.rb_register_memory(h, ptr, n, ctypes.byref(region)))
        return Region(self, region.value, buffer)

    def delete(self, key: bytes) -> None:
        """Removes `key` (its slot header is invalidated before this returns); raises NotFound when absent."""
        k, kl = _buf(key)
        with self._guard as h:
            _check(_L.rb_delete(h, k, kl))

    def __delitem__(self, key: bytes) -> None:
        """del dev[key]: delete()."""
        self.delete(key)

    def __len__(self) -> int:
        """len(dev): the number of indexed keys."""
        return self.info().indexed

    def __iter__(self) -> Iterator[bytes]:
        """Iterates over the indexed keys in ascending bytewise order (see list_keys)."""
        return (k.key for k in self.list_keys())

    def keys(self) -> Iterator[bytes]:
        """The indexed keys in ascending bytewise order, like iter(dev)."""
        return iter(self)

    def __contains__(self, key: bytes) -> bool:  # type: ignore[override]
        """`key in dev`: whether the key is indexed (no device read)."""
        k, kl = _buf(key)
        found = ctypes.c_bool(False)
        with self._guard as h:
            _check(_L.rb_contains(h, k, kl, ctypes.byref(found)))
        return bool(found.value)

    def checkpoint(self) -> None:
        """Makes the index durable in the checkpoint container not holding the newest one."""
        with self._guard as h:
            _check(_L.rb_checkpoint(h))

    def recover(self, mode: Optional[RecoverMode] = None, keep_unreadable: Optional[bool] = None,
                scrub_free: Optional[bool] = None) -> RecoverReport:
        """Rebuilds the index; options left at None take rb_recover_options_init's defaults."""
        opts = _lib.RecoverOptions()
        _check(_L.rb_recover_options_init(ctypes.byref(opts)))
        flags = _set_flag(opts.flags, _RECOVER_FLAGS["keep_unreadable"], keep_unreadable)
        flags = _set_flag(flags, _RECOVER_FLAGS["scrub_free"], scrub_free)
        _override(opts, mode=mode, flags=flags)
        r = _lib.RecoverReport()
        r.struct_size = ctypes.sizeof(r)
        with self._guard as h:
            _check(_L.rb_recover(h, ctypes.byref(opts), ctypes.byref(r)))
        return RecoverReport(Source(r.source), Engine(r.engine), r.checkpoint_sequence, r.checkpoint_entries,
                             r.indexed, r.dropped_stale, r.dropped_unreadable, r.kept_unverified, r.empty_slots,
                             r.header_reads, r.elapsed_ns, r.checkpoint_load_ns, r.validate_ns, r.first_errno,
                             r.queue_depth, IoStats._from(r.io), r.orphans, r.trusted_unread, r.leased_slots,
                             r.recovered_since_checkpoint)

    def sync(self) -> None:
        """Makes every put and delete acknowledged before it survive a power cut (rb_sync)."""
        with self._guard as h:
            _check(_L.rb_sync(h))

    def set_auto_checkpoint(self, every_changes: int = 0, every_ms: int = 0) -> None:
        """Checkpoints by itself after every_changes changes or every_ms ms with changes (0: off)."""
        with self._guard as h:
            _check(_L.rb_set_auto_checkpoint(h, every_changes, every_ms))

    def verify_step(self, max_entries: int) -> VerifyProgress:
        """Verifies up to max_entries entries a fast recovery indexed unread (rb_verify_step)."""
        p = _lib.VerifyProgress()
        p.struct_size = ctypes.sizeof(p)
        with self._guard as h:
            _check(_L.rb_verify_step(h, max_entries, ctypes.byref(p)))
        return VerifyProgress(p.checked, p.verified, p.dropped, p.unreadable, p.remaining)

    def read_headers_batched(self, slots: Iterable[int]) -> List[SlotHeader]:
        """Reads and decodes the headers of `slots` through the engine, each with its own status."""
        slots = _c_ints(slots, _arg("rb_read_headers_batched", 1), "slots")
        if not slots:
            return []
        arr = (ctypes.c_uint64 * len(slots))(*slots)
        out = (_lib.SlotHeader * len(slots))()
        out[0].struct_size = ctypes.sizeof(_lib.SlotHeader)
        with self._guard as h:
            _check(_L.rb_read_headers_batched(h, arr, len(slots), out))
        return [SlotHeader(h.slot, HeaderStatus(h.status), h.os_errno, h.generation, h.payload_len, h.payload_crc,
                           bytes(h.key[: min(h.key_len, _lib.RB_HEADER_KEY_INLINE)]), h.key_len) for h in out]

    def info(self) -> DeviceInfo:
        """The device's geometry and this handle's engine settings."""
        i = _lib.DeviceInfo()
        i.struct_size = ctypes.sizeof(i)
        with self._guard as h:
            _check(_L.rb_get_info(h, ctypes.byref(i)))
        return DeviceInfo(bytes(i.device_id), i.block_size, i.header_bytes, i.slot_bytes, i.slot_count, i.meta_bytes,
                          i.data_base, i.max_key_bytes, i.max_payload, Engine(i.engine), i.queue_depth,
                          bool(i.read_only), bool(i.direct_io), i.indexed,
                          i.engine_note.decode("utf-8", "replace"), SuperblockSource(i.superblock_source),
                          bool(i.formatted))

    def list_keys(self, after: Optional[bytes] = None, page_keys: int = 4096) -> Iterator[KeyInfo]:
        """Every indexed key (with its value length and generation) in ascending bytewise order,
        fetched `page_keys` at a time; from the first key, or the first strictly after `after`.

        Under concurrent writes: no key comes twice; a key indexed for the whole iteration comes
        exactly once; keys put or deleted meanwhile may or may not come. Needs recover() first."""
        page_keys = _c_int(page_keys, ctypes.c_size_t, "page_keys")
        if page_keys == 0:
            raise ValueError("page_keys must be at least 1")
        k, kl = _buf(after or b"")
        cursor = ctypes.c_void_p()
        _check(_L.rb_key_cursor_new(k, kl, ctypes.byref(cursor)))
        try:
            out = (_lib.KeyInfo * page_keys)()
            out[0].struct_size = ctypes.sizeof(_lib.KeyInfo)
            keys = ctypes.create_string_buffer(max(self.info().max_key_bytes, 64 * 1024))
            n = ctypes.c_size_t(0)
            while True:
                with self._guard as h:
                    s = _L.rb_list_keys(h, cursor, out, page_keys, keys, len(keys), ctypes.byref(n))
                if s == Status.BUFFER_TOO_SMALL:  # only if max_key_bytes changed under us; grow and retry
                    keys = ctypes.create_string_buffer(out[0].key_len)
                    continue
                _check(s)
                if n.value == 0:
                    return
                raw = keys.raw
                for e in out[: n.value]:
                    yield KeyInfo(raw[e.key_offset: e.key_offset + e.key_len], e.value_len, e.generation)
        finally:
            _L.rb_key_cursor_free(cursor)

    def take_evicted(self, max_keys: int = 4096) -> List[KeyInfo]:
        """The keys the eviction policy removed since the last call, oldest first (at most
        `max_keys`; the rest stay queued for the next call)."""
        max_keys = _c_int(max_keys, ctypes.c_size_t, "max_keys")
        if max_keys == 0:
            return []
        out = (_lib.KeyInfo * max_keys)()
        out[0].struct_size = ctypes.sizeof(_lib.KeyInfo)
        keys = ctypes.create_string_buffer(max(self.info().max_key_bytes, 64 * 1024))
        n = ctypes.c_size_t(0)
        with self._guard as h:
            _check(_L.rb_take_evicted(h, out, max_keys, keys, len(keys), ctypes.byref(n)))
        raw = keys.raw
        return [KeyInfo(raw[e.key_offset: e.key_offset + e.key_len], e.value_len, e.generation) for e in out[: n.value]]

    def metrics(self, reset: bool = False) -> Metrics:
        """The handle's data-path counters and latency percentiles; with reset=True, zeroes them after reading."""
        m = _lib.Metrics()
        m.struct_size = ctypes.sizeof(m)
        with self._guard as h:
            _check(_L.rb_get_metrics(h, ctypes.byref(m)))
            if reset:
                _check(_L.rb_reset_metrics(h))
        return Metrics(m.gets, m.hits, m.misses, m.puts, m.deletes, m.evictions, m.bytes_read, m.bytes_written,
                       m.corrupt, m.io_errors, Latency._from(m.get_latency), Latency._from(m.put_latency),
                       Latency._from(m.get_many_latency), Latency._from(m.put_many_latency))

    def reset_metrics(self) -> None:
        """Zeroes the handle's data-path metrics."""
        with self._guard as h:
            _check(_L.rb_reset_metrics(h))

    def io_stats(self, reset: bool = False) -> IoStats:
        """Counters of the handle's batched reads; with reset=True, zeroes them after reading."""
        s = _lib.IoStats()
        s.struct_size = ctypes.sizeof(s)
        with self._guard as h:
            _check(_L.rb_get_io_stats(h, ctypes.byref(s)))
            if reset:
                _check(_L.rb_reset_io_stats(h))
        return IoStats._from(s)

    def inject_read_faults(self, slots: Iterable[int], errno: int, mode: Fault) -> None:
        """Testing aid: makes reads of `slots` fail with `errno` inside the engine (see the C header)."""
        slots = _c_ints(slots, _arg("rb_test_inject_read_faults", 1), "slots")
        errno = _c_int(errno, _arg("rb_test_inject_read_faults", 3), "errno")
        mode = _c_int(mode, _arg("rb_test_inject_read_faults", 4), "mode")
        arr = (ctypes.c_uint64 * max(1, len(slots)))(*slots)
        with self._guard as h:
            _check(_L.rb_test_inject_read_faults(h, arr, len(slots), errno, mode))

    def clear_read_faults(self) -> None:
        """Testing aid: removes every injected read fault."""
        with self._guard as h:
            _check(_L.rb_test_clear_read_faults(h))
