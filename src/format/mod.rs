//! The bytes on the device. Pure encoders and decoders: no I/O here.
//!
//! Layout (docs/FORMAT.md has the full tables):
//! `[superblock][copy][checkpoint container A][checkpoint container B][lease journal][slot 0][slot 1]...`
//! All integers are little-endian.

pub mod checkpoint;
pub mod geometry;
pub mod lease;
pub mod slot_header;
pub mod superblock;

pub use checkpoint::{CheckpointEntry, CheckpointHeader};
pub use geometry::{Container, Geometry, GeometryRequest};
pub use slot_header::{Decoded, SlotHeader, SlotState};
pub use superblock::Superblock;

/// Format version written in the superblock, checkpoint and slot headers.
pub const FORMAT_VERSION: u32 = 1;

/// A 128-bit identity drawn when a device is formatted; every checkpoint and
/// slot header carries it so that leftovers of an earlier format are detected.
pub type DeviceId = [u8; 16];

/// The position of a slot on the device, `0..slot_count`. Not a byte offset
/// ([`Geometry::slot_offset`] makes one) and not a [`Generation`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SlotIndex(pub u64);

impl std::fmt::Display for SlotIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The version of a stored value: every put of a device writes a generation
/// above every earlier one, so the newest copy of a key is the one with the
/// highest generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u64);

pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

pub fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// Little-endian writer over a byte slice. Callers size the slice first;
/// writing past its end is a bug and panics.
pub(crate) struct Enc<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Enc<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Enc { buf, pos: 0 }
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn pos(&self) -> usize {
        self.pos
    }
    /// Appends the CRC32 of everything written so far.
    pub fn crc_of_written(&mut self) -> &mut Self {
        let c = crc32(&self.buf[..self.pos]);
        self.u32(c)
    }
}

/// Little-endian reader over a byte slice; every read is bounds-checked and
/// a short input reads as `None`.
#[derive(Clone)]
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Dec { buf, pos: 0 }
    }
    pub fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N).map(|s| s.try_into().expect("length checked"))
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_le_bytes)
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Reads a CRC32 and checks it against everything before it.
    pub fn crc_matches_prefix(&mut self) -> Option<bool> {
        let end = self.pos;
        let stored = self.u32()?;
        Some(stored == crc32(&self.buf[..end]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_dec_round_trip() {
        let mut b = [0u8; 32];
        Enc::new(&mut b).u16(0xBEEF).u32(7).u64(u64::MAX).crc_of_written();
        let mut d = Dec::new(&b);
        assert_eq!(d.u16(), Some(0xBEEF));
        assert_eq!(d.u32(), Some(7));
        assert_eq!(d.u64(), Some(u64::MAX));
        assert_eq!(d.crc_matches_prefix(), Some(true));
        assert_eq!(d.remaining(), 32 - 18);
        b[3] ^= 1;
        let mut d = Dec::new(&b);
        d.bytes(14).unwrap();
        assert_eq!(d.crc_matches_prefix(), Some(false));
    }

    #[test]
    fn dec_short_input_is_none() {
        let b = [1u8, 2, 3];
        let mut d = Dec::new(&b);
        assert_eq!(d.u32(), None);
        assert_eq!(d.u16(), Some(0x0201));
        assert_eq!(d.bytes(2), None);
        assert_eq!(d.remaining(), 1);
    }

    #[test]
    fn round_up_works() {
        assert_eq!(round_up(0, 4096), 0);
        assert_eq!(round_up(1, 4096), 4096);
        assert_eq!(round_up(4096, 4096), 4096);
        assert_eq!(round_up(4097, 4096), 8192);
    }
}
