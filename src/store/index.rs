//! The in-memory index: key -> where its newest value lives, plus slot allocation.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::{Error, Result};
use super::evict::{EvictionOrder, EvictionPolicy};
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
    /// Every slot not allocated (indexed, being written, or being invalidated).
    free: FreeRanges,
    /// The entries in eviction order, when the handle evicts.
    order: Option<EvictionOrder>,
    /// The slots of entries a fast recovery indexed from the checkpoint without reading
    /// their header: the first read verifies each, or finds it gone.
    unverified: SlotSet,
    /// Keys put or removed since the last full checkpoint's snapshot, while a delta
    /// checkpoint may follow it (`None`: not tracked, the next checkpoint is full).
    changed: Option<HashSet<Box<[u8]>>>,
}

/// Slot indices are ours (not caller input) and already well spread: a multiply hashes them
/// far faster than SipHash, which matters for the half-million inserts of a fast recovery.
#[derive(Default)]
pub(crate) struct SlotHasher(u64);

impl std::hash::Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// cbindgen:ignore
type SlotSet = HashSet<SlotIndex, std::hash::BuildHasherDefault<SlotHasher>>;

/// Free slots as disjoint, non-adjacent ranges `start..end`, keyed by `start`.
/// A fresh device is one range; each allocated slot splits at most one range in
/// two, so there are at most `allocated + 1` ranges: memory follows the slots in
/// use, never the device's slot count.
struct FreeRanges {
    ranges: BTreeMap<u64, u64>,
    /// Slots in all ranges.
    count: u64,
    slot_count: u64,
}

impl FreeRanges {
    /// Every slot of `slot_count` free except `used`, which is sorted and holds no duplicates.
    fn all_but(slot_count: u64, used: &[u64]) -> FreeRanges {
        let mut ranges = BTreeMap::new();
        let mut count = 0;
        let mut start = 0;
        for &u in used.iter().take_while(|&&u| u < slot_count) {
            if start < u {
                ranges.insert(start, u);
                count += u - start;
            }
            start = u + 1;
        }
        if start < slot_count {
            ranges.insert(start, slot_count);
            count += slot_count - start;
        }
        FreeRanges { ranges, count, slot_count }
    }

    /// The range holding `slot`, if it is free.
    fn containing(&self, slot: u64) -> Option<(u64, u64)> {
        self.ranges.range(..=slot).next_back().map(|(&s, &e)| (s, e)).filter(|&(_, e)| slot < e)
    }

    /// Takes the lowest free slot.
    fn take_lowest(&mut self) -> Option<u64> {
        let (start, end) = self.ranges.pop_first()?;
        if start + 1 < end {
            self.ranges.insert(start + 1, end);
        }
        self.count -= 1;
        Some(start)
    }

    /// Takes `slot`, which must be free.
    fn take(&mut self, slot: u64) {
        let Some((start, end)) = self.containing(slot) else { return };
        self.ranges.remove(&start);
        if start < slot {
            self.ranges.insert(start, slot);
        }
        if slot + 1 < end {
            self.ranges.insert(slot + 1, end);
        }
        self.count -= 1;
    }

    /// Gives back `slot`, which must be allocated, merging it with the ranges beside it.
    fn give(&mut self, slot: u64) {
        let mut start = slot;
        let mut end = slot + 1;
        if let Some((&s, &e)) = self.ranges.range(..slot).next_back() {
            if e == slot {
                self.ranges.remove(&s);
                start = s;
            }
        }
        if let Some(e) = self.ranges.remove(&(slot + 1)) {
            end = e;
        }
        self.ranges.insert(start, end);
        self.count += 1;
    }

    /// Heap bytes, roughly: a B-tree leaf of 11 ranges is about 192 bytes, and
    /// leaves run from half full (a map built by random inserts) to full.
    fn approx_bytes(&self) -> usize {
        self.ranges.len() * 24
    }
}

/// Heap bytes of one map bucket (the boxed key's bytes come on top).
const BUCKET_BYTES: usize = std::mem::size_of::<(Box<[u8]>, Entry)>() + 1;

impl Index {
    /// An index with every one of `slot_count` slots free; allocates nothing per slot.
    pub fn new(slot_count: u64) -> Index {
        Index { map: HashMap::new(), free: FreeRanges::all_but(slot_count, &[]), order: None, unverified: SlotSet::default(), changed: None }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn free_slots(&self) -> usize {
        self.free.count as usize
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.get(key).copied()
    }

    /// [`get`](Self::get) for a read that counts as a use (LRU eviction).
    pub fn lookup(&mut self, key: &[u8]) -> Option<Entry> {
        let e = self.map.get(key).copied();
        if let (Some(_), Some(order)) = (e, self.order.as_mut()) {
            order.touch(key);
        }
        e
    }

    /// Keeps the entries in `policy`'s eviction order from now on, starting from
    /// generation order (the oldest put coldest).
    pub fn set_eviction(&mut self, policy: EvictionPolicy) {
        self.order = EvictionOrder::new(policy, self.map.iter().map(|(k, e)| (&k[..], e)));
    }

    /// Takes up to `n` of the coldest entries out of the index; their slots stay
    /// allocated until the caller has invalidated and released them.
    pub fn take_coldest(&mut self, n: usize) -> Vec<(Box<[u8]>, Entry)> {
        let Some(order) = self.order.as_mut() else { return Vec::new() };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(key) = order.pop_coldest() else { break };
            if let Some(e) = self.map.remove(&key) {
                self.unverified.remove(&e.slot);
                out.push((key, e));
            }
        }
        for (key, _) in &out {
            self.note_change(key);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Entry)> {
        self.map.iter().map(|(k, e)| (&k[..], e))
    }

    /// Whether `slot` is allocated; slots past the device's end never are.
    pub fn is_used(&self, slot: SlotIndex) -> bool {
        slot.0 < self.free.slot_count && self.free.containing(slot.0).is_none()
    }

    /// Reserves the lowest free slot, and room in the map for its entry so that
    /// [`install`](Self::install) after the write cannot fail to allocate.
    pub fn allocate(&mut self) -> Result<SlotIndex> {
        if self.free.count == 0 {
            return Err(Error::SlotsFull { slot_count: self.free.slot_count });
        }
        // Every allocated slot may become an entry; the map holds room for all of them.
        let allocated = (self.free.slot_count - self.free.count) as usize;
        let additional = (allocated + 1).saturating_sub(self.map.len());
        self.map
            .try_reserve(additional)
            .map_err(|_| Error::out_of_memory("the index", (self.map.len() + additional).saturating_mul(2 * BUCKET_BYTES)))?;
        self.free.take_lowest().map(SlotIndex).ok_or(Error::SlotsFull { slot_count: self.free.slot_count })
    }

    /// Returns a slot that holds nothing the index points at.
    pub fn release(&mut self, slot: SlotIndex) {
        debug_assert!(self.is_used(slot), "double free of slot {slot}");
        if self.is_used(slot) {
            self.free.give(slot.0);
        }
    }

    /// Installs `entry` (whose slot the caller allocated) for `key`, keeping the newer generation.
    pub fn install(&mut self, key: &[u8], entry: Entry) -> Displaced {
        let displaced = match self.map.get_mut(key) {
            None => {
                self.map.insert(key.into(), entry);
                Displaced::Nothing
            }
            Some(current) if current.generation > entry.generation => Displaced::Superseded(entry),
            Some(current) => Displaced::Replaced(std::mem::replace(current, entry)),
        };
        if let Displaced::Replaced(old) = &displaced {
            self.unverified.remove(&old.slot);
        }
        if !matches!(displaced, Displaced::Superseded(_)) {
            self.note_change(key);
        }
        if let (false, Some(order)) = (matches!(displaced, Displaced::Superseded(_)), self.order.as_mut()) {
            order.insert(key);
        }
        displaced
    }

    /// Removes the key; its slot stays allocated until the caller releases it.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        if let Some(order) = self.order.as_mut() {
            order.remove(key);
        }
        let e = self.map.remove(key)?;
        self.unverified.remove(&e.slot);
        self.note_change(key);
        Some(e)
    }

    fn note_change(&mut self, key: &[u8]) {
        if let Some(changed) = self.changed.as_mut() {
            if !changed.contains(key) {
                changed.insert(key.into());
            }
            // Past this no delta would be written anyway: stop, so memory stays bounded by
            // the entries even when deletes of ever new keys go on without a checkpoint.
            if changed.len() > self.map.len() + 64 {
                self.changed = None;
            }
        }
    }

    /// Starts recording changed keys afresh (a full checkpoint's snapshot).
    pub fn track_changes(&mut self) {
        self.changed = Some(HashSet::new());
    }

    /// Stops recording: the next checkpoint must be full.
    pub fn forget_changes(&mut self) {
        self.changed = None;
    }

    /// Keys put or removed since [`track_changes`](Self::track_changes), if tracked.
    pub fn changed_keys(&self) -> Option<&HashSet<Box<[u8]>>> {
        self.changed.as_ref()
    }

    /// Marks the entries in `slots` as indexed without a read.
    pub fn mark_unverified(&mut self, slots: impl ExactSizeIterator<Item = SlotIndex>) -> Result<()> {
        let n = slots.len();
        self.unverified.try_reserve(n).map_err(|_| Error::out_of_memory("the unverified entries", n as u64 * 16))?;
        self.unverified.extend(slots);
        Ok(())
    }

    pub fn is_unverified(&self, slot: SlotIndex) -> bool {
        self.unverified.contains(&slot)
    }

    /// A read found the entry in `slot` whole.
    pub fn set_verified(&mut self, slot: SlotIndex) {
        self.unverified.remove(&slot);
    }

    pub fn unverified_count(&self) -> usize {
        self.unverified.len()
    }

    /// Up to `n` unverified entries with their keys (for background verification): one pass
    /// over the index, so a step costs O(entries) in memory besides its reads.
    pub fn some_unverified(&self, n: usize) -> Vec<(Box<[u8]>, Entry)> {
        if self.unverified.is_empty() {
            return Vec::new();
        }
        self.map.iter().filter(|(_, e)| self.unverified.contains(&e.slot)).take(n).map(|(k, e)| (k.clone(), *e)).collect()
    }

    /// Builds an index from recovered entries. Slots must be below `slot_count`.
    /// Duplicate keys keep the highest generation; a slot claimed twice keeps the first claim.
    /// Returns the index and the entries that lost. Memory follows the entries, not
    /// `slot_count`; an allocation the host refuses is [`Error::OutOfMemory`].
    pub fn rebuild<'k>(
        slot_count: u64,
        entries: impl IntoIterator<Item = (&'k [u8], Entry)>,
    ) -> Result<(Index, Vec<Entry>)> {
        let entries = entries.into_iter();
        let oom = |n: usize| Error::out_of_memory("the index", n.saturating_mul(2 * BUCKET_BYTES + 16));
        // Sized up front: rehashing a growing map costs more than the inserts themselves.
        let hint = entries.size_hint().0;
        let mut map = HashMap::new();
        map.try_reserve(hint).map_err(|_| oom(hint))?;
        // The slots claimed so far, to settle a slot claimed twice.
        let mut claimed: HashSet<u64, std::hash::BuildHasherDefault<SlotHasher>> = HashSet::default();
        claimed.try_reserve(hint).map_err(|_| oom(hint))?;
        let mut ix = Index { map, free: FreeRanges::all_but(slot_count, &[]), order: None, unverified: SlotSet::default(), changed: None };
        let mut losers = Vec::new();
        for (key, e) in entries {
            if claimed.contains(&e.slot.0) {
                losers.push(e);
                continue;
            }
            ix.map.try_reserve(1).map_err(|_| oom(ix.map.len() + 1))?;
            claimed.try_reserve(1).map_err(|_| oom(claimed.len() + 1))?;
            // One hash and probe per entry (a rebuilt index has no eviction order yet).
            let displaced = match ix.map.entry(key.into()) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(e);
                    Displaced::Nothing
                }
                std::collections::hash_map::Entry::Occupied(o) if o.get().generation > e.generation => Displaced::Superseded(e),
                std::collections::hash_map::Entry::Occupied(mut o) => Displaced::Replaced(std::mem::replace(o.get_mut(), e)),
            };
            match displaced {
                Displaced::Nothing => {
                    claimed.insert(e.slot.0);
                }
                Displaced::Replaced(old) => {
                    claimed.remove(&old.slot.0);
                    claimed.insert(e.slot.0);
                    losers.push(old);
                }
                Displaced::Superseded(e) => losers.push(e),
            }
        }
        let mut used = Vec::new();
        used.try_reserve_exact(claimed.len()).map_err(|_| oom(claimed.len()))?;
        used.extend(claimed);
        used.sort_unstable();
        ix.free = FreeRanges::all_but(slot_count, &used);
        Ok((ix, losers))
    }

    /// Marks a slot allocated without an entry (e.g. quarantined until invalidated).
    pub fn reserve(&mut self, slot: SlotIndex) {
        if slot.0 < self.free.slot_count && !self.is_used(slot) {
            self.free.take(slot.0);
        }
    }

    /// Rough heap bytes: map buckets, keys, and the free ranges.
    pub fn approx_bytes(&self) -> usize {
        let keys: usize = self.map.keys().map(|k| k.len()).sum();
        let unverified = self.unverified.capacity() * 9;
        self.map.capacity() * BUCKET_BYTES
            + keys
            + self.free.approx_bytes()
            + self.order.as_ref().map_or(0, EvictionOrder::approx_bytes)
            + unverified
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
        assert_eq!((ix.allocate().ok(), ix.allocate().ok(), ix.allocate().ok()), (s(0), s(1), s(2)));
        assert!(matches!(ix.allocate(), Err(Error::SlotsFull { slot_count: 3 })));
        ix.release(SlotIndex(1));
        assert_eq!(ix.allocate().ok(), s(1));
    }

    #[test]
    fn changes_are_tracked_for_deltas_and_stay_bounded() {
        let mut ix = Index::new(1 << 20);
        ix.install(b"kept", e(0, 1));
        assert!(ix.changed_keys().is_none(), "nothing tracked before a full checkpoint");
        ix.track_changes();
        ix.install(b"a", e(1, 2));
        ix.remove(b"kept");
        let changed: Vec<&[u8]> = ix.changed_keys().unwrap().iter().map(|k| &k[..]).collect();
        assert_eq!(changed.len(), 2);
        assert!(changed.contains(&&b"a"[..]) && changed.contains(&&b"kept"[..]));
        // Ever new keys put and deleted: past the entries (+64) tracking stops; the next is full.
        for i in 0..100u64 {
            let k = format!("t{i}");
            ix.install(k.as_bytes(), e(10 + i, 3));
            ix.remove(k.as_bytes());
        }
        assert!(ix.changed_keys().is_none());
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
        let (ix, losers) = Index::rebuild(6, input).unwrap();
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

    /// The device: 2^46 bytes of 8 KiB slots. The old index allocated 8 bytes per
    /// slot of capacity here (a 51 GB free list and a 1 GB bitmap) and aborted the process.
    #[test]
    fn memory_follows_entries_not_slot_count() {
        let slot_count = (1u64 << 46) / 8192;
        let mut ix = Index::new(slot_count);
        assert_eq!(ix.free_slots() as u64, slot_count);
        assert!(ix.approx_bytes() < 4096, "an empty index of {slot_count} slots: {} bytes", ix.approx_bytes());
        for i in 0..1000u64 {
            let slot = ix.allocate().unwrap();
            assert_eq!(slot, SlotIndex(i));
            ix.install(format!("key-{i}").as_bytes(), e(i, i + 1));
        }
        // Every other slot freed: the worst case, one range per freed slot.
        for i in (0..1000u64).step_by(2) {
            ix.remove(format!("key-{i}").as_bytes());
            ix.release(SlotIndex(i));
        }
        assert_eq!(ix.free_slots() as u64, slot_count - 500);
        // The map keeps the room it grew to for 1000 entries; nothing scales with slot_count.
        assert!(ix.approx_bytes() < 1000 * 200, "{} bytes for 500 entries", ix.approx_bytes());
        assert!(ix.is_used(SlotIndex(1)) && !ix.is_used(SlotIndex(2)) && !ix.is_used(SlotIndex(slot_count - 1)));
        assert!(!ix.is_used(SlotIndex(slot_count)), "past the end");
        let entries: Vec<(Vec<u8>, Entry)> = ix.iter().map(|(k, e)| (k.to_vec(), *e)).collect();
        let (re, losers) = Index::rebuild(slot_count, entries.iter().map(|(k, e)| (&k[..], *e))).unwrap();
        assert!(losers.is_empty());
        assert_eq!((re.len(), re.free_slots()), (500, ix.free_slots()));
        assert!(re.approx_bytes() < 500 * 200, "{} bytes for 500 rebuilt entries", re.approx_bytes());
    }

    /// The ranges against a plain set of used slots, over random allocate/release/reserve.
    #[test]
    fn free_ranges_match_a_model() {
        let n = 200u64;
        let mut ix = Index::new(n);
        let mut used = std::collections::BTreeSet::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..20_000 {
            match rand() % 4 {
                0 | 1 => {
                    let want = (0..n).find(|s| !used.contains(s));
                    assert_eq!(ix.allocate().ok().map(|s| s.0), want, "step {step}: lowest free first");
                    used.extend(want);
                }
                2 => {
                    if let Some(&s) = used.iter().nth((rand() % (used.len() as u64 + 1)) as usize) {
                        ix.release(SlotIndex(s));
                        used.remove(&s);
                    }
                }
                _ => {
                    let s = rand() % n;
                    ix.reserve(SlotIndex(s));
                    used.insert(s);
                }
            }
            assert_eq!(ix.free_slots() as u64, n - used.len() as u64, "step {step}");
            if step % 97 == 0 {
                assert!((0..n).all(|s| ix.is_used(SlotIndex(s)) == used.contains(&s)), "step {step}");
                let runs = ix.free.ranges.iter().collect::<Vec<_>>();
                assert!(runs.windows(2).all(|w| w[0].1 < w[1].0), "step {step}: ranges merged and ordered: {runs:?}");
            }
        }
    }
}
