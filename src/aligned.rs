//! Memory the kernel maps for rawblock: heap buffers aligned for O_DIRECT, and huge-page
//! backing for the index's large tables.

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

/// An allocator for large tables accessed at random (the index's rows): allocations from
/// [`MAP_FROM`] on are mapped directly, in whole 2 MiB units so the kernel aligns them for
/// transparent huge pages, and huge pages are asked for; smaller ones come from the global
/// allocator. At 524k entries this cut a fast recovery's index build by about a fifth on
/// this project's virtual machine (fewer TLB misses and first-touch faults per insert). Without
/// THP the pages are ordinary ones and nothing else changes.
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

/// The unit large mappings are rounded up to: a huge page.
const HUGE: usize = 2 << 20;

impl HugePages {
    fn mapped_len(layout: Layout) -> Option<usize> {
        (layout.size() >= MAP_FROM && layout.align() <= IO_ALIGN).then(|| layout.size().checked_next_multiple_of(HUGE)).flatten()
    }
}

// SAFETY: allocate hands out fresh memory of at least the layout's size and alignment (a new
// mapping, or the global allocator's); deallocate releases it the same way, chosen by the
// layout the caller must pass back unchanged.
unsafe impl allocator_api2::alloc::Allocator for HugePages {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, allocator_api2::alloc::AllocError> {
        let Some(len) = Self::mapped_len(layout) else { return allocator_api2::alloc::Global.allocate(layout) };
        let buf = AlignedBuf::try_mapped(len).ok_or(allocator_api2::alloc::AllocError)?;
        let ptr = NonNull::slice_from_raw_parts(buf.ptr, layout.size());
        std::mem::forget(buf); // unmapped by deallocate
        Ok(ptr)
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        match Self::mapped_len(layout) {
            // SAFETY: a mapping allocate made of exactly this length; the caller gives it back once.
            Some(len) => unsafe {
                libc::munmap(ptr.as_ptr().cast(), len);
            },
            // SAFETY: the caller's contract: ptr came from Global.allocate with this layout.
            None => unsafe { allocator_api2::alloc::Global.deallocate(ptr, layout) },
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
    fn huge_pages_allocate_both_ways() {
        use allocator_api2::alloc::Allocator;
        for (size, align) in [(64, 8), (MAP_FROM - 1, 16), (MAP_FROM, 16), (5 << 20, 64), (3 << 20, 8192)] {
            let layout = Layout::from_size_align(size, align).unwrap();
            let mut block = HugePages.allocate(layout).unwrap();
            // SAFETY: the block just allocated, at least `size` bytes, owned here.
            let bytes = unsafe { block.as_mut() };
            assert!(bytes.len() >= size && bytes.as_ptr() as usize % align == 0);
            bytes.fill(0xA5);
            // SAFETY: given back once, with the layout it was allocated with.
            unsafe { HugePages.deallocate(block.cast(), layout) };
        }
        let huge = Layout::from_size_align(1 << 62, 8).unwrap();
        assert!(HugePages.allocate(huge).is_err(), "refused, not aborted");
    }

    #[test]
    fn try_zeroed_fails_instead_of_aborting() {
        assert!(AlignedBuf::try_zeroed(usize::MAX).is_none(), "beyond isize::MAX");
        assert!(AlignedBuf::try_zeroed(1 << 62).is_none(), "more than any machine has");
        assert_eq!(AlignedBuf::try_zeroed(8192).map(|b| b.len()), Some(8192));
    }
}
