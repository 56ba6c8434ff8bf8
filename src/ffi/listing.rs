//! Listing the indexed keys: a cursor the caller owns, pages of rb_key_info with the
//! keys packed into a caller buffer.

use std::ffi::c_void;

use super::boundary::{bytes, guard, invalid, out_size};
use super::device;
use super::types::*;
use crate::error::Error;
use crate::store::KeyCursor;

/// Starts an iteration over the indexed keys: from the first key when `after_len` is 0, else
/// from the first key strictly greater than `after` (its bytes are copied). Keys come in
/// ascending bytewise (memcmp) order. Free the cursor with rb_key_cursor_free.
///
/// # Safety
/// `after` has `after_len` readable bytes (NULL when 0); `out` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_key_cursor_new(after: *const c_void, after_len: usize, out: *mut *mut rb_key_cursor) -> rb_status {
    guard("rb_key_cursor_new", || {
        if out.is_null() {
            return Err(invalid("out is NULL"));
        }
        // SAFETY: out is non-NULL and writable.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: per the contract above.
        let after = unsafe { bytes(after, after_len, "after") }?;
        let cursor = Box::new(rb_key_cursor { cursor: KeyCursor::after(after) });
        // SAFETY: out is non-NULL and writable.
        unsafe { out.write(Box::into_raw(cursor)) };
        Ok(())
    })
}

/// Frees a cursor (NULL is a no-op).
///
/// # Safety
/// `cursor` is NULL or from rb_key_cursor_new, not yet freed, with no call in progress on it.
#[no_mangle]
pub unsafe extern "C" fn rb_key_cursor_free(cursor: *mut rb_key_cursor) -> rb_status {
    guard("rb_key_cursor_free", || {
        if !cursor.is_null() {
            // SAFETY: the cursor came from Box::into_raw in rb_key_cursor_new and is freed once.
            drop(unsafe { Box::from_raw(cursor) });
        }
        Ok(())
    })
}

/// The next page of the cursor's iteration: up to `cap` entries in out[0..*n), keys packed
/// into keys_buf (each at out[i].key_offset, key_len bytes; no terminator), ascending.
/// `*n` 0 with RB_OK: the iteration is over. A page ends early when keys_buf is full;
/// keys_cap >= rb_device_info.max_key_bytes always holds the next key, else
/// RB_E_BUFFER_TOO_SMALL sets out[0].key_len to the size needed and leaves the cursor.
///
/// Consistency under concurrent writes: no key is returned twice in one iteration; a key
/// indexed from the iteration's first call to its last (its value replaced or not) is
/// returned exactly once, with the length and generation it had when its page was read; a
/// key put or deleted during the iteration may or may not be returned.
///
/// Cost: the cursor keeps a window of the next max(cap, 65536, indexed / 8) keys (at most
/// 32 MiB of them). A call that runs out of window scans the whole index under its lock
/// (O(indexed keys)) to fill the next one, so an iteration scans about 8 times at most;
/// other calls hold the lock for one lookup a key. Needs a recovered handle (RB_E_STATE
/// before rb_recover).
///
/// # Safety
/// `dev` is a live handle; `cursor` is a live cursor used by no other thread meanwhile;
/// `out` has `cap` writable elements of out[0].struct_size bytes; `keys_buf` has `keys_cap`
/// writable bytes; `n` is writable.
#[no_mangle]
pub unsafe extern "C" fn rb_list_keys(
    dev: *mut rb_device,
    cursor: *mut rb_key_cursor,
    out: *mut rb_key_info,
    cap: usize,
    keys_buf: *mut c_void,
    keys_cap: usize,
    n: *mut usize,
) -> rb_status {
    guard("rb_list_keys", || {
        if n.is_null() || cursor.is_null() {
            return Err(invalid("cursor and n must not be NULL"));
        }
        // SAFETY: n is non-NULL and writable.
        unsafe { n.write(0) };
        if cap == 0 {
            return Err(invalid("cap is 0: a page holds at least one key"));
        }
        // SAFETY: per the contract above.
        let dest = unsafe { KeyPage::new(out, cap, keys_buf, keys_cap) }?;
        // SAFETY: a live handle, and a live cursor no other thread uses.
        let (s, cursor) = unsafe { (device(dev)?, &mut (*cursor).cursor) };
        let page = match s.list_keys(cursor, cap, keys_cap) {
            Err(Error::BufferTooSmall { needed }) => return Err(dest.too_small(needed)),
            other => other?,
        };
        dest.fill(page.iter().map(|k| (&k.key[..], k.value_len, k.generation.0)));
        // SAFETY: n is non-NULL and writable.
        unsafe { n.write(page.len()) };
        Ok(())
    })
}

/// Where a page of keys goes: the caller's rb_key_info array (elements `stride` bytes apart)
/// and the buffer the keys are packed into (rb_list_keys, rb_take_evicted).
pub(super) struct KeyPage {
    out: *mut rb_key_info,
    stride: usize,
    keys_buf: *mut u8,
}

impl KeyPage {
    /// Checks the caller's arrays: `cap` >= 1 elements at `out` of out[0].struct_size bytes,
    /// `keys_cap` bytes at `keys_buf`.
    ///
    /// # Safety
    /// `out` is NULL or points to `cap` writable elements of out[0].struct_size bytes;
    /// `keys_buf` to `keys_cap` writable bytes.
    pub(super) unsafe fn new(out: *mut rb_key_info, cap: usize, keys_buf: *mut c_void, keys_cap: usize) -> Result<KeyPage, Error> {
        if keys_buf.is_null() && keys_cap > 0 || keys_cap > isize::MAX as usize {
            return Err(invalid(format!("keys_buf is NULL or keys_cap {keys_cap} is absurd")));
        }
        // SAFETY: out is checked for NULL; out[0] begins with the caller's struct_size.
        let stride = unsafe { out_size(out) }?;
        if cap.checked_mul(stride).is_none_or(|b| b > isize::MAX as usize) {
            return Err(invalid(format!("{cap} entries of {stride} bytes overflow memory")));
        }
        Ok(KeyPage { out, stride, keys_buf: keys_buf.cast() })
    }

    fn at(&self, i: usize) -> *mut rb_key_info {
        // SAFETY: callers pass i < cap, and the caller provided cap * stride bytes.
        unsafe { self.out.cast::<u8>().add(i * self.stride) }.cast()
    }

    /// RB_E_BUFFER_TOO_SMALL for a key of `needed` bytes: out[0].key_len says so.
    pub(super) fn too_small(&self, needed: u64) -> Error {
        // SAFETY: element 0 is writable (cap >= 1); key_len lies within rb_key_info's ABI 1 size.
        unsafe { std::ptr::addr_of_mut!((*self.at(0)).key_len).write_unaligned(needed as usize) };
        Error::BufferTooSmall { needed }
    }

    /// Writes (key, value_len, generation) entries, keys packed from the buffer's start.
    /// The caller took at most cap entries whose keys total at most keys_cap bytes.
    pub(super) fn fill<'k>(&self, entries: impl Iterator<Item = (&'k [u8], u64, u64)>) {
        let mut offset = 0;
        for (i, (key, value_len, generation)) in entries.enumerate() {
            // SAFETY: the keys fit in keys_cap bytes (the caller's promise above).
            unsafe { std::ptr::copy_nonoverlapping(key.as_ptr(), self.keys_buf.add(offset), key.len()) };
            let info = rb_key_info { struct_size: self.stride, key_offset: offset, key_len: key.len(), value_len, generation };
            // SAFETY: element i is writable and holds at least rb_key_info's size (MIN_SIZE).
            unsafe { super::boundary::write_sized(self.at(i), info, self.stride) };
            offset += key.len();
        }
    }
}
