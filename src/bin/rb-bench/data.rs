//! `--workload data`: the serving data path. Formats its own fixture, then times
//! batched puts, batched gets, single gets and single puts of one value size, and
//! with --compare-fio runs fio on the same device at the same block size and depth.
//!
//! Every get is verified by the library (header and payload CRC); the destinations
//! and sources are 4096-aligned and padded, so the zero-copy path runs.
//!
//! The last line is the handle's metrics over the whole workload: counters, and
//! p50/p99/p99.9 of single gets and puts and of whole batched calls.

use std::time::Instant;

use rawblock::aligned::AlignedBuf;
use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::{Geometry, GeometryRequest};
use rawblock::store::{FormatOptions, Latency, MetricsSnapshot, OpenMode};
use rawblock::{OpenOptions, Store};

use crate::args::Args;
use crate::fio;
use crate::measure::{cpu_time, Cpu};

/// One timed phase: bytes of values moved, seconds, CPU.
struct Phase {
    op: &'static str,
    batch: usize,
    qd: usize,
    bytes: u64,
    seconds: f64,
    cpu: Cpu,
}

impl Phase {
    fn gb_per_s(&self) -> f64 {
        self.bytes as f64 / self.seconds / 1e9
    }
    fn cpu_s_per_gb(&self) -> f64 {
        (self.cpu.user + self.cpu.sys).as_secs_f64() / (self.bytes as f64 / 1e9)
    }
}

/// A little generator so the key order is random but the same every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("bench@data@{i:010}").into_bytes()
}

/// Runs the data workload; `Ok(false)` when a value did not read back.
pub fn run(args: &Args) -> Result<bool, String> {
    let engine = engine_config(args)?;
    let store = format_fixture(args, engine)?;
    let g = *store.geometry();
    let value = args.value_bytes.unwrap_or(g.max_payload() as usize);
    if value as u64 > g.max_payload() || value == 0 {
        return Err(format!("--value-bytes {value} must be in 1..={} for {}-byte slots", g.max_payload(), g.slot_bytes()));
    }
    let budget = (args.data_gib * (1u64 << 30) as f64) as u64;
    let keys = ((budget / value as u64) as usize).min(g.slot_count() as usize - args.batch - 2).max(args.batch);
    // The puts take the lowest free slots: the keys, and a batch more for replacements.
    prefill(&args.device, &g, (keys + args.batch + 2) as u64)?;
    let mut bufs: Vec<AlignedBuf> = (0..args.batch).map(|_| AlignedBuf::zeroed(store.padded_len(value as u64) as usize)).collect();
    for (i, b) in bufs.iter_mut().enumerate() {
        b.iter_mut().enumerate().for_each(|(j, x)| *x = (i * 31 + j * 7) as u8);
    }
    println!(
        "data: {} engine={} qd={} value={value} keys={keys} batch={} slot_bytes={} direct={}",
        args.device.display(),
        store.engine_kind(),
        store.queue_depth(),
        args.batch,
        g.slot_bytes(),
        store.is_direct()
    );
    let mut phases = vec![put_many(&store, &bufs, value, keys, args.batch)?];
    phases.push(get_many(&store, &mut bufs, value, keys, args.batch)?);
    let singles = (keys / 4).max(1);
    phases.push(get_one(&store, &mut bufs[0], value, keys, singles)?);
    phases.push(put_one(&store, &bufs[0], value, keys, singles)?);
    let qd = store.queue_depth();
    for p in phases.iter_mut() {
        p.qd = if p.batch > 1 { qd } else { 1 };
    }
    let metrics = store.metrics();
    drop(store);
    for p in &phases {
        let fio = args.compare_fio.then(|| fio_rate(args, &g, p, keys));
        print_line(p, value, fio);
    }
    println!("{}", metrics_line(&metrics));
    Ok(true)
}

fn engine_config(args: &Args) -> Result<EngineConfig, String> {
    // One engine: uring_cmd when listed (NVMe passthrough: asked for, never the default), else
    // io_uring whenever it is listed (it is by default), else posix.
    let listed = |e: &str| args.engines.iter().any(|x| x == e);
    let choice = match (listed("uring_cmd"), listed("io_uring"), listed("posix")) {
        (true, _, _) => EngineChoice::UringCmd,
        (false, true, _) => EngineChoice::IoUring,
        (false, false, true) => EngineChoice::Posix,
        _ => return Err(format!("--workload data runs posix, io_uring or uring_cmd, not {:?}", args.engines)),
    };
    Ok(EngineConfig::new(choice, *args.threads.last().unwrap_or(&1), args.queue_depth))
}

fn format_fixture(args: &Args, engine: EngineConfig) -> Result<Store, String> {
    crate::fixture::refuse_mounted(&args.device)?;
    crate::fixture::make_parent_dir(&args.device)?;
    let is_block = std::fs::metadata(&args.device).map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type())).unwrap_or(false);
    let format = FormatOptions {
        capacity_bytes: if is_block { 0 } else { (args.cache_space_gb * (1u64 << 30) as f64) as u64 },
        geometry: GeometryRequest { slot_bytes: args.slot_bytes, header_bytes: args.header_bytes, ..Default::default() },
        overwrite: args.overwrite_ok,
        // Allocated up front: puts then measure writes, not the filesystem's block allocation
        // (fio's writes, later, land in blocks that are allocated by then).
        preallocate: !is_block,
    };
    let opts = OpenOptions { mode: OpenMode::Create(format), engine, buffered: args.buffered, ..Default::default() };
    Store::open(&args.device, &opts).map_err(|e| crate::hints::prepare(e, &args.device, !args.buffered))
}

/// Writes zeros over the slots the workload uses (zeros read as empty slots), so every phase
/// and fio's writes after them meet blocks written before: ext4's first write into a
/// fallocated (unwritten) extent converts it, a tmpfs-backed loop device allocates pages on
/// first touch; a cache in steady state pays neither.
fn prefill(path: &std::path::Path, g: &Geometry, slots: u64) -> Result<(), String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| format!("cannot open {} to prefill it: {e}", path.display()))?;
    let chunk = AlignedBuf::zeroed(8 << 20);
    let (mut at, end) = (g.data_base(), g.device_bytes().min(g.data_base() + slots * g.slot_bytes()));
    let t0 = Instant::now();
    while at < end {
        let n = chunk.len().min((end - at) as usize);
        f.write_all_at(&chunk[..n], at).map_err(|e| format!("prefilling {}: {e}", path.display()))?;
        at += n as u64;
    }
    f.sync_data().map_err(|e| format!("syncing {}: {e}", path.display()))?;
    println!("data: prefilled {:.1} GiB of slots with zeros in {:.1} s", (end - g.data_base()) as f64 / (1u64 << 30) as f64, t0.elapsed().as_secs_f64());
    Ok(())
}

fn timed(op: &'static str, batch: usize, bytes: u64, f: impl FnOnce() -> Result<(), String>) -> Result<Phase, String> {
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    f()?;
    Ok(Phase { op, batch, qd: 0, bytes, seconds: t0.elapsed().as_secs_f64(), cpu: cpu_time() - cpu0 })
}

fn put_many(store: &Store, bufs: &[AlignedBuf], value: usize, keys: usize, batch: usize) -> Result<Phase, String> {
    let names: Vec<Vec<u8>> = (0..keys).map(key).collect();
    timed("put_many", batch, (keys * value) as u64, || {
        for (chunk_no, chunk) in names.chunks(batch).enumerate() {
            let items: Vec<(&[u8], &[u8])> = chunk.iter().enumerate().map(|(i, k)| (&k[..], &bufs[i][..value])).collect();
            for (i, r) in store.put_many(&items).map_err(|e| e.to_string())?.into_iter().enumerate() {
                r.map_err(|e| format!("put_many item {}: {e}", chunk_no * batch + i))?;
            }
        }
        Ok(())
    })
}

fn get_many(store: &Store, bufs: &mut [AlignedBuf], value: usize, keys: usize, batch: usize) -> Result<Phase, String> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let rounds = keys.div_ceil(batch);
    timed("get_many", batch, (rounds * batch * value) as u64, || {
        for _ in 0..rounds {
            let names: Vec<Vec<u8>> = (0..batch).map(|_| key(rng.below(keys))).collect();
            let refs: Vec<&[u8]> = names.iter().map(|k| &k[..]).collect();
            let mut outs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
            for (i, r) in store.get_many(&refs, &mut outs).map_err(|e| e.to_string())?.into_iter().enumerate() {
                let n = r.map_err(|e| format!("get_many {:?}: {e}", String::from_utf8_lossy(refs[i])))?;
                if n != value {
                    return Err(format!("get_many read {n} bytes, expected {value}"));
                }
            }
        }
        Ok(())
    })
}

fn get_one(store: &Store, buf: &mut AlignedBuf, value: usize, keys: usize, n: usize) -> Result<Phase, String> {
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    timed("get", 1, (n * value) as u64, || {
        for _ in 0..n {
            let got = store.get(&key(rng.below(keys)), buf).map_err(|e| format!("get: {e}"))?;
            if got != value {
                return Err(format!("get read {got} bytes, expected {value}"));
            }
        }
        Ok(())
    })
}

fn put_one(store: &Store, buf: &AlignedBuf, value: usize, keys: usize, n: usize) -> Result<Phase, String> {
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    timed("put", 1, (n * value) as u64, || {
        for _ in 0..n {
            store.put(&key(rng.below(keys)), &buf[..value]).map_err(|e| format!("put: {e}"))?;
        }
        Ok(())
    })
}

/// fio's bytes per second on the same device, block size (one slot) and depth as `p`.
fn fio_rate(args: &Args, g: &Geometry, p: &Phase, keys: usize) -> Result<f64, String> {
    let job = fio::DataJob {
        filename: args.device.clone(),
        write: p.op.starts_with("put"),
        bs: g.slot_bytes(),
        offset: g.data_base(),
        size: keys as u64 * g.slot_bytes(),
        io_size: p.bytes.div_ceil(g.slot_bytes() - g.header_bytes() as u64) * g.slot_bytes(),
        iodepth: p.qd,
        direct: !args.buffered,
    };
    fio::run_data(&job)
}

fn print_line(p: &Phase, value: usize, fio: Option<Result<f64, String>>) {
    let ours = p.gb_per_s();
    let (fio_gb, ratio) = match &fio {
        Some(Ok(bps)) => (format!("{:.3}", bps / 1e9), format!("{:.2}", ours / (bps / 1e9))),
        Some(Err(_)) | None => ("-".to_string(), "-".to_string()),
    };
    println!(
        "data: op={} value={value} batch={} qd={} GB/s={ours:.3} fio_GB/s={fio_gb} ratio={ratio} cpu_s_per_GB={:.3} seconds={:.3}",
        p.op,
        p.batch,
        p.qd,
        p.cpu_s_per_gb(),
        p.seconds
    );
    if let Some(Err(e)) = fio {
        println!("data: fio for op={}: {e}", p.op);
    }
}

/// One line of the handle's metrics: counters, then latency percentiles in microseconds.
fn metrics_line(m: &MetricsSnapshot) -> String {
    let us = |ns: u64| ns as f64 / 1e3;
    let lat = |name: &str, l: &Latency| {
        format!(
            " {name}_n={} {name}_p50_us={:.1} {name}_p99_us={:.1} {name}_p999_us={:.1}",
            l.count,
            us(l.p50_ns),
            us(l.p99_ns),
            us(l.p999_ns)
        )
    };
    format!(
        "data: metrics gets={} hits={} misses={} puts={} deletes={} bytes_read={} bytes_written={} corrupt={} io_errors={}{}{}{}{}",
        m.gets,
        m.hits,
        m.misses,
        m.puts,
        m.deletes,
        m.bytes_read,
        m.bytes_written,
        m.corrupt,
        m.io_errors,
        lat("get", &m.get),
        lat("put", &m.put),
        lat("get_many", &m.get_many),
        lat("put_many", &m.put_many)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_line_names_every_counter_and_percentile() {
        let l = Latency { count: 3, p50_ns: 1500, p99_ns: 20_000, p999_ns: 20_000, max_ns: 20_000 };
        let m = MetricsSnapshot { gets: 7, hits: 6, get: l, put_many: l, ..Default::default() };
        let line = metrics_line(&m);
        assert!(line.starts_with("data: metrics gets=7 hits=6 misses=0 "), "{line}");
        for want in ["get_n=3 get_p50_us=1.5 get_p99_us=20.0 get_p999_us=20.0", "put_p50_us=0.0", "put_many_p99_us=20.0"] {
            assert!(line.contains(want), "{want} in {line}");
        }
    }
}
