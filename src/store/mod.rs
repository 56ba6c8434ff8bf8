//! What the bytes mean: the slot store (index, allocation, put/get/delete),
//! its checkpoints and its recovery.

mod checkpoint;
pub mod index;
mod recovery;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use crate::sync::lock;

use crate::aligned::AlignedBuf;
use crate::device::{random_device_id, Device, OpenMode};
use crate::engine::{BatchStats, Decoder, Engine, EngineConfig, EngineKind, FaultMode, FaultTable, ReadCtx, ReadPlan};
use crate::error::{Error, Result};
use crate::format::superblock::SuperblockError;
use crate::format::{crc32, Geometry, GeometryRequest, SlotHeader, SlotState, Superblock};
use index::{Displaced, Entry, Index};

pub use checkpoint::CheckpointInfo;
pub use recovery::{RecoverMode, RecoverOptions, RecoverReport, RecoveredFrom};

/// How to open (and possibly format) a device.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenOptions {
    pub engine: EngineConfig,
    /// Format the device with `geometry`.
    pub create: bool,
    /// Allow formatting over a rawblock superblock or other data.
    pub overwrite_ok: bool,
    pub read_only: bool,
    /// Turn O_DIRECT off.
    pub buffered: bool,
    /// O_DSYNC: every acknowledged write is durable across power loss.
    pub sync_writes: bool,
    pub geometry: GeometryRequest,
    /// Bytes to use when formatting; 0 means the whole device (or the file's current size).
    pub capacity_bytes: u64,
}

/// How much of the start of a device is checked for existing data before formatting.
const FORMAT_PROBE_BYTES: usize = 64 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Opened an existing device: the index is empty until rb_recover runs,
    /// so writes are refused (they could overwrite slots a checkpoint names).
    AwaitingRecovery,
    Ready,
}

struct State {
    index: Index,
    phase: Phase,
    last_generation: u64,
    /// Slots holding superseded copies found by recovery, to invalidate
    /// before the first write so a later delete cannot resurrect them.
    pending_invalidation: Vec<u64>,
}

/// An open rawblock device. All methods take `&self` and are safe to call
/// from several threads at once.
pub struct Store {
    dev: Device,
    sb: Superblock,
    engine: Engine,
    engine_note: Option<String>,
    faults: FaultTable,
    state: Mutex<State>,
    checkpoints: Mutex<checkpoint::Cursor>,
    io_totals: Mutex<BatchStats>,
    /// Record-sized aligned buffers for put/get, reused so the data path does not
    /// allocate (and fault in) a fresh megabyte per call.
    record_bufs: Mutex<Vec<AlignedBuf>>,
}

/// Most record buffers kept for reuse; more concurrent calls allocate and free their own.
const KEPT_RECORD_BUFS: usize = 16;

impl Store {
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Store> {
        if opts.create && opts.read_only {
            return Err(Error::InvalidArgument("RB_OPEN_CREATE and RB_OPEN_READ_ONLY exclude each other".into()));
        }
        let mode = OpenMode { write: !opts.read_only, create: opts.create, buffered: opts.buffered, sync_writes: opts.sync_writes };
        let mut dev = Device::open(path, mode)?;
        dev.lock()?;
        let sb = if opts.create { format(&mut dev, opts)? } else { read_superblock(&dev)? };
        let g = sb.geometry;
        let (engine, engine_note) = Engine::new(&opts.engine, &dev, g.header_bytes as usize)?;
        let phase = if opts.create { Phase::Ready } else { Phase::AwaitingRecovery };
        Ok(Store {
            engine,
            engine_note,
            faults: FaultTable::default(),
            state: Mutex::new(State {
                index: Index::new(g.slot_count),
                phase,
                last_generation: 0,
                pending_invalidation: Vec::new(),
            }),
            checkpoints: Mutex::new(checkpoint::Cursor::default()),
            io_totals: Mutex::new(BatchStats::default()),
            record_bufs: Mutex::new(Vec::new()),
            dev,
            sb,
        })
    }

    pub fn geometry(&self) -> &Geometry {
        &self.sb.geometry
    }
    pub fn device_id(&self) -> [u8; 16] {
        self.sb.device_id
    }
    pub fn engine_kind(&self) -> EngineKind {
        self.engine.kind()
    }
    /// Why AUTO did not pick io_uring, if it did not.
    pub fn engine_note(&self) -> Option<&str> {
        self.engine_note.as_deref()
    }
    pub fn queue_depth(&self) -> usize {
        match &self.engine {
            Engine::IoUring(u) => u.queue_depth(),
            Engine::Posix(p) => p.threads(),
        }
    }
    pub fn is_read_only(&self) -> bool {
        !self.dev.is_writable()
    }
    pub fn is_direct(&self) -> bool {
        self.dev.is_direct()
    }
    pub fn len(&self) -> usize {
        lock(&self.state).index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Approximate heap bytes of the index per indexed entry.
    pub fn index_bytes_per_entry(&self) -> f64 {
        let st = lock(&self.state);
        st.index.approx_bytes() as f64 / st.index.len().max(1) as f64
    }

    fn ready(&self) -> Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.phase == Phase::AwaitingRecovery {
            return Err(Error::State("call rb_recover before using an existing device".into()));
        }
        Ok(st)
    }

    fn writable(&self) -> Result<MutexGuard<'_, State>> {
        if self.is_read_only() {
            return Err(Error::ReadOnly);
        }
        let mut st = self.ready()?;
        while let Some(slot) = st.pending_invalidation.pop() {
            drop(st);
            if let Err(e) = self.invalidate(slot) {
                // Keep it pending: the next write tries again.
                lock(&self.state).pending_invalidation.push(slot);
                return Err(e);
            }
            st = self.ready()?;
        }
        Ok(st)
    }

    /// A buffer of the largest record (header + max payload), from the pool when one is free.
    fn take_record_buf(&self) -> AlignedBuf {
        lock(&self.record_bufs)
            .pop()
            .unwrap_or_else(|| AlignedBuf::zeroed(self.sb.geometry.record_bytes(self.sb.geometry.max_payload()) as usize))
    }

    fn return_record_buf(&self, buf: AlignedBuf) {
        let mut pool = lock(&self.record_bufs);
        if pool.len() < KEPT_RECORD_BUFS {
            pool.push(buf);
        }
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.sb.geometry.max_key_bytes;
        if key.is_empty() {
            return Err(Error::InvalidArgument("empty key".into()));
        }
        if key.len() > max as usize {
            return Err(Error::TooLarge(format!("key of {} bytes exceeds the device's maximum of {max}", key.len())));
        }
        Ok(())
    }

    fn next_generation(st: &mut State) -> u64 {
        // A hybrid clock: increasing within a run, and ahead of every earlier
        // run's generations after a restart, even those no checkpoint recorded.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        st.last_generation = (st.last_generation + 1).max(now);
        st.last_generation
    }

    /// Stores `value` under `key` in a newly allocated slot; a previous value of the key is
    /// invalidated on the device before this returns.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let g = self.sb.geometry;
        if value.len() as u64 > g.max_payload() {
            return Err(Error::TooLarge(format!("value of {} bytes exceeds the slot payload of {}", value.len(), g.max_payload())));
        }
        let (slot, generation) = {
            let mut st = self.writable()?;
            let slot = st.index.allocate().ok_or_else(|| {
                Error::NoSpace(format!("all {} slots are in use; delete keys to make room", g.slot_count))
            })?;
            (slot, Self::next_generation(&mut st))
        };
        let payload_crc = crc32(value);
        let mut buf = self.take_record_buf();
        let rec = &mut buf[..g.record_bytes(value.len() as u64) as usize];
        let hb = g.header_bytes as usize;
        SlotHeader { device_id: self.sb.device_id, slot, generation, payload_len: value.len() as u64, payload_crc, key }
            .encode(&mut rec[..hb]);
        rec[hb..hb + value.len()].copy_from_slice(value);
        rec[hb + value.len()..].fill(0); // the padding: no bytes of an earlier value reach the device
        let written = self.dev.write_at(rec, g.slot_offset(slot));
        self.return_record_buf(buf);
        if let Err(e) = written {
            lock(&self.state).index.release(slot);
            return Err(Error::io(format!("writing slot {slot}"), e));
        }
        let entry = Entry { slot, generation, payload_len: value.len() as u64, payload_crc, verified: true };
        let displaced = lock(&self.state).index.install(key, entry);
        match displaced {
            Displaced::Nothing => Ok(()),
            Displaced::Replaced(old) | Displaced::Superseded(old) => self.invalidate(old.slot),
        }
    }

    /// Overwrites a slot's header with zeros, then frees the slot. If the write fails the
    /// slot stays allocated (never reused) so its stale header cannot be mistaken later.
    fn invalidate(&self, slot: u64) -> Result<()> {
        let zeros = AlignedBuf::zeroed(self.sb.geometry.block_size as usize);
        self.dev
            .write_at(&zeros, self.sb.geometry.slot_offset(slot))
            .map_err(|e| Error::io(format!("invalidating the old header of slot {slot}"), e))?;
        lock(&self.state).index.release(slot);
        Ok(())
    }

    /// Copies the value of `key` into `out` and returns its length. The header and payload
    /// are verified first: a mismatch is [`Error::Corrupt`], never wrong bytes.
    pub fn get(&self, key: &[u8], out: &mut [u8]) -> Result<usize> {
        self.check_key(key)?;
        let g = self.sb.geometry;
        // A concurrent replace or delete can reuse the slot between lookup and read;
        // that shows as a changed index entry, and the lookup is retried.
        for _ in 0..64 {
            let e = self.ready()?.index.get(key).ok_or(Error::NotFound)?;
            if (out.len() as u64) < e.payload_len {
                return Err(Error::BufferTooSmall { needed: e.payload_len });
            }
            let mut buf = self.take_record_buf();
            let rec = &mut buf[..g.record_bytes(e.payload_len) as usize];
            let read = self.dev.read_at(rec, g.slot_offset(e.slot));
            let verdict = match read {
                Err(err) => Err(Error::io(format!("reading slot {}", e.slot), err)),
                Ok(()) => match self.verify(rec, key, &e) {
                    Ok(payload) => {
                        out[..payload.len()].copy_from_slice(payload);
                        Ok(Some(payload.len()))
                    }
                    Err(why) if self.ready()?.index.get(key) == Some(e) => {
                        Err(Error::Corrupt(format!("slot {} of key: {why}", e.slot)))
                    }
                    Err(_) => Ok(None),
                },
            };
            self.return_record_buf(buf);
            match verdict {
                Ok(Some(n)) => return Ok(n),
                Ok(None) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(Error::Busy("the key kept changing under concurrent writes".into()))
    }

    fn verify<'a>(&self, rec: &'a [u8], key: &[u8], e: &Entry) -> std::result::Result<&'a [u8], &'static str> {
        let hb = self.sb.geometry.header_bytes as usize;
        let h = match SlotHeader::classify(&rec[..hb], &self.sb.device_id, e.slot) {
            SlotState::Valid(h) => h,
            SlotState::Empty => return Err("the slot header is gone"),
            SlotState::Corrupt => return Err("the slot header fails its CRC"),
            SlotState::Foreign => return Err("the slot header belongs to another device or slot"),
        };
        if h.key != key || h.generation != e.generation || h.payload_len != e.payload_len || h.payload_crc != e.payload_crc {
            return Err("the slot header names another value");
        }
        let payload = &rec[hb..hb + e.payload_len as usize];
        if crc32(payload) != h.payload_crc {
            return Err("the payload fails its CRC32");
        }
        Ok(payload)
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

    /// Removes `key`; its header is invalidated on the device before this returns.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.check_key(key)?;
        let e = self.writable()?.index.remove(key).ok_or(Error::NotFound)?;
        self.invalidate(e.slot)
    }

    /// Reads and classifies the headers of `slots`; `f(slot, state)` builds each output.
    pub fn read_headers<T: Send>(
        &self,
        slots: &[u64],
        out: &mut [T],
        f: &(dyn Fn(u64, HeaderRead<'_>) -> T + Sync),
    ) -> Result<BatchStats> {
        if slots.len() != out.len() {
            return Err(Error::InvalidArgument("one output per slot".into()));
        }
        let n = self.sb.geometry.slot_count;
        if let Some(&bad) = slots.iter().find(|&&s| s >= n) {
            return Err(Error::InvalidArgument(format!("slot {bad} is out of range (the device has {n} slots)")));
        }
        let id = self.sb.device_id;
        let decode = move |_: usize, slot: u64, r: crate::engine::ReadResult<'_>| {
            f(slot, match r {
                Ok(block) => HeaderRead::State(SlotHeader::classify(block, &id, slot)),
                Err(errno) => HeaderRead::IoError(errno),
            })
        };
        Ok(self.read_slot_headers(slots, out, &decode))
    }

    /// The one place header reads go through the engine.
    fn read_slot_headers<T: Send>(&self, slots: &[u64], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let g = self.sb.geometry;
        let plan = ReadPlan { base: g.data_base(), stride: g.slot_bytes, len: g.header_bytes as usize };
        let ctx = ReadCtx { dev: &self.dev, faults: &self.faults, plan };
        let stats = self.engine.read_slots(ctx, slots, out, decode);
        lock(&self.io_totals).merge(&stats);
        stats
    }

    /// Counters of every batched read on this handle since open or the last reset.
    pub fn io_stats(&self) -> BatchStats {
        *lock(&self.io_totals)
    }
    pub fn reset_io_stats(&self) {
        *lock(&self.io_totals) = BatchStats::default();
    }

    pub fn inject_read_faults(&self, slots: &[u64], errno: i32, mode: FaultMode) {
        self.faults.inject(slots, errno, mode)
    }
    pub fn clear_read_faults(&self) {
        self.faults.clear()
    }
}

/// A header as read from the device, or the errno its read failed with.
#[derive(Clone, Copy, Debug)]
pub enum HeaderRead<'a> {
    State(SlotState<'a>),
    IoError(i32),
}

fn read_superblock(dev: &Device) -> Result<Superblock> {
    let len = (dev.logical_block() as usize).max(crate::aligned::IO_ALIGN);
    let mut block = AlignedBuf::zeroed(len);
    let shown = dev.path().display();
    if dev.capacity() < len as u64 {
        return Err(Error::Format(format!("{shown} is too small ({} bytes) to hold a rawblock superblock", dev.capacity())));
    }
    dev.read_at(&mut block, 0).map_err(|e| Error::io(format!("reading the superblock of {shown}"), e))?;
    let sb = Superblock::decode(&block, dev.logical_block()).map_err(|e| match e {
        SuperblockError::NotRawblock => Error::Format(format!("{shown}: {e}; open with RB_OPEN_CREATE to format it")),
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

fn format(dev: &mut Device, opts: &OpenOptions) -> Result<Superblock> {
    let shown = dev.path().display().to_string();
    let capacity = match opts.capacity_bytes {
        0 if dev.capacity() == 0 => {
            return Err(Error::InvalidArgument(format!(
                "{shown} is empty: give capacity_bytes to say how large to make it"
            )))
        }
        0 => dev.capacity(),
        c if dev.kind() == crate::device::DeviceKind::BlockDevice && c > dev.capacity() => {
            return Err(Error::InvalidArgument(format!("capacity {c} exceeds the device's {} bytes", dev.capacity())))
        }
        c => c,
    };
    if !opts.overwrite_ok {
        let probe = (dev.capacity() as usize).min(FORMAT_PROBE_BYTES) / 4096 * 4096;
        if probe > 0 {
            let mut head = AlignedBuf::zeroed(probe);
            dev.read_at(&mut head, 0).map_err(|e| Error::io(format!("reading the start of {shown}"), e))?;
            if head.iter().any(|&b| b != 0) {
                let what = if head.starts_with(&crate::format::superblock::MAGIC) { "a rawblock device" } else { "data" };
                return Err(Error::Exists(format!(
                    "{shown} already holds {what}; pass RB_OPEN_OVERWRITE_OK to format it anyway"
                )));
            }
        }
    }
    let geometry = Geometry::plan(&opts.geometry, capacity, dev.logical_block())?;
    dev.extend_to(geometry.device_bytes())?;
    let sb = Superblock { device_id: random_device_id()?, geometry };
    // Old checkpoints go first, then the new superblock: a crash in between leaves
    // the old format with no checkpoint, never a new superblock over old entries.
    let block = geometry.block_size as usize;
    let mut buf = AlignedBuf::zeroed(block);
    for which in 0..2 {
        dev.write_at(&buf, geometry.container_offset(which)).map_err(|e| Error::io("clearing a checkpoint container", e))?;
    }
    sb.encode(&mut buf);
    dev.write_at(&buf, 0).map_err(|e| Error::io("writing the superblock", e))?;
    dev.sync().map_err(|e| Error::io("syncing the new format", e))?;
    Ok(sb)
}

#[cfg(test)]
mod tests;
