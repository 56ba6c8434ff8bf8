//! Writing and loading checkpoints in the two alternating containers.

use std::sync::Arc;

use super::Store;
use crate::aligned::AlignedBuf;
use crate::error::{Error, Result};
use crate::format::checkpoint::{
    carried_len, check_payload, check_payload_marking, delta_prefix_len, encode_carried, encode_delta_prefix, encode_payload, payload_parts, PayloadEntries,
    CheckpointEntry, CheckpointHeader, ENTRY_FIXED_BYTES, FLAG_CARRIED_LEASES, FLAG_DELTA,
};
use crate::format::lease::SlotRun;
use crate::format::{crc32, round_up, Container};
use crate::sync::lock;

/// Which container to write next, and with which sequence.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Cursor {
    /// The container the next checkpoint must not overwrite: the newest that verifies, or
    /// after a recovery from a delta, the delta's base.
    pub newest: Option<Container>,
    /// Above every sequence seen on the device, valid or not.
    pub next_sequence: u64,
    /// The full checkpoint this handle committed last (sequence, container): deltas apply to
    /// it. `None` after open and after a failed full checkpoint: the next one is full.
    pub base: Option<(u64, Container)>,
}

impl Cursor {
    /// Deltas and full checkpoints alike go to the container not holding the base, so a
    /// torn write always leaves the base (and the journal records since it) to recover from.
    fn target(&self) -> Container {
        match self.base {
            Some((_, c)) => c.other(),
            None => self.newest.map_or(Container::A, Container::other),
        }
    }
}

/// Whether a checkpoint writes the whole index or only what changed since the base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CheckpointKind {
    /// A delta when there is a base and little changed; otherwise full.
    Auto,
    /// Full: the only kind that lets the lease journal reuse its blocks.
    Full,
}

/// What a completed checkpoint wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    pub sequence: u64,
    /// Entries written: every indexed one (full), or those put since the base (delta).
    pub entries: u64,
    pub payload_bytes: u64,
    /// A delta on the full checkpoint `base`, holding only what changed since it.
    pub delta_of: Option<u64>,
}

/// When a handle checkpoints by itself, checked after each write call: after `every_changes`
/// puts, deletes and evictions since the last checkpoint, or once `every` has passed since
/// it with anything changed. Zero turns a trigger off; both off (the default) leaves
/// checkpoints to the caller. An idle handle takes none: nothing changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AutoCheckpoint {
    pub every_changes: u64,
    pub every: std::time::Duration,
}

/// The commit records read from both containers: the well-formed ones of this device, and
/// the highest sequence of any record.
pub(super) struct CommitRecords {
    headers: Vec<(Container, CheckpointHeader)>,
    max_seq: u64,
}

impl CommitRecords {
    /// The newest well-formed record: the checkpoint a recovery most likely loads.
    pub fn newest(&self) -> Option<&CheckpointHeader> {
        self.headers.iter().map(|(_, h)| h).max_by_key(|h| h.sequence)
    }
}

/// A checkpoint whose header and payload both verified (a delta with its verified base).
pub(super) struct LoadedCheckpoint {
    pub header: CheckpointHeader,
    /// The payload, padded to the block size; `payload_len` bytes of it are meaningful.
    /// Shared: an index rebuilt from it keeps the keys where they lie.
    pub payload: Arc<AlignedBuf>,
    /// A delta's base (a full checkpoint).
    pub base: Option<Box<LoadedCheckpoint>>,
    /// Fast recovery may start here: this is the newest commit record of the device, or
    /// every newer one is a delta (deltas keep the journal's records since their base).
    pub fast_ok: bool,
    /// [`entry_set`](Self::entry_set) found every entry well formed: a later call need not
    /// walk the payload again (about 4 ms per 500k entries).
    entries_checked: bool,
    /// Where every [`PIECE_ENTRIES`]-th of its own entries starts (see [`EntrySet::pieces`]);
    /// found by the check.
    marks: Vec<usize>,
}

/// Entries per piece of a checkpoint that several threads index (see [`EntrySet::pieces`]):
/// 32 pieces at 524k entries, so a thread that runs slower (another vCPU's interrupts, a
/// busy host) leaves the last pieces to the others instead of holding the rebuild up.
#[cfg(not(test))]
const PIECE_ENTRIES: u64 = 1 << 14;
/// Small in unit tests, so their rebuilds go over many pieces.
#[cfg(test)]
const PIECE_ENTRIES: u64 = 5;

impl LoadedCheckpoint {
    fn bytes(&self) -> &[u8] {
        &self.payload[..self.header.payload_len as usize]
    }

    /// Every entry: a full checkpoint's, or a delta's base less what the delta removed or
    /// replaced (by key, or by slot: a slot a delta entry holds is no longer the base's),
    /// plus the delta's entries.
    pub fn entries(&self) -> std::result::Result<Vec<CheckpointEntry<'_>>, String> {
        Ok(self.entry_set()?.iter().collect())
    }

    /// The buffers [`entries`](Self::entries)' keys lie in (a delta's and its base's).
    pub fn buffers(&self) -> Vec<Arc<AlignedBuf>> {
        std::iter::once(self.payload.clone()).chain(self.base.iter().map(|b| b.payload.clone())).collect()
    }

    /// Checks every entry (see [`entry_set`](Self::entry_set)); a later call need not.
    fn check(&mut self) -> std::result::Result<(), String> {
        let own = payload_parts(self.bytes(), self.header.flags)?.entries;
        self.marks = check_payload_marking(own, self.header.entry_count, PIECE_ENTRIES)?;
        if let Some(base) = &self.base {
            check_payload(payload_parts(base.bytes(), base.header.flags)?.entries, base.header.entry_count)?;
        }
        self.entries_checked = true;
        self.entry_set().map(drop)
    }

    /// [`entries`](Self::entries), checked, to go over as often as needed without a copy.
    pub fn entry_set(&self) -> std::result::Result<EntrySet<'_>, String> {
        let parts = payload_parts(self.bytes(), self.header.flags)?;
        if !self.entries_checked {
            check_payload(parts.entries, self.header.entry_count)?;
        }
        let own = parts.entries;
        let Some(base) = &self.base else { return Ok(EntrySet { own, base: None, len: self.header.entry_count as usize, marks: &self.marks }) };
        let base_entries = payload_parts(base.bytes(), base.header.flags)?.entries;
        if !self.entries_checked {
            check_payload(base_entries, base.header.entry_count)?;
        }
        let superseded = Superseded {
            keys: PayloadEntries::new(own).map(|e| e.key).chain(parts.removed.iter().copied()).collect(),
            slots: PayloadEntries::new(own).map(|e| e.slot).collect(),
        };
        let kept = PayloadEntries::new(base_entries).filter(|e| !superseded.covers(e)).count();
        Ok(EntrySet { own, base: Some((base_entries, superseded)), len: kept + self.header.entry_count as usize, marks: &[] })
    }

    /// The slots leased but not installed when its snapshot was taken (none before leases).
    pub fn carried(&self) -> std::result::Result<Vec<SlotRun>, String> {
        payload_parts(self.bytes(), self.header.flags).map(|p| p.carried)
    }

    /// The sequence below which the lease journal may have reused its blocks: a delta's
    /// base, or this checkpoint's own.
    pub fn journal_floor(&self) -> u64 {
        self.base.as_ref().map_or(self.header.sequence, |b| b.header.sequence)
    }
}

/// A checkpoint's entries (see [`LoadedCheckpoint::entries`]), checked and not copied.
pub struct EntrySet<'a> {
    own: &'a [u8],
    /// A delta's base: its entries, and what of them the delta supersedes.
    base: Option<(&'a [u8], Superseded<'a>)>,
    len: usize,
    /// Where pieces of `own` start (none known: one piece).
    marks: &'a [usize],
}

/// The keys a delta removed or put again, and the slots its entries hold.
struct Superseded<'a> {
    keys: std::collections::HashSet<&'a [u8]>,
    slots: std::collections::HashSet<crate::format::SlotIndex>,
}

impl Superseded<'_> {
    fn covers(&self, e: &CheckpointEntry<'_>) -> bool {
        self.keys.contains(e.key) || self.slots.contains(&e.slot)
    }
}

impl<'a> EntrySet<'a> {
    /// No entries (no checkpoint).
    pub fn empty() -> EntrySet<'static> {
        EntrySet { own: &[], base: None, len: 0, marks: &[] }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn iter(&self) -> impl Iterator<Item = CheckpointEntry<'a>> + '_ {
        let base = self.base.iter().flat_map(|(bytes, superseded)| PayloadEntries::new(bytes).filter(|e| !superseded.covers(e)));
        base.chain(PayloadEntries::new(self.own))
    }

    /// The entries as pieces of consecutive ones that together are [`iter`](Self::iter)'s,
    /// in its order: a full checkpoint's cut at its marks, a delta's in one piece.
    pub fn pieces(&self) -> Vec<EntryPiece<'_, 'a>> {
        if self.base.is_some() || self.marks.len() < 2 {
            return vec![EntryPiece { set: self, part: None }];
        }
        let ends = self.marks.iter().skip(1).copied().chain([self.own.len()]);
        self.marks.iter().zip(ends).map(|(&a, b)| EntryPiece { set: self, part: Some(&self.own[a..b]) }).collect()
    }
}

/// Consecutive entries of an [`EntrySet`]: some of a full checkpoint's, or all of them.
pub struct EntryPiece<'s, 'a> {
    set: &'s EntrySet<'a>,
    part: Option<&'a [u8]>,
}

impl<'a> EntryPiece<'_, 'a> {
    pub fn iter(&self) -> impl Iterator<Item = CheckpointEntry<'a>> + '_ {
        let whole = self.part.is_none().then(|| self.set.iter());
        whole.into_iter().flatten().chain(self.part.map(PayloadEntries::new).into_iter().flatten())
    }
}

/// The index encoded as a checkpoint payload, padded to the block size.
struct EncodedIndex {
    payload: AlignedBuf,
    entries: u64,
    len: u64,
    flags: u32,
    delta_of: Option<u64>,
}

/// A checkpoint payload loads in reads of this size, [`LOAD_LANES`] of them in flight: one
/// read at a time left the disk idle while each next read's pages were faulted in (0.030-0.040 s
/// against 0.024 s for a 50 MB payload on this project's virtio disk).
#[cfg(not(test))]
const LOAD_CHUNK: usize = 4 << 20;
/// Small in unit tests, so every payload there loads over several lanes.
#[cfg(test)]
const LOAD_CHUNK: usize = 8 << 10;
const LOAD_LANES: usize = 4;

impl Store {
    /// Makes the index durable: a delta (only what changed since this handle's last full
    /// checkpoint) when there is one and little changed, otherwise the whole index. Written to
    /// the container not holding the base: payload, fdatasync, then the header block as the
    /// commit record, fdatasync. A checkpoint too large for its container is
    /// [`Error::CheckpointTooLarge`] and writes nothing.
    pub fn checkpoint(&self) -> Result<CheckpointInfo> {
        self.checkpoint_as(CheckpointKind::Auto)
    }

    /// A full checkpoint whatever changed: the whole index, and a new base for deltas.
    pub fn checkpoint_full(&self) -> Result<CheckpointInfo> {
        self.checkpoint_as(CheckpointKind::Full)
    }

    pub(super) fn checkpoint_as(&self, kind: CheckpointKind) -> Result<CheckpointInfo> {
        let mut cursor = lock(&self.checkpoints);
        let target = cursor.target();
        let sequence = cursor.next_sequence.max(1);
        // No batch is leased while the snapshot is taken (see store/lease.rs).
        let leasing = lock(&self.lease_io);
        let encoded = self.encode_index(sequence, if kind == CheckpointKind::Full { None } else { cursor.base });
        drop(leasing);
        let encoded = encoded?;
        let header = CheckpointHeader {
            device_id: self.sb.device_id,
            sequence,
            payload_len: encoded.len,
            entry_count: encoded.entries,
            payload_crc: crc32(&encoded.payload[..encoded.len as usize]),
            flags: encoded.flags,
        };
        // Deltas too: the first fdatasync makes every write before the checkpoint durable
        // before its commit record can be (the power-loss simulator finds a delta committed
        // over torn records otherwise).
        if let Err(e) = self.write_checkpoint(target, &header, &encoded.payload) {
            if encoded.delta_of.is_none() {
                // Changes were counted from this snapshot, which never became a base.
                cursor.base = None;
                lock(&self.state).index.forget_changes();
            }
            return Err(e);
        }
        cursor.newest = Some(target);
        cursor.next_sequence = sequence + 1;
        let mut st = lock(&self.state);
        if encoded.delta_of.is_none() {
            cursor.base = Some((sequence, target));
            // Only a full checkpoint lets the journal reuse older records: a torn delta
            // falls back to its base and every record since.
            st.leases.committed(sequence);
        }
        st.checkpointed_changes = st.changes;
        st.checkpointed_at = std::time::Instant::now();
        Ok(CheckpointInfo { sequence, entries: encoded.entries, payload_bytes: encoded.len, delta_of: encoded.delta_of })
    }

    /// Encodes the index under the state lock (a writable, recovered handle only): a delta on
    /// `base` when one is given, the journal is less than half full and not overflowed, and at
    /// most an eighth of the entries changed since; else everything. On a device with a lease journal this is
    /// the snapshot of checkpoint `sequence`: the slots leased and not installed are carried
    /// in the payload, and later leases belong to `sequence`'s epoch.
    fn encode_index(&self, sequence: u64, base: Option<(u64, Container)>) -> Result<EncodedIndex> {
        let g = self.sb.geometry;
        let mut st = self.writable()?;
        let carried = if self.has_journal() { Some(st.leases.carried()) } else { None };
        let small = |n: usize| n as u64 * 1000 <= st.index.len() as u64 * st.delta_max_permille as u64;
        let delta_base = match (base, st.index.changed_count()) {
            (Some((b, _)), Some(changed)) if carried.is_some() && small(changed) && !st.leases.half_full() && !st.leases.overflowed => {
                Some(b)
            }
            _ => None,
        };
        // A delta lists the keys changed since its base: those indexed now, and those removed.
        let mut removed: Vec<&[u8]> = Vec::new();
        let mut written_entries: Vec<(&[u8], super::index::Entry)> = Vec::new();
        if let (Some(_), Some(changes)) = (delta_base, st.index.changes()) {
            for (k, now) in changes {
                match now {
                    Some(e) => written_entries.push((k, e)),
                    None => removed.push(k),
                }
            }
        }
        let entries_len: u64 = match delta_base {
            Some(_) => written_entries.iter().map(|(k, _)| ENTRY_FIXED_BYTES + k.len() as u64).sum(),
            None => st.index.iter().map(|(k, _)| ENTRY_FIXED_BYTES + k.len() as u64).sum(),
        };
        let prefix_len = if delta_base.is_some() { delta_prefix_len(removed.iter().copied()) } else { 0 };
        let len = prefix_len + entries_len + carried.as_ref().map_or(0, |c| carried_len(c.len()));
        let entries = if delta_base.is_some() { written_entries.len() } else { st.index.len() } as u64;
        if len > g.checkpoint_capacity() {
            return Err(Error::CheckpointTooLarge { entries, needed: len, capacity: g.checkpoint_capacity() });
        }
        let padded = round_up(len, g.block_size() as u64);
        let mut payload = usize::try_from(padded)
            .ok()
            .and_then(AlignedBuf::try_zeroed)
            .ok_or_else(|| Error::out_of_memory("the checkpoint payload", padded))?;
        fn as_entry<'k>((key, e): (&'k [u8], super::index::Entry)) -> CheckpointEntry<'k> {
            CheckpointEntry { key, slot: e.slot, generation: e.generation, payload_len: e.payload_len, payload_crc: e.payload_crc }
        }
        let mut written = 0;
        if let Some(b) = delta_base {
            written += encode_delta_prefix(b, removed.iter().copied(), &mut payload);
            written += encode_payload(written_entries.iter().map(|&(k, e)| as_entry((k, e))), &mut payload[written..]);
        } else {
            written += encode_payload(st.index.iter().map(as_entry), &mut payload);
        }
        debug_assert_eq!(written as u64, prefix_len + entries_len);
        drop((removed, written_entries));
        let mut flags = 0;
        if let Some(runs) = &carried {
            encode_carried(runs, &mut payload[written..]);
            st.leases.epoch = sequence;
            flags |= FLAG_CARRIED_LEASES;
        }
        if delta_base.is_some() {
            flags |= FLAG_DELTA;
        } else if carried.is_some() {
            // A full snapshot: the next delta holds what changes from here.
            st.index.track_changes();
        }
        Ok(EncodedIndex { payload, entries, len, flags, delta_of: delta_base })
    }

    /// Payload, sync, commit record, sync: a crash anywhere leaves the other container newest.
    fn write_checkpoint(&self, target: Container, header: &CheckpointHeader, payload: &[u8]) -> Result<()> {
        let g = self.sb.geometry;
        let base = g.container_offset(target);
        let block = g.block_size() as u64;
        let mut header_block = AlignedBuf::zeroed(block as usize);
        header.encode(&mut header_block);
        let io = |what: &str, e| Error::io(format!("checkpoint {}: {what}", header.sequence), e);
        if !payload.is_empty() {
            self.dev.write_at(payload, base + block).map_err(|e| io("writing the payload", e))?;
        }
        self.dev.sync().map_err(|e| io("syncing the payload", e))?;
        self.dev.write_at(&header_block, base).map_err(|e| io("writing the commit record", e))?;
        self.dev.sync().map_err(|e| io("syncing the commit record", e))
    }

    /// Test support: the share of changed entries (in thousandths of the index) up to which a
    /// checkpoint is a delta (default 125: an eighth).
    #[cfg(test)]
    pub(crate) fn set_delta_max_permille(&self, permille: u32) {
        lock(&self.state).delta_max_permille = permille;
    }

    /// Sets when this handle checkpoints by itself ([`AutoCheckpoint`]).
    pub fn set_auto_checkpoint(&self, policy: AutoCheckpoint) {
        lock(&self.state).auto_checkpoint = policy;
        let on = policy.every_changes > 0 || !policy.every.is_zero();
        self.auto_checkpoint_on.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Takes a checkpoint when the auto-checkpoint policy says it is due. A failure leaves
    /// the write that triggered it acknowledged: it is counted, and the next write tries again.
    pub(super) fn maybe_checkpoint(&self) {
        // Every write call comes here: without a policy (the default) it costs one load.
        if !self.auto_checkpoint_on.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let due = {
            let st = lock(&self.state);
            let changed = st.changes - st.checkpointed_changes;
            let p = st.auto_checkpoint;
            changed > 0
                && st.phase == super::Phase::Ready
                && ((p.every_changes > 0 && changed >= p.every_changes)
                    || (!p.every.is_zero() && st.checkpointed_at.elapsed() >= p.every))
        };
        // One at a time: a write that finds a checkpoint running leaves it to that one.
        if !due || self.checkpoints.try_lock().is_err() {
            return;
        }
        if self.checkpoint().is_err() {
            lock(&self.state).auto_checkpoint_failures += 1;
        }
    }

    /// Checkpoints the policy took by itself that failed (the writes stayed acknowledged).
    pub fn auto_checkpoint_failures(&self) -> u64 {
        lock(&self.state).auto_checkpoint_failures
    }

    /// Finds the newest checkpoint of this device whose header and payload both verify.
    /// None verifying is `Ok(None)`, not an error.
    pub(super) fn load_checkpoint(&self, found: CommitRecords) -> Result<(Cursor, Option<LoadedCheckpoint>)> {
        let CommitRecords { mut headers, max_seq } = found;
        headers.sort_by_key(|(_, h)| std::cmp::Reverse(h.sequence));
        let mut cursor = Cursor { newest: None, next_sequence: max_seq + 1, base: None };
        // Only deltas were passed over so far (and no foreign record is newer).
        let listed_max = headers.first().map_or(0, |(_, h)| h.sequence);
        let mut only_deltas_above = listed_max == max_seq;
        for (i, &(which, header)) in headers.iter().enumerate() {
            let Some(mut loaded) = self.load_one(which, header)? else {
                only_deltas_above &= header.flags & FLAG_DELTA != 0;
                continue;
            };
            if header.flags & FLAG_DELTA != 0 {
                // Its base must be the other container's full checkpoint of the named sequence.
                let want = payload_parts(loaded.bytes(), header.flags).ok().and_then(|p| p.base);
                let base = headers[i + 1..].iter().find(|(_, h)| Some(h.sequence) == want && h.flags & FLAG_DELTA == 0);
                let base = match base {
                    Some(&(bw, bh)) => self.load_one(bw, bh)?,
                    None => None,
                };
                let Some(base) = base else {
                    only_deltas_above = false; // a delta without its base: recover without both
                    continue;
                };
                loaded.base = Some(Box::new(base));
                // The next (full) checkpoint overwrites the delta, never its base.
                cursor.newest = Some(which.other());
            } else {
                cursor.newest = Some(which);
            }
            if loaded.check().is_err() {
                only_deltas_above = false;
                continue;
            }
            loaded.fast_ok = only_deltas_above;
            return Ok((cursor, Some(loaded)));
        }
        Ok((cursor, None))
    }

    /// One container's checkpoint when its payload verifies against its commit record.
    fn load_one(&self, which: Container, header: CheckpointHeader) -> Result<Option<LoadedCheckpoint>> {
        let payload = self.read_payload(which, header.payload_len)?;
        if crc32(&payload[..header.payload_len as usize]) != header.payload_crc {
            return Ok(None);
        }
        Ok(Some(LoadedCheckpoint { header, payload: Arc::new(payload), base: None, fast_ok: false, entries_checked: false, marks: Vec::new() }))
    }

    /// The well-formed commit records of this device, and the highest sequence of any.
    pub(super) fn read_checkpoint_headers(&self) -> Result<CommitRecords> {
        let g = self.sb.geometry;
        let mut headers = Vec::with_capacity(2);
        let mut max_seq = 0;
        for which in Container::BOTH {
            let mut buf = AlignedBuf::zeroed(g.block_size() as usize);
            self.dev
                .read_at(&mut buf, g.container_offset(which))
                .map_err(|e| Error::io(format!("reading checkpoint container {which}"), e))?;
            if let Some(h) = CheckpointHeader::decode(&buf) {
                max_seq = max_seq.max(h.sequence);
                if h.device_id == self.sb.device_id && h.payload_len <= g.checkpoint_capacity() {
                    headers.push((which, h));
                }
            }
        }
        Ok(CommitRecords { headers, max_seq })
    }

    fn read_payload(&self, which: Container, len: u64) -> Result<AlignedBuf> {
        let g = self.sb.geometry;
        let padded = round_up(len, g.block_size() as u64);
        let mut payload = usize::try_from(padded)
            .ok()
            .and_then(AlignedBuf::try_zeroed)
            .ok_or_else(|| Error::out_of_memory("loading a checkpoint payload", padded))?;
        let base = g.container_offset(which) + g.block_size() as u64;
        // Lane i reads chunks i, i + LOAD_LANES, ...; the first lane on this thread, and any
        // lane whose thread cannot start, too.
        let mut lanes: Vec<Vec<(u64, &mut [u8])>> = (0..LOAD_LANES).map(|_| Vec::new()).collect();
        for (i, chunk) in payload.chunks_mut(LOAD_CHUNK).enumerate() {
            lanes[i % LOAD_LANES].push((base + (i * LOAD_CHUNK) as u64, chunk));
        }
        let read_lane = |lane: Vec<(u64, &mut [u8])>| lane.into_iter().try_for_each(|(offset, chunk)| self.dev.read_at(chunk, offset));
        let read = std::thread::scope(|scope| {
            let mut lanes = lanes.into_iter().filter(|l| !l.is_empty());
            let first = lanes.next().unwrap_or_default();
            let mut inline = Vec::new();
            let mut others = Vec::new();
            for lane in lanes {
                // A lane given to a thread that cannot start comes back here, unread.
                let (tx, rx) = std::sync::mpsc::channel();
                match std::thread::Builder::new().name("rb-load".into()).spawn_scoped(scope, move || read_lane(rx.recv().unwrap_or_default())) {
                    Ok(h) => {
                        let _ = tx.send(lane);
                        others.push(h);
                    }
                    Err(_) => inline.push(lane),
                }
            }
            std::iter::once(first)
                .chain(inline)
                .map(read_lane)
                .chain(others.into_iter().map(super::index::join))
                .collect::<std::io::Result<Vec<()>>>()
        });
        read.map_err(|e| Error::io(format!("reading checkpoint container {which}"), e))?;
        Ok(payload)
    }
}
