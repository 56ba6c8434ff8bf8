//! Eviction over real files: order, watermark, the evicted keys reported exactly.

use super::tests::tmp;
use super::*;
use crate::engine::{EngineChoice, EngineConfig};
use crate::format::{GeometryRequest, SlotIndex, SlotState};

fn create(name: &str, policy: EvictionPolicy, permille: u32) -> (std::path::PathBuf, Store) {
    let p = tmp(name);
    let format = FormatOptions {
        capacity_bytes: 8 << 20,
        geometry: GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() },
        overwrite: true,
        ..Default::default()
    };
    let opts = OpenOptions {
        mode: OpenMode::Create(format),
        engine: EngineConfig::new(EngineChoice::IoUring, 1, 8),
        ..Default::default()
    };
    let s = Store::open(&p, &opts).unwrap();
    s.set_eviction(Eviction { policy, low_watermark_permille: permille }).unwrap();
    (p.clone(), s)
}

fn key(i: u64) -> Vec<u8> {
    format!("ev-{i:04}").into_bytes()
}

fn fill(s: &Store) -> u64 {
    let n = s.geometry().slot_count();
    for i in 0..n {
        s.put(&key(i), &i.to_le_bytes()).unwrap();
    }
    n
}

fn evicted_keys(s: &Store) -> Vec<Vec<u8>> {
    s.take_evicted(usize::MAX).into_iter().map(|e| e.key.into_vec()).collect()
}

#[test]
fn without_a_policy_a_full_device_says_so() {
    let (_p, s) = create("ev-none", EvictionPolicy::None, 0);
    let n = fill(&s);
    assert!(matches!(s.put(b"one-more", b"x"), Err(Error::SlotsFull { .. })));
    assert_eq!(s.len() as u64, n);
    assert!(s.take_evicted(10).is_empty());
}

#[test]
fn fifo_evicts_the_oldest_puts_down_to_the_watermark_and_reports_them() {
    // 250 permille: a batch frees a quarter of the slots.
    let (_p, s) = create("ev-fifo", EvictionPolicy::Fifo, 250);
    let n = fill(&s);
    let mut out = [0u8; 8];
    s.get(&key(0), &mut out).unwrap(); // FIFO ignores reads
    let batch = n / 4;
    let slots: Vec<SlotIndex> = (0..batch).map(|i| lock(&s.state).index.get(&key(i)).unwrap().slot).collect();
    s.put(b"newcomer", b"v").unwrap();
    // Every evicted slot but the one the newcomer took holds no header: zeroed like a delete.
    let mut states = vec![String::new(); slots.len()];
    s.read_headers(&slots, &mut states, &|_, r| format!("{r:?}")).unwrap();
    let empty = format!("{:?}", HeaderRead::State(SlotState::Empty));
    assert_eq!(states.iter().filter(|h| **h == empty).count() as u64, batch - 1, "{states:?}");
    let want: Vec<Vec<u8>> = (0..batch).map(key).collect();
    assert_eq!(evicted_keys(&s), want, "exactly the {batch} oldest, in order");
    for k in &want {
        assert!(matches!(s.get(k, &mut out), Err(Error::NotFound)));
    }
    assert_eq!(s.get(&key(batch), &mut out).unwrap(), 8, "the next oldest stays");
    assert_eq!(s.len() as u64, n - batch + 1);
    assert_eq!(s.eviction_counts(), (batch, 0));
}

#[test]
fn lru_keeps_what_was_read_and_zeroes_evicted_headers() {
    let (_p, s) = create("ev-lru", EvictionPolicy::Lru, 0);
    let n = fill(&s);
    let mut out = [0u8; 8];
    s.get(&key(0), &mut out).unwrap(); // key 0 is now the most recently used
    let slot_of_1 = lock(&s.state).index.get(&key(1)).unwrap().slot;
    s.put(b"newcomer", b"v").unwrap();
    let gone = evicted_keys(&s);
    assert_eq!(gone, vec![key(1)], "1% of {n} slots rounds to one: the least recently used");
    assert_eq!(s.get(&key(0), &mut out).unwrap(), 8, "the key read last survives");
    // The freed slot (the lowest) went to the newcomer: the evicted header is gone from the device.
    let mut h = vec![Vec::new()];
    s.read_headers(&[slot_of_1], &mut h, &|_, r| match r {
        HeaderRead::State(SlotState::Valid(h)) => h.key.to_vec(),
        _ => Vec::new(),
    })
    .unwrap();
    assert_eq!(h[0], b"newcomer", "the evicted entry's slot holds the new value, not the old header");
    // Batched puts evict too; every key reported is really gone.
    let items: Vec<(Vec<u8>, Vec<u8>)> = (0..10).map(|i| (format!("batch-{i}").into_bytes(), vec![i as u8; 100])).collect();
    let refs: Vec<(&[u8], &[u8])> = items.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    assert!(s.put_many(&refs).unwrap().iter().all(|r| r.is_ok()));
    let gone = evicted_keys(&s);
    assert_eq!(gone.len(), 10);
    assert!(gone.iter().all(|k| !s.contains(k).unwrap()));
    assert_eq!(s.len() as u64, n, "still full, none lost beyond the evicted");
}

#[test]
fn after_a_restart_lru_order_starts_from_generation_order() {
    let (p, s) = create("ev-restart", EvictionPolicy::Lru, 0);
    fill(&s);
    let mut out = [0u8; 8];
    s.get(&key(0), &mut out).unwrap(); // a use in this run: forgotten at the restart
    s.checkpoint().unwrap();
    drop(s);
    let s = Store::open(&p, &OpenOptions::default()).unwrap();
    s.set_eviction(Eviction { policy: EvictionPolicy::Lru, low_watermark_permille: 0 }).unwrap();
    s.recover(&RecoverOptions::default()).unwrap();
    s.put(b"after-restart", b"v").unwrap();
    assert_eq!(evicted_keys(&s), vec![key(0)], "the oldest generation goes first");
}

/// Eviction inside batched puts on every engine: an eviction runs within a batch item, so it
/// must not wait for the engine's rings or worker pool that the batch itself holds.
#[test]
fn batched_puts_evict_on_every_engine_without_waiting_on_themselves() {
    for (choice, threads) in [(EngineChoice::Posix, 1), (EngineChoice::Posix, 4), (EngineChoice::IoUring, 1)] {
        let p = tmp("ev-engines");
        let format = FormatOptions {
            capacity_bytes: 8 << 20,
            geometry: GeometryRequest { slot_bytes: 64 * 1024, ..Default::default() },
            overwrite: true,
            ..Default::default()
        };
        let opts = OpenOptions { mode: OpenMode::Create(format), engine: EngineConfig::new(choice, threads, 8), ..Default::default() };
        let s = Store::open(&p, &opts).unwrap();
        s.set_eviction(Eviction { policy: EvictionPolicy::Fifo, low_watermark_permille: 100 }).unwrap();
        let n = s.geometry().slot_count() as usize;
        let items: Vec<(Vec<u8>, Vec<u8>)> = (0..3 * n).map(|i| (key(i as u64), vec![i as u8; 3000])).collect();
        for chunk in items.chunks(16) {
            let refs: Vec<(&[u8], &[u8])> = chunk.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            assert!(s.put_many(&refs).unwrap().iter().all(|r| r.is_ok()), "{choice:?} x{threads}");
        }
        let gone = s.take_evicted(usize::MAX).len();
        assert_eq!(s.len() + gone, 3 * n, "{choice:?}: every key is indexed or was reported evicted");
    }
}
