//! The power-loss simulator (issue 11): the proof that docs/RECOVERY.md's guarantees hold
//! when the power fails, not only when a process dies.
//!
//! Modelled on RocksDB's FaultInjectionTestFS (what was not synced may be lost) and on
//! CrashMonkey (crash states built from the recorded block I/O):
//!
//! 1. **Record.** A seeded workload (puts of new keys, replaces, deletes, checkpoints, clean
//!    restarts, puts whose write fails part-way) runs against a real file while every write
//!    and fdatasync that reaches the device is recorded through [`WriteLog`]. On an O_DSYNC
//!    handle (`sync_writes`) each write is recorded as a write followed by a sync.
//! 2. **Crash.** For every crash point k (after the k-th recorded event) images are built:
//!    the formatted base, every write up to the last sync before k, and a choice for each
//!    later write: dropped, kept whole, or torn (only some of its 512-byte or 4 KiB sectors
//!    land). Up to two such writes: every combination; more: a seeded random sample.
//! 3. **Recover and judge.** Each image is opened read-only and recovered AUTO, then SCAN
//!    (a read-only handle may recover again); every key is read back and judged by
//!    [`judge`]. Every 4th image is also recovered on a writable handle and written to,
//!    which runs the invalidations recovery queued, and scanned again: what recovery chose
//!    must survive its own clean-up.
//!
//! A clean restart in the workload (drop, reopen, recover) is a process death without
//! power loss: what it recovers is checked too ([`expect_after_restart`]).
//!
//! `make test` runs the default sweep (`cargo test --release powerloss`); `make powerloss`
//! a long one. `POWERLOSS_IMAGES` (default 2500) and `POWERLOSS_SEED` (default fixed) steer
//! it; a violation prints the seed, run and crash point, and fails the test.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::device::WriteLog;
use crate::engine::{EngineChoice, EngineConfig};
use crate::error::Error;
use crate::format::{crc32, Geometry, GeometryRequest, SlotHeader, SlotIndex, SlotState};
use crate::store::{FormatOptions, OpenMode, OpenOptions, RecoverMode, RecoverOptions, RecoveredFrom, Store};
use crate::sync::lock;

/// One thing that reached the device.
enum Event {
    Write { offset: u64, data: Vec<u8> },
    Sync,
}

/// The [`WriteLog`] of a workload: every event in order, and the write failures to inject.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<Event>>,
    /// Cuts for the next writes to slots, in order: `Some(n)` lets n bytes through and fails
    /// the write. Writes below `data_base` (lease records, checkpoints) are never cut.
    cuts: Mutex<VecDeque<Option<usize>>>,
    data_base: u64,
}

impl WriteLog for Recorder {
    fn cut(&self, offset: u64, _len: usize) -> Option<usize> {
        if offset < self.data_base {
            return None;
        }
        lock(&self.cuts).pop_front().flatten()
    }
    fn wrote(&self, offset: u64, data: &[u8], durable: bool) {
        let mut ev = lock(&self.events);
        ev.push(Event::Write { offset, data: data.to_vec() });
        if durable {
            ev.push(Event::Sync);
        }
    }
    fn synced(&self) {
        lock(&self.events).push(Event::Sync);
    }
}

impl Recorder {
    fn len(&self) -> usize {
        lock(&self.events).len()
    }
}

/// xorshift64*: small, seeded, the same on every machine.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// One workload's shape.
#[derive(Clone, Copy, Debug)]
struct Config {
    slot_bytes: u64,
    capacity: u64,
    keys: usize,
    ops: usize,
    /// RB_OPEN_SYNC_WRITES (O_DSYNC).
    sync_writes: bool,
    /// LRU eviction, with more keys than slots: puts evict.
    evict: bool,
}

/// Blocks of the lease journal in every run: more than any run fills (see [`record`]).
const JOURNAL_BLOCKS: u32 = 64;
const JOURNAL_BYTES: u64 = JOURNAL_BLOCKS as u64 * 4096;
/// Superblock, its copy and two 20 KiB containers (the default for 14 slots; the keys are short).
const META_BYTES: u64 = 2 * 4096 + 2 * 20 * 1024;

/// Small slots (4 KiB of payload, many records) and large ones (multi-sector payloads, up to
/// 504 sectors of 512 bytes), each with and without O_DSYNC. Few slots, so they are reused.
const CONFIGS: [Config; 6] = [
    Config { slot_bytes: 8 << 10, capacity: 14 * (8 << 10) + JOURNAL_BYTES, keys: 6, ops: 40, sync_writes: false, evict: false },
    Config { slot_bytes: 8 << 10, capacity: 14 * (8 << 10) + JOURNAL_BYTES, keys: 6, ops: 40, sync_writes: true, evict: false },
    Config { slot_bytes: 256 << 10, capacity: 8 * (256 << 10) + JOURNAL_BYTES, keys: 4, ops: 24, sync_writes: false, evict: false },
    // More keys than slots, LRU eviction: puts evict (zeroing the victims' headers as deletes do).
    Config { slot_bytes: 8 << 10, capacity: 14 * (8 << 10) + JOURNAL_BYTES, keys: 12, ops: 40, sync_writes: true, evict: true },
    Config { slot_bytes: 8 << 10, capacity: 14 * (8 << 10) + JOURNAL_BYTES, keys: 12, ops: 40, sync_writes: false, evict: true },
    Config { slot_bytes: 256 << 10, capacity: 8 * (256 << 10) + JOURNAL_BYTES, keys: 4, ops: 24, sync_writes: true, evict: false },
];

/// What a read of a key gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Absent,
    /// The value with this id (the workload's n-th put).
    Value(usize),
    Corrupt,
}

#[derive(Clone, Debug)]
enum Op {
    /// `cut`: the record write was made to fail part-way (`cleanup_fails`: and the zeroing after it).
    /// `evicted`: the keys the put's eviction batch removed (before its own write).
    Put { key: usize, vid: usize, ok: bool, cut: bool, evicted: Vec<usize> },
    /// One rb_put_many of distinct keys: (key, value id, acknowledged) per item.
    PutMany { items: Vec<(usize, usize, bool)>, evicted: Vec<usize> },
    Delete { key: usize },
    /// A write call with nothing of its own to write: runs the invalidations recovery queued.
    Poke,
    Checkpoint { snapshot: Vec<Seen> },
    /// rb_sync: every write acknowledged before it is durable.
    Sync,
    /// A clean reopen and recovery; `live` is what it found.
    Restart { live: Vec<Seen> },
}

/// An operation and the events it caused: `events[start..end]`.
struct Step {
    op: Op,
    start: usize,
    end: usize,
}

/// A recorded workload.
struct Run {
    number: usize,
    seed: u64,
    cfg: Config,
    g: Geometry,
    device_id: [u8; 16],
    keys: Vec<Vec<u8>>,
    vals: Vec<Vec<u8>>,
    /// The key of each value.
    val_key: Vec<usize>,
    base: Vec<u8>,
    events: Vec<Event>,
    /// Per event: the key and slot of a valid slot header it writes.
    headers: Vec<Option<(usize, u64)>>,
    steps: Vec<Step>,
}

/// Counters for the summary, and the violations found.
#[derive(Default)]
struct Tally {
    runs: usize,
    sync_runs: usize,
    /// Checkpoints the workloads took that were deltas.
    deltas: usize,
    events: usize,
    crash_points: usize,
    images: usize,
    writes_dropped: usize,
    writes_whole: usize,
    writes_torn: usize,
    auto_checkpoint: usize,
    auto_journal: usize,
    auto_scan: usize,
    scans: usize,
    io_uring: usize,
    follow_ups: usize,
    restarts: usize,
    failed_puts: usize,
    /// Keys evicted by puts (runs with LRU eviction).
    evicted: usize,
    gets: usize,
    values: usize,
    absent: usize,
    corrupt_new_key: usize,
    corrupt_unsynced: usize,
    violations: usize,
    /// Violations by kind (the first three of each kind are in `messages`).
    kinds: std::collections::BTreeMap<String, usize>,
    messages: Vec<String>,
}

impl Tally {
    fn violation(&mut self, kind: &str, msg: String) {
        self.violations += 1;
        let n = self.kinds.entry(kind.to_string()).or_default();
        *n += 1;
        if *n <= 3 {
            self.messages.push(msg);
        }
    }
    fn merge(&mut self, o: Tally) {
        self.runs += o.runs;
        self.sync_runs += o.sync_runs;
        self.deltas += o.deltas;
        self.events += o.events;
        self.crash_points += o.crash_points;
        self.images += o.images;
        self.writes_dropped += o.writes_dropped;
        self.writes_whole += o.writes_whole;
        self.writes_torn += o.writes_torn;
        self.auto_checkpoint += o.auto_checkpoint;
        self.auto_journal += o.auto_journal;
        self.auto_scan += o.auto_scan;
        self.scans += o.scans;
        self.io_uring += o.io_uring;
        self.follow_ups += o.follow_ups;
        self.restarts += o.restarts;
        self.failed_puts += o.failed_puts;
        self.evicted += o.evicted;
        self.gets += o.gets;
        self.values += o.values;
        self.absent += o.absent;
        self.corrupt_new_key += o.corrupt_new_key;
        self.corrupt_unsynced += o.corrupt_unsynced;
        self.violations += o.violations;
        for (k, n) in o.kinds {
            *self.kinds.entry(k).or_default() += n;
        }
        self.messages.extend(o.messages);
    }
}

fn key_name(i: usize) -> Vec<u8> {
    if i == 0 {
        // Long enough that its header spans two 512-byte sectors.
        let mut k = b"long-key-".to_vec();
        k.resize(700, b'x');
        k
    } else {
        format!("key-{i}").into_bytes()
    }
}

/// The value with id `vid`: its length and bytes depend on the id, its first bytes name it.
fn make_value(vid: usize, max: u64, rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0..=1 => rng.below(600),
        2..=5 => rng.below(max + 1),
        _ => max - rng.below(max / 8 + 1),
    } as usize;
    let mut x = Rng::new(vid as u64 * 7919 + 1);
    let mut v: Vec<u8> = (0..len).map(|_| x.next() as u8).collect();
    let id = (vid as u64).to_le_bytes();
    let n = len.min(8);
    v[..n].copy_from_slice(&id[..n]);
    v
}

fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/powerloss"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Checkpoints in the sweep are deltas whenever a full one was taken by the handle (the
/// default share of an eighth would almost never allow one with this few keys).
fn set_deltas(store: &Store) {
    store.set_delta_max_permille(1000);
}

fn set_eviction(store: &Store, cfg: Config) {
    if cfg.evict {
        let lru = crate::store::Eviction { policy: crate::store::EvictionPolicy::Lru, low_watermark_permille: 0 };
        store.set_eviction(lru).expect("eviction");
    }
}

fn open_opts(mode: OpenMode, engine: EngineChoice, sync_writes: bool) -> OpenOptions {
    OpenOptions { mode, engine: EngineConfig::new(engine, 1, 8), buffered: true, sync_writes }
}

fn read(s: &Store, key: &[u8], buf: &mut [u8]) -> std::result::Result<Vec<u8>, Error> {
    let n = s.get(key, buf)?;
    Ok(buf[..n].to_vec())
}

/// Reads every key of the run from a recovered store. Bytes that are no value ever put
/// for that key are reported as `Err`.
fn read_all(run: &Run, s: &Store, ever: impl Fn(usize) -> Vec<usize>) -> Vec<std::result::Result<Seen, String>> {
    let mut buf = vec![0u8; run.g.max_payload() as usize];
    (0..run.keys.len())
        .map(|k| match read(s, &run.keys[k], &mut buf) {
            Ok(bytes) => match ever(k).into_iter().find(|&v| run.vals[v] == bytes) {
                Some(v) => Ok(Seen::Value(v)),
                None => Err(format!("{} bytes that are no value ever put for the key (wrong bytes)", bytes.len())),
            },
            Err(Error::NotFound) => Ok(Seen::Absent),
            Err(Error::Corrupt(_)) => Ok(Seen::Corrupt),
            Err(e) => Err(format!("get failed: {e}")),
        })
        .collect()
}

/// What the live store answers for key `k`.
fn read_key(run: &Run, s: &Store, k: usize) -> Seen {
    let mut buf = vec![0u8; run.g.max_payload() as usize];
    match read(s, &run.keys[k], &mut buf) {
        Ok(bytes) => Seen::Value(run.vals.iter().position(|v| *v == bytes).expect("the live store returned wrong bytes")),
        Err(Error::NotFound) => Seen::Absent,
        Err(Error::Corrupt(_)) => Seen::Corrupt,
        Err(e) => panic!("run {}: get failed: {e}", run.number),
    }
}

/// A workload being recorded: the run so far, the live store and what it holds.
struct Recording {
    run: Run,
    path: PathBuf,
    /// None only while a restart swaps handles.
    store: Option<Store>,
    rec: Arc<Recorder>,
    rng: Rng,
    /// What the store answers for each key.
    live: Vec<Seen>,
    /// The step of the last checkpoint and what it holds.
    last_checkpoint: Option<(usize, Vec<Seen>)>,
    /// Checkpoints that were deltas.
    deltas: usize,
}

/// A key no workload uses: deleting it writes nothing of its own but runs the
/// invalidations the store has queued.
const POKE_KEY: &[u8] = b"\xffpoke";

impl Recording {
    fn store(&self) -> &Store {
        self.store.as_ref().expect("a store")
    }

    /// Records `op`, which caused the events from `start` on.
    fn step(&mut self, op: Op, start: usize) {
        self.run.steps.push(Step { op, start, end: self.rec.len() });
    }

    fn poke(&mut self) {
        let start = self.rec.len();
        let s = self.store().delete(POKE_KEY);
        assert!(matches!(s, Err(Error::NotFound)), "poke: {s:?}");
        self.step(Op::Poke, start);
    }

    /// Puts a new value of `key`; `failing`: with a write made to fail.
    fn put(&mut self, key: usize, failing: bool, tally: &mut Tally) {
        let g = self.run.g;
        let vid = self.run.vals.len();
        self.run.vals.push(make_value(vid, g.max_payload(), &mut self.rng));
        self.run.val_key.push(key);
        if failing {
            // Queued invalidations first, so that the cuts meet the put's own writes.
            self.poke();
            let record = g.record_bytes(self.run.vals[vid].len() as u64);
            let mut cuts = lock(&self.rec.cuts);
            if self.rng.chance(70) {
                // The record write fails part-way (a filling filesystem) ...
                let n = if self.rng.chance(50) { self.rng.below(record / 512) * 512 } else { self.rng.below(record) };
                cuts.push_back(Some(n as usize));
                if self.rng.chance(40) {
                    cuts.push_back(Some(0)); // ... and so does zeroing what it left
                }
            } else {
                // The record lands; zeroing the replaced copy's header fails.
                cuts.push_back(None);
                cuts.push_back(Some(0));
            }
        }
        let start = self.rec.len();
        let result = self.store().put(&self.run.keys[key], &self.run.vals[vid]);
        lock(&self.rec.cuts).clear();
        let ok = match result {
            Ok(()) => true,
            Err(Error::SlotsFull { .. }) => false,
            Err(Error::Io { .. } | Error::HostNoSpace { .. }) if failing => {
                tally.failed_puts += 1;
                false
            }
            Err(e) => panic!("run {}: put failed: {e}", self.run.number),
        };
        // A put that failed may still have installed its value (only zeroing the old copy
        // failed): the live state is what the store answers.
        let evicted = self.drain_evicted();
        self.live[key] = read_key(&self.run, self.store(), key);
        self.step(Op::Put { key, vid, ok, cut: failing, evicted }, start);
    }

    /// Puts new values of `n` distinct keys in one batch (through the engine's data path).
    fn put_many(&mut self, n: usize) {
        let g = self.run.g;
        let mut keys: Vec<usize> = Vec::new();
        while keys.len() < n.min(self.run.keys.len()) {
            let k = self.rng.below(self.run.keys.len() as u64) as usize;
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        let vids: Vec<usize> = keys
            .iter()
            .map(|&k| {
                let vid = self.run.vals.len();
                self.run.vals.push(make_value(vid, g.max_payload(), &mut self.rng));
                self.run.val_key.push(k);
                vid
            })
            .collect();
        let items: Vec<(&[u8], &[u8])> = keys.iter().zip(&vids).map(|(&k, &v)| (&self.run.keys[k][..], &self.run.vals[v][..])).collect();
        let start = self.rec.len();
        let results = self.store().put_many(&items).unwrap_or_else(|e| panic!("run {}: put_many: {e}", self.run.number));
        let mut done = Vec::with_capacity(keys.len());
        for ((&k, &vid), r) in keys.iter().zip(&vids).zip(results) {
            let ok = match r {
                Ok(()) => true,
                Err(Error::SlotsFull { .. }) => false,
                Err(e) => panic!("run {}: put_many item: {e}", self.run.number),
            };
            done.push((k, vid, ok));
        }
        let evicted = self.drain_evicted();
        for &(k, _, _) in &done {
            self.live[k] = read_key(&self.run, self.store(), k);
        }
        self.step(Op::PutMany { items: done, evicted }, start);
    }

    /// The keys the store evicted since the last call (now absent, unless put again since).
    fn drain_evicted(&mut self) -> Vec<usize> {
        let gone = self.store().take_evicted(usize::MAX);
        let keys: Vec<usize> = gone.iter().filter_map(|e| self.run.keys.iter().position(|k| k[..] == *e.key)).collect();
        for &k in &keys {
            self.live[k] = read_key(&self.run, self.store(), k);
        }
        keys
    }

    fn delete(&mut self, key: usize) {
        let start = self.rec.len();
        match self.store().delete(&self.run.keys[key]) {
            Ok(()) | Err(Error::NotFound) => self.live[key] = Seen::Absent,
            Err(e) => panic!("run {}: delete failed: {e}", self.run.number),
        }
        self.step(Op::Delete { key }, start);
    }

    fn sync(&mut self) {
        let start = self.rec.len();
        if let Err(e) = self.store().sync() {
            panic!("run {}: sync failed: {e}", self.run.number);
        }
        self.step(Op::Sync, start);
    }

    fn checkpoint(&mut self) {
        let start = self.rec.len();
        match self.store().checkpoint() {
            Ok(info) => self.deltas += info.delta_of.is_some() as usize,
            Err(e) => panic!("run {}: checkpoint failed: {e}", self.run.number),
        }
        self.last_checkpoint = Some((self.run.steps.len(), self.live.clone()));
        self.step(Op::Checkpoint { snapshot: self.live.clone() }, start);
    }

    /// A clean restart: the process ends (nothing synced) and the next one recovers. What it
    /// finds is checked against what a process death may leave.
    fn restart(&mut self, tally: &mut Tally) {
        let cfg = self.run.cfg;
        drop(self.store.take()); // its lock goes with it
        let mut store = Store::open(&self.path, &open_opts(OpenMode::ReadWrite, EngineChoice::Posix, cfg.sync_writes)).expect("reopen");
        store.set_write_log(self.rec.clone());
        set_eviction(&store, cfg);
        set_deltas(&store);
        let store = &*self.store.insert(store);
        // AUTO is fast recovery (the lease journal). AUTO + SCRUB_FREE validates the
        // checkpoint instead, forgetting puts since it; without its scrub that leaves headers a
        // later scan may bring back (a known limit, RECOVERY.md), so it is not used alone.
        let (mode, opts) = match self.rng.below(3) {
            0 => ("SCAN", RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }),
            1 if !cfg.sync_writes => ("AUTO+SCRUB_FREE", RecoverOptions { scrub_free: true, ..Default::default() }),
            _ => ("AUTO", RecoverOptions::default()),
        };
        let rep = store.recover(&opts).expect("recover after a clean restart");
        tally.restarts += 1;
        let run = &self.run;
        let ever = |k: usize| (0..run.vals.len()).filter(|&v| run.val_key[v] == k).collect::<Vec<_>>();
        let context = format!("run {} (seed {:#x}): clean restart ({mode}, from {:?})", run.number, run.seed, rep.from);
        let mut found = Vec::with_capacity(cfg.keys);
        for (k, r) in read_all(run, store, ever).into_iter().enumerate() {
            let seen = r.unwrap_or_else(|why| {
                tally.violation("clean restart: a read failed or returned wrong bytes", format!("{context}: key {k}: {why}"));
                Seen::Corrupt
            });
            let from_checkpoint = rep.from == RecoveredFrom::Checkpoint;
            let allowed = expect_after_restart(run, k, &self.live, from_checkpoint, self.last_checkpoint.as_ref());
            if !allowed.contains(&seen) {
                tally.violation(
                    "clean restart: not what a process death may leave",
                    format!("{context}: key {k} reads {seen:?}, expected one of {allowed:?}"),
                );
            }
            found.push(seen);
        }
        self.live = found.clone();
        let start = self.rec.len();
        self.step(Op::Restart { live: found }, start);
        // The recovery's queued invalidations (losers, orphans) run before anything else.
        self.poke();
    }
}

/// Runs a workload while recording it.
fn record(number: usize, seed: u64, cfg: Config, dir: &Path, tally: &mut Tally) -> Run {
    let path = dir.join(format!("record-{number}.img"));
    let _ = std::fs::remove_file(&path);
    let fmt = FormatOptions {
        capacity_bytes: cfg.capacity,
        // A journal no run fills: a full one takes a checkpoint inside a put, which the
        // model does not follow (store/tests.rs covers that path).
        geometry: GeometryRequest { slot_bytes: cfg.slot_bytes, journal_blocks: JOURNAL_BLOCKS, meta_bytes: META_BYTES, ..Default::default() },
        overwrite: false,
        ..Default::default()
    };
    let mut store = Store::open(&path, &open_opts(OpenMode::Create(fmt), EngineChoice::Posix, cfg.sync_writes)).expect("format");
    let base = std::fs::read(&path).unwrap();
    let rec = Arc::new(Recorder { data_base: store.geometry().data_base(), ..Default::default() });
    store.set_write_log(rec.clone());
    set_eviction(&store, cfg);
    set_deltas(&store);
    let run = Run {
        number,
        seed,
        cfg,
        g: *store.geometry(),
        device_id: store.device_id(),
        keys: (0..cfg.keys).map(key_name).collect(),
        vals: Vec::new(),
        val_key: Vec::new(),
        base,
        events: Vec::new(),
        headers: Vec::new(),
        steps: Vec::new(),
    };
    let mut w = Recording { run, path, store: Some(store), rec, rng: Rng::new(seed), live: vec![Seen::Absent; cfg.keys], last_checkpoint: None, deltas: 0 };
    for _ in 0..cfg.ops {
        let key = w.rng.below(cfg.keys as u64) as usize;
        match w.rng.below(100) {
            0..=46 => w.put(key, false, tally),
            47..=54 => {
                let n = 2 + w.rng.below(3) as usize;
                w.put_many(n)
            }
            55..=66 => w.delete(key),
            67..=78 => w.checkpoint(),
            79..=85 => w.put(key, true, tally),
            86..=91 => w.sync(),
            _ => w.restart(tally),
        }
    }
    let Recording { mut run, path, store, rec, deltas, .. } = w;
    tally.deltas += deltas;
    drop(store);
    let _ = std::fs::remove_file(&path);
    run.events = std::mem::take(&mut *lock(&rec.events));
    run.headers = run.events.iter().map(|e| header_of(&run, e)).collect();
    if env_u64("POWERLOSS_TRACE") == Some(number as u64) {
        run.trace();
    }
    tally.runs += 1;
    tally.evicted += run
        .steps
        .iter()
        .map(|s| match &s.op {
            Op::Put { evicted, .. } | Op::PutMany { evicted, .. } => evicted.len(),
            _ => 0,
        })
        .sum::<usize>();
    tally.sync_runs += cfg.sync_writes as usize;
    tally.events += run.events.len();
    run
}

/// What a clean restart (process death, no power loss) may find for key `k`: a scan finds
/// exactly the live state, a checkpoint recovery the checkpoint's value of every key no
/// acknowledged put or delete touched since, nothing else. A put whose write failed since the
/// last successful write may show (its clean-up may have failed and not been retried yet).
fn expect_after_restart(run: &Run, k: usize, live: &[Seen], from_checkpoint: bool, ckpt: Option<&(usize, Vec<Seen>)>) -> Vec<Seen> {
    let mut allowed = Vec::new();
    if from_checkpoint {
        let (at, snapshot) = ckpt.expect("recovered from a checkpoint the workload never took");
        let since = &run.steps[at + 1..];
        let acked_since = |s: &Step| match &s.op {
            Op::Put { key, ok, evicted, .. } => (*ok && *key == k) || evicted.contains(&k),
            Op::Delete { key } => *key == k,
            Op::PutMany { items, evicted } => evicted.contains(&k) || items.iter().any(|&(key, _, ok)| ok && key == k),
            _ => false,
        };
        if since.iter().any(acked_since) {
            allowed.push(Seen::Absent);
        } else {
            allowed.push(snapshot[k]);
            // A failed put may have invalidated the checkpointed copy (or queued that).
            if since.iter().any(|s| matches!(s.op, Op::Put { key, cut: true, .. } if key == k)) {
                allowed.push(Seen::Absent);
            }
        }
    } else {
        allowed.push(live[k]);
    }
    for s in run.steps.iter().rev() {
        match s.op {
            Op::Put { key, vid, cut: true, .. } if key == k => {
                allowed.push(Seen::Value(vid));
                allowed.push(Seen::Corrupt);
            }
            Op::Put { .. } | Op::PutMany { .. } | Op::Delete { .. } | Op::Poke | Op::Checkpoint { .. } | Op::Sync => break,
            Op::Restart { .. } => {}
        }
    }
    allowed
}

/// The key and slot of a valid slot header that `e` writes, if any.
fn header_of(run: &Run, e: &Event) -> Option<(usize, u64)> {
    let Event::Write { offset, data } = e else { return None };
    let g = &run.g;
    let hb = g.header_bytes() as usize;
    if *offset < g.data_base() || (offset - g.data_base()) % g.slot_bytes() != 0 || data.len() < hb {
        return None;
    }
    let slot = (offset - g.data_base()) / g.slot_bytes();
    match SlotHeader::classify(&data[..hb], &run.device_id, SlotIndex(slot)) {
        SlotState::Valid(h) => run.keys.iter().position(|k| k[..] == *h.key).map(|k| (k, slot)),
        _ => None,
    }
}

/// What an operation in flight at the crash was doing to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InFlight {
    Put(usize),
    Delete,
}

/// What the workload had done to one key at a crash point.
#[derive(Clone, Debug, Default)]
struct KeyModel {
    /// Every value put for the key before the crash (acknowledged, in flight or failed).
    ever: Vec<usize>,
    /// The last acknowledged state (reset to what recovery found at a clean restart).
    acked: Option<Seen>,
    in_flight: Option<InFlight>,
    /// Puts of the key that failed since its last acknowledged operation.
    failed: Vec<usize>,
    /// Touched by any operation since the last completed checkpoint.
    touched: bool,
    /// A slot that ever held a header of the key was written after the last sync.
    unsynced_slot_write: bool,
    /// An eviction of the key's old copy was in flight with a put of it: absent is possible.
    may_be_absent: bool,
    /// The acknowledged state at the last completed rb_sync or checkpoint, and whether any
    /// operation touched the key since (begun or done).
    synced: Option<Seen>,
    touched_since_sync: bool,
}

/// Keys an eviction batch removed, before the put that triggered it: done, they are
/// deleted; in flight, their deletion is.
fn evict(keys: &mut [KeyModel], evicted: &[usize], done: bool) {
    for &k in evicted {
        let km = &mut keys[k];
        km.touched = true;
        km.touched_since_sync = true;
        if done {
            km.acked = Some(Seen::Absent);
            km.failed.clear();
        } else {
            km.in_flight = Some(InFlight::Delete);
        }
    }
}

struct Model {
    keys: Vec<KeyModel>,
    /// What the last completed checkpoint holds.
    checkpoint: Option<Vec<Seen>>,
    /// Events after this one were not synced (None: nothing was).
    last_sync: Option<usize>,
}

impl Run {
    /// Prints the workload, step by step, with the events each caused (POWERLOSS_TRACE=run).
    fn trace(&self) {
        println!("run {} (seed {:#x}, {:?}, {} slots):", self.number, self.seed, self.cfg, self.g.slot_count());
        for s in &self.steps {
            println!("  {:?}", s.op);
            for i in s.start..s.end {
                match &self.events[i] {
                    Event::Write { offset, data } => {
                        let slot = offset.checked_sub(self.g.data_base()).map(|o| o as f64 / self.g.slot_bytes() as f64);
                        println!("    event {i}: write {} bytes at {offset} (slot {slot:?}), header {:?}", data.len(), self.headers[i]);
                    }
                    Event::Sync => println!("    event {i}: sync"),
                }
            }
        }
    }

    /// The model at crash point `k`: events `0..k` were issued.
    fn model_at(&self, k: usize) -> Model {
        let n = self.keys.len();
        let mut keys = vec![KeyModel { acked: Some(Seen::Absent), ..Default::default() }; n];
        let mut checkpoint = None;
        for s in &self.steps {
            let done = s.end <= k;
            if !done && s.start >= k {
                break;
            }
            match &s.op {
                Op::Put { key, vid, ok, cut, evicted } => {
                    evict(&mut keys, evicted, done);
                    let km = &mut keys[*key];
                    km.ever.push(*vid);
                    km.touched = true;
                    km.touched_since_sync = true;
                    if !done {
                        km.in_flight = Some(InFlight::Put(*vid));
                        km.may_be_absent |= evicted.contains(key);
                    } else if *ok {
                        km.acked = Some(Seen::Value(*vid));
                        km.failed.clear();
                    } else if *cut {
                        km.failed.push(*vid);
                    }
                }
                Op::PutMany { items, evicted } => {
                    evict(&mut keys, evicted, done);
                    for &(key, vid, ok) in items {
                        let km = &mut keys[key];
                        km.ever.push(vid);
                        km.touched = true;
                        km.touched_since_sync = true;
                        if !done {
                            km.in_flight = Some(InFlight::Put(vid));
                            km.may_be_absent |= evicted.contains(&key);
                        } else if ok {
                            km.acked = Some(Seen::Value(vid));
                            km.failed.clear();
                        }
                    }
                }
                Op::Delete { key } => {
                    let km = &mut keys[*key];
                    km.touched = true;
                    km.touched_since_sync = true;
                    if done {
                        km.acked = Some(Seen::Absent);
                        km.failed.clear();
                    } else {
                        km.in_flight = Some(InFlight::Delete);
                    }
                }
                Op::Poke => {}
                Op::Checkpoint { snapshot } => {
                    if done {
                        checkpoint = Some(snapshot.clone());
                        keys.iter_mut().for_each(|km| km.touched = false);
                        keys.iter_mut().for_each(|km| (km.synced, km.touched_since_sync) = (km.acked, false));
                    }
                }
                Op::Sync => {
                    if done {
                        keys.iter_mut().for_each(|km| (km.synced, km.touched_since_sync) = (km.acked, false));
                    }
                }
                Op::Restart { live } => {
                    // What recovery found is the state from now on (a checkpoint recovery
                    // forgets later puts), except a failed put's value that a scan found:
                    // that was never acknowledged, and the older value still may be.
                    for (km, seen) in keys.iter_mut().zip(live) {
                        let failed_value = match seen {
                            Seen::Value(v) => km.failed.contains(v),
                            Seen::Corrupt => !km.failed.is_empty(),
                            Seen::Absent => false,
                        };
                        if !failed_value {
                            km.acked = Some(*seen);
                        }
                        km.touched_since_sync = true; // the obligation restarts at the next sync
                    }
                }
            }
        }
        let last_sync = self.events[..k].iter().rposition(|e| matches!(e, Event::Sync));
        let unsynced_from = last_sync.map_or(0, |s| s + 1);
        let sb = self.g.slot_bytes();
        for (key, km) in keys.iter_mut().enumerate() {
            let slots: Vec<u64> = self.headers[..k].iter().flatten().filter(|(kk, _)| *kk == key).map(|&(_, s)| s).collect();
            km.unsynced_slot_write = self.events[unsynced_from..k].iter().any(|e| match e {
                Event::Write { offset, data } => slots.iter().any(|&s| {
                    let a = self.g.slot_offset(SlotIndex(s));
                    *offset < a + sb && a < offset + data.len() as u64
                }),
                Event::Sync => false,
            });
        }
        Model { keys, checkpoint, last_sync }
    }
}

/// What becomes of one unsynced write in a crash image.
#[derive(Clone, Copy, Debug)]
enum Fate {
    Dropped,
    Whole,
    /// Some sectors of `sector` bytes land: a random subset, a prefix or a suffix (from `seed`).
    Torn { sector: usize, seed: u64 },
}

/// The fates of the unsynced writes for the images of one crash point.
fn choose_fates(unsynced: usize, rng: &mut Rng) -> Vec<Vec<Fate>> {
    let torn = |rng: &mut Rng| Fate::Torn { sector: if rng.chance(50) { 512 } else { 4096 }, seed: rng.next() };
    if unsynced == 0 {
        return vec![Vec::new()];
    }
    if unsynced <= 2 {
        // Every combination of dropped, whole and torn.
        let mut all = vec![Vec::new()];
        for _ in 0..unsynced {
            all = all
                .into_iter()
                .flat_map(|prefix: Vec<Fate>| {
                    [Fate::Dropped, Fate::Whole, torn(rng)].into_iter().map(move |f| {
                        let mut p = prefix.clone();
                        p.push(f);
                        p
                    })
                })
                .collect();
        }
        return all;
    }
    let mut images = vec![vec![Fate::Whole; unsynced]];
    for _ in 0..3 {
        images.push(
            (0..unsynced)
                .map(|_| match rng.below(10) {
                    0..=2 => Fate::Dropped,
                    3..=5 => Fate::Whole,
                    _ => torn(rng),
                })
                .collect(),
        );
    }
    images
}

/// The sectors of a torn write that land.
fn torn_sectors(len: usize, sector: usize, seed: u64) -> Vec<bool> {
    let n = len.div_ceil(sector);
    let mut rng = Rng::new(seed);
    match rng.below(3) {
        0 => (0..n).map(|_| rng.chance(50)).collect(),
        1 => {
            let cut = rng.below(n as u64 + 1) as usize;
            (0..n).map(|i| i < cut).collect()
        }
        _ => {
            let cut = rng.below(n as u64 + 1) as usize;
            (0..n).map(|i| i >= cut).collect()
        }
    }
}

/// Recovers every crash image of `run` and judges what each returns.
fn sweep(run: &Run, dir: &Path, uring: bool, tally: &mut Tally) {
    let path = dir.join(format!("image-{}.img", run.number));
    let copy = dir.join(format!("image-{}-rw.img", run.number));
    let file = File::create(&path).unwrap();
    file.write_all_at(&run.base, 0).unwrap();
    let mut durable = run.base.clone();
    let mut applied = 0; // events[..applied] are in `durable` and the file
    let mut rng = Rng::new(run.seed ^ 0xC8A5_11ED);
    for k in 0..=run.events.len() {
        let model = run.model_at(k);
        let synced_to = model.last_sync.map_or(0, |s| s + 1);
        for e in &run.events[applied..synced_to.max(applied)] {
            if let Event::Write { offset, data } = e {
                durable[*offset as usize..*offset as usize + data.len()].copy_from_slice(data);
                file.write_all_at(data, *offset).unwrap();
            }
        }
        applied = applied.max(synced_to);
        let unsynced: Vec<usize> = (synced_to..k).filter(|&i| matches!(run.events[i], Event::Write { .. })).collect();
        tally.crash_points += 1;
        for fates in choose_fates(unsynced.len(), &mut rng) {
            let mut touched = Vec::new();
            let mut shown = Vec::new();
            for (&i, fate) in unsynced.iter().zip(&fates) {
                let Event::Write { offset, data } = &run.events[i] else { unreachable!() };
                match *fate {
                    Fate::Dropped => tally.writes_dropped += 1,
                    Fate::Whole => {
                        tally.writes_whole += 1;
                        file.write_all_at(data, *offset).unwrap();
                    }
                    Fate::Torn { sector, seed } => {
                        tally.writes_torn += 1;
                        for (j, land) in torn_sectors(data.len(), sector, seed).into_iter().enumerate() {
                            let from = j * sector;
                            let to = (from + sector).min(data.len());
                            if land {
                                file.write_all_at(&data[from..to], *offset + from as u64).unwrap();
                            }
                        }
                    }
                }
                if !matches!(fate, Fate::Dropped) {
                    touched.push((*offset as usize, data.len()));
                }
                shown.push(format!("event {i} ({} bytes at {offset}): {fate:?}", data.len()));
            }
            let image_no = tally.images;
            tally.images += 1;
            let context = || format!(
                "run {} (seed {:#x}, {:?}), crash after event {k} of {}, unsynced writes: [{}]",
                run.number, run.seed, run.cfg, run.events.len(), shown.join("; ")
            );
            check_image(run, &model, &path, image_no, uring, tally, &context);
            if image_no % 4 == 0 {
                follow_up(run, &model, &path, &copy, tally, &context);
            }
            for (off, len) in touched {
                file.write_all_at(&durable[off..off + len], off as u64).unwrap();
            }
        }
    }
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&copy);
}

/// Which keys have an intact copy on the image: a valid header and a payload that verifies.
fn intact_copies(run: &Run, path: &Path) -> Vec<bool> {
    let img = std::fs::read(path).unwrap();
    let g = &run.g;
    let hb = g.header_bytes() as usize;
    let mut intact = vec![false; run.keys.len()];
    for slot in g.all_slots() {
        let at = g.slot_offset(slot) as usize;
        if let SlotState::Valid(h) = SlotHeader::classify(&img[at..at + hb], &run.device_id, slot) {
            let len = h.payload_len as usize;
            if h.payload_len <= g.max_payload() && crc32(&img[at + hb..at + hb + len]) == h.payload_crc {
                if let Some(k) = run.keys.iter().position(|k| k[..] == *h.key) {
                    intact[k] = true;
                }
            }
        }
    }
    intact
}

fn check_image(run: &Run, model: &Model, path: &Path, image_no: usize, uring: bool, tally: &mut Tally, context: &dyn Fn() -> String) {
    let engine = if uring && image_no % 3 == 0 { EngineChoice::IoUring } else { EngineChoice::Posix };
    let store = match Store::open(path, &open_opts(OpenMode::ReadOnly, engine, false)) {
        Ok(s) => s,
        Err(e) => return tally.violation("open failed", format!("{}: open failed: {e}", context())),
    };
    tally.io_uring += (engine == EngineChoice::IoUring) as usize;
    let mut intact: Option<Vec<bool>> = None;
    for mode in [RecoverMode::Auto, RecoverMode::Scan] {
        let rep = match store.recover(&RecoverOptions { mode, ..Default::default() }) {
            Ok(r) => r,
            Err(e) => return tally.violation("recovery failed", format!("{}: {mode:?} recovery failed: {e}", context())),
        };
        match (mode, rep.from) {
            (RecoverMode::Auto, RecoveredFrom::Checkpoint) => tally.auto_checkpoint += 1,
            (RecoverMode::Auto, RecoveredFrom::Journal) => tally.auto_journal += 1,
            (RecoverMode::Auto, _) => tally.auto_scan += 1,
            _ => tally.scans += 1,
        }
        // Fast recovery (the journal) is held to a scan's promises: it finds every
        // acknowledged put, and prefers an intact copy to a torn newer one.
        let scanned = matches!(rep.from, RecoveredFrom::Scan | RecoveredFrom::Journal);
        let results = read_all(run, &store, |k| model.keys[k].ever.clone());
        for (k, r) in results.into_iter().enumerate() {
            tally.gets += 1;
            let seen = match r {
                Ok(seen) => seen,
                Err(why) => {
                    tally.violation("a read failed or returned wrong bytes", format!("{}: {mode:?} (from {:?}): key {k}: {why}", context(), rep.from));
                    continue;
                }
            };
            let intact_copy = || intact.get_or_insert_with(|| intact_copies(run, path))[k];
            match judge(run, model, k, seen, scanned, intact_copy) {
                Ok(Judged::Value) => tally.values += 1,
                Ok(Judged::Absent) => tally.absent += 1,
                Ok(Judged::CorruptNewKey) => tally.corrupt_new_key += 1,
                Ok(Judged::CorruptUnsynced) => tally.corrupt_unsynced += 1,
                Err(why) => tally.violation(why, format!(
                    "{}: {mode:?} (from {:?}): key {k} reads {seen:?}: {why}; model {:?}, checkpoint {:?}",
                    context(),
                    rep.from,
                    model.keys[k],
                    model.checkpoint.as_ref().map(|c| c[k])
                )),
            }
        }
    }
}

/// How a read was judged acceptable.
enum Judged {
    Value,
    Absent,
    /// RB_E_CORRUPT for a key with no acknowledged value: its first put was torn.
    CorruptNewKey,
    /// RB_E_CORRUPT without SYNC_WRITES, for a key whose slot was written after the last sync.
    CorruptUnsynced,
}

/// The guarantees (docs/RECOVERY.md) one read after a power cut must meet:
///
/// 1. never wrong bytes: a value returned is one put for that key before the crash;
/// 2. a key in the last completed checkpoint, untouched since, reads its checkpointed value;
/// 3. with SYNC_WRITES, no acknowledged delete or replace is undone (the value is the last
///    acknowledged one, or that of a put in flight or failed since), and a scan finds every
///    acknowledged put (absent only when its delete was in flight);
/// 4. RB_E_CORRUPT (item 1): never from a scan while an intact copy of the key is on the
///    device (a torn newer copy must not supersede it); with SYNC_WRITES never for a key with
///    an acknowledged value; without, only for a key whose slot was written after the last
///    sync (the write cache may have kept a later write and lost an earlier one).
fn judge(run: &Run, m: &Model, k: usize, seen: Seen, scanned: bool, intact_copy: impl FnOnce() -> bool) -> Result<Judged, &'static str> {
    let km = &m.keys[k];
    if let Some(Seen::Value(v)) = m.checkpoint.as_ref().map(|c| c[k]) {
        if !km.touched && seen != Seen::Value(v) {
            return Err("a value of the last completed checkpoint, untouched since, was lost");
        }
    }
    if let Some(synced) = km.synced {
        // A put that failed before the sync may show (its clean-up may have failed too).
        let failed_shows = match seen {
            Seen::Value(v) => km.failed.contains(&v),
            Seen::Corrupt => !km.failed.is_empty(),
            Seen::Absent => false,
        };
        if scanned && !km.touched_since_sync && seen != synced && !failed_shows {
            return Err("a state acknowledged before a completed rb_sync (or checkpoint), untouched since, was lost or undone");
        }
    }
    let acked_value = matches!(km.acked, Some(Seen::Value(_)));
    let mut allowed: Vec<Seen> = km.acked.into_iter().collect();
    if let Some(InFlight::Put(v)) = km.in_flight {
        allowed.push(Seen::Value(v));
    }
    allowed.extend(km.failed.iter().map(|&v| Seen::Value(v)));
    match seen {
        Seen::Value(_) => {
            if run.cfg.sync_writes && !allowed.contains(&seen) {
                return Err("SYNC_WRITES: a value older than the acknowledged state (a delete or replace undone)");
            }
            Ok(Judged::Value)
        }
        Seen::Absent => {
            if run.cfg.sync_writes && scanned && acked_value && km.in_flight != Some(InFlight::Delete) && !km.may_be_absent {
                return Err("SYNC_WRITES: a scan lost an acknowledged put");
            }
            Ok(Judged::Absent)
        }
        Seen::Corrupt => {
            if scanned && intact_copy() {
                return Err("RB_E_CORRUPT from a scan although an intact copy of the key is on the device");
            }
            if run.cfg.sync_writes {
                // An eviction in flight with a put of the key may have zeroed its acknowledged
                // copy: then the torn new copy is all there is, as for a new key.
                if acked_value && !km.may_be_absent {
                    return Err("SYNC_WRITES: RB_E_CORRUPT for a key with an acknowledged value");
                }
                Ok(Judged::CorruptNewKey)
            } else if km.unsynced_slot_write {
                Ok(Judged::CorruptUnsynced)
            } else if !acked_value {
                Ok(Judged::CorruptNewKey)
            } else {
                Err("RB_E_CORRUPT for a key none of whose slots was written since the last sync")
            }
        }
    }
}

/// Recovers a copy of the image on a writable handle (SCAN), writes (which runs the queued
/// invalidations), and scans again: every key must read as it did.
fn follow_up(run: &Run, model: &Model, path: &Path, copy: &Path, tally: &mut Tally, context: &dyn Fn() -> String) {
    std::fs::copy(path, copy).unwrap();
    tally.follow_ups += 1;
    let scan = RecoverOptions { mode: RecoverMode::Scan, ..Default::default() };
    let ever = |k: usize| model.keys[k].ever.clone();
    let first = {
        let s = match Store::open(copy, &open_opts(OpenMode::ReadWrite, EngineChoice::Posix, false)) {
            Ok(s) => s,
            Err(e) => return tally.violation("open failed", format!("{}: writable open failed: {e}", context())),
        };
        if let Err(e) = s.recover(&scan) {
            return tally.violation("recovery failed", format!("{}: writable SCAN failed: {e}", context()));
        }
        let r = read_all(run, &s, ever);
        match s.delete(b"\xffpoke") {
            Err(Error::NotFound) => {}
            other => return tally.violation("the first write after recovery failed", format!("{}: the first write after recovery: {other:?}", context())),
        }
        r
    };
    let s = Store::open(copy, &open_opts(OpenMode::ReadOnly, EngineChoice::Posix, false)).unwrap();
    s.recover(&scan).unwrap();
    let again = read_all(run, &s, ever);
    for k in 0..run.keys.len() {
        if first[k] != again[k] {
            tally.violation("a writable recovery's invalidations changed what it had recovered", format!(
                "{}: key {k} read {:?} after a writable SCAN, and {:?} after its invalidations ran",
                context(),
                first[k],
                again[k]
            ));
        }
    }
}

/// Runs workloads until `images` crash images were judged; returns the tally.
fn simulate(seed: u64, images: usize, threads: usize) -> Tally {
    let dir = scratch_dir().join(format!("{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let uring = {
        let p = dir.join("probe.img");
        let _ = std::fs::remove_file(&p);
        let fmt = FormatOptions { capacity_bytes: 1 << 20, geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() }, overwrite: false, ..Default::default() };
        drop(Store::open(&p, &open_opts(OpenMode::Create(fmt), EngineChoice::Posix, false)).unwrap());
        let ok = Store::open(&p, &open_opts(OpenMode::ReadOnly, EngineChoice::IoUring, false)).is_ok();
        let _ = std::fs::remove_file(&p);
        ok
    };
    let share = images.div_ceil(threads);
    let tallies: Vec<Tally> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let dir = &dir;
                sc.spawn(move || {
                    let mut tally = Tally::default();
                    let mut number = t;
                    while tally.images < share {
                        let run_seed = seed ^ (number as u64).wrapping_mul(0xA24B_AED4_963E_E407);
                        let cfg = CONFIGS[number % CONFIGS.len()];
                        let run = record(number, run_seed, cfg, dir, &mut tally);
                        sweep(&run, dir, uring, &mut tally);
                        number += threads;
                    }
                    tally
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut total = Tally::default();
    for t in tallies {
        total.merge(t);
    }
    if !uring {
        println!("powerloss: io_uring is not available here; every image was recovered with the POSIX engine");
    }
    total
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    }
}

/// The sweep `make test` runs (POWERLOSS_IMAGES=2500); `make powerloss` runs a long one.
#[test]
fn powerloss_sweep_keeps_every_recovery_guarantee() {
    let seed = env_u64("POWERLOSS_SEED").unwrap_or(0x1155_0009);
    let images = env_u64("POWERLOSS_IMAGES").unwrap_or(2500) as usize;
    let start = Instant::now();
    let t = simulate(seed, images, 2);
    println!(
        "powerloss: POWERLOSS_SEED={seed:#x}: {} runs ({} with SYNC_WRITES), {} recorded events, {} failed puts injected, {} keys evicted, {} clean restarts, {} delta checkpoints",
        t.runs, t.sync_runs, t.events, t.failed_puts, t.evicted, t.restarts, t.deltas
    );
    println!(
        "powerloss: {} crash images from {} crash points (unsynced writes: {} dropped, {} whole, {} torn)",
        t.images, t.crash_points, t.writes_dropped, t.writes_whole, t.writes_torn
    );
    println!(
        "powerloss: recoveries: AUTO {} ({} fast from the lease journal, {} from a checkpoint, {} scanned), SCAN {}; {} with io_uring; {} writable follow-ups",
        t.auto_checkpoint + t.auto_journal + t.auto_scan,
        t.auto_journal,
        t.auto_checkpoint,
        t.auto_scan,
        t.scans,
        t.io_uring,
        t.follow_ups
    );
    println!(
        "powerloss: {} keys checked: {} values, {} absent, RB_E_CORRUPT {} (a new key's torn first put {}, a slot written since the last sync without SYNC_WRITES {}); violations {} ({:.1} s)",
        t.gets,
        t.values,
        t.absent,
        t.corrupt_new_key + t.corrupt_unsynced,
        t.corrupt_new_key,
        t.corrupt_unsynced,
        t.violations,
        start.elapsed().as_secs_f64()
    );
    for m in &t.messages {
        println!("VIOLATION {m}");
    }
    for (kind, n) in &t.kinds {
        println!("powerloss: {n} violations: {kind}");
    }
    assert_eq!(t.violations, 0, "power-loss guarantees violated (POWERLOSS_SEED={seed:#x}); first ones above");
    assert!(t.images >= images, "only {} images", t.images);
}

/// A store on a fresh file with small slots, recording its writes.
fn recorded_store(name: &str) -> (PathBuf, Store, Arc<Recorder>) {
    let path = scratch_dir().join(format!("{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let fmt = FormatOptions { capacity_bytes: 1 << 20, geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() }, overwrite: false, ..Default::default() };
    let mut s = Store::open(&path, &open_opts(OpenMode::Create(fmt), EngineChoice::Posix, false)).unwrap();
    let rec = Arc::new(Recorder { data_base: s.geometry().data_base(), ..Default::default() });
    s.set_write_log(rec.clone());
    (path, s, rec)
}

fn reopen(path: &Path, read_only: bool, mode: RecoverMode) -> (Store, crate::store::RecoverReport) {
    let m = if read_only { OpenMode::ReadOnly } else { OpenMode::ReadWrite };
    let s = Store::open(path, &open_opts(m, EngineChoice::Posix, false)).unwrap();
    let rep = s.recover(&RecoverOptions { mode, ..Default::default() }).unwrap();
    (s, rep)
}

fn get(s: &Store, key: &[u8]) -> crate::Result<Vec<u8>> {
    read(s, key, &mut vec![0u8; s.geometry().max_payload() as usize])
}

/// Item 1(a): a crash tore a replace's payload under a valid header, before the old copy's
/// header was zeroed. The scan must keep the old value, and the clean-up its first write runs
/// must remove the torn copy, not the good one.
#[test]
fn a_scan_prefers_the_older_copy_to_a_torn_replace() {
    let (path, s, _) = recorded_store("torn-replace");
    let g = *s.geometry();
    let (v1, v2) = (vec![1u8; 40_000], vec![2u8; 50_000]);
    s.put(b"K", &v1).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let mut old_header = vec![0u8; g.header_bytes() as usize];
    file.read_exact_at(&mut old_header, g.slot_offset(SlotIndex(0))).unwrap();
    s.put(b"K", &v2).unwrap(); // slot 1; zeroes slot 0's header
    drop(s);
    // The crash image: the zeroing never landed, and one sector of the new payload did not either.
    file.write_all_at(&old_header, g.slot_offset(SlotIndex(0))).unwrap();
    file.write_all_at(&[0u8; 512], g.slot_offset(SlotIndex(1)) + g.header_bytes() as u64 + 8192).unwrap();
    for (mode, from) in [(RecoverMode::Auto, RecoveredFrom::Journal), (RecoverMode::Scan, RecoveredFrom::Scan)] {
        let (s, rep) = reopen(&path, true, mode);
        assert_eq!(rep.from, from);
        assert_eq!(get(&s, b"K").unwrap(), v1, "{mode:?}: the acknowledged value, not RB_E_CORRUPT");
        assert_eq!(rep.dropped_stale, 1, "the torn copy lost");
    }
    let (s, _) = reopen(&path, false, RecoverMode::Auto);
    s.put(b"other", b"x").unwrap(); // runs the invalidation of the loser
    drop(s);
    let (s, rep) = reopen(&path, true, RecoverMode::Scan);
    assert_eq!(get(&s, b"K").unwrap(), v1, "the clean-up removed the torn copy, not the good one");
    assert_eq!(rep.dropped_stale, 0);
    let _ = std::fs::remove_file(&path);
}

/// Item 1(b): a replacing put whose write fails part-way (a filling filesystem) leaves the
/// acknowledged value, now and after a restart, even when zeroing what it left fails too;
/// and a replace whose old copy cannot be zeroed retries that before any later write.
#[test]
fn a_failed_replace_leaves_the_acknowledged_value() {
    let (path, s, rec) = recorded_store("failed-replace");
    let g = *s.geometry();
    let (v1, v2) = (vec![1u8; 40_000], vec![2u8; 50_000]);
    let cut_after = g.header_bytes() as usize + 4096;
    s.put(b"K", &v1).unwrap();

    // The record write fails after its header and one block; the clean-up zeroes that header.
    lock(&rec.cuts).push_back(Some(cut_after));
    assert!(matches!(s.put(b"K", &v2), Err(Error::Io { .. } | Error::HostNoSpace { .. })));
    assert_eq!(get(&s, b"K").unwrap(), v1);

    // Nothing of the record lands and the clean-up fails (say ENOSPC on a sparse file): no
    // header to undo, so the slot is simply freed and later writes are not held up.
    lock(&rec.cuts).extend([Some(0), Some(0)]);
    assert!(matches!(s.put(b"K", &v2), Err(Error::Io { .. } | Error::HostNoSpace { .. })));
    let before = rec.len();
    s.put(b"other", b"x").unwrap();
    assert!(
        matches!(&lock(&rec.events)[before], Event::Write { data, .. } if data.iter().any(|&b| b != 0)),
        "the next write is its own record, not a retried zeroing"
    );
    s.delete(b"other").unwrap();
    assert_eq!(get(&s, b"K").unwrap(), v1);

    // The record write fails and so does the clean-up: the slot stays allocated, and the
    // process ends before any later write could retry.
    lock(&rec.cuts).extend([Some(cut_after), Some(0)]);
    assert!(matches!(s.put(b"K", &v2), Err(Error::Io { .. } | Error::HostNoSpace { .. })));
    assert_eq!(get(&s, b"K").unwrap(), v1);
    drop(s);
    let (s, rep) = reopen(&path, true, RecoverMode::Auto);
    assert_eq!(get(&s, b"K").unwrap(), v1, "a failed put must not destroy the acknowledged value");
    assert_eq!(rep.dropped_stale, 1, "the torn copy a scan found lost to the verified one");
    drop(s);

    // The new record lands but zeroing the old copy's header fails: the put reports the error
    // (the replace is not acknowledged) and the next write zeroes that header first.
    let (mut s, _) = reopen(&path, false, RecoverMode::Auto);
    s.set_write_log(rec.clone());
    s.checkpoint().unwrap(); // names v1 in its slot
    let id = s.device_id();
    let holds_k = |slot: SlotIndex| {
        let mut h = vec![0u8; g.header_bytes() as usize];
        File::open(&path).unwrap().read_exact_at(&mut h, g.slot_offset(slot)).unwrap();
        matches!(SlotHeader::classify(&h, &id, slot), SlotState::Valid(h) if h.key == b"K")
    };
    let v1_slot = g.all_slots().find(|&slot| holds_k(slot)).expect("v1's header");
    lock(&rec.cuts).extend([None, Some(0)]);
    assert!(matches!(s.put(b"K", &v2), Err(Error::Io { .. } | Error::HostNoSpace { .. })));
    assert_eq!(get(&s, b"K").unwrap(), v2, "the new value is installed");
    assert!(holds_k(v1_slot), "the old header is still there");
    s.put(b"other", b"x").unwrap();
    assert!(!holds_k(v1_slot), "the next write zeroed it first, so the older checkpoint cannot bring v1 back");
    drop(s);
    let (s, _) = reopen(&path, true, RecoverMode::Checkpoint);
    assert!(matches!(get(&s, b"K"), Err(Error::NotFound)), "the checkpoint's entry for v1 is stale");
    let _ = std::fs::remove_file(&path);
}

/// What RB_OPEN_SYNC_WRITES buys: put a; checkpoint; put b (O_DSYNC) and a power cut right
/// after. b's bytes and its lease are on the media: AUTO (fast recovery) and a scan find b;
/// full validation of the checkpoint (RB_RECOVER_CHECKPOINT) does not list it.
#[test]
fn sync_writes_put_after_a_checkpoint_is_found_by_auto_and_a_scan() {
    let path = scratch_dir().join(format!("sync-writes-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let fmt = FormatOptions { capacity_bytes: 1 << 20, geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() }, overwrite: false, ..Default::default() };
    let mut s = Store::open(&path, &open_opts(OpenMode::Create(fmt), EngineChoice::Posix, true)).unwrap();
    let rec = Arc::new(Recorder::default());
    s.set_write_log(rec.clone());
    s.put(b"a", b"value a").unwrap();
    s.checkpoint().unwrap();
    let before_b = rec.len();
    s.put(b"b", b"value b").unwrap();
    let events = lock(&rec.events);
    assert!(
        matches!(events[before_b..], [.., Event::Write { .. }, Event::Sync]),
        "with O_DSYNC the put's write is durable when it returns"
    );
    // Every write was synced (O_DSYNC): the file is the image a power cut right now leaves.
    drop(events);
    drop(s);
    let (s, rep) = reopen(&path, true, RecoverMode::Auto);
    assert_eq!((rep.from, rep.recovered_since_checkpoint), (RecoveredFrom::Journal, 1));
    assert_eq!(get(&s, b"a").unwrap(), b"value a");
    assert_eq!(get(&s, b"b").unwrap(), b"value b", "AUTO finds the put acknowledged after the checkpoint");
    let (s, rep) = reopen(&path, true, RecoverMode::Checkpoint);
    assert_eq!(rep.from, RecoveredFrom::Checkpoint);
    assert!(matches!(get(&s, b"b"), Err(Error::NotFound)), "full validation indexes only what the checkpoint lists");
    let (s, _) = reopen(&path, true, RecoverMode::Scan);
    assert_eq!(get(&s, b"b").unwrap(), b"value b", "a scan finds the acknowledged put");
    let _ = std::fs::remove_file(&path);
}
