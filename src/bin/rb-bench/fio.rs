//! `--compare-fio`: fio on the read pattern recovery does, in the same run, as the yardstick.

use std::path::{Path, PathBuf};
use std::process::Command;

use rawblock::engine::{EngineChoice, EngineConfig};
use rawblock::format::Geometry;
use serde_json::Value;

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
        if engine.choice() != EngineChoice::IoUring {
            return Err("fio is compared with io_uring variants only".into());
        }
        Ok(FioJob {
            filename: device.to_path_buf(),
            header_bytes: geometry.header_bytes() as u64,
            slot_bytes: geometry.slot_bytes(),
            data_base: geometry.data_base(),
            ios,
            ioengine: "io_uring",
            iodepth: engine.queue_depth(),
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
        .find(|s| s.config.choice() == EngineChoice::IoUring)
        .ok_or("needs an io_uring variant")?;
    // As many reads as the recovery did: the checkpoint's entries, or every slot for a scan.
    let job = FioJob::new(&args.device, geometry, uring.first().header_reads, &uring.config, !args.buffered)?;
    let fio = run(&job)?;
    Ok(FioComparison { label: uring.label.clone(), job, fio_reads_per_second: fio, ours: uring.stats.headers_per_second })
}

/// The fio twin of a data phase: random reads or writes of whole slots.
#[derive(Clone, Debug, PartialEq)]
pub struct DataJob {
    pub filename: PathBuf,
    pub write: bool,
    /// One slot: the record a get or put moves.
    pub bs: u64,
    pub offset: u64,
    /// The region holding the phase's keys.
    pub size: u64,
    /// Bytes to move in all (what the phase moved, in whole slots).
    pub io_size: u64,
    pub iodepth: usize,
    pub direct: bool,
}

impl DataJob {
    pub fn args(&self) -> Vec<String> {
        let filename = self.filename.display().to_string().replace(':', "\\:");
        vec![
            "--name=data".into(),
            format!("--filename={filename}"),
            format!("--rw={}", if self.write { "randwrite" } else { "randread" }),
            format!("--bs={}", self.bs),
            format!("--direct={}", u8::from(self.direct)),
            "--ioengine=io_uring".into(),
            format!("--iodepth={}", self.iodepth),
            format!("--offset={}", self.offset),
            format!("--size={}", self.size),
            format!("--io_size={}", self.io_size),
            "--norandommap".into(),
            "--randrepeat=0".into(),
            "--output-format=json".into(),
        ]
    }
}

/// fio's bytes per second for a data job.
pub fn run_data(job: &DataJob) -> Result<f64, String> {
    let out = Command::new("fio").args(job.args()).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "fio is not installed (apt-get install fio, or leave out --compare-fio)".into(),
        _ => format!("cannot run fio: {e}"),
    })?;
    if !out.status.success() {
        return Err(format!("fio failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let side = if job.write { "write" } else { "read" };
    parse_bandwidth(&String::from_utf8_lossy(&out.stdout), side)
}

/// jobs[0].<side>.bw_bytes from fio's JSON, after checking jobs[0].error.
pub fn parse_bandwidth(stdout: &str, side: &str) -> Result<f64, String> {
    let doc = json_doc(stdout)?;
    let job = doc.pointer("/jobs/0").ok_or("fio's JSON has no jobs[0]")?;
    if job.pointer("/error").and_then(Value::as_i64).unwrap_or(0) != 0 {
        return Err("fio's job failed".into());
    }
    job.pointer(&format!("/{side}/bw_bytes"))
        .and_then(Value::as_f64)
        .filter(|&b| b > 0.0)
        .ok_or_else(|| format!("fio's JSON has no positive jobs[0].{side}.bw_bytes"))
}

fn json_doc(stdout: &str) -> Result<Value, String> {
    let start = if stdout.starts_with('{') { 0 } else { stdout.find("\n{").ok_or("fio printed no JSON")? + 1 };
    serde_json::Deserializer::from_str(&stdout[start..])
        .into_iter()
        .next()
        .ok_or("fio printed no JSON")?
        .map_err(|e| format!("cannot parse fio's JSON: {e}"))
}

/// What rb-bench reads of fio's JSON: the first job's read side.
#[derive(Debug, PartialEq)]
pub struct FioRead {
    pub iops: f64,
    pub total_ios: u64,
}

/// Runs the job; fio's reads per second, once it is clear fio did the reads asked for.
fn run(job: &FioJob) -> Result<f64, String> {
    let out = Command::new("fio").args(job.args()).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "fio is not installed (apt-get install fio, or leave out --compare-fio)".into(),
        _ => format!("cannot run fio: {e}"),
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let read = match (parse_output(&String::from_utf8_lossy(&out.stdout)), out.status.success()) {
        (Ok(read), true) => read,
        (Ok(_), false) => return Err(format!("fio failed ({}): {}", out.status, stderr.trim())),
        (Err(e), _) if stderr.trim().is_empty() => return Err(e),
        (Err(e), _) => return Err(format!("{e}; fio said: {}", stderr.trim())),
    };
    if read.total_ios != job.ios || read.iops <= 0.0 {
        return Err(format!("fio made {} reads at {} reads/s; the job asked for {}", read.total_ios, read.iops, job.ios));
    }
    Ok(read.iops)
}

/// Parses what `fio --output-format=json` printed: jobs[0].error, .read.iops and .read.total_ios.
pub fn parse_output(stdout: &str) -> Result<FioRead, String> {
    // When a job fails, fio prints its own "fio: ..." lines on stdout ahead of the JSON.
    let doc = json_doc(stdout)?;
    let job = doc.pointer("/jobs/0").ok_or("fio's JSON has no jobs[0]")?;
    let field = |path: &str| job.pointer(path).ok_or_else(|| format!("fio's JSON has no jobs[0]{}", path.replace('/', ".")));
    let not_a = |path: &str, what: &str| format!("fio's jobs[0]{} is not {what}", path.replace('/', "."));
    let error = field("/error")?.as_i64().ok_or_else(|| not_a("/error", "an integer"))?;
    if error != 0 {
        return Err(format!("fio's job failed: {}", std::io::Error::from_raw_os_error(error as i32)));
    }
    Ok(FioRead {
        iops: field("/read/iops")?.as_f64().ok_or_else(|| not_a("/read/iops", "a number"))?,
        total_ios: field("/read/total_ios")?.as_u64().ok_or_else(|| not_a("/read/total_ios", "a count"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rawblock::format::GeometryRequest;

    #[test]
    fn the_job_reads_one_header_per_slot_from_the_data_base() {
        let req = GeometryRequest { header_bytes: 8192, slot_bytes: 256 << 10, ..Default::default() };
        let g = Geometry::plan(&req, 64 << 20, 512).unwrap();
        let engine = EngineConfig::new(EngineChoice::IoUring, 1, 16);
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
        let posix = EngineConfig::new(EngineChoice::Posix, 8, 128);
        assert!(FioJob::new(Path::new("x"), &g, 1, &posix, true).is_err());
        let uring = EngineConfig::new(EngineChoice::IoUring, posix.posix_threads(), posix.queue_depth());
        let job = FioJob::new(Path::new("/dev/disk/by-path/pci-0000:01:00.0"), &g, 1, &uring, false).unwrap();
        assert!(job.args().contains(&"--filename=/dev/disk/by-path/pci-0000\\:01\\:00.0".to_string()));
        assert!(job.args().contains(&"--direct=0".to_string()) && job.args().contains(&"--bs=4096".to_string()));
    }

    const FIO_8K: &str = include_str!("testdata/fio-3.33-io_uring-8k-headers.json");
    const FIO_MISSING: &str = include_str!("testdata/fio-3.33-missing-file.json");

    #[test]
    fn reads_iops_and_total_ios_from_a_real_fio_run() {
        // fio 3.33, the job above on a 253-slot fixture (8 KiB headers, 256 KiB slots, QD 16).
        assert_eq!(parse_output(FIO_8K), Ok(FioRead { iops: 42166.666667, total_ios: 253 }));
    }

    #[test]
    fn a_failed_job_is_an_error_even_behind_fio_notes_on_stdout() {
        // fio 3.33 on a missing file: "fio: ..." lines, then JSON with jobs[0].error = 2 and 0 IOPS.
        assert!(FIO_MISSING.starts_with("fio: "));
        assert_eq!(parse_output(FIO_MISSING), Err("fio's job failed: No such file or directory (os error 2)".into()));
    }

    #[test]
    fn missing_or_mistyped_fields_are_named() {
        let no_jobs = r#"{"fio version":"fio-3.33","jobs":[]}"#;
        assert_eq!(parse_output(no_jobs), Err("fio's JSON has no jobs[0]".into()));
        let no_iops = r#"{"jobs":[{"error":0,"read":{"total_ios":3}}]}"#;
        assert_eq!(parse_output(no_iops), Err("fio's JSON has no jobs[0].read.iops".into()));
        let text_iops = r#"{"jobs":[{"error":0,"read":{"iops":"fast","total_ios":3}}]}"#;
        assert_eq!(parse_output(text_iops), Err("fio's jobs[0].read.iops is not a number".into()));
        assert_eq!(parse_output("fio: no such option --bogus\n"), Err("fio printed no JSON".into()));
        assert!(parse_output("{\"jobs\": [").unwrap_err().starts_with("cannot parse fio's JSON"));
    }
}
