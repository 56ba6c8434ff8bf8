//! The lease journal and fast recovery (issue 13), over real files with O_DIRECT. A handle
//! dropped without a checkpoint is what a killed process leaves: its writes reached the file.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::tests::tmp;
use super::*;
use crate::engine::{EngineChoice, EngineConfig, FaultMode};
use crate::format::geometry::NO_JOURNAL;
use crate::format::GeometryRequest;

fn create(name: &str, geometry: GeometryRequest, capacity: u64) -> (PathBuf, Store) {
    let p = tmp(name);
    let format = FormatOptions { capacity_bytes: capacity, geometry, overwrite: true, ..Default::default() };
    let opts = OpenOptions { mode: OpenMode::Create(format), ..Default::default() };
    (p.clone(), Store::open(&p, &opts).unwrap())
}

fn small(name: &str) -> (PathBuf, Store) {
    create(name, GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, 16 << 20)
}

fn reopen(p: &Path, read_only: bool) -> Store {
    let opts = OpenOptions {
        mode: if read_only { OpenMode::ReadOnly } else { OpenMode::ReadWrite },
        engine: EngineConfig::new(EngineChoice::IoUring, 1, 8),
        ..Default::default()
    };
    Store::open(p, &opts).unwrap()
}

fn get(s: &Store, key: &[u8]) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; s.geometry().max_payload() as usize];
    let n = s.get(key, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn auto() -> RecoverOptions {
    RecoverOptions::default()
}

/// Every key of `model` reads its value, and no other key of the `k*` family is present.
fn assert_holds(s: &Store, model: &HashMap<String, Vec<u8>>, keys: usize) {
    for i in 0..keys {
        let k = format!("k{i}");
        match model.get(&k) {
            Some(v) => assert_eq!(get(s, k.as_bytes()).unwrap(), *v, "{k}"),
            None => assert!(matches!(get(s, k.as_bytes()), Err(Error::NotFound)), "{k} must be absent"),
        }
    }
}

#[test]
fn puts_replaces_and_deletes_since_the_checkpoint_survive_a_kill() {
    let (p, s) = small("lease-kill");
    let mut model = HashMap::new();
    for i in 0..120 {
        let (k, v) = (format!("k{i}"), format!("checkpointed {i}").into_bytes());
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    s.checkpoint().unwrap();
    for i in (0..120).step_by(10) {
        let (k, v) = (format!("k{i}"), format!("replaced {i}").into_bytes());
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    for i in (5..120).step_by(20) {
        s.delete(format!("k{i}").as_bytes()).unwrap();
        model.remove(&format!("k{i}"));
    }
    for i in 120..140 {
        let (k, v) = (format!("k{i}"), vec![i as u8; 3000]);
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    drop(s);
    let s = reopen(&p, false);
    let r = s.recover(&auto()).unwrap();
    assert_eq!(r.from, RecoveredFrom::Journal);
    assert_eq!((r.checkpoint_sequence, r.checkpoint_entries), (1, 120));
    assert_eq!(r.recovered_since_checkpoint, 12 + 20, "12 replaced and 20 new keys");
    assert_eq!(r.header_reads, r.leased_slots);
    assert!(r.leased_slots < 120, "only what changed is read: {} leased slots", r.leased_slots);
    assert_eq!(r.trusted_unread + r.recovered_since_checkpoint, r.indexed);
    assert_holds(&s, &model, 140);
    // The deleted keys' entries met their first read and left the index.
    assert_eq!(s.len(), model.len());
    // Full validation sees the checkpoint only: it forgets the puts made since.
    drop(s);
    let s = reopen(&p, true);
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Checkpoint, 120 - 6 - 12));
}

/// What a first get of a trusted (unread) entry meets: its header gone (deleted), another
/// value's header (replaced: never seen, the newer copy wins at recovery), garbage (a torn
/// zeroing), a corrupt payload under its own header, an unreadable slot.
#[test]
fn lazy_verification_meets_deleted_corrupted_torn_and_unreadable_entries() {
    let (p, s) = small("lease-lazy");
    for k in ["gone", "torn", "rotten", "unreadable", "fine"] {
        s.put(k.as_bytes(), &vec![7u8; 9000]).unwrap();
    }
    s.checkpoint().unwrap();
    let slot = |k: &[u8]| lock(&s.state).index.get(k).unwrap().slot;
    let g = *s.geometry();
    let (torn, rotten, unreadable) = (slot(b"torn"), slot(b"rotten"), slot(b"unreadable"));
    s.delete(b"gone").unwrap();
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xA5; 64], g.slot_offset(torn) + 8).unwrap(); // a header no longer its own
    f.write_all_at(&[0x5A; 16], g.slot_offset(rotten) + g.header_bytes() as u64 + 100).unwrap(); // payload bytes
    drop(f);
    let s = reopen(&p, false);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.indexed, r.trusted_unread), (5, 5), "all trusted: none of their slots was leased since");
    s.inject_read_faults(&[unreadable], libc::EIO, FaultMode::Persistent);
    assert!(matches!(get(&s, b"gone"), Err(Error::NotFound)), "deleted after the checkpoint: not found");
    assert!(matches!(get(&s, b"torn"), Err(Error::NotFound)), "a header that is not its own: gone, not corrupt");
    assert!(matches!(get(&s, b"rotten"), Err(Error::Corrupt(_))), "its own header over a bad payload: corruption");
    let mut buf = vec![0u8; 16 << 10];
    let r = s.get_many(&[b"unreadable"], &mut [&mut buf[..]]).unwrap(); // through the engine, which injects
    assert!(matches!(r[0], Err(Error::Io { .. })), "an I/O error keeps the entry: {:?}", r[0]);
    assert!(s.contains(b"unreadable").unwrap() && !s.contains(b"gone").unwrap() && !s.contains(b"torn").unwrap());
    s.clear_read_faults();
    assert_eq!(get(&s, b"unreadable").unwrap(), vec![7u8; 9000]);
    assert_eq!(get(&s, b"fine").unwrap(), vec![7u8; 9000]);
    // The torn header is zeroed before the next write; nothing can bring the key back.
    s.put(b"after", b"x").unwrap();
    let mut h = vec![0u8; g.header_bytes() as usize];
    std::fs::File::open(&p).unwrap().read_exact_at(&mut h, g.slot_offset(torn)).unwrap();
    assert!(h.iter().all(|&b| b == 0), "the torn header was zeroed");
    drop(s);
    let s = reopen(&p, true);
    s.recover(&RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }).unwrap();
    assert!(!s.contains(b"gone").unwrap() && !s.contains(b"torn").unwrap());
}

#[test]
fn background_verification_drops_what_is_gone_in_bounded_steps() {
    let (p, s) = small("lease-verify");
    for i in 0..100 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    s.checkpoint().unwrap();
    for i in 0..10 {
        s.delete(format!("k{i}").as_bytes()).unwrap();
    }
    drop(s);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!(r.trusted_unread, 100);
    assert_eq!(s.verify_step(0).unwrap(), VerifyProgress { remaining: 100, ..Default::default() });
    let (mut checked, mut dropped, mut steps) = (0, 0, 0);
    loop {
        let p = s.verify_step(32).unwrap();
        assert!(p.checked <= 32);
        checked += p.checked;
        dropped += p.dropped;
        steps += 1;
        if p.remaining == 0 {
            break;
        }
    }
    assert_eq!((checked, dropped, steps), (100, 10, 4));
    assert_eq!(s.len(), 90);
    assert!(!s.contains(b"k3").unwrap() && s.contains(b"k30").unwrap());
    assert_eq!(s.verify_step(32).unwrap().checked, 0, "nothing left to verify");
}

/// A lease record written before the checkpoint names slots the checkpoint already covers:
/// recovery from that checkpoint must not read them (nor drop their entries).
#[test]
fn lease_records_older_than_the_checkpoint_are_not_read() {
    let (p, s) = small("lease-old");
    s.put(b"before", b"1").unwrap();
    let before = lock(&s.state).index.get(b"before").unwrap().slot;
    s.checkpoint().unwrap();
    s.delete(b"before").unwrap();
    drop(s);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.trusted_unread, r.dropped_stale), (1, 0), "'before' is trusted: its epoch-0 lease is obsolete");
    let leased = s.read_journal().unwrap().leased_since(1, s.geometry().slot_count());
    assert!(!leased.contains(&before), "slot {before} is leased only before the checkpoint");
    assert!(matches!(get(&s, b"before"), Err(Error::NotFound)));
}

/// A lease record write that fails fails the put, and loses nothing durable.
#[test]
fn a_failed_lease_write_fails_the_put_and_loses_nothing() {
    struct FailJournal {
        from: u64,
        to: u64,
        fails: AtomicU64,
    }
    impl crate::device::WriteLog for FailJournal {
        fn cut(&self, offset: u64, _len: usize) -> Option<usize> {
            let hit = (self.from..self.to).contains(&offset) && self.fails.load(Ordering::SeqCst) > 0;
            hit.then(|| {
                self.fails.fetch_sub(1, Ordering::SeqCst);
                100 // a torn record: its first 100 bytes
            })
        }
        fn wrote(&self, _: u64, _: &[u8], _: bool) {}
        fn synced(&self) {}
    }
    let (p, mut s) = create("lease-fail", GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, 4 << 20);
    let g = *s.geometry();
    let log = Arc::new(FailJournal { from: g.journal_offset(), to: g.data_base(), fails: AtomicU64::new(0) });
    s.set_write_log(log.clone());
    let mut n = 0;
    // Fill the first lease batch; the next put must lease again.
    while lock(&s.state).leases.pooled() > 0 || n == 0 {
        s.put(format!("k{n}").as_bytes(), b"before").unwrap();
        n += 1;
    }
    log.fails.store(1, Ordering::SeqCst);
    assert!(matches!(s.put(b"k0", b"after"), Err(Error::Io { .. } | Error::HostNoSpace { .. })));
    assert_eq!(get(&s, b"k0").unwrap(), b"before", "the failed put left the old value");
    s.put(b"next", b"lands").unwrap();
    drop(s);
    let s = reopen(&p, true);
    s.recover(&auto()).unwrap();
    assert_eq!(get(&s, b"k0").unwrap(), b"before");
    assert_eq!(get(&s, b"next").unwrap(), b"lands");
    assert_eq!(s.len(), n + 1);
}

/// A journal that fills up takes a checkpoint inside a put; one that cannot (the index no
/// longer fits its container) overflows: puts go on, and the next recovery scans.
#[test]
fn a_full_journal_checkpoints_or_overflows_and_loses_nothing() {
    let (p, s) = create("lease-full", GeometryRequest { slot_bytes: 64 * 1024, journal_blocks: 2, ..Default::default() }, 8 << 20);
    let mut model = HashMap::new();
    for round in 0..6 {
        for i in 0..100 {
            let (k, v) = (format!("k{i}"), format!("{round}-{i}").into_bytes());
            s.put(k.as_bytes(), &v).unwrap();
            model.insert(k, v);
        }
    }
    let taken = lock(&s.checkpoints).next_sequence;
    assert!(taken > 1, "the full journal took checkpoints (next sequence {taken})");
    drop(s);
    let s = reopen(&p, false);
    let r = s.recover(&auto()).unwrap();
    assert_eq!(r.from, RecoveredFrom::Journal);
    assert_holds(&s, &model, 100);
    drop(s);

    // Containers too small for the index: the checkpoint the full journal asks for fails.
    let geometry = GeometryRequest { slot_bytes: 64 * 1024, journal_blocks: 2, meta_bytes: 6 * 4096, ..Default::default() };
    let (p, s) = create("lease-overflow", geometry, 8 << 20);
    let key = |i: usize| format!("a key long enough that 110 of them overflow the container {i:04}");
    // Each lease takes every free slot (a 2-block journal covers the device twice): the third fills it.
    for round in 0..4 {
        for i in 0..110 {
            s.put(key(i).as_bytes(), &[(i + round) as u8; 100]).unwrap();
        }
    }
    assert!(matches!(s.checkpoint(), Err(Error::CheckpointTooLarge { .. })));
    assert!(lock(&s.state).leases.overflowed, "the journal overflowed");
    drop(s);
    let s = reopen(&p, false);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Scan, 110), "an overflowed journal cannot say what changed");
    for i in 0..110 {
        assert_eq!(get(&s, key(i).as_bytes()).unwrap(), [(i + 3) as u8; 100]);
    }
}

/// Checkpoints taken while other threads put: whatever was acknowledged before the kill is
/// there afterwards, whichever side of a checkpoint's snapshot its slot was leased on.
#[test]
fn checkpoints_racing_puts_lose_nothing() {
    let (p, s) = create("lease-race", GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, 32 << 20);
    let s = Arc::new(s);
    let writers: Vec<_> = (0..3)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut acked = HashMap::new();
                for n in 0..400 {
                    let (k, v) = (format!("t{t}-{}", n % 60), format!("{t}/{n}").into_bytes());
                    s.put(k.as_bytes(), &v).unwrap();
                    acked.insert(k, v);
                }
                acked
            })
        })
        .collect();
    let checkpointer = {
        let s = s.clone();
        std::thread::spawn(move || (0..30).map(|_| s.checkpoint().unwrap().sequence).last())
    };
    let acked: Vec<HashMap<String, Vec<u8>>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
    assert!(checkpointer.join().unwrap().unwrap() >= 30);
    drop(Arc::into_inner(s).unwrap());
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!(r.from, RecoveredFrom::Journal);
    for (k, v) in acked.iter().flatten() {
        assert_eq!(get(&s, k.as_bytes()).unwrap(), *v, "{k}");
    }
    assert_eq!(s.len(), 180);
}

/// Devices formatted before the journal existed recover as they always did.
#[test]
fn a_device_without_a_journal_recovers_by_full_validation() {
    let (p, s) = create("lease-none", GeometryRequest { slot_bytes: 64 * 1024, journal_blocks: NO_JOURNAL, ..Default::default() }, 8 << 20);
    assert_eq!(s.geometry().journal_blocks(), 0);
    s.put(b"a", b"1").unwrap();
    s.checkpoint().unwrap();
    s.put(b"b", b"2").unwrap();
    drop(s);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.from, r.indexed, r.header_reads), (RecoveredFrom::Checkpoint, 1, 1));
    assert!(matches!(get(&s, b"b"), Err(Error::NotFound)), "as before: puts since the checkpoint need a scan");
}

#[test]
fn the_auto_checkpoint_policy_checkpoints_after_enough_changes_or_time() {
    let (p, s) = small("lease-auto");
    s.set_auto_checkpoint(AutoCheckpoint { every_changes: 50, every: std::time::Duration::ZERO });
    for i in 0..120 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    assert_eq!(lock(&s.checkpoints).next_sequence, 3, "two checkpoints: after 50 and 100 changes");
    s.set_auto_checkpoint(AutoCheckpoint { every_changes: 0, every: std::time::Duration::from_millis(30) });
    s.put(b"x", b"1").unwrap();
    assert_eq!(lock(&s.checkpoints).next_sequence, 3, "not yet: 30 ms have not passed");
    std::thread::sleep(std::time::Duration::from_millis(40));
    s.delete(b"x").unwrap();
    assert_eq!(lock(&s.checkpoints).next_sequence, 4, "the interval passed with changes pending");
    assert_eq!(s.auto_checkpoint_failures(), 0);
    drop(s);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.checkpoint_sequence, r.checkpoint_entries, r.recovered_since_checkpoint), (3, 120, 0));
}

/// A checkpoint after a small change is a delta: it writes what changed since the last full
/// one, recovers to the same index, and costs a fraction of a full checkpoint's bytes.
#[test]
fn a_delta_checkpoint_writes_only_what_changed() {
    let (p, s) = small("delta");
    let mut model = HashMap::new();
    for i in 0..200 {
        let (k, v) = (format!("k{i}"), format!("base {i}").into_bytes());
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    let full = s.checkpoint().unwrap();
    assert_eq!(full.delta_of, None, "the first checkpoint of a handle is full");
    for i in (0..200).step_by(20) {
        let (k, v) = (format!("k{i}"), format!("replaced {i}").into_bytes());
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    for i in [3, 33, 63] {
        s.delete(format!("k{i}").as_bytes()).unwrap();
        model.remove(&format!("k{i}"));
    }
    s.put(b"k200", b"new").unwrap();
    model.insert("k200".into(), b"new".to_vec());
    let delta = s.checkpoint().unwrap();
    assert_eq!(delta.delta_of, Some(full.sequence));
    assert_eq!(delta.entries, 11, "10 replaced and 1 new");
    assert!(delta.payload_bytes * 10 < full.payload_bytes, "{} bytes against {}", delta.payload_bytes, full.payload_bytes);
    // A second delta holds everything since the base, not since the first delta.
    s.put(b"k1", b"again").unwrap();
    model.insert("k1".into(), b"again".to_vec());
    let second = s.checkpoint().unwrap();
    assert_eq!((second.delta_of, second.entries), (Some(full.sequence), 12));
    drop(s);
    for mode in [RecoverMode::Auto, RecoverMode::Checkpoint] {
        let s = reopen(&p, true);
        let r = s.recover(&RecoverOptions { mode, ..Default::default() }).unwrap();
        assert_eq!((r.checkpoint_sequence, r.checkpoint_entries, r.indexed), (second.sequence, 198, 198), "{mode:?}");
        assert_eq!(r.recovered_since_checkpoint, 0);
        assert_holds(&s, &model, 201);
    }
}

/// A delta torn by a crash (or damaged) leaves its base, and the journal records since the
/// base are all still there: fast recovery from the base loses nothing. A lost base makes
/// its delta unusable: AUTO scans.
#[test]
fn a_torn_delta_falls_back_to_its_base_and_a_lost_base_to_a_scan() {
    let (p, s) = small("delta-torn");
    let mut model = HashMap::new();
    for i in 0..200 {
        let (k, v) = (format!("k{i}"), format!("base {i}").into_bytes());
        s.put(k.as_bytes(), &v).unwrap();
        model.insert(k, v);
    }
    s.checkpoint().unwrap();
    for round in 0..3 {
        for i in (round..200).step_by(40) {
            let (k, v) = (format!("k{i}"), format!("round {round} {i}").into_bytes());
            s.put(k.as_bytes(), &v).unwrap();
            model.insert(k, v);
        }
        assert!(s.checkpoint().unwrap().delta_of.is_some());
    }
    let newest = lock(&s.checkpoints).newest.unwrap();
    let base = lock(&s.checkpoints).base.unwrap().1;
    assert_ne!(newest, base);
    let g = *s.geometry();
    drop(s);
    let image = std::fs::read(&p).unwrap();
    // The newest delta's payload torn: its commit record stays, its CRC fails.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xEE; 64], g.container_offset(newest) + g.block_size() as u64 + 8).unwrap();
    drop(f);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!((r.from, r.checkpoint_sequence), (RecoveredFrom::Journal, 1), "fast, from the base");
    assert_eq!(r.recovered_since_checkpoint, 15, "every put since the base, through the journal");
    // Every slot leased since the base is read, once.
    assert_eq!(r.header_reads, r.leased_slots);
    assert_holds(&s, &model, 200);
    drop(s);
    // The base lost instead: the delta cannot be used alone.
    std::fs::write(&p, &image).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xEE; 64], g.container_offset(base) + g.block_size() as u64 + 8).unwrap();
    drop(f);
    let s = reopen(&p, true);
    let r = s.recover(&auto()).unwrap();
    assert_eq!(r.from, RecoveredFrom::Scan);
    assert_holds(&s, &model, 200);
}
