//! rb-bench: prepare a fixture, then measure recovery per engine.
//!
//! ```text
//! rb-bench --prepare --i-understand-this-overwrites-device [--device-path P] [--cache-space-gb 64]
//! rb-bench --measure --io-engine posix io_uring --threads 1 8 --repeats 5 --queue-depth 128 [--compare-fio]
//! ```
//! `--measure` opens the device read-only for every repeat and never writes to it.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rawblock::engine::{EngineChoice, EngineConfig, EngineKind};
use rawblock::format::GeometryRequest;
use rawblock::store::{FormatOptions, OpenMode, RecoverMode, RecoverOptions, RecoverReport};
use rawblock::{OpenOptions, Store};

const USAGE: &str = "usage: rb-bench [--device-path PATH] [--cache-space-gb GB] [--slot-bytes N] [--header-bytes N]
                [--prepare --i-understand-this-overwrites-device] [--prepare-threads N] [--max-entries N]
                [--measure] [--io-engine posix io_uring uring_cmd] [--threads 1 8] [--repeats 5]
                [--queue-depth 128] [--recover-mode auto|checkpoint|scan] [--compare-fio] [--buffered] [--json FILE]
defaults: --device-path target/bench/fixture.img (a sparse file), --cache-space-gb 64, --slot-bytes 1048576";

struct Args {
    device: PathBuf,
    cache_space_gb: f64,
    slot_bytes: u64,
    header_bytes: u32,
    prepare: bool,
    overwrite_ok: bool,
    prepare_threads: usize,
    max_entries: Option<u64>,
    measure: bool,
    engines: Vec<String>,
    threads: Vec<usize>,
    repeats: usize,
    queue_depth: usize,
    compare_fio: bool,
    buffered: bool,
    recover_mode: RecoverMode,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: PathBuf::from("target/bench/fixture.img"),
        cache_space_gb: 64.0,
        slot_bytes: 1 << 20,
        header_bytes: 4096,
        prepare: false,
        overwrite_ok: false,
        prepare_threads: 8,
        max_entries: None,
        measure: false,
        engines: vec!["posix".into(), "io_uring".into()],
        threads: vec![1, 8],
        repeats: 5,
        queue_depth: 128,
        compare_fio: false,
        buffered: false,
        recover_mode: RecoverMode::Auto,
        json: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    // Values of a flag: everything up to the next `--flag`.
    let values = |i: &mut usize| -> Vec<String> {
        let mut v = Vec::new();
        while *i + 1 < argv.len() && !argv[*i + 1].starts_with("--") {
            *i += 1;
            v.push(argv[*i].clone());
        }
        v
    };
    fn one<T: std::str::FromStr>(flag: &str, v: Vec<String>) -> Result<T, String> {
        match v.as_slice() {
            [x] => x.parse().map_err(|_| format!("{flag}: cannot parse {x:?}")),
            _ => Err(format!("{flag} takes one value")),
        }
    }
    fn many<T: std::str::FromStr>(flag: &str, v: Vec<String>) -> Result<Vec<T>, String> {
        if v.is_empty() {
            return Err(format!("{flag} takes at least one value"));
        }
        v.iter().map(|x| x.parse().map_err(|_| format!("{flag}: cannot parse {x:?}"))).collect()
    }
    while i < argv.len() {
        let flag = argv[i].clone();
        match flag.as_str() {
            "--device-path" => a.device = PathBuf::from(one::<String>(&flag, values(&mut i))?),
            "--cache-space-gb" => a.cache_space_gb = one(&flag, values(&mut i))?,
            "--slot-bytes" => a.slot_bytes = one(&flag, values(&mut i))?,
            "--header-bytes" => a.header_bytes = one(&flag, values(&mut i))?,
            "--prepare" => a.prepare = true,
            "--i-understand-this-overwrites-device" => a.overwrite_ok = true,
            "--prepare-threads" => a.prepare_threads = one(&flag, values(&mut i))?,
            "--max-entries" => a.max_entries = Some(one(&flag, values(&mut i))?),
            "--measure" => a.measure = true,
            "--io-engine" => a.engines = many(&flag, values(&mut i))?,
            "--threads" => a.threads = many(&flag, values(&mut i))?,
            "--repeats" => a.repeats = one(&flag, values(&mut i))?,
            "--queue-depth" => a.queue_depth = one(&flag, values(&mut i))?,
            "--compare-fio" => a.compare_fio = true,
            "--buffered" => a.buffered = true,
            "--recover-mode" => {
                a.recover_mode = match one::<String>(&flag, values(&mut i))?.as_str() {
                    "auto" => RecoverMode::Auto,
                    "checkpoint" => RecoverMode::Checkpoint,
                    "scan" => RecoverMode::Scan,
                    other => return Err(format!("--recover-mode: {other:?} is not auto, checkpoint or scan")),
                }
            }
            "--json" => a.json = Some(PathBuf::from(one::<String>(&flag, values(&mut i))?)),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
        i += 1;
    }
    if !a.prepare && !a.measure {
        return Err(format!("say --prepare, --measure or both\n{USAGE}"));
    }
    if let Some(bad) = a.engines.iter().find(|e| !["posix", "io_uring", "uring_cmd"].contains(&e.as_str())) {
        return Err(format!("unknown --io-engine {bad:?} (posix, io_uring, uring_cmd)"));
    }
    if a.repeats == 0 || a.threads.contains(&0) || a.queue_depth == 0 || a.prepare_threads == 0 {
        return Err("--repeats, --threads, --queue-depth and --prepare-threads must be positive".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = (|| {
        if args.prepare {
            prepare(&args)?;
        }
        if args.measure {
            return measure(&args);
        }
        Ok(true)
    })();
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rb-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a block device that is mounted, or whose partition is.
fn refuse_mounted(path: &Path) -> Result<(), String> {
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

fn sysfs_path(rdev: u64) -> Option<PathBuf> {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()
}

fn bench_key(i: u64) -> String {
    // Shaped like LMCache's keys: model, world size, worker, chunk hash.
    format!("vllm@meta-llama/Llama-3.1-8B@1@0@{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i)
}

fn prepare(args: &Args) -> Result<(), String> {
    refuse_mounted(&args.device)?;
    if let Some(dir) = args.device.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let capacity = (args.cache_space_gb * (1u64 << 30) as f64) as u64;
    let is_block = std::fs::metadata(&args.device).map(|m| m.file_type().is_block_device()).unwrap_or(false);
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
    let store = Store::open(&args.device, &opts).map_err(|e| match e {
        e @ rawblock::Error::Exists { .. } => format!("{e}\n(pass --i-understand-this-overwrites-device to format it)"),
        e => e.to_string(),
    })?;
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
    let done = AtomicU64::new(0);
    let payload = [0x5Au8; 64];
    let progress = std::io::stderr().is_terminal();
    let failed: Result<(), String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..args.prepare_threads)
            .map(|t| {
                let (store, done) = (&store, &done);
                s.spawn(move || -> Result<(), String> {
                    let mut i = t as u64;
                    while i < n {
                        store.put(bench_key(i).as_bytes(), &payload).map_err(|e| format!("put {i}: {e}"))?;
                        let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                        if progress && t == 0 && d % 4096 < args.prepare_threads as u64 {
                            eprint!("\r  {d}/{n} ({:.0}%)", d as f64 * 100.0 / n as f64);
                        }
                        i += args.prepare_threads as u64;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().unwrap_or_else(|_| Err("a writer panicked".into())))
    });
    failed?;
    if progress {
        eprintln!();
    }
    let puts = start.elapsed();
    let info = store.checkpoint().map_err(|e| e.to_string())?;
    eprintln!(
        "prepared {n} entries in {:.2}s ({:.0} puts/s), checkpoint {} ({} entries, {} bytes) in {:.2}s",
        puts.as_secs_f64(),
        n as f64 / puts.as_secs_f64(),
        info.sequence,
        info.entries,
        info.payload_bytes,
        (start.elapsed() - puts).as_secs_f64()
    );
    Ok(())
}

/// One variant of the measurement: an engine and its knob.
struct Variant {
    label: String,
    config: EngineConfig,
}

fn variants(args: &Args) -> Vec<Variant> {
    let mut v = Vec::new();
    for e in &args.engines {
        match e.as_str() {
            "posix" => {
                for &t in &args.threads {
                    v.push(Variant {
                        label: format!("posix(threads={t})"),
                        config: EngineConfig::new(EngineChoice::Posix, t, args.queue_depth),
                    });
                }
            }
            "io_uring" => v.push(Variant {
                label: format!("io_uring(qd={})", args.queue_depth),
                config: EngineConfig::new(EngineChoice::IoUring, 1, args.queue_depth),
            }),
            _ => v.push(Variant {
                label: "uring_cmd".into(),
                config: EngineConfig::new(EngineChoice::UringCmd, 1, args.queue_depth),
            }),
        }
    }
    v
}

/// User and system CPU time of the whole process (every thread).
#[derive(Clone, Copy)]
struct Cpu {
    user: Duration,
    sys: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu { user: self.user - o.user, sys: self.sys - o.sys }
    }
}

fn cpu_time() -> Cpu {
    // SAFETY: getrusage fills the zeroed struct we pass; no other memory is touched.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cpu { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

struct Run {
    seconds: f64,
    cpu: Cpu,
    report: RecoverReport,
    index_bytes_per_entry: f64,
}

fn run_once(args: &Args, v: &Variant) -> Result<Run, String> {
    let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: args.buffered, engine: v.config, ..Default::default() };
    let store = Store::open(&args.device, &opts).map_err(|e| e.to_string())?;
    if v.config.choice() == EngineChoice::IoUring && store.engine_kind() != EngineKind::IoUring {
        return Err("io_uring did not run".into());
    }
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let report = store.recover(&RecoverOptions { mode: args.recover_mode, ..Default::default() }).map_err(|e| e.to_string())?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    Ok(Run { seconds, cpu, report, index_bytes_per_entry: store.index_bytes_per_entry() })
}

struct Summary {
    label: String,
    runs: Vec<Run>,
    median: f64,
}

fn stats(xs: &[f64]) -> (f64, f64, f64, f64) {
    let mut s = xs.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
    (median, s.iter().sum::<f64>() / s.len() as f64, s[0], s[s.len() - 1])
}

fn measure(args: &Args) -> Result<bool, String> {
    refuse_mounted(&args.device)?;
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
    // What --prepare wrote: the entries of its checkpoint (a scan must find the same).
    let (expected, geometry) = {
        let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: args.buffered, ..Default::default() };
        let store = Store::open(&args.device, &opts).map_err(|e| format!("{e} (run --prepare first?)"))?;
        let r = store
            .recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() })
            .map_err(|e| e.to_string())?;
        (r.checkpoint_entries, *store.geometry())
    };
    println!("fixture: {expected} entries prepared; recover mode {:?}", args.recover_mode);
    let mut ok = expected > 0;
    let mut summaries: Vec<Summary> = Vec::new();
    for v in variants(args) {
        let mut runs = Vec::new();
        for _ in 0..args.repeats {
            match run_once(args, &v) {
                Ok(r) => {
                    println!("{}: {:.3}s, indexed={}", v.label, r.seconds, r.report.indexed);
                    if r.report.indexed != expected {
                        println!("{}: indexed={} but {expected} entries were prepared", v.label, r.report.indexed);
                        ok = false;
                    }
                    runs.push(r);
                }
                Err(e) => {
                    println!("{}: skipped ({e})", v.label);
                    break;
                }
            }
        }
        if !runs.is_empty() {
            let median = stats(&runs.iter().map(|r| r.seconds).collect::<Vec<_>>()).0;
            summaries.push(Summary { label: v.label, runs, median });
        }
    }
    let mut json = String::from("{\"variants\":[");
    for (i, s) in summaries.iter().enumerate() {
        let secs: Vec<f64> = s.runs.iter().map(|r| r.seconds).collect();
        let (median, mean, min, max) = stats(&secs);
        let reads = s.runs[0].report.header_reads as f64;
        let per_header = |f: fn(&Cpu) -> Duration| {
            s.runs.iter().map(|r| f(&r.cpu).as_secs_f64()).sum::<f64>() * 1e6 / (reads * s.runs.len() as f64)
        };
        let (user_us, sys_us) = (per_header(|c| c.user), per_header(|c| c.sys));
        let cpu_us = user_us + sys_us;
        let io = &s.runs[0].report.io;
        println!(
            "{}: median={median:.3}s mean={mean:.3}s min={min:.3}s max={max:.3}s headers/s={:.0} \
             cpu/header={cpu_us:.2}us (user {user_us:.2} + sys {sys_us:.2}) \
             load={:.3}s validate={:.3}s index={:.0}B/entry max_in_flight={} submits={} fixed_buffers={} fixed_file={}",
            s.label,
            reads / median,
            s.runs[0].report.checkpoint_load_ns as f64 / 1e9,
            s.runs[0].report.validate_ns as f64 / 1e9,
            s.runs[0].index_bytes_per_entry,
            io.max_in_flight,
            io.submit_calls,
            io.registered_buffers,
            io.registered_file
        );
        let _ = write!(
            json,
            "{}{{\"label\":\"{}\",\"seconds\":{secs:?},\"median\":{median},\"mean\":{mean},\"min\":{min},\"max\":{max},\
             \"headers_per_second\":{},\"cpu_us_per_header\":{cpu_us},\"user_us_per_header\":{user_us},\"sys_us_per_header\":{sys_us},\"index_bytes_per_entry\":{},\"indexed\":{}}}",
            if i > 0 { "," } else { "" },
            s.label,
            reads / median,
            s.runs[0].index_bytes_per_entry,
            s.runs[0].report.indexed
        );
    }
    if let Some(first) = summaries.first() {
        for s in &summaries[1..] {
            println!("speedup median {}/{}: {:.2}x", first.label, s.label, first.median / s.median);
        }
    }
    json.push(']');
    if args.compare_fio {
        if let Some(uring) = summaries.iter().find(|s| s.label.starts_with("io_uring")) {
            // fio reads as many headers as the recovery did (a scan reads every slot).
            let reads = uring.runs[0].report.header_reads;
            match fio_rate(args, geometry.data_base(), geometry.slot_bytes(), reads) {
                Ok(fio) => {
                    let ours = uring.runs[0].report.header_reads as f64 / uring.median;
                    println!("fio io_uring qd={}: {fio:.0} reads/s; rawblock {}: {ours:.0} headers/s = {:.2} of fio", args.queue_depth, uring.label, ours / fio);
                    let _ = write!(json, ",\"fio_reads_per_second\":{fio},\"fraction_of_fio\":{}", ours / fio);
                }
                Err(e) => println!("fio: skipped ({e})"),
            }
        } else {
            println!("fio: skipped (needs an io_uring variant)");
        }
    }
    json.push('}');
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !ok {
        println!("FAILED: a variant's indexed differs from the prepared N");
    }
    let _ = std::io::stdout().flush();
    Ok(ok)
}

/// fio on the same strided pattern: one 4 KiB read every slot from the data base.
fn fio_rate(args: &Args, data_base: u64, slot_bytes: u64, n: u64) -> Result<f64, String> {
    let out = Command::new("fio")
        .args([
            "--name=hdr",
            "--readonly",
            &format!("--filename={}", args.device.display()),
            &format!("--rw=read:{}", slot_bytes - 4096),
            "--bs=4k",
            &format!("--direct={}", if args.buffered { 0 } else { 1 }),
            "--ioengine=io_uring",
            &format!("--iodepth={}", args.queue_depth),
            &format!("--offset={data_base}"),
            &format!("--size={}", n * slot_bytes),
            "--output-format=json",
        ])
        .output()
        .map_err(|e| format!("cannot run fio: {e}"))?;
    if !out.status.success() {
        return Err(format!("fio failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let read = text.find("\"read\"").ok_or("no read section in fio's output")?;
    let iops_at = text[read..].find("\"iops\"").ok_or("no iops in fio's output")? + read;
    let rest = &text[iops_at + 6..];
    let num: String = rest
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse().map_err(|_| format!("cannot parse fio iops {num:?}"))
}
