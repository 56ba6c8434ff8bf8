//! How batches of header reads happen. An engine reads `plan.len` bytes at
//! `plan.offset(slot)` for every slot asked for and hands each result, in
//! input order, to the caller's decoder; what the bytes mean is not its business.
//!
//! - [`posix`]: a serial pread loop, or a pool of threads kept by the handle;
//! - [`uring`]: io_uring with registered buffers and file, a window of at
//!   most `queue_depth` reads kept full ([`window`]);
//! - every engine retries a failed read once on its own ([`sync_fallback`]),
//!   so one bad slot never spoils its neighbours.

pub mod faults;
pub mod posix;
pub mod uring;
mod window;

use crate::device::{errno_of, Device};
use crate::error::{Error, Result};
pub use faults::{FaultMode, FaultTable};

pub const DEFAULT_QUEUE_DEPTH: usize = 128;
pub const MAX_QUEUE_DEPTH: usize = 4096;
pub const MAX_POSIX_THREADS: usize = 256;

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

/// The engine a caller asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// io_uring where the kernel allows it, otherwise POSIX.
    #[default]
    Auto,
    Posix,
    IoUring,
    UringCmd,
}

#[derive(Clone, Copy, Debug)]
pub struct EngineConfig {
    pub choice: EngineChoice,
    /// 1: a serial pread loop; more: a pool of that many threads.
    pub posix_threads: usize,
    /// Most reads in flight at once (io_uring).
    pub queue_depth: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { choice: EngineChoice::Auto, posix_threads: 1, queue_depth: DEFAULT_QUEUE_DEPTH }
    }
}

/// Where the records to read are: `len` bytes at `base + slot * stride`.
#[derive(Clone, Copy, Debug)]
pub struct ReadPlan {
    pub base: u64,
    pub stride: u64,
    pub len: usize,
}

impl ReadPlan {
    pub fn offset(&self, slot: u64) -> u64 {
        self.base + slot * self.stride
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
pub type Decoder<'f, T> = dyn Fn(usize, u64, ReadResult<'_>) -> T + Sync + 'f;

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
    fn pread(&self, slot: u64, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
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
    fn batched_pread(&self, slot: u64, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
        stats.reads_submitted += 1;
        match self.faults.batched_read(slot) {
            Some(errno) => Err(errno),
            None => self.pread(slot, buf, stats),
        }
    }

    /// The per-slot retry after a batched read failed: one synchronous read on its own.
    fn sync_fallback(&self, slot: u64, buf: &mut [u8], stats: &mut BatchStats) -> std::result::Result<(), i32> {
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

/// The engine a handle reads with.
pub enum Engine {
    Posix(posix::PosixEngine),
    IoUring(uring::UringEngine),
}

impl Engine {
    /// Builds the engine `cfg` asks for. AUTO falls back to POSIX when io_uring
    /// is unavailable and says why in the returned note.
    pub fn new(cfg: &EngineConfig, dev: &Device, record_len: usize) -> Result<(Engine, Option<String>)> {
        let posix = || Engine::Posix(posix::PosixEngine::new(cfg.posix_threads));
        match cfg.choice {
            EngineChoice::Posix => Ok((posix(), None)),
            EngineChoice::UringCmd => Err(Error::Unsupported(
                "RB_ENGINE_URING_CMD (NVMe passthrough) is not implemented yet; use RB_ENGINE_IO_URING or RB_ENGINE_AUTO".into(),
            )),
            EngineChoice::IoUring => match uring::UringEngine::new(dev, cfg.queue_depth, record_len) {
                Ok(u) => Ok((Engine::IoUring(u), None)),
                Err(e) => Err(Error::Unsupported(format!("io_uring is not available here: {e}"))),
            },
            EngineChoice::Auto => match uring::UringEngine::new(dev, cfg.queue_depth, record_len) {
                Ok(u) => Ok((Engine::IoUring(u), None)),
                Err(e) => Ok((posix(), Some(format!("io_uring unavailable ({e}); using POSIX")))),
            },
        }
    }

    pub fn kind(&self) -> EngineKind {
        match self {
            Engine::Posix(_) => EngineKind::Posix,
            Engine::IoUring(_) => EngineKind::IoUring,
        }
    }

    /// Reads every slot of `slots` and stores `decode(i, slot, result)` in `out[i]`.
    pub fn read_slots<T: Send>(&self, ctx: ReadCtx<'_>, slots: &[u64], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        assert_eq!(slots.len(), out.len(), "one output per slot");
        if slots.is_empty() {
            return BatchStats::default();
        }
        match self {
            Engine::Posix(p) => p.read_slots(ctx, slots, out, decode),
            Engine::IoUring(u) => u.read_slots(ctx, slots, out, decode),
        }
    }
}
