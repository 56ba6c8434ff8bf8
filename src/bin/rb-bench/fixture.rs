//! The fixture: formatting and filling it (`--prepare`), and what `--measure` expects of it.

use std::io::IsTerminal;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::{Geometry, GeometryRequest};
use rawblock::store::{FormatOptions, OpenMode, RecoverMode, RecoverOptions};
use rawblock::{OpenOptions, Store};

use crate::args::Args;
use crate::hints;

/// Refuses a block device that is mounted, or whose partition is.
pub fn refuse_mounted(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::metadata(path) else { return Ok(()) };
    if !meta.file_type().is_block_device() {
        return Ok(());
    }
    let ours = sysfs_path(meta.rdev());
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(|e| format!("cannot read /proc/self/mounts: {e}"))?;
    for source in mounts.lines().filter_map(|l| l.split_whitespace().next()).filter(|s| s.starts_with("/dev/")) {
        let Ok(m) = std::fs::metadata(source) else { continue };
        if !m.file_type().is_block_device() {
            continue;
        }
        let theirs = sysfs_path(m.rdev());
        let partition_of_ours = matches!((&theirs, &ours), (Some(t), Some(o)) if t.parent() == Some(o.as_path()));
        if m.rdev() == meta.rdev() || partition_of_ours {
            return Err(format!("{} is mounted (as {source}); refusing to touch a mounted device", path.display()));
        }
    }
    Ok(())
}

/// Creates the directory a fixture file goes in.
pub fn make_parent_dir(path: &Path) -> Result<(), String> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display())),
        None => Ok(()),
    }
}

/// For the workloads that format their own fixture and delete it after: refuses a mounted
/// device, and an existing path without --i-understand-this-overwrites-device.
pub fn own_fixture(args: &Args, workload: &str) -> Result<(), String> {
    refuse_mounted(&args.device)?;
    if !args.overwrite_ok && args.device.exists() {
        return Err(format!(
            "{} exists: --workload {workload} formats it (add --i-understand-this-overwrites-device)",
            args.device.display()
        ));
    }
    make_parent_dir(&args.device)
}

fn sysfs_path(rdev: u64) -> Option<PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).map(|m| m.file_type().is_block_device()).unwrap_or(false)
}

pub fn bench_key(i: u64) -> String {
    // Shaped like LMCache's keys: model, world size, worker, chunk hash.
    format!("vllm@meta-llama/Llama-3.1-8B@1@0@{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
}

/// `--prepare`: formats the device, puts one entry per slot (or `--max-entries`), checkpoints.
pub fn prepare(args: &Args) -> Result<(), String> {
    refuse_mounted(&args.device)?;
    make_parent_dir(&args.device)?;
    let store = format_device(args)?;
    let g = *store.geometry();
    let n = args.max_entries.map_or(g.slot_count(), |m| m.min(g.slot_count()));
    eprintln!(
        "preparing {}: {n} entries of {} slots ({} B each, data base {} B), {} threads",
        args.device.display(),
        g.slot_count(),
        g.slot_bytes(),
        g.data_base(),
        args.prepare_threads
    );
    let start = Instant::now();
    put_entries(&store, n, args.prepare_threads)?;
    let puts = start.elapsed();
    let info = store.checkpoint().map_err(|e| e.to_string())?;
    let sync = start.elapsed() - puts;
    eprintln!(
        "prepared {n} entries in {:.2}s ({:.0} puts/s), checkpoint {} ({} entries, {} bytes) in {:.2}s",
        puts.as_secs_f64(),
        n as f64 / puts.as_secs_f64(),
        info.sequence,
        info.entries,
        info.payload_bytes,
        sync.as_secs_f64()
    );
    if let Some(percent) = args.dirty_percent {
        crate::restart::dirty(&store, n, percent)?;
    }
    Ok(())
}

fn format_device(args: &Args) -> Result<Store, String> {
    let is_block = is_block_device(&args.device);
    let capacity = (args.cache_space_gb * (1u64 << 30) as f64) as u64;
    let format = FormatOptions {
        capacity_bytes: if is_block { 0 } else { capacity },
        geometry: GeometryRequest { slot_bytes: args.slot_bytes, header_bytes: args.header_bytes, ..Default::default() },
        overwrite: args.overwrite_ok,
        ..Default::default()
    };
    let opts = OpenOptions {
        mode: OpenMode::Create(format),
        // O_DIRECT writes into the holes of a sparse file serialise on ext4's block
        // allocation; the page cache batches it. Only preparing: measuring stays O_DIRECT,
        // and the checkpoint's fdatasync makes everything durable first.
        buffered: args.buffered || !is_block,
        ..Default::default()
    };
    Store::open(&args.device, &opts).map_err(|e| hints::prepare(e, &args.device, !opts.buffered))
}

/// Puts entries 0..n from `threads` writers, thread t taking t, t + threads, ...
fn put_entries(store: &Store, n: u64, threads: usize) -> Result<(), String> {
    let done = AtomicU64::new(0);
    let progress = std::io::stderr().is_terminal();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let done = &done;
                s.spawn(move || put_every(store, t as u64, threads as u64, n, progress && t == 0, done))
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err("a writer panicked".into())))
    })?;
    if progress {
        eprintln!();
    }
    Ok(())
}

/// One writer: entries first, first + step, ... below n, counted in `done`.
fn put_every(store: &Store, first: u64, step: u64, n: u64, progress: bool, done: &AtomicU64) -> Result<(), String> {
    let payload = [0x5Au8; 64];
    for i in (first..n).step_by(step as usize) {
        store.put(bench_key(i).as_bytes(), &payload).map_err(|e| format!("put {i}: {e}"))?;
        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
        if progress && d % 4096 < step {
            eprint!("\r  {d}/{n} ({:.0}%)", d as f64 * 100.0 / n as f64);
        }
    }
    Ok(())
}

/// What `--measure` checks against: the prepared entries and the geometry they live in.
pub struct Fixture {
    /// Entries in the checkpoint `--prepare` wrote (a scan must find the same).
    pub expected: u64,
    pub geometry: Geometry,
}

impl Fixture {
    pub fn open(args: &Args) -> Result<Fixture, String> {
        // An NVMe namespace's character device (/dev/ngXnY) is read only through passthrough.
        let char_device = std::fs::metadata(&args.device).is_ok_and(|m| m.file_type().is_char_device());
        let engine = match char_device {
            true => EngineConfig::new(EngineChoice::UringCmd, 1, 0),
            false => EngineConfig::default(),
        };
        let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: args.buffered, engine, ..Default::default() };
        let store = Store::open(&args.device, &opts).map_err(|e| hints::open_fixture(e, &args.device, !args.buffered))?;
        let r = store
            .recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() })
            .map_err(|e| e.to_string())?;
        Ok(Fixture { expected: r.checkpoint_entries, geometry: *store.geometry() })
    }
}
