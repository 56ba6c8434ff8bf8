//! Checkpoint containers: a header block (the commit record) and a binary
//! payload listing every indexed entry.

use super::lease::SlotRun;
use super::{Dec, DeviceId, Enc, Generation, SlotIndex, FORMAT_VERSION};

pub const MAGIC: [u8; 8] = *b"RBCHKPT\x01";
/// Encoded length of the header; the rest of its block is zero.
pub const HEADER_ENCODED_BYTES: usize = 64;
/// Bytes of one payload entry besides its key: key_len u16, slot u64,
/// generation u64, payload_len u64, payload_crc u32.
pub const ENTRY_FIXED_BYTES: u64 = 30;
/// Header flag: the payload ends with the slots leased but not yet installed when the
/// snapshot was taken (runs of start u64 + length u32, then their count u32). Recovery
/// reads them as it reads the lease journal's.
pub const FLAG_CARRIED_LEASES: u32 = 1;
/// Bytes of one carried run.
pub const CARRIED_RUN_BYTES: u64 = 12;
/// Header flag: a delta checkpoint. Its payload starts with the sequence of the full
/// checkpoint it applies to (u64, in the other container), then the keys removed since that
/// base (count u64, then key_len u16 + key each); its entries are the keys put since.
pub const FLAG_DELTA: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointHeader {
    pub device_id: DeviceId,
    pub sequence: u64,
    pub payload_len: u64,
    pub entry_count: u64,
    pub payload_crc: u32,
    /// [`FLAG_CARRIED_LEASES`] or 0.
    pub flags: u32,
}

impl CheckpointHeader {
    pub fn encode(&self, block: &mut [u8]) {
        block.fill(0);
        Enc::new(block)
            .bytes(&MAGIC)
            .u32(FORMAT_VERSION)
            .u32(self.flags)
            .bytes(&self.device_id)
            .u64(self.sequence)
            .u64(self.payload_len)
            .u64(self.entry_count)
            .u32(self.payload_crc)
            .crc_of_written();
    }

    /// `None` unless the block holds a well-formed header of this format version.
    pub fn decode(block: &[u8]) -> Option<CheckpointHeader> {
        let mut d = Dec::new(block);
        if d.array::<8>()? != MAGIC {
            return None;
        }
        let version = d.u32()?;
        let flags = d.u32()?;
        let device_id = d.array::<16>()?;
        let sequence = d.u64()?;
        let payload_len = d.u64()?;
        let entry_count = d.u64()?;
        let payload_crc = d.u32()?;
        if !d.crc_matches_prefix()? || version != FORMAT_VERSION || flags & !(FLAG_CARRIED_LEASES | FLAG_DELTA) != 0 {
            return None;
        }
        Some(CheckpointHeader { device_id, sequence, payload_len, entry_count, payload_crc, flags })
    }
}

/// One indexed entry as a checkpoint records it; the key borrows from the
/// payload buffer (decoding allocates nothing per entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointEntry<'a> {
    pub key: &'a [u8],
    pub slot: SlotIndex,
    pub generation: Generation,
    pub payload_len: u64,
    pub payload_crc: u32,
}

impl CheckpointEntry<'_> {
    pub fn encoded_len(&self) -> u64 {
        ENTRY_FIXED_BYTES + self.key.len() as u64
    }
}

/// Encodes `entries` into the start of `out`, returning the bytes written.
/// `out` must hold the sum of their `encoded_len`; keys are at most u16::MAX bytes.
pub fn encode_payload<'a>(entries: impl IntoIterator<Item = CheckpointEntry<'a>>, out: &mut [u8]) -> usize {
    let mut e = Enc::new(out);
    for entry in entries {
        e.u16(u16::try_from(entry.key.len()).expect("key length checked at put"))
            .bytes(entry.key)
            .u64(entry.slot.0)
            .u64(entry.generation.0)
            .u64(entry.payload_len)
            .u32(entry.payload_crc);
    }
    e.pos()
}

/// Appends the carried runs and their count after the entries at `out[0..]`; returns the bytes.
pub fn encode_carried(runs: &[SlotRun], out: &mut [u8]) -> usize {
    let mut e = Enc::new(out);
    for r in runs {
        e.u64(r.start.0).u32(r.len);
    }
    e.u32(runs.len() as u32);
    e.pos()
}

/// Bytes the carried section of `runs` takes.
pub fn carried_len(runs: usize) -> u64 {
    runs as u64 * CARRIED_RUN_BYTES + 4
}

/// Splits a payload into its entries' bytes and, with [`FLAG_CARRIED_LEASES`], the carried runs.
pub fn split_payload(payload: &[u8], flags: u32) -> Result<(&[u8], Vec<SlotRun>), String> {
    if flags & FLAG_CARRIED_LEASES == 0 {
        return Ok((payload, Vec::new()));
    }
    let Some(count_at) = payload.len().checked_sub(4) else {
        return Err("the payload has no room for its carried leases".into());
    };
    let count = u32::from_le_bytes(payload[count_at..].try_into().expect("4 bytes")) as u64;
    let section = count * CARRIED_RUN_BYTES;
    let Some(entries_len) = (count_at as u64).checked_sub(section) else {
        return Err(format!("{count} carried lease runs do not fit in {} payload bytes", payload.len()));
    };
    let mut d = Dec::new(&payload[entries_len as usize..count_at]);
    let mut runs = Vec::with_capacity(count as usize);
    for _ in 0..count {
        runs.push(SlotRun { start: SlotIndex(d.u64().ok_or("short run")?), len: d.u32().ok_or("short run")? });
    }
    Ok((&payload[..entries_len as usize], runs))
}

/// A checkpoint payload taken apart by its header's flags.
#[derive(Debug, PartialEq, Eq)]
pub struct PayloadParts<'a> {
    /// A delta's base: the sequence of the full checkpoint it applies to.
    pub base: Option<u64>,
    /// A delta's removed keys.
    pub removed: Vec<&'a [u8]>,
    /// The entries, to decode with [`decode_payload`].
    pub entries: &'a [u8],
    pub carried: Vec<SlotRun>,
}

/// Bytes a delta's prefix takes for these removed keys.
pub fn delta_prefix_len<'a>(removed: impl Iterator<Item = &'a [u8]>) -> u64 {
    16 + removed.map(|k| 2 + k.len() as u64).sum::<u64>()
}

/// Writes a delta's prefix (its base and removed keys) at the start of `out`; returns the bytes.
pub fn encode_delta_prefix<'a>(base: u64, removed: impl ExactSizeIterator<Item = &'a [u8]>, out: &mut [u8]) -> usize {
    let mut e = Enc::new(out);
    e.u64(base).u64(removed.len() as u64);
    for k in removed {
        e.u16(u16::try_from(k.len()).expect("key length checked at put")).bytes(k);
    }
    e.pos()
}

/// Splits a payload by `flags` into its parts (a full checkpoint has no base and no removed keys).
pub fn payload_parts(payload: &[u8], flags: u32) -> Result<PayloadParts<'_>, String> {
    let (rest, carried) = split_payload(payload, flags)?;
    if flags & FLAG_DELTA == 0 {
        return Ok(PayloadParts { base: None, removed: Vec::new(), entries: rest, carried });
    }
    let mut d = Dec::new(rest);
    let short = || "the delta's prefix runs past its payload".to_string();
    let base = d.u64().ok_or_else(short)?;
    let count = d.u64().ok_or_else(short)?;
    if count > rest.len() as u64 / 2 {
        return Err(format!("{count} removed keys cannot fit in {} bytes", rest.len()));
    }
    let mut removed = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = d.u16().ok_or_else(short)? as usize;
        removed.push(d.bytes(len).ok_or_else(short)?);
    }
    let used = rest.len() - d.remaining();
    Ok(PayloadParts { base: Some(base), removed, entries: &rest[used..], carried })
}

/// Decodes exactly `count` entries filling all of `payload`.
pub fn decode_payload(payload: &[u8], count: u64) -> Result<Vec<CheckpointEntry<'_>>, String> {
    check_payload(payload, count)?;
    Ok(PayloadEntries::new(payload).collect())
}

/// Whether `payload` holds exactly `count` well-formed entries, without keeping them.
pub fn check_payload(payload: &[u8], count: u64) -> Result<(), String> {
    check_payload_marking(payload, count, u64::MAX).map(drop)
}

/// [`check_payload`], also returning where every `every`-th entry starts (entry 0 at 0):
/// the payload cut there is pieces of whole entries, for several threads to go over.
pub fn check_payload_marking(payload: &[u8], count: u64, every: u64) -> Result<Vec<usize>, String> {
    // Every entry takes at least ENTRY_FIXED_BYTES, which bounds an absurd count.
    if count > payload.len() as u64 / ENTRY_FIXED_BYTES {
        return Err(format!("{count} entries cannot fit in {} payload bytes", payload.len()));
    }
    let mut marks = Vec::new();
    let mut entries = PayloadEntries::new(payload);
    for i in 0..count {
        if i % every == 0 {
            marks.push(payload.len() - entries.d.remaining());
        }
        entries.next().ok_or_else(|| format!("entry {i} runs past the end of the payload"))?;
    }
    match entries.d.remaining() {
        0 => Ok(marks),
        n => Err(format!("{n} bytes follow the last entry")),
    }
}

/// The entries of a payload in order, decoded as they are taken: a payload that
/// [`check_payload`] passed can be gone over any number of times without copies. Ends at
/// the end of the bytes, or at an entry that runs past it.
#[derive(Clone)]
pub struct PayloadEntries<'a> {
    d: Dec<'a>,
}

impl<'a> PayloadEntries<'a> {
    pub fn new(payload: &'a [u8]) -> PayloadEntries<'a> {
        PayloadEntries { d: Dec::new(payload) }
    }
}

impl<'a> Iterator for PayloadEntries<'a> {
    type Item = CheckpointEntry<'a>;

    fn next(&mut self) -> Option<CheckpointEntry<'a>> {
        let key_len = self.d.u16()? as usize;
        Some(CheckpointEntry {
            key: self.d.bytes(key_len)?,
            slot: SlotIndex(self.d.u64()?),
            generation: Generation(self.d.u64()?),
            payload_len: self.d.u64()?,
            payload_crc: self.d.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(keys: &[Vec<u8>]) -> Vec<CheckpointEntry<'_>> {
        keys.iter()
            .enumerate()
            .map(|(i, k)| CheckpointEntry {
                key: k,
                slot: SlotIndex(i as u64 * 3),
                generation: Generation(1000 + i as u64),
                payload_len: 4096 * i as u64 + 1,
                payload_crc: i as u32 ^ 0xA5A5,
            })
            .collect()
    }

    #[test]
    fn header_round_trip_and_bit_flips() {
        let h = CheckpointHeader {
            device_id: *b"abcdefghijklmnop",
            sequence: 9,
            payload_len: 123,
            entry_count: 4,
            payload_crc: 77,
            flags: FLAG_CARRIED_LEASES,
        };
        let mut block = vec![0u8; 4096];
        h.encode(&mut block);
        assert_eq!(CheckpointHeader::decode(&block), Some(h));
        for byte in 0..HEADER_ENCODED_BYTES {
            let mut b = block.clone();
            b[byte] ^= 0x80;
            assert_eq!(CheckpointHeader::decode(&b), None, "flip at {byte}");
        }
        assert_eq!(CheckpointHeader::decode(&[0u8; 4096]), None);
    }

    #[test]
    fn payload_round_trip() {
        let keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("key-{i}").repeat(i % 7 + 1).into_bytes()).collect();
        let es = entries(&keys);
        let len: u64 = es.iter().map(|e| e.encoded_len()).sum();
        let mut buf = vec![0u8; len as usize];
        assert_eq!(encode_payload(es.iter().copied(), &mut buf), len as usize);
        assert_eq!(decode_payload(&buf, es.len() as u64).unwrap(), es);
    }

    /// Cut at its marks, a payload is pieces of whole entries that together are all of them.
    #[test]
    fn marks_cut_the_payload_into_whole_entries() {
        let keys: Vec<Vec<u8>> = (0..10).map(|i| format!("key-{i}").repeat(i % 3 + 1).into_bytes()).collect();
        let es = entries(&keys);
        let mut buf = vec![0u8; es.iter().map(|e| e.encoded_len()).sum::<u64>() as usize];
        encode_payload(es.iter().copied(), &mut buf);
        let marks = check_payload_marking(&buf, 10, 3).unwrap();
        assert_eq!(marks.len(), 4, "entries 0, 3, 6 and 9");
        let ends = marks.iter().skip(1).copied().chain([buf.len()]);
        let pieces: Vec<Vec<CheckpointEntry<'_>>> = marks.iter().zip(ends).map(|(&a, b)| PayloadEntries::new(&buf[a..b]).collect()).collect();
        assert_eq!(pieces.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 3, 1]);
        assert_eq!(pieces.concat(), es);
        assert_eq!(check_payload_marking(&buf, 10, u64::MAX).unwrap(), [0]);
        assert!(check_payload_marking(&buf[..buf.len() - 1], 10, 3).is_err());
    }

    #[test]
    fn payload_rejects_truncation_and_trailing_bytes() {
        let keys = vec![b"a".to_vec(), b"bb".to_vec()];
        let es = entries(&keys);
        let mut buf = vec![0u8; es.iter().map(|e| e.encoded_len()).sum::<u64>() as usize];
        encode_payload(es.iter().copied(), &mut buf);
        assert!(decode_payload(&buf[..buf.len() - 1], 2).is_err());
        let mut longer = buf.clone();
        longer.push(0);
        assert!(decode_payload(&longer, 2).is_err());
        assert!(decode_payload(&buf, 3).is_err());
        assert!(decode_payload(&buf, u64::MAX).is_err());
    }

    #[test]
    fn carried_leases_follow_the_entries() {
        let keys = vec![b"a".to_vec(), b"bb".to_vec()];
        let es = entries(&keys);
        let runs = crate::format::lease::runs_of(&[3, 4, 9].map(SlotIndex));
        let len: u64 = es.iter().map(|e| e.encoded_len()).sum::<u64>() + carried_len(runs.len());
        let mut buf = vec![0u8; len as usize];
        let n = encode_payload(es.iter().copied(), &mut buf);
        assert_eq!((n + encode_carried(&runs, &mut buf[n..])) as u64, len);
        let (entry_bytes, got) = split_payload(&buf, FLAG_CARRIED_LEASES).unwrap();
        assert_eq!(got, runs);
        assert_eq!(decode_payload(entry_bytes, 2).unwrap(), es);
        assert_eq!(split_payload(&buf, 0).unwrap().0.len(), buf.len(), "without the flag it is all entries");
        assert!(split_payload(&[1, 0, 0, 0], FLAG_CARRIED_LEASES).is_err(), "one run claimed, no bytes for it");
        assert!(split_payload(&[], FLAG_CARRIED_LEASES).is_err());
    }

    #[test]
    fn a_delta_names_its_base_and_removed_keys() {
        let keys = vec![b"put".to_vec()];
        let es = entries(&keys);
        let removed: Vec<&[u8]> = vec![b"gone", b"also-gone"];
        let runs = crate::format::lease::runs_of(&[SlotIndex(7)]);
        let len = delta_prefix_len(removed.iter().copied()) + es[0].encoded_len() + carried_len(runs.len());
        let mut buf = vec![0u8; len as usize];
        let mut n = encode_delta_prefix(41, removed.iter().copied(), &mut buf);
        n += encode_payload(es.iter().copied(), &mut buf[n..]);
        n += encode_carried(&runs, &mut buf[n..]);
        assert_eq!(n as u64, len);
        let parts = payload_parts(&buf, FLAG_CARRIED_LEASES | FLAG_DELTA).unwrap();
        assert_eq!((parts.base, parts.removed.clone(), parts.carried.clone()), (Some(41), removed, runs));
        assert_eq!(decode_payload(parts.entries, 1).unwrap(), es);
        let full = payload_parts(&buf, FLAG_CARRIED_LEASES).unwrap();
        assert_eq!((full.base, full.removed.len()), (None, 0), "without the flag the prefix is not read");
        assert!(payload_parts(&buf[..10], FLAG_DELTA).is_err());
        let mut absurd = buf.clone();
        absurd[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(payload_parts(&absurd, FLAG_CARRIED_LEASES | FLAG_DELTA).is_err());
    }
}
