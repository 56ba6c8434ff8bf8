//! Batched calls over real files with O_DIRECT, on every engine.

use std::os::unix::fs::FileExt;

use super::tests::tmp;
use super::*;
use crate::aligned::AlignedBuf;
use crate::engine::{EngineChoice, EngineConfig, FaultMode};
use crate::format::GeometryRequest;

const ENGINES: [(EngineChoice, usize); 3] = [(EngineChoice::Posix, 1), (EngineChoice::Posix, 4), (EngineChoice::IoUring, 1)];

fn create(name: &str, engine: (EngineChoice, usize)) -> (std::path::PathBuf, Store) {
    let p = tmp(name);
    let format = FormatOptions {
        capacity_bytes: 16 << 20,
        geometry: GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() },
        overwrite: true,
        ..Default::default()
    };
    let opts = OpenOptions { mode: OpenMode::Create(format), engine: EngineConfig::new(engine.0, engine.1, 8), ..Default::default() };
    (p.clone(), Store::open(&p, &opts).unwrap())
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 131 + j * 7 + 1) as u8).collect()
}

/// Sizes around the block boundary, empty, and the largest payload.
fn sizes(s: &Store) -> Vec<usize> {
    vec![0, 1, 100, 4095, 4096, 4097, 8192, 20_000, s.geometry().max_payload() as usize]
}

#[test]
fn put_many_get_many_round_trip_aligned_and_not() {
    for engine in ENGINES {
        let (_p, s) = create("batch-rt", engine);
        let sizes = sizes(&s);
        let keys: Vec<Vec<u8>> = (0..sizes.len()).map(|i| format!("key-{i}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| value(i, n)).collect();
        // Aligned sources for the block-multiple sizes take the zero-copy path.
        let aligned: Vec<AlignedBuf> = values.iter().map(|v| {
            let mut b = AlignedBuf::zeroed(v.len());
            b.copy_from_slice(v);
            b
        }).collect();
        let items: Vec<(&[u8], &[u8])> = keys.iter().zip(&aligned).map(|(k, v)| (&k[..], &v[..])).collect();
        assert!(s.put_many(&items).unwrap().iter().all(|r| r.is_ok()), "{engine:?}");
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        for direct in [true, false] {
            // Aligned and padded destinations, or off-by-one unaligned ones.
            let mut bufs: Vec<AlignedBuf> = sizes.iter().map(|&n| AlignedBuf::zeroed(s.padded_len(n as u64) as usize + 1)).collect();
            let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| if direct { &mut b[..] } else { &mut b[1..] }).collect();
            let got = s.get_many(&key_refs, &mut outs).unwrap();
            for (i, r) in got.iter().enumerate() {
                let n = *r.as_ref().unwrap_or_else(|e| panic!("{engine:?} direct={direct} item {i}: {e}"));
                assert_eq!(&outs[i][..n], &values[i][..], "{engine:?} direct={direct} item {i}");
            }
        }
        // Unaligned sources (the bounce path) read back the same.
        let items: Vec<(&[u8], &[u8])> = keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])).collect();
        assert!(s.put_many(&items).unwrap().iter().all(|r| r.is_ok()));
        for (i, k) in keys.iter().enumerate() {
            let mut out = vec![0u8; sizes[i]];
            assert_eq!(s.get(k, &mut out).unwrap(), sizes[i]);
            assert_eq!(out, values[i]);
        }
        assert_eq!(s.len(), keys.len(), "replacing keeps one entry per key");
    }
}

#[test]
fn one_item_failing_never_touches_another() {
    for engine in ENGINES {
        let (p, s) = create("batch-isolation", engine);
        let keys: Vec<Vec<u8>> = (0..20).map(|i| format!("k{i:02}").into_bytes()).collect();
        let values: Vec<Vec<u8>> = (0..20).map(|i| value(i, 5000 + i)).collect();
        let items: Vec<(&[u8], &[u8])> = keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])).collect();
        assert!(s.put_many(&items).unwrap().iter().all(|r| r.is_ok()));
        let slot_of = |k: &[u8]| lock(&s.state).index.get(k).unwrap().slot;
        // k03: unreadable; k05: a payload bit flipped; k07: buffer too small; "missing": not found.
        s.inject_read_faults(&[slot_of(b"k03")], libc::EIO, FaultMode::Persistent);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        let at = s.geometry().slot_offset(slot_of(b"k05")) + s.geometry().header_bytes() as u64 + 10;
        f.write_all_at(&[!values[5][10]], at).unwrap();
        let mut want: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        want.push(b"missing");
        let mut bufs: Vec<Vec<u8>> = want.iter().enumerate().map(|(i, _)| vec![0u8; if i == 7 { 10 } else { 8000 }]).collect();
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let got = s.get_many(&want, &mut outs).unwrap();
        for (i, r) in got.iter().enumerate() {
            match i {
                3 => assert!(matches!(r, Err(Error::Io { .. })), "{engine:?}: {r:?}"),
                5 => assert!(matches!(r, Err(Error::Corrupt(_))), "{engine:?}: {r:?}"),
                7 => assert!(matches!(r, Err(Error::BufferTooSmall { needed: 5007 })), "{engine:?}: {r:?}"),
                20 => assert!(matches!(r, Err(Error::NotFound)), "{engine:?}: {r:?}"),
                _ => assert_eq!(&outs[i][..*r.as_ref().unwrap()], &values[i][..], "{engine:?} item {i}"),
            }
        }
        s.clear_read_faults();
    }
}

#[test]
fn duplicates_in_a_batch_last_wins_and_nothing_leaks() {
    for engine in ENGINES {
        let (_p, s) = create("batch-dups", engine);
        let free_before = lock(&s.state).free_slots();
        let items: Vec<(&[u8], &[u8])> = vec![(b"a", b"1"), (b"b", b"x"), (b"a", b"2"), (b"a", b"3"), (b"", b"bad")];
        let r = s.put_many(&items).unwrap();
        assert!(r[..4].iter().all(|r| r.is_ok()), "{r:?}");
        assert!(matches!(r[4], Err(Error::InvalidArgument(_))));
        let mut out = [0u8; 4];
        assert_eq!(s.get(b"a", &mut out).unwrap(), 1);
        assert_eq!(out[0], b'3', "{engine:?}: the last copy in the batch wins");
        assert_eq!(lock(&s.state).free_slots(), free_before - 2, "superseded copies were freed");
        let d = s.delete_many(&[b"a", b"a", b"zz", b"b"]).unwrap();
        assert!(d[0].is_ok() && matches!(d[1], Err(Error::NotFound)) && matches!(d[2], Err(Error::NotFound)) && d[3].is_ok());
        assert_eq!(lock(&s.state).free_slots(), free_before);
        assert!(s.contains_many(&[b"a", b"b"]).unwrap().iter().all(|r| matches!(r, Ok(false))));
    }
}

#[test]
fn batches_survive_a_checkpoint_and_recovery() {
    let (p, s) = create("batch-recover", ENGINES[2]);
    let keys: Vec<Vec<u8>> = (0..30).map(|i| format!("r{i}").into_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..30).map(|i| value(i, 2000 * i)).collect();
    let items: Vec<(&[u8], &[u8])> = keys.iter().zip(&values).map(|(k, v)| (&k[..], &v[..])).collect();
    assert!(s.put_many(&items).unwrap().iter().all(|r| r.is_ok()));
    let gone: Vec<&[u8]> = keys[..10].iter().map(|k| &k[..]).collect();
    assert!(s.delete_many(&gone).unwrap().iter().all(|r| r.is_ok()));
    s.checkpoint().unwrap();
    drop(s);
    for mode in [RecoverMode::Checkpoint, RecoverMode::Scan] {
        let s = Store::open(&p, &OpenOptions { mode: OpenMode::ReadOnly, ..Default::default() }).unwrap();
        let r = s.recover(&RecoverOptions { mode, ..Default::default() }).unwrap();
        assert_eq!(r.indexed, 20, "{mode:?}");
        let want: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let mut bufs: Vec<Vec<u8>> = (0..30).map(|_| vec![0u8; 90_000]).collect();
        let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        for (i, r) in s.get_many(&want, &mut outs).unwrap().iter().enumerate() {
            if i < 10 {
                assert!(matches!(r, Err(Error::NotFound)), "{mode:?} {i}");
            } else {
                assert_eq!(&outs[i][..*r.as_ref().unwrap()], &values[i][..]);
            }
        }
    }
}

#[test]
fn registered_memory_uses_fixed_buffers_and_unregisters() {
    let (_p, s) = create("batch-registered", ENGINES[2]);
    let value_len = 8192usize;
    let mut pool = AlignedBuf::zeroed(16 * value_len);
    let region = s.register_memory(pool.as_ptr(), pool.len()).unwrap();
    for (i, chunk) in pool.chunks_mut(value_len).enumerate() {
        chunk.copy_from_slice(&value(i, value_len));
    }
    let keys: Vec<Vec<u8>> = (0..16).map(|i| format!("reg-{i}").into_bytes()).collect();
    s.reset_io_stats();
    let items: Vec<(&[u8], &[u8])> = keys.iter().zip(pool.chunks(value_len)).map(|(k, v)| (&k[..], v)).collect();
    assert!(s.put_many(&items).unwrap().iter().all(|r| r.is_ok()));
    assert!(s.io_stats().registered_buffers, "writes from the registered pool used fixed buffers");
    pool.fill(0);
    s.reset_io_stats();
    let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    let mut outs: Vec<&mut [u8]> = pool.chunks_mut(value_len).collect();
    for (i, r) in s.get_many(&refs, &mut outs).unwrap().iter().enumerate() {
        assert_eq!(*r.as_ref().unwrap(), value_len);
        assert_eq!(&outs[i][..], &value(i, value_len)[..], "item {i}");
    }
    assert!(s.io_stats().registered_buffers, "reads into the registered pool used fixed buffers");
    s.unregister_memory(region).unwrap();
    assert!(s.unregister_memory(region).is_err(), "twice");
    // The same memory, unregistered: plain I/O, same bytes.
    s.reset_io_stats();
    let mut outs: Vec<&mut [u8]> = pool.chunks_mut(value_len).collect();
    assert!(s.get_many(&refs, &mut outs).unwrap().iter().all(|r| r.is_ok()));
    assert!(!s.io_stats().registered_buffers);
}

/// A single get into an aligned, padded buffer takes the payload straight from the device,
/// and a flipped payload bit is still RB_E_CORRUPT there, never the bytes.
#[test]
fn single_get_zero_copy_verifies_like_the_bounce_path() {
    let (p, s) = create("single-direct", ENGINES[0]);
    let v = value(7, 10_000);
    s.put(b"k", &v).unwrap();
    let mut out = AlignedBuf::zeroed(s.padded_len(v.len() as u64) as usize);
    assert_eq!(s.get(b"k", &mut out).unwrap(), v.len());
    assert_eq!(&out[..v.len()], &v[..]);
    let slot = lock(&s.state).index.get(b"k").unwrap().slot;
    let at = s.geometry().slot_offset(slot) + s.geometry().header_bytes() as u64 + 5;
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&[!v[5]], at).unwrap();
    assert!(matches!(s.get(b"k", &mut out), Err(Error::Corrupt(_))));
    let mut unaligned = vec![0u8; v.len() + 1];
    assert!(matches!(s.get(b"k", &mut unaligned[1..]), Err(Error::Corrupt(_))), "and on the bounce path");
}
