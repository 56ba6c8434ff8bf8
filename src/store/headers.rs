//! Batched header reads through the handle's engine, and their counters.

use super::Store;
use crate::engine::{BatchStats, Decoder, FaultMode, ReadCtx, ReadPlan, ReadResult};
use crate::error::{Error, Result};
use crate::format::{SlotHeader, SlotIndex, SlotState};
use crate::sync::lock;

/// A header as read from the device, or the errno its read failed with.
#[derive(Clone, Copy, Debug)]
pub enum HeaderRead<'a> {
    State(SlotState<'a>),
    IoError(i32),
}

impl Store {
    /// Reads and classifies the headers of `slots`; `f(slot, state)` builds each output.
    pub fn read_headers<T: Send>(
        &self,
        slots: &[SlotIndex],
        out: &mut [T],
        f: &(dyn Fn(SlotIndex, HeaderRead<'_>) -> T + Sync),
    ) -> Result<BatchStats> {
        if slots.len() != out.len() {
            return Err(Error::InvalidArgument("one output per slot".into()));
        }
        let g = &self.sb.geometry;
        if let Some(bad) = slots.iter().find(|&&s| !g.has_slot(s)) {
            return Err(Error::InvalidArgument(format!("slot {bad} is out of range (the device has {} slots)", g.slot_count())));
        }
        let id = self.sb.device_id;
        let decode = move |_: usize, slot: SlotIndex, r: ReadResult<'_>| {
            f(slot, match r {
                Ok(block) => HeaderRead::State(SlotHeader::classify(block, &id, slot)),
                Err(errno) => HeaderRead::IoError(errno),
            })
        };
        Ok(self.read_slot_headers(slots, out, &decode))
    }

    /// The one place header reads go through the engine.
    pub(super) fn read_slot_headers<T: Send>(&self, slots: &[SlotIndex], out: &mut [T], decode: &Decoder<'_, T>) -> BatchStats {
        let g = self.sb.geometry;
        let plan = ReadPlan { base: g.data_base(), stride: g.slot_bytes(), len: g.header_bytes() as usize };
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

    /// Testing aid: makes reads of `slots` fail with `errno` inside the engine.
    pub fn inject_read_faults(&self, slots: &[SlotIndex], errno: i32, mode: FaultMode) {
        self.faults.inject(slots, errno, mode)
    }
    pub fn clear_read_faults(&self) {
        self.faults.clear()
    }
}
