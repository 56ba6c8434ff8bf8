//! The C types: status codes, flags and the structs that cross the boundary.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

use super::boundary::Versioned;

/// Status returned by every function: RB_OK (0) or a positive RB_E_* code.
/// rb_last_error_message() says more about the last failure on this thread.
pub type rb_status = i32;

pub const RB_OK: rb_status = 0;
/// A NULL pointer, a bad size or struct_size, an unknown flag or engine, a slot out of range.
pub const RB_E_INVALID_ARGUMENT: rb_status = 1;
/// The operating system reported an I/O error.
pub const RB_E_IO: rb_status = 2;
/// The device holds no usable rawblock format (missing, corrupt or incompatible superblock, truncated device).
pub const RB_E_FORMAT: rb_status = 3;
/// No free slot, a checkpoint that does not fit its container (the older checkpoint stays intact),
/// or the filesystem holding the device file is full (ENOSPC) or over quota (EDQUOT).
pub const RB_E_NO_SPACE: rb_status = 4;
/// A key longer than the device's max_key_bytes, or a value larger than a slot's payload.
pub const RB_E_TOO_LARGE: rb_status = 5;
pub const RB_E_NOT_FOUND: rb_status = 6;
/// Stored bytes failed verification (header or payload CRC, or a header naming another value).
pub const RB_E_CORRUPT: rb_status = 7;
/// The output buffer is too small; the needed length was stored in *len.
pub const RB_E_BUFFER_TOO_SMALL: rb_status = 8;
/// An engine or feature this build or kernel does not offer.
pub const RB_E_UNSUPPORTED: rb_status = 9;
/// A write on a handle opened with RB_OPEN_READ_ONLY.
pub const RB_E_READ_ONLY: rb_status = 10;
/// Another handle or process has the device open for writing, the block device is mounted or
/// claimed exclusively, or the file backs an attached loop device.
pub const RB_E_BUSY: rb_status = 11;
/// The call does not fit the handle's state (e.g. a write before rb_recover on an existing device).
pub const RB_E_STATE: rb_status = 12;
/// RB_OPEN_CREATE found data on the device and RB_OPEN_OVERWRITE_OK was not given.
pub const RB_E_EXISTS: rb_status = 13;
/// An internal panic was caught at the boundary; the handle should be closed.
pub const RB_E_PANIC: rb_status = 14;
/// The host could not provide memory or a thread the call needs (e.g. RLIMIT_NPROC);
/// nothing was changed and no thread was left running. Ask for less (posix_threads,
/// queue_depth) or free resources and retry.
pub const RB_E_NO_MEMORY: rb_status = 15;

/// io_uring where the kernel allows it, otherwise POSIX.
pub const RB_ENGINE_AUTO: u32 = 0;
/// pread: serial when posix_threads is 1, else a pool of posix_threads threads.
pub const RB_ENGINE_POSIX: u32 = 1;
/// io_uring with registered buffers and file, at most queue_depth reads in flight.
pub const RB_ENGINE_IO_URING: u32 = 2;
/// NVMe passthrough: every I/O an NVMe command sent with io_uring_cmd to the namespace's
/// /dev/ngXnY (the path may name it or /dev/nvmeXnY). Never picked by AUTO; on a device
/// that is not an NVMe namespace, RB_E_UNSUPPORTED saying why.
pub const RB_ENGINE_URING_CMD: u32 = 3;

/// Format the device with the options' geometry.
pub const RB_OPEN_CREATE: u32 = 1;
/// With RB_OPEN_CREATE: format even over a rawblock superblock or other data.
pub const RB_OPEN_OVERWRITE_OK: u32 = 2;
pub const RB_OPEN_READ_ONLY: u32 = 4;
/// Turn O_DIRECT off (e.g. on tmpfs). Benchmarks then measure the page cache.
pub const RB_OPEN_BUFFERED: u32 = 8;
/// O_DSYNC: each rb_put's and rb_delete's writes are on stable media when the call returns,
/// so every acknowledged put survives a power cut (RB_RECOVER_AUTO and RB_RECOVER_SCAN find
/// it; docs/RECOVERY.md). Without it, rb_sync makes the puts before it survive one.
pub const RB_OPEN_SYNC_WRITES: u32 = 16;
/// With RB_OPEN_CREATE (or RB_OPEN_CREATE_IF_EMPTY, when it formats) on a regular file: allocate
/// the whole file (fallocate), not only the metadata region, so no later write can fail with
/// RB_E_NO_SPACE for lack of room on its filesystem.
pub const RB_OPEN_PREALLOCATE: u32 = 32;
/// Open a rawblock device, or format one that holds none (a new or empty file, or zeros with
/// no superblock copy) with the options' geometry; never formats over data (RB_E_EXISTS) or a
/// damaged format (RB_E_FORMAT). rb_device_info.formatted says which happened. Excludes
/// RB_OPEN_CREATE, RB_OPEN_READ_ONLY and RB_OPEN_OVERWRITE_OK.
pub const RB_OPEN_CREATE_IF_EMPTY: u32 = 64;

/// Fast recovery on a device with a lease journal: the newest checkpoint's entries indexed
/// without a read (each verified on its first get, or found gone: RB_E_NOT_FOUND), plus the
/// headers of the slots leased since it, so every put acknowledged since is indexed. Without
/// a journal, with recover flags, or when the newest checkpoint does not verify: as
/// RB_RECOVER_CHECKPOINT when one verifies, otherwise a scan of every slot header.
pub const RB_RECOVER_AUTO: u32 = 0;
/// Full validation: the newest checkpoint that verifies, every entry checked against its
/// slot header; puts since the checkpoint are not indexed. None verifying leaves the index
/// empty.
pub const RB_RECOVER_CHECKPOINT: u32 = 1;
/// Every slot header, ignoring checkpoints; a key found more than once keeps its highest
/// generation whose value verifies.
pub const RB_RECOVER_SCAN: u32 = 2;
/// Keep entries whose header read failed, unverified; rb_get verifies them when read.
pub const RB_RECOVER_KEEP_UNREADABLE: u32 = 1;
/// Checkpoint recovery: also read every free slot's header. Valid headers there (orphans: puts a
/// crash cut off from the checkpoint) are invalidated before the first write, so a later full
/// scan cannot bring a deleted key back. Costs one header read per free slot.
pub const RB_RECOVER_SCRUB_FREE: u32 = 2;

pub const RB_RECOVERED_NOTHING: u32 = 0;
pub const RB_RECOVERED_CHECKPOINT: u32 = 1;
pub const RB_RECOVERED_SCAN: u32 = 2;
/// Fast recovery: the checkpoint (or none yet) and the slots leased since it.
pub const RB_RECOVERED_JOURNAL: u32 = 3;

/// A well-formed header written by this device for this slot.
pub const RB_HEADER_VALID: i32 = 0;
/// No rawblock header: never written, deleted, or foreign bytes.
pub const RB_HEADER_EMPTY: i32 = 1;
/// A rawblock header failing its CRC (e.g. torn).
pub const RB_HEADER_CORRUPT: i32 = 2;
/// A well-formed header of another device (earlier format) or another slot (misdirected write).
pub const RB_HEADER_FOREIGN: i32 = 3;
/// The read failed; os_errno says why.
pub const RB_HEADER_IO_ERROR: i32 = 4;

/// Every read of the slots fails, batched and per-slot fallback alike.
pub const RB_FAULT_PERSISTENT: u32 = 1;
/// The next batched read of each slot fails; its per-slot retry succeeds.
pub const RB_FAULT_TRANSIENT: u32 = 2;
/// The next submit fails as a whole (slots are ignored); its reads fall back per slot.
pub const RB_FAULT_SUBMIT: u32 = 3;

/// Bytes of a key rb_slot_header carries inline; longer keys are truncated there.
pub const RB_HEADER_KEY_INLINE: usize = 256;

/// An open device. Safe to use from several threads at once; close it once, after every other call returned.
pub struct rb_device {
    pub(super) store: crate::Store,
}

/// Options for rb_open. Fill with rb_options_init(); 0 in any number means its default.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_options {
    /// sizeof(rb_options), set by rb_options_init.
    pub struct_size: usize,
    /// RB_ENGINE_*.
    pub engine: u32,
    /// RB_OPEN_* bits.
    pub flags: u32,
    /// Threads of the POSIX engine (default 1, at most 256).
    pub posix_threads: u32,
    /// Most reads in flight for io_uring (default 128, clamped to 4096, and lowered so that
    /// queue_depth x header_bytes stays within 256 MiB).
    pub queue_depth: u32,
    /// Formatting only: alignment of everything on the device (default: max(4096, logical block)).
    pub block_size: u32,
    /// Formatting only: bytes of a slot header (default 4096, at most 1 MiB).
    pub header_bytes: u32,
    /// Formatting only: bytes of a slot, header included (default 1 MiB).
    pub slot_bytes: u64,
    /// Formatting only: bytes of the device to use (default: all of it; required for an empty file).
    pub capacity_bytes: u64,
    /// Formatting only: metadata region size (default: room for a checkpoint of every slot,
    /// up to two 4 GiB containers).
    pub meta_bytes: u64,
    /// Formatting only: longest key (default 1024).
    pub max_key_bytes: u32,
    pub reserved: u32,
}

/// rb_set_eviction: never evict; a put on a full device answers RB_E_NO_SPACE (the default).
pub const RB_EVICT_NONE: u32 = 0;
/// rb_set_eviction: evict the entries read or written longest ago (after a restart, the
/// oldest puts first).
pub const RB_EVICT_LRU: u32 = 1;
/// rb_set_eviction: evict the entries put longest ago.
pub const RB_EVICT_FIFO: u32 = 2;

/// Options for rb_recover. NULL means RB_RECOVER_AUTO with no flags.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_recover_options {
    pub struct_size: usize,
    /// RB_RECOVER_AUTO, RB_RECOVER_CHECKPOINT or RB_RECOVER_SCAN.
    pub mode: u32,
    /// RB_RECOVER_KEEP_UNREADABLE.
    pub flags: u32,
}

/// Counters of batched header reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_io_stats {
    pub struct_size: usize,
    /// Reads issued on the batched path (io_uring SQEs, or first preads).
    pub reads_submitted: u64,
    /// io_uring_enter calls (POSIX: contiguous ranges dispatched).
    pub submit_calls: u64,
    /// Highest number of reads in flight at once.
    pub max_in_flight: u64,
    /// Per-slot synchronous reads after a failed batched read or submit.
    pub fallbacks: u64,
    /// EAGAIN/EINTR retries.
    pub retries: u64,
    /// Reads that failed even after their fallback.
    pub failed: u64,
    /// 1 when io_uring read into registered (fixed) buffers.
    pub registered_buffers: u32,
    /// 1 when io_uring used a registered file.
    pub registered_file: u32,
}

/// What rb_recover did.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_recover_report {
    pub struct_size: usize,
    /// RB_RECOVERED_*: what the index was rebuilt from.
    pub source: u32,
    /// RB_ENGINE_* that did the reads.
    pub engine: u32,
    /// Sequence of the checkpoint used, 0 if none.
    pub checkpoint_sequence: u64,
    pub checkpoint_entries: u64,
    pub indexed: u64,
    /// Headers that did not match their entry (magic, device, slot, generation, key, length, CRC) or superseded duplicates.
    pub dropped_stale: u64,
    /// Entries whose header read failed with an I/O error (dropped).
    pub dropped_unreadable: u64,
    /// Unreadable entries kept with RB_RECOVER_KEEP_UNREADABLE.
    pub kept_unverified: u64,
    /// Scan only: slots holding no header.
    pub empty_slots: u64,
    pub header_reads: u64,
    pub elapsed_ns: u64,
    pub checkpoint_load_ns: u64,
    pub validate_ns: u64,
    /// errno of the first unreadable header, 0 if none.
    pub first_errno: i32,
    /// Queue depth (io_uring) or thread count (POSIX) the engine ran with.
    pub queue_depth: u32,
    pub io: rb_io_stats,
    /// With RB_RECOVER_SCRUB_FREE: valid headers found in free slots.
    pub orphans: u64,
    /// Fast recovery: checkpoint entries indexed without a read (each verified on first get).
    pub trusted_unread: u64,
    /// Fast recovery: slots leased since the checkpoint, whose headers were read.
    pub leased_slots: u64,
    /// Fast recovery: entries from puts made after the checkpoint, indexed.
    pub recovered_since_checkpoint: u64,
}

/// Where background verification stands (rb_verify_step).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_verify_progress {
    /// sizeof(rb_verify_progress); set by the caller.
    pub struct_size: usize,
    /// Entries whose header this step read.
    pub checked: u64,
    /// Of those, found whole.
    pub verified: u64,
    /// Of those, gone since the checkpoint (deleted, replaced or evicted): dropped.
    pub dropped: u64,
    /// Of those, whose read failed: still unverified.
    pub unreadable: u64,
    /// Entries still unverified after this step.
    pub remaining: u64,
}

/// One item of a batched call (rb_get_many, rb_put_many, rb_delete_many, rb_contains_many,
/// rb_count_present_prefix). Set struct_size in items[0]: elements lie struct_size bytes apart.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rb_item {
    pub struct_size: usize,
    pub key: *const c_void,
    pub key_len: usize,
    /// rb_put_many: the value to store. rb_get_many: the destination (see the zero-copy
    /// rule in rb_get_many). Unused by the other calls.
    pub value: *mut c_void,
    /// rb_put_many: the value's length. rb_get_many: the destination's capacity.
    pub value_len: usize,
    /// Out, rb_get_many: the value's length (with RB_E_BUFFER_TOO_SMALL, the length needed).
    pub len: usize,
    /// Out: this item's outcome. rb_contains_many: RB_OK when present, RB_E_NOT_FOUND when not.
    pub status: rb_status,
    pub reserved: u32,
}

impl Default for rb_item {
    fn default() -> Self {
        rb_item {
            struct_size: std::mem::size_of::<Self>(),
            key: std::ptr::null(),
            key_len: 0,
            value: std::ptr::null_mut(),
            value_len: 0,
            len: 0,
            status: RB_OK,
            reserved: 0,
        }
    }
}

/// One decoded slot header (rb_read_headers_batched).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rb_slot_header {
    /// sizeof(rb_slot_header); set in out[0] by the caller.
    pub struct_size: usize,
    /// RB_HEADER_*.
    pub status: i32,
    /// With RB_HEADER_IO_ERROR: the errno of the failed read.
    pub os_errno: i32,
    pub slot: u64,
    pub generation: u64,
    pub payload_len: u64,
    pub payload_crc: u32,
    /// Full key length; key[] holds its first RB_HEADER_KEY_INLINE bytes.
    pub key_len: u32,
    pub key: [u8; RB_HEADER_KEY_INLINE],
}

impl Default for rb_slot_header {
    fn default() -> Self {
        rb_slot_header {
            struct_size: std::mem::size_of::<Self>(),
            status: RB_HEADER_EMPTY,
            os_errno: 0,
            slot: 0,
            generation: 0,
            payload_len: 0,
            payload_crc: 0,
            key_len: 0,
            key: [0; RB_HEADER_KEY_INLINE],
        }
    }
}

/// rb_device_info.superblock_source: the superblock at offset 0 was used.
pub const RB_SUPERBLOCK_PRIMARY: u32 = 0;
/// rb_device_info.superblock_source: the superblock at offset 0 was damaged and its copy
/// in the next block was used (a writable handle has rewritten the primary).
pub const RB_SUPERBLOCK_COPY: u32 = 1;

/// Bytes of rb_device_info.engine_note, its NUL included.
pub const RB_ENGINE_NOTE_BYTES: usize = 256;

/// A device's geometry and the handle's settings (rb_get_info).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rb_device_info {
    pub struct_size: usize,
    pub device_id: [u8; 16],
    pub block_size: u32,
    pub header_bytes: u32,
    pub slot_bytes: u64,
    pub slot_count: u64,
    pub meta_bytes: u64,
    pub data_base: u64,
    pub max_key_bytes: u32,
    /// RB_ENGINE_* in use.
    pub engine: u32,
    pub max_payload: u64,
    /// Queue depth (io_uring) or threads (POSIX) after clamping.
    pub queue_depth: u32,
    /// 1 for a read-only handle.
    pub read_only: u32,
    /// 1 when O_DIRECT is on.
    pub direct_io: u32,
    pub reserved: u32,
    /// Keys indexed now.
    pub indexed: u64,
    /// Why RB_ENGINE_AUTO did not pick io_uring (NUL-terminated; "" when it did, or
    /// when an engine was named). Added after ABI 1's first struct: a caller whose
    /// struct_size ends before it does not get it.
    pub engine_note: [c_char; RB_ENGINE_NOTE_BYTES],
    /// RB_SUPERBLOCK_PRIMARY or RB_SUPERBLOCK_COPY. Added after engine_note.
    pub superblock_source: u32,
    /// 1 when this handle formatted the device at open (RB_OPEN_CREATE, or
    /// RB_OPEN_CREATE_IF_EMPTY finding no rawblock format). Added after superblock_source.
    pub formatted: u32,
}

impl Default for rb_device_info {
    fn default() -> Self {
        rb_device_info {
            struct_size: std::mem::size_of::<Self>(),
            device_id: [0; 16],
            block_size: 0,
            header_bytes: 0,
            slot_bytes: 0,
            slot_count: 0,
            meta_bytes: 0,
            data_base: 0,
            max_key_bytes: 0,
            engine: 0,
            max_payload: 0,
            queue_depth: 0,
            read_only: 0,
            direct_io: 0,
            reserved: 0,
            indexed: 0,
            engine_note: [0; RB_ENGINE_NOTE_BYTES],
            superblock_source: RB_SUPERBLOCK_PRIMARY,
            formatted: 0,
        }
    }
}

/// An iteration over the indexed keys (rb_list_keys), from rb_key_cursor_new until
/// rb_key_cursor_free. Not tied to a handle; use it with one thread at a time.
pub struct rb_key_cursor {
    pub(super) cursor: crate::store::KeyCursor,
}

/// One indexed key (rb_list_keys). Set struct_size in out[0]: elements lie struct_size bytes apart.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rb_key_info {
    pub struct_size: usize,
    /// Out: the key is keys_buf[key_offset .. key_offset + key_len).
    pub key_offset: usize,
    /// Out: the key's length. With RB_E_BUFFER_TOO_SMALL (out[0] only): the keys_cap needed.
    pub key_len: usize,
    /// Out: the value's length.
    pub value_len: u64,
    /// Out: the value's generation (increasing with every put on the device).
    pub generation: u64,
}

impl Default for rb_key_info {
    fn default() -> Self {
        rb_key_info { struct_size: std::mem::size_of::<Self>(), key_offset: 0, key_len: 0, value_len: 0, generation: 0 }
    }
}

/// Latency percentiles of one kind of call, in nanoseconds (all 0 before the first call).
/// A percentile is the upper end of the histogram bucket holding that rank: at most 1/64
/// (1.6%) above the true value, never above max_ns. Part of rb_metrics; never extended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct rb_latency {
    /// Calls timed.
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// A handle's data-path counters since open or rb_reset_metrics (rb_get_metrics).
/// Calls refused before reaching the index (bad arguments, RB_E_STATE) count nowhere.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rb_metrics {
    pub struct_size: usize,
    /// rb_get calls and rb_get_many items that reached the index: hits + misses + failed reads
    /// (RB_E_CORRUPT, RB_E_IO, RB_E_BUFFER_TOO_SMALL, RB_E_BUSY).
    pub gets: u64,
    /// Gets that returned a value.
    pub hits: u64,
    /// Gets of keys not indexed (RB_E_NOT_FOUND).
    pub misses: u64,
    /// Values stored (rb_put calls and rb_put_many items answering RB_OK).
    pub puts: u64,
    /// Keys removed (rb_delete calls and rb_delete_many items answering RB_OK).
    pub deletes: u64,
    /// Entries evicted to make room for puts (rb_set_eviction; 0 without an eviction policy).
    pub evictions: u64,
    /// Value bytes returned by hits.
    pub bytes_read: u64,
    /// Value bytes stored by puts.
    pub bytes_written: u64,
    /// Gets that answered RB_E_CORRUPT: stored bytes failed verification.
    pub corrupt: u64,
    /// Data calls and items that answered RB_E_IO.
    pub io_errors: u64,
    /// Single rb_get calls (every call counted in gets).
    pub get_latency: rb_latency,
    /// Single rb_put calls that stored the value or failed with RB_E_IO.
    pub put_latency: rb_latency,
    /// Whole rb_get_many calls (one sample a call, whatever its item count).
    pub get_many_latency: rb_latency,
    /// Whole rb_put_many calls (one sample a call).
    pub put_many_latency: rb_latency,
}

impl Default for rb_metrics {
    fn default() -> Self {
        rb_metrics {
            struct_size: std::mem::size_of::<Self>(),
            gets: 0,
            hits: 0,
            misses: 0,
            puts: 0,
            deletes: 0,
            evictions: 0,
            bytes_read: 0,
            bytes_written: 0,
            corrupt: 0,
            io_errors: 0,
            get_latency: rb_latency::default(),
            put_latency: rb_latency::default(),
            get_many_latency: rb_latency::default(),
            put_many_latency: rb_latency::default(),
        }
    }
}

macro_rules! versioned {
    ($($t:ident),*) => {$(
        impl Versioned for $t {
            const NAME: &'static str = stringify!($t);
            fn set_struct_size(&mut self) {
                self.struct_size = std::mem::size_of::<Self>();
            }
        }
    )*};
}
versioned!(rb_options, rb_recover_options, rb_io_stats, rb_slot_header, rb_item, rb_key_info, rb_metrics, rb_verify_progress);

impl Versioned for rb_recover_report {
    const NAME: &'static str = "rb_recover_report";
    /// Callers built before fast recovery pass the size that ends where trusted_unread begins.
    const MIN_SIZE: usize = std::mem::offset_of!(rb_recover_report, trusted_unread);
    fn set_struct_size(&mut self) {
        self.struct_size = std::mem::size_of::<Self>();
    }
}

impl Versioned for rb_device_info {
    const NAME: &'static str = "rb_device_info";
    /// Callers built before engine_note was added pass the size that ends where it begins.
    const MIN_SIZE: usize = std::mem::offset_of!(rb_device_info, engine_note);
    fn set_struct_size(&mut self) {
        self.struct_size = std::mem::size_of::<Self>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Status;

    #[test]
    fn status_constants_match_the_enum() {
        let pairs = [
            (RB_OK, Status::Ok),
            (RB_E_INVALID_ARGUMENT, Status::InvalidArgument),
            (RB_E_IO, Status::Io),
            (RB_E_FORMAT, Status::Format),
            (RB_E_NO_SPACE, Status::NoSpace),
            (RB_E_TOO_LARGE, Status::TooLarge),
            (RB_E_NOT_FOUND, Status::NotFound),
            (RB_E_CORRUPT, Status::Corrupt),
            (RB_E_BUFFER_TOO_SMALL, Status::BufferTooSmall),
            (RB_E_UNSUPPORTED, Status::Unsupported),
            (RB_E_READ_ONLY, Status::ReadOnly),
            (RB_E_BUSY, Status::Busy),
            (RB_E_STATE, Status::State),
            (RB_E_EXISTS, Status::Exists),
            (RB_E_PANIC, Status::Panic),
            (RB_E_NO_MEMORY, Status::NoMemory),
        ];
        for (code, status) in pairs {
            assert_eq!(code, status as i32, "{status:?}");
            assert_eq!(Status::from_code(code), Some(status));
        }
        assert_eq!(Status::from_code(99), None);
    }
}
