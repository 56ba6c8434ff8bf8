//! The in-memory index: key -> where its newest value lives, plus slot allocation.

use std::collections::HashMap;

use crate::format::{Generation, SlotIndex};

/// Where a key's value lives and what its header must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: SlotIndex,
    pub generation: Generation,
    pub payload_len: u64,
    pub payload_crc: u32,
}

/// What installing an entry displaced, if anything: its slot must be invalidated.
#[derive(Debug, PartialEq, Eq)]
pub enum Displaced {
    Nothing,
    /// The key's previous entry, replaced by the new one.
    Replaced(Entry),
    /// The new entry itself: a newer generation of the key was installed first.
    Superseded(Entry),
}

pub struct Index {
    map: HashMap<Box<[u8]>, Entry>,
    /// One bit per slot: allocated (indexed, being written, or being invalidated).
    used: Vec<u64>,
    /// Free slots, lowest on top.
    free: Vec<SlotIndex>,
}

impl Index {
    /// An index with every one of `slot_count` slots free.
    pub fn new(slot_count: u64) -> Index {
        Index { map: HashMap::new(), used: vec![0; slot_count.div_ceil(64) as usize], free: (0..slot_count).rev().map(SlotIndex).collect() }
    }

    /// Builds the free list from the used bits once every entry is in.
    fn rebuild_free(&mut self, slot_count: u64) {
        self.free = (0..slot_count).rev().map(SlotIndex).filter(|&s| !self.is_used(s)).collect();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn free_slots(&self) -> usize {
        self.free.len()
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.get(key).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.map.iter().map(|(k, e)| (&k[..], e))
    }

    pub fn is_used(&self, slot: SlotIndex) -> bool {
        self.used[(slot.0 / 64) as usize] & (1 << (slot.0 % 64)) != 0
    }

    fn set_used(&mut self, slot: SlotIndex, used: bool) {
        let word = &mut self.used[(slot.0 / 64) as usize];
        if used {
            *word |= 1 << (slot.0 % 64);
        } else {
            *word &= !(1 << (slot.0 % 64));
        }
    }

    /// Reserves a free slot.
    pub fn allocate(&mut self) -> Option<SlotIndex> {
        let slot = self.free.pop()?;
        self.set_used(slot, true);
        Some(slot)
    }

    /// Returns a slot that holds nothing the index points at.
    pub fn release(&mut self, slot: SlotIndex) {
        debug_assert!(self.is_used(slot), "double free of slot {slot}");
        if self.is_used(slot) {
            self.set_used(slot, false);
            self.free.push(slot);
        }
    }

    /// Installs `entry` (whose slot the caller allocated) for `key`, keeping the newer generation.
    pub fn install(&mut self, key: &[u8], entry: Entry) -> Displaced {
        match self.map.get_mut(key) {
            None => {
                self.map.insert(key.into(), entry);
                Displaced::Nothing
            }
            Some(current) if current.generation > entry.generation => Displaced::Superseded(entry),
            Some(current) => Displaced::Replaced(std::mem::replace(current, entry)),
        }
    }

    /// Removes the key; its slot stays allocated until the caller releases it.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        self.map.remove(key)
    }

    /// Builds an index from recovered entries. Slots must be below `slot_count`.
    /// Duplicate keys keep the highest generation; a slot claimed twice keeps the first claim.
    /// Returns the index and the entries that lost.
    pub fn rebuild<'k>(
        slot_count: u64,
        entries: impl IntoIterator<Item = (&'k [u8], Entry)>,
    ) -> (Index, Vec<Entry>) {
        let entries = entries.into_iter();
        // Sized up front: rehashing a growing map costs more than the inserts themselves.
        let mut ix = Index {
            map: HashMap::with_capacity(entries.size_hint().0),
            used: vec![0; slot_count.div_ceil(64) as usize],
            free: Vec::new(),
        };
        let mut losers = Vec::new();
        for (key, e) in entries {
            if ix.is_used(e.slot) {
                losers.push(e);
                continue;
            }
            match ix.install(key, e) {
                Displaced::Nothing => ix.set_used(e.slot, true),
                Displaced::Replaced(old) => {
                    ix.set_used(old.slot, false);
                    ix.set_used(e.slot, true);
                    losers.push(old);
                }
                Displaced::Superseded(e) => losers.push(e),
            }
        }
        ix.rebuild_free(slot_count);
        (ix, losers)
    }

    /// Marks a slot allocated without an entry (e.g. quarantined until invalidated).
    pub fn reserve(&mut self, slot: SlotIndex) {
        if !self.is_used(slot) {
            self.set_used(slot, true);
            self.free.retain(|&s| s != slot);
        }
    }

    /// Rough heap bytes per indexed entry (map buckets, keys, allocator bitmap and free list).
    pub fn approx_bytes(&self) -> usize {
        let per_bucket = std::mem::size_of::<(Box<[u8]>, Entry)>() + 1;
        let keys: usize = self.map.keys().map(|k| k.len()).sum();
        self.map.capacity() * per_bucket + keys + self.used.len() * 8 + self.free.capacity() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(slot: u64, generation: u64) -> Entry {
        Entry { slot: SlotIndex(slot), generation: Generation(generation), payload_len: 1, payload_crc: 2 }
    }

    #[test]
    fn allocate_lowest_first_and_release() {
        let mut ix = Index::new(3);
        let s = |i| Some(SlotIndex(i));
        assert_eq!((ix.allocate(), ix.allocate(), ix.allocate(), ix.allocate()), (s(0), s(1), s(2), None));
        ix.release(SlotIndex(1));
        assert_eq!(ix.allocate(), s(1));
    }

    #[test]
    fn install_keeps_the_newest_generation() {
        let mut ix = Index::new(10);
        assert_eq!(ix.install(b"k", e(1, 5)), Displaced::Nothing);
        assert_eq!(ix.install(b"k", e(2, 7)), Displaced::Replaced(e(1, 5)));
        assert_eq!(ix.install(b"k", e(3, 6)), Displaced::Superseded(e(3, 6)));
        assert_eq!(ix.get(b"k"), Some(e(2, 7)));
        assert_eq!(ix.remove(b"k"), Some(e(2, 7)));
        assert!(ix.is_empty());
    }

    #[test]
    fn rebuild_settles_duplicates_and_frees_the_rest() {
        let input: Vec<(&[u8], Entry)> =
            vec![(b"a", e(0, 1)), (b"b", e(1, 2)), (b"a", e(2, 3)), (b"c", e(1, 9)), (b"d", e(4, 1)), (b"b", e(5, 1))];
        let (ix, losers) = Index::rebuild(6, input);
        assert_eq!(ix.get(b"a"), Some(e(2, 3)));
        assert_eq!(ix.get(b"b"), Some(e(1, 2)));
        assert_eq!(ix.get(b"c"), None, "slot 1 was claimed first by b");
        assert_eq!(ix.get(b"d"), Some(e(4, 1)));
        assert_eq!(losers, vec![e(0, 1), e(1, 9), e(5, 1)]);
        assert_eq!(ix.free_slots(), 3);
        let used = |i| ix.is_used(SlotIndex(i));
        assert!(used(1) && used(2) && used(4));
        assert!(!used(0) && !used(3) && !used(5));
    }
}
