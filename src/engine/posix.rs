//! The POSIX engine: a serial pread loop, or a pool of worker threads kept
//! by the handle, each reading one contiguous range of the input.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use super::data::{self, DataCtx, DataJob};
use super::{BatchStats, Decoder, ReadCtx};
use crate::format::SlotIndex;
use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use crate::sync::{self, lock};

pub struct PosixEngine {
    pool: Option<WorkerPool>,
}

impl PosixEngine {
    /// A serial engine (`threads` <= 1) or a pool of `threads` workers. A thread the
    /// host refuses is [`Error::OutOfThreads`], with the workers already started joined.
    pub fn new(threads: usize) -> Result<PosixEngine> {
        let pool = if threads > 1 { Some(WorkerPool::new(threads)?) } else { None };
        Ok(PosixEngine { pool })
    }

    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.workers.len())
    }

    /// A data batch: serially, or items handed out one at a time to the pool's workers.
    pub(super) fn run_data(&self, ctx: DataCtx<'_>, job: &dyn DataJob) -> BatchStats {
        let Some(pool) = &self.pool else {
            return data::run_serial(ctx, job);
        };
        let next = AtomicUsize::new(0);
        let per_worker: Vec<Mutex<BatchStats>> = (0..pool.workers.len()).map(|_| Mutex::default()).collect();
        pool.run(&|worker| {
            let stats = data::run_worker(ctx, job, &next);
            *lock(&per_worker[worker]) = stats;
        });
        let mut total = BatchStats::default();
        for s in per_worker {
            total.merge(&sync::into_inner(s));
        }
        total.max_in_flight = pool.workers.len().min(job.items()) as u64;
        total
    }

    pub(super) fn read_slots<T: Send>(&self, ctx: ReadCtx<'_>, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let Some(pool) = &self.pool else {
            let mut stats = BatchStats { submit_calls: 1, max_in_flight: 1, ..Default::default() };
            let concurrency = Concurrency::default();
            read_range(ctx, slots, 0, out, decode, &mut stats, &concurrency);
            return stats;
        };
        let n = slots.len();
        let per = n.div_ceil(pool.workers.len());
        // One contiguous range of inputs and outputs per worker, each behind its own
        // (uncontended) lock so the shared job closure can hand out &mut access safely.
        let ranges: Vec<Mutex<Range<'_, T>>> = slots
            .chunks(per)
            .zip(out.chunks_mut(per))
            .enumerate()
            .map(|(i, (s, o))| Mutex::new((i * per, s, o, BatchStats { submit_calls: 1, ..Default::default() })))
            .collect();
        let concurrency = Concurrency::default();
        pool.run(&|worker| {
            if let Some(range) = ranges.get(worker) {
                let mut guard = lock(range);
                let (first, s, o, stats) = &mut *guard;
                read_range(ctx, s, *first, o, decode, stats, &concurrency);
            }
        });
        let mut total = BatchStats::default();
        for r in ranges {
            let (_, _, _, stats) = sync::into_inner(r);
            total.merge(&stats);
        }
        total.max_in_flight = concurrency.max.load(Ordering::Relaxed);
        total
    }
}

/// One worker's share: the index of its first input, its inputs, its outputs, its counters.
type Range<'a, T> = (usize, &'a [SlotIndex], &'a mut [T], BatchStats);

/// Counts reads in flight across workers, to report the real concurrency.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicU64,
}

fn read_range<T>(
    ctx: ReadCtx<'_>,
    slots: &[SlotIndex],
    first: usize,
    out: &mut [T],
    decode: &Decoder<'_, T>,
    stats: &mut BatchStats,
    concurrency: &Concurrency,
) {
    let mut buf = AlignedBuf::zeroed(ctx.plan.len);
    // A submit fault makes this range's batched reads fail as a whole.
    let submit_failed = ctx.faults.take_submit().is_some();
    for (i, (&slot, o)) in slots.iter().zip(out.iter_mut()).enumerate() {
        let now = concurrency.now.fetch_add(1, Ordering::Relaxed) + 1;
        concurrency.max.fetch_max(now as u64, Ordering::Relaxed);
        let mut r = if submit_failed { Err(0) } else { ctx.batched_pread(slot, &mut buf, stats) };
        if r.is_err() {
            r = ctx.sync_fallback(slot, &mut buf, stats);
        }
        concurrency.now.fetch_sub(1, Ordering::Relaxed);
        *o = decode(first + i, slot, r.map(|()| &buf[..]));
    }
}

/// A job borrowed for the duration of [`WorkerPool::run`], lifetime erased.
#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));
// SAFETY: the pointee is Sync, and run() keeps it alive until every worker is done with it.
unsafe impl Send for JobPtr {}

struct PoolState {
    job: Option<JobPtr>,
    epoch: u64,
    remaining: usize,
    shutdown: bool,
}

struct Shared {
    state: Mutex<PoolState>,
    work: Condvar,
    done: Condvar,
}

/// A fixed set of threads that all run one borrowed job at a time.
struct WorkerPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    /// One job at a time; concurrent callers wait here, without spinning.
    run_lock: Mutex<()>,
}

impl WorkerPool {
    /// Starts `threads` workers. If the host refuses one, the pool is dropped (which
    /// stops and joins the workers already started) and the error says which one failed.
    fn new(threads: usize) -> Result<WorkerPool> {
        let shared = Arc::new(Shared {
            state: Mutex::new(PoolState { job: None, epoch: 0, remaining: 0, shutdown: false }),
            work: Condvar::new(),
            done: Condvar::new(),
        });
        let mut pool = WorkerPool { shared, workers: Vec::with_capacity(threads), run_lock: Mutex::new(()) };
        for w in 0..threads {
            let shared = pool.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("rawblock-io-{w}"))
                .spawn(move || worker_loop(&shared, w));
            match spawned {
                Ok(handle) => pool.workers.push(handle),
                Err(source) => {
                    let what = format!("could not start POSIX engine thread {} of {threads}", w + 1);
                    drop(pool);
                    return Err(Error::OutOfThreads { what, source });
                }
            }
        }
        Ok(pool)
    }

    /// Runs `job(worker_index)` on every worker and returns when all are done.
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        let _one_at_a_time = lock(&self.run_lock);
        // SAFETY: only the lifetime is erased; this function does not return until
        // `remaining` is zero, i.e. every worker has finished calling the job.
        let job: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(job) };
        let mut st = lock(&self.shared.state);
        st.job = Some(JobPtr(job));
        st.epoch += 1;
        st.remaining = self.workers.len();
        self.shared.work.notify_all();
        while st.remaining > 0 {
            st = sync::wait(&self.shared.done, st);
        }
        st.job = None;
    }
}

fn worker_loop(shared: &Shared, worker: usize) {
    let mut seen = 0;
    loop {
        let job = {
            let mut st = lock(&shared.state);
            while !st.shutdown && st.epoch == seen {
                st = sync::wait(&shared.work, st);
            }
            if st.shutdown {
                return;
            }
            seen = st.epoch;
            st.job.expect("a job is set with every new epoch")
        };
        // SAFETY: run() keeps the job alive until this worker decrements `remaining` below.
        let f = unsafe { &*job.0 };
        // A panicking job must not kill the worker or leave run() waiting forever.
        let _ = panic::catch_unwind(AssertUnwindSafe(|| f(worker)));
        let mut st = lock(&shared.state);
        st.remaining -= 1;
        if st.remaining == 0 {
            shared.done.notify_all();
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        lock(&self.shared.state).shutdown = true;
        self.shared.work.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn pool_runs_every_worker_once_per_job_and_reuses_threads() {
        let pool = WorkerPool::new(4).unwrap();
        for round in 0..50 {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            pool.run(&|w| {
                hits[w].fetch_add(round + 1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == round + 1));
        }
    }

    #[test]
    fn panicking_job_does_not_hang_the_pool() {
        let pool = WorkerPool::new(3).unwrap();
        pool.run(&|w| {
            if w == 1 {
                panic!("injected");
            }
        });
        let count = AtomicUsize::new(0);
        pool.run(&|_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
