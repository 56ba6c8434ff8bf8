//! Rebuilding the index after a restart: from the newest checkpoint, every
//! entry validated against its slot header, or from a scan of every header.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::aligned::AlignedBuf;
use super::index::{build_threads, join, spawn, Entry, Index, Prepared, Rebuilt, SlotSet, Source};
use super::lease::{Journal, Leases};
use super::{Phase, Store};
use crate::sync::lock;
use crate::engine::{BatchStats, EngineKind, ReadResult};
use crate::error::{Error, Result};
use super::checkpoint::{EntryPiece, EntrySet, LoadedCheckpoint};
use crate::format::checkpoint::CheckpointEntry;
use crate::format::lease::SlotRun;
use crate::format::{SlotHeader, SlotIndex, SlotState};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoverMode {
    /// On a device with a lease journal: the newest checkpoint, trusted, plus the headers
    /// of the slots leased since it (fast recovery). Otherwise, or when the newest
    /// checkpoint does not verify, or with `keep_unreadable` or `scrub_free`: the
    /// checkpoint validated entry by entry when one verifies, else a scan.
    #[default]
    Auto,
    /// The checkpoint only, every entry validated against its header (full validation);
    /// none verifying leaves the index empty. Puts since the checkpoint are not indexed.
    Checkpoint,
    /// Every slot header, ignoring checkpoints; a key found more than once keeps its
    /// highest generation whose value verifies.
    Scan,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RecoverOptions {
    pub mode: RecoverMode,
    /// Keep entries whose header read failed, marked unverified, instead of dropping them.
    pub keep_unreadable: bool,
    /// Checkpoint recovery: also read the header of every slot the index leaves free. A valid
    /// header there is an orphan, written after the checkpoint by a put the crash cut off; on a
    /// writable handle it is invalidated before the first write, so no later scan can bring it
    /// back after the key was deleted.
    pub scrub_free: bool,
}

impl RecoverOptions {
    /// Fast recovery, where the device allows it: what [`RecoverMode::Auto`] asks for unless
    /// unreadable entries are to be kept or free slots scrubbed.
    fn wants_fast(&self) -> bool {
        self.mode == RecoverMode::Auto && !self.keep_unreadable && !self.scrub_free
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecoveredFrom {
    /// Nothing to recover from: no checkpoint verified (checkpoint mode).
    Nothing,
    Checkpoint,
    Scan,
    /// The checkpoint (or none yet) and the slots leased since it.
    Journal,
}

#[derive(Clone, Copy, Debug)]
pub struct RecoverReport {
    pub from: RecoveredFrom,
    pub engine: EngineKind,
    /// Sequence of the checkpoint used (0 when none).
    pub checkpoint_sequence: u64,
    pub checkpoint_entries: u64,
    pub indexed: u64,
    /// Entries (or scanned headers) whose header did not match: wrong magic, device,
    /// slot, generation, key or length, a bad CRC, or a superseded duplicate.
    pub dropped_stale: u64,
    /// Entries whose header read failed with an I/O error.
    pub dropped_unreadable: u64,
    /// Unreadable entries kept (RB_RECOVER_KEEP_UNREADABLE), to be verified on read.
    pub kept_unverified: u64,
    /// Scan only: slots holding no header.
    pub empty_slots: u64,
    /// With `scrub_free`: valid headers found in free slots (invalidated before the first write).
    pub orphans: u64,
    pub header_reads: u64,
    pub elapsed_ns: u64,
    pub checkpoint_load_ns: u64,
    pub validate_ns: u64,
    pub io: BatchStats,
    /// The first I/O error's errno among unreadable headers (0 if none).
    pub first_errno: i32,
    /// Fast recovery: checkpoint entries indexed without a read (verified on first get).
    pub trusted_unread: u64,
    /// Fast recovery: slots leased since the checkpoint, whose headers were read.
    pub leased_slots: u64,
    /// Fast recovery: entries indexed from leased slots that the checkpoint does not list
    /// (puts made after it).
    pub recovered_since_checkpoint: u64,
}

impl RecoverReport {
    /// Nothing recovered yet: the source `Nothing`, every count zero.
    pub(super) fn new(engine: EngineKind, checkpoint_load_ns: u64) -> RecoverReport {
        RecoverReport {
            from: RecoveredFrom::Nothing,
            engine,
            checkpoint_sequence: 0,
            checkpoint_entries: 0,
            indexed: 0,
            dropped_stale: 0,
            dropped_unreadable: 0,
            kept_unverified: 0,
            empty_slots: 0,
            orphans: 0,
            header_reads: 0,
            elapsed_ns: 0,
            checkpoint_load_ns,
            validate_ns: 0,
            io: BatchStats::default(),
            first_errno: 0,
            trusted_unread: 0,
            leased_slots: 0,
            recovered_since_checkpoint: 0,
        }
    }

    /// Adds the counts [`Store::scan_chunk`] keeps in `part` (reads made on another thread).
    fn add_scan(&mut self, part: &RecoverReport) {
        self.io.merge(&part.io);
        self.header_reads += part.header_reads;
        self.dropped_stale += part.dropped_stale;
        self.empty_slots += part.empty_slots;
        self.dropped_unreadable += part.dropped_unreadable;
        if self.first_errno == 0 {
            self.first_errno = part.first_errno;
        }
    }
}

/// Slots a scan reads per engine batch: bounds its memory (about 64 bytes a slot) whatever
/// the device's size, and is far above any queue depth, so the window stays full.
#[cfg(not(test))]
const SCAN_CHUNK: u64 = 1 << 20;
/// Small in unit tests, so every scan there crosses chunk boundaries.
#[cfg(test)]
const SCAN_CHUNK: u64 = 7;

/// A fast recovery makes its table while the checkpoint loads only from this payload size on
/// (several milliseconds of loading); a smaller one starts no thread for it.
#[cfg(not(test))]
const PREPARE_FROM: u64 = 4 << 20;
/// Every unit test recovery with a checkpoint makes it ahead.
#[cfg(test)]
const PREPARE_FROM: u64 = 1;

/// `each`, typed as taking the pieces of `pieces` (a closure alone would take a reference
/// of any lifetime, and could not return an iterator borrowing from it).
fn over<'p, P, I>(_pieces: &'p [P], each: impl Fn(&'p P) -> I + Sync) -> impl Fn(&'p P) -> I + Sync {
    each
}

/// Entries per piece of a rebuild from entries in memory (see [`Index::rebuild_pieces`]).
#[cfg(not(test))]
const PIECE: usize = 1 << 14;
/// Small in unit tests, so their rebuilds go over many pieces.
#[cfg(test)]
const PIECE: usize = 5;

/// What one checkpoint entry's header says about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Valid,
    Stale,
    Unreadable(i32),
}

/// A valid header read from a slot: its key and entry.
type Found = (Box<[u8]>, Entry);

/// What a fast recovery read from the leased slots.
struct LeasedHeaders {
    found: Vec<Found>,
    invalidate: Vec<SlotIndex>,
    /// Slots of checkpoint entries found unchanged in their leased slot.
    listed: SlotSet,
    /// The reads' counts, added to the recovery's report.
    report: RecoverReport,
}

/// What one scanned slot holds.
enum Scanned {
    Valid(Box<[u8]>, Entry),
    Empty,
    Stale,
    Unreadable(i32),
}

impl Store {
    /// Rebuilds the index. On a writable handle this runs once, before any write;
    /// a read-only handle may recover again. Recovery itself never writes.
    pub fn recover(&self, opts: &RecoverOptions) -> Result<RecoverReport> {
        let start = Instant::now();
        // The crate's lock order: checkpoints, then state. The checkpoints lock keeps
        // recoveries (and checkpoints) one at a time; the state lock is not held while the
        // device is read, so a read-only handle's data calls go on serving the old index, and
        // none of them waits for this recovery while holding an engine ring it needs.
        let mut cursor_slot = lock(&self.checkpoints);
        {
            let st = lock(&self.state);
            if st.phase == Phase::Fresh {
                return Ok(self.fresh_report(start));
            }
            if st.phase == Phase::Ready && !self.is_read_only() {
                return Err(Error::AlreadyRecovered);
            }
        }
        let journal = if self.has_journal() { Some(self.read_journal()?) } else { None };
        let records = self.read_checkpoint_headers()?;
        // A fast recovery indexes about as many entries as the newest checkpoint lists, plus
        // the slots leased since: its table is made while that checkpoint loads (see
        // `Index::prepare`); the load waits on the device, the table on memory.
        let size = match (&journal, records.newest()) {
            (Some(j), Some(h)) if opts.wants_fast() && h.payload_len >= PREPARE_FROM => {
                Some(h.entry_count as usize + j.leased_since(h.sequence, self.sb.geometry.slot_count()).len())
            }
            _ => None,
        };
        let (loaded, prepared) = std::thread::scope(|scope| {
            let prepared = size.and_then(|n| spawn(scope, move || Index::prepare(n)));
            (self.load_checkpoint(records), prepared.and_then(join))
        });
        let (cursor, loaded) = loaded?;
        let mut report = RecoverReport::new(self.engine.kind(), start.elapsed().as_nanos() as u64);
        let validate_start = Instant::now();
        // Fast recovery needs the newest commit record on the device to be the checkpoint
        // that loaded: a damaged newer one may have obsoleted journal records the older
        // checkpoint would need. With no commit record at all, the journal must never have
        // seen a checkpoint either (every record of epoch 0), or they were destroyed, not absent.
        let newest_loaded = match (&loaded, &journal) {
            (Some(ck), _) => ck.fast_ok,
            (None, Some(j)) => cursor.next_sequence <= 1 && !j.saw_a_checkpoint(),
            (None, None) => false,
        };
        let fast = opts.wants_fast() && newest_loaded;
        let since = loaded.as_ref().map_or(0, |ck| ck.header.sequence);
        // Journal records from here on are kept (a delta keeps those since its base).
        let floor = loaded.as_ref().map_or(0, |ck| ck.journal_floor());
        let (index, invalidate) = match (&journal, fast) {
            // Slots were written without leases: only a scan finds them all.
            (Some(j), true) if j.overflowed_since(floor) => {
                self.rebuild(&RecoverOptions { mode: RecoverMode::Scan, ..*opts }, loaded.as_ref(), &mut report)?
            }
            (Some(j), true) => self.rebuild_fast(loaded.as_ref(), j, prepared, &mut report)?,
            _ => self.rebuild(opts, loaded.as_ref(), &mut report)?,
        };
        report.validate_ns = validate_start.elapsed().as_nanos() as u64;
        report.indexed = index.len() as u64;
        // A writable handle's phase cannot have moved meanwhile: its writes wait for recovery.
        let mut st = lock(&self.state);
        st.last_generation = st.last_generation.max(index.newest_generation());
        st.index = index;
        let policy = st.eviction.policy;
        st.index.set_eviction(policy);
        st.pending_invalidation.clear();
        if !self.is_read_only() {
            for slot in invalidate {
                st.index.reserve(slot);
                st.pending_invalidation.push(slot);
            }
        }
        if let Some(j) = &journal {
            st.leases = Leases::recovered(since, floor, j);
        }
        st.phase = Phase::Ready;
        *cursor_slot = cursor;
        report.elapsed_ns = start.elapsed().as_nanos() as u64;
        Ok(report)
    }

    /// The index `opts` asks for, and the slots to invalidate before the first write.
    fn rebuild(
        &self,
        opts: &RecoverOptions,
        loaded: Option<&LoadedCheckpoint>,
        report: &mut RecoverReport,
    ) -> Result<(Index, Vec<SlotIndex>)> {
        let scan = matches!((opts.mode, loaded), (RecoverMode::Scan, _) | (RecoverMode::Auto, None));
        if scan {
            return self.rebuild_from_scan(report);
        }
        let Some(ck) = loaded else {
            return Ok((Index::new(self.sb.geometry.slot_count()), Vec::new()));
        };
        let entries = ck.entries().map_err(Error::Corrupt)?;
        report.from = RecoveredFrom::Checkpoint;
        report.checkpoint_sequence = ck.header.sequence;
        report.checkpoint_entries = entries.len() as u64;
        let index = self.rebuild_from_checkpoint(&entries, &ck.buffers(), opts.keep_unreadable, report)?;
        let orphans = if opts.scrub_free { self.find_orphans(&index, report) } else { Vec::new() };
        Ok((index, orphans))
    }

    /// Fast recovery: the checkpoint's entries, trusted unread unless their slot was leased
    /// since; the headers of the leased slots (the journal's and the checkpoint's carried
    /// ones), whose valid entries newer than the checkpoint's are indexed. Returns the index
    /// and the slots to invalidate before the first write: leased slots holding anything but
    /// an indexed entry or nothing, and superseded copies.
    fn rebuild_fast(
        &self,
        ck: Option<&LoadedCheckpoint>,
        journal: &Journal,
        prepared: Option<Prepared>,
        report: &mut RecoverReport,
    ) -> Result<(Index, Vec<SlotIndex>)> {
        let g = self.sb.geometry;
        report.from = RecoveredFrom::Journal;
        let (entries, carried) = match ck {
            Some(ck) => (ck.entry_set().map_err(Error::Corrupt)?, ck.carried().map_err(Error::Corrupt)?),
            None => (EntrySet::empty(), Vec::new()),
        };
        let since = ck.map_or(0, |ck| ck.header.sequence);
        report.checkpoint_sequence = since;
        report.checkpoint_entries = entries.len() as u64;
        let mut leased = journal.leased_since(since, g.slot_count());
        leased.extend(carried.iter().flat_map(SlotRun::slots).filter(|s| g.has_slot(*s)));
        leased.sort_unstable();
        leased.dedup();
        report.leased_slots = leased.len() as u64;

        let leased_set: SlotSet = leased.iter().copied().collect();
        // The checkpoint's entries: trusted unread unless their slot was leased, when its
        // header (read below) decides.
        let entry_of = |ce: &CheckpointEntry<'_>| Entry { slot: ce.slot, generation: ce.generation, payload_len: ce.payload_len, payload_crc: ce.payload_crc };
        let trusted = |ce: &CheckpointEntry<'_>| {
            g.has_slot(ce.slot)
                && ce.payload_len <= g.max_payload()
                && !ce.key.is_empty()
                && ce.key.len() <= g.max_key_bytes() as usize
                && !leased_set.contains(&ce.slot)
        };
        // The leased slots' headers, chunk by chunk, on another thread while the checkpoint's
        // entries are indexed: the reads wait on the device, the index on memory. Leased
        // slots holding neither a valid header nor nothing are zeroed.
        let read_leased = || {
            let mut read = LeasedHeaders {
                found: Vec::new(),
                invalidate: Vec::new(),
                listed: SlotSet::default(),
                report: RecoverReport::new(report.engine, 0),
            };
            for chunk in leased.chunks(SCAN_CHUNK as usize) {
                self.scan_chunk(chunk, &mut read.found, &mut read.invalidate, &mut read.report);
            }
            // The checkpoint entries not trusted: those whose slot still holds them are listed
            // (not put since); the rest are stale. Done here, while the index is still being built.
            let found_at: HashMap<SlotIndex, usize> = read.found.iter().enumerate().map(|(i, (_, e))| (e.slot, i)).collect();
            for ce in entries.iter().filter(|ce| !trusted(ce)) {
                match found_at.get(&ce.slot).map(|&i| &read.found[i]) {
                    Some((key, e)) if **key == *ce.key && *e == entry_of(&ce) => {
                        read.listed.insert(ce.slot);
                    }
                    _ => read.report.dropped_stale += 1, // implausible, or deleted, replaced or evicted since
                }
            }
            read
        };
        let n = entries.len() + leased.len();
        let (settled, read) = std::thread::scope(|scope| {
            // A small index builds in less time than a thread costs to start: read inline then.
            let reader = Mutex::new(if build_threads(n) > 1 { spawn(scope, read_leased) } else { None });
            let read = OnceLock::new();
            // Whichever builder needs them first waits for the reads (or makes them, when no
            // thread was started).
            let read_now = || read.get_or_init(|| lock(&reader).take().map_or_else(&read_leased, join));
            // The checkpoint's entries in pieces, then the leased slots' (the thread that takes
            // that last piece waits for the reads while the others go on).
            let mut pieces: Vec<Option<EntryPiece<'_, '_>>> = entries.pieces().into_iter().map(Some).collect();
            pieces.push(None);
            let each = over(&pieces, |piece| {
                let from_checkpoint = piece.as_ref().map(|p| p.iter().filter(trusted).map(|ce| (ce.key, entry_of(&ce), Source::Trusted)));
                let from_leases = piece.is_none().then(|| read_now().found.iter().map(|(k, e)| (&k[..], *e, Source::Read)));
                from_checkpoint.into_iter().flatten().chain(from_leases.into_iter().flatten())
            });
            let buffers = ck.map(LoadedCheckpoint::buffers).unwrap_or_default();
            let settled = self.settle(Rebuilt { prepared, ..Rebuilt::new(g.slot_count(), n, &buffers) }, &pieces, each);
            read_now();
            (settled, read.into_inner().expect("read above"))
        });
        let (index, losers) = settled?;
        let LeasedHeaders { found, mut invalidate, listed, report: part } = read;
        report.add_scan(&part);
        report.dropped_stale += losers.len() as u64;
        invalidate.extend(losers.iter().map(|e| e.slot).filter(|&s| !index.is_used(s)));
        report.trusted_unread = index.unverified_count() as u64;
        report.recovered_since_checkpoint = found
            .iter()
            .filter(|(k, e)| !listed.contains(&e.slot) && index.get(k) == Some(*e))
            .count() as u64;
        invalidate.sort_unstable();
        invalidate.dedup();
        Ok((index, invalidate))
    }

    /// The index of the `n` entries of the pieces (see [`Index::rebuild_pieces`]): copies of
    /// a key that lose to a newer one are verified newest first, and a newer copy whose
    /// record does not verify never supersedes an older one that does.
    fn settle<'k, 'p, P: Sync, I>(&self, into: Rebuilt<'_>, pieces: &'p [P], each: impl Fn(&'p P) -> I + Sync) -> Result<(Index, Vec<Entry>)>
    where
        I: Iterator<Item = (&'k [u8], Entry, Source)>,
    {
        let again = Rebuilt::new(into.slot_count, into.n, into.buffers);
        let (index, losers) = Index::rebuild_pieces(into, pieces, &each)?;
        let torn = self.torn_newer_copies(pieces.iter().flat_map(&each).map(|(k, e, _)| (k, e)), &index, &losers);
        if torn.is_empty() {
            return Ok((index, losers));
        }
        // Rare (a replace torn by a crash): settle again without the torn copies.
        let (index, mut losers) = Index::rebuild_pieces(again, pieces, |p| each(p).filter(|(_, e, _)| !torn.contains(e)))?;
        losers.extend(torn);
        Ok((index, losers))
    }

    /// Every checkpoint entry checked against its slot header; entries that do not match are dropped.
    fn rebuild_from_checkpoint(
        &self,
        entries: &[CheckpointEntry<'_>],
        buffers: &[Arc<AlignedBuf>],
        keep_unreadable: bool,
        report: &mut RecoverReport,
    ) -> Result<Index> {
        let g = self.sb.geometry;
        // Entries that cannot be right on this device are stale without a read.
        let plausible: Vec<usize> = (0..entries.len())
            .filter(|&i| {
                let e = &entries[i];
                g.has_slot(e.slot)
                    && e.payload_len <= g.max_payload()
                    && !e.key.is_empty()
                    && e.key.len() <= g.max_key_bytes() as usize
            })
            .collect();
        report.dropped_stale += (entries.len() - plausible.len()) as u64;
        let slots: Vec<SlotIndex> = plausible.iter().map(|&i| entries[i].slot).collect();
        let verdicts = self.validate_entries(entries, &plausible, &slots, report);
        let mut kept = Vec::with_capacity(verdicts.len());
        for (&i, v) in plausible.iter().zip(&verdicts) {
            let e = &entries[i];
            if let Verdict::Unreadable(errno) = *v {
                if report.first_errno == 0 {
                    report.first_errno = errno;
                }
            }
            match (*v, keep_unreadable) {
                (Verdict::Valid, _) => {}
                (Verdict::Stale, _) => {
                    report.dropped_stale += 1;
                    continue;
                }
                (Verdict::Unreadable(_), false) => {
                    report.dropped_unreadable += 1;
                    continue;
                }
                (Verdict::Unreadable(_), true) => report.kept_unverified += 1,
            }
            let entry = Entry { slot: e.slot, generation: e.generation, payload_len: e.payload_len, payload_crc: e.payload_crc };
            kept.push((e.key, entry));
        }
        let pieces: Vec<&[(&[u8], Entry)]> = kept.chunks(PIECE).collect();
        let into = Rebuilt::new(g.slot_count(), kept.len(), buffers);
        let (index, losers) = Index::rebuild_pieces(into, &pieces, |p| p.iter().map(|&(k, e)| (k, e, Source::Read)))?;
        report.dropped_stale += losers.len() as u64;
        // A checkpoint never lists a key or slot twice; losers here came from a damaged one
        // and their slots must not be invalidated (another entry may own them).
        Ok(index)
    }

    /// Reads the header of each plausible entry's slot and judges it against the entry.
    fn validate_entries(
        &self,
        entries: &[CheckpointEntry<'_>],
        plausible: &[usize],
        slots: &[SlotIndex],
        report: &mut RecoverReport,
    ) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict::Stale; slots.len()];
        let id = self.sb.device_id;
        let decode = |i: usize, slot: SlotIndex, r: ReadResult<'_>| -> Verdict {
            let want = &entries[plausible[i]];
            match r {
                Err(errno) => Verdict::Unreadable(errno),
                Ok(block) => match SlotHeader::classify(block, &id, slot) {
                    SlotState::Valid(h)
                        if h.key == want.key
                            && h.generation == want.generation
                            && h.payload_len == want.payload_len
                            && h.payload_crc == want.payload_crc =>
                    {
                        Verdict::Valid
                    }
                    _ => Verdict::Stale,
                },
            }
        };
        report.io = self.read_slot_headers(slots, &mut verdicts, &decode);
        report.header_reads = slots.len() as u64;
        verdicts
    }

    /// Rebuilds from every header; returns the index and the slots of superseded duplicates.
    fn rebuild_from_scan(&self, report: &mut RecoverReport) -> Result<(Index, Vec<SlotIndex>)> {
        let g = self.sb.geometry;
        report.from = RecoveredFrom::Scan;
        // Chunk by chunk, keeping only the valid headers: memory follows the entries, not the
        // device's slot count.
        let mut valid: Vec<Found> = Vec::new();
        let mut chunk = Vec::with_capacity(SCAN_CHUNK.min(g.slot_count()) as usize);
        for first in (0..g.slot_count()).step_by(SCAN_CHUNK as usize) {
            chunk.clear();
            chunk.extend((first..(first + SCAN_CHUNK).min(g.slot_count())).map(SlotIndex));
            self.scan_chunk(&chunk, &mut valid, &mut Vec::new(), report);
        }
        let pieces: Vec<&[Found]> = valid.chunks(PIECE).collect();
        let into = Rebuilt::new(g.slot_count(), valid.len(), &[]);
        let (index, losers) = self.settle(into, &pieces, |p| p.iter().map(|(k, e)| (&k[..], *e, Source::Read)))?;
        report.dropped_stale += losers.len() as u64;
        Ok((index, losers.iter().map(|e| e.slot).collect()))
    }

    /// Reads one chunk's headers; valid ones join `valid`, slots holding anything else but
    /// nothing (stale or unreadable) join `dropped`; all are counted.
    fn scan_chunk(&self, slots: &[SlotIndex], valid: &mut Vec<Found>, dropped: &mut Vec<SlotIndex>, report: &mut RecoverReport) {
        let g = self.sb.geometry;
        let mut scanned: Vec<Scanned> = (0..slots.len()).map(|_| Scanned::Empty).collect();
        let id = self.sb.device_id;
        let decode = |_: usize, slot: SlotIndex, r: ReadResult<'_>| -> Scanned {
            match r {
                Err(errno) => Scanned::Unreadable(errno),
                Ok(block) => match SlotHeader::classify(block, &id, slot) {
                    SlotState::Valid(h) => Scanned::Valid(
                        h.key.into(),
                        Entry { slot, generation: h.generation, payload_len: h.payload_len, payload_crc: h.payload_crc },
                    ),
                    SlotState::Empty => Scanned::Empty,
                    SlotState::Corrupt | SlotState::Foreign => Scanned::Stale,
                },
            }
        };
        report.io.merge(&self.read_slot_headers(slots, &mut scanned, &decode));
        report.header_reads += slots.len() as u64;
        for (s, &slot) in scanned.into_iter().zip(slots) {
            match s {
                Scanned::Valid(key, e) if e.payload_len <= g.max_payload() => valid.push((key, e)),
                Scanned::Valid(..) | Scanned::Stale => {
                    report.dropped_stale += 1;
                    dropped.push(slot);
                }
                Scanned::Empty => report.empty_slots += 1,
                Scanned::Unreadable(errno) => {
                    report.dropped_unreadable += 1;
                    dropped.push(slot);
                    if report.first_errno == 0 {
                        report.first_errno = errno;
                    }
                }
            }
        }
    }

    /// A scan settles a key found in several slots by the highest generation, but a crash
    /// can leave the newest copy with a valid header over a torn payload (a replace cut
    /// short). Taking it would answer RB_E_CORRUPT and invalidate the good older copy: the
    /// key's acknowledged value destroyed by a put that never completed. So the copies of
    /// each duplicated key are read whole, newest first, and those newer than the newest
    /// that verifies are returned, to lose to it. One record read per duplicated key while
    /// its newest copy verifies; keys found once are not read. A copy that cannot be read
    /// counts as not verifying; when none verifies, the generation order stands.
    fn torn_newer_copies<'k>(&self, valid: impl Iterator<Item = (&'k [u8], Entry)>, index: &Index, losers: &[Entry]) -> Vec<Entry> {
        if losers.is_empty() {
            return Vec::new();
        }
        // Every loser came from a valid header: find its key by slot.
        let loser_slots: SlotSet = losers.iter().map(|e| e.slot).collect();
        let key_of: HashMap<SlotIndex, &[u8]> = valid.filter(|(_, e)| loser_slots.contains(&e.slot)).map(|(k, e)| (e.slot, k)).collect();
        let mut copies: HashMap<&[u8], Vec<Entry>> = HashMap::new();
        for e in losers {
            if let Some(key) = key_of.get(&e.slot) {
                copies.entry(key).or_default().push(*e);
            }
        }
        let mut torn = Vec::new();
        for (key, mut copies) in copies {
            copies.extend(index.get(key));
            copies.sort_by_key(|e| std::cmp::Reverse(e.generation));
            if let Some(good) = copies.iter().position(|e| matches!(self.record_verifies(key, e), Ok(true))) {
                torn.extend_from_slice(&copies[..good]);
            }
        }
        torn
    }

    /// Reads the header of every slot `index` leaves free; returns those holding a valid header.
    /// Chunk by chunk, so memory follows the chunk and the orphans, not the free slots.
    fn find_orphans(&self, index: &Index, report: &mut RecoverReport) -> Vec<SlotIndex> {
        let g = self.sb.geometry;
        let id = self.sb.device_id;
        let decode = |_: usize, slot: SlotIndex, r: ReadResult<'_>| {
            matches!(r, Ok(block) if matches!(SlotHeader::classify(block, &id, slot), SlotState::Valid(_)))
        };
        let mut orphans = Vec::new();
        for first in (0..g.slot_count()).step_by(SCAN_CHUNK as usize) {
            let free: Vec<SlotIndex> =
                (first..(first + SCAN_CHUNK).min(g.slot_count())).map(SlotIndex).filter(|&s| !index.is_used(s)).collect();
            let mut valid = vec![false; free.len()];
            report.io.merge(&self.read_slot_headers(&free, &mut valid, &decode));
            report.header_reads += free.len() as u64;
            orphans.extend(free.iter().zip(&valid).filter(|(_, &v)| v).map(|(&s, _)| s));
        }
        report.orphans = orphans.len() as u64;
        orphans
    }
}
