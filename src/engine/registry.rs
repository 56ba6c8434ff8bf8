//! Caller memory registered with the handle (the pinned pool of a serving engine),
//! so reads and writes into it use io_uring fixed buffers.
//!
//! Each region takes one entry of every ring's fixed-buffer table (entry 0 is the
//! ring's own arena). A ring brings its table up to date when it is checked out,
//! so a region registered before a call starts is usable by that call. A call
//! holds a use count on every region its I/O touches; unregistering waits until
//! none is held, so the kernel never reads or writes memory the caller has
//! taken back.

use std::sync::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::sync::{lock, wait};

/// Regions a handle can hold at once (each is one fixed-buffer table entry per ring).
pub const MAX_REGIONS: usize = 64;

/// Largest region: io_uring refuses a single fixed buffer above 1 GiB.
pub const MAX_REGION_BYTES: usize = 1 << 30;

/// A registered region, as the caller names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RegionId(pub u32);

#[derive(Clone, Copy, Debug)]
struct Region {
    start: usize,
    len: usize,
    /// I/Os of calls in flight that use this region.
    users: usize,
    /// Unregistering: no new user may take it.
    leaving: bool,
}

#[derive(Default)]
struct Table {
    slots: Vec<Option<Region>>,
    /// Bumped on every change; rings compare it with the version they applied.
    version: u64,
}

#[derive(Default)]
pub struct Registry {
    table: Mutex<Table>,
    released: Condvar,
}

/// What a ring's fixed-buffer table must hold: entry `1 + i` is region `i`, or empty.
pub struct Snapshot {
    pub version: u64,
    pub regions: Vec<Option<(usize, usize)>>,
}

/// A use of one region by one I/O; dropping it lets an unregister proceed.
pub struct Use<'r> {
    registry: &'r Registry,
    slot: usize,
    /// The ring table entry: 1 + the region's slot.
    pub buf_index: u16,
}

impl Drop for Use<'_> {
    fn drop(&mut self) {
        let mut t = lock(&self.registry.table);
        if let Some(r) = t.slots[self.slot].as_mut() {
            r.users -= 1;
            if r.users == 0 && r.leaving {
                self.registry.released.notify_all();
            }
        }
    }
}

impl Registry {
    /// Registers `len` bytes at `start`. Regions must not overlap.
    pub fn register(&self, start: usize, len: usize) -> Result<RegionId> {
        if len == 0 || len > MAX_REGION_BYTES || start.checked_add(len).is_none() {
            return Err(Error::InvalidArgument(format!("a region of {len} bytes must be 1..={MAX_REGION_BYTES}")));
        }
        let mut t = lock(&self.table);
        let overlaps = t.slots.iter().flatten().any(|r| start < r.start + r.len && r.start < start + len);
        if overlaps {
            return Err(Error::InvalidArgument("the region overlaps one already registered".into()));
        }
        let slot = match t.slots.iter().position(Option::is_none) {
            Some(s) => s,
            None if t.slots.len() < MAX_REGIONS => {
                t.slots.push(None);
                t.slots.len() - 1
            }
            None => return Err(Error::Busy(format!("all {MAX_REGIONS} memory regions are registered"))),
        };
        t.slots[slot] = Some(Region { start, len, users: 0, leaving: false });
        t.version += 1;
        Ok(RegionId(slot as u32))
    }

    /// Unregisters a region once no call in flight uses it (waits for them).
    pub fn unregister(&self, id: RegionId) -> Result<()> {
        let slot = id.0 as usize;
        let mut t = lock(&self.table);
        match t.slots.get_mut(slot) {
            Some(Some(r)) if !r.leaving => r.leaving = true,
            _ => return Err(Error::InvalidArgument(format!("region {} is not registered", id.0))),
        }
        while t.slots[slot].is_some_and(|r| r.users > 0) {
            t = wait(&self.released, t);
        }
        t.slots[slot] = None;
        t.version += 1;
        Ok(())
    }

    /// A use of the region holding all of `ptr..ptr+len`, if one does and is not leaving.
    pub fn find(&self, ptr: *const u8, len: usize) -> Option<Use<'_>> {
        let (start, end) = (ptr as usize, ptr as usize + len);
        let mut t = lock(&self.table);
        let slot = t.slots.iter().position(|r| r.is_some_and(|r| !r.leaving && r.start <= start && end <= r.start + r.len))?;
        t.slots[slot].as_mut().expect("found").users += 1;
        Some(Use { registry: self, slot, buf_index: 1 + slot as u16 })
    }

    pub fn version(&self) -> u64 {
        lock(&self.table).version
    }

    /// The table a ring must apply; regions leaving are still listed (their I/O may be running).
    pub fn snapshot(&self) -> Snapshot {
        let t = lock(&self.table);
        Snapshot { version: t.version, regions: t.slots.iter().map(|r| r.map(|r| (r.start, r.len))).collect() }
    }

    pub fn is_empty(&self) -> bool {
        lock(&self.table).slots.iter().all(Option::is_none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn regions_register_find_and_leave() {
        let r = Registry::default();
        let a = r.register(4096, 8192).unwrap();
        assert!(r.register(8192, 4096).is_err(), "overlap");
        let b = r.register(65536, 4096).unwrap();
        assert_ne!(a, b);
        assert_eq!(r.find(4096 as *const u8, 8192).map(|u| u.buf_index), Some(1 + a.0 as u16));
        assert!(r.find(4096 as *const u8, 8193).is_none(), "runs past the region");
        assert!(r.find(std::ptr::null(), 16).is_none());
        let v = r.version();
        r.unregister(a).unwrap();
        assert!(r.version() > v);
        assert!(r.find(4096 as *const u8, 16).is_none());
        assert!(r.unregister(a).is_err(), "twice");
        assert_eq!(r.register(4096, 4096).unwrap(), a, "the slot is reused");
    }

    #[test]
    fn unregister_waits_for_uses_in_flight() {
        let r = Arc::new(Registry::default());
        let id = r.register(1 << 20, 1 << 20).unwrap();
        let held = r.find((1 << 20) as *const u8, 4096).unwrap();
        let r2 = r.clone();
        let t = std::thread::spawn(move || r2.unregister(id));
        std::thread::sleep(Duration::from_millis(50));
        assert!(!t.is_finished(), "unregister returned while an I/O used the region");
        assert!(r.find((1 << 20) as *const u8, 4096).is_none(), "a leaving region takes no new users");
        drop(held);
        t.join().unwrap().unwrap();
        assert!(r.is_empty());
    }
}
