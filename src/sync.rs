//! Poison-tolerant locking, the crate's one way to take a mutex or wait on a condvar.
//!
//! A panic inside a locked section is caught at the C boundary and reported as
//! RB_E_PANIC; the data behind every lock in this crate stays consistent across
//! such a panic (no invariant spans an unwinding point), so a poisoned lock is
//! used as it is rather than turning every later call into a second panic.

use std::sync::{Condvar, Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub fn wait<'a, T>(cv: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(guard).unwrap_or_else(|p| p.into_inner())
}

/// The value inside a mutex that is no longer shared.
pub fn into_inner<T>(m: Mutex<T>) -> T {
    m.into_inner().unwrap_or_else(|p| p.into_inner())
}
