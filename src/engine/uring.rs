//! The io_uring engine: a small pool of rings, each with one aligned arena of
//! `queue_depth` record buffers registered once (fixed buffers) and the
//! device registered as a fixed file where the kernel allows it.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex};

use io_uring::{opcode, types, IoUring};

use super::window::{self, ReadQueue};
use super::data::{self, DataCtx, DataJob, IoKind, IoOp};
use super::data_window::{self, OpQueue};
use super::registry::{Registry, MAX_REGIONS};
use super::{BatchStats, Decoder, ReadCtx};
use crate::format::SlotIndex;
use crate::aligned::AlignedBuf;
use crate::device::Device;
use crate::error::Error;
use crate::sync::{self, lock};

/// Rings a handle keeps at most; more concurrent callers wait for one.
const MAX_RINGS: usize = 4;

pub struct UringEngine {
    fd: RawFd,
    depth: usize,
    record_len: usize,
    registry: Arc<Registry>,
    pool: Mutex<RingPool>,
    ring_free: Condvar,
}

struct RingPool {
    idle: Vec<UringQueue>,
    created: usize,
}

/// Why a ring could not be set up.
#[derive(Debug)]
pub enum SetupError {
    /// The kernel refused the ring: io_uring is unusable here.
    Kernel(io::Error),
    /// The arena could not be allocated ([`Error::OutOfMemory`]).
    Memory(Error),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::Kernel(e) => e.fmt(f),
            SetupError::Memory(e) => e.fmt(f),
        }
    }
}

impl UringEngine {
    /// Sets up the first ring; an error here means io_uring is unusable.
    /// `depth` comes from [`EngineConfig::uring_depth`](super::EngineConfig::uring_depth),
    /// which bounds the arena.
    pub fn new(dev: &Device, depth: usize, record_len: usize, registry: Arc<Registry>) -> Result<UringEngine, SetupError> {
        let first = UringQueue::new(dev.fd(), depth, record_len, true)?;
        Ok(UringEngine {
            fd: dev.fd(),
            depth,
            record_len,
            registry,
            pool: Mutex::new(RingPool { idle: vec![first], created: 1 }),
            ring_free: Condvar::new(),
        })
    }

    pub fn queue_depth(&self) -> usize {
        self.depth
    }

    pub(super) fn read_slots<T: Send>(&self, ctx: ReadCtx<'_>, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let mut q = match self.checkout() {
            Ok(q) => q,
            Err(_) => return self.read_without_ring(ctx, slots, out, decode),
        };
        let mut stats = BatchStats {
            registered_buffers: q.fixed_buffers,
            registered_file: q.fixed_file,
            ..Default::default()
        };
        window::drive(&mut q, ctx, slots, &mut |idx, r| out[idx] = decode(idx, slots[idx], r), &mut stats);
        self.checkin(q);
        stats
    }

    /// A data batch through one ring of the pool; with no ring to be had, serially.
    pub(super) fn run_data(&self, ctx: DataCtx<'_>, job: &dyn DataJob) -> BatchStats {
        let mut q = match self.checkout() {
            Ok(q) => q,
            Err(_) => return data::run_serial(ctx, job),
        };
        q.apply_regions(&self.registry);
        q.fixed_ops = 0;
        let mut stats = data_window::drive(&mut q, ctx, job, self.depth);
        stats.registered_file = q.fixed_file;
        stats.registered_buffers = q.fixed_ops > 0;
        self.checkin(q);
        stats
    }

    /// Applies the registry to every idle ring (after an unregister).
    pub(super) fn apply_regions_to_idle(&self) {
        let mut pool = lock(&self.pool);
        for q in pool.idle.iter_mut() {
            q.apply_regions(&self.registry);
        }
    }

    /// When no ring can be set up at all: every read goes per slot.
    fn read_without_ring<T>(&self, ctx: ReadCtx<'_>, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let mut stats = BatchStats::default();
        let mut buf = AlignedBuf::zeroed(ctx.plan.len);
        for (idx, (&slot, o)) in slots.iter().zip(out.iter_mut()).enumerate() {
            let r = ctx.sync_fallback(slot, &mut buf, &mut stats);
            *o = decode(idx, slot, r.map(|()| &buf[..]));
        }
        stats
    }

    fn checkout(&self) -> Result<UringQueue, SetupError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(q) = pool.idle.pop() {
                return Ok(q);
            }
            if pool.created < MAX_RINGS {
                pool.created += 1;
                drop(pool);
                let q = UringQueue::new(self.fd, self.depth, self.record_len, true);
                if q.is_err() {
                    lock(&self.pool).created -= 1;
                    // A caller waiting for a ring may create one now.
                    self.ring_free.notify_one();
                }
                return q;
            }
            pool = sync::wait(&self.ring_free, pool);
        }
    }

    fn checkin(&self, q: UringQueue) {
        let mut pool = lock(&self.pool);
        if q.poisoned {
            pool.created -= 1;
            // Reads may still be in flight into its arena: never free that memory.
            std::mem::forget(q);
        } else {
            pool.idle.push(q);
        }
        self.ring_free.notify_one();
    }
}

/// One ring and the arena its reads land in. Field order matters: the ring
/// is dropped (and its requests torn down) before the arena is freed.
pub(crate) struct UringQueue {
    ring: IoUring,
    arena: AlignedBuf,
    record_len: usize,
    depth: usize,
    fd: RawFd,
    fixed_buffers: bool,
    fixed_file: bool,
    poisoned: bool,
    /// The fixed-buffer table has room for caller regions (entries 1..=MAX_REGIONS).
    regions_ok: bool,
    /// The registry version and regions this ring's table holds.
    regions_version: u64,
    regions: Vec<Option<(usize, usize)>>,
    /// Data I/Os pushed as fixed-buffer operations since the count was reset.
    fixed_ops: u64,
    /// The iovec pairs of vectored data I/Os in flight, one per window tag (never reallocated).
    iovs: IoVecs,
}

/// iovec pairs a ring hands the kernel. Plain addresses: the memory they name belongs to the
/// data job in flight, and only the kernel dereferences them, for I/Os this ring submitted.
struct IoVecs(Vec<[libc::iovec; 2]>);
// SAFETY: the vector is owned by one ring, which one thread at a time checks out; the
// addresses inside are never dereferenced by this process.
unsafe impl Send for IoVecs {}

impl UringQueue {
    /// `register`: try registered buffers and file (false only in tests of the plain path).
    fn new(fd: RawFd, depth: usize, record_len: usize, register: bool) -> Result<UringQueue, SetupError> {
        // Room for the data window too, whose items issue up to MAX_OPS_PER_ITEM I/Os each.
        let entries = depth.max(data::MAX_OPS_PER_ITEM).next_power_of_two() as u32;
        let arena_bytes = depth.saturating_mul(record_len);
        let mut arena = AlignedBuf::try_zeroed(arena_bytes)
            .ok_or_else(|| SetupError::Memory(Error::out_of_memory("the io_uring buffer arena", arena_bytes)))?;
        // COOP_TASKRUN avoids interrupting the task for completions; SINGLE_ISSUER and
        // DEFER_TASKRUN would pin a ring to one thread, which a shared pool cannot promise.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::new(entries))
            .map_err(SetupError::Kernel)?;
        let iov = libc::iovec { iov_base: arena.as_mut_ptr().cast(), iov_len: arena.len() };
        // A sparse table (5.13+) with room for caller regions after the arena; else the arena alone.
        // Refused (RLIMIT_MEMLOCK, old kernels): plain reads, and the stats say so.
        let sparse = register && ring.submitter().register_buffers_sparse(1 + MAX_REGIONS as u32).is_ok();
        // SAFETY: the arena outlives the ring (field order) and is never reallocated.
        let fixed_buffers = match sparse {
            true => unsafe { ring.submitter().register_buffers_update(0, &[iov], None) }.is_ok(),
            false => register && unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok(),
        };
        let fixed_file = register && ring.submitter().register_files(&[fd]).is_ok();
        Ok(UringQueue {
            ring,
            arena,
            record_len,
            depth,
            fd,
            fixed_buffers,
            fixed_file,
            poisoned: false,
            regions_ok: sparse && fixed_buffers,
            regions_version: 0,
            regions: Vec::new(),
            fixed_ops: 0,
            iovs: IoVecs(vec![[libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 2]; data_window::tags(depth)]),
        })
    }

    /// Brings the ring's table of caller regions up to the registry's (the ring is idle).
    fn apply_regions(&mut self, registry: &Registry) {
        if !self.regions_ok || registry.version() == self.regions_version {
            return;
        }
        let snap = registry.snapshot();
        let mut iovs = vec![libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; MAX_REGIONS];
        for (iov, r) in iovs.iter_mut().zip(&snap.regions) {
            if let Some((start, len)) = *r {
                *iov = libc::iovec { iov_base: start as *mut libc::c_void, iov_len: len };
            }
        }
        // SAFETY: a region stays valid while registered; the registry removes one only when no
        // I/O uses it, and the next checkout of this ring clears its entry before reuse.
        match unsafe { self.ring.submitter().register_buffers_update(1, &iovs, None) } {
            Ok(()) => {
                self.regions_version = snap.version;
                self.regions = snap.regions;
            }
            Err(_) => {
                // Pinning refused (memory limits): this ring does plain I/O into regions.
                self.regions_ok = false;
                self.regions.clear();
            }
        }
    }

    /// Whether `op`'s fixed-buffer entry in this ring's table covers its memory.
    fn fixed_entry(&self, op: &IoOp) -> Option<u16> {
        let b = op.fixed?;
        let (start, len) = (*self.regions.get(b as usize - 1)?)?;
        let (p, end) = (op.ptr as usize, op.ptr as usize + op.len);
        (start <= p && end <= start + len).then_some(b)
    }
}

impl ReadQueue for UringQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn buffer(&self, buf: usize) -> &[u8] {
        &self.arena[buf * self.record_len..(buf + 1) * self.record_len]
    }

    fn buffer_mut(&mut self, buf: usize) -> &mut [u8] {
        let len = self.record_len;
        &mut self.arena[buf * len..(buf + 1) * len]
    }

    fn push(&mut self, user_data: u64, offset: u64, buf: usize) {
        let ptr = self.buffer_mut(buf).as_mut_ptr();
        let len = self.record_len as u32;
        let sqe = match (self.fixed_buffers, self.fixed_file) {
            (true, true) => opcode::ReadFixed::new(types::Fixed(0), ptr, len, 0).offset(offset).build(),
            (true, false) => opcode::ReadFixed::new(types::Fd(self.fd), ptr, len, 0).offset(offset).build(),
            (false, true) => opcode::Read::new(types::Fixed(0), ptr, len).offset(offset).build(),
            (false, false) => opcode::Read::new(types::Fd(self.fd), ptr, len).offset(offset).build(),
        };
        // SAFETY: the target buffer lies in this queue's arena, which lives as long as the
        // ring; the window driver keeps the buffer reserved until the read completes.
        let pushed = unsafe { self.ring.submission().push(&sqe.user_data(user_data)) };
        pushed.expect("the submission queue holds queue_depth entries and at most that many are queued");
    }

    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(wait)
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        out.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
    }

    fn poison(&mut self) {
        self.poisoned = true;
    }
}

impl UringQueue {
    /// One READV/WRITEV of two segments; the iovecs live in this ring until the tag is reused.
    fn push_vectored(&mut self, user_data: u64, op: &IoOp, tail: *mut u8, tail_len: usize) {
        let iov = &mut self.iovs.0[user_data as usize];
        iov[0] = libc::iovec { iov_base: op.ptr.cast(), iov_len: op.len };
        iov[1] = libc::iovec { iov_base: tail.cast(), iov_len: tail_len };
        let iov = iov.as_ptr();
        let sqe = match (op.kind, self.fixed_file) {
            (IoKind::Read, true) => opcode::Readv::new(types::Fixed(0), iov, 2).offset(op.offset).build(),
            (IoKind::Read, false) => opcode::Readv::new(types::Fd(self.fd), iov, 2).offset(op.offset).build(),
            (IoKind::Write, true) => opcode::Writev::new(types::Fixed(0), iov, 2).offset(op.offset).build(),
            (IoKind::Write, false) => opcode::Writev::new(types::Fd(self.fd), iov, 2).offset(op.offset).build(),
        };
        // SAFETY: the iovecs live in this ring's table until the window reuses the tag, which it
        // does only after the I/O completed; the memory they name is the job's until finish.
        let pushed = unsafe { self.ring.submission().push(&sqe.user_data(user_data)) };
        pushed.expect("the window keeps at most queue_depth I/Os queued or in flight");
    }
}

impl OpQueue for UringQueue {
    fn push_op(&mut self, user_data: u64, op: &IoOp) {
        if let Some((tail, tail_len)) = op.tail {
            return self.push_vectored(user_data, op, tail, tail_len);
        }
        let len = op.len as u32;
        let fixed = self.fixed_entry(op);
        self.fixed_ops += u64::from(fixed.is_some());
        let sqe = match (op.kind, fixed, self.fixed_file) {
            (IoKind::Read, Some(b), true) => opcode::ReadFixed::new(types::Fixed(0), op.ptr, len, b).offset(op.offset).build(),
            (IoKind::Read, Some(b), false) => opcode::ReadFixed::new(types::Fd(self.fd), op.ptr, len, b).offset(op.offset).build(),
            (IoKind::Read, None, true) => opcode::Read::new(types::Fixed(0), op.ptr, len).offset(op.offset).build(),
            (IoKind::Read, None, false) => opcode::Read::new(types::Fd(self.fd), op.ptr, len).offset(op.offset).build(),
            (IoKind::Write, Some(b), true) => opcode::WriteFixed::new(types::Fixed(0), op.ptr, len, b).offset(op.offset).build(),
            (IoKind::Write, Some(b), false) => opcode::WriteFixed::new(types::Fd(self.fd), op.ptr, len, b).offset(op.offset).build(),
            (IoKind::Write, None, true) => opcode::Write::new(types::Fixed(0), op.ptr, len).offset(op.offset).build(),
            (IoKind::Write, None, false) => opcode::Write::new(types::Fd(self.fd), op.ptr, len).offset(op.offset).build(),
        };
        // SAFETY: the data job keeps the op's memory valid and unaliased until the item is
        // finished, which the window does only after this I/O has completed.
        let pushed = unsafe { self.ring.submission().push(&sqe.user_data(user_data)) };
        pushed.expect("the window keeps at most queue_depth I/Os queued or in flight");
    }

    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize> {
        self.ring.submit_and_wait(wait)
    }

    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        out.extend(self.ring.completion().map(|c| (c.user_data(), c.result())));
    }

    fn poison(&mut self) {
        self.poisoned = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::OpenMode;
    use crate::engine::{FaultTable, ReadCtx, ReadPlan};

    /// The plain-read path (registration refused) and the fixed path return the same bytes.
    #[test]
    fn plain_and_registered_reads_agree() {
        let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/uring"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("plain-{}.img", std::process::id()));
        let mut bytes = vec![0u8; 300 * 4096];
        for (i, chunk) in bytes.chunks_mut(4096).enumerate() {
            chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let dev = Device::open(&path, OpenMode::default()).unwrap();
        std::fs::remove_file(&path).unwrap();
        let faults = FaultTable::default();
        let ctx = ReadCtx { dev: &dev, faults: &faults, plan: ReadPlan { base: 0, stride: 4096, len: 4096 } };
        let slots: Vec<SlotIndex> = (0..300).rev().map(SlotIndex).collect();
        for register in [false, true] {
            let mut q = UringQueue::new(dev.fd(), 16, 4096, register).unwrap();
            assert_eq!((q.fixed_buffers, q.fixed_file), (register, register));
            let mut got = vec![u64::MAX; slots.len()];
            let mut stats = BatchStats::default();
            window::drive(&mut q, ctx, &slots, &mut |i, r| got[i] = u64::from_le_bytes(r.unwrap()[..8].try_into().unwrap()), &mut stats);
            assert!(got.iter().zip(&slots).all(|(&g, s)| g == s.0), "register={register}");
            assert_eq!((stats.max_in_flight, stats.fallbacks), (16, 0));
        }
    }
}
