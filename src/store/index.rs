//! The in-memory index: key -> where its newest value lives, plus slot allocation.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use super::evict::{EvictionOrder, EvictionPolicy};
use super::keytable::{KeyTable, Parts, Shard, SHARDS};
use crate::format::{Generation, SlotIndex};
use crate::sync::lock;

/// Where a key's value lives and what its header must say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub slot: SlotIndex,
    pub generation: Generation,
    pub payload_len: u64,
    pub payload_crc: u32,
}

/// Where a recovered entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Its slot header was read and matched.
    Read,
    /// A checkpoint's, trusted without a read: verified by its first read.
    Trusted,
}

/// Puts `entry` into `row` (made for it just now when `new`) unless the row holds a newer
/// generation. Of two copies of one generation (only a damaged device has them) the lower
/// slot stays, so a rebuild settles them alike in whatever order its threads meet them.
/// Returns what it displaced and whether the row was, and is, unverified.
fn settle_row(row: &mut Indexed, new: bool, entry: Entry, unverified: bool) -> (Displaced, bool, bool) {
    if new {
        (Displaced::Nothing, false, unverified)
    } else if (row.generation, std::cmp::Reverse(row.slot)) > (entry.generation, std::cmp::Reverse(entry.slot)) {
        (Displaced::Superseded(entry), row.unverified, row.unverified)
    } else {
        let old = std::mem::replace(row, Indexed::new(entry, unverified));
        (Displaced::Replaced(old.entry()), old.unverified, unverified)
    }
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

/// The keys the index changed since a full checkpoint, each with its entry now (`None`:
/// removed), so a delta checkpoint is written from it without looking each key up (which
/// cost ~0.6 us a key, 3 ms of a 5-ms delta at 5k changes).
type Changes = KeyTable<Option<Entry>>;

/// What the index keeps per key: its entry, and whether a fast recovery indexed it without
/// reading its header (the first read verifies it, or finds it gone). One flat struct, so a
/// row stays 40 bytes.
#[derive(Clone, Copy)]
struct Indexed {
    slot: SlotIndex,
    generation: Generation,
    payload_len: u64,
    payload_crc: u32,
    unverified: bool,
}

impl Indexed {
    fn new(e: Entry, unverified: bool) -> Indexed {
        Indexed { slot: e.slot, generation: e.generation, payload_len: e.payload_len, payload_crc: e.payload_crc, unverified }
    }

    fn entry(&self) -> Entry {
        Entry { slot: self.slot, generation: self.generation, payload_len: self.payload_len, payload_crc: self.payload_crc }
    }
}

pub struct Index {
    map: KeyTable<Indexed>,
    /// Every slot not allocated (indexed, being written, or being invalidated).
    free: FreeRanges,
    /// The entries in eviction order, when the handle evicts.
    order: Option<EvictionOrder>,
    /// Entries whose `unverified` flag is set.
    unverified: usize,
    /// The highest generation ever put into this index (losers and removed entries too).
    newest: Generation,
    /// Keys put or removed since the last full checkpoint's snapshot, while a delta
    /// checkpoint may follow it (`None`: not tracked, the next checkpoint is full).
    changed: Option<Changes>,
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

/// A set of slots (ours, not caller input: [`SlotHasher`] is safe for them).
/// cbindgen:ignore
pub(crate) type SlotSet = HashSet<SlotIndex, std::hash::BuildHasherDefault<SlotHasher>>;

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

fn oom(n: usize) -> Error {
    Error::out_of_memory("the index", n.saturating_mul(ROW_BYTES))
}

/// Entries below which a rebuild runs on one thread: threads would cost more than they save.
#[cfg(not(test))]
const PARALLEL_MIN: usize = 1 << 16;
/// Small in unit tests, so that every recovery there takes the threaded path.
#[cfg(test)]
const PARALLEL_MIN: usize = 64;

/// Threads to rebuild `n` entries on: one below [`PARALLEL_MIN`], else the cores up to the
/// table's shards.
pub(super) fn build_threads(n: usize) -> usize {
    if n < PARALLEL_MIN {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |c| c.get()).min(SHARDS)
}

pub(super) fn spawn<'s, T: Send + 's>(scope: &'s std::thread::Scope<'s, '_>, f: impl FnOnce() -> T + Send + 's) -> Option<std::thread::ScopedJoinHandle<'s, T>> {
    std::thread::Builder::new().name("rb-rebuild".into()).spawn_scoped(scope, f).ok()
}

pub(super) fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// What one thread of a threaded rebuild put into the shards.
struct Filled {
    losers: Vec<Entry>,
    /// Rows this thread made unverified, less those it made verified (another thread's, too).
    unverified: isize,
    newest: Generation,
    /// The slots of every entry this thread put, winner or loser.
    claims: Claims,
}

/// An index table made ahead of a rebuild (see [`Index::prepare`]).
pub struct Prepared(KeyTable<Indexed>);

/// The index a rebuild makes: for a device of `slot_count` slots, about `n` entries (the
/// table is sized for them up front), keys lying in `buffers` kept where they lie, in a
/// `prepared` table if one was made.
pub struct Rebuilt<'b> {
    pub slot_count: u64,
    pub n: usize,
    pub buffers: &'b [Arc<AlignedBuf>],
    pub prepared: Option<Prepared>,
}

impl<'b> Rebuilt<'b> {
    pub fn new(slot_count: u64, n: usize, buffers: &'b [Arc<AlignedBuf>]) -> Rebuilt<'b> {
        Rebuilt { slot_count, n, buffers, prepared: None }
    }
}

/// An entry on its way into its shard, hashed.
struct Placed<'k> {
    h: u64,
    key: &'k [u8],
    entry: Entry,
    source: Source,
}

/// Entries a thread gathers per shard before it takes the shard's lock to put them.
const BATCH: usize = 256;

/// One thread's part of a threaded rebuild: it takes pieces until none is left, and puts
/// their entries into the shards, each behind its lock, a batch at a time. `None` when a
/// slot is named twice.
fn fill_pieces<'k, 'p, P, I>(
    shards: &[Mutex<&mut Shard<Indexed>>],
    parts: Parts<'_>,
    next: &AtomicUsize,
    pieces: &'p [P],
    each: &(impl Fn(&'p P) -> I + Sync),
    slot_count: u64,
    n: usize,
) -> Result<Option<Filled>>
where
    I: Iterator<Item = (&'k [u8], Entry, Source)>,
{
    let claims = Claims::new(slot_count, n).ok_or_else(|| oom(n))?;
    let mut filled = Filled { losers: Vec::new(), unverified: 0, newest: Generation::default(), claims };
    let mut batches: Vec<Vec<Placed<'k>>> = Vec::new();
    for _ in shards {
        let mut batch = Vec::new();
        batch.try_reserve_exact(BATCH).map_err(|_| oom(BATCH))?;
        batches.push(batch);
    }
    while let Some(piece) = pieces.get(next.fetch_add(1, Ordering::Relaxed)) {
        for (key, entry, source) in each(piece) {
            let (h, s) = parts.place(key);
            batches[s].push(Placed { h, key, entry, source });
            if batches[s].len() == BATCH && !filled.put(&mut lock(&shards[s]), &mut batches[s], parts, n)? {
                return Ok(None);
            }
        }
    }
    for (s, batch) in batches.iter_mut().enumerate() {
        if !batch.is_empty() && !filled.put(&mut lock(&shards[s]), batch, parts, n)? {
            return Ok(None);
        }
    }
    Ok(Some(filled))
}

impl Filled {
    /// Puts `batch` into `shard`, emptying it; `false` when an entry's slot was put before.
    fn put(&mut self, shard: &mut Shard<Indexed>, batch: &mut Vec<Placed<'_>>, parts: Parts<'_>, n: usize) -> Result<bool> {
        for Placed { h, key, entry: e, source } in batch.drain(..) {
            self.newest = self.newest.max(e.generation);
            if self.claims.contains(e.slot.0) {
                return Ok(false);
            }
            self.claims.reserve_one().ok_or_else(|| oom(n))?;
            self.claims.insert(e.slot.0);
            let trusted = source == Source::Trusted;
            let (row, new) = shard.get_or_insert_with(h, key, parts.hasher(), || Indexed::new(e, trusted)).ok_or_else(|| oom(1))?;
            let (displaced, was, now) = settle_row(row, new, e, trusted);
            self.unverified += now as isize - was as isize;
            match displaced {
                Displaced::Nothing => {}
                Displaced::Replaced(lost) | Displaced::Superseded(lost) => self.losers.push(lost),
            }
        }
        Ok(true)
    }
}

/// The slots claimed while an index is rebuilt, to settle a slot claimed twice: a bitmap
/// while it costs at most 8 bytes an entry (64 slots per entry; one bit test per claim),
/// else a set, so memory follows the entries on a sparse device too.
enum Claims {
    Bits { words: Vec<u64>, count: usize },
    Set(HashSet<u64, std::hash::BuildHasherDefault<SlotHasher>>),
}

impl Claims {
    /// Room for `entries` claims of slots below `slot_count`; `None` if the host refuses it.
    fn new(slot_count: u64, entries: usize) -> Option<Claims> {
        if slot_count <= (entries.max(1) as u64).saturating_mul(64) {
            let mut words = Vec::new();
            words.try_reserve_exact(slot_count.div_ceil(64) as usize).ok()?;
            words.resize(slot_count.div_ceil(64) as usize, 0);
            return Some(Claims::Bits { words, count: 0 });
        }
        let mut set = HashSet::default();
        set.try_reserve(entries).ok()?;
        Some(Claims::Set(set))
    }

    fn contains(&self, slot: u64) -> bool {
        match self {
            // A slot past the end (callers drop those first) is never claimed.
            Claims::Bits { words, .. } => words.get((slot / 64) as usize).is_some_and(|w| w & (1 << (slot % 64)) != 0),
            Claims::Set(set) => set.contains(&slot),
        }
    }

    /// Room for one more claim (a bitmap has room for all).
    fn reserve_one(&mut self) -> Option<()> {
        match self {
            Claims::Bits { .. } => Some(()),
            Claims::Set(set) => set.try_reserve(1).ok(),
        }
    }

    fn insert(&mut self, slot: u64) {
        match self {
            Claims::Bits { words, count } => {
                if let Some(w) = words.get_mut((slot / 64) as usize) {
                    *count += (*w & (1 << (slot % 64)) == 0) as usize;
                    *w |= 1 << (slot % 64);
                }
            }
            Claims::Set(set) => {
                set.insert(slot);
            }
        }
    }

    fn remove(&mut self, slot: u64) {
        match self {
            Claims::Bits { words, count } => {
                if let Some(w) = words.get_mut((slot / 64) as usize) {
                    *count -= (*w & (1 << (slot % 64)) != 0) as usize;
                    *w &= !(1 << (slot % 64));
                }
            }
            Claims::Set(set) => {
                set.remove(&slot);
            }
        }
    }

    /// Adds `other`'s claims (made alike): `Some(false)` if it shares a slot with these,
    /// `None` if the host refuses memory.
    fn absorb(&mut self, other: Claims) -> Option<bool> {
        match (self, other) {
            (Claims::Bits { words, count }, Claims::Bits { words: theirs, count: n }) => {
                if words.iter().zip(&theirs).any(|(a, b)| a & b != 0) {
                    return Some(false);
                }
                words.iter_mut().zip(&theirs).for_each(|(a, b)| *a |= b);
                *count += n;
                Some(true)
            }
            (Claims::Set(set), Claims::Set(theirs)) => {
                set.try_reserve(theirs.len()).ok()?;
                Some(theirs.into_iter().all(|s| set.insert(s)))
            }
            _ => unreachable!("claims of one rebuild are all bitmaps or all sets"),
        }
    }

    /// The claimed slots in ascending order.
    fn into_sorted(self) -> Option<Vec<u64>> {
        let mut used = Vec::new();
        match self {
            Claims::Bits { words, count } => {
                used.try_reserve_exact(count).ok()?;
                for (w, &word) in words.iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        used.push(w as u64 * 64 + bits.trailing_zeros() as u64);
                        bits &= bits - 1;
                    }
                }
            }
            Claims::Set(set) => {
                used.try_reserve_exact(set.len()).ok()?;
                used.extend(set);
                used.sort_unstable();
            }
        }
        Some(used)
    }
}

/// Heap bytes of one table row, its control byte and 64 bytes of key, for error messages.
const ROW_BYTES: usize = 40 + 1 + 64;

impl Index {
    /// An index with every one of `slot_count` slots free; allocates nothing per slot.
    pub fn new(slot_count: u64) -> Index {
        Index { map: KeyTable::default(), free: FreeRanges::all_but(slot_count, &[]), order: None, unverified: 0, changed: None, newest: Generation::default() }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn free_slots(&self) -> usize {
        self.free.count as usize
    }

    pub fn get(&self, key: &[u8]) -> Option<Entry> {
        self.map.get(key).map(Indexed::entry)
    }

    /// [`get`](Self::get) for a read that counts as a use (LRU eviction), and whether the
    /// entry is still unverified (one probe of the table for both).
    pub fn lookup(&mut self, key: &[u8]) -> Option<(Entry, bool)> {
        let found = self.map.get(key).map(|row| (row.entry(), row.unverified));
        if let (Some(_), Some(order)) = (found, self.order.as_mut()) {
            order.touch(key);
        }
        found
    }

    /// Keeps the entries in `policy`'s eviction order from now on, starting from
    /// generation order (the oldest put coldest).
    pub fn set_eviction(&mut self, policy: EvictionPolicy) {
        self.order = EvictionOrder::new(policy, self.map.iter().map(|(k, e)| (k, e.generation)));
    }

    /// Takes up to `n` of the coldest entries out of the index; their slots stay
    /// allocated until the caller has invalidated and released them.
    pub fn take_coldest(&mut self, n: usize) -> Vec<(Box<[u8]>, Entry)> {
        let Some(order) = self.order.as_mut() else { return Vec::new() };
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let Some(key) = order.pop_coldest() else { break };
            if let Some(e) = self.map.remove(&key) {
                self.unverified -= e.unverified as usize;
                out.push((key, e.entry()));
            }
        }
        for (key, _) in &out {
            self.note_change(key, None);
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Entry)> {
        self.map.iter().map(|(k, e)| (k, e.entry()))
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
        self.map.reserve_spread(additional).ok_or_else(|| oom(self.map.len() + additional))?;
        self.free.take_lowest().map(SlotIndex).ok_or(Error::SlotsFull { slot_count: self.free.slot_count })
    }

    /// Returns a slot that holds nothing the index points at.
    pub fn release(&mut self, slot: SlotIndex) {
        debug_assert!(self.is_used(slot), "double free of slot {slot}");
        if self.is_used(slot) {
            self.free.give(slot.0);
        }
    }

    /// Installs `entry` (whose slot the caller allocated) for `key`, keeping the newer
    /// generation. A new key's bytes may need memory the host refuses: then nothing changed
    /// and the caller undoes its write as it would a failed one.
    pub fn install(&mut self, key: &[u8], entry: Entry) -> Result<Displaced> {
        let displaced = self.put(key, entry, false).ok_or_else(|| Error::out_of_memory("the index", key.len() as u64 + ROW_BYTES as u64))?;
        if !matches!(displaced, Displaced::Superseded(_)) {
            self.note_change(key, Some(entry));
            if let Some(order) = self.order.as_mut() {
                order.insert(key);
            }
        }
        Ok(displaced)
    }

    /// Puts `entry` for `key` unless the key holds a newer generation; `None` when memory is refused.
    fn put(&mut self, key: &[u8], entry: Entry, unverified: bool) -> Option<Displaced> {
        self.newest = self.newest.max(entry.generation);
        let (row, new) = self.map.get_or_insert_with(key, || Indexed::new(entry, unverified))?;
        let (displaced, was, now) = settle_row(row, new, entry, unverified);
        self.unverified = self.unverified - was as usize + now as usize;
        Some(displaced)
    }

    /// Removes the key; its slot stays allocated until the caller releases it.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        if let Some(order) = self.order.as_mut() {
            order.remove(key);
        }
        let e = self.map.remove(key)?;
        self.unverified -= e.unverified as usize;
        self.note_change(key, None);
        Some(e.entry())
    }

    fn note_change(&mut self, key: &[u8], now: Option<Entry>) {
        if let Some(changed) = self.changed.as_mut() {
            match changed.get_or_insert_with(key, || now) {
                Some((entry, _)) => *entry = now,
                // Refused memory: no delta can be complete, so the next checkpoint is full.
                None => self.changed = None,
            }
        }
        // Past this no delta would be written anyway: stop, so memory stays bounded by
        // the entries even when deletes of ever new keys go on without a checkpoint.
        if self.changed.as_ref().is_some_and(|c| c.len() > self.map.len() + 64) {
            self.changed = None;
        }
    }

    /// Starts recording changed keys afresh (a full checkpoint's snapshot).
    pub fn track_changes(&mut self) {
        self.changed = Some(Changes::default());
    }

    /// Stops recording: the next checkpoint must be full.
    pub fn forget_changes(&mut self) {
        self.changed = None;
    }

    /// How many keys were put or removed since [`track_changes`](Self::track_changes), if tracked.
    pub fn changed_count(&self) -> Option<usize> {
        self.changed.as_ref().map(KeyTable::len)
    }

    /// The keys put or removed since [`track_changes`](Self::track_changes), each with its
    /// entry now (`None`: removed), if tracked.
    pub fn changes(&self) -> Option<impl Iterator<Item = (&[u8], Option<Entry>)>> {
        self.changed.as_ref().map(|c| c.iter().map(|(k, e)| (k, *e)))
    }

    /// Whether `key`'s entry was indexed without a read and not read since.
    pub fn is_unverified(&self, key: &[u8]) -> bool {
        self.map.get(key).is_some_and(|e| e.unverified)
    }

    /// A read found `key`'s entry `e` whole (if the key still names it).
    pub fn set_verified(&mut self, key: &[u8], e: &Entry) {
        if let Some(row) = self.map.get_mut(key).filter(|row| row.entry() == *e && row.unverified) {
            row.unverified = false;
            self.unverified -= 1;
        }
    }

    /// The highest generation ever put into this index: a new put must be newer.
    pub fn newest_generation(&self) -> Generation {
        self.newest
    }

    pub fn unverified_count(&self) -> usize {
        self.unverified
    }

    /// Up to `n` unverified entries with their keys (for background verification): one pass
    /// over the index, so a step costs O(entries) in memory besides its reads.
    pub fn some_unverified(&self, n: usize) -> Vec<(Box<[u8]>, Entry)> {
        if self.unverified == 0 {
            return Vec::new();
        }
        self.map.iter().filter(|(_, e)| e.unverified).take(n).map(|(k, e)| (k.into(), e.entry())).collect()
    }

    /// Builds an index from recovered entries, every one of them read from the device.
    /// See [`rebuild_pieces`](Self::rebuild_pieces). (Recovery calls that; tests, this.)
    #[cfg(test)]
    pub fn rebuild<'k>(slot_count: u64, entries: impl IntoIterator<Item = (&'k [u8], Entry)>) -> Result<(Index, Vec<Entry>)> {
        let entries: Vec<(&[u8], Entry, Source)> = entries.into_iter().map(|(k, e)| (k, e, Source::Read)).collect();
        let pieces: Vec<&[(&[u8], Entry, Source)]> = entries.chunks(7).collect();
        Index::rebuild_pieces(Rebuilt::new(slot_count, entries.len(), &[]), &pieces, |p| p.iter().copied())
    }

    /// Builds an index from recovered entries: those of `each(piece)` for every piece, the
    /// same each call, into the index `into` describes. Slots must be below `slot_count`. Duplicate keys keep the highest
    /// generation; a slot claimed twice keeps the first claim, in the pieces' order. Returns
    /// the index and the entries that lost. Memory follows the entries, not `slot_count`;
    /// an allocation the host refuses is [`Error::OutOfMemory`]. Many entries are spread
    /// over several threads, each taking the next piece left.
    /// `n` is about how many there are: the table is sized for it up front (rehashing a
    /// growing table costs more than the inserts themselves). Keys lying in `buffers` stay
    /// there (the index keeps the buffers) instead of being copied. A `prepared` table
    /// (see [`Index::prepare`]) is filled instead of a new one.
    pub fn rebuild_pieces<'k, 'p, P: Sync, I>(into: Rebuilt<'_>, pieces: &'p [P], each: impl Fn(&'p P) -> I + Sync) -> Result<(Index, Vec<Entry>)>
    where
        I: Iterator<Item = (&'k [u8], Entry, Source)>,
    {
        let Rebuilt { slot_count, n, buffers, mut prepared } = into;
        let threads = build_threads(n);
        if threads > 1 {
            let map = Index::table(buffers, prepared.take(), n)?;
            if let Some(built) = Index::rebuild_parallel(slot_count, n, threads, map, pieces, &each)? {
                return Ok(built);
            }
        }
        Index::rebuild_serial(slot_count, n, Index::table(buffers, prepared, n)?, pieces.iter().flat_map(each))
    }

    /// An empty table for `n` keys that keeps those lying in `buffers` in place.
    fn table(buffers: &[Arc<AlignedBuf>], prepared: Option<Prepared>, n: usize) -> Result<KeyTable<Indexed>> {
        let mut map = prepared.map_or_else(KeyTable::default, |p| p.0);
        map.share(buffers);
        map.reserve_spread(n).ok_or_else(|| oom(n))?;
        Ok(map)
    }

    /// A table for about `n` keys, its memory touched, for [`rebuild_pieces`](Self::rebuild_pieces)
    /// to fill (see [`KeyTable::prepared`]); `None` when refused memory (the rebuild then
    /// makes its own, and reports the refusal itself).
    pub fn prepare(n: usize) -> Option<Prepared> {
        let filler = Indexed::new(Entry { slot: SlotIndex(0), generation: Generation(0), payload_len: 0, payload_crc: 0 }, false);
        KeyTable::prepared(n, filler).map(Prepared)
    }

    fn rebuild_serial<'k>(
        slot_count: u64,
        n: usize,
        map: KeyTable<Indexed>,
        entries: impl Iterator<Item = (&'k [u8], Entry, Source)>,
    ) -> Result<(Index, Vec<Entry>)> {
        let mut claimed = Claims::new(slot_count, n).ok_or_else(|| oom(n))?;
        let mut ix = Index { map, free: FreeRanges::all_but(slot_count, &[]), order: None, unverified: 0, changed: None, newest: Generation::default() };
        let mut losers = Vec::new();
        for (key, e, source) in entries {
            if claimed.contains(e.slot.0) {
                losers.push(e);
                continue;
            }
            claimed.reserve_one().ok_or_else(|| oom(ix.map.len() + 1))?;
            // One hash and probe per entry (a rebuilt index has no eviction order yet).
            match ix.put(key, e, source == Source::Trusted).ok_or_else(|| oom(ix.map.len() + 1))? {
                Displaced::Nothing => claimed.insert(e.slot.0),
                Displaced::Replaced(old) => {
                    claimed.remove(old.slot.0);
                    claimed.insert(e.slot.0);
                    losers.push(old);
                }
                Displaced::Superseded(e) => losers.push(e),
            }
        }
        let used = claimed.into_sorted().ok_or_else(|| oom(ix.map.len()))?;
        ix.free = FreeRanges::all_but(slot_count, &used);
        Ok((ix, losers))
    }

    /// [`rebuild_serial`](Self::rebuild_serial)'s result on up to `threads` threads (see
    /// [`fill_pieces`]). `None` when a slot is named twice (only a damaged source names one
    /// twice; the serial build's first-claim rule settles it).
    fn rebuild_parallel<'k, 'p, P: Sync, I>(
        slot_count: u64,
        n: usize,
        threads: usize,
        mut map: KeyTable<Indexed>,
        pieces: &'p [P],
        each: &(impl Fn(&'p P) -> I + Sync),
    ) -> Result<Option<(Index, Vec<Entry>)>>
    where
        I: Iterator<Item = (&'k [u8], Entry, Source)>,
    {
        let (parts, shards) = map.split();
        let shards: Vec<Mutex<&mut Shard<Indexed>>> = shards.into_iter().map(Mutex::new).collect();
        let next = AtomicUsize::new(0);
        let fill = || fill_pieces(&shards, parts, &next, pieces, each, slot_count, n);
        let fills = std::thread::scope(|scope| {
            // A thread that cannot start leaves its pieces to the others.
            let others: Vec<_> = (1..threads).filter_map(|_| spawn(scope, fill)).collect();
            let mut fills = vec![fill()];
            fills.extend(others.into_iter().map(join));
            fills
        });
        drop(shards);
        let (mut losers, mut unverified, mut newest, mut claims) = (Vec::new(), 0isize, Generation::default(), None::<Claims>);
        for fill in fills {
            let Some(filled) = fill? else { return Ok(None) };
            losers.extend(filled.losers);
            unverified += filled.unverified;
            newest = newest.max(filled.newest);
            claims = match claims {
                None => Some(filled.claims),
                Some(mut all) => match all.absorb(filled.claims) {
                    Some(true) => Some(all),
                    Some(false) => return Ok(None),
                    None => return Err(oom(n)),
                },
            };
        }
        let mut claims = claims.expect("at least one group");
        // Every slot was named once: a loser's is nobody's.
        for e in &losers {
            claims.remove(e.slot.0);
        }
        let used = claims.into_sorted().ok_or_else(|| oom(n))?;
        let free = FreeRanges::all_but(slot_count, &used);
        let unverified = usize::try_from(unverified).expect("every row counted once");
        Ok(Some((Index { map, free, order: None, unverified, changed: None, newest }, losers)))
    }

    /// Marks a slot allocated without an entry (e.g. quarantined until invalidated).
    pub fn reserve(&mut self, slot: SlotIndex) {
        if slot.0 < self.free.slot_count && !self.is_used(slot) {
            self.free.take(slot.0);
        }
    }

    /// Rough heap bytes: table rows, keys, the free ranges and the eviction order.
    pub fn approx_bytes(&self) -> usize {
        self.map.heap_bytes() + self.free.approx_bytes() + self.order.as_ref().map_or(0, EvictionOrder::approx_bytes)
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
        ix.install(b"kept", e(0, 1)).unwrap();
        assert!(ix.changes().is_none(), "nothing tracked before a full checkpoint");
        ix.track_changes();
        ix.install(b"a", e(1, 2)).unwrap();
        ix.remove(b"kept");
        ix.install(b"b", e(2, 3)).unwrap();
        ix.install(b"b", e(3, 4)).unwrap();
        ix.install(b"gone", e(4, 5)).unwrap();
        ix.remove(b"gone");
        let mut changed: Vec<(&[u8], Option<Entry>)> = ix.changes().unwrap().collect();
        changed.sort_by_key(|&(k, _)| k);
        let expected: Vec<(&[u8], Option<Entry>)> = vec![(b"a", Some(e(1, 2))), (b"b", Some(e(3, 4))), (b"gone", None), (b"kept", None)];
        assert_eq!(changed, expected, "each key once, with its entry now");
        assert_eq!(ix.changed_count(), Some(4));
        // Ever new keys put and deleted: past the entries (+64) tracking stops; the next is full.
        for i in 0..100u64 {
            let k = format!("t{i}");
            ix.install(k.as_bytes(), e(10 + i, 3)).unwrap();
            ix.remove(k.as_bytes());
        }
        assert!(ix.changes().is_none());
    }

    #[test]
    fn install_keeps_the_newest_generation() {
        let mut ix = Index::new(10);
        assert_eq!(ix.install(b"k", e(1, 5)).unwrap(), Displaced::Nothing);
        assert_eq!(ix.install(b"k", e(2, 7)).unwrap(), Displaced::Replaced(e(1, 5)));
        assert_eq!(ix.install(b"k", e(3, 6)).unwrap(), Displaced::Superseded(e(3, 6)));
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

    /// The threaded build gives the serial one's index (entries, flags, losers, free slots),
    /// whichever thread takes which piece.
    #[test]
    fn threaded_rebuild_matches_serial() {
        let n = 20_000usize;
        // A tenth of the keys come twice, in either generation order; a third are trusted.
        let keys: Vec<Vec<u8>> = (0..n).map(|i| format!("key-{}", i % (n - n / 10)).into_bytes()).collect();
        let mut items: Vec<(&[u8], Entry, Source)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let source = if i % 3 == 0 { Source::Trusted } else { Source::Read };
                (&k[..], e(2 * i as u64, 1000 + (i as u64 * 7919) % 5000), source)
            })
            .collect();
        // Copies of one generation (a damaged device): the lower slot stays, in either order.
        items[18_001].1.generation = items[1].1.generation;
        items[3].1.generation = items[18_003].1.generation;
        let slot_count = 2 * n as u64 + 10;
        let table = || Index::table(&[], None, n).unwrap();
        let (serial, mut serial_losers) = Index::rebuild_serial(slot_count, n, table(), items.iter().copied()).unwrap();
        assert_eq!(serial.get(items[1].0), Some(items[1].1));
        assert_eq!(serial.get(items[3].0), Some(items[3].1));
        let pieces: Vec<&[(&[u8], Entry, Source)]> = items.chunks(97).collect();
        for threads in [2, 3, 2] {
            let built = Index::rebuild_parallel(slot_count, n, threads, table(), &pieces, &|p| p.iter().copied()).unwrap();
            let (threaded, mut threaded_losers) = built.expect("every slot named once");
            check_same(&threaded, &mut threaded_losers, &serial, &mut serial_losers, &keys, slot_count);
        }
        assert!(serial_losers.len() > n / 20, "the input has losers: {}", serial_losers.len());
        assert_eq!(serial.newest_generation(), items.iter().map(|(_, e, _)| e.generation).max().unwrap());
        assert!(serial.unverified_count() > 0);

        // A slot named by two keys: the threaded build declines, and the serial rules apply.
        let mut damaged = items.clone();
        // (keys 2005 and 2007 come once each).
        damaged[2007].1.slot = damaged[2005].1.slot;
        let pieces: Vec<&[(&[u8], Entry, Source)]> = damaged.chunks(97).collect();
        assert!(Index::rebuild_parallel(slot_count, n, 2, table(), &pieces, &|p| p.iter().copied()).unwrap().is_none());
        let into = Rebuilt { prepared: Index::prepare(n), ..Rebuilt::new(slot_count, n, &[]) };
        let (ix, losers) = Index::rebuild_pieces(into, &pieces, |p| p.iter().copied()).unwrap();
        assert_eq!(ix.get(damaged[2007].0), None, "its slot was claimed first by key 2005");
        assert_eq!(ix.get(damaged[2005].0), Some(damaged[2005].1));
        assert!(losers.contains(&damaged[2007].1));
    }

    fn check_same(threaded: &Index, threaded_losers: &mut [Entry], serial: &Index, serial_losers: &mut [Entry], keys: &[Vec<u8>], slot_count: u64) {
        assert_eq!(threaded.len(), serial.len());
        serial_losers.sort_by_key(|e| e.slot);
        threaded_losers.sort_by_key(|e| e.slot);
        assert_eq!(threaded_losers, serial_losers);
        for k in keys {
            assert_eq!((threaded.get(k), threaded.is_unverified(k)), (serial.get(k), serial.is_unverified(k)));
        }
        assert_eq!(threaded.unverified_count(), serial.unverified_count());
        assert_eq!(threaded.newest_generation(), serial.newest_generation());
        assert_eq!(threaded.free_slots(), serial.free_slots());
        assert!((0..slot_count).all(|s| threaded.is_used(SlotIndex(s)) == serial.is_used(SlotIndex(s))));
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
            ix.install(format!("key-{i}").as_bytes(), e(i, i + 1)).unwrap();
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
        let entries: Vec<(Vec<u8>, Entry)> = ix.iter().map(|(k, e)| (k.to_vec(), e)).collect();
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
