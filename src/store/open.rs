//! Opening a device, or formatting one.

use std::path::Path;
use std::sync::Mutex;

use super::{checkpoint, data::RecordPool, Phase, State, Store};
use crate::aligned::{AlignedBuf, IO_ALIGN};
use crate::device::{self, random_device_id, Access, Device, DeviceKind};
use crate::engine::{BatchStats, Engine, EngineConfig, FaultTable};
use crate::error::{Error, Holds, Result};
use crate::format::superblock::{SuperblockError, MAGIC};
use crate::format::{Container, Generation, Geometry, GeometryRequest, Superblock};
use super::index::Index;
use super::Eviction;

/// What opening does to the device.
#[derive(Clone, Copy, Debug, Default)]
pub enum OpenMode {
    /// Reads only; the index is rebuilt by recovery, which may run again.
    ReadOnly,
    /// An existing rawblock device, read and written once recovered.
    #[default]
    ReadWrite,
    /// Formats the device (creating a regular file that does not exist).
    Create(FormatOptions),
    /// An existing rawblock device as [`ReadWrite`](OpenMode::ReadWrite); one holding none
    /// (a new or empty file, or a device whose first block is zeros with no superblock copy)
    /// is formatted as [`Create`](OpenMode::Create) would, over zeros only: `overwrite` must
    /// be false. [`Store::formatted`] says which happened.
    OpenOrCreate(FormatOptions),
}

/// How to format a device.
#[derive(Clone, Copy, Debug, Default)]
pub struct FormatOptions {
    pub geometry: GeometryRequest,
    /// Bytes to use; 0 means the whole device (or the file's current size).
    pub capacity_bytes: u64,
    /// Format over a rawblock superblock or other data.
    pub overwrite: bool,
    /// Allocate the whole file at format (fallocate), not only the metadata
    /// region, so no write can later fail for want of space on its filesystem.
    /// Nothing to do on a block device.
    pub preallocate: bool,
}

/// How to open (and possibly format) a device.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    pub mode: OpenMode,
    pub engine: EngineConfig,
    /// Turn O_DIRECT off.
    pub buffered: bool,
    /// O_DSYNC: each write is on stable media when it returns.
    pub sync_writes: bool,
}

/// How much of the start of a device is checked for existing data before formatting.
const FORMAT_PROBE_BYTES: usize = 64 * 1024;

impl Store {
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Store> {
        let access = match opts.mode {
            OpenMode::ReadOnly => Access::ReadOnly,
            OpenMode::ReadWrite => Access::ReadWrite,
            OpenMode::Create(_) | OpenMode::OpenOrCreate(_) => Access::Create,
        };
        super::first_start::check_mode(&opts.mode)?;
        let passthrough = opts.engine.choice() == crate::engine::EngineChoice::UringCmd;
        let mode = device::OpenMode { access, buffered: opts.buffered, sync_writes: opts.sync_writes, passthrough };
        let mut dev = Device::open(path, mode)?;
        dev.lock()?;
        let fresh = |dev: &mut Device, f: &FormatOptions| match format(dev, f, &opts.engine) {
            Ok((sb, engine)) => Ok((sb, SuperblockSource::Primary, Phase::Fresh, engine)),
            Err(e) => {
                // Nothing may be left that later looks like a device or hides the failure.
                dev.undo_format();
                Err(e)
            }
        };
        let existing = |dev: &Device, (sb, source): (Superblock, SuperblockSource)| -> Result<_> {
            if dev.is_writable() {
                // A device formatted before the metadata region was allocated at format
                // gets it now. Best effort: running out of space shows at the checkpoint.
                let _ = dev.reserve(0, sb.geometry.meta_bytes());
            }
            let engine = Engine::new(&opts.engine, dev, sb.geometry.header_bytes() as usize)?;
            Ok((sb, source, Phase::AwaitingRecovery, engine))
        };
        let (sb, superblock_source, phase, engine) = match &opts.mode {
            OpenMode::Create(f) => fresh(&mut dev, f)?,
            OpenMode::OpenOrCreate(f) => match read_superblock(&dev) {
                Err(e) if super::first_start::holds_no_rawblock(&dev, &e) => fresh(&mut dev, f)?,
                found => existing(&dev, found?)?,
            },
            _ => existing(&dev, read_superblock(&dev)?)?,
        };
        let g = sb.geometry;
        Ok(Store {
            engine,
            faults: FaultTable::default(),
            state: Mutex::new(State {
                index: Index::new(g.slot_count()),
                phase,
                last_generation: Generation(0),
                pending_invalidation: Vec::new(),
                evicted: Default::default(),
                eviction: Eviction::default(),
                leases: if phase == Phase::Fresh { super::lease::Leases::fresh(g.journal_blocks()) } else { Default::default() },
                changes: 0,
                checkpointed_changes: 0,
                auto_checkpoint: Default::default(),
                checkpointed_at: std::time::Instant::now(),
                auto_checkpoint_failures: 0,
                delta_max_permille: 125,
            }),
            checkpoints: Mutex::new(checkpoint::Cursor::default()),
            lease_io: Mutex::new(()),
            auto_checkpoint_on: Default::default(),
            io_totals: Mutex::new(BatchStats::default()),
            records: RecordPool::new(g.record_bytes(g.max_payload()) as usize),
            superblock_source,
            formatted: phase == Phase::Fresh,
            metrics: Default::default(),
            dev,
            sb,
        })
    }
}

/// Where the superblock a handle uses came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockSource {
    Primary,
    /// The primary failed to decode; its copy in the next block was used.
    Copy,
}

/// Block sizes a superblock's copy may sit at (it lives one `block_size` in).
const COPY_OFFSETS: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

fn read_block(dev: &Device, offset: u64) -> Result<AlignedBuf> {
    let len = (dev.logical_block() as usize).max(IO_ALIGN);
    let mut block = AlignedBuf::zeroed(len);
    dev.read_at(&mut block, offset)
        .map_err(|e| Error::io(format!("reading the superblock of {} at offset {offset}", dev.path().display()), e))?;
    Ok(block)
}

/// The superblock at offset 0 or, when it does not decode, its copy; a writable
/// handle rewrites whichever of the two is damaged.
fn read_superblock(dev: &Device) -> Result<(Superblock, SuperblockSource)> {
    let shown = dev.path().display();
    if dev.capacity() < IO_ALIGN as u64 {
        return Err(Error::Format(format!("{shown} is too small ({} bytes) to hold a rawblock superblock", dev.capacity())));
    }
    let first = read_block(dev, 0)?;
    let (sb, source) = match Superblock::decode(&first, dev.logical_block()) {
        Ok(sb) => (sb, SuperblockSource::Primary),
        Err(primary) => match find_copy(dev)? {
            Some(sb) if is_damaged_copy_of(&first, &sb) => (sb, SuperblockSource::Copy),
            Some(sb) => {
                return Err(Error::Format(format!(
                    "{shown}: the first block holds other data, though a rawblock superblock copy remains at offset {}; \
                     not treating it as a rawblock device",
                    sb.geometry.superblock_copy_offset().unwrap_or_default()
                )))
            }
            None if primary == SuperblockError::NotRawblock => {
                return Err(Error::NotRawblock { path: dev.path().to_path_buf() })
            }
            None => return Err(Error::Format(format!("{shown}: {primary}, and it has no usable copy"))),
        },
    };
    if dev.capacity() < sb.geometry.device_bytes() {
        return Err(Error::Format(format!(
            "{shown} has {} bytes but its superblock describes {} (a truncated copy?)",
            dev.capacity(),
            sb.geometry.device_bytes()
        )));
    }
    if dev.is_writable() {
        repair_superblocks(dev, &sb)?;
    }
    Ok((sb, source))
}

/// Whether `first` is the superblock `sb` with a few bytes damaged, rather than
/// something else written over the device's start (which a repair would destroy).
fn is_damaged_copy_of(first: &[u8], sb: &Superblock) -> bool {
    const MAX_DAMAGED_BYTES: usize = 16;
    let mut want = vec![0u8; first.len()];
    sb.encode(&mut want);
    first.starts_with(&MAGIC) || first.iter().zip(&want).filter(|(a, b)| a != b).count() <= MAX_DAMAGED_BYTES
}

/// A valid superblock copy one block in, for whichever block size the device was formatted with.
fn find_copy(dev: &Device) -> Result<Option<Superblock>> {
    for offset in COPY_OFFSETS {
        if offset + IO_ALIGN as u64 > dev.capacity() || offset % dev.logical_block() as u64 != 0 {
            continue;
        }
        if let Ok(sb) = Superblock::decode(&read_block(dev, offset)?, dev.logical_block()) {
            if sb.geometry.superblock_copy_offset() == Some(offset) {
                return Ok(Some(sb));
            }
        }
    }
    Ok(None)
}

/// Rewrites the primary or the copy when it does not hold `sb`, then syncs.
fn repair_superblocks(dev: &Device, sb: &Superblock) -> Result<()> {
    let g = sb.geometry;
    let mut want = AlignedBuf::zeroed(g.block_size() as usize);
    sb.encode(&mut want);
    let mut repaired = false;
    for offset in std::iter::once(0).chain(g.superblock_copy_offset()) {
        let mut have = AlignedBuf::zeroed(want.len());
        dev.read_at(&mut have, offset).map_err(|e| Error::io("reading a superblock to check it", e))?;
        if have[..] != want[..] {
            dev.write_at(&want, offset).map_err(|e| Error::io(format!("repairing the superblock at offset {offset}"), e))?;
            repaired = true;
        }
    }
    if repaired {
        dev.sync().map_err(|e| Error::io("syncing the repaired superblock", e))?;
    }
    Ok(())
}

/// The bytes to format: the request, or what the device has.
fn format_capacity(dev: &Device, requested: u64) -> Result<u64> {
    let shown = dev.path().display();
    match requested {
        0 if dev.capacity() == 0 => {
            Err(Error::InvalidArgument(format!("{shown} is empty: give a capacity to say how large to make it")))
        }
        0 => Ok(dev.capacity()),
        c if dev.kind() == DeviceKind::BlockDevice && c > dev.capacity() => {
            Err(Error::InvalidArgument(format!("capacity {c} exceeds the device's {} bytes", dev.capacity())))
        }
        c => Ok(c),
    }
}

/// Refuses to format over anything but zeros at the start of the device.
fn check_blank(dev: &Device) -> Result<()> {
    let probe = (dev.capacity() as usize).min(FORMAT_PROBE_BYTES) / IO_ALIGN * IO_ALIGN;
    if probe == 0 {
        return Ok(());
    }
    let mut head = AlignedBuf::zeroed(probe);
    dev.read_at(&mut head, 0).map_err(|e| Error::io(format!("reading the start of {}", dev.path().display()), e))?;
    if head.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let holds = if head.starts_with(&MAGIC) { Holds::Rawblock } else { Holds::Data };
    Err(Error::Exists { path: dev.path().to_path_buf(), holds })
}

/// Formats the device. The geometry is checked and the engine started (threads, buffers)
/// before anything is written, so a refusal of either leaves the device as it was.
fn format(dev: &mut Device, opts: &FormatOptions, engine: &EngineConfig) -> Result<(Superblock, Engine)> {
    let capacity = format_capacity(dev, opts.capacity_bytes)?;
    if !opts.overwrite {
        check_blank(dev)?;
    }
    let geometry = Geometry::plan(&opts.geometry, capacity, dev.logical_block())?;
    dev.extend_to(geometry.device_bytes())?;
    // The metadata region is allocated before anything is written: a sparse file on a
    // filesystem that fills up later must still take checkpoints. Running out of space
    // here fails the format before the superblock exists.
    let (what, span) = match opts.preallocate {
        true => ("the whole device", geometry.device_bytes()),
        false => ("the metadata region", geometry.meta_bytes()),
    };
    dev.allocate(0, span)
        .map_err(|e| Error::io(format!("allocating {what} ({span} bytes) of {}", dev.path().display()), e))?;
    // The engine (threads, the io_uring arena) before anything is written, so a refusal
    // leaves no format behind; after the allocation, because io_uring holds the file open
    // after close (a registered file), which would keep a failed allocation's blocks
    // from being freed when the file is removed.
    let engine = Engine::new(engine, dev, geometry.header_bytes() as usize)?;
    let sb = Superblock { device_id: random_device_id()?, geometry };
    // Old checkpoints go first, then the new superblock: a crash in between leaves
    // the old format with no checkpoint, never a new superblock over old entries.
    let mut buf = AlignedBuf::zeroed(geometry.block_size() as usize);
    for which in Container::BOTH {
        dev.write_at(&buf, geometry.container_offset(which)).map_err(|e| Error::io("clearing a checkpoint container", e))?;
    }
    sb.encode(&mut buf);
    // The copy first: until the primary lands, the device does not look formatted.
    if let Some(copy) = geometry.superblock_copy_offset() {
        dev.write_at(&buf, copy).map_err(|e| Error::io("writing the superblock's copy", e))?;
    }
    dev.write_at(&buf, 0).map_err(|e| Error::io("writing the superblock", e))?;
    if let Err(e) = dev.sync() {
        // A superblock that may not be durable is taken back (best effort), copy included.
        let zeros = AlignedBuf::zeroed(buf.len());
        let _ = dev.write_at(&zeros, 0);
        if let Some(copy) = geometry.superblock_copy_offset() {
            let _ = dev.write_at(&zeros, copy);
        }
        return Err(Error::io("syncing the new format", e));
    }
    Ok((sb, engine))
}
