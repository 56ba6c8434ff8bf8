//! The command line: flags, their defaults, and the checks between them.

use std::path::PathBuf;
use std::str::FromStr;

use rawblock::store::RecoverMode;

pub const USAGE: &str = "usage: rb-bench [--device-path PATH] [--cache-space-gb GB] [--slot-bytes N] [--header-bytes N]
                [--prepare --i-understand-this-overwrites-device] [--prepare-threads N] [--max-entries N]
                [--measure] [--io-engine posix io_uring uring_cmd] [--threads 1 8] [--repeats 5]
                [--queue-depth 128] [--recover-mode checkpoint|auto|scan] [--compare-fio] [--buffered] [--json FILE]
                [--dirty-percent P]
       rb-bench --workload data [--device-path PATH] [--i-understand-this-overwrites-device] [--io-engine io_uring|posix|uring_cmd]
                [--threads N] [--queue-depth 16] [--batch 64] [--value-bytes N] [--data-gib 2] [--compare-fio]
defaults: --device-path target/bench/fixture.img (a sparse file), --cache-space-gb 64, --slot-bytes 1048576;
--recover-mode checkpoint (full validation: every header, the read fio is compared with) is the default;
--dirty-percent P: --prepare changes P% of the entries after its checkpoint and stops as a crash would,
--measure then times fast recovery (auto) against full validation and prints the restart: line;
--workload data formats its own fixture (it writes; --measure of the recovery workload never does);
--workload lease-cost formats its own fixture twice (with and without the lease journal) and times puts;
--workload checkpoint-cost fills its own fixture and times full checkpoints against deltas after --dirty-percent";

#[derive(Debug)]
pub struct Args {
    pub device: PathBuf,
    pub cache_space_gb: f64,
    pub slot_bytes: u64,
    pub header_bytes: u32,
    pub prepare: bool,
    pub overwrite_ok: bool,
    pub prepare_threads: usize,
    pub max_entries: Option<u64>,
    pub measure: bool,
    pub engines: Vec<String>,
    pub threads: Vec<usize>,
    pub repeats: usize,
    pub queue_depth: usize,
    pub compare_fio: bool,
    pub buffered: bool,
    pub recover_mode: RecoverMode,
    /// `--dirty-percent`: the restart workload (see restart.rs).
    pub dirty_percent: Option<f64>,
    pub json: Option<PathBuf>,
    /// `--workload data`: the data path instead of recovery.
    pub data: bool,
    /// `--workload lease-cost`: puts with and without the lease journal, in one run.
    pub lease_cost: bool,
    /// `--workload checkpoint-cost`: a full checkpoint against a delta, in one run.
    pub checkpoint_cost: bool,
    /// Bytes per value (default: the slot's whole payload).
    pub value_bytes: Option<usize>,
    pub batch: usize,
    /// GiB of values each phase moves (at most the fixture's slots).
    pub data_gib: f64,
}

impl Default for Args {
    fn default() -> Self {
        Args {
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
            // Full validation: what the engines and fio are compared on (AUTO is fast recovery,
            // which reads only what changed since the checkpoint: --dirty-percent measures it).
            recover_mode: RecoverMode::Checkpoint,
            dirty_percent: None,
            json: None,
            data: false,
            lease_cost: false,
            checkpoint_cost: false,
            value_bytes: None,
            batch: 64,
            data_gib: 2.0,
        }
    }
}

/// Parses `argv` (without the program name). `Err` holds what to print; `--help` is one.
pub fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    for (flag, values) in group(argv)? {
        apply(&mut a, &flag, values)?;
    }
    check(&a)?;
    Ok(a)
}

/// Splits `argv` into flags, each with its values: everything up to the next `--flag`.
fn group(argv: &[String]) -> Result<Vec<(String, Vec<String>)>, String> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for arg in argv {
        if arg.starts_with("--") || arg == "-h" {
            groups.push((arg.clone(), Vec::new()));
        } else if let Some((_, values)) = groups.last_mut() {
            values.push(arg.clone());
        } else {
            return Err(format!("unknown argument {arg:?}\n{USAGE}"));
        }
    }
    Ok(groups)
}

fn apply(a: &mut Args, flag: &str, v: Vec<String>) -> Result<(), String> {
    match flag {
        "--device-path" => a.device = one(flag, v)?,
        "--cache-space-gb" => a.cache_space_gb = one(flag, v)?,
        "--slot-bytes" => a.slot_bytes = one(flag, v)?,
        "--header-bytes" => a.header_bytes = one(flag, v)?,
        "--prepare" => a.prepare = switch(flag, v)?,
        "--i-understand-this-overwrites-device" => a.overwrite_ok = switch(flag, v)?,
        "--prepare-threads" => a.prepare_threads = one(flag, v)?,
        "--max-entries" => a.max_entries = Some(one(flag, v)?),
        "--measure" => a.measure = switch(flag, v)?,
        "--io-engine" => a.engines = many(flag, v)?,
        "--threads" => a.threads = many(flag, v)?,
        "--repeats" => a.repeats = one(flag, v)?,
        "--queue-depth" => a.queue_depth = one(flag, v)?,
        "--compare-fio" => a.compare_fio = switch(flag, v)?,
        "--buffered" => a.buffered = switch(flag, v)?,
        "--recover-mode" => a.recover_mode = recover_mode(&one::<String>(flag, v)?)?,
        "--json" => a.json = Some(one(flag, v)?),
        "--dirty-percent" => a.dirty_percent = Some(one(flag, v)?),
        "--workload" => match one::<String>(flag, v)?.as_str() {
            "lease-cost" => a.lease_cost = true,
            "checkpoint-cost" => a.checkpoint_cost = true,
            other => a.data = workload(other)?,
        },
        "--value-bytes" => a.value_bytes = Some(one(flag, v)?),
        "--batch" => a.batch = one(flag, v)?,
        "--data-gib" => a.data_gib = one(flag, v)?,
        "--help" | "-h" => return Err(USAGE.into()),
        other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
    }
    Ok(())
}

fn check(a: &Args) -> Result<(), String> {
    if a.data && (a.batch == 0 || a.data_gib.is_nan() || a.data_gib <= 0.0) {
        return Err("--batch and --data-gib must be positive".into());
    }
    if a.dirty_percent.is_some_and(|p: f64| !(0.0..=100.0).contains(&p)) {
        return Err("--dirty-percent must be between 0 and 100".into());
    }
    if !a.prepare && !a.measure && !a.data && !a.lease_cost && !a.checkpoint_cost {
        return Err(format!("say --prepare, --measure or both\n{USAGE}"));
    }
    if let Some(bad) = a.engines.iter().find(|e| !["posix", "io_uring", "uring_cmd"].contains(&e.as_str())) {
        return Err(format!("unknown --io-engine {bad:?} (posix, io_uring, uring_cmd)"));
    }
    if !(a.cache_space_gb > 0.0 && a.cache_space_gb.is_finite()) {
        return Err(format!("--cache-space-gb must be a positive number of GiB, not {}", a.cache_space_gb));
    }
    if a.repeats == 0 || a.threads.contains(&0) || a.queue_depth == 0 || a.prepare_threads == 0 {
        return Err("--repeats, --threads, --queue-depth and --prepare-threads must be positive".into());
    }
    Ok(())
}

/// `true` for the data workload.
fn workload(s: &str) -> Result<bool, String> {
    match s {
        "recovery" => Ok(false),
        "data" => Ok(true),
        other => Err(format!("--workload: {other:?} is not recovery, data, lease-cost or checkpoint-cost")),
    }
}

fn recover_mode(s: &str) -> Result<RecoverMode, String> {
    match s {
        "auto" => Ok(RecoverMode::Auto),
        "checkpoint" => Ok(RecoverMode::Checkpoint),
        "scan" => Ok(RecoverMode::Scan),
        other => Err(format!("--recover-mode: {other:?} is not auto, checkpoint or scan")),
    }
}

/// A flag that takes no value.
fn switch(flag: &str, v: Vec<String>) -> Result<bool, String> {
    match v.first() {
        None => Ok(true),
        Some(x) => Err(format!("{flag} takes no value (got {x:?})\n{USAGE}")),
    }
}

fn one<T: FromStr>(flag: &str, v: Vec<String>) -> Result<T, String> {
    match v.as_slice() {
        [x] => x.parse().map_err(|_| format!("{flag}: cannot parse {x:?}")),
        _ => Err(format!("{flag} takes one value")),
    }
}

fn many<T: FromStr>(flag: &str, v: Vec<String>) -> Result<Vec<T>, String> {
    if v.is_empty() {
        return Err(format!("{flag} takes at least one value"));
    }
    v.iter().map(|x| x.parse().map_err(|_| format!("{flag}: cannot parse {x:?}"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn flags_take_the_values_up_to_the_next_flag() {
        let a = parse(&argv("--measure --io-engine posix io_uring --threads 1 8 16 --header-bytes 8192")).unwrap();
        assert!(a.measure && !a.prepare);
        assert_eq!(a.engines, ["posix", "io_uring"]);
        assert_eq!(a.threads, [1, 8, 16]);
        assert_eq!(a.header_bytes, 8192);
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(parse(&argv("--prepare extra")).unwrap_err().contains("takes no value"));
        assert!(parse(&argv("stray --measure")).unwrap_err().contains("unknown argument"));
        assert!(parse(&argv("--measure --repeats")).unwrap_err().contains("takes one value"));
        assert!(parse(&argv("--measure --io-engine spdk")).unwrap_err().contains("unknown --io-engine"));
        assert!(parse(&argv("--threads 1")).unwrap_err().contains("--prepare, --measure or both"));
    }
}
