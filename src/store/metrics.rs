//! Per-handle counters and latency histograms of the data path.
//!
//! The public data calls (`get`, `put`, `delete` and their batched forms) are
//! defined here as thin wrappers: each times the call, runs the unmetered body
//! in `data.rs` or `batch.rs`, and records its outcome. Counters are relaxed
//! atomics; a snapshot taken while calls run may be a few operations apart
//! between fields, never torn within one.
//!
//! What counts:
//! - `gets`: lookups that reached the index: hits + misses + gets that failed
//!   after the lookup (corrupt, I/O error, buffer too small, busy). Calls
//!   refused before it (bad argument, not recovered) count nowhere.
//! - `puts`, `deletes`: values stored, keys removed (successful calls and items).
//! - `bytes_read`, `bytes_written`: value bytes returned by hits, stored by puts.
//! - `corrupt`, `io_errors`: data calls and items that answered Corrupt or Io.
//! - `evictions`: entries the eviction policy took out of the index (`evict.rs`
//!   reports each batch through [`Store::record_evictions`]).
//! - Latency: `get` and `put` time single calls (every counted get; puts that
//!   stored or failed with an I/O error); `get_many` and `put_many` time whole
//!   batched calls, one sample a call, so a batch's items are not mixed with
//!   single calls.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use super::Store;
use crate::error::{Error, Result};

/// Sub-buckets per power of two: 2^6 = 64, so a reported percentile is within 1/64
/// (1.6%) above the true value: two significant digits, like HdrHistogram's.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values from 2^40 ns (18 minutes) up land in the last bucket.
const MAX_VALUE: u64 = (1 << 40) - 1;
const BUCKETS: usize = bucket_of(MAX_VALUE) + 1;

/// The bucket of `v`: exact below 2 * SUB, then SUB buckets per power of two.
const fn bucket_of(v: u64) -> usize {
    let v = if v > MAX_VALUE { MAX_VALUE } else { v };
    if v < 2 * SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros() - SUB_BITS;
    ((exp as u64) * SUB + (v >> exp)) as usize
}

/// The largest value that lands in bucket `i`.
fn bucket_high(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let exp = i / SUB - 1;
    let mantissa = i % SUB + SUB;
    ((mantissa + 1) << exp) - 1
}

/// A log-linear histogram of nanoseconds, recorded from many threads at once.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    max: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(), max: AtomicU64::new(0) }
    }
}

/// A histogram's count, percentiles and maximum, in nanoseconds (all 0 when empty).
/// A percentile is the largest value of the bucket holding that rank (at most 1/64
/// above the true value), never above the maximum recorded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Latency {
    pub count: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

impl Histogram {
    pub fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Relaxed);
        // A plain load first: most samples are below the maximum, and a read shares the cache line.
        if ns > self.max.load(Relaxed) {
            self.max.fetch_max(ns, Relaxed);
        }
    }

    pub fn summary(&self) -> Latency {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return Latency::default();
        }
        let max = self.max.load(Relaxed);
        // The value at rank ceil(count * num / den), 1-based.
        let at = |num: u64, den: u64| {
            let rank = ((count as u128 * num as u128).div_ceil(den as u128) as u64).max(1);
            let mut seen = 0;
            for (i, &c) in counts.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return bucket_high(i).min(max);
                }
            }
            max
        };
        Latency { count, p50_ns: at(50, 100), p99_ns: at(99, 100), p999_ns: at(999, 1000), max_ns: max }
    }

    fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Relaxed);
        }
        self.max.store(0, Relaxed);
    }
}

/// The handle's counters; see the module documentation for what each counts.
#[derive(Default)]
pub struct Metrics {
    gets: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    puts: AtomicU64,
    deletes: AtomicU64,
    evictions: AtomicU64,
    bytes_read: AtomicU64,
    bytes_written: AtomicU64,
    corrupt: AtomicU64,
    io_errors: AtomicU64,
    get: Histogram,
    put: Histogram,
    get_many: Histogram,
    put_many: Histogram,
}

/// A snapshot of [`Metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub puts: u64,
    pub deletes: u64,
    pub evictions: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub corrupt: u64,
    pub io_errors: u64,
    pub get: Latency,
    pub put: Latency,
    pub get_many: Latency,
    pub put_many: Latency,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Relaxed);
}

fn elapsed_ns(t: Instant) -> u64 {
    t.elapsed().as_nanos().min(u64::MAX as u128) as u64
}

impl Metrics {
    /// Counts one get's outcome; whether it counted (reached the index).
    fn get_done(&self, r: &Result<usize>) -> bool {
        match r {
            Ok(n) => {
                bump(&self.hits, 1);
                bump(&self.bytes_read, *n as u64);
            }
            Err(Error::NotFound) => bump(&self.misses, 1),
            Err(Error::Corrupt(_)) => bump(&self.corrupt, 1),
            Err(Error::Io { .. }) => bump(&self.io_errors, 1),
            Err(Error::BufferTooSmall { .. } | Error::Busy(_)) => {}
            Err(_) => return false,
        }
        bump(&self.gets, 1);
        true
    }

    /// Counts one put's outcome; whether it reached the device (stored, or an I/O error).
    fn put_done(&self, r: &Result<()>, value_len: usize) -> bool {
        match r {
            Ok(()) => {
                bump(&self.puts, 1);
                bump(&self.bytes_written, value_len as u64);
                true
            }
            Err(Error::Io { .. }) => {
                bump(&self.io_errors, 1);
                true
            }
            Err(Error::Corrupt(_)) => {
                bump(&self.corrupt, 1);
                false
            }
            Err(_) => false,
        }
    }

    fn delete_done(&self, r: &Result<()>) {
        match r {
            Ok(()) => bump(&self.deletes, 1),
            Err(Error::Io { .. }) => bump(&self.io_errors, 1),
            Err(_) => {}
        }
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        let n = |c: &AtomicU64| c.load(Relaxed);
        MetricsSnapshot {
            gets: n(&self.gets),
            hits: n(&self.hits),
            misses: n(&self.misses),
            puts: n(&self.puts),
            deletes: n(&self.deletes),
            evictions: n(&self.evictions),
            bytes_read: n(&self.bytes_read),
            bytes_written: n(&self.bytes_written),
            corrupt: n(&self.corrupt),
            io_errors: n(&self.io_errors),
            get: self.get.summary(),
            put: self.put.summary(),
            get_many: self.get_many.summary(),
            put_many: self.put_many.summary(),
        }
    }

    /// Zeroes everything. Calls running meanwhile may land before or after the reset.
    pub fn reset(&self) {
        for c in [
            &self.gets, &self.hits, &self.misses, &self.puts, &self.deletes, &self.evictions,
            &self.bytes_read, &self.bytes_written, &self.corrupt, &self.io_errors,
        ] {
            c.store(0, Relaxed);
        }
        for h in [&self.get, &self.put, &self.get_many, &self.put_many] {
            h.reset();
        }
    }
}

impl Store {
    /// Stores `value` under `key` in a newly allocated slot; a previous value of the key is
    /// invalidated on the device before this returns.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let t = Instant::now();
        let r = self.put_unmetered(key, value);
        if self.metrics.put_done(&r, value.len()) {
            self.metrics.put.record(elapsed_ns(t));
        }
        self.maybe_checkpoint();
        r
    }

    /// Copies the value of `key` into `out` and returns its length. The header and payload
    /// are verified first: a mismatch is [`Error::Corrupt`], never wrong bytes.
    pub fn get(&self, key: &[u8], out: &mut [u8]) -> Result<usize> {
        let t = Instant::now();
        let r = self.get_unmetered(key, out);
        if self.metrics.get_done(&r) {
            self.metrics.get.record(elapsed_ns(t));
        }
        r
    }

    /// Removes `key`; its header is invalidated on the device before this returns.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        let r = self.delete_unmetered(key);
        self.metrics.delete_done(&r);
        self.maybe_checkpoint();
        r
    }

    /// Gets every key into its destination; `outs[i]` receives the value of `keys[i]`.
    /// The outer error is the handle's (e.g. not recovered); each item has its own outcome:
    /// the value's length, or NotFound, BufferTooSmall, Corrupt, Io.
    pub fn get_many(&self, keys: &[&[u8]], outs: &mut [&mut [u8]]) -> Result<Vec<Result<usize>>> {
        let t = Instant::now();
        let results = self.get_many_unmetered(keys, outs)?;
        for r in &results {
            self.metrics.get_done(r);
        }
        if !results.is_empty() {
            self.metrics.get_many.record(elapsed_ns(t));
        }
        Ok(results)
    }

    /// Stores every `(key, value)`; item i's outcome is `results[i]`.
    pub fn put_many(&self, items: &[(&[u8], &[u8])]) -> Result<Vec<Result<()>>> {
        let t = Instant::now();
        let results = self.put_many_unmetered(items)?;
        for (r, (_, value)) in results.iter().zip(items) {
            self.metrics.put_done(r, value.len());
        }
        if !results.is_empty() {
            self.metrics.put_many.record(elapsed_ns(t));
        }
        self.maybe_checkpoint();
        Ok(results)
    }

    /// Deletes every key; each is invalidated on the device before this returns.
    pub fn delete_many(&self, keys: &[&[u8]]) -> Result<Vec<Result<()>>> {
        let results = self.delete_many_unmetered(keys)?;
        for r in &results {
            self.metrics.delete_done(r);
        }
        self.maybe_checkpoint();
        Ok(results)
    }

    /// The handle's data-path counters and latencies since open or [`Store::reset_metrics`].
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot()
    }

    pub fn reset_metrics(&self) {
        self.metrics.reset()
    }

    /// For the eviction policy: counts `n` values evicted.
    pub fn record_evictions(&self, n: u64) {
        bump(&self.metrics.evictions, n);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::FaultMode;
    use crate::format::{GeometryRequest, SlotIndex};
    use crate::store::{FormatOptions, OpenMode, OpenOptions};

    /// Each bucket's range starts right after the previous one's, and holds its own values.
    #[test]
    fn buckets_tile_the_range() {
        assert_eq!((bucket_of(0), bucket_of(127), bucket_of(128), bucket_of(129)), (0, 127, 128, 128));
        let mut low = 0u64;
        for i in 0..BUCKETS - 1 {
            let high = bucket_high(i);
            assert!(high >= low, "bucket {i}");
            assert_eq!((bucket_of(low), bucket_of(high)), (i, i), "bucket {i}: {low}..={high}");
            if low >= 2 * SUB {
                assert!((high - low + 1) as f64 <= low as f64 / SUB as f64 + 1.0, "bucket {i} is wider than 1/64");
            }
            low = high + 1;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1, "huge values land in the last bucket");
    }

    fn within_1_64(got: u64, want: u64) -> bool {
        got >= want && (got - want) as f64 <= want as f64 / SUB as f64
    }

    #[test]
    fn percentiles_of_known_distributions() {
        let h = Histogram::default();
        assert_eq!(h.summary(), Latency::default(), "empty");
        // Uniform 1..=100000 (shuffled): the rank r value is r.
        for i in 0..100_000u64 {
            h.record(i * 7919 % 100_000 + 1);
        }
        let s = h.summary();
        assert_eq!((s.count, s.max_ns), (100_000, 100_000));
        assert!(within_1_64(s.p50_ns, 50_000), "{s:?}");
        assert!(within_1_64(s.p99_ns, 99_000), "{s:?}");
        assert!(within_1_64(s.p999_ns, 99_900), "{s:?}");

        // Small values are exact.
        let h = Histogram::default();
        (0..1000).for_each(|_| h.record(42));
        assert_eq!(h.summary(), Latency { count: 1000, p50_ns: 42, p99_ns: 42, p999_ns: 42, max_ns: 42 });

        // 990 fast, 9 slow, 1 very slow: p50 and p99 are fast, p99.9 is the 999th value (slow).
        let h = Histogram::default();
        (0..990).for_each(|_| h.record(2_000));
        (0..9).for_each(|_| h.record(1_000_000));
        h.record(50_000_000);
        let s = h.summary();
        assert!(within_1_64(s.p50_ns, 2_000) && within_1_64(s.p99_ns, 2_000), "{s:?}");
        assert!(within_1_64(s.p999_ns, 1_000_000), "{s:?}");
        assert_eq!(s.max_ns, 50_000_000);

        // Exponential-ish: ten octaves, each twice as likely as the next.
        let h = Histogram::default();
        let mut all = Vec::new();
        for octave in 0..10u64 {
            for j in 0..(1024u64 >> octave) {
                let v = (1000 << octave) + j * 3;
                h.record(v);
                all.push(v);
            }
        }
        all.sort_unstable();
        let s = h.summary();
        let exact = |num: usize, den: usize| all[(all.len() * num).div_ceil(den) - 1];
        assert!(within_1_64(s.p50_ns, exact(50, 100)), "{s:?} vs {}", exact(50, 100));
        assert!(within_1_64(s.p99_ns, exact(99, 100)), "{s:?} vs {}", exact(99, 100));
        assert!(within_1_64(s.p999_ns, exact(999, 1000)), "{s:?} vs {}", exact(999, 1000));
        assert!(s.p50_ns <= s.p99_ns && s.p99_ns <= s.p999_ns && s.p999_ns <= s.max_ns);
    }

    #[test]
    fn concurrent_records_are_all_counted() {
        let h = Arc::new(Histogram::default());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let h = h.clone();
                std::thread::spawn(move || (0..25_000u64).for_each(|i| h.record(i * (t + 1))))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(h.summary().count, 100_000);
        h.reset();
        assert_eq!(h.summary(), Latency::default());
    }

    fn store(name: &str) -> Store {
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions {
                capacity_bytes: 16 << 20,
                geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() },
                overwrite: false,
                ..Default::default()
            }),
            ..Default::default()
        };
        Store::open(&crate::store::tmp_path(name), &opts).unwrap()
    }

    /// Every counter moves as documented, for single and batched calls alike.
    #[test]
    fn data_calls_move_the_counters() {
        let s = store("metrics-counters");
        let mut buf = vec![0u8; 8192];
        s.put(b"a", &[1; 100]).unwrap();
        s.put(b"b", &[2; 200]).unwrap();
        assert_eq!(s.get(b"a", &mut buf).unwrap(), 100);
        assert!(matches!(s.get(b"zz", &mut buf), Err(Error::NotFound)));
        assert!(matches!(s.get(b"b", &mut buf[..10]), Err(Error::BufferTooSmall { .. })));
        assert!(matches!(s.get(b"", &mut buf), Err(Error::InvalidArgument(_))), "refused before the index: not counted");
        s.delete(b"b").unwrap();
        assert!(matches!(s.delete(b"b"), Err(Error::NotFound)));
        let m = s.metrics();
        assert_eq!((m.gets, m.hits, m.misses, m.bytes_read), (3, 1, 1, 100));
        assert_eq!((m.puts, m.bytes_written, m.deletes, m.corrupt, m.io_errors, m.evictions), (2, 300, 1, 0, 0, 0));
        assert_eq!((m.get.count, m.put.count, m.get_many.count, m.put_many.count), (3, 2, 0, 0));
        assert!(m.get.p50_ns > 0 && m.get.p50_ns <= m.get.max_ns && m.put.p999_ns <= m.put.max_ns);

        let res = s.put_many(&[(&b"c"[..], &[3u8; 50][..]), (b"d", &[4; 60]), (b"", b"x")]).unwrap();
        assert!(res[0].is_ok() && res[1].is_ok() && res[2].is_err());
        let (mut x, mut y, mut z) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        let got = s.get_many(&[b"c", b"d", b"nope"], &mut [&mut x[..], &mut y[..], &mut z[..]]).unwrap();
        assert_eq!((got[0].as_ref().ok(), got[1].as_ref().ok()), (Some(&50), Some(&60)));
        s.delete_many(&[b"c", b"c"]).unwrap();
        s.record_evictions(3);
        let m = s.metrics();
        assert_eq!((m.gets, m.hits, m.misses, m.bytes_read), (6, 3, 2, 210));
        assert_eq!((m.puts, m.bytes_written, m.deletes, m.evictions), (4, 410, 2, 3));
        assert_eq!((m.get.count, m.put.count, m.get_many.count, m.put_many.count), (3, 2, 1, 1), "batches time whole calls");

        s.reset_metrics();
        assert_eq!(s.metrics(), MetricsSnapshot::default());
    }

    /// Entries evicted to make room count as evictions, as many as the eviction policy reports.
    #[test]
    fn evictions_are_counted() {
        let s = store("metrics-evictions");
        s.set_eviction(crate::store::Eviction { policy: crate::store::EvictionPolicy::Lru, low_watermark_permille: 0 })
            .unwrap();
        let slots = s.geometry().slot_count();
        for i in 0..slots + 5 {
            s.put(format!("k{i}").as_bytes(), b"v").unwrap();
        }
        let (evicted, _) = s.eviction_counts();
        assert!(evicted >= 5, "{evicted} evicted");
        assert_eq!(s.metrics().evictions, evicted);
        assert_eq!(s.metrics().puts, slots + 5);
    }

    /// Corrupt values and I/O errors are counted where the data path detects them.
    #[test]
    fn corrupt_and_io_errors_are_counted() {
        let p = crate::store::tmp_path("metrics-faults");
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions { capacity_bytes: 16 << 20, ..Default::default() }),
            engine: crate::engine::EngineConfig::new(crate::engine::EngineChoice::Posix, 1, 8),
            ..Default::default()
        };
        let s = Store::open(&p, &opts).unwrap();
        s.put(b"k", &[9; 5000]).unwrap();
        s.put(b"j", &[8; 5000]).unwrap();
        // Flip a value byte of k behind the store's back: its CRC fails.
        let slot = s.ready().unwrap().index.get(b"k").unwrap().slot;
        let at = s.geometry().slot_offset(slot) + s.geometry().header_bytes() as u64 + 10;
        std::os::unix::fs::FileExt::write_all_at(&std::fs::OpenOptions::new().write(true).open(&p).unwrap(), &[0], at).unwrap();
        let mut buf = vec![0u8; 8192];
        assert!(matches!(s.get(b"k", &mut buf), Err(Error::Corrupt(_))));
        // A batched get of j fails in the engine.
        let slot_j = s.ready().unwrap().index.get(b"j").unwrap().slot;
        s.inject_read_faults(&[SlotIndex(slot_j.0)], libc::EIO, FaultMode::Persistent);
        let r = s.get_many(&[b"j"], &mut [&mut buf[..]]).unwrap();
        assert!(matches!(r[0], Err(Error::Io { .. })), "{r:?}");
        let m = s.metrics();
        assert_eq!((m.gets, m.hits, m.corrupt, m.io_errors), (2, 0, 1, 1));
    }

    /// What the hooks cost a call (run with --ignored --nocapture): cached reads of a
    /// buffered file, so the call itself is as short as it gets.
    #[test]
    #[ignore]
    fn measure_hook_cost() {
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions {
                capacity_bytes: 64 << 20,
                geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() },
                overwrite: false,
                ..Default::default()
            }),
            buffered: true,
            ..Default::default()
        };
        let s = Arc::new(Store::open(&crate::store::tmp_path("metrics-cost"), &opts).unwrap());
        for i in 0..64u32 {
            s.put(&i.to_le_bytes(), &[7; 4096]).unwrap();
        }
        for threads in [1usize, 2, 4, 8, 16] {
            let run = |metered: bool| {
                let t = Instant::now();
                let n = 200_000 / threads;
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        let s = s.clone();
                        std::thread::spawn(move || {
                            let mut buf = vec![0u8; 8192];
                            for i in 0..n {
                                let k = ((i % 64) as u32).to_le_bytes();
                                let r = if metered { s.get(&k, &mut buf) } else { s.get_unmetered(&k, &mut buf) };
                                r.unwrap();
                            }
                        })
                    })
                    .collect();
                hs.into_iter().for_each(|h| h.join().unwrap());
                t.elapsed().as_nanos() as f64 / (n * threads) as f64
            };
            let (mut plain, mut metered) = (f64::MAX, f64::MAX);
            for _ in 0..5 {
                plain = plain.min(run(false));
                metered = metered.min(run(true));
            }
            println!("metrics: {threads} threads, cached 4 KiB gets: {plain:.0} ns unmetered, {metered:.0} ns metered ({:+.0} ns)", metered - plain);
        }
    }
}
