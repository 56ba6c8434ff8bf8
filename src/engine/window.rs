//! The queue-depth window: at most `depth` reads in flight, refilled as
//! completions arrive (never drained to zero between batches), results handed
//! over by input index whatever order they complete in.

use std::io;

use super::{BatchStats, ReadCtx, ReadResult};
use crate::format::SlotIndex;

/// An asynchronous read queue with `depth` buffers of the plan's length.
pub(crate) trait ReadQueue {
    fn depth(&self) -> usize;
    fn buffer(&self, buf: usize) -> &[u8];
    fn buffer_mut(&mut self, buf: usize) -> &mut [u8];
    /// Queues a read at `offset` into buffer `buf`; completes with `user_data`.
    fn push(&mut self, user_data: u64, offset: u64, buf: usize);
    /// Submits what is queued and waits for at least `wait` completions.
    /// Returns how many queued reads the kernel took.
    fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize>;
    /// Moves every ready completion `(user_data, result)` into `out`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>);
    /// Marks the queue unusable after a failed submit: reads may still be
    /// queued in it, so it must not be reused.
    fn poison(&mut self);
}

const BUF_BITS: u32 = 16;

fn tag(idx: usize, buf: usize) -> u64 {
    ((idx as u64) << BUF_BITS) | buf as u64
}

fn untag(user_data: u64) -> (usize, usize) {
    ((user_data >> BUF_BITS) as usize, (user_data & ((1 << BUF_BITS) - 1)) as usize)
}

/// How many completions to wait for per submit: enough to batch syscalls,
/// few enough that the window stays nearly full.
fn wait_batch(depth: usize) -> usize {
    (depth / 8).max(1)
}

/// The bookkeeping of one batch: which buffers are free, which input each busy
/// buffer serves, and how many reads are queued (pushed, not yet submitted) or in flight.
struct Window<'s> {
    slots: &'s [SlotIndex],
    free: Vec<usize>,
    /// The input index each buffer's read belongs to, while it is queued or in flight.
    owner: Vec<Option<usize>>,
    next: usize,
    queued: usize,
    in_flight: usize,
    /// EAGAIN/EINTR retries allowed for the whole batch before reads count as failed.
    retry_budget: u64,
}

/// Whether the batch goes on after a submit.
enum Submitted {
    Continue,
    /// The kernel refused the submit: every unreported read was served per slot.
    Abandoned,
}

/// Reads every slot through `q`, calling `done(i, result)` once per input index.
pub(crate) fn drive<Q: ReadQueue>(
    q: &mut Q,
    ctx: ReadCtx<'_>,
    slots: &[SlotIndex],
    done: &mut dyn FnMut(usize, ReadResult<'_>),
    stats: &mut BatchStats,
) {
    let depth = q.depth().min(slots.len());
    assert!(depth < (1 << BUF_BITS), "queue depth is clamped far below 2^16");
    let mut w = Window {
        slots,
        free: (0..depth).rev().collect(),
        owner: vec![None; depth],
        next: 0,
        queued: 0,
        in_flight: 0,
        retry_budget: slots.len() as u64 * 4 + 64,
    };
    let mut completions = Vec::with_capacity(depth);
    while w.next < slots.len() || w.in_flight > 0 || w.queued > 0 {
        if !w.free.is_empty() && w.next < slots.len() && ctx.faults.take_submit().is_some() {
            w.fail_one_submit(q, ctx, done, stats);
            continue;
        }
        w.refill(q, ctx);
        if let Submitted::Abandoned = w.submit(q, ctx, wait_batch(depth), done, stats) {
            return;
        }
        q.reap(&mut completions);
        for (user_data, res) in completions.drain(..) {
            w.complete(q, ctx, user_data, res, done, stats);
        }
    }
}

impl Window<'_> {
    /// Queues a read into every free buffer while inputs remain.
    fn refill<Q: ReadQueue>(&mut self, q: &mut Q, ctx: ReadCtx<'_>) {
        while self.next < self.slots.len() {
            let Some(buf) = self.free.pop() else { break };
            q.push(tag(self.next, buf), ctx.plan.offset(self.slots[self.next]), buf);
            self.owner[buf] = Some(self.next);
            self.queued += 1;
            self.next += 1;
        }
    }

    /// An injected submit fault: every read this submit would have carried goes per slot.
    fn fail_one_submit<Q: ReadQueue>(
        &mut self,
        q: &mut Q,
        ctx: ReadCtx<'_>,
        done: &mut dyn FnMut(usize, ReadResult<'_>),
        stats: &mut BatchStats,
    ) {
        let take = self.free.len().min(self.slots.len() - self.next);
        let buf = self.free[0];
        for (idx, &slot) in self.slots.iter().enumerate().skip(self.next).take(take) {
            let r = ctx.sync_fallback(slot, q.buffer_mut(buf), stats);
            done(idx, r.map(|_| q.buffer(buf)));
        }
        self.next += take;
    }

    /// Submits what is queued and waits for some completions.
    fn submit<Q: ReadQueue>(
        &mut self,
        q: &mut Q,
        ctx: ReadCtx<'_>,
        batch: usize,
        done: &mut dyn FnMut(usize, ReadResult<'_>),
        stats: &mut BatchStats,
    ) -> Submitted {
        let wait = (self.in_flight + self.queued).min(batch);
        match q.submit_and_wait(wait) {
            Ok(n) => {
                stats.submit_calls += 1;
                let n = n.min(self.queued);
                stats.reads_submitted += n as u64;
                self.in_flight += n;
                self.queued -= n;
                stats.max_in_flight = stats.max_in_flight.max(self.in_flight as u64);
                Submitted::Continue
            }
            Err(e) if is_transient(&e) && stats.retries < self.retry_budget => {
                stats.retries += 1;
                Submitted::Continue
            }
            Err(_) => {
                // The kernel refused the submit. Serve every read not yet reported per slot,
                // from a buffer the kernel never saw, and retire the queue: reads may still
                // sit in it or be in flight.
                q.poison();
                let mut spare = crate::aligned::AlignedBuf::zeroed(ctx.plan.len);
                let pending: Vec<usize> = self.owner.iter().flatten().copied().chain(self.next..self.slots.len()).collect();
                for idx in pending {
                    let r = ctx.sync_fallback(self.slots[idx], &mut spare, stats);
                    done(idx, r.map(|_| &spare[..]));
                }
                Submitted::Abandoned
            }
        }
    }

    /// One completion: hand the bytes over, retry EAGAIN/EINTR, or fall back to a per-slot read.
    fn complete<Q: ReadQueue>(
        &mut self,
        q: &mut Q,
        ctx: ReadCtx<'_>,
        user_data: u64,
        res: i32,
        done: &mut dyn FnMut(usize, ReadResult<'_>),
        stats: &mut BatchStats,
    ) {
        let (idx, buf) = untag(user_data);
        self.in_flight -= 1;
        self.owner[buf] = None;
        let slot = self.slots[idx];
        let res = match ctx.faults.batched_read(slot) {
            Some(errno) => -errno,
            None => res,
        };
        if res >= 0 && res as usize == ctx.plan.len {
            done(idx, Ok(q.buffer(buf)));
        } else if (res == -libc::EAGAIN || res == -libc::EINTR) && stats.retries < self.retry_budget {
            stats.retries += 1;
            self.owner[buf] = Some(idx);
            q.push(user_data, ctx.plan.offset(slot), buf);
            self.queued += 1;
            return;
        } else {
            let r = ctx.sync_fallback(slot, q.buffer_mut(buf), stats);
            done(idx, r.map(|_| q.buffer(buf)));
        }
        self.free.push(buf);
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN) | Some(libc::EBUSY))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{Device, OpenMode};
    use crate::engine::{FaultMode, FaultTable, ReadPlan};
    use std::collections::HashSet;

    const LEN: usize = 512;

    /// Completes reads in a pseudo-random order, filling each buffer with its offset.
    struct FakeQueue {
        depth: usize,
        total: usize,
        arena: Vec<u8>,
        queued: Vec<(u64, u64, usize)>,
        in_flight: Vec<(u64, u64, usize)>,
        ready: Vec<(u64, i32)>,
        rng: u64,
        completed: usize,
        max_in_flight: usize,
        /// In flight right after each submit, and what a full window would have been.
        windows: Vec<(usize, usize)>,
        fail_offsets: HashSet<u64>,
        eagain_once: HashSet<u64>,
        hard_fail_at_submit: Option<usize>,
        submits: usize,
        poisoned: bool,
    }

    impl FakeQueue {
        fn new(depth: usize, total: usize) -> FakeQueue {
            FakeQueue {
                depth,
                total,
                arena: vec![0; depth * LEN],
                queued: vec![],
                in_flight: vec![],
                ready: vec![],
                rng: 0x9E37_79B9_7F4A_7C15,
                completed: 0,
                max_in_flight: 0,
                windows: vec![],
                fail_offsets: HashSet::new(),
                eagain_once: HashSet::new(),
                hard_fail_at_submit: None,
                submits: 0,
                poisoned: false,
            }
        }
        fn next_rand(&mut self) -> usize {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng as usize
        }
    }

    impl ReadQueue for FakeQueue {
        fn depth(&self) -> usize {
            self.depth
        }
        fn buffer(&self, buf: usize) -> &[u8] {
            &self.arena[buf * LEN..(buf + 1) * LEN]
        }
        fn buffer_mut(&mut self, buf: usize) -> &mut [u8] {
            &mut self.arena[buf * LEN..(buf + 1) * LEN]
        }
        fn push(&mut self, user_data: u64, offset: u64, buf: usize) {
            assert!(self.queued.len() + self.in_flight.len() < self.depth, "more reads than the depth");
            self.queued.push((user_data, offset, buf));
        }
        fn submit_and_wait(&mut self, wait: usize) -> io::Result<usize> {
            self.submits += 1;
            if self.hard_fail_at_submit == Some(self.submits) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let n = self.queued.len();
            self.in_flight.append(&mut self.queued);
            self.max_in_flight = self.max_in_flight.max(self.in_flight.len());
            self.windows.push((self.in_flight.len(), self.depth.min(self.total - self.completed)));
            while self.ready.len() < wait {
                let i = self.next_rand() % self.in_flight.len();
                let (ud, off, buf) = self.in_flight.swap_remove(i);
                let res = if self.fail_offsets.contains(&off) {
                    -libc::EIO
                } else if self.eagain_once.remove(&off) {
                    -libc::EAGAIN
                } else {
                    self.buffer_mut(buf)[..8].copy_from_slice(&off.to_le_bytes());
                    self.completed += 1;
                    LEN as i32
                };
                if res < 0 && res != -libc::EAGAIN {
                    self.completed += 1;
                }
                self.ready.push((ud, res));
            }
            Ok(n)
        }
        fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
            out.append(&mut self.ready);
        }
        fn poison(&mut self) {
            self.poisoned = true;
        }
    }

    /// A file whose record at every offset starts with that offset, for the fallback path.
    fn fixture(slots: u64) -> Device {
        let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/window"));
        std::fs::create_dir_all(&dir).unwrap();
        // Unique per call: tests running at once may ask for the same slot count.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("fixture-{}-{slots}-{n}.img", std::process::id()));
        let mut bytes = vec![0u8; slots as usize * LEN];
        for s in 0..slots {
            let off = s * LEN as u64;
            bytes[off as usize..off as usize + 8].copy_from_slice(&off.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let dev = Device::open(&path, OpenMode { buffered: true, ..Default::default() }).unwrap();
        std::fs::remove_file(&path).unwrap();
        dev
    }

    struct Run {
        results: Vec<Option<Result<u64, i32>>>,
        stats: BatchStats,
    }

    fn run(q: &mut FakeQueue, dev: &Device, faults: &FaultTable, slots: &[SlotIndex]) -> Run {
        let ctx = ReadCtx { dev, faults, plan: ReadPlan { base: 0, stride: LEN as u64, len: LEN } };
        let mut results = vec![None; slots.len()];
        let mut stats = BatchStats::default();
        drive(
            q,
            ctx,
            slots,
            &mut |idx, r| {
                assert!(results[idx].is_none(), "index {idx} reported twice");
                results[idx] = Some(r.map(|b| u64::from_le_bytes(b[..8].try_into().unwrap())));
            },
            &mut stats,
        );
        Run { results, stats }
    }

    fn shuffled_slots(n: u64) -> Vec<SlotIndex> {
        (0..n).map(|i| SlotIndex((i * 7919) % n)).collect()
    }

    #[test]
    fn window_is_bounded_full_and_ordered() {
        let slots = shuffled_slots(1000);
        let dev = fixture(1000);
        let mut q = FakeQueue::new(8, slots.len());
        let r = run(&mut q, &dev, &FaultTable::default(), &slots);
        for (i, res) in r.results.iter().enumerate() {
            assert_eq!(*res, Some(Ok(slots[i].0 * LEN as u64)), "input {i}");
        }
        assert_eq!(q.max_in_flight, 8);
        assert_eq!(r.stats.max_in_flight, 8);
        assert_eq!(r.stats.reads_submitted, 1000);
        assert_eq!((r.stats.fallbacks, r.stats.retries), (0, 0));
        for (i, &(in_flight, full)) in q.windows.iter().enumerate() {
            assert_eq!(in_flight, full, "submit {i}: the window was not kept full");
        }
    }

    #[test]
    fn failed_completion_falls_back_for_that_slot_only() {
        let slots = shuffled_slots(300);
        let dev = fixture(300);
        let mut q = FakeQueue::new(16, slots.len());
        q.fail_offsets.insert(123 * LEN as u64);
        let r = run(&mut q, &dev, &FaultTable::default(), &slots);
        assert!(r.results.iter().enumerate().all(|(i, x)| *x == Some(Ok(slots[i].0 * LEN as u64))));
        assert_eq!((r.stats.fallbacks, r.stats.failed), (1, 0));
    }

    #[test]
    fn persistent_fault_fails_exactly_one_slot() {
        let slots = shuffled_slots(1000);
        let dev = fixture(1000);
        let faults = FaultTable::default();
        faults.inject(&[SlotIndex(500)], libc::EIO, FaultMode::Persistent);
        let r = run(&mut FakeQueue::new(8, slots.len()), &dev, &faults, &slots);
        for (i, res) in r.results.iter().enumerate() {
            let want = if slots[i] == SlotIndex(500) { Err(libc::EIO) } else { Ok(slots[i].0 * LEN as u64) };
            assert_eq!(*res, Some(want), "input {i}");
        }
        assert_eq!((r.stats.fallbacks, r.stats.failed), (1, 1));
    }

    #[test]
    fn eagain_is_retried_not_reported() {
        let slots = shuffled_slots(100);
        let dev = fixture(100);
        let mut q = FakeQueue::new(8, slots.len());
        q.eagain_once.insert(42 * LEN as u64);
        let r = run(&mut q, &dev, &FaultTable::default(), &slots);
        assert!(r.results.iter().enumerate().all(|(i, x)| *x == Some(Ok(slots[i].0 * LEN as u64))));
        assert_eq!((r.stats.retries, r.stats.fallbacks), (1, 0));
    }

    #[test]
    fn injected_submit_fault_serves_that_window_per_slot() {
        let slots = shuffled_slots(100);
        let dev = fixture(100);
        let faults = FaultTable::default();
        faults.inject(&[], libc::EIO, FaultMode::Submit);
        let r = run(&mut FakeQueue::new(8, slots.len()), &dev, &faults, &slots);
        assert!(r.results.iter().enumerate().all(|(i, x)| *x == Some(Ok(slots[i].0 * LEN as u64))));
        assert_eq!((r.stats.fallbacks, r.stats.failed), (8, 0));
        assert_eq!(r.stats.reads_submitted, 92);
    }

    #[test]
    fn refused_submit_reports_everything_once_and_poisons() {
        let slots = shuffled_slots(200);
        let dev = fixture(200);
        let mut q = FakeQueue::new(8, slots.len());
        q.hard_fail_at_submit = Some(5);
        let r = run(&mut q, &dev, &FaultTable::default(), &slots);
        assert!(r.results.iter().enumerate().all(|(i, x)| *x == Some(Ok(slots[i].0 * LEN as u64))));
        assert!(q.poisoned);
        assert!(r.stats.fallbacks > 0);
    }
}
