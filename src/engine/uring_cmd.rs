//! The NVMe passthrough engine (RB_ENGINE_URING_CMD): the same windows as the io_uring
//! engine ([`window`] for header reads, [`data_window`] for data batches), but every I/O is
//! an NVMe read or write command sent with IORING_OP_URING_CMD to the namespace's generic
//! character device, on rings with 128-byte SQEs and 32-byte CQEs.
//!
//! One window I/O may become several commands: a transfer larger than the namespace's
//! largest command is split, and a vectored data I/O (header block + payload) is two
//! transfers. The I/O completes, as the window sees it, when its last command does.
//! Memory handed to the driver is always [`IO_ALIGN`]-aligned: an unaligned segment goes
//! through a bounce buffer of its own.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex};

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::data::{self, DataCtx, DataJob, IoKind, IoOp};
use super::data_window::{self, OpQueue};
use super::uring::SetupError;
use super::window::{self, ReadQueue};
use super::{BatchStats, Decoder, ReadCtx};
use crate::aligned::{AlignedBuf, IO_ALIGN};
use crate::device::nvme::{self, completion_error, Dir, NvmeCmd, Passthrough, NVME_URING_CMD_IO};
use crate::error::Error;
use crate::format::SlotIndex;
use crate::sync::{self, lock};

/// Rings a handle keeps at most; more concurrent callers wait for one.
const MAX_RINGS: usize = 4;

pub struct UringCmdEngine {
    pt: Arc<Passthrough>,
    depth: usize,
    record_len: usize,
    /// Whether the kernel takes fixed buffers with uring_cmd (IORING_URING_CMD_FIXED, 6.1+),
    /// found by a probe read at open.
    fixed_buffers: bool,
    /// Why fixed buffers are off, when they are.
    note: Option<String>,
    pool: Mutex<Vec<CmdQueue>>,
    created: Mutex<usize>,
    ring_free: Condvar,
}

impl UringCmdEngine {
    /// Sets up the first ring and proves the path with one read of LBA 0 (fixed buffer and
    /// file first; without them when the kernel refuses them for uring_cmd).
    pub fn new(pt: &Arc<Passthrough>, depth: usize, record_len: usize) -> Result<UringCmdEngine, SetupError> {
        let mut first = CmdQueue::new(pt, depth, record_len, true)?;
        let mut note = (!first.fixed_buffers).then(|| "registering the header arena was refused; plain commands".to_string());
        if let Err(e) = first.probe() {
            if !first.fixed_buffers {
                return Err(SetupError::Kernel(e));
            }
            note = Some(format!("fixed buffers for uring_cmd refused ({e}); plain commands"));
            first = CmdQueue::new(pt, depth, record_len, false)?;
            first.probe().map_err(SetupError::Kernel)?;
        }
        Ok(UringCmdEngine {
            pt: pt.clone(),
            depth,
            record_len,
            fixed_buffers: first.fixed_buffers,
            note,
            pool: Mutex::new(vec![first]),
            created: Mutex::new(1),
            ring_free: Condvar::new(),
        })
    }

    pub fn queue_depth(&self) -> usize {
        self.depth
    }

    /// Why the engine runs without something it prefers (fixed buffers), if it does.
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }

    pub(super) fn read_slots<T: Send>(&self, ctx: ReadCtx<'_>, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let Ok(mut q) = self.checkout() else {
            let mut stats = BatchStats::default();
            let mut buf = AlignedBuf::zeroed(ctx.plan.len);
            for (idx, (&slot, o)) in slots.iter().zip(out.iter_mut()).enumerate() {
                let r = ctx.sync_fallback(slot, &mut buf, &mut stats);
                *o = decode(idx, slot, r.map(|()| &buf[..]));
            }
            return stats;
        };
        let mut stats = BatchStats { registered_buffers: q.fixed_buffers, registered_file: q.fixed_file, ..Default::default() };
        window::drive(&mut q, ctx, slots, &mut |idx, r| out[idx] = decode(idx, slots[idx], r), &mut stats);
        self.checkin(q);
        stats
    }

    pub(super) fn run_data(&self, ctx: DataCtx<'_>, job: &dyn DataJob) -> BatchStats {
        let Ok(mut q) = self.checkout() else { return data::run_serial(ctx, job) };
        let mut stats = data_window::drive(&mut q, ctx, job, self.depth);
        stats.registered_file = q.fixed_file;
        self.checkin(q);
        stats
    }

    fn checkout(&self) -> Result<CmdQueue, SetupError> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(q) = pool.pop() {
                return Ok(q);
            }
            let mut created = lock(&self.created);
            if *created < MAX_RINGS {
                *created += 1;
                drop(created);
                drop(pool);
                let q = CmdQueue::new(&self.pt, self.depth, self.record_len, self.fixed_buffers);
                if q.is_err() {
                    *lock(&self.created) -= 1;
                    self.ring_free.notify_one();
                }
                return q;
            }
            drop(created);
            pool = sync::wait(&self.ring_free, pool);
        }
    }

    fn checkin(&self, q: CmdQueue) {
        let mut pool = lock(&self.pool);
        if q.poisoned {
            *lock(&self.created) -= 1;
            // Commands may still be in flight into its arena or bounce buffers: never free them.
            std::mem::forget(q);
        } else {
            pool.push(q);
        }
        self.ring_free.notify_one();
    }
}

/// A window I/O between its push and its last command's completion.
struct Pending {
    user_data: u64,
    /// Commands not yet completed.
    remaining: u32,
    /// Bytes the window expects on success.
    len: usize,
    /// The first errno of its commands (0: none).
    errno: i32,
    /// Read bounce buffers to copy out of on completion: (buffer, destination).
    bounces: Vec<(AlignedBuf, *mut u8)>,
    /// Write bounce buffers, kept until the commands reading them complete.
    held: Vec<AlignedBuf>,
}

/// One ring with its arena of `depth` header buffers (a fixed buffer where the kernel allows).
/// Field order matters: the ring is dropped before the memory its commands use.
pub(crate) struct CmdQueue {
    ring: IoUring<squeue::Entry128, cqueue::Entry32>,
    arena: AlignedBuf,
    record_len: usize,
    depth: usize,
    fd: RawFd,
    nsid: u32,
    lba_shift: u32,
    max_transfer: u32,
    fua: bool,
    fixed_buffers: bool,
    fixed_file: bool,
    poisoned: bool,
    /// Window I/Os by internal id (the commands' user_data); `free` lists unused ids.
    pending: Vec<Option<Pending>>,
    free: Vec<usize>,
    /// Window I/Os pushed since the last submit.
    queued: usize,
    /// Window completions ready to hand over (I/Os refused before any command was sent).
    ready: Vec<(u64, i32)>,
    /// A submit that failed while pushing (the submission queue was full): reported next.
    push_error: Option<io::Error>,
}

// SAFETY: the raw pointers in `pending` name memory of the job or the window in flight, which
// only this queue's commands touch; one thread at a time checks a queue out.
unsafe impl Send for CmdQueue {}

impl CmdQueue {
    fn new(pt: &Passthrough, depth: usize, record_len: usize, register: bool) -> Result<CmdQueue, SetupError> {
        let ns = pt.namespace();
        let entries = (depth.max(data::MAX_OPS_PER_ITEM) * 2).next_power_of_two().min(4096) as u32;
        let arena_bytes = depth.saturating_mul(record_len);
        let mut arena = AlignedBuf::try_zeroed(arena_bytes)
            .ok_or_else(|| SetupError::Memory(Error::out_of_memory("the uring_cmd buffer arena", arena_bytes)))?;
        let ring = nvme::new_ring(entries).map_err(SetupError::Kernel)?;
        let iov = libc::iovec { iov_base: arena.as_mut_ptr().cast(), iov_len: arena.len() };
        // SAFETY: the arena outlives the ring (field order) and is never reallocated.
        let fixed_buffers = register && unsafe { ring.submitter().register_buffers(&[iov]) }.is_ok();
        let fixed_file = ring.submitter().register_files(&[pt.fd()]).is_ok();
        Ok(CmdQueue {
            ring,
            arena,
            record_len,
            depth,
            fd: pt.fd(),
            nsid: ns.nsid,
            lba_shift: ns.lba_shift,
            max_transfer: ns.max_transfer,
            fua: pt.fua(),
            fixed_buffers,
            fixed_file,
            poisoned: false,
            pending: Vec::new(),
            free: Vec::new(),
            queued: 0,
            ready: Vec::new(),
            push_error: None,
        })
    }

    /// One read of the first LBA into the arena, the way header reads go: proves the kernel
    /// takes these commands (and fixed buffers with them, when registered).
    fn probe(&mut self) -> io::Result<()> {
        let len = 1usize << self.lba_shift;
        if self.arena.len() < len {
            return Ok(());
        }
        let addr = self.arena.as_mut_ptr() as u64;
        self.push_cmd(NvmeCmd::rw(Dir::Read, self.nsid, self.lba_shift, 0, addr, len as u32, false), 0, self.fixed_buffers)?;
        self.ring.submit_and_wait(1)?;
        let res = self.ring.completion().next().map(|c| c.result()).unwrap_or(-libc::EIO);
        completion_error(res).map_or(Ok(()), Err)
    }

    /// Queues one command; a full submission queue is submitted first.
    fn push_cmd(&mut self, cmd: NvmeCmd, id: usize, fixed_buf: bool) -> io::Result<()> {
        let mut b = match self.fixed_file {
            true => opcode::UringCmd80::new(types::Fixed(0), NVME_URING_CMD_IO),
            false => opcode::UringCmd80::new(types::Fd(self.fd), NVME_URING_CMD_IO),
        }
        .cmd(cmd.bytes());
        if fixed_buf {
            b = b.buf_index(Some(0));
        }
        let sqe = b.build().user_data(id as u64);
        loop {
            // SAFETY: the command's memory (arena, job memory or a bounce buffer held in
            // `pending`) stays valid until its completion is reaped.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn new_id(&mut self, p: Pending) -> usize {
        match self.free.pop() {
            Some(id) => {
                self.pending[id] = Some(p);
                id
            }
            None => {
                self.pending.push(Some(p));
                self.pending.len() - 1
            }
        }
    }

    /// Queues one window I/O as the commands of its segments (`(memory, length)` at
    /// consecutive device bytes from `offset`).
    fn push_io(&mut self, user_data: u64, dir: Dir, offset: u64, segments: &[(*mut u8, usize)], in_arena: bool) {
        self.queued += 1;
        let lba = 1usize << self.lba_shift;
        let len: usize = segments.iter().map(|s| s.1).sum();
        if offset % lba as u64 != 0 || segments.iter().any(|s| s.1 % lba != 0 || s.1 == 0) {
            self.ready.push((user_data, -libc::EINVAL));
            return;
        }
        let mut p = Pending { user_data, remaining: 0, len, errno: 0, bounces: Vec::new(), held: Vec::new() };
        let mut cmds = Vec::with_capacity(segments.len());
        let mut at = offset;
        for &(ptr, n) in segments {
            let addr = if ptr as usize % IO_ALIGN == 0 {
                ptr as u64
            } else {
                let Some(mut b) = AlignedBuf::try_zeroed(n) else {
                    self.ready.push((user_data, -libc::ENOMEM));
                    return;
                };
                let a = b.as_mut_ptr() as u64;
                match dir {
                    Dir::Read => p.bounces.push((b, ptr)),
                    Dir::Write => {
                        // SAFETY: the job's segment is valid for n bytes until the item finishes.
                        b.copy_from_slice(unsafe { std::slice::from_raw_parts(ptr, n) });
                        p.held.push(b);
                    }
                }
                a
            };
            for c in nvme::chunks(at, addr, n, self.max_transfer) {
                cmds.push(NvmeCmd::rw(dir, self.nsid, self.lba_shift, c.offset, c.addr, c.len, self.fua));
            }
            at += n as u64;
        }
        p.remaining = cmds.len() as u32;
        let id = self.new_id(p);
        let fixed = in_arena && self.fixed_buffers;
        for (k, cmd) in cmds.into_iter().enumerate() {
            if let Err(e) = self.push_cmd(cmd, id, fixed) {
                // Commands already in the ring will complete; the rest never will.
                let pending = self.pending[id].as_mut().expect("just added");
                pending.remaining = k as u32;
                pending.errno = e.raw_os_error().unwrap_or(libc::EIO);
                self.push_error.get_or_insert(e);
                if k == 0 {
                    self.pending[id] = None;
                    self.free.push(id);
                    self.ready.push((user_data, -libc::EIO));
                }
                return;
            }
        }
    }

    fn submit(&mut self, wait: usize) -> io::Result<usize> {
        if let Some(e) = self.push_error.take() {
            return Err(e);
        }
        // Completions already waiting (refused I/Os) count towards the wait; a split I/O
        // has several commands, so waiting for `wait` commands may finish fewer I/Os, and the
        // window simply waits again.
        let want = wait.saturating_sub(self.ready.len()).min(self.in_flight_cmds());
        self.ring.submit_and_wait(want)?;
        Ok(std::mem::take(&mut self.queued))
    }

    /// Commands submitted or queued and not yet reaped.
    fn in_flight_cmds(&self) -> usize {
        self.pending.iter().flatten().map(|p| p.remaining as usize).sum()
    }

    fn reap_into(&mut self, out: &mut Vec<(u64, i32)>) {
        out.append(&mut self.ready);
        let done: Vec<(u64, i32)> = self.ring.completion().map(|c| (c.user_data(), c.result())).collect();
        for (id, res) in done {
            let id = id as usize;
            let Some(p) = self.pending.get_mut(id).and_then(|p| p.as_mut()) else { continue };
            if let Some(e) = completion_error(res) {
                if p.errno == 0 {
                    p.errno = e.raw_os_error().unwrap_or(libc::EIO);
                }
            }
            p.remaining -= 1;
            if p.remaining > 0 {
                continue;
            }
            let p = self.pending[id].take().expect("checked above");
            self.free.push(id);
            if p.errno == 0 {
                for (b, dest) in &p.bounces {
                    // SAFETY: the job's segment is valid for b.len() bytes until the item finishes,
                    // which the window does only after this completion.
                    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), *dest, b.len()) };
                }
            }
            out.push((p.user_data, if p.errno == 0 { p.len as i32 } else { -p.errno }));
        }
    }
}

impl ReadQueue for CmdQueue {
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
        let seg = (self.buffer_mut(buf).as_mut_ptr(), self.record_len);
        self.push_io(user_data, Dir::Read, offset, &[seg], true);
    }
    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize> {
        self.submit(wait)
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        self.reap_into(out)
    }
    fn poison(&mut self) {
        self.poisoned = true;
    }
}

impl OpQueue for CmdQueue {
    fn push_op(&mut self, user_data: u64, op: &IoOp) {
        let dir = match op.kind {
            IoKind::Read => Dir::Read,
            IoKind::Write => Dir::Write,
        };
        match op.tail {
            None => self.push_io(user_data, dir, op.offset, &[(op.ptr, op.len)], false),
            Some(tail) => self.push_io(user_data, dir, op.offset, &[(op.ptr, op.len), tail], false),
        }
    }
    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize> {
        self.submit(wait)
    }
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        self.reap_into(out)
    }
    fn poison(&mut self) {
        self.poisoned = true;
    }
}

/// These run for real only in `make nvme-test`'s QEMU guest, where RB_TEST_NVME_CHAR names an
/// NVMe namespace they may overwrite; elsewhere each says so and returns.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Access, Device, OpenMode};
    use crate::engine::{FaultTable, ReadCtx, ReadPlan};

    fn guest_namespace() -> Option<Device> {
        let Some(path) = std::env::var_os("RB_TEST_NVME_CHAR") else {
            eprintln!("skipped: RB_TEST_NVME_CHAR is not set (make nvme-test runs this in a QEMU guest)");
            return None;
        };
        let mode = OpenMode { access: Access::ReadWrite, passthrough: true, ..Default::default() };
        Some(Device::open(std::path::Path::new(&path), mode).expect("the guest's namespace opens for passthrough"))
    }

    /// Writes 300 blocks of 4096 bytes, each starting with its index.
    fn pattern(dev: &Device) {
        let mut bytes = AlignedBuf::zeroed(300 * 4096);
        for (i, chunk) in bytes.chunks_mut(4096).enumerate() {
            chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
        }
        dev.write_at(&bytes, 0).unwrap();
        dev.sync().unwrap();
    }

    /// Plain commands (what runs when the kernel refuses fixed buffers for uring_cmd) and fixed
    /// buffers read the same bytes through the window.
    #[test]
    fn nvme_guest_plain_and_fixed_commands_agree() {
        let Some(dev) = guest_namespace() else { return };
        pattern(&dev);
        let faults = FaultTable::default();
        let ctx = ReadCtx { dev: &dev, faults: &faults, plan: ReadPlan { base: 0, stride: 4096, len: 4096 } };
        let slots: Vec<SlotIndex> = (0..300).rev().map(SlotIndex).collect();
        for register in [false, true] {
            let mut q = CmdQueue::new(dev.passthrough().unwrap(), 16, 4096, register).unwrap();
            q.probe().unwrap();
            assert_eq!(q.fixed_buffers, register, "the guest's kernel (6.1) takes fixed buffers with uring_cmd");
            let mut got = vec![u64::MAX; slots.len()];
            let mut stats = BatchStats::default();
            window::drive(&mut q, ctx, &slots, &mut |i, r| got[i] = u64::from_le_bytes(r.unwrap()[..8].try_into().unwrap()), &mut stats);
            assert!(got.iter().zip(&slots).all(|(&g, s)| g == s.0), "register={register}");
            assert_eq!((stats.max_in_flight, stats.fallbacks), (16, 0));
        }
    }

    /// Unaligned memory never reaches the driver: the synchronous path and the queue bounce it,
    /// and the bytes are right both ways (a transfer larger than one command included).
    #[test]
    fn nvme_guest_unaligned_memory_is_bounced() {
        let Some(dev) = guest_namespace() else { return };
        pattern(&dev);
        let pt = dev.passthrough().unwrap();
        assert_eq!(pt.namespace().lba_bytes(), 4096);
        let len = 2 * pt.namespace().max_transfer as usize + 4096;
        let mut raw = vec![0u8; len + 1];
        let unaligned = &mut raw[1..];
        assert_ne!(unaligned.as_ptr() as usize % IO_ALIGN, 0);
        dev.read_at(unaligned, 4096).unwrap();
        assert_eq!(u64::from_le_bytes(unaligned[..8].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(unaligned[4096..4104].try_into().unwrap()), 2);
        unaligned.iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        dev.write_at(unaligned, 8192).unwrap();
        let mut back = AlignedBuf::zeroed(len);
        dev.read_at(&mut back, 8192).unwrap();
        assert!(back.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "an unaligned write landed intact");

        // The queue: an unaligned read op completes in full with the bytes at its offset.
        let mut q = CmdQueue::new(pt, 8, 4096, true).unwrap();
        let mut raw2 = vec![0u8; len + 1];
        let op = IoOp { kind: IoKind::Read, offset: 8192, ptr: raw2[1..].as_mut_ptr(), len, fixed: None, slot: SlotIndex(0), tail: None };
        q.push_op(7, &op);
        OpQueue::submit_and_wait(&mut q, 1).unwrap();
        let mut done = Vec::new();
        while done.is_empty() {
            OpQueue::reap(&mut q, &mut done);
            if done.is_empty() {
                OpQueue::submit_and_wait(&mut q, 1).unwrap();
            }
        }
        assert_eq!(done, [(7, len as i32)]);
        assert_eq!(&raw2[1..], &back[..]);
    }
}
