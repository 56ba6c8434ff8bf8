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
            OpenMode::Create(_) => Access::Create,
        };
        let mode = device::OpenMode { access, buffered: opts.buffered, sync_writes: opts.sync_writes };
        let mut dev = Device::open(path, mode)?;
        dev.lock()?;
        let (sb, phase) = match &opts.mode {
            OpenMode::Create(f) => match format(&mut dev, f) {
                Ok(sb) => (sb, Phase::Ready),
                Err(e) => {
                    // Nothing may be left that later looks like a device or hides the failure.
                    dev.undo_format();
                    return Err(e);
                }
            },
            _ => {
                let sb = read_superblock(&dev)?;
                if dev.is_writable() {
                    // A device formatted before the metadata region was allocated at format
                    // gets it now. Best effort: running out of space shows at the checkpoint.
                    let _ = dev.reserve(0, sb.geometry.meta_bytes());
                }
                (sb, Phase::AwaitingRecovery)
            }
        };
        let g = sb.geometry;
        let engine = match Engine::new(&opts.engine, &dev, g.header_bytes() as usize) {
            Ok(engine) => engine,
            Err(e) => {
                if dev.created() {
                    dev.undo_format();
                }
                return Err(e);
            }
        };
        Ok(Store {
            engine,
            faults: FaultTable::default(),
            state: Mutex::new(State {
                index: Index::new(g.slot_count()),
                phase,
                last_generation: Generation(0),
                pending_invalidation: Vec::new(),
            }),
            checkpoints: Mutex::new(checkpoint::Cursor::default()),
            io_totals: Mutex::new(BatchStats::default()),
            records: RecordPool::new(g.record_bytes(g.max_payload()) as usize),
            dev,
            sb,
        })
    }
}

fn read_superblock(dev: &Device) -> Result<Superblock> {
    let len = (dev.logical_block() as usize).max(IO_ALIGN);
    let mut block = AlignedBuf::zeroed(len);
    let shown = dev.path().display();
    if dev.capacity() < len as u64 {
        return Err(Error::Format(format!("{shown} is too small ({} bytes) to hold a rawblock superblock", dev.capacity())));
    }
    dev.read_at(&mut block, 0).map_err(|e| Error::io(format!("reading the superblock of {shown}"), e))?;
    let sb = Superblock::decode(&block, dev.logical_block()).map_err(|e| match e {
        SuperblockError::NotRawblock => Error::NotRawblock { path: dev.path().to_path_buf() },
        e => Error::Format(format!("{shown}: {e}")),
    })?;
    if dev.capacity() < sb.geometry.device_bytes() {
        return Err(Error::Format(format!(
            "{shown} has {} bytes but its superblock describes {} (a truncated copy?)",
            dev.capacity(),
            sb.geometry.device_bytes()
        )));
    }
    Ok(sb)
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

fn format(dev: &mut Device, opts: &FormatOptions) -> Result<Superblock> {
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
    let sb = Superblock { device_id: random_device_id()?, geometry };
    // Old checkpoints go first, then the new superblock: a crash in between leaves
    // the old format with no checkpoint, never a new superblock over old entries.
    let mut buf = AlignedBuf::zeroed(geometry.block_size() as usize);
    for which in Container::BOTH {
        dev.write_at(&buf, geometry.container_offset(which)).map_err(|e| Error::io("clearing a checkpoint container", e))?;
    }
    sb.encode(&mut buf);
    dev.write_at(&buf, 0).map_err(|e| Error::io("writing the superblock", e))?;
    if let Err(e) = dev.sync() {
        // A superblock that may not be durable is taken back (best effort).
        let _ = dev.write_at(&AlignedBuf::zeroed(buf.len()), 0);
        return Err(Error::io("syncing the new format", e));
    }
    Ok(sb)
}
