//! Where everything lives on the device, derived from a few numbers.

use super::{checkpoint, round_up, slot_header, SlotIndex};
use crate::error::{Error, Result};

pub const DEFAULT_HEADER_BYTES: u32 = 4096;
pub const DEFAULT_SLOT_BYTES: u64 = 1 << 20;
/// Long enough for LMCache-style keys (model, worker, chunk hash) with room to spare.
pub const DEFAULT_MAX_KEY_BYTES: u32 = 1024;
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 64 * 1024;
/// Largest slot header. Every header read lands in a buffer of this size (one per
/// POSIX thread, `queue_depth` per io_uring ring), and keys fit in 64 KiB anyway.
pub const MAX_HEADER_BYTES: u32 = 1 << 20;
/// Largest checkpoint container a format plans. A checkpoint is built and loaded
/// in one buffer of up to this size; the default sizing (a checkpoint of every slot
/// with a maximal key) is capped here, and a device with more entries than fit
/// answers a checkpoint with [`Error::CheckpointTooLarge`].
pub const MAX_CONTAINER_BYTES: u64 = 4 << 30;
/// Most slots a device may have: a batch of reads tags each with its input index in
/// 48 bits (the io_uring window), and a scan reads every slot in one batch. Memory
/// does not follow the slot count.
pub const MAX_SLOT_COUNT: u64 = 1 << 48;

/// What a caller asks for when formatting; 0 means "the default".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeometryRequest {
    pub block_size: u32,
    pub header_bytes: u32,
    pub slot_bytes: u64,
    /// Size of the whole metadata region (superblock + both checkpoint containers).
    pub meta_bytes: u64,
    pub max_key_bytes: u32,
    /// Blocks of the lease journal, on top of `meta_bytes` (0: the default, sized from
    /// the slot count, see [`default_journal_blocks`]; [`NO_JOURNAL`]: none, as devices
    /// formatted before the journal existed).
    pub journal_blocks: u32,
}

/// Fewest and most blocks a planned lease journal has. Each record leases up to
/// [`LEASE_BATCH_MAX`] slots, so the largest journal covers about a million puts
/// between checkpoints before a put has to take one.
pub const MIN_JOURNAL_BLOCKS: u32 = 8;
pub const MAX_JOURNAL_BLOCKS: u32 = 1024;
/// A `journal_blocks` request for no journal (benchmarks and compatibility tests).
pub const NO_JOURNAL: u32 = u32::MAX;
/// Most slots one lease record takes at once.
pub const LEASE_BATCH_MAX: u64 = 1024;

/// A journal of one block per 256 slots, within the bounds above.
pub fn default_journal_blocks(slot_estimate: u64) -> u32 {
    (slot_estimate / 256).clamp(MIN_JOURNAL_BLOCKS as u64, MAX_JOURNAL_BLOCKS as u64) as u32
}

/// One of the two checkpoint containers, written alternately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Container {
    A,
    B,
}

impl Container {
    pub const BOTH: [Container; 2] = [Container::A, Container::B];

    /// The container a checkpoint goes to when this one holds the newest.
    pub fn other(self) -> Container {
        match self {
            Container::A => Container::B,
            Container::B => Container::A,
        }
    }

    fn position(self) -> u64 {
        match self {
            Container::A => 0,
            Container::B => 1,
        }
    }
}

impl std::fmt::Display for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Container::A => "A",
            Container::B => "B",
        })
    }
}

/// The fixed layout of a formatted device. Made only by [`Geometry::plan`] or
/// by decoding a superblock ([`Geometry::from_parts`]); both validate, and the
/// fields are private, so a `Geometry` is always usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    block_size: u32,
    header_bytes: u32,
    slot_bytes: u64,
    slot_count: u64,
    /// Bytes of one checkpoint container (its header block plus payload area).
    container_bytes: u64,
    max_key_bytes: u32,
    /// A copy of the superblock in the block after it (every device formatted since
    /// the copy was introduced; older ones have none).
    superblock_copy: bool,
    /// Blocks of the lease journal after the containers (0: a device formatted before
    /// the journal existed; it recovers by full validation).
    journal_blocks: u32,
}

/// The numbers a superblock records, before they are validated into a [`Geometry`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GeometryParts {
    pub block_size: u32,
    pub header_bytes: u32,
    pub slot_bytes: u64,
    pub slot_count: u64,
    pub container_bytes: u64,
    pub max_key_bytes: u32,
    pub superblock_copy: bool,
    pub journal_blocks: u32,
}

impl Geometry {
    /// Lays out a device of `capacity` bytes whose logical block size is `device_block`.
    pub fn plan(req: &GeometryRequest, capacity: u64, device_block: u32) -> Result<Geometry> {
        let block_size = match req.block_size {
            0 => device_block.max(MIN_BLOCK_SIZE),
            b => b,
        };
        let header_bytes = if req.header_bytes == 0 { DEFAULT_HEADER_BYTES.max(block_size) } else { req.header_bytes };
        let slot_bytes = if req.slot_bytes == 0 { DEFAULT_SLOT_BYTES } else { req.slot_bytes };
        let max_key_bytes = if req.max_key_bytes == 0 {
            DEFAULT_MAX_KEY_BYTES.min(slot_header::key_capacity(header_bytes))
        } else {
            req.max_key_bytes
        };
        let bad = |m: String| Error::InvalidArgument(m);
        // The fields first, so a bad one is named rather than surfacing as a derived size.
        check_fields(block_size, header_bytes, slot_bytes, max_key_bytes, device_block).map_err(bad)?;
        if capacity < slot_bytes {
            return Err(bad(format!("capacity {capacity} bytes holds no slot of {slot_bytes} bytes")));
        }
        let block = block_size as u64;
        let max_meta_bytes = 2 * block + 2 * MAX_CONTAINER_BYTES;
        let container_bytes = if req.meta_bytes == 0 {
            // Sized so a checkpoint of every slot with a maximal key fits, up to the maximum.
            let upper_slots = capacity / slot_bytes;
            let per_entry = checkpoint::ENTRY_FIXED_BYTES + max_key_bytes as u64;
            let payload = upper_slots.saturating_mul(per_entry).min(MAX_CONTAINER_BYTES - block);
            block + round_up(payload, block.max(1))
        } else {
            // Two superblock copies and two containers of at least two blocks each.
            if req.meta_bytes < block * 6 {
                return Err(bad(format!("meta_bytes {} is below the minimum of 6 blocks", req.meta_bytes)));
            }
            if req.meta_bytes > max_meta_bytes {
                return Err(bad(format!(
                    "meta_bytes {} exceeds the maximum of {max_meta_bytes} (two checkpoint containers of {MAX_CONTAINER_BYTES} bytes)",
                    req.meta_bytes
                )));
            }
            ((req.meta_bytes - 2 * block) / 2) / block * block
        };
        let journal_blocks = match req.journal_blocks {
            0 => default_journal_blocks(capacity / slot_bytes),
            NO_JOURNAL => 0,
            j => j,
        };
        let meta_bytes = 2 * block + 2 * container_bytes + journal_blocks as u64 * block;
        if meta_bytes >= capacity {
            return Err(bad(format!(
                "capacity {capacity} bytes is too small: the metadata region alone needs {meta_bytes}"
            )));
        }
        let slot_count = (capacity - meta_bytes) / slot_bytes;
        if slot_count > MAX_SLOT_COUNT {
            return Err(bad(format!(
                "capacity {capacity} bytes holds {slot_count} slots of slot_bytes {slot_bytes}, above the maximum of {MAX_SLOT_COUNT} slots"
            )));
        }
        let parts = GeometryParts {
            block_size,
            header_bytes,
            slot_bytes,
            slot_count,
            container_bytes,
            max_key_bytes,
            superblock_copy: true,
            journal_blocks,
        };
        Geometry::from_parts(parts, device_block).map_err(bad)
    }

    /// Validates recorded numbers (a superblock's) for a device of `device_block` logical blocks.
    pub fn from_parts(p: GeometryParts, device_block: u32) -> std::result::Result<Geometry, String> {
        let g = Geometry {
            block_size: p.block_size,
            header_bytes: p.header_bytes,
            slot_bytes: p.slot_bytes,
            slot_count: p.slot_count,
            container_bytes: p.container_bytes,
            max_key_bytes: p.max_key_bytes,
            superblock_copy: p.superblock_copy,
            journal_blocks: p.journal_blocks,
        };
        g.validate(device_block)?;
        Ok(g)
    }

    /// Checks every invariant the rest of the crate relies on.
    fn validate(&self, device_block: u32) -> std::result::Result<(), String> {
        let b = self.block_size;
        check_fields(b, self.header_bytes, self.slot_bytes, self.max_key_bytes, device_block)?;
        if self.container_bytes < 2 * b as u64 || self.container_bytes % b as u64 != 0 {
            return Err(format!("checkpoint container of {} bytes is too small or unaligned", self.container_bytes));
        }
        if self.journal_blocks > MAX_JOURNAL_BLOCKS {
            return Err(format!("lease journal of {} blocks exceeds the maximum of {MAX_JOURNAL_BLOCKS}", self.journal_blocks));
        }
        if self.slot_count == 0 {
            return Err("the device holds no slot".into());
        }
        if self.slot_count > MAX_SLOT_COUNT {
            return Err(format!("slot count {} exceeds the maximum of {MAX_SLOT_COUNT}", self.slot_count));
        }
        self.slot_count
            .checked_mul(self.slot_bytes)
            .and_then(|d| d.checked_add(self.data_base()))
            .ok_or_else(|| "geometry overflows 64-bit offsets".to_string())?;
        Ok(())
    }

    /// Alignment of everything on the device, and the unit of metadata writes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
    /// Bytes of a slot's header block.
    pub fn header_bytes(&self) -> u32 {
        self.header_bytes
    }
    /// Bytes of a slot, header included.
    pub fn slot_bytes(&self) -> u64 {
        self.slot_bytes
    }
    pub fn slot_count(&self) -> u64 {
        self.slot_count
    }
    /// Bytes of one checkpoint container (its header block plus payload area).
    pub fn container_bytes(&self) -> u64 {
        self.container_bytes
    }
    pub fn max_key_bytes(&self) -> u32 {
        self.max_key_bytes
    }

    /// Whether `slot` names a slot of this device.
    pub fn has_slot(&self, slot: SlotIndex) -> bool {
        slot.0 < self.slot_count
    }

    /// Every slot of the device, in order.
    pub fn all_slots(&self) -> impl Iterator<Item = SlotIndex> {
        (0..self.slot_count).map(SlotIndex)
    }

    pub fn superblock_bytes(&self) -> u64 {
        self.block_size as u64
    }

    /// Where the superblock's copy lives: the block after the superblock, if the device has one.
    pub fn superblock_copy_offset(&self) -> Option<u64> {
        self.superblock_copy.then_some(self.block_size as u64)
    }

    /// The superblock and, when there is one, its copy.
    fn superblocks_bytes(&self) -> u64 {
        self.superblock_bytes() * if self.superblock_copy { 2 } else { 1 }
    }

    pub fn container_offset(&self, which: Container) -> u64 {
        self.superblocks_bytes() + which.position() * self.container_bytes
    }

    /// Largest checkpoint payload a container holds.
    pub fn checkpoint_capacity(&self) -> u64 {
        self.container_bytes - self.block_size as u64
    }

    /// Blocks of the lease journal; 0 on a device formatted before it existed.
    pub fn journal_blocks(&self) -> u32 {
        self.journal_blocks
    }

    /// Where the lease journal starts (right after container B).
    pub fn journal_offset(&self) -> u64 {
        self.superblocks_bytes() + 2 * self.container_bytes
    }

    pub fn journal_bytes(&self) -> u64 {
        self.journal_blocks as u64 * self.block_size as u64
    }

    pub fn meta_bytes(&self) -> u64 {
        self.journal_offset() + self.journal_bytes()
    }

    pub fn data_base(&self) -> u64 {
        self.meta_bytes()
    }

    pub fn slot_offset(&self, slot: SlotIndex) -> u64 {
        self.data_base() + slot.0 * self.slot_bytes
    }

    pub fn max_payload(&self) -> u64 {
        self.slot_bytes - self.header_bytes as u64
    }

    /// Bytes the device must have for this geometry.
    pub fn device_bytes(&self) -> u64 {
        self.data_base() + self.slot_count * self.slot_bytes
    }

    /// Bytes of one slot's on-device record (header + payload padded to the block).
    pub fn record_bytes(&self, payload_len: u64) -> u64 {
        self.header_bytes as u64 + round_up(payload_len, self.block_size as u64)
    }
}

/// The rules each chosen field must meet on its own; errors name the field and its value.
fn check_fields(block_size: u32, header_bytes: u32, slot_bytes: u64, max_key_bytes: u32, device_block: u32) -> std::result::Result<(), String> {
    let b = block_size;
    if !b.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&b) {
        return Err(format!("block_size {b} must be a power of two in {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}"));
    }
    if device_block != 0 && b % device_block != 0 {
        return Err(format!("block_size {b} is not a multiple of the device's logical block size {device_block}"));
    }
    if header_bytes > MAX_HEADER_BYTES {
        return Err(format!("header_bytes {header_bytes} exceeds the maximum of {MAX_HEADER_BYTES}"));
    }
    if header_bytes < b || header_bytes % b != 0 {
        return Err(format!("header_bytes {header_bytes} must be a non-zero multiple of the block size {b}"));
    }
    if slot_bytes % b as u64 != 0 || slot_bytes <= header_bytes as u64 {
        return Err(format!(
            "slot_bytes {slot_bytes} must be a multiple of the block size {b} and larger than the header ({header_bytes})"
        ));
    }
    let key_capacity = slot_header::key_capacity(header_bytes);
    if max_key_bytes == 0 || max_key_bytes > key_capacity {
        return Err(format!("max_key_bytes {max_key_bytes} must be in 1..={key_capacity} for {header_bytes}-byte headers"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_a_full_checkpoint() {
        let cap = 64u64 << 30;
        let g = Geometry::plan(&GeometryRequest::default(), cap, 512).unwrap();
        assert_eq!(g.block_size, 4096);
        assert_eq!(g.header_bytes, 4096);
        assert_eq!(g.slot_bytes, 1 << 20);
        assert_eq!(g.max_key_bytes, DEFAULT_MAX_KEY_BYTES);
        assert!(g.checkpoint_capacity() >= g.slot_count * (checkpoint::ENTRY_FIXED_BYTES + 1024));
        assert!(g.device_bytes() <= cap);
        assert_eq!(g.slot_count, (cap - g.meta_bytes()) / g.slot_bytes);
        assert_eq!(g.data_base() % 4096, 0);
        assert_eq!(g.slot_offset(SlotIndex(3)), g.data_base() + 3 * (1 << 20));
    }

    #[test]
    fn explicit_meta_bytes_sets_the_containers() {
        let req = GeometryRequest { meta_bytes: 4096 * 10, slot_bytes: 64 * 1024, ..Default::default() };
        let g = Geometry::plan(&req, 16 << 20, 4096).unwrap();
        assert_eq!(g.container_bytes, 4096 * 4);
        // The lease journal comes on top: 256 slots plan the fewest blocks.
        assert_eq!(g.journal_blocks(), MIN_JOURNAL_BLOCKS);
        assert_eq!(g.journal_offset(), 4096 * 10);
        assert_eq!(g.meta_bytes(), 4096 * (10 + MIN_JOURNAL_BLOCKS as u64));
        assert_eq!(g.superblock_copy_offset(), Some(4096));
        assert_eq!(g.container_offset(Container::A), 2 * 4096);
    }

    #[test]
    fn rejects_bad_geometry() {
        let plan = |req: GeometryRequest, cap| Geometry::plan(&req, cap, 4096);
        assert!(plan(GeometryRequest::default(), 1 << 20).is_err(), "too small for a slot plus metadata");
        assert!(plan(GeometryRequest { block_size: 3000, ..Default::default() }, 1 << 30).is_err());
        assert!(plan(GeometryRequest { header_bytes: 5000, ..Default::default() }, 1 << 30).is_err());
        assert!(plan(GeometryRequest { slot_bytes: 4096, ..Default::default() }, 1 << 30).is_err(), "slot == header");
        assert!(plan(GeometryRequest { slot_bytes: 10_000, ..Default::default() }, 1 << 30).is_err(), "unaligned slot");
        assert!(plan(GeometryRequest { max_key_bytes: 4096, ..Default::default() }, 1 << 30).is_err());
        assert!(plan(GeometryRequest { meta_bytes: 4096, ..Default::default() }, 1 << 30).is_err());
        assert!(Geometry::plan(&GeometryRequest { block_size: 4096, ..Default::default() }, 1 << 30, 8192).is_err());
    }

    /// These three once all said "metadata region alone needs 35366383616 bytes".
    #[test]
    fn errors_name_the_bad_field() {
        let cap = 1 << 30;
        let msg = |req: GeometryRequest| Geometry::plan(&req, cap, 4096).unwrap_err().to_string();
        assert!(msg(GeometryRequest { slot_bytes: 1, ..Default::default() }).contains("slot_bytes 1 "));
        assert!(msg(GeometryRequest { block_size: 1 << 31, ..Default::default() }).contains("block_size 2147483648 "));
        assert!(msg(GeometryRequest { max_key_bytes: 65535, ..Default::default() }).contains("max_key_bytes 65535 "));
    }

    #[test]
    fn large_logical_blocks_raise_the_block_size() {
        let g = Geometry::plan(&GeometryRequest::default(), 1 << 30, 8192).unwrap();
        assert_eq!(g.block_size, 8192);
        assert_eq!(g.header_bytes, 8192);
    }

    /// Bounds on what a device makes the host allocate are checked before anything is
    /// written, and each error names the field and its value. Before: a 1 GiB header was
    /// accepted (and a 128 GiB io_uring arena allocated for it).
    #[test]
    fn bounds_name_the_field_and_value() {
        let plan = |req: GeometryRequest, cap| Geometry::plan(&req, cap, 4096).map_err(|e| e.to_string());
        let huge_header = GeometryRequest { header_bytes: 1 << 30, slot_bytes: 2 << 30, ..Default::default() };
        let err = plan(huge_header, 1 << 40).unwrap_err();
        assert!(err.contains("header_bytes 1073741824 exceeds the maximum of 1048576"), "{err}");
        assert!(plan(GeometryRequest { header_bytes: MAX_HEADER_BYTES, slot_bytes: 2 << 20, ..Default::default() }, 1 << 30).is_ok());

        let max_meta = 2 * 4096 + 2 * MAX_CONTAINER_BYTES;
        let err = plan(GeometryRequest { meta_bytes: max_meta + 4096, ..Default::default() }, 1 << 50).unwrap_err();
        assert!(err.contains(&format!("meta_bytes {} exceeds the maximum of {max_meta}", max_meta + 4096)), "{err}");
        assert!(plan(GeometryRequest { meta_bytes: max_meta, ..Default::default() }, 1 << 40).is_ok());

        let err = plan(GeometryRequest { slot_bytes: 8192, ..Default::default() }, 1 << 62).unwrap_err();
        assert!(err.contains("slots of slot_bytes 8192, above the maximum of 281474976710656 slots"), "{err}");

        // A superblock recording a header above the maximum is refused the same way.
        let g = Geometry::plan(&GeometryRequest::default(), 1 << 30, 4096).unwrap();
        let parts = GeometryParts {
            block_size: 4096,
            header_bytes: 1 << 30,
            slot_bytes: 2 << 30,
            slot_count: 1,
            container_bytes: g.container_bytes,
            max_key_bytes: 1024,
            superblock_copy: true,
            journal_blocks: 0,
        };
        let err = Geometry::from_parts(parts, 4096).unwrap_err();
        assert!(err.contains("header_bytes 1073741824 exceeds the maximum"), "{err}");
    }

    /// The device: 2^46 bytes of 8 KiB slots. The default containers are capped
    /// (before: 9.1 TB each, sized for 8.6 billion maximal keys).
    #[test]
    fn a_64_tib_device_of_8_kib_slots_plans_bounded_metadata() {
        let req = GeometryRequest { slot_bytes: 8192, ..Default::default() };
        let g = Geometry::plan(&req, 1 << 46, 4096).unwrap();
        assert_eq!(g.container_bytes(), MAX_CONTAINER_BYTES);
        assert_eq!(g.journal_blocks(), MAX_JOURNAL_BLOCKS);
        assert_eq!(g.meta_bytes(), 2 * 4096 + 2 * MAX_CONTAINER_BYTES + MAX_JOURNAL_BLOCKS as u64 * 4096);
        assert_eq!(g.slot_count(), ((1u64 << 46) - g.meta_bytes()) / 8192);
        assert!(g.device_bytes() <= 1 << 46);
    }
}
