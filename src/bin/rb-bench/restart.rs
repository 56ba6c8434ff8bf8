//! `--dirty-percent P`: the restart a server pays after a crash.
//!
//! `--prepare` fills the fixture and checkpoints as usual, then changes P% of the entries
//! (a third replaced, a third deleted, a third put under new keys) and stops without a
//! checkpoint, as a crash would. `--measure` recovers that fixture read-only, `--repeats`
//! times each: fast recovery (RB_RECOVER_AUTO: the checkpoint plus the slots leased since)
//! and full validation (RB_RECOVER_CHECKPOINT: every checkpointed entry's header), and
//! prints one line: `restart: entries=N dirty=P fast_s=A full_s=B speedup=C
//! recovered_since_checkpoint=K lost=L ...`, where K counts the puts made after the
//! checkpoint that fast recovery indexed with their new value and L those it did not.
//! Which keys changed is a function of N and P alone, so measuring recomputes it.

use std::time::Instant;

use rawblock::aligned::AlignedBuf;
use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::geometry::NO_JOURNAL;
use rawblock::format::GeometryRequest;
use rawblock::store::{FormatOptions, OpenMode, RecoverMode, RecoverOptions, RecoverReport};
use rawblock::{Error, OpenOptions, Store};

use crate::args::Args;
use crate::fixture::bench_key;
use crate::hints;

/// The value every put after the checkpoint writes (the prepared ones hold 0x5A).
const DIRTY_VALUE: [u8; 64] = [0xA5; 64];

/// Which entries a `dirty` percent of `n` changes.
pub struct DirtyPlan {
    pub replaced: Vec<u64>,
    pub deleted: Vec<u64>,
    /// New keys: entries n.. n + new.
    pub new: u64,
}

impl DirtyPlan {
    pub fn new(n: u64, percent: f64) -> DirtyPlan {
        let d = ((n as f64 * percent / 100.0).round() as u64).min(n);
        let (replaced, deleted) = (d - 2 * (d / 3), d / 3);
        // Evenly spread, distinct: position k of replaced + deleted over 0..n.
        let spread = |k: u64| k * n / (replaced + deleted).max(1);
        DirtyPlan {
            replaced: (0..replaced).map(spread).collect(),
            deleted: (replaced..replaced + deleted).map(spread).collect(),
            new: d / 3,
        }
    }

    /// The puts made after the checkpoint that should survive: replaced and new keys.
    fn puts(&self, n: u64) -> impl Iterator<Item = u64> + '_ {
        self.replaced.iter().copied().chain(n..n + self.new)
    }
}

/// After `--prepare`'s checkpoint: the changes, left without a checkpoint.
pub fn dirty(store: &Store, n: u64, percent: f64) -> Result<(), String> {
    let plan = DirtyPlan::new(n, percent);
    let t = Instant::now();
    for i in plan.puts(n) {
        store.put(bench_key(i).as_bytes(), &DIRTY_VALUE).map_err(|e| format!("dirty put {i}: {e}"))?;
    }
    for &i in &plan.deleted {
        store.delete(bench_key(i).as_bytes()).map_err(|e| format!("dirty delete {i}: {e}"))?;
    }
    // Durable as a crash would find them with RB_OPEN_SYNC_WRITES: on the device, no checkpoint.
    store.sync().map_err(|e| e.to_string())?;
    eprintln!(
        "dirtied {percent}%: {} replaced, {} deleted, {} new, in {:.2}s; no checkpoint since",
        plan.replaced.len(),
        plan.deleted.len(),
        plan.new,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn open(args: &Args) -> Result<Store, String> {
    let engine = match args.engines.iter().any(|e| e == "io_uring") {
        true => EngineConfig::new(EngineChoice::IoUring, 1, args.queue_depth),
        false => EngineConfig::new(EngineChoice::Posix, args.threads[0], args.queue_depth),
    };
    let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: args.buffered, engine, ..Default::default() };
    Store::open(&args.device, &opts).map_err(|e| hints::open_fixture(e, &args.device, !args.buffered))
}

fn timed(args: &Args, mode: RecoverMode) -> Result<(Store, f64, RecoverReport), String> {
    let store = open(args)?;
    let t = Instant::now();
    let r = store.recover(&RecoverOptions { mode, ..Default::default() }).map_err(|e| e.to_string())?;
    Ok((store, t.elapsed().as_secs_f64(), r))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `--measure --dirty-percent P`. `Ok(false)` when fast recovery lost a put or kept a deleted key.
pub fn measure(args: &Args, percent: f64, entries: u64) -> Result<bool, String> {
    let plan = DirtyPlan::new(entries, percent);
    let (mut fast, mut full) = (Vec::new(), Vec::new());
    let (mut recovered, mut lost, mut resurrected) = (0, 0, 0);
    let mut fast_report = None;
    for repeat in 0..args.repeats {
        let (store, s, r) = timed(args, RecoverMode::Auto)?;
        fast.push(s);
        if repeat == 0 {
            (recovered, lost, resurrected) = judge(&store, &plan, entries)?;
            fast_report = Some(r);
        }
        drop(store);
        let (_, s, r) = timed(args, RecoverMode::Checkpoint)?;
        full.push(s);
        // Full validation knows only the checkpoint: the deleted and the replaced are stale.
        let expected = entries - plan.deleted.len() as u64 - plan.replaced.len() as u64;
        if r.indexed != expected {
            println!("restart: full validation indexed {} entries, expected {expected}", r.indexed);
        }
    }
    let r = fast_report.expect("at least one repeat");
    // The first recovery of the process, as a restarted server's is: its memory is touched
    // for the first time (page faults), where later repeats reuse freed memory.
    let first_s = fast[0];
    let (fast_s, full_s) = (median(fast), median(full));
    println!(
        "restart: entries={entries} dirty={percent} fast_s={fast_s:.4} full_s={full_s:.4} speedup={:.1} \
         recovered_since_checkpoint={recovered} lost={lost} deleted_found={resurrected} fast_first_s={first_s:.4} \
         source={:?} header_reads={} leased_slots={} trusted_unread={} load_s={:.4} rebuild_s={:.4} repeats={}",
        full_s / fast_s,
        r.from,
        r.header_reads,
        r.leased_slots,
        r.trusted_unread,
        r.checkpoint_load_ns as f64 / 1e9,
        r.validate_ns as f64 / 1e9,
        args.repeats
    );
    Ok(lost == 0 && resurrected == 0)
}

/// Reads back every put made after the checkpoint and every deleted key.
fn judge(store: &Store, plan: &DirtyPlan, n: u64) -> Result<(u64, u64, u64), String> {
    let mut buf = vec![0u8; store.geometry().max_payload() as usize];
    let (mut recovered, mut lost, mut resurrected) = (0, 0, 0);
    for i in plan.puts(n) {
        match store.get(bench_key(i).as_bytes(), &mut buf) {
            Ok(len) if buf[..len] == DIRTY_VALUE => recovered += 1,
            Ok(_) | Err(Error::NotFound) => lost += 1,
            Err(e) => return Err(format!("get {i}: {e}")),
        }
    }
    for &i in &plan.deleted {
        match store.get(bench_key(i).as_bytes(), &mut buf) {
            Err(Error::NotFound) => {}
            Ok(_) => resurrected += 1,
            Err(e) => return Err(format!("get deleted {i}: {e}")),
        }
    }
    Ok((recovered, lost, resurrected))
}

/// `--workload lease-cost`: what the lease journal costs a put. Formats the fixture with a
/// journal and without one (as devices from before it), and times the same single puts of
/// `--value-bytes` (default 4 KiB: small values show a per-put cost most) into each, in
/// alternating rounds, O_DIRECT, in one run. Prints `lease_cost: ... ratio=R`, R being puts/s
/// with the journal over puts/s without.
pub fn lease_cost(args: &Args) -> Result<bool, String> {
    crate::fixture::own_fixture(args, "lease-cost")?;
    let value = args.value_bytes.unwrap_or(4096);
    let rounds = args.repeats.max(2);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut journal_records = 0;
    for round in 0..rounds {
        for journal in [true, false] {
            let geometry = GeometryRequest {
                slot_bytes: args.slot_bytes,
                journal_blocks: if journal { 0 } else { NO_JOURNAL },
                ..Default::default()
            };
            let format = FormatOptions {
                capacity_bytes: (args.cache_space_gb * (1u64 << 30) as f64) as u64,
                geometry,
                overwrite: true,
                preallocate: true,
            };
            let engine = EngineConfig::new(EngineChoice::Auto, 1, args.queue_depth);
            let opts = OpenOptions { mode: OpenMode::Create(format), engine, buffered: args.buffered, ..Default::default() };
            let store = Store::open(&args.device, &opts).map_err(|e| hints::prepare(e, &args.device, !args.buffered))?;
            let n = (store.geometry().slot_count() as usize).min(20_000);
            let mut buf = AlignedBuf::zeroed(store.padded_len(value as u64) as usize);
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
            let t = Instant::now();
            for i in 0..n {
                store.put(bench_key(i as u64).as_bytes(), &buf[..value]).map_err(|e| format!("put {i}: {e}"))?;
            }
            let rate = n as f64 / t.elapsed().as_secs_f64();
            if journal {
                with.push(rate);
                journal_records = store.lease_records_written();
            } else {
                without.push(rate);
            }
            eprintln!("lease-cost round {round}: journal={journal} {n} puts, {rate:.0}/s");
        }
    }
    let _ = std::fs::remove_file(&args.device);
    let (w, wo) = (median(with), median(without));
    println!(
        "lease_cost: value={value} slot_bytes={} rounds={rounds} puts_per_s_with_journal={w:.0} puts_per_s_without={wo:.0} ratio={:.3} lease_records={journal_records}",
        args.slot_bytes,
        w / wo
    );
    Ok(true)
}

/// `--workload checkpoint-cost`: a full checkpoint against a delta after `--dirty-percent`
/// (default 1) of the entries were replaced, alternating, `--repeats` rounds, in one run.
/// Fills its own fixture (`--max-entries`, default 524,272, in `--slot-bytes` slots; through
/// the page cache like `--prepare`; every checkpoint ends with its fdatasyncs). Prints
/// `checkpoint_cost: ... ratio=R`, R being the delta's time over the full one's.
pub fn checkpoint_cost(args: &Args) -> Result<bool, String> {
    crate::fixture::own_fixture(args, "checkpoint-cost")?;
    let n = args.max_entries.unwrap_or(524_272);
    let percent = args.dirty_percent.unwrap_or(1.0);
    let capacity = ((n + n / 16 + 64) * args.slot_bytes) as f64 * 1.05;
    let format = FormatOptions {
        capacity_bytes: capacity as u64,
        geometry: GeometryRequest { slot_bytes: args.slot_bytes, ..Default::default() },
        overwrite: true,
        preallocate: false,
    };
    let opts = OpenOptions { mode: OpenMode::Create(format), buffered: true, ..Default::default() };
    let store = Store::open(&args.device, &opts).map_err(|e| hints::prepare(e, &args.device, false))?;
    let value = [0x5Au8; 64];
    std::thread::scope(|s| {
        let threads = args.prepare_threads as u64;
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let store = &store;
                s.spawn(move || -> Result<(), String> {
                    for i in (t..n).step_by(threads as usize) {
                        store.put(bench_key(i).as_bytes(), &value).map_err(|e| format!("put {i}: {e}"))?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err("a writer panicked".into())))
    })?;
    let changed = ((n as f64 * percent / 100.0).round() as u64).max(1);
    let (mut full, mut delta, mut bytes) = (Vec::new(), Vec::new(), (0, 0));
    // Each checkpoint is timed after an rb_sync: its own first fdatasync would otherwise also
    // flush the puts before it (the page cache holds them), which is the puts' cost, not its.
    for round in 0..args.repeats.max(2) {
        store.sync().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let f = store.checkpoint_full().map_err(|e| e.to_string())?;
        full.push(t.elapsed().as_secs_f64());
        for j in 0..changed {
            let i = (j * n / changed + round as u64) % n;
            store.put(bench_key(i).as_bytes(), &DIRTY_VALUE).map_err(|e| format!("put {i}: {e}"))?;
        }
        store.sync().map_err(|e| e.to_string())?;
        let t = Instant::now();
        let d = store.checkpoint().map_err(|e| e.to_string())?;
        delta.push(t.elapsed().as_secs_f64());
        if d.delta_of.is_none() {
            return Err(format!("the checkpoint after {percent}% was not a delta"));
        }
        bytes = (f.payload_bytes, d.payload_bytes);
    }
    drop(store);
    let _ = std::fs::remove_file(&args.device);
    let (f, d) = (median(full), median(delta));
    println!(
        "checkpoint_cost: entries={n} dirty={percent} full_s={f:.4} delta_s={d:.4} ratio={:.3} full_bytes={} delta_bytes={} rounds={}",
        d / f,
        bytes.0,
        bytes.1,
        args.repeats.max(2)
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_is_distinct_and_sized() {
        let p = DirtyPlan::new(524_272, 1.0);
        assert_eq!(p.replaced.len() as u64 + p.deleted.len() as u64 + p.new, 5243);
        let mut all: Vec<u64> = p.replaced.iter().chain(&p.deleted).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), p.replaced.len() + p.deleted.len(), "replaced and deleted never overlap");
        assert!(all.iter().all(|&i| i < 524_272));
        let small = DirtyPlan::new(10, 100.0);
        assert_eq!((small.replaced.len(), small.deleted.len(), small.new), (4, 3, 3));
    }
}
