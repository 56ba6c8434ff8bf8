"""Loading librawblock and declaring every exported function's signature."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

HEADER_KEY_INLINE = 256


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
        ("key", ctypes.c_uint8 * HEADER_KEY_INLINE),
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
    ]


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
        return lib
    raise OSError("cannot load librawblock (set RAWBLOCK_LIB): " + "; ".join(errors))


def _declare(lib: ctypes.CDLL) -> None:
    P = ctypes.POINTER
    dev = ctypes.c_void_p
    status = ctypes.c_int32
    size = ctypes.c_size_t
    sigs = {
        "rb_version": (ctypes.c_char_p, []),
        "rb_abi_version": (ctypes.c_uint32, []),
        "rb_status_str": (ctypes.c_char_p, [ctypes.c_int32]),
        "rb_last_error_message": (ctypes.c_char_p, []),
        "rb_options_init": (status, [P(Options)]),
        "rb_recover_options_init": (status, [P(RecoverOptions)]),
        "rb_open": (status, [ctypes.c_char_p, P(Options), P(dev)]),
        "rb_close": (status, [dev]),
        "rb_put": (status, [dev, ctypes.c_void_p, size, ctypes.c_void_p, size]),
        "rb_get": (status, [dev, ctypes.c_void_p, size, ctypes.c_void_p, size, P(size)]),
        "rb_delete": (status, [dev, ctypes.c_void_p, size]),
        "rb_contains": (status, [dev, ctypes.c_void_p, size, P(ctypes.c_bool)]),
        "rb_checkpoint": (status, [dev]),
        "rb_recover": (status, [dev, P(RecoverOptions), P(RecoverReport)]),
        "rb_read_headers_batched": (status, [dev, P(ctypes.c_uint64), size, P(SlotHeader)]),
        "rb_get_io_stats": (status, [dev, P(IoStats)]),
        "rb_reset_io_stats": (status, [dev]),
        "rb_get_info": (status, [dev, P(DeviceInfo)]),
        "rb_test_inject_read_faults": (status, [dev, P(ctypes.c_uint64), size, ctypes.c_int32, ctypes.c_uint32]),
        "rb_test_clear_read_faults": (status, [dev]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
