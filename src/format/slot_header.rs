//! The header block at the start of every slot.
//!
//! A header names its device, its own slot index and a generation, so that a
//! header left by an earlier format, a misdirected write or a replaced value
//! is told apart from the one a checkpoint entry expects.

use super::{Dec, DeviceId, Enc, Generation, SlotIndex, FORMAT_VERSION};

pub const MAGIC: [u8; 8] = *b"RBSLOT\0\x01";
/// Bytes before the key.
pub const FIXED_BYTES: usize = 64;
/// The CRC32 after the key.
pub const CRC_BYTES: usize = 4;

/// Longest key a header of `header_bytes` holds.
pub fn key_capacity(header_bytes: u32) -> u32 {
    (header_bytes as usize).saturating_sub(FIXED_BYTES + CRC_BYTES).min(u16::MAX as usize) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader<'a> {
    pub device_id: DeviceId,
    pub slot: SlotIndex,
    pub generation: Generation,
    pub payload_len: u64,
    pub payload_crc: u32,
    pub key: &'a [u8],
}

/// What the header block of a slot holds, relative to the device and slot it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState<'a> {
    /// A well-formed header written by this device for this slot.
    Valid(SlotHeader<'a>),
    /// No rawblock header: never written, deleted, or foreign bytes.
    Empty,
    /// A rawblock header that fails its CRC or is malformed (e.g. torn).
    Corrupt,
    /// A well-formed header of another device (earlier format) or another slot (misdirected write).
    Foreign,
}

/// A header block as bytes, before it is judged against a device and slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// No rawblock magic at the start of the block.
    NoHeader,
    /// The magic, then something that does not decode or fails its CRC.
    Malformed,
    Header(SlotHeader<'a>),
}

impl<'a> SlotHeader<'a> {
    pub fn encoded_len(&self) -> usize {
        FIXED_BYTES + self.key.len() + CRC_BYTES
    }

    /// Encodes into `block`, zeroing the rest. The caller checked the key fits.
    pub fn encode(&self, block: &mut [u8]) {
        assert!(self.encoded_len() <= block.len() && self.key.len() <= u16::MAX as usize, "slot header does not fit");
        block.fill(0);
        Enc::new(block)
            .bytes(&MAGIC)
            .u32(FORMAT_VERSION)
            .u32(0)
            .bytes(&self.device_id)
            .u64(self.slot.0)
            .u64(self.generation.0)
            .u64(self.payload_len)
            .u32(self.payload_crc)
            .u16(self.key.len() as u16)
            .u16(0)
            .bytes(self.key)
            .crc_of_written();
    }

    /// Decodes without judging device or slot.
    pub fn decode(block: &'a [u8]) -> Decoded<'a> {
        let mut d = Dec::new(block);
        if d.array::<8>() != Some(MAGIC) {
            return Decoded::NoHeader;
        }
        Self::decode_after_magic(&mut d).map_or(Decoded::Malformed, Decoded::Header)
    }

    fn decode_after_magic(d: &mut Dec<'a>) -> Option<SlotHeader<'a>> {
        let version = d.u32()?;
        let _flags = d.u32()?;
        let device_id = d.array::<16>()?;
        let slot = SlotIndex(d.u64()?);
        let generation = Generation(d.u64()?);
        let payload_len = d.u64()?;
        let payload_crc = d.u32()?;
        let key_len = d.u16()? as usize;
        let _reserved = d.u16()?;
        let key = d.bytes(key_len)?;
        if !d.crc_matches_prefix()? || version != FORMAT_VERSION {
            return None;
        }
        Some(SlotHeader { device_id, slot, generation, payload_len, payload_crc, key })
    }

    /// Classifies the header block read from `slot` of the device `device_id`.
    pub fn classify(block: &'a [u8], device_id: &DeviceId, slot: SlotIndex) -> SlotState<'a> {
        match Self::decode(block) {
            Decoded::NoHeader => SlotState::Empty,
            Decoded::Malformed => SlotState::Corrupt,
            Decoded::Header(h) if h.device_id != *device_id || h.slot != slot => SlotState::Foreign,
            Decoded::Header(h) => SlotState::Valid(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: DeviceId = *b"device-id-000001";

    fn header(key: &[u8]) -> SlotHeader<'_> {
        SlotHeader { device_id: DEV, slot: SlotIndex(42), generation: Generation(7), payload_len: 12345, payload_crc: 0xDEADBEEF, key }
    }

    #[test]
    fn round_trip() {
        let mut block = vec![0xFFu8; 4096];
        let h = header(b"model@chunk-0001");
        h.encode(&mut block);
        assert_eq!(SlotHeader::decode(&block), Decoded::Header(h));
        assert_eq!(SlotHeader::classify(&block, &DEV, SlotIndex(42)), SlotState::Valid(h));
        assert!(block[h.encoded_len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn longest_key_fits_exactly() {
        let key = vec![b'k'; key_capacity(4096) as usize];
        let mut block = vec![0u8; 4096];
        header(&key).encode(&mut block);
        assert!(matches!(SlotHeader::decode(&block), Decoded::Header(h) if h.key == &key[..]));
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let mut block = vec![0u8; 4096];
        let h = header(b"abc");
        h.encode(&mut block);
        for byte in 0..h.encoded_len() {
            let mut b = block.clone();
            b[byte] ^= 0x01;
            assert_ne!(SlotHeader::classify(&b, &DEV, SlotIndex(42)), SlotState::Valid(h), "flip at {byte}");
        }
    }

    #[test]
    fn empty_corrupt_and_foreign() {
        assert_eq!(SlotHeader::classify(&[0u8; 4096], &DEV, SlotIndex(0)), SlotState::Empty);
        assert_eq!(SlotHeader::classify(&[0x33u8; 4096], &DEV, SlotIndex(0)), SlotState::Empty);
        let mut block = vec![0u8; 4096];
        header(b"abc").encode(&mut block);
        assert_eq!(SlotHeader::classify(&block, b"another-device!!", SlotIndex(42)), SlotState::Foreign);
        assert_eq!(SlotHeader::classify(&block, &DEV, SlotIndex(43)), SlotState::Foreign);
        // A torn header: the magic landed, the rest did not.
        let mut torn = vec![0u8; 4096];
        torn[..40].copy_from_slice(&block[..40]);
        assert_eq!(SlotHeader::classify(&torn, &DEV, SlotIndex(42)), SlotState::Corrupt);
        // A key length that runs past the block.
        let mut long = block.clone();
        long[60..62].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(SlotHeader::classify(&long, &DEV, SlotIndex(42)), SlotState::Corrupt);
    }
}
