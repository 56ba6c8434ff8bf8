//! How batches of header reads happen. An engine reads `plan.len` bytes at
//! `plan.offset(slot)` for every slot asked for and hands each result, in
//! input order, to the caller's decoder; what the bytes mean is not its business.
//!
//! - [`posix`]: a serial pread loop, or a pool of threads kept by the handle;
//! - [`uring`]: io_uring with registered buffers and file, a window of at
//!   most `queue_depth` reads kept full ([`window`]);
//! - [`uring_cmd`]: the same windows, every I/O an NVMe command (passthrough);
//! - every engine retries a failed read once on its own ([`sync_fallback`]),
//!   so one bad slot never spoils its neighbours.

pub mod data;
mod data_window;
pub mod faults;
pub mod posix;
pub mod registry;
pub mod uring;
pub mod uring_cmd;
mod window;

use crate::device::{errno_of, Device};
use crate::error::{Error, Result};
use crate::format::SlotIndex;
pub use faults::{FaultMode, FaultTable};

/// The engine that actually runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Posix,
    IoUring,
    UringCmd,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Posix => "posix",
            EngineKind::IoUring => "io_uring",
            EngineKind::UringCmd => "uring_cmd",
        }
    }
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The engine a caller asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring where the kernel allows it, otherwise POSIX.
    #[default]
    Auto,
    Posix,
    IoUring,
    /// NVMe passthrough (io_uring_cmd) on an NVMe namespace; never picked by AUTO.
    UringCmd,
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineChoice::Auto => "auto",
            EngineChoice::Posix => "posix",
            EngineChoice::IoUring => "io_uring",
            EngineChoice::UringCmd => "uring_cmd (NVMe passthrough)",
        })
    }
}

/// An engine request with its defaults applied and its numbers clamped: the one
/// place those rules live (the C boundary and the bindings pass raw numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    choice: EngineChoice,
    posix_threads: usize,
    queue_depth: usize,
}

/// 1: a serial pread loop.
const DEFAULT_POSIX_THREADS: usize = 1;
const MAX_POSIX_THREADS: usize = 256;
const DEFAULT_QUEUE_DEPTH: usize = 128;
const MAX_QUEUE_DEPTH: usize = 4096;
/// Largest io_uring arena (`depth x record_len`) per ring: a larger record lowers the depth.
pub const MAX_ARENA_BYTES: usize = 256 << 20;

impl EngineConfig {
    /// `posix_threads` (1 = serial, more = a pool) and `queue_depth` (most reads in
    /// flight, io_uring): 0 means the default; larger than the maximum means the maximum.
    pub fn new(choice: EngineChoice, posix_threads: usize, queue_depth: usize) -> EngineConfig {
        let pick = |v: usize, default: usize, max: usize| if v == 0 { default } else { v.min(max) };
        EngineConfig {
            choice,
            posix_threads: pick(posix_threads, DEFAULT_POSIX_THREADS, MAX_POSIX_THREADS),
            queue_depth: pick(queue_depth, DEFAULT_QUEUE_DEPTH, MAX_QUEUE_DEPTH),
        }
    }

    pub fn choice(&self) -> EngineChoice {
        self.choice
    }
    pub fn posix_threads(&self) -> usize {
        self.posix_threads
    }
    pub fn queue_depth(&self) -> usize {
        self.queue_depth
    }
    /// The depth an io_uring ring runs with for records of `record_len` bytes: the
    /// queue depth, lowered so that its arena stays within [`MAX_ARENA_BYTES`].
    pub fn uring_depth(&self, record_len: usize) -> usize {
        self.queue_depth.min(MAX_ARENA_BYTES / record_len.max(1)).max(1)
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::new(EngineChoice::Auto, 0, 0)
    }
}

#[cfg(test)]
#[test]
fn engine_config_applies_defaults_and_clamps() {
    let c = EngineConfig::new(EngineChoice::Posix, 0, 0);
    assert_eq!((c.posix_threads(), c.queue_depth()), (DEFAULT_POSIX_THREADS, DEFAULT_QUEUE_DEPTH));
    let c = EngineConfig::new(EngineChoice::IoUring, 100_000, 100_000);
    assert_eq!((c.posix_threads(), c.queue_depth()), (MAX_POSIX_THREADS, MAX_QUEUE_DEPTH));
    let c = EngineConfig::new(EngineChoice::Auto, 3, 7);
    assert_eq!((c.choice(), c.posix_threads(), c.queue_depth()), (EngineChoice::Auto, 3, 7));
    // The arena bound: a 1 GiB record (the header) would have made a 128 GiB arena.
    let c = EngineConfig::new(EngineChoice::IoUring, 0, 4096);
    assert_eq!((c.uring_depth(4096), c.uring_depth(1 << 20), c.uring_depth(1 << 30)), (4096, 256, 1));
    assert_eq!(EngineConfig::default().uring_depth(4096), DEFAULT_QUEUE_DEPTH);
}

/// Where the records to read are: `len` bytes at `base + slot * stride`.
#[derive(Clone, Copy, Debug)]
pub struct ReadPlan {
    pub base: u64,
    pub stride: u64,
    pub len: usize,
}

impl ReadPlan {
    pub fn offset(&self, slot: SlotIndex) -> u64 {
        self.base + slot.0 * self.stride
    }
}

/// What one batched call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Reads handed to the engine's batched path (io_uring SQEs, or first preads).
    pub reads_submitted: u64,
    /// io_uring_enter calls (POSIX: ranges dispatched).
    pub submit_calls: u64,
    /// Highest number of reads in flight at once.
    pub max_in_flight: u64,
    /// Per-slot synchronous reads after a failed batched read or submit.
    pub fallbacks: u64,
    /// EAGAIN/EINTR retries.
    pub retries: u64,
    /// Slots whose read failed even after the fallback.
    pub failed: u64,
    pub registered_buffers: bool,
    pub registered_file: bool,
}

impl BatchStats {
    pub fn merge(&mut self, o: &BatchStats) {
        self.reads_submitted += o.reads_submitted;
        self.submit_calls += o.submit_calls;
        self.max_in_flight = self.max_in_flight.max(o.max_in_flight);
        self.fallbacks += o.fallbacks;
        self.retries += o.retries;
        self.failed += o.failed;
        self.registered_buffers |= o.registered_buffers;
        self.registered_file |= o.registered_file;
    }
}

/// A read's outcome as a decoder sees it: the bytes, or the errno.
pub type ReadResult<'a> = std::result::Result<&'a [u8], i32>;

/// Decodes one read into the caller's output type: `(input index, slot, result)`.
pub type Decoder<'f, T> = dyn Fn(usize, SlotIndex, ReadResult<'_>) -> T + Sync + 'f;

/// Everything a read needs besides its buffer.
#[derive(Clone, Copy)]
pub struct ReadCtx<'a> {
    pub dev: &'a Device,
    pub faults: &'a FaultTable,
    pub plan: ReadPlan,
}

/// Bound on EAGAIN/EINTR retries of one read before it counts as failed.
const MAX_RETRIES_PER_READ: u32 = 64;

impl ReadCtx<'_> {
    /// One positional read into `buf`, retrying EAGAIN/EINTR.
    fn pread(&self, slot: SlotIndex, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
        let mut tries = 0;
        loop {
            match self.dev.read_at(buf, self.plan.offset(slot)) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let errno = errno_of(&e);
                    if (errno == libc::EAGAIN || errno == libc::EINTR) && tries < MAX_RETRIES_PER_READ {
                        tries += 1;
                        stats.retries += 1;
                        continue;
                    }
                    return Err(errno);
                }
            }
        }
    }

    /// The first, batched-path read of a slot done synchronously (POSIX engine).
    fn batched_pread(&self, slot: SlotIndex, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
        stats.reads_submitted += 1;
        match self.faults.batched_read(slot) {
            Some(errno) => Err(errno),
            None => self.pread(slot, buf, stats),
        }
    }

    /// The per-slot retry after a batched read failed: one synchronous read on its own.
    fn sync_fallback(&self, slot: SlotIndex, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
        stats.fallbacks += 1;
        let r = match self.faults.fallback_read(slot) {
            Some(errno) => Err(errno),
            None => self.pread(slot, buf, stats),
        };
        if r.is_err() {
            stats.failed += 1;
        }
        r
    }
}

/// The engine a handle reads with; callers never see which variant runs.
pub struct Engine {
    inner: Inner,
    /// Why AUTO did not pick io_uring, when it did not.
    note: Option<String>,
    /// Caller memory registered for fixed-buffer I/O (io_uring; POSIX accepts and ignores it).
    registry: std::sync::Arc<registry::Registry>,
}

enum Inner {
    Posix(posix::PosixEngine),
    IoUring(uring::UringEngine),
    UringCmd(uring_cmd::UringCmdEngine),
}

impl Engine {
    /// Builds the engine `cfg` asks for. AUTO falls back to POSIX when io_uring
    /// is unavailable and keeps the reason ([`Engine::note`]).
    /// A thread or buffer the host refuses is an error ([`Error::OutOfThreads`],
    /// [`Error::OutOfMemory`]), with nothing left running.
    pub fn new(cfg: &EngineConfig, dev: &Device, record_len: usize) -> Result<Engine> {
        let registry = std::sync::Arc::new(registry::Registry::default());
        let posix = || posix::PosixEngine::new(cfg.posix_threads()).map(Inner::Posix);
        let uring = || uring::UringEngine::new(dev, cfg.uring_depth(record_len), record_len, registry.clone()).map(Inner::IoUring);
        let (inner, note) = match cfg.choice() {
            EngineChoice::Posix => (posix()?, None),
            EngineChoice::UringCmd => {
                let unavailable = |reason: String| Error::EngineUnavailable { engine: cfg.choice(), reason };
                let Some(pt) = dev.passthrough() else {
                    return Err(unavailable(format!("{} was not opened for NVMe passthrough", dev.path().display())));
                };
                match uring_cmd::UringCmdEngine::new(pt, cfg.uring_depth(record_len), record_len) {
                    Ok(u) => {
                        let note = u.note().map(str::to_string);
                        (Inner::UringCmd(u), note)
                    }
                    Err(uring::SetupError::Kernel(e)) => {
                        return Err(unavailable(format!("the kernel refused an NVMe read command through io_uring: {e}")))
                    }
                    Err(uring::SetupError::Memory(e)) => return Err(e),
                }
            }
            EngineChoice::IoUring => match uring() {
                Ok(u) => (u, None),
                Err(uring::SetupError::Kernel(e)) => {
                    return Err(Error::EngineUnavailable { engine: cfg.choice(), reason: e.to_string() })
                }
                Err(uring::SetupError::Memory(e)) => return Err(e),
            },
            EngineChoice::Auto => match uring() {
                Ok(u) => (u, None),
                Err(e) => (posix()?, Some(format!("io_uring unavailable ({e}); using posix"))),
            },
        };
        Ok(Engine { inner, note, registry })
    }

    /// The caller memory registered with this handle.
    pub fn registry(&self) -> &registry::Registry {
        &self.registry
    }

    /// Drops unregistered regions from the idle rings' tables, so their pages are unpinned now
    /// rather than at the ring's next use.
    pub fn release_regions(&self) {
        if let Inner::IoUring(u) = &self.inner {
            u.apply_regions_to_idle();
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self.inner {
            Inner::Posix(_) => EngineKind::Posix,
            Inner::IoUring(_) => EngineKind::IoUring,
            Inner::UringCmd(_) => EngineKind::UringCmd,
        }
    }

    /// Reads in flight at most: the queue depth (io_uring) or the thread count (POSIX).
    pub fn concurrency(&self) -> usize {
        match &self.inner {
            Inner::IoUring(u) => u.queue_depth(),
            Inner::UringCmd(u) => u.queue_depth(),
            Inner::Posix(p) => p.threads(),
        }
    }

    /// Why AUTO fell back from io_uring, if it did (uring_cmd: why it runs without fixed buffers).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Runs every item of a data batch (gets, puts) with at most `concurrency()` I/Os in flight.
    pub fn run_data(&self, ctx: data::DataCtx<'_>, job: &dyn data::DataJob) -> BatchStats {
        if job.items() == 0 {
            return BatchStats::default();
        }
        match &self.inner {
            Inner::Posix(p) => p.run_data(ctx, job),
            Inner::IoUring(u) => u.run_data(ctx, job),
            Inner::UringCmd(u) => u.run_data(ctx, job),
        }
    }

    /// Reads every slot of `slots` and stores `decode(i, slot, result)` in `out[i]`.
    pub fn read_slots<T: Send>(&self, ctx: ReadCtx<'_>, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        assert_eq!(slots.len(), out.len(), "one output per slot");
        if slots.is_empty() {
            return BatchStats::default();
        }
        match &self.inner {
            Inner::Posix(p) => p.read_slots(ctx, slots, out, decode),
            Inner::IoUring(u) => u.read_slots(ctx, slots, out, decode),
            Inner::UringCmd(u) => u.read_slots(ctx, slots, out, decode),
        }
    }
}
