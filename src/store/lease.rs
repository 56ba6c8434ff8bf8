//! Slot leases: the durable record of which slots may have changed since the last
//! checkpoint, so that recovery reads only those (docs/FORMAT.md, "Lease journal").
//!
//! Invariants, with S the sequence of the newest committed checkpoint:
//! - a put writes only a slot taken from the pool, and every pool slot is named by a
//!   journal record of epoch >= S that is durable (written and synced) before the slot
//!   is handed out, or by checkpoint S's carried list;
//! - a checkpoint's snapshot (under `lease_io` and the state lock) moves the epoch to
//!   its own sequence and carries the pool and the slots being written, so nothing
//!   leased before it is forgotten once it commits;
//! - a journal block may be overwritten only when its record's epoch is below S.
//!
//! Slots not leased since checkpoint S hold what S lists, or a zeroed (or torn-zeroed)
//! header left by a delete, a replace or an eviction; a first read tells which.

use std::collections::HashSet;

use super::data::Mismatch;
use super::index::Entry;
use super::Store;
use crate::aligned::AlignedBuf;
use crate::engine::ReadResult;
use crate::format::{SlotHeader, SlotState};
use crate::error::{Error, Result};
use crate::format::geometry::LEASE_BATCH_MAX;
use crate::format::lease::{runs_of, runs_per_record, LeaseRecord, SlotRun};
use crate::format::SlotIndex;
use crate::sync::lock;

/// The handle's leases, kept in the store's state.
#[derive(Debug, Default)]
pub(super) struct Leases {
    /// Epoch of the records written now: the sequence of the last snapshot taken.
    pub epoch: u64,
    /// Sequence of the newest committed checkpoint; records of older epochs are obsolete.
    pub committed: u64,
    next_serial: u64,
    /// The epoch of the record in each journal block, `None` where there is none of this device.
    ring: Vec<Option<u64>>,
    /// Leased slots not handed out yet, highest first (`pop` gives the lowest).
    pool: Vec<SlotIndex>,
    /// Slots handed to a write that has not installed or given them back yet.
    in_flight: HashSet<SlotIndex>,
    /// Records written since open.
    pub records_written: u64,
    /// The journal filled and the checkpoint that would have emptied it failed: an overflow
    /// record makes the next recovery scan, and slots are taken without leases until a
    /// checkpoint commits.
    pub overflowed: bool,
}

/// What the journal holds, as recovery reads it.
pub(super) struct Journal {
    /// The record in each block, if it is one of this device's.
    pub records: Vec<Option<LeaseRecord>>,
}

impl Journal {
    /// Whether a record of an epoch at or after `since` says the journal overflowed: some
    /// slots were written without a lease, and only a scan finds them.
    pub fn overflowed_since(&self, since: u64) -> bool {
        self.records.iter().flatten().any(|r| r.epoch >= since && r.is_overflow())
    }

    /// Whether any record was written after a checkpoint's snapshot (an epoch above 0).
    pub fn saw_a_checkpoint(&self) -> bool {
        self.records.iter().flatten().any(|r| r.epoch > 0)
    }

    /// Every slot leased in an epoch at or after `since`, sorted and distinct, within `slot_count`.
    pub fn leased_since(&self, since: u64, slot_count: u64) -> Vec<SlotIndex> {
        let mut slots: Vec<SlotIndex> = self
            .records
            .iter()
            .flatten()
            .filter(|r| r.epoch >= since)
            .flat_map(|r| r.runs.iter().flat_map(SlotRun::slots))
            .filter(|s| s.0 < slot_count)
            .collect();
        slots.sort_unstable();
        slots.dedup();
        slots
    }
}

impl Leases {
    /// The lease state after recovering from checkpoint `epoch` (a delta or a full one) whose
    /// journal floor is `committed` (the delta's base, or itself), with this journal.
    pub fn recovered(epoch: u64, committed: u64, journal: &Journal) -> Leases {
        Leases {
            epoch,
            committed,
            next_serial: journal.records.iter().flatten().map(|r| r.serial + 1).max().unwrap_or(1),
            ring: journal.records.iter().map(|r| r.as_ref().map(|r| r.epoch)).collect(),
            overflowed: journal.overflowed_since(committed),
            ..Leases::default()
        }
    }

    /// A freshly formatted device: an empty journal of `blocks`.
    pub fn fresh(blocks: u32) -> Leases {
        Leases { next_serial: 1, ring: vec![None; blocks as usize], ..Leases::default() }
    }

    /// The lowest pooled slot, now in flight.
    pub fn take(&mut self) -> Option<SlotIndex> {
        let slot = self.pool.pop()?;
        self.in_flight.insert(slot);
        Some(slot)
    }

    /// A checkpoint committed: records of older epochs are obsolete.
    pub fn committed(&mut self, sequence: u64) {
        if sequence > self.committed {
            self.committed = sequence;
            self.overflowed = false;
        }
    }

    /// The write on `slot` installed its entry or gave the slot back.
    pub fn settle(&mut self, slot: SlotIndex) {
        self.in_flight.remove(&slot);
    }

    /// Slots a checkpoint snapshot must carry: leased and not installed.
    pub fn carried(&self) -> Vec<SlotRun> {
        let mut slots: Vec<SlotIndex> = self.pool.iter().chain(self.in_flight.iter()).copied().collect();
        slots.sort_unstable();
        slots.dedup();
        runs_of(&slots)
    }

    /// A journal block whose record is obsolete or absent, with the serial and epoch to write there.
    fn free_block(&mut self) -> Option<(usize, u64, u64)> {
        let committed = self.committed;
        let pos = self.ring.iter().position(|e| e.is_none_or(|e| e < committed))?;
        let serial = self.next_serial;
        self.next_serial += 1;
        Some((pos, serial, self.epoch))
    }

    /// Whether half the journal's blocks hold live records: time for a full checkpoint,
    /// the only kind that makes them reusable.
    pub fn half_full(&self) -> bool {
        let live = self.ring.iter().filter(|e| e.is_some_and(|e| e >= self.committed)).count();
        live * 2 >= self.ring.len()
    }

    /// Leased but unused slots: free for the counters' purposes.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }
}

impl Store {
    /// Whether this device has a lease journal (devices formatted before it do not).
    pub(super) fn has_journal(&self) -> bool {
        self.sb.geometry.journal_blocks() > 0
    }

    /// A slot to write a new record to: from the lease pool, leasing a new batch first
    /// when the pool is empty (one journal write and sync per batch).
    pub(super) fn allocate_slot(&self) -> Result<SlotIndex> {
        if !self.has_journal() {
            return self.allocate_unleased();
        }
        loop {
            {
                let mut st = lock(&self.state);
                if let Some(slot) = st.leases.take() {
                    return Ok(slot);
                }
                if st.leases.overflowed {
                    drop(st);
                    // Under lease_io: no checkpoint snapshot may fall between taking the slot
                    // and marking it in flight, or that checkpoint would not carry it.
                    let _snapshot_waits = lock(&self.lease_io);
                    let slot = self.allocate_unleased()?;
                    lock(&self.state).leases.in_flight.insert(slot);
                    return Ok(slot);
                }
            }
            self.lease_batch()?;
        }
    }

    /// Most slots one batch leases: enough that a full journal covers the device twice
    /// over, at most [`LEASE_BATCH_MAX`] (and as many runs as one record holds).
    fn lease_batch_size(&self) -> usize {
        let g = self.sb.geometry;
        (2 * g.slot_count()).div_ceil(g.journal_blocks() as u64).clamp(1, LEASE_BATCH_MAX) as usize
    }

    /// Leases a batch of free slots into the pool: the record is durable before any of
    /// them is handed out. A journal with no obsolete block left takes a checkpoint first.
    fn lease_batch(&self) -> Result<()> {
        let g = self.sb.geometry;
        for _ in 0..2 {
            let io = lock(&self.lease_io);
            if lock(&self.state).leases.pooled() > 0 {
                return Ok(()); // another thread leased meanwhile
            }
            let slots = self.take_free_slots(self.lease_batch_size(), runs_per_record(g.block_size()))?;
            let claimed = lock(&self.state).leases.free_block();
            let Some((pos, serial, epoch)) = claimed else {
                self.give_back_unwritten(&slots);
                drop(io);
                // Every block holds a live record: a checkpoint makes them obsolete. If it
                // cannot be taken (say the index outgrew its container), puts go on without
                // leases and the next recovery scans.
                if self.checkpoint_as(super::checkpoint::CheckpointKind::Full).is_err() {
                    return self.overflow_journal(); // allocate_slot now takes slots unleased
                }
                continue;
            };
            let record = LeaseRecord { device_id: self.sb.device_id, epoch, serial, runs: runs_of(&slots) };
            if let Err(e) = self.write_lease_record(pos, &record) {
                self.give_back_unwritten(&slots);
                return Err(e);
            }
            let mut st = lock(&self.state);
            st.leases.ring[pos] = Some(epoch);
            st.leases.records_written += 1;
            st.leases.pool.extend(slots.iter().rev());
            return Ok(());
        }
        Err(Error::Unsupported("the lease journal stayed full after a checkpoint".into()))
    }

    /// Up to `n` free slots, lowest first, forming at most `max_runs` runs; at least one
    /// (evicting, when the handle evicts and none is free).
    fn take_free_slots(&self, n: usize, max_runs: usize) -> Result<Vec<SlotIndex>> {
        let first = self.allocate_unleased()?;
        let mut slots = vec![first];
        let mut runs = 1;
        let mut st = lock(&self.state);
        while slots.len() < n {
            let Ok(slot) = st.index.allocate() else { break };
            if slot.0 != slots[slots.len() - 1].0 + 1 {
                if runs == max_runs {
                    st.index.release(slot);
                    break;
                }
                runs += 1;
            }
            slots.push(slot);
        }
        Ok(slots)
    }

    /// Writes an overflow record (no runs) over journal block 0 and stops leasing until
    /// the next checkpoint commits.
    fn overflow_journal(&self) -> Result<()> {
        let _io = lock(&self.lease_io);
        let (serial, epoch) = {
            let mut st = lock(&self.state);
            if st.leases.overflowed {
                return Ok(());
            }
            let serial = st.leases.next_serial;
            st.leases.next_serial += 1;
            (serial, st.leases.epoch)
        };
        let record = LeaseRecord { device_id: self.sb.device_id, epoch, serial, runs: Vec::new() };
        self.write_lease_record(0, &record)?;
        let mut st = lock(&self.state);
        st.leases.ring[0] = Some(epoch);
        st.leases.records_written += 1;
        st.leases.overflowed = true;
        Ok(())
    }

    fn give_back_unwritten(&self, slots: &[SlotIndex]) {
        let mut st = lock(&self.state);
        for &s in slots {
            st.index.release(s);
        }
    }

    /// Writes one record into journal block `pos` and syncs it.
    fn write_lease_record(&self, pos: usize, record: &LeaseRecord) -> Result<()> {
        let g = self.sb.geometry;
        let mut block = AlignedBuf::zeroed(g.block_size() as usize);
        record.encode(&mut block);
        let at = g.journal_offset() + pos as u64 * g.block_size() as u64;
        self.dev.write_at(&block, at).map_err(|e| Error::io(format!("writing lease record {}", record.serial), e))?;
        self.dev.sync().map_err(|e| Error::io(format!("syncing lease record {}", record.serial), e))
    }

    /// Reads the whole journal (one sequential read; at most 1024 blocks).
    pub(super) fn read_journal(&self) -> Result<Journal> {
        let g = self.sb.geometry;
        let b = g.block_size() as usize;
        let mut buf = usize::try_from(g.journal_bytes())
            .ok()
            .and_then(AlignedBuf::try_zeroed)
            .ok_or_else(|| Error::out_of_memory("reading the lease journal", g.journal_bytes()))?;
        if !buf.is_empty() {
            self.dev.read_at(&mut buf, g.journal_offset()).map_err(|e| Error::io("reading the lease journal", e))?;
        }
        let records = buf
            .chunks(b)
            .map(|block| LeaseRecord::decode(block).filter(|r| r.device_id == self.sb.device_id))
            .collect();
        Ok(Journal { records })
    }
}

/// Where background verification stands after a step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerifyProgress {
    /// Entries whose header this step read.
    pub checked: u64,
    /// Of those, found whole (now verified).
    pub verified: u64,
    /// Of those, found gone (deleted, replaced or evicted after the checkpoint): dropped.
    pub dropped: u64,
    /// Of those, whose read failed: still unverified.
    pub unreadable: u64,
    /// Entries still unverified after this step.
    pub remaining: u64,
}

/// What one background read found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Whole,
    Gone(Mismatch),
    Unreadable,
}

impl Store {
    /// Background verification: reads the headers of up to `max` entries a fast recovery
    /// indexed unread (through the engine, in one batch), marks those that match verified
    /// and drops those that do not, as their first get would. For idle time; `max` bounds
    /// the step's work. `max` 0 only reports what remains.
    pub fn verify_step(&self, max: usize) -> crate::error::Result<VerifyProgress> {
        let batch: Vec<(Box<[u8]>, Entry)> = self.ready()?.index.some_unverified(max);
        let slots: Vec<SlotIndex> = batch.iter().map(|(_, e)| e.slot).collect();
        let id = self.sb.device_id;
        let decode = |i: usize, slot: SlotIndex, r: ReadResult<'_>| -> Verdict {
            let (key, e) = &batch[i];
            match r {
                Err(_) => Verdict::Unreadable,
                Ok(block) => match SlotHeader::classify(block, &id, slot) {
                    SlotState::Valid(h)
                        if h.key == &key[..] && h.generation == e.generation && h.payload_len == e.payload_len && h.payload_crc == e.payload_crc =>
                    {
                        Verdict::Whole
                    }
                    SlotState::Empty => Verdict::Gone(Mismatch::HeaderGone),
                    _ => Verdict::Gone(Mismatch::Header("the slot header is not the entry's")),
                },
            }
        };
        let mut verdicts = vec![Verdict::Unreadable; slots.len()];
        self.read_slot_headers(&slots, &mut verdicts, &decode);
        let mut p = VerifyProgress { checked: slots.len() as u64, ..Default::default() };
        for ((key, e), v) in batch.iter().zip(verdicts) {
            match v {
                Verdict::Whole => {
                    let mut st = lock(&self.state);
                    st.index.set_verified(key, e);
                    p.verified += 1;
                }
                Verdict::Gone(why) => {
                    if matches!(self.mismatch_outcome(key, e, why), Some(Error::NotFound)) {
                        p.dropped += 1;
                    }
                }
                Verdict::Unreadable => p.unreadable += 1,
            }
        }
        p.remaining = lock(&self.state).index.unverified_count() as u64;
        Ok(p)
    }

    /// Lease records this handle wrote (each one write and one fdatasync).
    pub fn lease_records_written(&self) -> u64 {
        lock(&self.state).leases.records_written
    }

    /// Makes every write acknowledged before it durable (fdatasync): after it returns, those
    /// puts and deletes survive a power cut. (Without it they survive a process kill; with
    /// RB_OPEN_SYNC_WRITES each is durable when it returns.)
    pub fn sync(&self) -> crate::error::Result<()> {
        self.dev.sync().map_err(|e| Error::io("syncing the device", e))
    }
}
