//! `--compare-fio`: fio on the read pattern recovery does, in the same run, as the yardstick.

use std::path::{Path, PathBuf};
use std::process::Command;

use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::Geometry;

use crate::args::Args;
use crate::measure::Summary;

/// The fio job that reads what recovery reads: the first `header_bytes` of each of
/// `ios` consecutive slots from the data base, with the variant's engine and depth.
#[derive(Clone, Debug, PartialEq)]
pub struct FioJob {
    pub filename: PathBuf,
    pub header_bytes: u64,
    pub slot_bytes: u64,
    pub data_base: u64,
    pub ios: u64,
    pub ioengine: &'static str,
    pub iodepth: usize,
    /// O_DIRECT, as rb-bench opens the device unless --buffered.
    pub direct: bool,
}

impl FioJob {
    /// The job matching `engine` on the fixture's `geometry` (the superblock's, whatever
    /// flags --prepare was given). Only io_uring has a fio twin.
    pub fn new(device: &Path, geometry: &Geometry, ios: u64, engine: &EngineConfig, direct: bool) -> Result<FioJob, String> {
        if engine.choice != EngineChoice::IoUring {
            return Err("fio is compared with io_uring variants only".into());
        }
        Ok(FioJob {
            filename: device.to_path_buf(),
            header_bytes: geometry.header_bytes as u64,
            slot_bytes: geometry.slot_bytes,
            data_base: geometry.data_base(),
            ios,
            ioengine: "io_uring",
            iodepth: engine.queue_depth,
            direct,
        })
    }

    /// fio's command line: read a header, skip the rest of its slot, ios times.
    pub fn args(&self) -> Vec<String> {
        // fio splits --filename at ':' (a list of files) unless it is escaped.
        let filename = self.filename.display().to_string().replace(':', "\\:");
        vec![
            "--name=hdr".into(),
            "--readonly".into(),
            format!("--filename={filename}"),
            format!("--rw=read:{}", self.slot_bytes - self.header_bytes),
            format!("--bs={}", self.header_bytes),
            format!("--direct={}", u8::from(self.direct)),
            format!("--ioengine={}", self.ioengine),
            format!("--iodepth={}", self.iodepth),
            format!("--offset={}", self.data_base),
            format!("--size={}", self.ios * self.slot_bytes),
            format!("--number_ios={}", self.ios),
            "--output-format=json".into(),
        ]
    }
}

/// fio's rate against a variant's.
pub struct FioComparison {
    pub label: String,
    pub job: FioJob,
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
    // As many reads as the recovery did: the checkpoint's entries, or every slot for a scan.
    let job = FioJob::new(&args.device, geometry, uring.first().header_reads, &uring.config, !args.buffered)?;
    let fio = run(&job)?;
    Ok(FioComparison { label: uring.label.clone(), job, fio_reads_per_second: fio, ours: uring.stats.headers_per_second })
}

/// Runs the job; fio's read IOPS.
fn run(job: &FioJob) -> Result<f64, String> {
    let out = Command::new("fio").args(job.args()).output().map_err(|e| format!("cannot run fio: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rawblock::format::GeometryRequest;

    #[test]
    fn the_job_reads_one_header_per_slot_from_the_data_base() {
        let req = GeometryRequest { header_bytes: 8192, slot_bytes: 256 << 10, ..Default::default() };
        let g = Geometry::plan(&req, 64 << 20, 512).unwrap();
        let engine = EngineConfig { choice: EngineChoice::IoUring, posix_threads: 1, queue_depth: 16 };
        let job = FioJob::new(Path::new("/dev/nvme0n1"), &g, 253, &engine, true).unwrap();
        let base = g.data_base();
        assert!(base > 0 && base % 4096 == 0);
        let expected = [
            "--name=hdr".to_string(),
            "--readonly".into(),
            "--filename=/dev/nvme0n1".into(),
            "--rw=read:253952".into(), // 256 KiB slot - 8 KiB header
            "--bs=8192".into(),
            "--direct=1".into(),
            "--ioengine=io_uring".into(),
            "--iodepth=16".into(),
            format!("--offset={base}"),
            format!("--size={}", 253 * (256 << 10)),
            "--number_ios=253".into(),
            "--output-format=json".into(),
        ];
        assert_eq!(job.args(), expected);
    }

    #[test]
    fn only_io_uring_has_a_fio_job_and_colons_in_paths_are_escaped() {
        let g = Geometry::plan(&GeometryRequest::default(), 64 << 20, 512).unwrap();
        let posix = EngineConfig { choice: EngineChoice::Posix, posix_threads: 8, queue_depth: 128 };
        assert!(FioJob::new(Path::new("x"), &g, 1, &posix, true).is_err());
        let uring = EngineConfig { choice: EngineChoice::IoUring, ..posix };
        let job = FioJob::new(Path::new("/dev/disk/by-path/pci-0000:01:00.0"), &g, 1, &uring, false).unwrap();
        assert!(job.args().contains(&"--filename=/dev/disk/by-path/pci-0000\\:01\\:00.0".to_string()));
        assert!(job.args().contains(&"--direct=0".to_string()) && job.args().contains(&"--bs=4096".to_string()));
    }
}
