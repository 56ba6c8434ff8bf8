//! The C ABI. Each function checks its arguments, converts, delegates to the
//! store and maps the result; none holds logic of its own.
//!
//! Every function: never unwinds into C (panics become RB_E_PANIC), returns
//! RB_E_INVALID_ARGUMENT for NULL pointers and bad sizes, and leaves a
//! message for rb_last_error_message() on failure.

mod boundary;
pub mod types;

use std::ffi::{c_char, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use boundary::{bytes, c_text, guard, invalid, out_size, read_in, write_out, write_sized, Versioned};
use types::*;

use crate::engine::{BatchStats, EngineChoice, EngineConfig, EngineKind, FaultMode};
use crate::error::{Error, Status};
use crate::format::{GeometryRequest, SlotIndex, SlotState};
use crate::store::{
    FormatOptions, HeaderRead, OpenMode, OpenOptions, RecoverMode, RecoverOptions, RecoverReport, RecoveredFrom, SuperblockSource,
};

mod abi;
mod batch;
mod listing;
mod metrics;
mod restart;
pub use abi::RB_ABI_VERSION;

static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("version string"),
};

/// The library version, e.g. "0.1.0". Static; never NULL.
#[no_mangle]
pub extern "C" fn rb_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The ABI version this library implements (RB_ABI_VERSION when it was built).
#[no_mangle]
pub extern "C" fn rb_abi_version() -> u32 {
    RB_ABI_VERSION
}

/// A static description of a status code; unknown codes give "unknown status".
#[no_mangle]
pub extern "C" fn rb_status_str(status: rb_status) -> *const c_char {
    Status::from_code(status).map_or(c"unknown status", Status::description).as_ptr()
}

/// The message of the last failed call on this thread ("" if none failed yet).
/// Successful calls leave it unchanged; it stays valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn rb_last_error_message() -> *const c_char {
    boundary::message_ptr()
}

/// Fills `opts` with the defaults and sets its struct_size.
///
/// # Safety
/// `opts` is NULL or points to a writable rb_options.
#[no_mangle]
pub unsafe extern "C" fn rb_options_init(opts: *mut rb_options) -> rb_status {
    guard("rb_options_init", || {
        if opts.is_null() {
            return Err(invalid("opts is NULL"));
        }
        let mut o = rb_options::default();
        o.set_struct_size();
        let defaults = EngineConfig::default();
        o.posix_threads = defaults.posix_threads() as u32;
        o.queue_depth = defaults.queue_depth() as u32;
        // SAFETY: non-NULL and the caller provides a whole rb_options.
        unsafe { opts.write(o) };
        Ok(())
    })
}

/// Fills `opts` with the defaults (RB_RECOVER_AUTO, no flags) and sets its struct_size.
///
/// # Safety
/// `opts` is NULL or points to a writable rb_recover_options.
#[no_mangle]
pub unsafe extern "C" fn rb_recover_options_init(opts: *mut rb_recover_options) -> rb_status {
    guard("rb_recover_options_init", || {
        if opts.is_null() {
            return Err(invalid("opts is NULL"));
        }
        let mut o = rb_recover_options::default();
        o.set_struct_size();
        // SAFETY: non-NULL and the caller provides a whole rb_recover_options.
        unsafe { opts.write(o) };
        Ok(())
    })
}

fn open_mode(o: &rb_options) -> Result<OpenMode, Error> {
    let flag = |f: u32| o.flags & f != 0;
    let format = || FormatOptions {
        geometry: GeometryRequest {
            block_size: o.block_size,
            header_bytes: o.header_bytes,
            slot_bytes: o.slot_bytes,
            meta_bytes: o.meta_bytes,
            max_key_bytes: o.max_key_bytes,
            journal_blocks: 0,
        },
        capacity_bytes: o.capacity_bytes,
        overwrite: flag(RB_OPEN_OVERWRITE_OK),
        preallocate: flag(RB_OPEN_PREALLOCATE),
    };
    match (flag(RB_OPEN_CREATE), flag(RB_OPEN_CREATE_IF_EMPTY), flag(RB_OPEN_READ_ONLY)) {
        (true, true, _) => Err(invalid("RB_OPEN_CREATE and RB_OPEN_CREATE_IF_EMPTY exclude each other")),
        (true, _, true) => Err(invalid("RB_OPEN_CREATE and RB_OPEN_READ_ONLY exclude each other")),
        (_, true, true) => Err(invalid("RB_OPEN_CREATE_IF_EMPTY and RB_OPEN_READ_ONLY exclude each other")),
        (_, true, _) if flag(RB_OPEN_OVERWRITE_OK) => Err(invalid(
            "RB_OPEN_CREATE_IF_EMPTY never formats over data; RB_OPEN_OVERWRITE_OK goes with RB_OPEN_CREATE only",
        )),
        (false, true, false) => Ok(OpenMode::OpenOrCreate(format())),
        (false, false, true) => Ok(OpenMode::ReadOnly),
        (false, false, false) => Ok(OpenMode::ReadWrite),
        (true, false, false) => Ok(OpenMode::Create(format())),
    }
}

fn open_options(o: &rb_options) -> Result<OpenOptions, Error> {
    const KNOWN: u32 = RB_OPEN_CREATE
        | RB_OPEN_OVERWRITE_OK
        | RB_OPEN_READ_ONLY
        | RB_OPEN_BUFFERED
        | RB_OPEN_SYNC_WRITES
        | RB_OPEN_PREALLOCATE
        | RB_OPEN_CREATE_IF_EMPTY;
    if o.flags & !KNOWN != 0 {
        return Err(invalid(format!("unknown open flags {:#x}", o.flags & !KNOWN)));
    }
    let choice = match o.engine {
        RB_ENGINE_AUTO => EngineChoice::Auto,
        RB_ENGINE_POSIX => EngineChoice::Posix,
        RB_ENGINE_IO_URING => EngineChoice::IoUring,
        RB_ENGINE_URING_CMD => EngineChoice::UringCmd,
        e => return Err(invalid(format!("unknown engine {e}"))),
    };
    Ok(OpenOptions {
        mode: open_mode(o)?,
        engine: EngineConfig::new(choice, o.posix_threads as usize, o.queue_depth as usize),
        buffered: o.flags & RB_OPEN_BUFFERED != 0,
        sync_writes: o.flags & RB_OPEN_SYNC_WRITES != 0,
    })
}

/// Opens (with RB_OPEN_CREATE: formats) the block device or file at `path`; with
/// RB_OPEN_CREATE_IF_EMPTY, opens it or formats it when it holds no rawblock format.
/// `opts` NULL means the defaults. On success `*out` is a handle for rb_close.
/// An existing device answers RB_E_STATE to reads and writes until rb_recover.
///
/// # Safety
/// `path` is a NUL-terminated string; `opts` is NULL or a valid rb_options; `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_open(path: *const c_char, opts: *const rb_options, out: *mut *mut rb_device) -> rb_status {
    guard("rb_open", || {
        if path.is_null() || out.is_null() {
            return Err(invalid("path and out must not be NULL"));
        }
        // SAFETY: out is non-NULL and writable.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller passes a NUL-terminated string.
        let path = Path::new(OsStr::from_bytes(unsafe { CStr::from_ptr(path) }.to_bytes()));
        // SAFETY: NULL or a valid rb_options.
        let o = unsafe { read_in(opts) }?;
        let store = crate::Store::open(path, &open_options(&o)?)?;
        // SAFETY: out is non-NULL and writable.
        unsafe { out.write(Box::into_raw(Box::new(rb_device { store }))) };
        Ok(())
    })
}

/// Closes a handle (NULL is a no-op). Does not checkpoint: the next RB_RECOVER_AUTO finds
/// the puts made since the last checkpoint through the lease journal, and rb_checkpoint
/// first makes that restart read less.
///
/// # Safety
/// `dev` is NULL or a handle from rb_open not yet closed, with no call in progress on it.
#[no_mangle]
pub unsafe extern "C" fn rb_close(dev: *mut rb_device) -> rb_status {
    guard("rb_close", || {
        if !dev.is_null() {
            // SAFETY: the handle came from Box::into_raw in rb_open and is closed once.
            drop(unsafe { Box::from_raw(dev) });
        }
        Ok(())
    })
}

/// # Safety
/// `dev` is NULL or a live handle.
pub(super) unsafe fn device<'a>(dev: *const rb_device) -> Result<&'a crate::Store, Error> {
    if dev.is_null() {
        return Err(invalid("dev is NULL"));
    }
    // SAFETY: a live handle from rb_open.
    Ok(unsafe { &(*dev).store })
}

/// Stores `len` bytes under the key, replacing any previous value (its old slot
/// is invalidated before this returns). RB_E_NO_SPACE when every slot is in use.
///
/// # Safety
/// `dev` is a live handle; `key` and `data` point to `key_len` and `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_put(dev: *mut rb_device, key: *const c_void, key_len: usize, data: *const c_void, len: usize) -> rb_status {
    guard("rb_put", || {
        // SAFETY: per the contract above.
        let (s, k, d) = unsafe { (device(dev)?, bytes(key, key_len, "key")?, bytes(data, len, "data")?) };
        s.put(k, d)
    })
}

/// Copies the value of the key into `buf` (capacity `cap`) and its length into `*len`.
/// Header and payload are verified first: RB_E_CORRUPT, never wrong bytes.
/// RB_E_BUFFER_TOO_SMALL stores the needed length in `*len` (`buf` may be NULL when `cap` is 0).
///
/// # Safety
/// `dev` is a live handle; `key` has `key_len` readable bytes; `buf` has `cap` writable bytes; `len` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_get(
    dev: *mut rb_device,
    key: *const c_void,
    key_len: usize,
    buf: *mut c_void,
    cap: usize,
    len: *mut usize,
) -> rb_status {
    guard("rb_get", || {
        if len.is_null() {
            return Err(invalid("len is NULL"));
        }
        if buf.is_null() && cap > 0 {
            return Err(invalid("buf is NULL but cap is not 0"));
        }
        if cap > isize::MAX as usize {
            return Err(invalid(format!("cap {cap} is absurd (above PTRDIFF_MAX)")));
        }
        // SAFETY: per the contract above.
        let (s, k) = unsafe { (device(dev)?, bytes(key, key_len, "key")?) };
        let out: &mut [u8] = if cap == 0 {
            &mut []
        } else {
            // SAFETY: buf has cap writable bytes.
            unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), cap) }
        };
        let r = s.get(k, out);
        let n = match &r {
            Ok(n) => *n as u64,
            Err(Error::BufferTooSmall { needed }) => *needed,
            Err(_) => 0,
        };
        // SAFETY: len is non-NULL and writable.
        unsafe { len.write(n as usize) };
        r.map(|_| ())
    })
}

/// Removes the key; its slot header is invalidated before this returns. RB_E_NOT_FOUND if absent.
///
/// # Safety
/// `dev` is a live handle; `key` has `key_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_delete(dev: *mut rb_device, key: *const c_void, key_len: usize) -> rb_status {
    guard("rb_delete", || {
        // SAFETY: per the contract above.
        let (s, k) = unsafe { (device(dev)?, bytes(key, key_len, "key")?) };
        s.delete(k)
    })
}

/// Sets `*found` to whether the key is indexed (no device read).
///
/// # Safety
/// `dev` is a live handle; `key` has `key_len` readable bytes; `found` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_contains(dev: *mut rb_device, key: *const c_void, key_len: usize, found: *mut bool) -> rb_status {
    guard("rb_contains", || {
        if found.is_null() {
            return Err(invalid("found is NULL"));
        }
        // SAFETY: per the contract above.
        let (s, k) = unsafe { (device(dev)?, bytes(key, key_len, "key")?) };
        let f = s.contains(k)?;
        // SAFETY: found is non-NULL and writable.
        unsafe { found.write(f) };
        Ok(())
    })
}

/// Makes the index durable: writes it to the checkpoint container not holding the last full
/// checkpoint (payload, fdatasync, commit record, fdatasync). After the handle's first full
/// checkpoint, one following a small change is a delta: only what changed since. RB_E_NO_SPACE
/// if it does not fit; the older checkpoint stays intact.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_checkpoint(dev: *mut rb_device) -> rb_status {
    guard("rb_checkpoint", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.checkpoint().map(|_| ())
    })
}

fn engine_code(k: EngineKind) -> u32 {
    match k {
        EngineKind::Posix => RB_ENGINE_POSIX,
        EngineKind::IoUring => RB_ENGINE_IO_URING,
        EngineKind::UringCmd => RB_ENGINE_URING_CMD,
    }
}

fn io_stats(b: &BatchStats) -> rb_io_stats {
    rb_io_stats {
        struct_size: std::mem::size_of::<rb_io_stats>(),
        reads_submitted: b.reads_submitted,
        submit_calls: b.submit_calls,
        max_in_flight: b.max_in_flight,
        fallbacks: b.fallbacks,
        retries: b.retries,
        failed: b.failed,
        registered_buffers: b.registered_buffers as u32,
        registered_file: b.registered_file as u32,
    }
}

fn report(r: &RecoverReport, queue_depth: usize) -> rb_recover_report {
    rb_recover_report {
        struct_size: std::mem::size_of::<rb_recover_report>(),
        source: match r.from {
            RecoveredFrom::Nothing => RB_RECOVERED_NOTHING,
            RecoveredFrom::Checkpoint => RB_RECOVERED_CHECKPOINT,
            RecoveredFrom::Scan => RB_RECOVERED_SCAN,
            RecoveredFrom::Journal => RB_RECOVERED_JOURNAL,
        },
        engine: engine_code(r.engine),
        checkpoint_sequence: r.checkpoint_sequence,
        checkpoint_entries: r.checkpoint_entries,
        indexed: r.indexed,
        dropped_stale: r.dropped_stale,
        dropped_unreadable: r.dropped_unreadable,
        kept_unverified: r.kept_unverified,
        empty_slots: r.empty_slots,
        header_reads: r.header_reads,
        elapsed_ns: r.elapsed_ns,
        checkpoint_load_ns: r.checkpoint_load_ns,
        validate_ns: r.validate_ns,
        first_errno: r.first_errno,
        queue_depth: queue_depth as u32,
        io: io_stats(&r.io),
        orphans: r.orphans,
        trusted_unread: r.trusted_unread,
        leased_slots: r.leased_slots,
        recovered_since_checkpoint: r.recovered_since_checkpoint,
    }
}

/// Rebuilds the index of an opened device: from the newest checkpoint that verifies, each
/// entry checked against its slot header (stale ones dropped, unreadable ones counted apart),
/// or from a scan of every slot header. Writes nothing. On a writable handle it runs once,
/// before any write. On a handle that formatted the device at open and has not written
/// since, it reads nothing and returns RB_OK with an empty report (RB_RECOVERED_NOTHING),
/// so first start and restart run the same calls. `opts` NULL means RB_RECOVER_AUTO;
/// `out` may be NULL.
///
/// # Safety
/// `dev` is a live handle; `opts` is NULL or valid; `out` is NULL or has `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_recover(dev: *mut rb_device, opts: *const rb_recover_options, out: *mut rb_recover_report) -> rb_status {
    guard("rb_recover", || {
        // SAFETY: per the contract above.
        let (s, o) = unsafe { (device(dev)?, read_in(opts)?) };
        if !out.is_null() {
            // SAFETY: out is non-NULL; checked before any work is done.
            unsafe { out_size(out) }?;
        }
        let mode = match o.mode {
            RB_RECOVER_AUTO => RecoverMode::Auto,
            RB_RECOVER_CHECKPOINT => RecoverMode::Checkpoint,
            RB_RECOVER_SCAN => RecoverMode::Scan,
            m => return Err(invalid(format!("unknown recover mode {m}"))),
        };
        if o.flags & !(RB_RECOVER_KEEP_UNREADABLE | RB_RECOVER_SCRUB_FREE) != 0 {
            return Err(invalid(format!("unknown recover flags {:#x}", o.flags)));
        }
        let r = s.recover(&RecoverOptions {
            mode,
            keep_unreadable: o.flags & RB_RECOVER_KEEP_UNREADABLE != 0,
            scrub_free: o.flags & RB_RECOVER_SCRUB_FREE != 0,
        })?;
        if !out.is_null() {
            // SAFETY: checked above.
            unsafe { write_out(out, report(&r, s.queue_depth())) }?;
        }
        Ok(())
    })
}

fn slot_header(slot: SlotIndex, h: HeaderRead<'_>) -> rb_slot_header {
    let mut out = rb_slot_header { slot: slot.0, ..Default::default() };
    match h {
        HeaderRead::IoError(errno) => {
            out.status = RB_HEADER_IO_ERROR;
            out.os_errno = errno;
        }
        HeaderRead::State(SlotState::Empty) => out.status = RB_HEADER_EMPTY,
        HeaderRead::State(SlotState::Corrupt) => out.status = RB_HEADER_CORRUPT,
        HeaderRead::State(SlotState::Foreign) => out.status = RB_HEADER_FOREIGN,
        HeaderRead::State(SlotState::Valid(h)) => {
            out.status = RB_HEADER_VALID;
            out.generation = h.generation.0;
            out.payload_len = h.payload_len;
            out.payload_crc = h.payload_crc;
            out.key_len = h.key.len() as u32;
            let n = h.key.len().min(RB_HEADER_KEY_INLINE);
            out.key[..n].copy_from_slice(&h.key[..n]);
        }
    }
    out
}

/// Reads and decodes the headers of `slots[0..n]` into `out[0..n]`, in input order, each with
/// its own status (RB_HEADER_*). Returns RB_OK when it ran even if some slots failed; fails
/// only for bad arguments (NULL, a slot out of range, out[0].struct_size unset). Reads go
/// through the handle's engine, at most queue_depth in flight, with per-slot fallback.
///
/// # Safety
/// `dev` is a live handle; `slots` has `n` readable entries; `out` has `n` writable elements
/// of out[0].struct_size bytes each.
#[no_mangle]
pub unsafe extern "C" fn rb_read_headers_batched(dev: *mut rb_device, slots: *const u64, n: usize, out: *mut rb_slot_header) -> rb_status {
    guard("rb_read_headers_batched", || {
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        if n == 0 {
            return Ok(());
        }
        if slots.is_null() || out.is_null() {
            return Err(invalid("slots and out must not be NULL"));
        }
        // SAFETY: out is non-NULL and out[0] begins with the caller's struct_size.
        let stride = unsafe { out_size(out) }?;
        if n.checked_mul(stride).is_none_or(|b| b > isize::MAX as usize) {
            return Err(invalid(format!("{n} headers of {stride} bytes overflow memory")));
        }
        // SAFETY: slots has n readable entries.
        let slots: Vec<SlotIndex> = unsafe { std::slice::from_raw_parts(slots, n) }.iter().map(|&s| SlotIndex(s)).collect();
        let slots = &slots[..];
        if stride == std::mem::size_of::<rb_slot_header>() {
            // SAFETY: out has n writable elements of exactly this type.
            let out = unsafe { std::slice::from_raw_parts_mut(out, n) };
            s.read_headers(slots, out, &slot_header)?;
        } else {
            // A caller built against another size of rb_slot_header: write each prefix at its stride.
            let mut tmp = vec![rb_slot_header::default(); n];
            s.read_headers(slots, &mut tmp, &slot_header)?;
            for (i, h) in tmp.into_iter().enumerate() {
                // SAFETY: element i lies within the n * stride writable bytes; stride >= MIN_SIZE.
                unsafe { write_sized(out.cast::<u8>().add(i * stride).cast::<rb_slot_header>(), h, stride) };
            }
        }
        Ok(())
    })
}

/// Counters of every batched read on this handle since open or rb_reset_io_stats.
///
/// # Safety
/// `dev` is a live handle; `out` has `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_get_io_stats(dev: *mut rb_device, out: *mut rb_io_stats) -> rb_status {
    guard("rb_get_io_stats", || {
        // SAFETY: per the contract above.
        unsafe { write_out(out, io_stats(&device(dev)?.io_stats())) }
    })
}

/// Zeroes the handle's read counters.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_reset_io_stats(dev: *mut rb_device) -> rb_status {
    guard("rb_reset_io_stats", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.reset_io_stats();
        Ok(())
    })
}

/// The device's geometry and this handle's engine settings.
///
/// # Safety
/// `dev` is a live handle; `out` has `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_get_info(dev: *mut rb_device, out: *mut rb_device_info) -> rb_status {
    guard("rb_get_info", || {
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        let g = s.geometry();
        let info = rb_device_info {
            struct_size: std::mem::size_of::<rb_device_info>(),
            device_id: s.device_id(),
            block_size: g.block_size(),
            header_bytes: g.header_bytes(),
            slot_bytes: g.slot_bytes(),
            slot_count: g.slot_count(),
            meta_bytes: g.meta_bytes(),
            data_base: g.data_base(),
            max_key_bytes: g.max_key_bytes(),
            engine: engine_code(s.engine_kind()),
            max_payload: g.max_payload(),
            queue_depth: s.queue_depth() as u32,
            read_only: s.is_read_only() as u32,
            direct_io: s.is_direct() as u32,
            reserved: 0,
            indexed: s.len() as u64,
            engine_note: c_text(s.engine_note().unwrap_or("")),
            superblock_source: match s.superblock_source() {
                SuperblockSource::Primary => RB_SUPERBLOCK_PRIMARY,
                SuperblockSource::Copy => RB_SUPERBLOCK_COPY,
            },
            formatted: s.formatted() as u32,
        };
        // SAFETY: out has struct_size writable bytes.
        unsafe { write_out(out, info) }
    })
}

/// Testing aid: makes reads of `slots` fail with `os_errno` inside the engine's real
/// completion path. RB_FAULT_PERSISTENT: every read fails, batched and fallback;
/// RB_FAULT_TRANSIENT: the next batched read fails, its per-slot retry succeeds;
/// RB_FAULT_SUBMIT: the next submit fails as a whole (`slots` may be NULL).
///
/// # Safety
/// `dev` is a live handle; `slots` has `n` readable entries.
#[no_mangle]
pub unsafe extern "C" fn rb_test_inject_read_faults(dev: *mut rb_device, slots: *const u64, n: usize, os_errno: i32, mode: u32) -> rb_status {
    guard("rb_test_inject_read_faults", || {
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        let mode = match mode {
            RB_FAULT_PERSISTENT => FaultMode::Persistent,
            RB_FAULT_TRANSIENT => FaultMode::Transient,
            RB_FAULT_SUBMIT => FaultMode::Submit,
            m => return Err(invalid(format!("unknown fault mode {m}"))),
        };
        if os_errno <= 0 {
            return Err(invalid(format!("os_errno must be a positive errno, not {os_errno}")));
        }
        let slots = if n == 0 {
            &[][..]
        } else if slots.is_null() {
            return Err(invalid("slots is NULL but n is not 0"));
        } else {
            // SAFETY: slots has n readable entries.
            unsafe { std::slice::from_raw_parts(slots, n) }
        };
        let slots: Vec<SlotIndex> = slots.iter().map(|&s| SlotIndex(s)).collect();
        s.inject_read_faults(&slots, os_errno, mode);
        Ok(())
    })
}

/// Testing aid: removes every injected fault.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_test_clear_read_faults(dev: *mut rb_device) -> rb_status {
    guard("rb_test_clear_read_faults", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.clear_read_faults();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::ffi::CString {
        let p = crate::store::tmp_path(name);
        std::ffi::CString::new(p.into_os_string().into_encoded_bytes()).unwrap()
    }

    /// Formats an 8 MiB file through rb_open with `engine`; the caller closes the handle.
    fn create(path: &CStr, engine: u32) -> *mut rb_device {
        let mut o = rb_options::default();
        let mut dev = std::ptr::null_mut();
        // SAFETY: valid options, path and out pointer.
        unsafe {
            rb_options_init(&mut o);
            o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
            o.capacity_bytes = 8 << 20;
            o.engine = engine;
            assert_eq!(rb_open(path.as_ptr(), &o, &mut dev), RB_OK);
        }
        dev
    }

    fn message() -> String {
        // SAFETY: rb_last_error_message never returns NULL and the string lives until the next failure.
        unsafe { CStr::from_ptr(rb_last_error_message()) }.to_string_lossy().into_owned()
    }

    /// The core's errors name no C identifier; the boundary adds the hint in C terms.
    #[test]
    fn messages_carry_c_hints_added_at_the_boundary() {
        let path = scratch("ffi-hints");
        let mut o = rb_options::default();
        // SAFETY: o is a valid, writable rb_options.
        assert_eq!(unsafe { rb_options_init(&mut o) }, RB_OK);
        o.flags = RB_OPEN_CREATE;
        o.capacity_bytes = 8 << 20;
        o.slot_bytes = 64 << 10;
        let mut dev = std::ptr::null_mut();
        // SAFETY: valid path, options and out pointer; every handle is closed below.
        unsafe {
            assert_eq!(rb_open(path.as_ptr(), &o, &mut dev), RB_OK);
            assert_eq!(rb_close(dev), RB_OK);
            assert_eq!(rb_open(path.as_ptr(), &o, &mut dev), RB_E_EXISTS);
            assert!(message().contains("RB_OPEN_OVERWRITE_OK"), "{}", message());
            assert_eq!(rb_open(path.as_ptr(), std::ptr::null(), &mut dev), RB_OK);
            assert_eq!(rb_put(dev, c"k".as_ptr().cast(), 1, c"v".as_ptr().cast(), 1), RB_E_STATE);
            assert!(message().contains("call rb_recover first"), "{}", message());
            assert_eq!(rb_close(dev), RB_OK);
        }
        let core = crate::Error::NeedsRecovery.to_string();
        assert!(!core.contains("rb_"), "the core message names a C function: {core}");
    }

    /// A caller built before fast recovery passes the shorter report and gets its part.
    #[test]
    fn recover_report_accepts_the_size_before_fast_recovery() {
        let path = scratch("ffi-report");
        let mut dev = create(&path, RB_ENGINE_AUTO);
        // SAFETY: valid pointers throughout; the handle is closed at the end.
        unsafe {
            assert_eq!(rb_put(dev, c"k".as_ptr().cast(), 1, c"v".as_ptr().cast(), 1), RB_OK);
            assert_eq!(rb_checkpoint(dev), RB_OK);
            assert_eq!(rb_close(dev), RB_OK);
            let mut o = rb_options::default();
            rb_options_init(&mut o);
            o.flags = RB_OPEN_READ_ONLY;
            assert_eq!(rb_open(path.as_ptr(), &o, &mut dev), RB_OK);
            let old = std::mem::offset_of!(rb_recover_report, trusted_unread);
            let mut r = rb_recover_report { struct_size: old, trusted_unread: 77, leased_slots: 77, ..Default::default() };
            assert_eq!(rb_recover(dev, std::ptr::null(), &mut r), RB_OK);
            assert_eq!((r.struct_size, r.source, r.indexed), (old, RB_RECOVERED_JOURNAL, 1));
            assert_eq!((r.trusted_unread, r.leased_slots), (77, 77), "wrote past the caller's struct_size");
            let mut full = rb_recover_report { struct_size: std::mem::size_of::<rb_recover_report>(), ..Default::default() };
            assert_eq!(rb_recover(dev, std::ptr::null(), &mut full), RB_OK);
            assert_eq!(full.trusted_unread, 1);
            r.struct_size = old - 1;
            assert_eq!(rb_recover(dev, std::ptr::null(), &mut r), RB_E_INVALID_ARGUMENT);
            assert_eq!(rb_close(dev), RB_OK);
        }
    }

    /// A caller built before engine_note existed passes the shorter struct and gets the rest.
    #[test]
    fn device_info_accepts_the_size_before_engine_note() {
        let path = scratch("ffi-info");
        let dev = create(&path, RB_ENGINE_POSIX);
        // SAFETY: valid pointers throughout; the handle is closed at the end.
        unsafe {
            let old = std::mem::offset_of!(rb_device_info, engine_note);
            let mut info = rb_device_info { struct_size: old, engine_note: [0x7f; RB_ENGINE_NOTE_BYTES], ..Default::default() };
            assert_eq!(rb_get_info(dev, &mut info), RB_OK);
            assert_eq!((info.struct_size, info.engine), (old, RB_ENGINE_POSIX));
            assert!(info.engine_note.iter().all(|&c| c == 0x7f), "wrote past the caller's struct_size");
            info.struct_size = old - 1;
            assert_eq!(rb_get_info(dev, &mut info), RB_E_INVALID_ARGUMENT);
            let mut full = rb_device_info::default();
            assert_eq!(rb_get_info(dev, &mut full), RB_OK);
            assert_eq!(full.engine_note[0], 0, "an engine named explicitly leaves no note");
            assert_eq!(rb_close(dev), RB_OK);
        }
    }
}

#[cfg(test)]
mod hardening_tests {
    use super::*;

    /// SIZE_MAX in an input struct_size once made rb_open read far past the struct.
    #[test]
    fn absurd_struct_sizes_are_refused_not_followed() {
        let mut o = rb_options::default();
        // SAFETY: valid pointers; the open fails before anything is opened.
        unsafe {
            rb_options_init(&mut o);
            o.struct_size = usize::MAX;
            let mut dev = std::ptr::null_mut();
            assert_eq!(rb_open(c"/nonexistent".as_ptr(), &o, &mut dev), RB_E_INVALID_ARGUMENT);
            assert!(dev.is_null());
            o.struct_size = boundary::MAX_STRUCT_SIZE + 1;
            assert_eq!(rb_open(c"/nonexistent".as_ptr(), &o, &mut dev), RB_E_INVALID_ARGUMENT);
            let msg = CStr::from_ptr(rb_last_error_message()).to_string_lossy().into_owned();
            assert!(msg.contains("larger than any version"), "{msg}");
            let mut r = rb_recover_options { struct_size: usize::MAX, ..Default::default() };
            assert_eq!(rb_recover_options_init(&mut r), RB_OK, "init overwrites struct_size");
            assert_eq!(r.struct_size, std::mem::size_of::<rb_recover_options>());
        }
    }

    #[test]
    fn get_refuses_a_capacity_above_ptrdiff_max() {
        let path = std::ffi::CString::new(crate::store::tmp_path("ffi-cap").into_os_string().into_encoded_bytes()).unwrap();
        let mut o = rb_options::default();
        let (mut dev, mut len, mut byte) = (std::ptr::null_mut(), 0usize, 0u8);
        // SAFETY: valid pointers; `byte` is one writable byte and the value put is one byte long,
        // so even the old code, which accepted the capacity, wrote only inside it.
        unsafe {
            rb_options_init(&mut o);
            o.flags = RB_OPEN_CREATE | RB_OPEN_OVERWRITE_OK;
            o.capacity_bytes = 8 << 20;
            assert_eq!(rb_open(path.as_ptr(), &o, &mut dev), RB_OK);
            assert_eq!(rb_put(dev, c"k".as_ptr().cast(), 1, c"v".as_ptr().cast(), 1), RB_OK);
            let s = rb_get(dev, c"k".as_ptr().cast(), 1, (&mut byte as *mut u8).cast(), usize::MAX, &mut len);
            assert_eq!(s, RB_E_INVALID_ARGUMENT);
            assert_eq!(rb_get(dev, c"k".as_ptr().cast(), 1, (&mut byte as *mut u8).cast(), 1, &mut len), RB_OK);
            assert_eq!((len, byte), (1, b'v'));
            assert_eq!(rb_close(dev), RB_OK);
        }
    }
}
