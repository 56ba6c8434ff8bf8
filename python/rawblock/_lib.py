"""Loading librawblock and declaring every exported function's signature."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

# Every #define of include/rawblock.h, under its C name. tests/test_header.py compiles a probe
# against the header and fails when one is missing here, extra here, or has another value.
RB_ABI_VERSION = 1

RB_ENGINE_AUTO = 0
RB_ENGINE_POSIX = 1
RB_ENGINE_IO_URING = 2
RB_ENGINE_URING_CMD = 3

RB_OPEN_CREATE = 1
RB_OPEN_OVERWRITE_OK = 2
RB_OPEN_READ_ONLY = 4
RB_OPEN_BUFFERED = 8
RB_OPEN_SYNC_WRITES = 16
RB_OPEN_PREALLOCATE = 32
RB_OPEN_CREATE_IF_EMPTY = 64

RB_RECOVER_AUTO = 0
RB_RECOVER_CHECKPOINT = 1
RB_RECOVER_SCAN = 2

RB_RECOVER_KEEP_UNREADABLE = 1
RB_RECOVER_SCRUB_FREE = 2

RB_RECOVERED_NOTHING = 0
RB_RECOVERED_CHECKPOINT = 1
RB_RECOVERED_SCAN = 2
RB_RECOVERED_JOURNAL = 3

RB_HEADER_VALID = 0
RB_HEADER_EMPTY = 1
RB_HEADER_CORRUPT = 2
RB_HEADER_FOREIGN = 3
RB_HEADER_IO_ERROR = 4

RB_FAULT_PERSISTENT = 1
RB_FAULT_TRANSIENT = 2
RB_FAULT_SUBMIT = 3

RB_HEADER_KEY_INLINE = 256
RB_ENGINE_NOTE_BYTES = 256
RB_SUPERBLOCK_PRIMARY = 0
RB_EVICT_NONE = 0
RB_EVICT_LRU = 1
RB_EVICT_FIFO = 2
RB_SUPERBLOCK_COPY = 1

RB_OK = 0
RB_E_INVALID_ARGUMENT = 1
RB_E_IO = 2
RB_E_FORMAT = 3
RB_E_NO_SPACE = 4
RB_E_TOO_LARGE = 5
RB_E_NOT_FOUND = 6
RB_E_CORRUPT = 7
RB_E_BUFFER_TOO_SMALL = 8
RB_E_UNSUPPORTED = 9
RB_E_READ_ONLY = 10
RB_E_BUSY = 11
RB_E_STATE = 12
RB_E_EXISTS = 13
RB_E_PANIC = 14
RB_E_NO_MEMORY = 15

# The header's structs, in its order. Field names, order, C types, offsets and sizes are
# checked against the header by tests/test_header.py.


class Options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("engine", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("posix_threads", ctypes.c_uint32),
        ("queue_depth", ctypes.c_uint32),
        ("block_size", ctypes.c_uint32),
        ("header_bytes", ctypes.c_uint32),
        ("slot_bytes", ctypes.c_uint64),
        ("capacity_bytes", ctypes.c_uint64),
        ("meta_bytes", ctypes.c_uint64),
        ("max_key_bytes", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class RecoverOptions(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_size_t), ("mode", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class IoStats(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("reads_submitted", ctypes.c_uint64),
        ("submit_calls", ctypes.c_uint64),
        ("max_in_flight", ctypes.c_uint64),
        ("fallbacks", ctypes.c_uint64),
        ("retries", ctypes.c_uint64),
        ("failed", ctypes.c_uint64),
        ("registered_buffers", ctypes.c_uint32),
        ("registered_file", ctypes.c_uint32),
    ]


class RecoverReport(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("source", ctypes.c_uint32),
        ("engine", ctypes.c_uint32),
        ("checkpoint_sequence", ctypes.c_uint64),
        ("checkpoint_entries", ctypes.c_uint64),
        ("indexed", ctypes.c_uint64),
        ("dropped_stale", ctypes.c_uint64),
        ("dropped_unreadable", ctypes.c_uint64),
        ("kept_unverified", ctypes.c_uint64),
        ("empty_slots", ctypes.c_uint64),
        ("header_reads", ctypes.c_uint64),
        ("elapsed_ns", ctypes.c_uint64),
        ("checkpoint_load_ns", ctypes.c_uint64),
        ("validate_ns", ctypes.c_uint64),
        ("first_errno", ctypes.c_int32),
        ("queue_depth", ctypes.c_uint32),
        ("io", IoStats),
        ("orphans", ctypes.c_uint64),
        ("trusted_unread", ctypes.c_uint64),
        ("leased_slots", ctypes.c_uint64),
        ("recovered_since_checkpoint", ctypes.c_uint64),
    ]


class VerifyProgress(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("checked", ctypes.c_uint64),
        ("verified", ctypes.c_uint64),
        ("dropped", ctypes.c_uint64),
        ("unreadable", ctypes.c_uint64),
        ("remaining", ctypes.c_uint64),
    ]


class SlotHeader(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("status", ctypes.c_int32),
        ("os_errno", ctypes.c_int32),
        ("slot", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
        ("payload_len", ctypes.c_uint64),
        ("payload_crc", ctypes.c_uint32),
        ("key_len", ctypes.c_uint32),
        ("key", ctypes.c_uint8 * RB_HEADER_KEY_INLINE),
    ]


class DeviceInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("device_id", ctypes.c_uint8 * 16),
        ("block_size", ctypes.c_uint32),
        ("header_bytes", ctypes.c_uint32),
        ("slot_bytes", ctypes.c_uint64),
        ("slot_count", ctypes.c_uint64),
        ("meta_bytes", ctypes.c_uint64),
        ("data_base", ctypes.c_uint64),
        ("max_key_bytes", ctypes.c_uint32),
        ("engine", ctypes.c_uint32),
        ("max_payload", ctypes.c_uint64),
        ("queue_depth", ctypes.c_uint32),
        ("read_only", ctypes.c_uint32),
        ("direct_io", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("indexed", ctypes.c_uint64),
        ("engine_note", ctypes.c_char * RB_ENGINE_NOTE_BYTES),
        ("superblock_source", ctypes.c_uint32),
        ("formatted", ctypes.c_uint32),
    ]


class Item(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("key", ctypes.c_void_p),
        ("key_len", ctypes.c_size_t),
        ("value", ctypes.c_void_p),
        ("value_len", ctypes.c_size_t),
        ("len", ctypes.c_size_t),
        ("status", ctypes.c_int32),
        ("reserved", ctypes.c_uint32),
    ]


class KeyInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("key_offset", ctypes.c_size_t),
        ("key_len", ctypes.c_size_t),
        ("value_len", ctypes.c_uint64),
        ("generation", ctypes.c_uint64),
    ]


class Latency(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("p50_ns", ctypes.c_uint64),
        ("p99_ns", ctypes.c_uint64),
        ("p999_ns", ctypes.c_uint64),
        ("max_ns", ctypes.c_uint64),
    ]


class Metrics(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("gets", ctypes.c_uint64),
        ("hits", ctypes.c_uint64),
        ("misses", ctypes.c_uint64),
        ("puts", ctypes.c_uint64),
        ("deletes", ctypes.c_uint64),
        ("evictions", ctypes.c_uint64),
        ("bytes_read", ctypes.c_uint64),
        ("bytes_written", ctypes.c_uint64),
        ("corrupt", ctypes.c_uint64),
        ("io_errors", ctypes.c_uint64),
        ("get_latency", Latency),
        ("put_latency", Latency),
        ("get_many_latency", Latency),
        ("put_many_latency", Latency),
    ]


# C name of each struct -> its ctypes class.
STRUCTS = {
    "rb_options": Options,
    "rb_recover_options": RecoverOptions,
    "rb_io_stats": IoStats,
    "rb_recover_report": RecoverReport,
    "rb_slot_header": SlotHeader,
    "rb_device_info": DeviceInfo,
    "rb_item": Item,
    "rb_key_info": KeyInfo,
    "rb_latency": Latency,
    "rb_metrics": Metrics,
    "rb_verify_progress": VerifyProgress,
}


# Every function of the header: name -> (restype, argtypes). Checked against the header's
# prototypes by tests/test_header.py. Handles (struct rb_device *) are c_void_p.
_P = ctypes.POINTER
_dev = ctypes.c_void_p
_status = ctypes.c_int32  # rb_status
_size = ctypes.c_size_t
SIGNATURES = {
    "rb_version": (ctypes.c_char_p, []),
    "rb_abi_version": (ctypes.c_uint32, []),
    "rb_status_str": (ctypes.c_char_p, [_status]),
    "rb_last_error_message": (ctypes.c_char_p, []),
    "rb_options_init": (_status, [_P(Options)]),
    "rb_recover_options_init": (_status, [_P(RecoverOptions)]),
    "rb_open": (_status, [ctypes.c_char_p, _P(Options), _P(_dev)]),
    "rb_close": (_status, [_dev]),
    "rb_put": (_status, [_dev, ctypes.c_void_p, _size, ctypes.c_void_p, _size]),
    "rb_get": (_status, [_dev, ctypes.c_void_p, _size, ctypes.c_void_p, _size, _P(_size)]),
    "rb_delete": (_status, [_dev, ctypes.c_void_p, _size]),
    "rb_contains": (_status, [_dev, ctypes.c_void_p, _size, _P(ctypes.c_bool)]),
    "rb_checkpoint": (_status, [_dev]),
    "rb_recover": (_status, [_dev, _P(RecoverOptions), _P(RecoverReport)]),
    "rb_read_headers_batched": (_status, [_dev, _P(ctypes.c_uint64), _size, _P(SlotHeader)]),
    "rb_get_io_stats": (_status, [_dev, _P(IoStats)]),
    "rb_reset_io_stats": (_status, [_dev]),
    "rb_get_info": (_status, [_dev, _P(DeviceInfo)]),
    "rb_test_inject_read_faults": (_status, [_dev, _P(ctypes.c_uint64), _size, ctypes.c_int32, ctypes.c_uint32]),
    "rb_test_clear_read_faults": (_status, [_dev]),
    "rb_get_many": (_status, [_dev, _P(Item), _size]),
    "rb_put_many": (_status, [_dev, _P(Item), _size]),
    "rb_delete_many": (_status, [_dev, _P(Item), _size]),
    "rb_contains_many": (_status, [_dev, _P(Item), _size]),
    "rb_count_present_prefix": (_status, [_dev, _P(Item), _size, _P(_size)]),
    "rb_register_memory": (_status, [_dev, ctypes.c_void_p, _size, _P(ctypes.c_uint32)]),
    "rb_unregister_memory": (_status, [_dev, ctypes.c_uint32]),
    "rb_set_eviction": (_status, [_dev, ctypes.c_uint32, ctypes.c_uint32]),
    "rb_take_evicted": (_status, [_dev, _P(KeyInfo), _size, ctypes.c_void_p, _size, _P(_size)]),
    # Key cursors (struct rb_key_cursor *) are c_void_p, like handles.
    "rb_key_cursor_new": (_status, [ctypes.c_void_p, _size, _P(ctypes.c_void_p)]),
    "rb_key_cursor_free": (_status, [ctypes.c_void_p]),
    "rb_list_keys": (_status, [_dev, ctypes.c_void_p, _P(KeyInfo), _size, ctypes.c_void_p, _size, _P(_size)]),
    "rb_get_metrics": (_status, [_dev, _P(Metrics)]),
    "rb_reset_metrics": (_status, [_dev]),
    "rb_sync": (_status, [_dev]),
    "rb_verify_step": (_status, [_dev, _size, _P(VerifyProgress)]),
    "rb_set_auto_checkpoint": (_status, [_dev, ctypes.c_uint64, ctypes.c_uint64]),
}


def _candidates() -> list[str]:
    env = os.environ.get("RAWBLOCK_LIB")
    if env:
        return [env]
    here = Path(__file__).resolve().parent
    found = [str(here / "librawblock.so")]
    system = ctypes.util.find_library("rawblock")
    if system:
        found.append(system)
    # A development checkout: python/rawblock -> target/release.
    found.append(str(here.parent.parent / "target" / "release" / "librawblock.so"))
    return found


def load() -> ctypes.CDLL:
    """Finds librawblock: $RAWBLOCK_LIB, next to this package, the system path, then a checkout's target/release."""
    errors = []
    for path in _candidates():
        if os.path.sep in path and not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            errors.append(f"{path}: {e}")
            continue
        _declare(lib)
        abi = lib.rb_abi_version()
        if abi != RB_ABI_VERSION:
            # The structs above describe ABI RB_ABI_VERSION; another layout would be read wrongly.
            errors.append(f"{path}: ABI version {abi}, this package speaks {RB_ABI_VERSION}")
            continue
        return lib
    raise OSError("cannot load librawblock (set RAWBLOCK_LIB): " + "; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    for name, (restype, argtypes) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
