//! Listing the indexed keys a page at a time, so a server can rebuild its own
//! index after recovery.
//!
//! Order: keys come in ascending bytewise order (memcmp, a prefix before its
//! extensions). A [`KeyCursor`] is the iteration's position: the last key it
//! went past, and a window of the keys after it that its last scan found.
//!
//! Consistency under concurrent writes. A scan reads the whole index under its
//! lock and keeps, in the cursor, the smallest keys after the position: every
//! key indexed at that moment in that range. Pages are served from the window,
//! each key looked up again in the index as it is returned (a key deleted
//! since is skipped; a replaced key shows its current length and generation).
//! When the window runs out, the next scan starts after its last key. So the
//! position only moves forward and:
//! - no key is returned twice in one iteration;
//! - a key indexed from the iteration's first call to its last (replaced or
//!   not meanwhile) is returned exactly once;
//! - a key put or deleted during the iteration may or may not be returned.
//!
//! Cost. A scan reads every indexed key under the index lock (about 80 ns a key,
//! cache misses on the keys dominating) and keeps up to `max(page, 65536,
//! indexed / 8)` keys and at most [`WINDOW_BYTES`] of key bytes, so a whole
//! iteration takes about 8 scans whatever the page size, and a cursor holds at
//! most one window (twice that while a scan runs). Serving a page holds the
//! lock for one lookup a key. Measured on a loaded 2-core machine, 1M keys of
//! 40 bytes: 50-150 ms a scan, 1.5-1.8 s the whole iteration in pages of 1024
//! or 4096 keys (a scan per page, without the window: 17-65 s).

use super::index::Index;
use super::Store;
use crate::error::{Error, Result};
use crate::format::Generation;

/// One indexed key, as a page of [`Store::list_keys`] returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: Vec<u8>,
    pub value_len: u64,
    pub generation: Generation,
}

/// Fewest keys a scan keeps for the pages after it.
const WINDOW_KEYS_MIN: usize = 65536;
/// A scan keeps at least 1/WINDOW_FRACTION of the index, so an iteration takes about that many scans.
const WINDOW_FRACTION: usize = 8;
/// Most key bytes a cursor's window holds (it always holds at least one key).
const WINDOW_BYTES: usize = 32 << 20;

/// Where an iteration over the indexed keys stands. Not tied to a store: pass it to
/// [`Store::list_keys`] of the store it iterates.
#[derive(Clone, Debug, Default)]
pub struct KeyCursor {
    /// Keys up to and including this one are behind the iteration.
    after: Vec<u8>,
    /// The keys after `after` that the last scan found, ascending, packed.
    keys: Vec<u8>,
    /// (offset, length) in `keys` of each window key; `next` is the first not yet served.
    spans: Vec<(usize, usize)>,
    next: usize,
    /// The last scan reached the end of the index: nothing lies beyond the window.
    complete: bool,
    /// Tests: the fewest keys a scan keeps, instead of WINDOW_KEYS_MIN.
    window_min: Option<usize>,
}

impl KeyCursor {
    /// An iteration from the first key.
    pub fn new() -> KeyCursor {
        KeyCursor::default()
    }

    /// An iteration from the first key strictly greater than `key`.
    pub fn after(key: &[u8]) -> KeyCursor {
        KeyCursor { after: key.to_vec(), ..KeyCursor::default() }
    }

    /// Keys the cursor holds for the pages to come (its memory, besides the key bytes).
    pub fn window_len(&self) -> usize {
        self.spans.len() - self.next
    }

    fn peek(&self) -> Option<&[u8]> {
        self.spans.get(self.next).map(|&(at, len)| &self.keys[at..at + len])
    }

    /// Reads the index once and keeps the smallest keys after the window's end.
    fn refill(&mut self, index: &Index, page: usize) {
        if let Some(&(at, len)) = self.spans.last() {
            self.after = self.keys[at..at + len].to_vec();
        }
        let want = page.max(self.window_min.unwrap_or(WINDOW_KEYS_MIN)).max(index.len() / WINDOW_FRACTION);
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        let mut w = Window { keys, spans: std::mem::take(&mut self.spans), want, max_bytes: WINDOW_BYTES };
        w.spans.clear();
        self.complete = w.gather(index, &self.after);
        (self.keys, self.spans, self.next) = (w.keys, w.spans, 0);
    }
}

/// The keys a scan gathers: packed copies, so sorting them touches memory that lies together.
struct Window {
    keys: Vec<u8>,
    spans: Vec<(usize, usize)>,
    want: usize,
    max_bytes: usize,
}

impl Window {
    fn key(&self, (at, len): (usize, usize)) -> &[u8] {
        &self.keys[at..at + len]
    }

    /// One scan of `index`: the smallest keys after `after`, at most `want` of them and
    /// `max_bytes` of key bytes (at least one key), ascending. Whenever the copies reach
    /// twice the limits the smallest are kept, and a key not below the smallest dropped
    /// so far cannot be among them. Whether nothing was dropped (the window reaches the end).
    fn gather(&mut self, index: &Index, after: &[u8]) -> bool {
        let mut bound: Option<Vec<u8>> = None;
        for (key, _) in index.iter() {
            if key <= after || bound.as_deref().is_some_and(|b| key >= b) {
                continue;
            }
            self.spans.push((self.keys.len(), key.len()));
            self.keys.extend_from_slice(key);
            if self.spans.len() >= 2 * self.want || self.keys.len() >= 2 * self.max_bytes {
                // The new bound is below the old one: everything kept is.
                bound = self.keep_smallest().or(bound);
            }
        }
        let dropped = self.keep_smallest();
        let keys = &self.keys;
        self.spans.sort_unstable_by(|&(a, al), &(b, bl)| keys[a..a + al].cmp(&keys[b..b + bl]));
        bound.is_none() && dropped.is_none()
    }

    /// Keeps the smallest keys within the limits; returns the smallest key dropped.
    fn keep_smallest(&mut self) -> Option<Vec<u8>> {
        let keys = &self.keys;
        let order = |&(a, al): &(usize, usize), &(b, bl): &(usize, usize)| keys[a..a + al].cmp(&keys[b..b + bl]);
        let mut dropped = None;
        if self.spans.len() > self.want {
            let (_, &mut nth, _) = self.spans.select_nth_unstable_by(self.want, order);
            dropped = Some(nth);
            self.spans.truncate(self.want);
        }
        if self.spans.iter().map(|s| s.1).sum::<usize>() > self.max_bytes {
            self.spans.sort_unstable_by(order);
            let mut bytes = 0;
            let fit = self.spans.iter().take_while(|s| {
                bytes += s.1;
                bytes <= self.max_bytes
            });
            let keep = fit.count().max(1);
            dropped = Some(self.spans[keep]);
            self.spans.truncate(keep);
        }
        let dropped = dropped.map(|d| self.key(d).to_vec());
        if dropped.is_some() {
            let mut packed = Vec::with_capacity(self.spans.iter().map(|s| s.1).sum::<usize>() * 2);
            for span in &mut self.spans {
                let at = packed.len();
                packed.extend_from_slice(&self.keys[span.0..span.0 + span.1]);
                span.0 = at;
            }
            self.keys = packed;
        }
        dropped
    }
}

impl Store {
    /// The next page of `cursor`'s iteration, ascending: at most `max_keys` entries whose
    /// keys total at most `max_key_bytes` bytes. An empty page means the iteration is over.
    /// [`Error::BufferTooSmall`] (the cursor unmoved) when `max_key_bytes` cannot hold
    /// even the next key. The module documentation gives the consistency rule.
    pub fn list_keys(&self, cursor: &mut KeyCursor, max_keys: usize, max_key_bytes: usize) -> Result<Vec<KeyInfo>> {
        if max_keys == 0 {
            return Err(Error::InvalidArgument("a page of 0 keys".into()));
        }
        next_page(&self.ready()?.index, cursor, max_keys, max_key_bytes)
    }
}

/// The next page of `cursor` in `index` (the caller holds the index's lock).
fn next_page(index: &Index, cursor: &mut KeyCursor, max_keys: usize, max_key_bytes: usize) -> Result<Vec<KeyInfo>> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while out.len() < max_keys {
        let Some(key) = cursor.peek() else {
            if cursor.complete {
                break;
            }
            cursor.refill(index, max_keys);
            continue;
        };
        if let Some(e) = index.get(key) {
            if bytes + key.len() > max_key_bytes {
                return match out.is_empty() {
                    true => Err(Error::BufferTooSmall { needed: key.len() as u64 }),
                    false => Ok(out),
                };
            }
            bytes += key.len();
            out.push(KeyInfo { key: key.to_vec(), value_len: e.payload_len, generation: e.generation });
        }
        // Returned, or deleted since the scan: either way behind the iteration now.
        cursor.next += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering as AtomicOrdering};
    use std::sync::Arc;

    use super::*;
    use crate::format::{GeometryRequest, SlotIndex};
    use crate::store::index::{Displaced, Entry};
    use crate::store::{FormatOptions, OpenMode, OpenOptions};

    fn entry(slot: u64, len: u64) -> Entry {
        Entry { slot: SlotIndex(slot), generation: Generation(slot + 100), payload_len: len, payload_crc: 0 }
    }

    fn index_of(keys: &[Vec<u8>]) -> Index {
        let entries = keys.iter().enumerate().map(|(i, k)| (&k[..], entry(i as u64, i as u64 * 3)));
        let (ix, losers) = Index::rebuild(keys.len() as u64 + 16, entries).unwrap();
        assert!(losers.is_empty());
        ix
    }

    fn cursor(window_min: usize) -> KeyCursor {
        KeyCursor { window_min: Some(window_min), ..KeyCursor::new() }
    }

    /// Every page of a fresh iteration.
    fn all_pages(ix: &Index, mut cur: KeyCursor, max_keys: usize, max_bytes: usize) -> Vec<Vec<KeyInfo>> {
        let mut pages = Vec::new();
        loop {
            let p = next_page(ix, &mut cur, max_keys, max_bytes).unwrap();
            if p.is_empty() {
                return pages;
            }
            pages.push(p);
        }
    }

    #[test]
    fn pages_walk_every_key_once_in_bytewise_order() {
        // Prefixes, a 0xff byte and varied lengths: bytewise order, a prefix first.
        let mut keys: Vec<Vec<u8>> = (0..1000u32).map(|i| format!("k{}", i * 7919 % 1000).into_bytes()).collect();
        keys.extend([b"k".to_vec(), b"k\xff".to_vec(), b"\x00".to_vec(), vec![b'z'; 300]]);
        let ix = index_of(&keys);
        let want: Vec<Vec<u8>> = keys.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        for window in [1, 3, 100, WINDOW_KEYS_MIN] {
            for (max_keys, max_bytes) in [(1, 1 << 20), (7, 1 << 20), (64, 310), (5000, 1 << 20), (3, 300)] {
                let pages = all_pages(&ix, cursor(window), max_keys, max_bytes);
                let got: Vec<Vec<u8>> = pages.iter().flatten().map(|k| k.key.clone()).collect();
                assert_eq!(got, want, "window {window} max_keys {max_keys} max_bytes {max_bytes}");
                for p in &pages {
                    assert!(p.len() <= max_keys);
                    assert!(p.iter().map(|k| k.key.len()).sum::<usize>() <= max_bytes);
                }
            }
        }
        let first = &next_page(&ix, &mut KeyCursor::new(), 1, 1 << 20).unwrap()[0];
        assert_eq!(first.key, b"\x00");
        let i = keys.iter().position(|k| k == b"\x00").unwrap() as u64;
        assert_eq!((first.value_len, first.generation), (i * 3, Generation(i + 100)));
        let from_k = next_page(&ix, &mut KeyCursor::after(b"k"), 2, 1 << 20).unwrap();
        assert_eq!(from_k.iter().map(|k| &k.key[..]).collect::<Vec<_>>(), [&b"k0"[..], b"k1"], "strictly after the start key");
    }

    #[test]
    fn a_key_larger_than_the_byte_budget_is_buffer_too_small_and_the_cursor_stays() {
        let ix = index_of(&[b"a".to_vec(), vec![b'b'; 100]]);
        let mut cur = KeyCursor::new();
        assert_eq!(next_page(&ix, &mut cur, 10, 50).unwrap().len(), 1, "a page ends before a key that does not fit");
        assert!(matches!(next_page(&ix, &mut cur, 10, 50), Err(Error::BufferTooSmall { needed: 100 })));
        assert_eq!(next_page(&ix, &mut cur, 10, 100).unwrap()[0].key, vec![b'b'; 100], "the key that did not fit comes next");
        assert!(next_page(&ix, &mut cur, 10, 100).unwrap().is_empty());
        assert!(next_page(&index_of(&[]), &mut KeyCursor::new(), 10, 100).unwrap().is_empty());
    }

    /// Pages served from the window look each key up again: deleted keys are skipped,
    /// replaced ones show their new generation, and keys past the window are found by the next scan.
    #[test]
    fn the_window_is_checked_against_the_index_as_it_is_served() {
        let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("k{i}").into_bytes()).collect();
        let mut ix = index_of(&keys);
        let mut cur = cursor(4);
        let p = next_page(&ix, &mut cur, 1, 1 << 20).unwrap();
        assert_eq!((p[0].key.as_slice(), cur.window_len()), (&b"k0"[..], 3), "the scan kept 4 keys, one served");
        ix.remove(b"k1");
        let newer = Entry { slot: SlotIndex(20), generation: Generation(999), payload_len: 7, payload_crc: 0 };
        assert!(matches!(ix.install(b"k2", newer), Ok(Displaced::Replaced(_))));
        assert_eq!(ix.install(b"k2a", entry(21, 1)).unwrap(), Displaced::Nothing, "inside the window: not seen by its scan");
        assert_eq!(ix.install(b"k4a", entry(22, 1)).unwrap(), Displaced::Nothing, "past the window: found by the next scan");
        let rest: Vec<KeyInfo> = all_pages(&ix, cur, 2, 1 << 20).into_iter().flatten().collect();
        let names: Vec<&[u8]> = rest.iter().map(|k| &k.key[..]).collect();
        assert_eq!(names, [&b"k2"[..], b"k3", b"k4", b"k4a", b"k5", b"k6", b"k7", b"k8", b"k9"]);
        assert_eq!((rest[0].generation, rest[0].value_len), (Generation(999), 7));
    }

    #[test]
    fn the_window_is_bounded() {
        let keys: Vec<Vec<u8>> = (0..20_000).map(|i| format!("key-{i:06}").into_bytes()).collect();
        let ix = index_of(&keys);
        let mut cur = cursor(100);
        next_page(&ix, &mut cur, 10, 1 << 20).unwrap();
        assert_eq!(cur.window_len(), 20_000 / WINDOW_FRACTION - 10, "a scan keeps indexed/8 keys when that is more");
        let mut cur = cursor(5000);
        next_page(&ix, &mut cur, 10, 1 << 20).unwrap();
        assert_eq!(cur.window_len(), 5000 - 10);
        let mut cur = cursor(1);
        next_page(&ix, &mut cur, 3000, 1 << 20).unwrap();
        assert_eq!(cur.window_len(), 0, "a page larger than the minimum: the scan keeps one page");
    }

    fn small_store(name: &str) -> Store {
        let opts = OpenOptions {
            mode: OpenMode::Create(FormatOptions {
                capacity_bytes: 64 << 20,
                geometry: GeometryRequest { slot_bytes: 16 << 10, ..Default::default() },
                overwrite: false,
                ..Default::default()
            }),
            ..Default::default()
        };
        Store::open(&crate::store::tmp_path(name), &opts).unwrap()
    }

    /// Writers replace the stable keys' values and put and delete other keys (interleaved with
    /// them in key order) while iterations run: every stable key comes back exactly once, and
    /// nothing comes back twice or out of order. Small windows make the scans and the
    /// re-checks against the index run many times per iteration.
    #[test]
    fn keys_present_throughout_come_back_exactly_once_under_concurrent_writes() {
        let s = Arc::new(small_store("list-concurrent"));
        let stable: Vec<Vec<u8>> = (0..600).map(|i| format!("stable-{i:04}").into_bytes()).collect();
        for k in &stable {
            s.put(k, b"v0").unwrap();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let (s, stop, stable, writes) = (s.clone(), stop.clone(), stable.clone(), writes.clone());
                std::thread::spawn(move || {
                    let mut i = 0usize;
                    while !stop.load(AtomicOrdering::Relaxed) {
                        writes.fetch_add(1, AtomicOrdering::Relaxed);
                        let churn = format!("stable-{:04}-churn-{t}", (i * 37) % 600).into_bytes();
                        s.put(&churn, b"x").unwrap();
                        s.put(&stable[(i * 13 + t) % stable.len()], &vec![t as u8; i % 50]).unwrap();
                        if i % 2 == 0 {
                            let _ = s.delete(&churn);
                        }
                        i += 1;
                    }
                    i
                })
            })
            .collect();
        while writes.load(AtomicOrdering::Relaxed) < 20 {
            std::thread::yield_now();
        }
        let before = writes.load(AtomicOrdering::Relaxed);
        let configs = [1, 7, 50, WINDOW_KEYS_MIN].into_iter().flat_map(|w| [1, 16, 333].map(|p| (w, p)));
        // Every configuration once, then on until the writers have done 500 rounds meanwhile.
        for (rounds, (window, page)) in configs.cycle().enumerate() {
            if rounds >= 12 && writes.load(AtomicOrdering::Relaxed) - before >= 500 {
                break;
            }
            let mut cur = cursor(window);
            let mut seen = BTreeSet::new();
            let mut last = Vec::new();
            loop {
                let p = s.list_keys(&mut cur, page, 1 << 20).unwrap();
                if p.is_empty() {
                    break;
                }
                for k in p {
                    assert!(k.key > last, "the iteration went backwards");
                    last = k.key.clone();
                    assert!(seen.insert(k.key), "a key was returned twice");
                }
            }
            for k in &stable {
                assert!(seen.contains(k), "window {window} page {page}: {:?} never returned", String::from_utf8_lossy(k));
            }
        }
        stop.store(true, AtomicOrdering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
    }

    #[test]
    fn listing_needs_a_recovered_handle_and_a_page_size() {
        let p = crate::store::tmp_path("list-state");
        let create = OpenMode::Create(FormatOptions { capacity_bytes: 8 << 20, ..Default::default() });
        drop(Store::open(&p, &OpenOptions { mode: create, ..Default::default() }).unwrap());
        let s = Store::open(&p, &OpenOptions::default()).unwrap();
        assert!(matches!(s.list_keys(&mut KeyCursor::new(), 10, 1 << 20), Err(Error::NeedsRecovery)));
        s.recover(&Default::default()).unwrap();
        assert!(s.list_keys(&mut KeyCursor::new(), 10, 1 << 20).unwrap().is_empty());
        assert!(matches!(s.list_keys(&mut KeyCursor::new(), 0, 1 << 20), Err(Error::InvalidArgument(_))));
    }

    /// What a whole iteration costs over a large index (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn measure_iteration_cost() {
        for n in [100_000usize, 1_000_000] {
            let keys: Vec<Vec<u8>> = (0..n)
                .map(|i| format!("model-x/layer-{:02}/chunk-{:016x}", i % 40, (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)).into_bytes())
                .collect();
            let ix = index_of(&keys);
            for page in [1024, 4096] {
                let mut w = Window { keys: Vec::new(), spans: Vec::new(), want: page, max_bytes: WINDOW_BYTES };
                let t = std::time::Instant::now();
                w.gather(&ix, b"model-x/layer-20");
                let one_scan = t.elapsed();
                assert_eq!(w.spans.len(), page);
                let t = std::time::Instant::now();
                let pages = all_pages(&ix, KeyCursor::new(), page, usize::MAX);
                let all = t.elapsed();
                assert_eq!(pages.iter().map(Vec::len).sum::<usize>(), n);
                println!(
                    "listing: {n} keys, pages of {page}: a scan keeping one page {:.1} ms, the whole iteration {:.2} s",
                    one_scan.as_secs_f64() * 1e3,
                    all.as_secs_f64()
                );
            }
        }
    }
}
