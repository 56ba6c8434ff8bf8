//! What the bytes mean: the slot store and its jobs, one module each.
//!
//! - [`open`](OpenOptions): opening a device, or formatting one;
//! - `first_start`: open-or-create, and recovery of a handle that just formatted;
//! - `data`: put, get, delete and the record buffers they reuse;
//! - `batch`: the same for many keys in one call, through the engine;
//! - `headers`: batched header reads through the handle's engine;
//! - `checkpoint`: writing and loading the index in the two containers;
//! - `lease`: the lease journal, which slots may have changed since the checkpoint;
//! - `recovery`: rebuilding the index after a restart;
//! - [`index`]: the in-memory map and slot allocation;
//! - `listing`: the indexed keys a page at a time, in key order;
//! - `metrics`: the data calls' counters and latency histograms.
//!
//! Locks, always taken in this order: `checkpoints`, then `lease_io`, then
//! `state`; `records` and `io_totals` are leaves (nothing else is taken while
//! they are held).

mod batch;
mod checkpoint;
mod data;
mod evict;
mod first_start;
mod headers;
pub mod index;
mod keytable;
mod lease;
mod listing;
mod metrics;
mod open;
mod recovery;

use std::sync::{Mutex, MutexGuard};

use crate::device::Device;
use crate::engine::{BatchStats, Engine, EngineKind, FaultTable};
use crate::error::{Error, Oversized, Result};
use crate::format::{Generation, Geometry, SlotIndex, Superblock};
use crate::sync::lock;
use index::Index;

pub use checkpoint::{AutoCheckpoint, CheckpointInfo};
pub use evict::{Evicted, Eviction, EvictionPolicy, MAX_EVICTED_QUEUED};
pub use headers::HeaderRead;
pub use lease::VerifyProgress;
pub use listing::{KeyCursor, KeyInfo};
pub use metrics::{Latency, MetricsSnapshot};
pub use open::{FormatOptions, OpenMode, OpenOptions, SuperblockSource};
pub use recovery::{RecoverMode, RecoverOptions, RecoverReport, RecoveredFrom};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Opened an existing device: the index is empty until recovery runs,
    /// so writes are refused (they could overwrite slots a checkpoint names).
    AwaitingRecovery,
    /// Formatted by this handle and not written since: recovery has nothing to rebuild and
    /// answers an empty report. Served like `Ready`; the first write makes it `Ready`.
    Fresh,
    Ready,
}

struct State {
    index: Index,
    phase: Phase,
    last_generation: Generation,
    /// Slots holding superseded copies found by recovery, to invalidate
    /// before the first write so a later delete cannot resurrect them.
    pending_invalidation: Vec<SlotIndex>,
    /// Evicted keys the server has not drained yet.
    evicted: evict::EvictedQueue,
    /// What a put does when no slot is free (none by default).
    eviction: Eviction,
    /// Slots leased since the checkpoint (devices with a lease journal).
    leases: lease::Leases,
    /// Puts, deletes and evictions since open, and their count at the last checkpoint.
    changes: u64,
    checkpointed_changes: u64,
    /// When the handle checkpoints by itself, and when it last checkpointed.
    auto_checkpoint: checkpoint::AutoCheckpoint,
    checkpointed_at: std::time::Instant,
    auto_checkpoint_failures: u64,
    /// Changed entries, in thousandths of the index, up to which a checkpoint is a delta.
    delta_max_permille: u32,
}

/// An open rawblock device. All methods take `&self` and are safe to call
/// from several threads at once.
pub struct Store {
    dev: Device,
    sb: Superblock,
    engine: Engine,
    faults: FaultTable,
    state: Mutex<State>,
    checkpoints: Mutex<checkpoint::Cursor>,
    /// Held while a lease batch is written, and while a checkpoint's snapshot is taken.
    lease_io: Mutex<()>,
    /// An auto-checkpoint policy is set (read by every write call without the state lock).
    auto_checkpoint_on: std::sync::atomic::AtomicBool,
    io_totals: Mutex<BatchStats>,
    records: data::RecordPool,
    superblock_source: SuperblockSource,
    /// This handle formatted the device when it opened.
    formatted: bool,
    metrics: metrics::Metrics,
}

impl Store {
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
        self.engine.note()
    }
    /// Whether the superblock was read from its copy because the primary was damaged
    /// (a writable handle has rewritten the primary by now).
    pub fn superblock_source(&self) -> SuperblockSource {
        self.superblock_source
    }
    /// Reads in flight at most: the queue depth (io_uring) or the thread count (POSIX).
    pub fn queue_depth(&self) -> usize {
        self.engine.concurrency()
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

    /// The state, once the handle may serve reads.
    fn ready(&self) -> Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        if st.phase == Phase::AwaitingRecovery {
            return Err(Error::NeedsRecovery);
        }
        Ok(st)
    }

    /// The state, once the handle may write: pending invalidations are done first.
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
        if st.phase == Phase::Fresh {
            st.phase = Phase::Ready;
        }
        Ok(st)
    }

    fn check_key(&self, key: &[u8]) -> Result<()> {
        let max = self.sb.geometry.max_key_bytes();
        if key.is_empty() {
            return Err(Error::InvalidArgument("empty key".into()));
        }
        if key.len() > max as usize {
            return Err(Error::TooLarge { what: Oversized::Key, len: key.len() as u64, max: max.into() });
        }
        Ok(())
    }
}

impl State {
    /// Slots no entry holds and no write is using: free, or leased and unused.
    fn free_slots(&self) -> usize {
        self.index.free_slots() + self.leases.pooled()
    }

    /// Installs a newly written entry: its slot is no longer in flight. An error (no memory
    /// for the key) changes nothing: the caller undoes the write as a failed one.
    fn install(&mut self, key: &[u8], entry: index::Entry) -> Result<index::Displaced> {
        let displaced = self.index.install(key, entry)?;
        self.leases.settle(entry.slot);
        self.changes += 1;
        Ok(displaced)
    }

    /// A hybrid clock: increasing within a run, and ahead of every earlier
    /// run's generations after a restart, even those no checkpoint recorded.
    fn next_generation(&mut self) -> Generation {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        self.last_generation = Generation((self.last_generation.0 + 1).max(now));
        self.last_generation
    }
}

#[cfg(test)]
mod batch_tests;
#[cfg(test)]
mod evict_tests;
#[cfg(test)]
mod lease_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) use tests::tmp as tmp_path;
