//! Eviction, opt-in per handle: which entries go when a put finds no free slot.
//!
//! - `None` (the default): a full device answers `SlotsFull` (RB_E_NO_SPACE).
//! - `Fifo`: the entries put longest ago go first.
//! - `Lru`: the entries read or written longest ago go first. After a restart
//!   the order starts from generation order (the oldest put first).
//!
//! A put that finds no free slot evicts a batch: enough of the coldest entries
//! to bring the free slots up to the low watermark. Evicted entries leave the
//! index at once and their headers are zeroed on the device as deletes are;
//! their keys wait in a bounded queue for the server to drain. A victim whose
//! zeroing fails is not evicted: its record is still on the device, so its
//! entry goes back into the index (nothing is reported that a restart undoes).

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::index::{Entry, Index};
use super::Store;
use crate::error::{Error, Result};
use crate::format::{Generation, SlotIndex};
use crate::sync::lock;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvictionPolicy {
    #[default]
    None,
    Lru,
    Fifo,
}

/// How a handle evicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Eviction {
    pub policy: EvictionPolicy,
    /// Free slots an eviction batch leaves, in thousandths of the slot count (at least one
    /// slot); 0 means the default.
    pub low_watermark_permille: u32,
}

/// The default low watermark: 1% of the slots free after an eviction batch.
pub const DEFAULT_LOW_WATERMARK_PERMILLE: u32 = 10;

impl Eviction {
    /// Free slots an eviction batch aims for.
    pub fn target_free(&self, slot_count: u64) -> u64 {
        let permille = match self.low_watermark_permille {
            0 => DEFAULT_LOW_WATERMARK_PERMILLE,
            p => p.min(1000),
        };
        (slot_count * permille as u64 / 1000).max(1)
    }
}

/// An evicted entry, as the server learns of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub key: Box<[u8]>,
    pub value_len: u64,
    pub generation: Generation,
}

/// Evicted keys not drained yet are kept up to this many; older ones are dropped and counted.
pub const MAX_EVICTED_QUEUED: usize = 1 << 20;

/// The entries in eviction order, coldest first. Each key holds a unique rank: its
/// insertion (FIFO) or last use (LRU), from one counter.
pub(super) struct EvictionOrder {
    policy: EvictionPolicy,
    by_rank: BTreeMap<u64, Box<[u8]>>,
    rank_of: HashMap<Box<[u8]>, u64>,
    next_rank: u64,
}

impl EvictionOrder {
    /// The order for `entries`, oldest generation first (a restart starts from generation order).
    pub fn new<'k>(policy: EvictionPolicy, entries: impl Iterator<Item = (&'k [u8], Generation)>) -> Option<EvictionOrder> {
        if policy == EvictionPolicy::None {
            return None;
        }
        let mut by_gen: Vec<(Generation, &[u8])> = entries.map(|(k, g)| (g, k)).collect();
        by_gen.sort_unstable();
        let mut order = EvictionOrder { policy, by_rank: BTreeMap::new(), rank_of: HashMap::with_capacity(by_gen.len()), next_rank: 0 };
        for (_, key) in by_gen {
            order.insert(key);
        }
        Some(order)
    }

    /// A new or replaced key is the hottest.
    pub fn insert(&mut self, key: &[u8]) {
        self.remove(key);
        let rank = self.next_rank;
        self.next_rank += 1;
        self.by_rank.insert(rank, key.into());
        self.rank_of.insert(key.into(), rank);
    }

    pub fn remove(&mut self, key: &[u8]) {
        if let Some(rank) = self.rank_of.remove(key) {
            self.by_rank.remove(&rank);
        }
    }

    /// A read: LRU moves the key to the hot end; FIFO ignores it.
    pub fn touch(&mut self, key: &[u8]) {
        if self.policy == EvictionPolicy::Lru && self.rank_of.contains_key(key) {
            self.insert(key);
        }
    }

    /// The coldest key, taken out of the order.
    pub fn pop_coldest(&mut self) -> Option<Box<[u8]>> {
        let (_, key) = self.by_rank.pop_first()?;
        self.rank_of.remove(&key);
        Some(key)
    }

    pub fn approx_bytes(&self) -> usize {
        let keys: usize = self.rank_of.keys().map(|k| k.len()).sum();
        self.rank_of.capacity() * 40 + self.by_rank.len() * 48 + 2 * keys
    }
}

/// Evicted keys waiting to be drained, bounded.
#[derive(Default)]
pub(super) struct EvictedQueue {
    queue: VecDeque<Evicted>,
    /// Evicted keys dropped from the queue because it was full.
    pub dropped: u64,
    /// Every entry evicted since open.
    pub total: u64,
}

impl EvictedQueue {
    pub fn push(&mut self, e: Evicted) {
        self.total += 1;
        if self.queue.len() == MAX_EVICTED_QUEUED {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(e);
    }

    pub fn take(&mut self, max: usize) -> Vec<Evicted> {
        let n = max.min(self.queue.len());
        self.queue.drain(..n).collect()
    }

    /// Up to `max` keys, oldest first, whose key bytes total at most `max_bytes`. When not
    /// even the first fits, `Err(its length)`.
    pub fn take_fitting(&mut self, max: usize, max_bytes: usize) -> std::result::Result<Vec<Evicted>, usize> {
        let (mut n, mut bytes) = (0, 0);
        for e in self.queue.iter().take(max) {
            if bytes + e.key.len() > max_bytes {
                break;
            }
            bytes += e.key.len();
            n += 1;
        }
        match (n, self.queue.front()) {
            (0, Some(first)) if max > 0 => Err(first.key.len()),
            _ => Ok(self.queue.drain(..n).collect()),
        }
    }
}

/// What one eviction batch took out of the index.
struct Victims {
    taken: Vec<(Box<[u8]>, Entry)>,
}

impl Store {
    /// The lowest free slot; when there is none and the handle evicts, an eviction batch first.
    /// Not leased: puts go through [`allocate_slot`](Self::allocate_slot).
    pub(super) fn allocate_unleased(&self) -> Result<SlotIndex> {
        // A few rounds: puts running at once may take the slots a batch freed.
        for _ in 0..8 {
            let victims = {
                let mut st = lock(&self.state);
                let eviction = st.eviction;
                match st.index.allocate() {
                    Err(Error::SlotsFull { .. }) if eviction.policy != EvictionPolicy::None => {
                        let target = eviction.target_free(self.sb.geometry.slot_count());
                        let want = (target as usize).saturating_sub(st.free_slots()).max(1);
                        take_victims(&mut st.index, want)
                    }
                    other => return other,
                }
            };
            if victims.taken.is_empty() {
                break; // every slot is being written or invalidated: nothing to evict now
            }
            self.evict(victims);
        }
        Err(Error::SlotsFull { slot_count: self.sb.geometry.slot_count() })
    }

    /// Zeroes the victims' headers (as deletes do), frees their slots, queues their keys.
    ///
    /// Synchronous writes, not an engine batch: an eviction runs inside a put, which may itself
    /// be an item of a batch holding one of the engine's rings or its worker pool.
    fn evict(&self, victims: Victims) {
        // Zeroed, or else whether the record is still whole on the device (a failed write may
        // have landed in part; a header that cannot be read back counts as whole).
        let outcome: Vec<(bool, bool)> = victims
            .taken
            .iter()
            .map(|(key, e)| match self.invalidate(e.slot) {
                Ok(()) => (true, false),
                Err(_) => (false, self.header_matches(key, e).unwrap_or(true)),
            })
            .collect();
        let mut st = lock(&self.state);
        let mut evicted = 0;
        for ((key, e), (zeroed, whole)) in victims.taken.into_iter().zip(outcome) {
            if whole {
                // Still on the device: back into the index, unless a newer put of the key
                // came in meanwhile (then this copy is zeroed before the next write).
                match st.index.install(&key, e) {
                    Ok(super::index::Displaced::Superseded(old)) => st.pending_invalidation.push(old.slot),
                    Ok(_) => {}
                    // No memory for its key: it stays evicted, and its header is zeroed before
                    // the next write (a crash before then can bring it back).
                    Err(_) => {
                        st.pending_invalidation.push(e.slot);
                        evicted += 1;
                        st.evicted.push(Evicted { key, value_len: e.payload_len, generation: e.generation });
                    }
                }
                continue;
            }
            if !zeroed {
                st.pending_invalidation.push(e.slot); // a damaged header: zeroed before the next write
            }
            evicted += 1;
            st.evicted.push(Evicted { key, value_len: e.payload_len, generation: e.generation });
        }
        st.changes += evicted;
        drop(st);
        self.record_evictions(evicted);
    }

    /// Up to `max` evicted keys, oldest first, removed from the queue.
    pub fn take_evicted(&self, max: usize) -> Vec<Evicted> {
        lock(&self.state).evicted.take(max)
    }

    /// [`take_evicted`](Self::take_evicted) into a key buffer of `max_bytes`: the keys that fit,
    /// the rest stay queued. [`Error::BufferTooSmall`] when not even the oldest fits.
    pub fn take_evicted_fitting(&self, max: usize, max_bytes: usize) -> Result<Vec<Evicted>> {
        lock(&self.state).evicted.take_fitting(max, max_bytes).map_err(|needed| Error::BufferTooSmall { needed: needed as u64 })
    }

    /// Entries evicted since open, and how many of their keys were dropped undrained.
    pub fn eviction_counts(&self) -> (u64, u64) {
        let st = lock(&self.state);
        (st.evicted.total, st.evicted.dropped)
    }

    pub fn eviction(&self) -> Eviction {
        lock(&self.state).eviction
    }

    /// Sets how this handle evicts from now on (the order starts from generation order).
    pub fn set_eviction(&self, eviction: Eviction) -> Result<()> {
        if eviction.low_watermark_permille > 1000 {
            return Err(Error::InvalidArgument(format!(
                "low_watermark_permille {} exceeds 1000",
                eviction.low_watermark_permille
            )));
        }
        let mut st = lock(&self.state);
        if st.eviction.policy != eviction.policy {
            st.index.set_eviction(eviction.policy);
        }
        st.eviction = eviction;
        Ok(())
    }
}

fn take_victims(index: &mut Index, n: usize) -> Victims {
    Victims { taken: index.take_coldest(n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(generation: u64) -> Entry {
        Entry { slot: SlotIndex(generation), generation: Generation(generation), payload_len: 1, payload_crc: 0 }
    }

    #[test]
    fn fifo_and_lru_orders() {
        let es = [(b"c".as_slice(), e(3)), (b"a".as_slice(), e(1)), (b"b".as_slice(), e(2))];
        let mut fifo = EvictionOrder::new(EvictionPolicy::Fifo, es.iter().map(|(k, e)| (*k, e.generation))).unwrap();
        fifo.touch(b"a");
        assert_eq!(fifo.pop_coldest().as_deref(), Some(&b"a"[..]), "FIFO ignores reads; generation order at start");
        let mut lru = EvictionOrder::new(EvictionPolicy::Lru, es.iter().map(|(k, e)| (*k, e.generation))).unwrap();
        lru.touch(b"a");
        lru.insert(b"d");
        lru.remove(b"c");
        let order: Vec<Box<[u8]>> = std::iter::from_fn(|| lru.pop_coldest()).collect();
        assert_eq!(order, vec![b"b".as_slice().into(), b"a".as_slice().into(), b"d".as_slice().into()]);
        assert!(EvictionOrder::new(EvictionPolicy::None, es.iter().map(|(k, e)| (*k, e.generation))).is_none());
    }

    #[test]
    fn watermark_and_bounded_queue() {
        let ev = Eviction { policy: EvictionPolicy::Lru, low_watermark_permille: 0 };
        assert_eq!(ev.target_free(1000), 10);
        assert_eq!(ev.target_free(50), 1, "at least one slot");
        let mut q = EvictedQueue::default();
        for i in 0..3 {
            q.push(Evicted { key: vec![i].into(), value_len: 0, generation: Generation(i as u64) });
        }
        assert_eq!(q.take(2).len(), 2);
        assert_eq!((q.take(10).len(), q.total, q.dropped), (1, 3, 0));
    }
}
