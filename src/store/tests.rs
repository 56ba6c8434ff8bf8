//! Store tests over real files with O_DIRECT.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::*;
use crate::engine::{EngineChoice, EngineConfig, FaultMode};
use crate::error::Holds;
use crate::format::{Container, Generation, GeometryRequest, SlotHeader, SlotState};
use crate::store::SuperblockSource;
use std::path::Path;

pub(crate) fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/store"));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn format_opts(capacity: u64, geometry: GeometryRequest, overwrite: bool) -> OpenOptions {
    OpenOptions { mode: OpenMode::Create(FormatOptions { capacity_bytes: capacity, geometry, overwrite, ..Default::default() }), ..Default::default() }
}

fn create_opts(capacity: u64) -> OpenOptions {
    format_opts(capacity, GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, false)
}

fn small(name: &str) -> (PathBuf, Store) {
    let p = tmp(name);
    let s = Store::open(&p, &create_opts(8 << 20)).unwrap();
    (p, s)
}

fn reopen(p: &Path, engine: EngineChoice, read_only: bool) -> Store {
    let opts = OpenOptions {
        mode: if read_only { OpenMode::ReadOnly } else { OpenMode::ReadWrite },
        engine: EngineConfig::new(engine, 1, 8),
        ..Default::default()
    };
    Store::open(p, &opts).unwrap()
}

/// Full validation: every checkpoint entry checked against its header.
fn full() -> RecoverOptions {
    RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }
}

fn get(s: &Store, key: &[u8]) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; s.geometry().max_payload() as usize];
    let n = s.get(key, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn put_get_round_trips_many_sizes() {
    let (_p, s) = small("sizes");
    let max = s.geometry().max_payload() as usize;
    for (i, len) in [0, 1, 511, 4095, 4096, 4097, 10_000, max].into_iter().enumerate() {
        let key = format!("k{len}");
        s.put(key.as_bytes(), &value(i, len)).unwrap();
        assert_eq!(get(&s, key.as_bytes()).unwrap(), value(i, len), "len {len}");
        assert_eq!(s.value_len(key.as_bytes()).unwrap(), len as u64);
    }
    assert_eq!(s.len(), 8);
}

#[test]
fn replace_delete_contains() {
    let (_p, s) = small("replace");
    s.put(b"a", b"one").unwrap();
    let slots_free = lock(&s.state).free_slots();
    s.put(b"a", b"two").unwrap();
    assert_eq!(get(&s, b"a").unwrap(), b"two");
    assert_eq!(lock(&s.state).free_slots(), slots_free, "the old slot was freed");
    assert!(s.contains(b"a").unwrap());
    s.delete(b"a").unwrap();
    assert!(!s.contains(b"a").unwrap());
    assert!(matches!(get(&s, b"a"), Err(Error::NotFound)));
    assert!(matches!(s.delete(b"a"), Err(Error::NotFound)));
}

#[test]
fn small_buffer_says_how_much_is_needed() {
    let (_p, s) = small("bufsize");
    s.put(b"k", &[7u8; 1000]).unwrap();
    let mut buf = [0u8; 10];
    assert!(matches!(s.get(b"k", &mut buf), Err(Error::BufferTooSmall { needed: 1000 })));
}

#[test]
fn limits_are_clear_errors() {
    let (_p, s) = small("limits");
    let g = *s.geometry();
    assert!(matches!(s.put(&vec![b'k'; g.max_key_bytes() as usize + 1], b"v"), Err(Error::TooLarge { what: Oversized::Key, .. })));
    assert!(matches!(s.put(b"k", &vec![0; g.max_payload() as usize + 1]), Err(Error::TooLarge { what: Oversized::Value, .. })));
    assert!(matches!(s.put(b"", b"v"), Err(Error::InvalidArgument(_))));
    for i in 0..g.slot_count() {
        s.put(format!("{i}").as_bytes(), b"x").unwrap();
    }
    assert!(matches!(s.put(b"one-too-many", b"x"), Err(Error::SlotsFull { .. })));
    // Replacing needs a free slot too, and losing that race keeps the old value.
    assert!(matches!(s.put(b"0", b"y"), Err(Error::SlotsFull { .. })));
    assert_eq!(get(&s, b"0").unwrap(), b"x");
    s.delete(b"1").unwrap();
    s.put(b"one-too-many", b"x").unwrap();
}

#[test]
fn existing_device_needs_recovery_and_overwrite_flag() {
    let (p, s) = small("reopen-state");
    s.put(b"k", b"v").unwrap();
    s.checkpoint().unwrap();
    drop(s);
    let s = reopen(&p, EngineChoice::Posix, false);
    assert!(matches!(s.put(b"x", b"y"), Err(Error::NeedsRecovery)));
    assert!(matches!(s.contains(b"k"), Err(Error::NeedsRecovery)));
    s.recover(&RecoverOptions::default()).unwrap();
    assert!(matches!(s.recover(&RecoverOptions::default()), Err(Error::AlreadyRecovered)));
    drop(s);
    assert!(matches!(Store::open(&p, &create_opts(8 << 20)), Err(Error::Exists { holds: Holds::Rawblock, .. })));
    let again = format_opts(8 << 20, GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, true);
    let s = Store::open(&p, &again).unwrap();
    assert!(s.is_empty());
}

#[test]
fn unformatted_and_truncated_devices_are_format_errors() {
    let p = tmp("unformatted");
    std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
    let e = Store::open(&p, &OpenOptions::default()).err().expect("an unformatted file does not open");
    assert!(matches!(e, Error::NotRawblock { .. }), "{e}");
    assert_eq!(e.status(), crate::Status::Format);
    let (p, s) = small("truncated");
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(4 << 20).unwrap();
    assert!(matches!(Store::open(&p, &OpenOptions::default()), Err(Error::Format(_))));
}

#[test]
fn checkpoint_then_recover_with_every_engine() {
    let (p, s) = small("recover");
    for i in 0..40 {
        s.put(format!("key-{i}").as_bytes(), &value(i, i * 100)).unwrap();
    }
    s.delete(b"key-3").unwrap();
    s.put(b"key-4", b"replaced").unwrap();
    let info = s.checkpoint().unwrap();
    assert_eq!((info.sequence, info.entries), (1, 39));
    drop(s);
    for engine in [EngineChoice::Posix, EngineChoice::IoUring] {
        let s = reopen(&p, engine, true);
        let r = s.recover(&RecoverOptions::default()).unwrap();
        assert_eq!(r.from, RecoveredFrom::Journal, "fast recovery is the default");
        assert_eq!((r.checkpoint_sequence, r.checkpoint_entries, r.indexed), (1, 39, 39));
        assert_eq!((r.trusted_unread, r.recovered_since_checkpoint), (39, 0));
        assert_eq!(r.header_reads, r.leased_slots, "only leased (here: leased and unused) slots are read");
        let r = s.recover(&full()).unwrap();
        assert_eq!(r.from, RecoveredFrom::Checkpoint);
        assert_eq!((r.checkpoint_sequence, r.checkpoint_entries, r.indexed), (1, 39, 39));
        assert_eq!((r.dropped_stale, r.dropped_unreadable, r.header_reads), (0, 0, 39));
        assert!(matches!(get(&s, b"key-3"), Err(Error::NotFound)));
        assert_eq!(get(&s, b"key-4").unwrap(), b"replaced");
        for i in (0..40).filter(|&i| i != 3 && i != 4) {
            assert_eq!(get(&s, format!("key-{i}").as_bytes()).unwrap(), value(i, i * 100));
        }
        assert!(matches!(s.put(b"x", b"y"), Err(Error::ReadOnly)));
    }
}

/// A payload of several load chunks (8 KiB in unit tests) is read by several lanes at once:
/// every entry comes back, and a damaged byte in a chunk another lane read fails the CRC.
#[test]
fn a_payload_of_many_chunks_loads_whole_or_not_at_all() {
    let (p, s) = small("many-chunks");
    let key = |i: usize| format!("key-{i}-{}", "k".repeat(500)).into_bytes();
    for i in 0..100 {
        s.put(&key(i), &value(i, 64)).unwrap();
    }
    let info = s.checkpoint().unwrap();
    assert!(info.payload_bytes > 5 * 8192, "five chunks or more: {}", info.payload_bytes);
    let g = *s.geometry();
    drop(s);
    for mode in [RecoverOptions::default(), full()] {
        let s = reopen(&p, EngineChoice::IoUring, true);
        let r = s.recover(&mode).unwrap();
        assert_eq!((r.checkpoint_entries, r.indexed), (100, 100));
        assert!((0..100).all(|i| get(&s, &key(i)).unwrap() == value(i, 64)));
    }
    // One byte of the fourth chunk (read by the fourth lane) is changed: the checkpoint is not used.
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let at = g.container_offset(Container::A) + g.block_size() as u64 + 3 * 8192 + 100;
    let mut byte = [0u8; 1];
    f.read_exact_at(&mut byte, at).unwrap();
    f.write_all_at(&[byte[0] ^ 0x40], at).unwrap();
    drop(f);
    let s = reopen(&p, EngineChoice::IoUring, true);
    let r = s.recover(&full()).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Nothing, 0));
}

/// Raw access to a slot's header block, as a crash or a bad disk would leave it.
fn header_offset(s: &Store, key: &[u8]) -> u64 {
    let e = lock(&s.state).index.get(key).unwrap();
    s.geometry().slot_offset(e.slot)
}

#[test]
fn one_stale_header_is_dropped_and_only_it() {
    let (p, s) = small("stale");
    for i in 0..50 {
        s.put(format!("k{i}").as_bytes(), &value(i, 3000)).unwrap();
    }
    s.checkpoint().unwrap();
    let off = header_offset(&s, b"k17");
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xFF; 8], off + 40).unwrap(); // inside the generation field
    drop(f);
    let s = reopen(&p, EngineChoice::Auto, true);
    let r = s.recover(&full()).unwrap();
    assert_eq!((r.indexed, r.dropped_stale, r.dropped_unreadable), (49, 1, 0));
    assert!(!s.contains(b"k17").unwrap());
    assert_eq!(get(&s, b"k16").unwrap(), value(16, 3000));
    drop(s);
    // Fast recovery trusts it unread; the first get finds the header is not its own.
    let s = reopen(&p, EngineChoice::Auto, false);
    let r = s.recover(&RecoverOptions::default()).unwrap();
    assert_eq!((r.indexed, r.trusted_unread), (50, 50));
    assert!(s.contains(b"k17").unwrap());
    assert!(matches!(get(&s, b"k17"), Err(Error::NotFound)), "gone, not corrupt");
    assert!(!s.contains(b"k17").unwrap(), "and dropped");
    assert_eq!(get(&s, b"k16").unwrap(), value(16, 3000));
}

#[test]
fn header_from_a_previous_format_is_stale() {
    let p = tmp("previous-format");
    let s = Store::open(&p, &create_opts(8 << 20)).unwrap();
    s.put(b"old-0", b"x").unwrap();
    s.put(b"old-1", b"y").unwrap();
    let mut old_header = vec![0u8; 4096];
    let f = std::fs::File::open(&p).unwrap();
    f.read_exact_at(&mut old_header, header_offset(&s, b"old-1")).unwrap();
    drop(s);
    let s = Store::open(&p, &format_opts(8 << 20, GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() }, true)).unwrap();
    s.put(b"new-0", b"a").unwrap();
    s.put(b"new-1", b"b").unwrap();
    s.checkpoint().unwrap();
    let off = header_offset(&s, b"new-1");
    drop(s);
    // The new slot 1 header is lost; the previous format's header is what the slot holds.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&old_header, off).unwrap();
    drop(f);
    let s = reopen(&p, EngineChoice::Posix, true);
    let r = s.recover(&full()).unwrap();
    assert_eq!((r.indexed, r.dropped_stale), (1, 1));
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Scan, 1), "a scan ignores the foreign header too");
    assert!(!s.contains(b"old-1").unwrap() && !s.contains(b"new-1").unwrap());
}

#[test]
fn flipped_payload_bit_is_corrupt_never_wrong_bytes() {
    let (p, s) = small("bitflip");
    s.put(b"k", &value(1, 5000)).unwrap();
    let off = header_offset(&s, b"k") + 4096 + 1234;
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x04], off).unwrap();
    assert!(matches!(get(&s, b"k"), Err(Error::Corrupt(_))));
}

#[test]
fn checkpoint_too_large_keeps_the_older_one() {
    let p = tmp("ckpt-nospace");
    let opts = format_opts(8 << 20, GeometryRequest { slot_bytes: 64 * 1024, meta_bytes: 6 * 4096, ..Default::default() }, false);
    let s = Store::open(&p, &opts).unwrap();
    s.put(b"first", b"1").unwrap();
    assert_eq!(s.checkpoint().unwrap().sequence, 1);
    for i in 0..100 {
        s.put(format!("a-rather-long-key-to-fill-the-container-{i:04}").as_bytes(), b"v").unwrap();
    }
    assert!(matches!(s.checkpoint(), Err(Error::CheckpointTooLarge { .. })));
    drop(s);
    let s = reopen(&p, EngineChoice::Posix, true);
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }).unwrap();
    assert_eq!((r.checkpoint_sequence, r.indexed), (1, 1));
}

#[test]
fn checkpoint_with_torn_payload_falls_back_to_the_older() {
    let (p, s) = small("torn-ckpt");
    s.put(b"a", b"1").unwrap();
    s.checkpoint().unwrap(); // seq 1 in container A
    s.put(b"b", b"2").unwrap();
    s.checkpoint().unwrap(); // seq 2 in container B
    let g = *s.geometry();
    drop(s);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xAB; 16], g.container_offset(Container::B) + g.block_size() as u64).unwrap(); // B's payload
    drop(f);
    let s = reopen(&p, EngineChoice::Posix, false);
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }).unwrap();
    assert_eq!((r.checkpoint_sequence, r.indexed), (1, 1));
    // The next checkpoint overwrites the torn container, with a sequence above both.
    assert_eq!(s.checkpoint().unwrap().sequence, 3);
    drop(s);
    let s = reopen(&p, EngineChoice::Posix, true);
    assert_eq!(s.recover(&RecoverOptions::default()).unwrap().checkpoint_sequence, 3);
}

#[test]
fn scan_rebuilds_without_a_checkpoint_and_prefers_newer_generations() {
    let (p, s) = small("scan");
    for i in 0..30 {
        s.put(format!("k{i}").as_bytes(), &value(i, 700)).unwrap();
    }
    // Leave a superseded copy behind, as a crash between write and invalidation would.
    let old_off = header_offset(&s, b"k5");
    let mut old = vec![0u8; 64 * 1024];
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.read_exact_at(&mut old, old_off).unwrap();
    s.put(b"k5", b"newer").unwrap();
    f.write_all_at(&old, old_off).unwrap();
    drop(s);
    let s = reopen(&p, EngineChoice::IoUring, false);
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }).unwrap();
    assert_eq!(r.from, RecoveredFrom::Scan);
    assert_eq!((r.indexed, r.dropped_stale), (30, 1));
    assert_eq!(r.header_reads, s.geometry().slot_count());
    assert_eq!(r.empty_slots, s.geometry().slot_count() - 31);
    assert_eq!(get(&s, b"k5").unwrap(), b"newer");
    // The superseded copy is invalidated before the first write, so deleting the key sticks.
    s.delete(b"k5").unwrap();
    drop(s);
    let s = reopen(&p, EngineChoice::Posix, true);
    s.recover(&RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }).unwrap();
    assert!(!s.contains(b"k5").unwrap());
}

#[test]
fn unreadable_entries_are_counted_apart_or_kept() {
    let (p, s) = small("unreadable");
    for i in 0..20 {
        s.put(format!("k{i}").as_bytes(), b"v").unwrap();
    }
    let slot = lock(&s.state).index.get(b"k7").unwrap().slot;
    s.checkpoint().unwrap();
    drop(s);
    let s = reopen(&p, EngineChoice::IoUring, true);
    s.inject_read_faults(&[slot], libc::EIO, FaultMode::Persistent);
    let r = s.recover(&full()).unwrap();
    assert_eq!((r.indexed, r.dropped_stale, r.dropped_unreadable, r.first_errno), (19, 0, 1, libc::EIO));
    let r = s.recover(&RecoverOptions { keep_unreadable: true, ..Default::default() }).unwrap();
    assert_eq!((r.indexed, r.kept_unverified), (20, 1));
    s.clear_read_faults();
    assert_eq!(get(&s, b"k7").unwrap(), b"v", "an unverified entry is verified when read");
}

#[test]
fn read_headers_reports_each_slot() {
    let (_p, s) = small("headers");
    s.put(b"a", b"1").unwrap();
    s.put(b"b", b"2").unwrap();
    s.delete(b"a").unwrap();
    let mut out = vec![String::new(); 3];
    let f = |slot: SlotIndex, h: HeaderRead<'_>| match h {
        HeaderRead::State(SlotState::Valid(h)) => format!("{slot}:{}", String::from_utf8_lossy(h.key)),
        HeaderRead::State(other) => format!("{slot}:{other:?}"),
        HeaderRead::IoError(e) => format!("{slot}:errno {e}"),
    };
    s.read_headers(&[SlotIndex(1), SlotIndex(0), SlotIndex(2)], &mut out, &f).unwrap();
    assert_eq!(out, ["1:b", "0:Empty", "2:Empty"]);
    let n = s.geometry().slot_count();
    assert!(matches!(s.read_headers(&[SlotIndex(n)], &mut out[..1], &f), Err(Error::InvalidArgument(_))));
}

#[test]
fn concurrent_writers_and_readers_never_see_wrong_bytes() {
    let (_p, s) = small("concurrent");
    let s = &s;
    std::thread::scope(|scope| {
        for t in 0..4usize {
            scope.spawn(move || {
                for round in 0..30usize {
                    let key = format!("k{}", (t + round) % 6);
                    let v = value(t * 1000 + round, 2000 + t);
                    // The value names its own key so a reader can tell it apart.
                    let mut tagged = key.clone().into_bytes();
                    tagged.extend_from_slice(&v);
                    s.put(key.as_bytes(), &tagged).unwrap();
                    match get(s, key.as_bytes()) {
                        Ok(got) => assert!(got.starts_with(key.as_bytes()), "another key's bytes"),
                        Err(Error::NotFound) => {}
                        Err(e) => panic!("{e}"),
                    }
                    if round % 7 == 0 {
                        let _ = s.delete(key.as_bytes());
                    }
                }
            });
        }
        scope.spawn(move || {
            for _ in 0..5 {
                s.checkpoint().unwrap();
            }
        });
    });
    let free = lock(&s.state).free_slots() as u64;
    assert_eq!(free + s.len() as u64, s.geometry().slot_count(), "no slot leaked");
}

#[test]
fn half_written_slot_header_drops_only_that_entry() {
    let (p, s) = small("half-header");
    for i in 0..10 {
        s.put(format!("k{i}").as_bytes(), &value(i, 100)).unwrap();
    }
    s.checkpoint().unwrap();
    let off = header_offset(&s, b"k4");
    let g = *s.geometry();
    drop(s);
    // A newer header for the same slot, torn after its first 512-byte sector.
    let mut newer = vec![0u8; 4096];
    let slot = SlotIndex((off - g.data_base()) / g.slot_bytes());
    let id = {
        let mut b = vec![0u8; 4096];
        std::fs::File::open(&p).unwrap().read_exact_at(&mut b, 0).unwrap();
        crate::format::Superblock::decode(&b, 512).unwrap().device_id
    };
    let long_key = vec![b'n'; 900];
    SlotHeader { device_id: id, slot, generation: Generation(u64::MAX), payload_len: 1, payload_crc: 0, key: &long_key }.encode(&mut newer);
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&newer[..512], off).unwrap();
    drop(f);
    let s = reopen(&p, EngineChoice::IoUring, true);
    let r = s.recover(&full()).unwrap();
    assert_eq!((r.indexed, r.dropped_stale), (9, 1));
    assert!(!s.contains(b"k4").unwrap());
    let mut out = vec![String::new()];
    s.read_headers(&[slot], &mut out, &|_, h| format!("{h:?}")).unwrap();
    assert_eq!(out[0], "State(Corrupt)");
}

#[test]
fn checkpoint_copied_from_another_device_is_ignored() {
    let (pa, a) = small("copy-a");
    let (pb, b) = small("copy-b");
    a.put(b"only-on-a", b"A").unwrap();
    a.checkpoint().unwrap();
    b.put(b"only-on-b", b"B").unwrap();
    let g = *a.geometry();
    drop((a, b));
    // Copy A's whole metadata region after the superblock (both containers) onto B.
    let len = (g.meta_bytes() - g.superblock_bytes()) as usize;
    let mut meta = vec![0u8; len];
    std::fs::File::open(&pa).unwrap().read_exact_at(&mut meta, g.superblock_bytes()).unwrap();
    std::fs::OpenOptions::new().write(true).open(&pb).unwrap().write_all_at(&meta, g.superblock_bytes()).unwrap();
    let b = reopen(&pb, EngineChoice::Posix, true);
    let r = b.recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Nothing, 0), "A's checkpoint names another device id");
    let r = b.recover(&RecoverOptions::default()).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Scan, 1));
    assert_eq!(get(&b, b"only-on-b").unwrap(), b"B");
    assert!(!b.contains(b"only-on-a").unwrap());
}

#[test]
fn superblock_of_another_device_makes_every_header_foreign() {
    let (pa, a) = small("sb-a");
    let (pb, b) = small("sb-b");
    a.put(b"x", b"A").unwrap();
    b.put(b"x", b"B").unwrap();
    b.checkpoint().unwrap();
    drop((a, b));
    let mut sb = vec![0u8; 4096];
    std::fs::File::open(&pa).unwrap().read_exact_at(&mut sb, 0).unwrap();
    std::fs::OpenOptions::new().write(true).open(&pb).unwrap().write_all_at(&sb, 0).unwrap();
    let b = reopen(&pb, EngineChoice::Posix, true);
    let r = b.recover(&RecoverOptions::default()).unwrap();
    assert_eq!(r.from, RecoveredFrom::Scan, "B's checkpoint does not carry A's device id");
    assert_eq!((r.indexed, r.dropped_stale), (0, 1), "B's header is foreign under A's id");
}

#[test]
fn other_geometry_is_a_format_error_or_stale() {
    let (p, s) = small("geometry");
    s.put(b"k", b"v").unwrap();
    s.checkpoint().unwrap();
    drop(s);
    // Reformat with another slot size: old headers sit at other offsets and carry another id.
    let opts = format_opts(8 << 20, GeometryRequest { slot_bytes: 128 * 1024, ..Default::default() }, true);
    drop(Store::open(&p, &opts).unwrap());
    let s = reopen(&p, EngineChoice::Posix, true);
    let r = s.recover(&RecoverOptions::default()).unwrap();
    assert_eq!((r.from, r.indexed, r.leased_slots), (RecoveredFrom::Journal, 0, 0), "no lease record carries the new id");
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Scan, ..Default::default() }).unwrap();
    assert_eq!((r.from, r.indexed), (RecoveredFrom::Scan, 0));
    drop(s);
    // A superblock whose geometry does not fit the device is refused outright.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(2 << 20).unwrap();
    assert!(matches!(Store::open(&p, &OpenOptions::default()), Err(Error::Format(_))));
}

#[test]
fn concurrent_batched_reads_each_get_a_ring_or_wait() {
    let (p, s) = small("rings");
    for i in 0..40 {
        s.put(format!("k{i:02}").as_bytes(), b"v").unwrap();
    }
    drop(s);
    let s = reopen(&p, EngineChoice::IoUring, false);
    s.recover(&RecoverOptions::default()).unwrap();
    s.reset_io_stats();
    let slots: Vec<SlotIndex> = (0..40).map(SlotIndex).collect();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..50 {
                    let mut out = vec![String::new(); slots.len()];
                    s.read_headers(&slots, &mut out, &|slot, h| match h {
                        HeaderRead::State(SlotState::Valid(h)) => format!("{slot}:{}", String::from_utf8_lossy(h.key)),
                        other => format!("{slot}:{other:?}"),
                    })
                    .unwrap();
                    let mut keys: Vec<String> = out.iter().map(|o| o.split(':').nth(1).unwrap().to_string()).collect();
                    keys.sort();
                    assert_eq!(keys, (0..40).map(|i| format!("k{i:02}")).collect::<Vec<_>>());
                    assert!(out.iter().zip(&slots).all(|(o, s)| o.starts_with(&format!("{s}:"))));
                }
            });
        }
    });
    assert_eq!(s.io_stats().reads_submitted, 8 * 50 * 40);
}

/// The known limit RB_RECOVER_SCRUB_FREE closes: after a checkpoint recovery forgot a value
/// written after the checkpoint, the key is re-put and deleted; if a later recovery must scan
/// (both checkpoints lost), the forgotten header would bring the deleted key back.
#[test]
fn scrubbing_free_slots_keeps_deleted_keys_deleted_through_a_later_scan() {
    for scrub in [false, true] {
        let (p, s) = small(if scrub { "scrub-on" } else { "scrub-off" });
        s.put(b"k", b"v1").unwrap();
        s.checkpoint().unwrap();
        s.put(b"k", b"v2").unwrap(); // acknowledged, then the process dies: no checkpoint names it
        s.put(b"other", b"o").unwrap();
        let g = *s.geometry();
        drop(s);
        let s = reopen(&p, EngineChoice::IoUring, false);
        let r = s.recover(&RecoverOptions { scrub_free: scrub, ..full() }).unwrap();
        assert_eq!(r.indexed, 0, "v1's header was zeroed when v2 replaced it");
        assert_eq!(r.orphans, if scrub { 2 } else { 0 });
        if scrub {
            assert_eq!(r.header_reads, 1 + g.slot_count(), "the entry plus every free slot");
        }
        s.put(b"k", b"v3").unwrap();
        s.delete(b"k").unwrap();
        drop(s);
        // Both checkpoints lost: the next recovery scans.
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        for which in Container::BOTH {
            f.write_all_at(&[0xEE; 64], g.container_offset(which)).unwrap();
        }
        drop(f);
        let s = reopen(&p, EngineChoice::Posix, true);
        let r = s.recover(&RecoverOptions::default()).unwrap();
        assert_eq!(r.from, RecoveredFrom::Scan);
        if scrub {
            assert!(!s.contains(b"k").unwrap(), "the deleted key stays deleted");
            assert_eq!(r.indexed, 0, "the orphan of 'other' was scrubbed too");
        } else {
            assert_eq!(get(&s, b"k").unwrap(), b"v2", "without the scrub the forgotten v2 comes back (the known limit)");
        }
    }
}

/// One changed byte in the superblock once made a device unopenable.
#[test]
fn a_damaged_superblock_is_read_from_its_copy_and_repaired() {
    let (p, s) = small("sb-copy");
    s.put(b"k", b"value").unwrap();
    s.checkpoint().unwrap();
    drop(s);
    let pristine = std::fs::read(&p).unwrap()[..4096].to_vec();
    for byte in [0usize, 20, 40] {
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&[pristine[byte] ^ 0x01], byte as u64).unwrap();
        drop(f);
        let ro = reopen(&p, EngineChoice::Posix, true);
        assert_eq!(ro.superblock_source(), SuperblockSource::Copy, "byte {byte}");
        ro.recover(&RecoverOptions::default()).unwrap();
        assert_eq!(get(&ro, b"k").unwrap(), b"value");
        drop(ro);
        assert_ne!(std::fs::read(&p).unwrap()[..4096], pristine[..], "a read-only handle writes nothing");
        let rw = reopen(&p, EngineChoice::Posix, false);
        assert_eq!(rw.superblock_source(), SuperblockSource::Copy);
        drop(rw);
        assert_eq!(std::fs::read(&p).unwrap()[..4096], pristine[..], "the writable handle rewrote the primary");
        assert_eq!(reopen(&p, EngineChoice::Posix, true).superblock_source(), SuperblockSource::Primary);
    }
    // A damaged copy is rewritten from the primary by a writable open.
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xFF; 16], 4096 + 16).unwrap();
    drop(f);
    drop(reopen(&p, EngineChoice::Posix, false));
    assert_eq!(std::fs::read(&p).unwrap()[4096..8192], pristine[..], "the copy matches the primary again");
}

/// Other data over the first block is not "repaired" away: the device is refused, untouched.
#[test]
fn foreign_data_over_the_superblock_is_not_overwritten_from_the_copy() {
    let (p, s) = small("sb-foreign");
    drop(s);
    let foreign: Vec<u8> = (0..4096u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&foreign, 0).unwrap();
    let e = Store::open(&p, &OpenOptions::default()).err().expect("refused");
    assert!(matches!(e, Error::Format(ref m) if m.contains("copy remains")), "{e}");
    assert_eq!(std::fs::read(&p).unwrap()[..4096], foreign[..]);
}
