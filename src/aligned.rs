//! Heap buffers aligned for O_DIRECT.

use std::alloc::{self, Layout};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// The alignment every device buffer gets: the largest logical block size
/// rawblock accepts, so one buffer type serves every device.
pub const IO_ALIGN: usize = 4096;

/// A zero-initialised byte buffer whose start is aligned to [`IO_ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Mapped directly (large buffers), not from the allocator.
    mapped: bool,
}

/// Buffers from this size on (checkpoint payloads, journals, record pools) are mapped
/// directly: the kernel hands out zeroed pages (no memset pass), and transparent huge pages
/// cut the page faults of first touch by up to 512x, which dominates loading a large
/// checkpoint on a virtual machine.
const MAP_FROM: usize = 2 << 20;

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes (at least one byte is allocated). Aborts the
    /// process when the allocation fails: only for small sizes the crate chooses
    /// (a block, a header); sizes that follow the device or the caller use [`try_zeroed`](Self::try_zeroed).
    pub fn zeroed(len: usize) -> AlignedBuf {
        match Self::try_zeroed(len) {
            Some(b) => b,
            None => alloc::handle_alloc_error(Self::layout(len).unwrap_or(Layout::new::<u8>())),
        }
    }

    /// A zeroed buffer of `len` bytes, or `None` when it cannot be allocated.
    pub fn try_zeroed(len: usize) -> Option<AlignedBuf> {
        let layout = Self::layout(len)?;
        if len >= MAP_FROM {
            return Self::try_mapped(len);
        }
        // SAFETY: the layout has a non-zero size and a power-of-two alignment.
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        NonNull::new(raw).map(|ptr| AlignedBuf { ptr, len, mapped: false })
    }

    /// Anonymous private pages: zeroed, page-aligned, huge pages asked for.
    fn try_mapped(len: usize) -> Option<AlignedBuf> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: advice on the mapping just made; failure (no THP) changes nothing.
        unsafe { libc::madvise(raw, len, libc::MADV_HUGEPAGE) };
        NonNull::new(raw.cast()).map(|ptr| AlignedBuf { ptr, len, mapped: true })
    }

    /// `len` bytes (at least one) aligned to [`IO_ALIGN`]; `None` beyond `isize::MAX`.
    fn layout(len: usize) -> Option<Layout> {
        Layout::from_size_align(len.max(1), IO_ALIGN).ok()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for the life of self.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len initialised bytes and &mut self is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped {
            // SAFETY: the mapping made in try_mapped, of exactly len bytes, unmapped once.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
            return;
        }
        if let Some(layout) = Self::layout(self.len) {
            // SAFETY: ptr was allocated with exactly this layout (valid, or it would not exist).
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        for len in [0, 1, 4095, 4096, 1 << 20, MAP_FROM, MAP_FROM + 4096 + 1] {
            let mut b = AlignedBuf::zeroed(len);
            assert_eq!(b.as_mut_ptr() as usize % IO_ALIGN, 0);
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn try_zeroed_fails_instead_of_aborting() {
        assert!(AlignedBuf::try_zeroed(usize::MAX).is_none(), "beyond isize::MAX");
        assert!(AlignedBuf::try_zeroed(1 << 62).is_none(), "more than any machine has");
        assert_eq!(AlignedBuf::try_zeroed(8192).map(|b| b.len()), Some(8192));
    }
}
