//! The handle's data-path metrics.

use super::boundary::{guard, write_out};
use super::device;
use super::types::*;
use crate::store::{Latency, MetricsSnapshot};

fn latency(l: &Latency) -> rb_latency {
    rb_latency { count: l.count, p50_ns: l.p50_ns, p99_ns: l.p99_ns, p999_ns: l.p999_ns, max_ns: l.max_ns }
}

fn metrics(m: &MetricsSnapshot) -> rb_metrics {
    rb_metrics {
        struct_size: std::mem::size_of::<rb_metrics>(),
        gets: m.gets,
        hits: m.hits,
        misses: m.misses,
        puts: m.puts,
        deletes: m.deletes,
        evictions: m.evictions,
        bytes_read: m.bytes_read,
        bytes_written: m.bytes_written,
        corrupt: m.corrupt,
        io_errors: m.io_errors,
        get_latency: latency(&m.get),
        put_latency: latency(&m.put),
        get_many_latency: latency(&m.get_many),
        put_many_latency: latency(&m.put_many),
    }
}

/// The handle's counters and latency percentiles since open or rb_reset_metrics
/// (rb_metrics says what each counts). Fields may be a few calls apart when other
/// threads are calling meanwhile.
///
/// # Safety
/// `dev` is a live handle; `out` has `out->struct_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn rb_get_metrics(dev: *mut rb_device, out: *mut rb_metrics) -> rb_status {
    guard("rb_get_metrics", || {
        // SAFETY: per the contract above.
        unsafe { write_out(out, metrics(&device(dev)?.metrics())) }
    })
}

/// Zeroes the handle's metrics. Calls running meanwhile may be counted before or after.
///
/// # Safety
/// `dev` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn rb_reset_metrics(dev: *mut rb_device) -> rb_status {
    guard("rb_reset_metrics", || {
        // SAFETY: a live handle.
        unsafe { device(dev)? }.reset_metrics();
        Ok(())
    })
}
