//! Durability and restart: rb_sync, and background verification after a fast recovery.

use super::boundary::{guard, out_size, write_out};
use super::device;
use super::types::*;
use crate::store::VerifyProgress;

fn progress(p: &VerifyProgress) -> rb_verify_progress {
    rb_verify_progress {
        struct_size: std::mem::size_of::<rb_verify_progress>(),
        checked: p.checked,
        verified: p.verified,
        dropped: p.dropped,
        unreadable: p.unreadable,
        remaining: p.remaining,
    }
}

/// Makes every put and delete acknowledged before it durable (fdatasync): after it returns
/// they survive a power cut. Without it they survive a process kill (SIGKILL) and are found
/// by RB_RECOVER_AUTO; with RB_OPEN_SYNC_WRITES each is durable when its call returns.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_sync(dev: *mut rb_device) -> rb_status {
    guard("rb_sync", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.sync()
    })
}

/// Background verification after a fast recovery (RB_RECOVERED_JOURNAL): reads the headers
/// of up to `max_entries` entries the recovery indexed unread, in one batch through the
/// handle's engine, keeps those that match and drops those deleted, replaced or evicted
/// since the checkpoint (as their first rb_get would). Call it in idle time until
/// `remaining` is 0; `max_entries` 0 only reports. `out` may be NULL.
///
/// # Safety
/// `dev` is a live handle; `out` is NULL or has `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_verify_step(dev: *mut rb_device, max_entries: usize, out: *mut rb_verify_progress) -> rb_status {
    guard("rb_verify_step", || {
        if !out.is_null() {
            // SAFETY: out is non-NULL; checked before any work is done.
            unsafe { out_size(out) }?;
        }
        // SAFETY: a live handle.
        let p = unsafe { device(dev)? }.verify_step(max_entries)?;
        if !out.is_null() {
            // SAFETY: checked above.
            unsafe { write_out(out, progress(&p)) }?;
        }
        Ok(())
    })
}

/// Makes the handle checkpoint by itself, checked after each write call (put, delete, their
/// batched forms): once `every_changes` puts, deletes and evictions have happened since the
/// last checkpoint, or once `every_ms` milliseconds have passed since it with anything changed.
/// 0 turns a trigger off; both 0 (the default) leaves checkpoints to the caller. The checkpoint
/// runs in the writing thread; if it fails the write stays acknowledged and the next write
/// tries again. With the lease journal, checkpoints bound how many slots a restart reads.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_set_auto_checkpoint(dev: *mut rb_device, every_changes: u64, every_ms: u64) -> rb_status {
    guard("rb_set_auto_checkpoint", || {
        // SAFETY: a live handle.
        let s = unsafe { device(dev)? };
        s.set_auto_checkpoint(crate::store::AutoCheckpoint { every_changes, every: std::time::Duration::from_millis(every_ms) });
        Ok(())
    })
}
