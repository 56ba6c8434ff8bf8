//! The lease journal: a ring of one-block records, each naming slots that may be
//! written from then on. Recovery reads only these slots' headers (plus the
//! checkpoint's own list); every other slot is as the checkpoint left it, or
//! zeroed by a delete (which a first read detects).
//!
//! A record is valid when its magic, CRC and device id match. Its `epoch` is
//! the sequence of the checkpoint whose snapshot came before it: recovery from
//! checkpoint `S` takes every record with `epoch >= S`; older records are
//! obsolete and their blocks may be overwritten.

use super::{Dec, DeviceId, Enc, SlotIndex, FORMAT_VERSION};

pub const MAGIC: [u8; 8] = *b"RBLEASE\x01";
/// magic, version, run count, device id, epoch, serial.
const FIXED_BYTES: usize = 8 + 4 + 4 + 16 + 8 + 8;
/// One run: first slot (u64), length (u32).
const RUN_BYTES: usize = 12;

/// A run of consecutive leased slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotRun {
    pub start: SlotIndex,
    pub len: u32,
}

impl SlotRun {
    pub fn slots(&self) -> impl Iterator<Item = SlotIndex> {
        let s = self.start.0;
        (s..s + self.len as u64).map(SlotIndex)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    pub device_id: DeviceId,
    /// The sequence of the checkpoint whose snapshot preceded this lease (0: none yet).
    pub epoch: u64,
    /// Increases with every record a device writes; orders records in the ring.
    pub serial: u64,
    pub runs: Vec<SlotRun>,
}

/// Runs a record of `block_size` bytes holds.
pub fn runs_per_record(block_size: u32) -> usize {
    (block_size as usize - FIXED_BYTES - 4) / RUN_BYTES
}

/// Coalesces sorted, distinct slots into runs.
pub fn runs_of(sorted: &[SlotIndex]) -> Vec<SlotRun> {
    let mut runs: Vec<SlotRun> = Vec::new();
    for &s in sorted {
        match runs.last_mut() {
            Some(r) if r.start.0 + r.len as u64 == s.0 && r.len < u32::MAX => r.len += 1,
            _ => runs.push(SlotRun { start: s, len: 1 }),
        }
    }
    runs
}

impl LeaseRecord {
    /// A record with no runs marks an overflowed journal: slots were written in its epoch
    /// without a lease, and recovery must scan.
    pub fn is_overflow(&self) -> bool {
        self.runs.is_empty()
    }

    /// Encodes into `block` (one block; at most [`runs_per_record`] runs) and zeroes the rest.
    pub fn encode(&self, block: &mut [u8]) {
        assert!(self.runs.len() <= runs_per_record(block.len() as u32), "lease record overflows its block");
        block.fill(0);
        let mut e = Enc::new(block);
        e.bytes(&MAGIC)
            .u32(FORMAT_VERSION)
            .u32(self.runs.len() as u32)
            .bytes(&self.device_id)
            .u64(self.epoch)
            .u64(self.serial);
        for r in &self.runs {
            e.u64(r.start.0).u32(r.len);
        }
        e.crc_of_written();
    }

    /// `None` unless `block` holds a well-formed record (any device: the caller checks the id).
    pub fn decode(block: &[u8]) -> Option<LeaseRecord> {
        let mut d = Dec::new(block);
        if d.array::<8>()? != MAGIC || d.u32()? != FORMAT_VERSION {
            return None;
        }
        let count = d.u32()? as usize;
        if count > runs_per_record(block.len() as u32) {
            return None;
        }
        let device_id = d.array::<16>()?;
        let epoch = d.u64()?;
        let serial = d.u64()?;
        let mut runs = Vec::with_capacity(count);
        for _ in 0..count {
            runs.push(SlotRun { start: SlotIndex(d.u64()?), len: d.u32()? });
        }
        if !d.crc_matches_prefix()? {
            return None;
        }
        Some(LeaseRecord { device_id, epoch, serial, runs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LeaseRecord {
        LeaseRecord {
            device_id: *b"0123456789abcdef",
            epoch: 7,
            serial: 42,
            runs: runs_of(&[1, 2, 3, 9, 10, 400].map(SlotIndex)),
        }
    }

    #[test]
    fn runs_coalesce() {
        let r = sample().runs;
        assert_eq!(r.len(), 3);
        assert_eq!(r[0], SlotRun { start: SlotIndex(1), len: 3 });
        assert_eq!(r[2].slots().collect::<Vec<_>>(), vec![SlotIndex(400)]);
    }

    #[test]
    fn round_trip_and_every_flipped_byte() {
        let rec = sample();
        let mut block = vec![0xAAu8; 4096];
        rec.encode(&mut block);
        assert_eq!(LeaseRecord::decode(&block), Some(rec.clone()));
        let used = FIXED_BYTES + 3 * RUN_BYTES + 4;
        for byte in 0..used {
            let mut b = block.clone();
            b[byte] ^= 0x04;
            assert_eq!(LeaseRecord::decode(&b), None, "flip at {byte}");
        }
        assert_eq!(LeaseRecord::decode(&[0u8; 4096]), None);
    }

    #[test]
    fn a_full_record_fits_its_block() {
        let n = runs_per_record(4096);
        assert!(n >= 300, "{n} runs per 4 KiB record");
        let slots: Vec<SlotIndex> = (0..n as u64).map(|i| SlotIndex(i * 2)).collect();
        let rec = LeaseRecord { device_id: [1; 16], epoch: 1, serial: 1, runs: runs_of(&slots) };
        let mut block = vec![0u8; 4096];
        rec.encode(&mut block);
        assert_eq!(LeaseRecord::decode(&block).unwrap().runs.len(), n);
    }

    #[test]
    fn a_record_torn_at_a_sector_is_not_a_record() {
        let many = |serial| {
            let slots: Vec<SlotIndex> = (0..100u64).map(|i| SlotIndex(i * 3 + serial)).collect();
            let mut block = vec![0u8; 4096];
            LeaseRecord { device_id: [1; 16], epoch: 1, serial, runs: runs_of(&slots) }.encode(&mut block);
            block
        };
        let (old, new) = (many(1), many(2));
        let mut torn = old.clone();
        torn[..512].copy_from_slice(&new[..512]);
        assert_eq!(LeaseRecord::decode(&torn), None, "the new record's first sector over the old one's rest");
        assert_eq!(LeaseRecord::decode(&new).map(|r| r.serial), Some(2));
    }
}
