//! What every exported function does at the boundary: catch panics, map
//! errors to status codes, keep a thread-local message, check struct sizes.

use std::cell::RefCell;
use std::ffi::{c_char, CString};
use std::panic::{self, AssertUnwindSafe};

use super::types::*;
use crate::engine::EngineChoice;
use crate::error::{Error, Status};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

pub(super) fn set_message(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|m| *m.borrow_mut() = c);
}

pub(super) fn message_ptr() -> *const c_char {
    LAST_ERROR.with(|m| m.borrow().as_ptr())
}

thread_local! {
    /// Where the last panic on this thread happened, for RB_E_PANIC's message.
    static PANIC_AT: RefCell<String> = const { RefCell::new(String::new()) };
    /// This thread is inside an exported function's body.
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The library prints nothing on the host's stderr, panics included: a panic inside an
/// exported function, or on one of the library's own threads (named `rawblock-*`), keeps
/// its location for the RB_E_PANIC message instead of printing. Any other panic goes to
/// the hook that was there before (a Rust program's, or its test harness's).
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let ours = IN_GUARD.with(|g| g.get())
                || std::thread::current().name().is_some_and(|n| n.starts_with("rawblock-"));
            if ours {
                let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
                PANIC_AT.with(|p| *p.borrow_mut() = at);
            } else {
                previous(info);
            }
        }))
    });
}

/// Runs the body of an exported function named `name`: a panic becomes
/// RB_E_PANIC, an error its status, and either sets the thread's message.
pub(super) fn guard(name: &str, body: impl FnOnce() -> Result<(), Error>) -> rb_status {
    quiet_panics();
    let outer = IN_GUARD.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(body));
    IN_GUARD.with(|g| g.set(outer));
    match result {
        Ok(Ok(())) => RB_OK,
        Ok(Err(e)) => {
            set_message(&format!("{name}: {e}{}", hint(&e)));
            e.status() as rb_status
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            let at = PANIC_AT.with(|p| std::mem::take(&mut *p.borrow_mut()));
            set_message(&format!("{name}: internal panic: {what}{at}"));
            Status::Panic as rb_status
        }
    }
}

/// What a C caller can do about an error, in the header's terms.
fn hint(e: &Error) -> &'static str {
    match e {
        Error::NeedsRecovery => "; call rb_recover first",
        Error::NotRawblock { .. } => "; open with RB_OPEN_CREATE or RB_OPEN_CREATE_IF_EMPTY to format it",
        Error::Exists { .. } => "; RB_OPEN_CREATE with RB_OPEN_OVERWRITE_OK formats it anyway",
        Error::DirectIoRefused { .. } => " (the filesystem may not support O_DIRECT; RB_OPEN_BUFFERED turns it off)",
        Error::EngineUnavailable { engine: EngineChoice::UringCmd, .. } => "; use RB_ENGINE_IO_URING or RB_ENGINE_AUTO",
        Error::SlotsFull { .. } => "; rb_delete keys to make room",
        Error::CheckpointTooLarge { .. } => "; format with a larger meta_bytes",
        Error::OutOfThreads { .. } => "; ask for fewer rb_options.posix_threads",
        Error::HostNoSpace { .. } => {
            "; free space on that filesystem, or format with RB_OPEN_PREALLOCATE so the whole file is allocated up front"
        }
        _ => "",
    }
}

/// A fixed, NUL-terminated C string field; longer text is cut at a character boundary.
pub(super) fn c_text<const N: usize>(text: &str) -> [c_char; N] {
    let mut out = [0 as c_char; N];
    let mut end = text.len().min(N - 1);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    for (o, &b) in out.iter_mut().zip(text.as_bytes()[..end].iter()) {
        *o = b as c_char;
    }
    out
}

pub(super) fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(msg.into())
}

/// Largest struct_size accepted: far above any version of any struct (the largest,
/// rb_slot_header, is under 400 bytes), so a garbage or SIZE_MAX struct_size is an
/// error instead of a read or write far past the caller's struct.
pub(super) const MAX_STRUCT_SIZE: usize = 4096;

/// Structs that cross the boundary begin with `size_t struct_size`. ABI 1 sizes
/// are the minimum; a larger struct from a newer caller is accepted when the
/// bytes this library does not know are zero.
pub(super) trait Versioned: Copy + Default {
    const NAME: &'static str;
    /// Size of the struct in ABI version 1.
    const MIN_SIZE: usize = std::mem::size_of::<Self>();
    fn set_struct_size(&mut self);
}

/// Reads a versioned input struct; NULL yields the defaults.
///
/// # Safety
/// `p` is NULL or points to at least `struct_size` readable bytes.
pub(super) unsafe fn read_in<T: Versioned>(p: *const T) -> Result<T, Error> {
    let mut v = T::default();
    if p.is_null() {
        return Ok(v);
    }
    // SAFETY: every versioned struct begins with a size_t the caller initialised.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    let ours = std::mem::size_of::<T>();
    if size < T::MIN_SIZE {
        return Err(invalid(format!(
            "{}.struct_size is {size}, expected at least {} (initialise it with {}_init)",
            T::NAME,
            T::MIN_SIZE,
            T::NAME
        )));
    }
    check_not_absurd::<T>(size)?;
    if size > ours {
        // SAFETY: the caller declared `size` readable bytes.
        let extra = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if extra.iter().any(|&b| b != 0) {
            return Err(Error::Unsupported(format!(
                "{} has fields this library version does not know ({size} > {ours} bytes)",
                T::NAME
            )));
        }
    }
    // SAFETY: at least min(size, ours) bytes are readable at p and v is a plain struct.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut v as *mut T).cast::<u8>(), size.min(ours)) };
    v.set_struct_size();
    Ok(v)
}

/// Writes a versioned output struct, truncated to the caller's `struct_size`.
///
/// # Safety
/// `p` is non-NULL and points to at least `struct_size` writable bytes.
pub(super) unsafe fn write_out<T: Versioned>(p: *mut T, v: T) -> Result<(), Error> {
    // SAFETY: p is checked for NULL and begins with the caller's size_t.
    let size = unsafe { out_size::<T>(p)? };
    // SAFETY: the caller declared `size` writable bytes at p.
    unsafe { write_sized(p, v, size) };
    Ok(())
}

/// Writes the first `size` bytes of `v` (all of it if `size` is larger) and
/// stores `size` as its struct_size.
///
/// # Safety
/// `p` points to at least `min(size, size_of::<T>())` writable bytes, `size >= T::MIN_SIZE`.
pub(super) unsafe fn write_sized<T: Versioned>(p: *mut T, mut v: T, size: usize) {
    v.set_struct_size();
    let n = size.min(std::mem::size_of::<T>());
    // SAFETY: per the contract above; struct_size is kept as the caller's.
    unsafe {
        std::ptr::copy_nonoverlapping((&v as *const T).cast::<u8>(), p.cast::<u8>(), n);
        p.cast::<usize>().write_unaligned(size);
    }
}

/// The caller's declared size of an output struct, checked against the minimum.
///
/// # Safety
/// `p` is NULL or points to a struct beginning with an initialised size_t.
pub(super) unsafe fn out_size<T: Versioned>(p: *const T) -> Result<usize, Error> {
    if p.is_null() {
        return Err(invalid(format!("{} pointer is NULL", T::NAME)));
    }
    // SAFETY: non-NULL and begins with the caller's size_t.
    let size = unsafe { p.cast::<usize>().read_unaligned() };
    if size < T::MIN_SIZE {
        return Err(invalid(format!(
            "{}.struct_size is {size}, expected at least {} (set it to sizeof({}))",
            T::NAME,
            T::MIN_SIZE,
            T::NAME
        )));
    }
    check_not_absurd::<T>(size)?;
    Ok(size)
}

fn check_not_absurd<T: Versioned>(size: usize) -> Result<(), Error> {
    if size > MAX_STRUCT_SIZE {
        return Err(invalid(format!(
            "{}.struct_size is {size}, larger than any version of it can be (at most {MAX_STRUCT_SIZE}); \
             set it to sizeof({})",
            T::NAME,
            T::NAME
        )));
    }
    Ok(())
}

/// A byte slice from a pointer and length; NULL is allowed only with length 0.
///
/// # Safety
/// `p` points to `len` readable bytes when non-NULL.
pub(super) unsafe fn bytes<'a>(p: *const std::ffi::c_void, len: usize, what: &str) -> Result<&'a [u8], Error> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(invalid(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(invalid(format!("{what} length {len} is absurd")));
    }
    // SAFETY: the caller guarantees len readable bytes at p.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}
