//! Reporting: the lines `--measure` prints. README.md and docs/PERFORMANCE.md quote
//! numbers from them, so their shape stays put.

use rawblock::store::RecoverMode;

use crate::args::Args;
use crate::fio::FioComparison;
use crate::measure::{Run, Summary};

/// The machine line (and a warning when the page cache is what gets measured).
pub fn preamble(args: &Args) {
    if args.buffered {
        println!("note: --buffered measures the page cache, not the device");
    }
    let machine = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default();
    println!(
        "device {} | {} cores {} | kernel {}",
        args.device.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        machine,
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
}

pub fn fixture(expected: u64, mode: RecoverMode) {
    println!("fixture: {expected} entries prepared; recover mode {mode:?}");
}

/// One repeat, and a complaint if it indexed other than the prepared N.
pub fn run(label: &str, r: &Run, expected: u64) {
    println!("{label}: {:.3}s, indexed={}", r.seconds, r.report.indexed);
    if r.report.indexed != expected {
        println!("{label}: indexed={} but {expected} entries were prepared", r.report.indexed);
    }
}

pub fn skipped(label: &str, why: &str) {
    println!("{label}: skipped ({why})");
}

/// A variant's summary line.
pub fn summary(s: &Summary) {
    let t = &s.stats;
    let first = s.first();
    let io = &first.io;
    println!(
        "{}: median={:.3}s mean={:.3}s min={:.3}s max={:.3}s headers/s={:.0} \
         cpu/header={:.2}us (user {:.2} + sys {:.2}) \
         load={:.3}s validate={:.3}s index={:.0}B/entry max_in_flight={} submits={} fixed_buffers={} fixed_file={}",
        s.label,
        t.median,
        t.mean,
        t.min,
        t.max,
        t.headers_per_second,
        t.cpu_us(),
        t.user_us,
        t.sys_us,
        first.checkpoint_load_ns as f64 / 1e9,
        first.validate_ns as f64 / 1e9,
        s.runs[0].index_bytes_per_entry,
        io.max_in_flight,
        io.submit_calls,
        io.registered_buffers,
        io.registered_file
    );
}

/// The first variant's median against each other's.
pub fn speedups(summaries: &[Summary]) {
    let Some((first, rest)) = summaries.split_first() else { return };
    for s in rest {
        println!("speedup median {}/{}: {:.2}x", first.label, s.label, first.stats.median / s.stats.median);
    }
}

pub fn fio(c: &Result<FioComparison, String>) {
    match c {
        Ok(c) => println!(
            "fio {} qd={}: {:.0} reads/s; rawblock {}: {:.0} headers/s = {:.2} of fio",
            c.job.ioengine,
            c.job.iodepth,
            c.fio_reads_per_second,
            c.label,
            c.ours,
            c.fraction()
        ),
        Err(why) => println!("fio: skipped ({why})"),
    }
}

pub fn failed() {
    println!("FAILED: a variant's indexed differs from the prepared N");
}
