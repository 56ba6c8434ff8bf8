//! `--compare-fio`: fio on the read pattern recovery does, in the same run, as the yardstick.

use std::process::Command;

use rawblock::engine::EngineChoice;
use rawblock::format::Geometry;

use crate::args::Args;
use crate::measure::Summary;

/// fio's rate against a variant's.
pub struct FioComparison {
    pub label: String,
    pub ioengine: &'static str,
    pub iodepth: usize,
    pub fio_reads_per_second: f64,
    /// The variant's headers per second (at its median).
    pub ours: f64,
}

impl FioComparison {
    pub fn fraction(&self) -> f64 {
        self.ours / self.fio_reads_per_second
    }
}

/// Runs fio against the io_uring variant; `Err` says why there is no comparison.
pub fn compare(args: &Args, geometry: &Geometry, summaries: &[Summary]) -> Result<FioComparison, String> {
    let uring = summaries
        .iter()
        .find(|s| s.config.choice == EngineChoice::IoUring)
        .ok_or("needs an io_uring variant")?;
    // fio reads as many headers as the recovery did (a scan reads every slot).
    let reads = uring.first().header_reads;
    let fio = fio_rate(args, geometry.data_base(), geometry.slot_bytes, reads)?;
    Ok(FioComparison {
        label: uring.label.clone(),
        ioengine: "io_uring",
        iodepth: args.queue_depth,
        fio_reads_per_second: fio,
        ours: uring.stats.headers_per_second,
    })
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
