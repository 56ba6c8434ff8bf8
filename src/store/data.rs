//! The data path: put, get, delete, and the record buffers they reuse
//! (`metrics.rs` wraps each in its counters).

use std::sync::Mutex;

use super::index::{Displaced, Entry};
use super::Store;
use crate::aligned::AlignedBuf;
use crate::error::{Error, Oversized, Result};
use crate::format::{crc32, Generation, SlotHeader, SlotIndex, SlotState};
use crate::sync::lock;

/// Aligned buffers of the largest record (header + max payload), reused so the data
/// path does not allocate (and fault in) a fresh record per call.
pub(super) struct RecordPool {
    record_bytes: usize,
    kept: Mutex<Vec<AlignedBuf>>,
}

/// Most record buffers kept for reuse; more concurrent calls allocate and free their own.
const KEPT_RECORD_BUFS: usize = 16;

impl RecordPool {
    pub fn new(record_bytes: usize) -> RecordPool {
        RecordPool { record_bytes, kept: Mutex::new(Vec::new()) }
    }

    /// A record buffer; one the host cannot allocate is [`Error::OutOfMemory`].
    fn take(&self) -> Result<AlignedBuf> {
        match lock(&self.kept).pop() {
            Some(buf) => Ok(buf),
            None => AlignedBuf::try_zeroed(self.record_bytes)
                .ok_or_else(|| Error::out_of_memory("a record buffer", self.record_bytes)),
        }
    }

    fn give_back(&self, buf: AlignedBuf) {
        let mut kept = lock(&self.kept);
        if kept.len() < KEPT_RECORD_BUFS {
            kept.push(buf);
        }
    }
}

/// Why a record read back does not hold the value its entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mismatch {
    /// No header: zeroed by a delete, a replace or an eviction, or never written.
    HeaderGone,
    /// A header that is not the entry's: torn, foreign, or another value's.
    Header(&'static str),
    /// The entry's header over a payload that fails its CRC32.
    Payload,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mismatch::HeaderGone => "the slot header is gone",
            Mismatch::Header(why) => why,
            Mismatch::Payload => "the payload fails its CRC32",
        })
    }
}

impl Store {
    /// Stores `value` under `key` in a newly allocated slot; a previous value of the key is
    /// invalidated on the device before this returns.
    pub(super) fn put_unmetered(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let g = self.sb.geometry;
        if value.len() as u64 > g.max_payload() {
            return Err(Error::TooLarge { what: Oversized::Value, len: value.len() as u64, max: g.max_payload() });
        }
        drop(self.writable()?);
        let slot = self.allocate_slot()?;
        let generation = lock(&self.state).next_generation();
        let payload_len = value.len() as u64;
        let payload_crc = crc32(value);
        let mut buf = match self.records.take() {
            Ok(buf) => buf,
            Err(e) => {
                let mut st = lock(&self.state);
                st.leases.settle(slot);
                st.index.release(slot);
                return Err(e);
            }
        };
        let rec = &mut buf[..g.record_bytes(payload_len) as usize];
        let hb = g.header_bytes() as usize;
        SlotHeader { device_id: self.sb.device_id, slot, generation, payload_len, payload_crc, key }.encode(&mut rec[..hb]);
        rec[hb..hb + value.len()].copy_from_slice(value);
        rec[hb + value.len()..].fill(0); // the padding: no bytes of an earlier value reach the device
        let written = self.dev.write_at(rec, g.slot_offset(slot));
        self.records.give_back(buf);
        if let Err(e) = written {
            self.discard_failed_record(slot, generation);
            return Err(Error::io(format!("writing slot {slot}"), e));
        }
        let installed = lock(&self.state).install(key, Entry { slot, generation, payload_len, payload_crc });
        let displaced = match installed {
            Ok(displaced) => displaced,
            Err(e) => {
                self.discard_failed_record(slot, generation);
                return Err(e);
            }
        };
        match displaced {
            Displaced::Nothing => Ok(()),
            Displaced::Replaced(old) | Displaced::Superseded(old) => self.invalidate_or_queue(old.slot),
        }
    }

    /// Undoes a record write that failed part-way: it may have left a valid header over a
    /// torn payload, newer than the key's acknowledged value. The header is zeroed before the
    /// slot is reused. If that fails too and the header did land (read back), the slot stays
    /// allocated and queued, so every later write retries first and nothing acknowledged
    /// afterwards can be undone by it (a scan meanwhile prefers the older copy that
    /// verifies). A header that never landed (say ENOSPC before the first block) needs no
    /// zeroing, which could fail the same way and would block every later write.
    pub(super) fn discard_failed_record(&self, slot: SlotIndex, generation: Generation) {
        lock(&self.state).leases.settle(slot);
        if self.invalidate(slot).is_ok() {
            return;
        }
        let hb = self.sb.geometry.header_bytes() as usize;
        let mut block = AlignedBuf::zeroed(hb);
        let landed = match self.dev.read_at(&mut block, self.sb.geometry.slot_offset(slot)) {
            Ok(()) => matches!(SlotHeader::classify(&block, &self.sb.device_id, slot), SlotState::Valid(h) if h.generation == generation),
            Err(_) => true, // unknown: assume it did
        };
        let mut st = lock(&self.state);
        if landed {
            st.pending_invalidation.push(slot);
        } else {
            st.index.release(slot);
        }
    }

    /// Whether `e`'s slot still holds its header (read back after a failed write).
    pub(super) fn header_matches(&self, key: &[u8], e: &Entry) -> std::io::Result<bool> {
        let mut block = AlignedBuf::zeroed(self.sb.geometry.header_bytes() as usize);
        self.dev.read_at(&mut block, self.sb.geometry.slot_offset(e.slot))?;
        Ok(matches!(SlotHeader::classify(&block, &self.sb.device_id, e.slot),
            SlotState::Valid(h) if h.key == key && h.generation == e.generation && h.payload_len == e.payload_len && h.payload_crc == e.payload_crc))
    }

    /// [`invalidate`](Self::invalidate), and when that fails, queues the slot so that every
    /// later write retries first: until its header is zeroed, an older checkpoint or a scan
    /// could still take it, and nothing may be acknowledged that it could undo.
    fn invalidate_or_queue(&self, slot: SlotIndex) -> Result<()> {
        self.invalidate(slot).inspect_err(|_| lock(&self.state).pending_invalidation.push(slot))
    }

    /// Overwrites a slot's header with zeros, then frees the slot. If the write fails the
    /// slot stays allocated (never reused), its header still on the device.
    pub(super) fn invalidate(&self, slot: SlotIndex) -> Result<()> {
        let zeros = AlignedBuf::zeroed(self.sb.geometry.block_size() as usize);
        self.dev
            .write_at(&zeros, self.sb.geometry.slot_offset(slot))
            .map_err(|e| Error::io(format!("invalidating the old header of slot {slot}"), e))?;
        lock(&self.state).index.release(slot);
        Ok(())
    }

    /// Copies the value of `key` into `out` and returns its length. The header and payload
    /// are verified first: a mismatch is [`Error::Corrupt`], never wrong bytes.
    pub(super) fn get_unmetered(&self, key: &[u8], out: &mut [u8]) -> Result<usize> {
        self.check_key(key)?;
        // A concurrent replace or delete can reuse the slot between lookup and read;
        // that shows as a changed index entry, and the lookup is retried.
        for _ in 0..64 {
            let (e, unverified) = {
                let mut st = self.ready()?;
                st.index.lookup(key).ok_or(Error::NotFound)?
            };
            if (out.len() as u64) < e.payload_len {
                return Err(Error::BufferTooSmall { needed: e.payload_len });
            }
            if let Some(n) = self.read_entry(key, &e, out)? {
                if unverified {
                    lock(&self.state).index.set_verified(key, &e);
                }
                return Ok(n);
            }
        }
        Err(Error::Busy("the key kept changing under concurrent writes".into()))
    }

    /// Reads the record `e` names into `out`; `None` when the entry changed meanwhile.
    /// An aligned `out` with room for the padded payload takes it straight from the device
    /// (the header lands in a small buffer); otherwise the record goes through a bounce buffer.
    fn read_entry(&self, key: &[u8], e: &Entry, out: &mut [u8]) -> Result<Option<usize>> {
        let g = self.sb.geometry;
        let hb = g.header_bytes() as usize;
        let padded = self.padded_len(e.payload_len) as usize;
        let direct = out.as_ptr() as usize % crate::aligned::IO_ALIGN == 0 && out.len() >= padded && padded > 0;
        let mut buf = self.records.take()?;
        let (read, verdict) = if direct {
            let (header, _) = buf.split_at_mut(hb);
            let read = self.dev.read_two_at(header, &mut out[..padded], g.slot_offset(e.slot));
            let verdict = read.is_ok().then(|| self.check_record(&buf[..hb], &out[..e.payload_len as usize], key, e));
            (read, verdict)
        } else {
            let rec = &mut buf[..g.record_bytes(e.payload_len) as usize];
            let read = self.dev.read_at(rec, g.slot_offset(e.slot));
            let verdict = read.is_ok().then(|| match self.verify(rec, key, e) {
                Ok(payload) => {
                    out[..payload.len()].copy_from_slice(payload);
                    Ok(())
                }
                Err(why) => Err(why),
            });
            (read, verdict)
        };
        self.records.give_back(buf);
        match (read, verdict) {
            (Err(err), _) => Err(Error::io(format!("reading slot {}", e.slot), err)),
            (Ok(()), Some(Ok(()))) => Ok(Some(e.payload_len as usize)),
            (Ok(()), Some(Err(why))) => self.mismatch_outcome(key, e, why).map_or(Ok(None), Err),
            (Ok(()), None) => Ok(None),
        }
    }

    /// What a get answers when the record read for `e` does not hold it; `None` when the
    /// key's entry changed meanwhile (the caller looks it up again).
    ///
    /// An entry a fast recovery trusted without a read whose header turns out not to be
    /// its own was deleted, replaced or evicted after the checkpoint: it is gone, answers
    /// not found and leaves the index (its slot is freed, or zeroed first when it holds
    /// anything). Anything else is corruption.
    pub(super) fn mismatch_outcome(&self, key: &[u8], e: &Entry, why: Mismatch) -> Option<Error> {
        let mut st = self.ready().ok()?;
        if st.index.get(key) != Some(*e) {
            return None;
        }
        if why == Mismatch::Payload || !st.index.is_unverified(key) {
            return Some(Error::Corrupt(format!("slot {} of key: {why}", e.slot)));
        }
        st.index.remove(key);
        if !self.is_read_only() {
            match why {
                Mismatch::HeaderGone => st.index.release(e.slot),
                _ => st.pending_invalidation.push(e.slot),
            }
        }
        Some(Error::NotFound)
    }

    /// Whether the record `e` names is on the device whole: its header matches `e` and its
    /// payload verifies. Recovery asks this of duplicate keys before choosing one.
    pub(super) fn record_verifies(&self, key: &[u8], e: &Entry) -> std::io::Result<bool> {
        let g = self.sb.geometry;
        let mut buf = self.records.take().map_err(std::io::Error::other)?;
        let rec = &mut buf[..g.record_bytes(e.payload_len) as usize];
        let verdict = self.dev.read_at(rec, g.slot_offset(e.slot)).map(|()| self.verify(rec, key, e).is_ok());
        self.records.give_back(buf);
        verdict
    }

    /// The payload of `rec` when its header and payload CRC match `e`.
    fn verify<'a>(&self, rec: &'a [u8], key: &[u8], e: &Entry) -> std::result::Result<&'a [u8], Mismatch> {
        let hb = self.sb.geometry.header_bytes() as usize;
        let payload = &rec[hb..hb + e.payload_len as usize];
        self.check_record(&rec[..hb], payload, key, e).map(|()| payload)
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool> {
        self.check_key(key)?;
        Ok(self.ready()?.index.get(key).is_some())
    }

    /// Length of the value of `key`.
    pub fn value_len(&self, key: &[u8]) -> Result<u64> {
        self.check_key(key)?;
        self.ready()?.index.get(key).map(|e| e.payload_len).ok_or(Error::NotFound)
    }

    /// Test support: reports every later write and sync of this handle to `log`.
    #[cfg(test)]
    pub(crate) fn set_write_log(&mut self, log: std::sync::Arc<dyn crate::device::WriteLog>) {
        self.dev.set_write_log(log)
    }

    /// Removes `key`; its header is invalidated on the device before this returns.
    pub(super) fn delete_unmetered(&self, key: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let e = {
            let mut st = self.writable()?;
            let e = st.index.remove(key).ok_or(Error::NotFound)?;
            st.changes += 1;
            e
        };
        self.invalidate_or_queue(e.slot)
    }
}
