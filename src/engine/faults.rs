//! Injected read faults: a documented testing aid (like SQLite's test
//! controls) that acts inside each engine's real completion path, so tests
//! exercise the production batching and fallback code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::format::SlotIndex;
use crate::sync::lock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// Every read of the slot fails, batched and fallback alike.
    Persistent,
    /// The next batched read of the slot fails; its per-slot retry succeeds.
    Transient,
    /// The next submit fails as a whole (slots are ignored).
    Submit,
}

#[derive(Default)]
struct Faults {
    slots: HashMap<SlotIndex, (i32, FaultMode)>,
    submit: Option<i32>,
}

/// The faults armed on one handle. Costs one relaxed load per read when none are armed.
#[derive(Default)]
pub struct FaultTable {
    armed: AtomicBool,
    faults: Mutex<Faults>,
}

impl FaultTable {
    pub fn inject(&self, slots: &[SlotIndex], errno: i32, mode: FaultMode) {
        let mut f = lock(&self.faults);
        match mode {
            FaultMode::Submit => f.submit = Some(errno),
            _ => f.slots.extend(slots.iter().map(|&s| (s, (errno, mode)))),
        }
        self.armed.store(true, Ordering::Release);
    }

    pub fn clear(&self) {
        let mut f = lock(&self.faults);
        *f = Faults::default();
        self.armed.store(false, Ordering::Release);
    }

    /// The errno a batched read of `slot` fails with, if one is armed. A transient fault fires once.
    pub fn batched_read(&self, slot: SlotIndex) -> Option<i32> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut f = lock(&self.faults);
        match f.slots.get(&slot).copied() {
            Some((errno, FaultMode::Transient)) => {
                f.slots.remove(&slot);
                Some(errno)
            }
            Some((errno, _)) => Some(errno),
            None => None,
        }
    }

    /// The errno a per-slot fallback read of `slot` fails with: persistent faults only.
    pub fn fallback_read(&self, slot: SlotIndex) -> Option<i32> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        match lock(&self.faults).slots.get(&slot) {
            Some(&(errno, FaultMode::Persistent)) => Some(errno),
            _ => None,
        }
    }

    /// Takes the armed submit fault, if any.
    pub fn take_submit(&self) -> Option<i32> {
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.faults).submit.take()
    }

}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        let t = FaultTable::default();
        assert_eq!(t.batched_read(SlotIndex(1)), None);
        t.inject(&[SlotIndex(1)], libc::EIO, FaultMode::Persistent);
        t.inject(&[SlotIndex(2)], libc::ENODATA, FaultMode::Transient);
        t.inject(&[], libc::EBADF, FaultMode::Submit);
        assert_eq!((t.batched_read(SlotIndex(1)), t.fallback_read(SlotIndex(1))), (Some(libc::EIO), Some(libc::EIO)));
        assert_eq!(t.batched_read(SlotIndex(1)), Some(libc::EIO), "persistent stays");
        assert_eq!(t.fallback_read(SlotIndex(2)), None);
        assert_eq!(t.batched_read(SlotIndex(2)), Some(libc::ENODATA));
        assert_eq!(t.batched_read(SlotIndex(2)), None, "transient fires once");
        assert_eq!(t.take_submit(), Some(libc::EBADF));
        assert_eq!(t.take_submit(), None);
        t.clear();
        assert_eq!(t.batched_read(SlotIndex(1)), None);
    }
}
