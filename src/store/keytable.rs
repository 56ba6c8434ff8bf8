//! A hash table from byte keys to values, with the keys' bytes packed into large chunks.
//!
//! A fast recovery inserts every checkpointed key at once. With one heap allocation per
//! key (a `Box<[u8]>` in a `HashMap`) that cost 2.5x the time of packing the bytes
//! (measured: 524,272 keys of 68 bytes, 0.22-0.25 s against 0.09 s on this project's
//! 2-vCPU machine), mostly in the allocator and in faulting in its scattered memory.
//!
//! Built at a restart, a table shares the loaded checkpoint payload its keys lie in instead
//! of copying them (10-15 ms less of a 0.13-0.15 s fast recovery at 524k entries here; the
//! payload's ~30 other bytes per entry stay resident until compaction moves the keys out).
//! It is split in [`SHARDS`] by hash so that several threads can fill it at once.
//!
//! Invariants:
//! - each shard's `at` holds every row number of its `rows` once, placed by its key's hash;
//! - every row's [`KeyRef`] names bytes of its shard's chunks that no other row names;
//! - `live` counts the bytes rows name, `dead` the bytes of removed keys still in chunks;
//!   when `dead` outgrows `live` (and a chunk) the chunks are rewritten without them, so
//!   key memory stays within about twice the live keys plus a chunk;
//! - after [`reserve`](KeyTable::reserve)`(rows)` the table takes `rows` more keys without
//!   growing; a new key's bytes may still need a chunk, so an insert can be refused memory
//!   (and then changes nothing).
//!
//! Keys are the caller's bytes, hashed by foldhash with a per-process random seed (keys
//! made to collide cannot be computed without it), several times faster than std's SipHash.

use std::hash::BuildHasher;

use std::sync::Arc;

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use crate::aligned::{AlignedBuf, HugePages};

/// Bytes per chunk, once the keys fill a few: far above any key (at most 64 KiB), so little
/// is lost at chunk ends. Chunks start small and double up to this, so a small index stays small.
const CHUNK_BYTES: usize = 1 << 20;
const FIRST_CHUNK_BYTES: usize = 4096;

/// Where a key's bytes are: chunk (16 bits), offset in it (32), length (16: keys are below
/// 64 KiB; owned chunks at most [`CHUNK_BYTES`], shared ones below 4 GiB).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeyRef(u64);

/// Chunks a shard may hold: 2^16 of [`CHUNK_BYTES`] are 64 GiB of keys.
const MAX_CHUNKS: usize = 1 << 16;

impl KeyRef {
    fn new(chunk: usize, offset: usize, len: usize) -> KeyRef {
        debug_assert!(len <= u16::MAX as usize && offset <= u32::MAX as usize && chunk < MAX_CHUNKS);
        KeyRef((chunk as u64) << 48 | (offset as u64) << 16 | len as u64)
    }
    fn chunk(self) -> usize {
        (self.0 >> 48) as usize
    }
    fn range(self) -> std::ops::Range<usize> {
        let at = (self.0 >> 16 & 0xFFFF_FFFF) as usize;
        at..at + (self.0 & 0xFFFF) as usize
    }
    fn len(self) -> usize {
        (self.0 & 0xFFFF) as usize
    }
}

#[derive(Clone, Copy)]
struct Row<V> {
    key: KeyRef,
    value: V,
}

/// Bytes keys are kept in: copied into a chunk of the table's own, or left where they lie
/// in a buffer the table shares (a loaded checkpoint's payload: its keys need no copy).
enum Chunk {
    Owned(Vec<u8>),
    Shared(Arc<AlignedBuf>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(v) => v,
            Chunk::Shared(b) => b,
        }
    }

    /// Heap bytes this chunk accounts for: a shared buffer's are split among its holders.
    fn heap_bytes(&self) -> usize {
        match self {
            Chunk::Owned(v) => v.capacity(),
            Chunk::Shared(b) => b.len() / Arc::strong_count(b),
        }
    }
}

/// The chunks holding keys' bytes: the shared ones first, then owned ones; the last takes
/// new keys.
#[derive(Default)]
struct Chunks {
    chunks: Vec<Chunk>,
    /// How many of the first chunks are shared.
    shared: usize,
}

impl Chunks {
    fn get(&self, k: KeyRef) -> &[u8] {
        &self.chunks[k.chunk()].bytes()[k.range()]
    }

    fn room_in_last(&self) -> usize {
        match self.chunks.last() {
            Some(Chunk::Owned(c)) => c.capacity() - c.len(),
            _ => 0,
        }
    }

    /// Where `key` lies in a shared chunk, if it does.
    fn find_shared(&self, key: &[u8]) -> Option<KeyRef> {
        let at = key.as_ptr() as usize;
        self.chunks[..self.shared].iter().enumerate().find_map(|(i, c)| {
            let start = c.bytes().as_ptr() as usize;
            let offset = at.checked_sub(start)?;
            (offset + key.len() <= c.bytes().len()).then(|| KeyRef::new(i, offset, key.len()))
        })
    }

    /// Where `key` is kept: in place in a shared chunk, or copied into an owned one (a new
    /// one when the last is full). `None` when the host refuses the memory.
    fn push(&mut self, key: &[u8]) -> Option<KeyRef> {
        if let Some(at) = self.find_shared(key) {
            return Some(at);
        }
        if self.room_in_last() < key.len() || !matches!(self.chunks.last(), Some(Chunk::Owned(_))) {
            if self.chunks.len() >= MAX_CHUNKS {
                return None;
            }
            let owned: usize = self.chunks[self.shared..].iter().map(Chunk::heap_bytes).sum();
            let size = owned.clamp(FIRST_CHUNK_BYTES, CHUNK_BYTES).max(key.len());
            let mut chunk = Vec::new();
            chunk.try_reserve_exact(size).ok()?;
            self.chunks.try_reserve(1).ok()?;
            self.chunks.push(Chunk::Owned(chunk));
        }
        let n = self.chunks.len() - 1;
        let Some(Chunk::Owned(last)) = self.chunks.last_mut() else { return None };
        let at = last.len();
        last.extend_from_slice(key);
        Some(KeyRef::new(n, at, key.len()))
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(Chunk::heap_bytes).sum()
    }
}

/// One shard: its rows, where each key's row is, and the chunks of their keys.
///
/// The rows are dense (a `Vec`): the hash table holds only a row number per key. Filling
/// the table at a restart then writes a 4-byte number at a random place and appends a row,
/// instead of writing a 40-byte row at a random place of a table ten times larger; measured
/// on this project's machine, 524k inserts took 0.030 s against 0.056-0.128 s.
pub(crate) struct Shard<V> {
    /// The row number of each key, placed by the key's hash.
    at: HashTable<u32, HugePages>,
    /// An insert appends; a remove moves the last row into the hole.
    rows: Rows<V>,
    keys: Chunks,
    live: usize,
    dead: usize,
}

/// cbindgen:ignore
type Rows<V> = allocator_api2::vec::Vec<Row<V>, HugePages>;

/// Rows a shard may hold: row numbers are `u32`.
const MAX_ROWS: usize = u32::MAX as usize;

impl<V> Shard<V> {
    fn new() -> Shard<V> {
        Shard { at: HashTable::new_in(HugePages), rows: Rows::new_in(HugePages), keys: Chunks::default(), live: 0, dead: 0 }
    }

    fn reserve(&mut self, more: usize, hasher: &RandomState) -> Option<()> {
        if self.rows.len().checked_add(more)? > MAX_ROWS {
            return None;
        }
        let (rows, keys) = (&self.rows, &self.keys);
        self.at.try_reserve(more, |&i| hasher.hash_one(keys.get(rows[i as usize].key))).ok()?;
        self.rows.try_reserve(more).ok()
    }

    fn find(&self, h: u64, key: &[u8]) -> Option<usize> {
        self.at.find(h, |&i| self.keys.get(self.rows[i as usize].key) == key).map(|&i| i as usize)
    }

    /// See [`KeyTable::get_or_insert_with`]; `h` is `key`'s hash.
    pub fn get_or_insert_with(&mut self, h: u64, key: &[u8], hasher: &RandomState, make: impl FnOnce() -> V) -> Option<(&mut V, bool)> {
        self.reserve(1, hasher)?;
        let (rows, keys) = (&self.rows, &self.keys);
        let entry = self.at.entry(h, |&i| keys.get(rows[i as usize].key) == key, |&i| hasher.hash_one(keys.get(rows[i as usize].key)));
        match entry {
            hashbrown::hash_table::Entry::Occupied(o) => Some((&mut self.rows[*o.get() as usize].value, false)),
            hashbrown::hash_table::Entry::Vacant(v) => {
                let at = self.keys.push(key)?;
                self.live += key.len();
                let i = self.rows.len();
                v.insert(i as u32); // below MAX_ROWS: reserved above
                self.rows.push(Row { key: at, value: make() }); // within the reserved capacity
                Some((&mut self.rows[i].value, true))
            }
        }
    }

    fn remove(&mut self, h: u64, key: &[u8], hasher: &RandomState) -> Option<V> {
        let (rows, keys) = (&self.rows, &self.keys);
        let i = self.at.find_entry(h, |&i| keys.get(rows[i as usize].key) == key).ok()?.remove().0 as usize;
        let row = self.rows.swap_remove(i);
        if let Some(moved) = self.rows.get(i) {
            // The last row now sits at `i`: its number in the table follows it.
            let last = self.rows.len() as u32;
            let mh = hasher.hash_one(self.keys.get(moved.key));
            if let Some(n) = self.at.find_mut(mh, |&n| n == last) {
                *n = i as u32;
            }
        }
        self.live -= row.key.len();
        self.dead += row.key.len();
        if self.dead > self.live.max(CHUNK_BYTES) {
            self.compact();
        }
        Some(row.value)
    }

    /// Rewrites the chunks with the live keys only. Skipped (to be tried again by a later
    /// remove) when the memory is refused: the shard stays as it was.
    fn compact(&mut self) {
        let mut fresh = Chunks::default(); // owned chunks only: shared buffers are let go
        let mut moved = Vec::new();
        if moved.try_reserve_exact(self.rows.len()).is_err() {
            return;
        }
        for row in self.rows.iter() {
            match fresh.push(self.keys.get(row.key)) {
                Some(at) => moved.push(at),
                None => return,
            }
        }
        for (row, at) in self.rows.iter_mut().zip(moved) {
            row.key = at;
        }
        self.keys = fresh;
        self.dead = 0;
    }
}

/// Shards, so that a large table can be built on several threads (a key's shard is a
/// function of its hash). Bits 40.. pick it: hashbrown places rows by the low bits and tags
/// them with the top seven, so neither loses entropy to the choice.
pub(crate) const SHARDS: usize = 8;

fn shard_of(h: u64) -> usize {
    (h >> 40) as usize % SHARDS
}

pub(crate) struct KeyTable<V> {
    shards: Vec<Shard<V>>,
    hasher: RandomState,
}

impl<V> Default for KeyTable<V> {
    fn default() -> Self {
        KeyTable::sharing(&[])
    }
}

impl<V> KeyTable<V> {
    /// An empty table whose inserts keep a key lying in one of `buffers` where it lies
    /// instead of copying it (buffers of 4 GiB or more are not shared).
    pub fn sharing(buffers: &[Arc<AlignedBuf>]) -> KeyTable<V> {
        let mut t = KeyTable { shards: (0..SHARDS).map(|_| Shard::new()).collect(), hasher: RandomState::default() };
        t.share(buffers);
        t
    }

    /// An empty table with room for `rows` keys spread over the shards, whose rows' memory
    /// has been written once (with `filler`). Made while a checkpoint loads, it takes the
    /// first touch of that memory off the rebuild: page faults, and on a virtual machine
    /// whose host reclaims free guest memory, the host's faults too (measured at 0.3-2 GB/s
    /// on this project's machine, against 10 GB/s for memory touched before). `None` when
    /// the host refuses the memory.
    pub fn prepared(rows: usize, filler: V) -> Option<KeyTable<V>>
    where
        V: Copy,
    {
        let mut t = KeyTable::default();
        t.reserve_spread(rows)?;
        for s in &mut t.shards {
            let room = s.rows.capacity();
            s.rows.resize(room, Row { key: KeyRef(0), value: filler });
            s.rows.clear();
        }
        Some(t)
    }

    /// From now on, a key lying in one of `buffers` is kept where it lies (buffers of 4 GiB
    /// or more are not shared). Only for a table that holds no key yet.
    pub fn share(&mut self, buffers: &[Arc<AlignedBuf>]) {
        debug_assert_eq!(self.len(), 0);
        for s in &mut self.shards {
            let shared = buffers.iter().filter(|b| b.len() <= u32::MAX as usize).map(|b| Chunk::Shared(b.clone()));
            s.keys.chunks.splice(0..0, shared);
            s.keys.shared = s.keys.chunks.iter().filter(|c| matches!(c, Chunk::Shared(_))).count();
        }
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.rows.len()).sum()
    }

    /// Room for `rows` more keys, wherever they land, without growing the table. `None`
    /// when the host refuses the memory (nothing is lost).
    pub fn reserve(&mut self, rows: usize) -> Option<()> {
        let hasher = &self.hasher;
        self.shards.iter_mut().try_for_each(|s| s.reserve(rows, hasher))
    }

    /// Room for `rows` keys spread over the shards, as a table built at once has them.
    pub fn reserve_spread(&mut self, rows: usize) -> Option<()> {
        // Hashing spreads keys evenly: an eighth each, and a margin for the luck of the draw.
        let each = rows / SHARDS + rows / (SHARDS * 16) + 16;
        self.reserve(each)
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    pub fn get(&self, key: &[u8]) -> Option<&V> {
        let h = self.hash(key);
        let shard = &self.shards[shard_of(h)];
        shard.find(h, key).map(|i| &shard.rows[i].value)
    }

    pub fn get_mut(&mut self, key: &[u8]) -> Option<&mut V> {
        let h = self.hash(key);
        let shard = &mut self.shards[shard_of(h)];
        shard.find(h, key).map(|i| &mut shard.rows[i].value)
    }

    /// The value of `key` and `false`, or `make()`'s inserted for it and `true`. `None` when
    /// the host refuses memory; nothing changed then.
    pub fn get_or_insert_with(&mut self, key: &[u8], make: impl FnOnce() -> V) -> Option<(&mut V, bool)> {
        let h = self.hash(key);
        self.shards[shard_of(h)].get_or_insert_with(h, key, &self.hasher, make)
    }

    pub fn remove(&mut self, key: &[u8]) -> Option<V> {
        let h = self.hash(key);
        self.shards[shard_of(h)].remove(h, key, &self.hasher)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &V)> {
        self.shards.iter().flat_map(|s| s.rows.iter().map(|r| (s.keys.get(r.key), &r.value)))
    }

    /// The shards apart, for several threads to fill: a key belongs to the shard
    /// [`Parts::place`] names.
    pub fn split(&mut self) -> (Parts<'_>, Vec<&mut Shard<V>>) {
        (Parts { hasher: &self.hasher }, self.shards.iter_mut().collect())
    }

    /// Heap bytes: rows, row numbers (with hashbrown's control byte each) and key chunks.
    pub fn heap_bytes(&self) -> usize {
        let shard = |s: &Shard<V>| s.rows.capacity() * std::mem::size_of::<Row<V>>() + s.at.capacity() * 5 + s.keys.heap_bytes();
        self.shards.iter().map(shard).sum()
    }
}

/// How keys map to the shards of [`KeyTable::split`].
#[derive(Clone, Copy)]
pub(crate) struct Parts<'a> {
    hasher: &'a RandomState,
}

impl Parts<'_> {
    /// `key`'s hash and its shard.
    pub fn place(&self, key: &[u8]) -> (u64, usize) {
        let h = self.hasher.hash_one(key);
        (h, shard_of(h))
    }

    pub fn hasher(&self) -> &RandomState {
        self.hasher
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_finds_replaces_and_removes() {
        let mut t: KeyTable<u32> = KeyTable::default();
        assert_eq!(t.get_or_insert_with(b"a", || 1).map(|(v, new)| (*v, new)), Some((1, true)));
        assert_eq!(t.get_or_insert_with(b"a", || 2).map(|(v, new)| (*v, new)), Some((1, false)));
        *t.get_mut(b"a").unwrap() = 3;
        assert_eq!(t.get(b"a"), Some(&3));
        assert_eq!(t.get(b"b"), None);
        assert_eq!(t.remove(b"a"), Some(3));
        assert_eq!((t.remove(b"a"), t.get(b"a"), t.len()), (None, None, 0));
        // The empty key and the longest one.
        let long = vec![7u8; u16::MAX as usize];
        t.get_or_insert_with(b"", || 4).unwrap();
        t.get_or_insert_with(&long, || 5).unwrap();
        assert_eq!((t.get(b""), t.get(&long)), (Some(&4), Some(&5)));
    }

    /// Many more keys than a chunk holds, removed and put back past several compactions:
    /// every key keeps its value and key memory stays near the live keys.
    #[test]
    fn keys_survive_chunk_ends_and_compaction() {
        let mut t: KeyTable<u64> = KeyTable::default();
        let key = |i: u64| format!("key-{i:08}-{}", "x".repeat((i % 97) as usize)).into_bytes();
        for i in 0..40_000 {
            t.get_or_insert_with(&key(i), || i).unwrap();
        }
        for round in 0..6u64 {
            for i in (0..40_000).filter(|i| i % 4 != round % 4) {
                assert_eq!(t.remove(&key(i)), Some(i), "round {round} key {i}");
            }
            for i in (0..40_000).filter(|i| i % 4 != round % 4) {
                t.get_or_insert_with(&key(i), || i).unwrap();
            }
        }
        assert_eq!(t.len(), 40_000);
        for i in 0..40_000 {
            assert_eq!(t.get(&key(i)), Some(&i));
        }
        let live: usize = (0..40_000).map(|i| key(i).len()).sum();
        let chunks: usize = t.shards.iter().map(|s| s.keys.heap_bytes()).sum();
        assert!(chunks <= 2 * live + 2 * SHARDS * CHUNK_BYTES, "{chunks} bytes of chunks for {live} live");
        assert_eq!(t.iter().count(), 40_000);
    }

    /// Reserved rows are taken without growing; a small table's keys take small chunks.
    #[test]
    fn reserved_rows_and_small_chunks() {
        let mut t: KeyTable<u8> = KeyTable::default();
        assert_eq!(t.heap_bytes(), 0);
        t.reserve(100).unwrap();
        let caps = |t: &KeyTable<u8>| t.shards.iter().map(|s| (s.rows.capacity(), s.at.capacity())).collect::<Vec<_>>();
        let reserved = caps(&t);
        for i in 0..100u8 {
            t.get_or_insert_with(&[i; 20], || i).unwrap();
        }
        assert_eq!(caps(&t), reserved);
        assert!(t.shards.iter().all(|s| s.keys.heap_bytes() <= FIRST_CHUNK_BYTES));
        assert!(t.heap_bytes() < 64 * 1024, "{} bytes for 100 keys", t.heap_bytes());
    }

    /// Keys lying in a shared buffer are kept there (no owned chunk), others are copied;
    /// once compaction has moved every key out, the buffer is let go.
    #[test]
    fn keys_in_a_shared_buffer_stay_there_until_compaction() {
        // Enough keys that each shard's removed ones pass a chunk, which compaction waits for.
        let n = 1 << 20;
        let mut buf = AlignedBuf::zeroed(32 << 20);
        let key = |i: usize| format!("shared-key-{i:07}").into_bytes();
        let len = key(0).len();
        for i in 0..n {
            buf[i * len..(i + 1) * len].copy_from_slice(&key(i));
        }
        let buf = Arc::new(buf);
        let mut t: KeyTable<u32> = KeyTable::sharing(std::slice::from_ref(&buf));
        for i in 0..n {
            t.get_or_insert_with(&buf[i * len..(i + 1) * len], || i as u32).unwrap();
        }
        t.get_or_insert_with(b"copied", || 7).unwrap();
        let owned: usize = t.shards.iter().map(|s| s.keys.chunks[s.keys.shared..].iter().map(Chunk::heap_bytes).sum::<usize>()).sum();
        assert!(owned <= SHARDS * FIRST_CHUNK_BYTES, "only the copied key was copied: {owned} bytes");
        assert!((0..n).all(|i| t.get(&key(i)) == Some(&(i as u32))));
        // Removing most keys compacts every shard: the rest move to owned chunks.
        let kept = n - n / 16;
        for i in 0..kept {
            assert_eq!(t.remove(&key(i)), Some(i as u32));
        }
        assert_eq!(Arc::strong_count(&buf), 1, "every shard let the buffer go");
        assert!((kept..n).all(|i| t.get(&key(i)) == Some(&(i as u32))));
        assert_eq!(t.get(b"copied"), Some(&7));
    }

    /// Random inserts, replaces and removes against a model: a remove moves the last row
    /// into the hole, and every key still finds its own row.
    #[test]
    fn rows_stay_found_as_removes_move_them() {
        let mut t: KeyTable<u64> = KeyTable::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = format!("k{}", x % 3000).into_bytes();
            if x % 3 == 0 {
                assert_eq!(t.remove(&key), model.remove(&key), "step {step}");
            } else {
                let (v, new) = t.get_or_insert_with(&key, || step).unwrap();
                assert_eq!(new, !model.contains_key(&key));
                *v = step;
                model.insert(key, step);
            }
            if step % 20_000 == 0 {
                assert_eq!(t.len(), model.len());
                assert!(model.iter().all(|(k, v)| t.get(k) == Some(v)));
                assert!(t.iter().all(|(k, v)| model.get(k) == Some(v)));
            }
        }
    }

    /// A prepared table holds no key, takes its reserved rows without growing, and keeps the
    /// keys of a buffer shared after it was made in place.
    #[test]
    fn a_prepared_table_is_empty_reserved_and_shares_later() {
        let mut t: KeyTable<u32> = KeyTable::prepared(8000, 9).unwrap(); // twice the keys put: no shard outgrows its room
        assert_eq!((t.len(), t.iter().count()), (0, 0));
        let caps: Vec<(usize, usize)> = t.shards.iter().map(|s| (s.rows.capacity(), s.at.capacity())).collect();
        assert!(caps.iter().all(|&(rows, at)| rows >= 8000 / SHARDS && at >= 8000 / SHARDS));
        let mut buf = AlignedBuf::zeroed(4000 * 8);
        for i in 0..4000 {
            buf[i * 8..(i + 1) * 8].copy_from_slice(format!("k{i:07}").as_bytes());
        }
        let buf = Arc::new(buf);
        t.share(std::slice::from_ref(&buf));
        for i in 0..4000 {
            t.get_or_insert_with(&buf[i * 8..(i + 1) * 8], || i as u32).unwrap();
        }
        assert!((0..4000).all(|i| t.get(format!("k{i:07}").as_bytes()) == Some(&(i as u32))));
        assert_eq!(t.shards.iter().map(|s| (s.rows.capacity(), s.at.capacity())).collect::<Vec<_>>(), caps);
        assert!(t.shards.iter().all(|s| s.keys.chunks.len() == 1), "no key was copied");
    }

    /// Keys put through the split shards are found through the table.
    #[test]
    fn split_shards_fill_the_table() {
        let mut t: KeyTable<u32> = KeyTable::default();
        let keys: Vec<Vec<u8>> = (0..5000u32).map(|i| format!("k{i}").into_bytes()).collect();
        let (parts, mut shards) = t.split();
        for (i, k) in keys.iter().enumerate() {
            let (h, shard) = parts.place(k);
            shards[shard].get_or_insert_with(h, k, parts.hasher(), || i as u32).unwrap();
        }
        assert_eq!(t.len(), 5000);
        assert!(keys.iter().enumerate().all(|(i, k)| t.get(k) == Some(&(i as u32))));
        assert!(t.shards.iter().all(|s| s.rows.len() > 5000 / SHARDS / 2), "keys spread over the shards");
    }
}
