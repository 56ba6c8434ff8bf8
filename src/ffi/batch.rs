//! Batched calls: arrays of rb_item in, a status per item out.

use std::ffi::c_void;

use super::boundary::{guard, invalid, out_size};
use super::types::*;
use super::device;
use crate::error::{Error, Status};

/// The caller's rb_item array: `n` elements, `stride` (items[0].struct_size) bytes apart.
struct Items {
    base: *mut u8,
    stride: usize,
    n: usize,
}

impl Items {
    /// # Safety
    /// `items` is NULL (with `n` 0) or points to `n` elements of items[0].struct_size bytes.
    unsafe fn new(items: *mut rb_item, n: usize) -> Result<Items, Error> {
        if n == 0 {
            return Ok(Items { base: std::ptr::null_mut(), stride: 0, n: 0 });
        }
        // SAFETY: non-NULL is checked by out_size; items[0] begins with the caller's struct_size.
        let stride = unsafe { out_size(items) }?;
        if n.checked_mul(stride).is_none_or(|b| b > isize::MAX as usize) {
            return Err(invalid(format!("{n} items of {stride} bytes overflow memory")));
        }
        Ok(Items { base: items.cast(), stride, n })
    }

    fn at(&self, i: usize) -> *mut rb_item {
        // SAFETY: i < n and the caller provided n * stride bytes.
        unsafe { self.base.add(i * self.stride) }.cast()
    }

    /// The fields this library reads, from element i (each element holds at least rb_item's ABI 1 size).
    fn read(&self, i: usize) -> rb_item {
        // SAFETY: element i has at least rb_item::MIN_SIZE readable bytes; unaligned strides are allowed.
        unsafe { self.at(i).read_unaligned() }
    }

    fn set(&self, i: usize, status: rb_status, len: usize) {
        let p = self.at(i);
        // SAFETY: element i is writable; only the two out fields are written.
        unsafe {
            std::ptr::addr_of_mut!((*p).status).write_unaligned(status);
            std::ptr::addr_of_mut!((*p).len).write_unaligned(len);
        }
    }

    fn set_status(&self, i: usize, status: rb_status) {
        let p = self.at(i);
        // SAFETY: element i is writable.
        unsafe { std::ptr::addr_of_mut!((*p).status).write_unaligned(status) };
    }
}

/// The key of an item, or the reason it is unusable.
fn key_of<'a>(it: &rb_item) -> Result<&'a [u8], Error> {
    // SAFETY: the caller promises key_len readable bytes at key.
    unsafe { super::boundary::bytes(it.key, it.key_len, "key") }
}

fn status_of(e: &Error) -> rb_status {
    e.status() as rb_status
}

/// Keys of the items whose key is usable; the others get RB_E_INVALID_ARGUMENT at once.
fn usable_keys<'a>(items: &Items) -> (Vec<usize>, Vec<&'a [u8]>) {
    let (mut idx, mut keys) = (Vec::with_capacity(items.n), Vec::with_capacity(items.n));
    for i in 0..items.n {
        match key_of(&items.read(i)) {
            Ok(k) => {
                idx.push(i);
                keys.push(k);
            }
            Err(_) => items.set(i, Status::InvalidArgument as rb_status, 0),
        }
    }
    (idx, keys)
}

/// Gets many keys in one call; items[i].status says how each went. The call itself fails
/// only for a bad handle or array (RB_E_INVALID_ARGUMENT, RB_E_STATE); RB_OK means every
/// item has its status. Reads go through the handle's engine, queue_depth in flight.
/// Zero-copy: a destination aligned to 4096 bytes with value_len >= the value's length
/// rounded up to the device's block size receives the payload directly; others are
/// filled through a bounce buffer. On a failed item the destination's contents are
/// unspecified; RB_E_BUFFER_TOO_SMALL sets len to the length needed.
///
/// # Safety
/// `dev` is a live handle; `items` has `n` elements of items[0].struct_size bytes, each
/// key with key_len readable bytes and each value with value_len writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_get_many(dev: *mut rb_device, items: *mut rb_item, n: usize) -> rb_status {
    guard("rb_get_many", || {
        // SAFETY: per the contract above.
        let (s, items) = unsafe { (device(dev)?, Items::new(items, n)?) };
        let (usable, usable_keys) = usable_keys(&items);
        let (mut idx, mut keys, mut outs) = (Vec::new(), Vec::new(), Vec::<&mut [u8]>::new());
        for (i, key) in usable.into_iter().zip(usable_keys) {
            let it = items.read(i);
            if it.value.is_null() && it.value_len > 0 || it.value_len > isize::MAX as usize {
                items.set(i, RB_E_INVALID_ARGUMENT, 0);
                continue;
            }
            idx.push(i);
            keys.push(key);
            outs.push(if it.value_len == 0 {
                &mut []
            } else {
                // SAFETY: the caller provides value_len writable bytes at value.
                unsafe { std::slice::from_raw_parts_mut(it.value.cast::<u8>(), it.value_len) }
            });
        }
        let results = s.get_many(&keys, &mut outs)?;
        for (&i, r) in idx.iter().zip(results) {
            match r {
                Ok(len) => items.set(i, RB_OK, len),
                Err(Error::BufferTooSmall { needed }) => items.set(i, RB_E_BUFFER_TOO_SMALL, needed as usize),
                Err(e) => items.set(i, status_of(&e), 0),
            }
        }
        Ok(())
    })
}

/// Stores many values in one call (value, value_len per item); items[i].status says how each
/// went. Writes go through the handle's engine. A value aligned to 4096 bytes whose length is
/// a multiple of the block size is written without a copy. Duplicates of a key: the last item
/// wins. Replaced values are invalidated before this returns, as with rb_put.
///
/// # Safety
/// `dev` is a live handle; `items` has `n` elements of items[0].struct_size bytes, each key
/// and value readable for its length.
#[no_mangle]
pub unsafe extern "C" fn rb_put_many(dev: *mut rb_device, items: *mut rb_item, n: usize) -> rb_status {
    guard("rb_put_many", || {
        // SAFETY: per the contract above.
        let (s, items) = unsafe { (device(dev)?, Items::new(items, n)?) };
        let (usable, usable_keys) = usable_keys(&items);
        let (mut idx, mut pairs) = (Vec::new(), Vec::new());
        for (i, key) in usable.into_iter().zip(usable_keys) {
            let it = items.read(i);
            // SAFETY: the caller provides value_len readable bytes at value.
            match unsafe { super::boundary::bytes(it.value as *const c_void, it.value_len, "value") } {
                Ok(value) => {
                    idx.push(i);
                    pairs.push((key, value));
                }
                Err(_) => items.set_status(i, RB_E_INVALID_ARGUMENT),
            }
        }
        for (&i, r) in idx.iter().zip(s.put_many(&pairs)?) {
            items.set_status(i, r.as_ref().map_or_else(status_of, |()| RB_OK));
        }
        Ok(())
    })
}

/// Deletes many keys in one call; each is invalidated on the device before this returns.
/// items[i].status is RB_OK or RB_E_NOT_FOUND (or an I/O error).
///
/// # Safety
/// `dev` is a live handle; `items` has `n` elements of items[0].struct_size bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_delete_many(dev: *mut rb_device, items: *mut rb_item, n: usize) -> rb_status {
    guard("rb_delete_many", || {
        // SAFETY: per the contract above.
        let (s, items) = unsafe { (device(dev)?, Items::new(items, n)?) };
        let (idx, keys) = usable_keys(&items);
        for (&i, r) in idx.iter().zip(s.delete_many(&keys)?) {
            items.set_status(i, r.as_ref().map_or_else(status_of, |()| RB_OK));
        }
        Ok(())
    })
}

/// Looks many keys up in the index (no device read): items[i].status is RB_OK when the
/// key is present, RB_E_NOT_FOUND when not.
///
/// # Safety
/// `dev` is a live handle; `items` has `n` elements of items[0].struct_size bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_contains_many(dev: *mut rb_device, items: *mut rb_item, n: usize) -> rb_status {
    guard("rb_contains_many", || {
        // SAFETY: per the contract above.
        let (s, items) = unsafe { (device(dev)?, Items::new(items, n)?) };
        let (idx, keys) = usable_keys(&items);
        for (&i, r) in idx.iter().zip(s.contains_many(&keys)?) {
            items.set_status(i, match r {
                Ok(true) => RB_OK,
                Ok(false) => RB_E_NOT_FOUND,
                Err(e) => status_of(&e),
            });
        }
        Ok(())
    })
}

/// The prefix-cache question: for keys given in order, `*count` is the number of leading
/// keys present in the index (no device read; item statuses are not written).
///
/// # Safety
/// `dev` is a live handle; `items` has `n` elements of items[0].struct_size bytes; `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_count_present_prefix(dev: *mut rb_device, items: *const rb_item, n: usize, count: *mut usize) -> rb_status {
    guard("rb_count_present_prefix", || {
        if count.is_null() {
            return Err(invalid("count is NULL"));
        }
        // SAFETY: per the contract above; items are only read.
        let (s, items) = unsafe { (device(dev)?, Items::new(items.cast_mut(), n)?) };
        let mut keys = Vec::with_capacity(n);
        for i in 0..n {
            keys.push(key_of(&items.read(i)).map_err(|e| invalid(format!("item {i}: {e}")))?);
        }
        let c = s.count_present_prefix(&keys)?;
        // SAFETY: count is non-NULL and writable.
        unsafe { count.write(c) };
        Ok(())
    })
}

const _: () = assert!(std::mem::size_of::<rb_item>() <= super::boundary::MAX_STRUCT_SIZE);

/// Registers `len` bytes at `addr` (the pinned pool of a serving engine) with the handle, so
/// rb_get_many and rb_put_many move data into and out of it through io_uring fixed buffers
/// (zero-copy items only; other engines accept the region and use plain I/O). Regions may not
/// overlap; at most 64, each at most 1 GiB. The memory must stay valid until
/// rb_unregister_memory returns. `*region` names the region.
///
/// # Safety
/// `dev` is a live handle; `addr` points to `len` bytes that stay valid while registered;
/// `region` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_register_memory(dev: *mut rb_device, addr: *mut c_void, len: usize, region: *mut u32) -> rb_status {
    guard("rb_register_memory", || {
        if addr.is_null() || region.is_null() {
            return Err(invalid("addr and region must not be NULL"));
        }
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        let id = s.register_memory(addr.cast::<u8>(), len)?;
        // SAFETY: region is non-NULL and writable.
        unsafe { region.write(id.0) };
        Ok(())
    })
}

/// Unregisters a region. Calls in flight that move data through it finish first: this
/// waits for them, and once it returns the library no longer touches the memory.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_unregister_memory(dev: *mut rb_device, region: u32) -> rb_status {
    guard("rb_unregister_memory", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.unregister_memory(crate::engine::registry::RegionId(region))
    })
}

/// Sets how the handle evicts when a put finds no free slot: RB_EVICT_NONE (the default: the
/// put answers RB_E_NO_SPACE), RB_EVICT_LRU or RB_EVICT_FIFO. An eviction batch takes the
/// coldest entries out of the index until `low_watermark_permille` thousandths of the slots
/// are free (0: the default, 10 = 1%; at least one slot), zeroes their headers on the device
/// as deletes do, and queues their keys for rb_take_evicted. The order starts from
/// generation order (oldest put coldest), as it does after every rb_recover.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_set_eviction(dev: *mut rb_device, policy: u32, low_watermark_permille: u32) -> rb_status {
    guard("rb_set_eviction", || {
        let policy = match policy {
            RB_EVICT_NONE => crate::store::EvictionPolicy::None,
            RB_EVICT_LRU => crate::store::EvictionPolicy::Lru,
            RB_EVICT_FIFO => crate::store::EvictionPolicy::Fifo,
            p => return Err(invalid(format!("unknown eviction policy {p}"))),
        };
        // SAFETY: a live handle.
        unsafe { device(dev)? }.set_eviction(crate::store::Eviction { policy, low_watermark_permille })
    })
}

/// Drains the keys the eviction policy removed, oldest first: up to `cap` entries in
/// out[0..*n) (key_offset/key_len into keys_buf, value_len, generation), as many as fit in
/// `keys_cap` bytes of keys; the rest stay queued for the next call. `*n` 0: none waiting.
/// RB_E_BUFFER_TOO_SMALL when not even the oldest key fits: out[0].key_len says how many
/// bytes it needs (max_key_bytes always suffices). At most 2^20 keys wait; when more are
/// evicted undrained, the oldest are dropped (rb_get_metrics counts every eviction).
///
/// # Safety
/// `dev` is a live handle; `out` has `cap` writable elements of out[0].struct_size bytes;
/// `keys_buf` has `keys_cap` writable bytes; `n` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_take_evicted(
    dev: *mut rb_device,
    out: *mut rb_key_info,
    cap: usize,
    keys_buf: *mut c_void,
    keys_cap: usize,
    n: *mut usize,
) -> rb_status {
    guard("rb_take_evicted", || {
        if n.is_null() {
            return Err(invalid("n is NULL"));
        }
        // SAFETY: n is non-NULL and writable.
        unsafe { n.write(0) };
        if cap == 0 {
            return Ok(());
        }
        // SAFETY: per the contract above.
        let dest = unsafe { super::listing::KeyPage::new(out, cap, keys_buf, keys_cap) }?;
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        let taken = match s.take_evicted_fitting(cap, keys_cap) {
            Err(Error::BufferTooSmall { needed }) => return Err(dest.too_small(needed)),
            other => other?,
        };
        dest.fill(taken.iter().map(|e| (&e.key[..], e.value_len, e.generation.0)));
        // SAFETY: n is non-NULL and writable.
        unsafe { n.write(taken.len()) };
        Ok(())
    })
}
