//! The superblock at offset 0: identity and geometry of the device.

use super::geometry::GeometryParts;
use super::{Dec, DeviceId, Enc, Geometry, FORMAT_VERSION};

pub const MAGIC: [u8; 8] = *b"RAWBLOCK";
/// Encoded length; the rest of the superblock block is zero.
pub const ENCODED_BYTES: usize = 92;
/// Flag: a copy of the superblock lives in the next block.
pub const FLAG_SUPERBLOCK_COPY: u32 = 1;
/// Flag: a lease journal follows the checkpoint containers; its block count is the
/// field after max_key_bytes (reserved, zero, on devices without one).
pub const FLAG_LEASE_JOURNAL: u32 = 2;
/// The flags this library understands; others mean a newer format feature.
const KNOWN_FLAGS: u32 = FLAG_SUPERBLOCK_COPY | FLAG_LEASE_JOURNAL;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub device_id: DeviceId,
    pub geometry: Geometry,
}

/// Why a superblock could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum SuperblockError {
    /// No rawblock magic: never formatted, or something else lives here.
    NotRawblock,
    Corrupt,
    UnsupportedVersion(u32),
    /// Feature flags this library does not know.
    UnsupportedFlags(u32),
    /// The stored numbers are inconsistent or unusable.
    BadGeometry(String),
}

impl std::fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SuperblockError::NotRawblock => write!(f, "no rawblock superblock (the device was never formatted)"),
            SuperblockError::Corrupt => write!(f, "the rawblock superblock fails its CRC32"),
            SuperblockError::UnsupportedVersion(v) => {
                write!(f, "format version {v} is not supported (this library reads version {FORMAT_VERSION})")
            }
            SuperblockError::UnsupportedFlags(x) => write!(f, "the superblock has feature flags {x:#x} this library does not know"),
            SuperblockError::BadGeometry(m) => write!(f, "the superblock's geometry is unusable: {m}"),
        }
    }
}

impl Superblock {
    /// Encodes into the start of `block` (at least [`ENCODED_BYTES`] long) and zeroes the rest.
    pub fn encode(&self, block: &mut [u8]) {
        block.fill(0);
        let g = &self.geometry;
        Enc::new(block)
            .bytes(&MAGIC)
            .u32(FORMAT_VERSION)
            .u32(
                if g.superblock_copy_offset().is_some() { FLAG_SUPERBLOCK_COPY } else { 0 }
                    | if g.journal_blocks() > 0 { FLAG_LEASE_JOURNAL } else { 0 },
            )
            .bytes(&self.device_id)
            .u32(g.block_size())
            .u32(g.header_bytes())
            .u64(g.slot_bytes())
            .u64(g.slot_count())
            .u64(g.meta_bytes())
            .u64(g.data_base())
            .u64(g.container_bytes())
            .u32(g.max_key_bytes())
            .u32(g.journal_blocks())
            .crc_of_written();
    }

    /// Decodes and validates. `device_block` is the device's logical block size.
    pub fn decode(block: &[u8], device_block: u32) -> Result<Superblock, SuperblockError> {
        let mut d = Dec::new(block);
        if d.array::<8>() != Some(MAGIC) {
            return Err(SuperblockError::NotRawblock);
        }
        let short = || SuperblockError::Corrupt;
        let version = d.u32().ok_or_else(short)?;
        let flags = d.u32().ok_or_else(short)?;
        let device_id = d.array::<16>().ok_or_else(short)?;
        let block_size = d.u32().ok_or_else(short)?;
        let header_bytes = d.u32().ok_or_else(short)?;
        let slot_bytes = d.u64().ok_or_else(short)?;
        let slot_count = d.u64().ok_or_else(short)?;
        let meta_bytes = d.u64().ok_or_else(short)?;
        let data_base = d.u64().ok_or_else(short)?;
        let container_bytes = d.u64().ok_or_else(short)?;
        let max_key_bytes = d.u32().ok_or_else(short)?;
        let journal_field = d.u32().ok_or_else(short)?;
        if d.crc_matches_prefix() != Some(true) {
            return Err(SuperblockError::Corrupt);
        }
        if version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(SuperblockError::UnsupportedFlags(flags & !KNOWN_FLAGS));
        }
        let superblock_copy = flags & FLAG_SUPERBLOCK_COPY != 0;
        let journal_blocks = if flags & FLAG_LEASE_JOURNAL != 0 { journal_field } else { 0 };
        if flags & FLAG_LEASE_JOURNAL != 0 && journal_blocks == 0 {
            return Err(SuperblockError::BadGeometry("a lease journal of 0 blocks".into()));
        }
        let parts = GeometryParts {
            block_size,
            header_bytes,
            slot_bytes,
            slot_count,
            container_bytes,
            max_key_bytes,
            superblock_copy,
            journal_blocks,
        };
        let geometry = Geometry::from_parts(parts, device_block).map_err(SuperblockError::BadGeometry)?;
        if geometry.meta_bytes() != meta_bytes || geometry.data_base() != data_base {
            return Err(SuperblockError::BadGeometry(format!(
                "metadata size {meta_bytes} / data base {data_base} disagree with the containers"
            )));
        }
        Ok(Superblock { device_id, geometry })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::GeometryRequest;

    fn sample() -> Superblock {
        let geometry = Geometry::plan(&GeometryRequest::default(), 8 << 30, 512).unwrap();
        Superblock { device_id: *b"0123456789abcdef", geometry }
    }

    #[test]
    fn round_trip() {
        let sb = sample();
        let mut block = vec![0xAAu8; 4096];
        sb.encode(&mut block);
        assert!(block[ENCODED_BYTES..].iter().all(|&b| b == 0));
        assert_eq!(Superblock::decode(&block, 512), Ok(sb));
    }

    #[test]
    fn detects_every_flipped_bit() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        for byte in 8..ENCODED_BYTES {
            let mut b = block.clone();
            b[byte] ^= 0x10;
            assert!(Superblock::decode(&b, 512).is_err(), "flip at byte {byte} accepted");
        }
    }

    #[test]
    fn zeros_and_garbage_are_not_rawblock() {
        assert_eq!(Superblock::decode(&[0u8; 4096], 512), Err(SuperblockError::NotRawblock));
        assert_eq!(Superblock::decode(&[0x5Au8; 4096], 512), Err(SuperblockError::NotRawblock));
        assert_eq!(Superblock::decode(&MAGIC, 512), Err(SuperblockError::Corrupt));
    }

    #[test]
    fn other_version_is_reported() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        block[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crate::format::crc32(&block[..ENCODED_BYTES - 4]);
        block[ENCODED_BYTES - 4..ENCODED_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Superblock::decode(&block, 512), Err(SuperblockError::UnsupportedVersion(2)));
    }

    #[test]
    fn unknown_flags_are_refused_not_ignored() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        assert_eq!(u32::from_le_bytes(block[12..16].try_into().unwrap()), FLAG_SUPERBLOCK_COPY | FLAG_LEASE_JOURNAL);
        block[12..16].copy_from_slice(&(FLAG_SUPERBLOCK_COPY | FLAG_LEASE_JOURNAL | 4).to_le_bytes());
        let crc = crate::format::crc32(&block[..ENCODED_BYTES - 4]);
        block[ENCODED_BYTES - 4..ENCODED_BYTES].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Superblock::decode(&block, 512), Err(SuperblockError::UnsupportedFlags(4)));
    }

    #[test]
    fn device_with_larger_blocks_rejects_it() {
        let mut block = vec![0u8; 4096];
        sample().encode(&mut block);
        assert!(matches!(Superblock::decode(&block, 8192), Err(SuperblockError::BadGeometry(_))));
    }
}
