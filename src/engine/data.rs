//! Batched data I/O: each item of a batch (one get or one put) is prepared,
//! issued as one to [`MAX_OPS_PER_ITEM`] device reads or writes, and finished
//! on its own, with at most `depth` I/Os in flight. What an item means (which
//! key, which checks) is the caller's [`DataJob`]; this module only moves bytes.
//!
//! Memory: an item may use one aligned scratch buffer (a bounce record or a
//! header block) from the moment it is prepared until it is finished; a
//! window holds at most `depth` items, so scratch memory is bounded by
//! `depth` x the largest record whatever the batch size.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::BatchStats;
use crate::aligned::AlignedBuf;
use crate::device::{errno_of, Device};
use crate::format::SlotIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
}

/// One device I/O: `len` bytes at `offset`, to or from the memory at `ptr`.
/// `ptr` and `len` meet the device's alignment rule (the caller checked).
#[derive(Clone, Copy, Debug)]
pub struct IoOp {
    pub kind: IoKind,
    pub offset: u64,
    pub ptr: *mut u8,
    pub len: usize,
    /// Index of a registered (fixed) buffer table entry holding `ptr..ptr+len`, if any.
    pub fixed: Option<u16>,
    /// The slot the I/O belongs to: fault injection keys on it.
    pub slot: SlotIndex,
    /// A second memory segment for the bytes right after `len` on the device (a vectored
    /// I/O: a header block in scratch and the payload in the caller's memory, one request).
    pub tail: Option<(*mut u8, usize)>,
}

impl IoOp {
    /// Bytes moved on the device.
    pub fn total_len(&self) -> usize {
        self.len + self.tail.map_or(0, |(_, n)| n)
    }
}

/// Most I/Os one item issues: a header block, a payload, a padded tail.
pub const MAX_OPS_PER_ITEM: usize = 3;

/// The I/Os of one item, in the order their results are reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ops {
    ops: [Option<IoOp>; MAX_OPS_PER_ITEM],
    n: usize,
}

impl Ops {
    pub fn none() -> Ops {
        Ops::default()
    }
    pub fn push(&mut self, op: IoOp) {
        assert!(self.n < MAX_OPS_PER_ITEM, "an item issues at most {MAX_OPS_PER_ITEM} I/Os");
        self.ops[self.n] = Some(op);
        self.n += 1;
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn get(&self, i: usize) -> IoOp {
        self.ops[i].expect("op index below len")
    }
}

/// What one I/O came to: done in full, or the errno.
pub type OpResult = std::result::Result<(), i32>;

/// An aligned buffer an item may use between prepare and finish; it grows on demand.
#[derive(Default)]
pub struct Scratch {
    buf: Option<AlignedBuf>,
}

impl Scratch {
    /// At least `len` bytes, aligned; the contents are whatever was there (callers overwrite).
    pub fn get(&mut self, len: usize) -> &mut [u8] {
        if self.buf.as_ref().is_none_or(|b| b.len() < len) {
            self.buf = Some(AlignedBuf::zeroed(len));
        }
        &mut self.buf.as_mut().expect("just set")[..len]
    }
    pub fn bytes(&self, len: usize) -> &[u8] {
        &self.buf.as_ref().expect("prepared with this length")[..len]
    }
}

/// What a batch does with each item. Calls for different items may run on different
/// threads at once (POSIX pool), so outputs live behind per-item interior mutability.
pub trait DataJob: Sync {
    fn items(&self) -> usize;
    /// The I/Os of item `i`. No I/O (e.g. a key not found) finishes the item at once.
    fn prepare(&self, i: usize, scratch: &mut Scratch) -> Ops;
    /// Every I/O of item `i` is done; `results[k]` is op k's outcome after its per-op retry.
    fn finish(&self, i: usize, results: &[OpResult], scratch: &Scratch);
}

/// Bound on EAGAIN/EINTR retries of one synchronous I/O.
const MAX_RETRIES: u32 = 64;

/// One synchronous I/O, retrying EAGAIN/EINTR.
pub(super) fn run_sync(dev: &Device, op: &IoOp, stats: &mut BatchStats) -> OpResult {
    let mut tries = 0;
    loop {
        // SAFETY: the job keeps the op's memory valid and unaliased from prepare to finish,
        // and this I/O runs between the two.
        let r = unsafe {
            let head = std::slice::from_raw_parts_mut(op.ptr, op.len);
            match (op.kind, op.tail) {
                (IoKind::Read, None) => dev.read_at(head, op.offset),
                (IoKind::Write, None) => dev.write_at(head, op.offset),
                (IoKind::Read, Some((p, n))) => dev.read_two_at(head, std::slice::from_raw_parts_mut(p, n), op.offset),
                (IoKind::Write, Some((p, n))) => dev.write_two_at(head, std::slice::from_raw_parts(p, n), op.offset),
            }
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) => {
                let errno = errno_of(&e);
                if (errno == libc::EAGAIN || errno == libc::EINTR) && tries < MAX_RETRIES {
                    tries += 1;
                    stats.retries += 1;
                    continue;
                }
                return Err(errno);
            }
        }
    }
}

/// Everything a data batch needs besides the job.
#[derive(Clone, Copy)]
pub struct DataCtx<'a> {
    pub dev: &'a Device,
    pub faults: &'a super::FaultTable,
}

impl DataCtx<'_> {
    /// The first attempt at an I/O on a synchronous path (serial or pool), faults applied.
    fn first_attempt(&self, op: &IoOp, stats: &mut BatchStats) -> OpResult {
        stats.reads_submitted += 1;
        match (op.kind, self.faults.batched_read(op.slot)) {
            (IoKind::Read, Some(errno)) => Err(errno),
            _ => run_sync(self.dev, op, stats),
        }
    }

    /// The retry of a failed I/O, on its own: one synchronous attempt.
    pub(super) fn fallback(&self, op: &IoOp, stats: &mut BatchStats) -> OpResult {
        stats.fallbacks += 1;
        let r = match (op.kind, self.faults.fallback_read(op.slot)) {
            (IoKind::Read, Some(errno)) => Err(errno),
            _ => run_sync(self.dev, op, stats),
        };
        if r.is_err() {
            stats.failed += 1;
        }
        r
    }

    /// Item `i` start to finish on the calling thread.
    fn run_item(&self, job: &dyn DataJob, i: usize, scratch: &mut Scratch, stats: &mut BatchStats) {
        let ops = job.prepare(i, scratch);
        let mut results = [Ok(()); MAX_OPS_PER_ITEM];
        for (k, r) in results.iter_mut().enumerate().take(ops.len()) {
            let op = ops.get(k);
            *r = self.first_attempt(&op, stats);
            if r.is_err() {
                *r = self.fallback(&op, stats);
            }
        }
        job.finish(i, &results[..ops.len()], scratch);
    }
}

/// Runs every item on the calling thread, one after the other.
pub(super) fn run_serial(ctx: DataCtx<'_>, job: &dyn DataJob) -> BatchStats {
    let mut stats = BatchStats { submit_calls: 1, max_in_flight: 1, ..Default::default() };
    let mut scratch = Scratch::default();
    for i in 0..job.items() {
        ctx.run_item(job, i, &mut scratch, &mut stats);
    }
    stats
}

/// The share of one pool worker: items taken one at a time from a shared counter,
/// so workers stay busy when items differ in size.
pub(super) fn run_worker(ctx: DataCtx<'_>, job: &dyn DataJob, next: &AtomicUsize) -> BatchStats {
    let mut stats = BatchStats { submit_calls: 1, ..Default::default() };
    let mut scratch = Scratch::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= job.items() {
            return stats;
        }
        ctx.run_item(job, i, &mut scratch, &mut stats);
    }
}
