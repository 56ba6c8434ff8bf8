//! The queue-depth window for data batches: items are prepared into free
//! window slots and their I/Os submitted while at most `depth` are in flight;
//! as completions arrive, finished items free their slot and the next item
//! takes it, in the same `io_uring_enter` that waits (never drained between
//! items). Failed I/Os are retried on their own, synchronously, before the
//! item is finished, so one item's failure never touches another's.

use std::io;

use super::data::{DataCtx, DataJob, IoKind, IoOp, OpResult, Ops, Scratch, MAX_OPS_PER_ITEM};
use super::BatchStats;

/// An asynchronous queue of data I/Os (io_uring, or a fake in tests).
pub(crate) trait OpQueue {
    /// Queues `op`; it completes with `user_data`.
    fn push_op(&mut self, user_data: u64, op: &IoOp);
    /// Submits what is queued and waits for at least `wait` completions; returns how many were taken.
    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize>;
    /// Moves every ready completion `(user_data, result)` into `out`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>);
    /// The queue must not be reused (a submit failed as a whole).
    fn poison(&mut self);
}

const OP_BITS: u32 = 2;

/// Distinct tags a window of `depth` uses (queues size per-tag tables with it).
pub(crate) fn tags(depth: usize) -> usize {
    depth.max(MAX_OPS_PER_ITEM) << OP_BITS
}

fn tag(slot: usize, op: usize) -> u64 {
    ((slot as u64) << OP_BITS) | op as u64
}

fn untag(user_data: u64) -> (usize, usize) {
    ((user_data >> OP_BITS) as usize, (user_data & ((1 << OP_BITS) - 1)) as usize)
}

/// One window slot: an item between prepare and finish.
#[derive(Default)]
struct Slot {
    item: Option<usize>,
    ops: Ops,
    results: [Option<OpResult>; MAX_OPS_PER_ITEM],
    /// I/Os submitted or queued and not yet completed.
    pending: usize,
    scratch: Scratch,
}

struct Window<'j> {
    ctx: DataCtx<'j>,
    job: &'j dyn DataJob,
    depth: usize,
    slots: Vec<Slot>,
    free: Vec<usize>,
    next: usize,
    /// I/Os pushed but not yet taken by a submit, and taken but not completed.
    queued: usize,
    in_flight: usize,
    staged: Option<usize>,
    retry_budget: u64,
}

/// Runs every item of `job` through `q` with at most `depth` I/Os in flight.
pub(crate) fn drive<Q: OpQueue>(q: &mut Q, ctx: DataCtx<'_>, job: &dyn DataJob, depth: usize) -> BatchStats {
    let depth = depth.max(MAX_OPS_PER_ITEM);
    let mut stats = BatchStats::default();
    let mut w = Window {
        ctx,
        job,
        depth,
        slots: (0..depth).map(|_| Slot::default()).collect(),
        free: (0..depth).rev().collect(),
        next: 0,
        queued: 0,
        in_flight: 0,
        staged: None,
        retry_budget: job.items() as u64 * 4 + 64,
    };
    let mut completions = Vec::with_capacity(depth);
    loop {
        w.refill(q, &mut stats);
        if w.queued + w.in_flight == 0 {
            debug_assert!(w.next >= job.items() && w.staged.is_none());
            return stats;
        }
        let wait = (w.in_flight + w.queued).min((depth / 8).max(1));
        match q.submit_and_wait(wait) {
            Ok(n) => {
                stats.submit_calls += 1;
                let n = n.min(w.queued);
                stats.reads_submitted += n as u64;
                w.queued -= n;
                w.in_flight += n;
                stats.max_in_flight = stats.max_in_flight.max(w.in_flight as u64);
            }
            Err(e) if is_transient(&e) && stats.retries < w.retry_budget => stats.retries += 1,
            Err(_) => {
                q.poison();
                w.abandon(q, &mut completions, &mut stats);
                return stats;
            }
        }
        q.reap(&mut completions);
        for (user_data, res) in completions.drain(..) {
            w.complete(q, user_data, res, &mut stats);
        }
    }
}

/// What a completion means for its op: done in full, or an errno (a short transfer is EIO).
/// A failed op is retried on its own, synchronously, when its item ends.
fn outcome(op: &IoOp, res: i32) -> OpResult {
    if res >= 0 && res as usize == op.total_len() {
        Ok(())
    } else {
        Err(if res < 0 { -res } else { libc::EIO })
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY))
}

impl Window<'_> {
    /// Prepares items into free slots and queues their I/Os while they fit in the window.
    fn refill<Q: OpQueue>(&mut self, q: &mut Q, stats: &mut BatchStats) {
        loop {
            let s = match self.staged {
                Some(s) => s,
                None => {
                    if self.next >= self.job.items() {
                        return;
                    }
                    let Some(s) = self.free.pop() else { return };
                    let item = self.next;
                    self.next += 1;
                    let slot = &mut self.slots[s];
                    slot.ops = self.job.prepare(item, &mut slot.scratch);
                    slot.item = Some(item);
                    // Nothing of the slot's previous item may count for this one.
                    slot.results = [None; MAX_OPS_PER_ITEM];
                    if slot.ops.is_empty() {
                        self.finish(s, stats);
                        continue;
                    }
                    s
                }
            };
            let n = self.slots[s].ops.len();
            if self.queued + self.in_flight + n > self.depth && self.queued + self.in_flight > 0 {
                self.staged = Some(s);
                return;
            }
            self.staged = None;
            let slot = &mut self.slots[s];
            slot.pending = n;
            slot.results = [None; MAX_OPS_PER_ITEM];
            for k in 0..n {
                q.push_op(tag(s, k), &slot.ops.get(k));
            }
            self.queued += n;
        }
    }

    fn complete<Q: OpQueue>(&mut self, q: &mut Q, user_data: u64, res: i32, stats: &mut BatchStats) {
        let (s, k) = untag(user_data);
        self.in_flight -= 1;
        let op = self.slots[s].ops.get(k);
        let res = self.with_faults(&op, res);
        if (res == -libc::EAGAIN || res == -libc::EINTR) && stats.retries < self.retry_budget {
            stats.retries += 1;
            q.push_op(user_data, &op);
            self.queued += 1;
            return;
        }
        let outcome = outcome(&op, res);
        let slot = &mut self.slots[s];
        slot.results[k] = Some(outcome);
        slot.pending -= 1;
        if slot.pending == 0 {
            self.finish(s, stats);
        }
    }

    /// Retries the item's failed I/Os one by one, hands the results over, frees the slot.
    fn finish(&mut self, s: usize, stats: &mut BatchStats) {
        let slot = &mut self.slots[s];
        let n = slot.ops.len();
        let mut results = [Ok(()); MAX_OPS_PER_ITEM];
        for (k, r) in results.iter_mut().enumerate().take(n) {
            *r = match slot.results[k] {
                Some(Ok(())) => Ok(()),
                _ => self.ctx.fallback(&slot.ops.get(k), stats),
            };
        }
        let item = slot.item.take().expect("a busy slot has an item");
        self.job.finish(item, &results[..n], &slot.scratch);
        slot.ops = Ops::none();
        self.free.push(s);
    }

    /// A completion's result with an injected fault applied (reads only).
    fn with_faults(&self, op: &IoOp, res: i32) -> i32 {
        let injected = match op.kind {
            IoKind::Read => self.ctx.faults.batched_read(op.slot),
            IoKind::Write => None,
        };
        injected.map_or(res, |errno| -errno)
    }

    /// After a refused submit: wait until the kernel has completed every I/O it took, then
    /// serve every unfinished item synchronously. The queue is never reused.
    ///
    /// An I/O the kernel took reads into or writes from its item's memory (the caller's,
    /// or a window slot's scratch) until it completes, so nothing is finished or freed
    /// before: this waits as long as that takes. Queued I/Os a later submit takes join
    /// those in flight; ones it never takes are done synchronously like the rest.
    fn abandon<Q: OpQueue>(&mut self, q: &mut Q, completions: &mut Vec<(u64, i32)>, stats: &mut BatchStats) {
        let mut refusals = 0u32;
        while self.in_flight > 0 {
            match q.submit_and_wait(1) {
                Ok(n) => {
                    let n = n.min(self.queued);
                    self.queued -= n;
                    self.in_flight += n;
                }
                Err(_) => {
                    refusals += 1;
                    if refusals > 16 {
                        // The ring refuses to wait: poll for completions rather than return.
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                }
            }
            q.reap(completions);
            for (user_data, res) in completions.drain(..) {
                let (s, k) = untag(user_data);
                self.in_flight -= 1;
                let op = self.slots[s].ops.get(k);
                let res = self.with_faults(&op, res);
                let slot = &mut self.slots[s];
                slot.results[k] = Some(outcome(&op, res));
                slot.pending = slot.pending.saturating_sub(1);
            }
        }
        // Every item that is not finished: its failed or never-issued I/Os go per op.
        for s in 0..self.slots.len() {
            if self.slots[s].item.is_some() {
                self.finish(s, stats);
            }
        }
        while self.next < self.job.items() {
            let item = self.next;
            self.next += 1;
            let mut scratch = Scratch::default();
            let ops = self.job.prepare(item, &mut scratch);
            let mut results = [Ok(()); MAX_OPS_PER_ITEM];
            for (k, r) in results.iter_mut().enumerate().take(ops.len()) {
                *r = self.ctx.fallback(&ops.get(k), stats);
            }
            self.job.finish(item, &results[..ops.len()], &scratch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aligned::AlignedBuf;
    use crate::device::{Access, Device, OpenMode};
    use crate::engine::FaultTable;
    use crate::format::SlotIndex;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Completes pushed I/Os by really doing them, in a scrambled order, and records the window.
    struct FakeQueue<'d> {
        dev: &'d Device,
        queued: Vec<(u64, IoOp)>,
        in_flight: VecDeque<(u64, IoOp)>,
        max_in_flight: usize,
        fail_offsets: Vec<u64>,
        /// The n-th submit is refused as a whole (nothing taken).
        refuse_submit: Option<usize>,
        submits: usize,
    }

    impl<'d> FakeQueue<'d> {
        fn new(dev: &'d Device) -> Self {
            FakeQueue {
                dev,
                queued: Vec::new(),
                in_flight: VecDeque::new(),
                max_in_flight: 0,
                fail_offsets: Vec::new(),
                refuse_submit: None,
                submits: 0,
            }
        }
    }

    /// A read-only device of 200 blocks of 4 KiB, block i filled with byte i (its file already unlinked).
    fn numbered_blocks(name: &str) -> Device {
        let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/data-window"));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}-{}.img", std::process::id()));
        let bytes: Vec<u8> = (0..200 * 4096).map(|i| (i / 4096) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let dev = Device::open(&path, OpenMode { access: Access::ReadOnly, buffered: true, ..Default::default() }).unwrap();
        std::fs::remove_file(&path).unwrap();
        dev
    }

    impl OpQueue for FakeQueue<'_> {
        fn push_op(&mut self, user_data: u64, op: &IoOp) {
            self.queued.push((user_data, *op));
        }
        fn submit_and_wait(&mut self, _wait: usize) -> io::Result<usize> {
            self.submits += 1;
            if self.refuse_submit == Some(self.submits) {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            let n = self.queued.len();
            for (i, q) in self.queued.drain(..).enumerate() {
                if i % 2 == 0 {
                    self.in_flight.push_back(q);
                } else {
                    self.in_flight.push_front(q);
                }
            }
            self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
            Ok(n)
        }
        fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
            if let Some((ud, op)) = self.in_flight.pop_front() {
                let res = if self.fail_offsets.contains(&op.offset) {
                    -libc::EIO
                } else {
                    let mut stats = BatchStats::default();
                    match super::super::data::run_sync(self.dev, &op, &mut stats) {
                        Ok(()) => op.len as i32,
                        Err(e) => -e,
                    }
                };
                out.push((ud, res));
            }
        }
        fn poison(&mut self) {}
    }

    /// Reads 4 KiB blocks i (two ops per item: both halves) into per-item buffers.
    struct ReadBlocks {
        bufs: Vec<Mutex<AlignedBuf>>,
        done: Vec<Mutex<Option<Vec<OpResult>>>>,
    }

    impl ReadBlocks {
        /// A job reading each of the 200 blocks into its own buffer.
        fn new() -> Self {
            ReadBlocks {
                bufs: (0..200).map(|_| Mutex::new(AlignedBuf::zeroed(4096))).collect(),
                done: (0..200).map(|_| Mutex::new(None)).collect(),
            }
        }
    }

    impl DataJob for ReadBlocks {
        fn items(&self) -> usize {
            self.bufs.len()
        }
        fn prepare(&self, i: usize, _scratch: &mut Scratch) -> Ops {
            let ptr = self.bufs[i].lock().unwrap().as_mut_ptr();
            let mut ops = Ops::none();
            for half in 0..2u64 {
                // SAFETY: in-bounds offsets of a 4096-byte buffer that outlives the batch.
                let ptr = unsafe { ptr.add(half as usize * 2048) };
                let op = IoOp { kind: IoKind::Read, offset: i as u64 * 4096 + half * 2048, ptr, len: 2048, fixed: None, slot: SlotIndex(i as u64), tail: None };
                ops.push(op);
            }
            ops
        }
        fn finish(&self, i: usize, results: &[OpResult], _scratch: &Scratch) {
            *self.done[i].lock().unwrap() = Some(results.to_vec());
        }
    }

    #[test]
    fn every_item_once_window_bounded_failures_isolated() {
        let dev = numbered_blocks("blocks");
        let job = ReadBlocks::new();
        let faults = FaultTable::default();
        let mut q = FakeQueue { fail_offsets: vec![7 * 4096], ..FakeQueue::new(&dev) };
        let stats = drive(&mut q, DataCtx { dev: &dev, faults: &faults }, &job, 16);
        assert!(q.max_in_flight <= 16 && q.max_in_flight >= 14, "window {}", q.max_in_flight);
        for i in 0..200 {
            assert_eq!(job.done[i].lock().unwrap().as_deref(), Some(&[Ok(()), Ok(())][..]), "item {i}");
            assert!(job.bufs[i].lock().unwrap().iter().all(|&b| b == i as u8), "item {i} bytes");
        }
        assert_eq!((stats.fallbacks, stats.failed), (1, 0), "the failed half was retried on its own");
    }

    /// A submit refused as a whole mid-batch: what the kernel took completes first, every item
    /// is finished exactly once with its own bytes, none takes a result of a slot's earlier item.
    #[test]
    fn a_refused_submit_finishes_every_item_once_after_what_is_in_flight() {
        let dev = numbered_blocks("refused");
        for refuse_at in [2, 5, 9] {
            let job = ReadBlocks::new();
            let faults = FaultTable::default();
            let mut q = FakeQueue { refuse_submit: Some(refuse_at), ..FakeQueue::new(&dev) };
            drive(&mut q, DataCtx { dev: &dev, faults: &faults }, &job, 16);
            assert!(q.in_flight.is_empty(), "refused at {refuse_at}: I/Os left in flight");
            for i in 0..200 {
                assert_eq!(job.done[i].lock().unwrap().as_deref(), Some(&[Ok(()), Ok(())][..]), "refused at {refuse_at}: item {i}");
                assert!(job.bufs[i].lock().unwrap().iter().all(|&b| b == i as u8), "refused at {refuse_at}: item {i} bytes");
            }
        }
    }
}
