//! Measuring: each variant's recoveries, timed, and the numbers drawn from them.

use std::time::{Duration, Instant};

use rawblock::engine::{EngineChoice, EngineConfig, EngineKind};
use rawblock::store::{OpenMode, RecoverOptions, RecoverReport};
use rawblock::{OpenOptions, Store};

use crate::args::Args;
use crate::{hints, report};

/// One variant of the measurement: an engine and its knob.
pub struct Variant {
    pub label: String,
    pub config: EngineConfig,
}

pub fn variants(args: &Args) -> Vec<Variant> {
    let config = |choice, posix_threads| EngineConfig::new(choice, posix_threads, args.queue_depth);
    let mut v = Vec::new();
    for e in &args.engines {
        match e.as_str() {
            "posix" => v.extend(args.threads.iter().map(|&t| Variant {
                label: format!("posix(threads={t})"),
                config: config(EngineChoice::Posix, t),
            })),
            "io_uring" => v.push(Variant {
                label: format!("io_uring(qd={})", args.queue_depth),
                config: config(EngineChoice::IoUring, 1),
            }),
            _ => v.push(Variant {
                label: format!("uring_cmd(qd={})", args.queue_depth),
                config: config(EngineChoice::UringCmd, 1),
            }),
        }
    }
    v
}

/// User and system CPU time of the whole process (every thread).
#[derive(Clone, Copy)]
pub struct Cpu {
    pub user: Duration,
    pub sys: Duration,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu { user: self.user - o.user, sys: self.sys - o.sys }
    }
}

pub fn cpu_time() -> Cpu {
    // SAFETY: getrusage fills the zeroed struct we pass; no other memory is touched.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Cpu { user: tv(ru.ru_utime), sys: tv(ru.ru_stime) }
}

/// One timed recovery.
pub struct Run {
    pub seconds: f64,
    pub cpu: Cpu,
    pub report: RecoverReport,
    pub index_bytes_per_entry: f64,
}

fn run_once(args: &Args, v: &Variant) -> Result<Run, String> {
    let opts = OpenOptions { mode: OpenMode::ReadOnly, buffered: args.buffered, engine: v.config, ..Default::default() };
    let store = Store::open(&args.device, &opts).map_err(|e| hints::engine(e, v.config.choice(), &args.device, !args.buffered))?;
    if v.config.choice() == EngineChoice::IoUring && store.engine_kind() != EngineKind::IoUring {
        return Err("io_uring did not run".into());
    }
    if v.config.choice() == EngineChoice::UringCmd && store.engine_kind() != EngineKind::UringCmd {
        return Err("uring_cmd did not run".into());
    }
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let report = store.recover(&RecoverOptions { mode: args.recover_mode, ..Default::default() }).map_err(|e| e.to_string())?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu = cpu_time() - cpu0;
    Ok(Run { seconds, cpu, report, index_bytes_per_entry: store.index_bytes_per_entry() })
}

/// A variant's runs (at least one) and what they add up to.
pub struct Summary {
    pub label: String,
    pub config: EngineConfig,
    pub runs: Vec<Run>,
    pub stats: Stats,
}

impl Summary {
    /// The first run's report: the counters (reads, I/O stats) every repeat shares.
    pub fn first(&self) -> &RecoverReport {
        &self.runs[0].report
    }

    pub fn all_indexed(&self, expected: u64) -> bool {
        self.runs.iter().all(|r| r.report.indexed == expected)
    }
}

pub struct Stats {
    pub seconds: Vec<f64>,
    pub median: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    pub headers_per_second: f64,
    /// User and system CPU time per header read, in microseconds, over every run.
    pub user_us: f64,
    pub sys_us: f64,
}

impl Stats {
    fn of(runs: &[Run]) -> Stats {
        let seconds = runs.iter().map(|r| r.seconds).collect();
        let cpu: Vec<Cpu> = runs.iter().map(|r| r.cpu).collect();
        Stats::new(seconds, runs[0].report.header_reads, &cpu)
    }

    /// From each run's seconds and CPU time, `reads` headers read per run.
    fn new(seconds: Vec<f64>, reads: u64, cpu: &[Cpu]) -> Stats {
        let mut s = seconds.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        let reads = reads as f64;
        let per_header = |f: fn(&Cpu) -> Duration| {
            cpu.iter().map(|c| f(c).as_secs_f64()).sum::<f64>() * 1e6 / (reads * cpu.len() as f64)
        };
        Stats {
            median,
            mean: s.iter().sum::<f64>() / n as f64,
            min: s[0],
            max: s[n - 1],
            headers_per_second: reads / median,
            user_us: per_header(|c| c.user),
            sys_us: per_header(|c| c.sys),
            seconds,
        }
    }

    pub fn cpu_us(&self) -> f64 {
        self.user_us + self.sys_us
    }
}

/// Runs one variant `--repeats` times, reporting each run; `None` if none ran.
/// A failed run ends the variant (the rest would fail the same way).
pub fn measure_variant(args: &Args, v: &Variant, expected: u64) -> Option<Summary> {
    let mut runs = Vec::new();
    for _ in 0..args.repeats {
        match run_once(args, v) {
            Ok(r) => {
                report::run(&v.label, &r, expected);
                runs.push(r);
            }
            Err(e) => {
                report::skipped(&v.label, &e);
                break;
            }
        }
    }
    if runs.is_empty() {
        return None;
    }
    let stats = Stats::of(&runs);
    Some(Summary { label: v.label.clone(), config: v.config, runs, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_take_the_median_of_an_even_count_and_cpu_per_header() {
        let cpu = Cpu { user: Duration::from_millis(1), sys: Duration::from_millis(3) };
        let s = Stats::new(vec![4.0, 1.0, 2.0, 3.0], 1000, &[cpu; 4]);
        assert_eq!((s.median, s.mean, s.min, s.max), (2.5, 2.5, 1.0, 4.0));
        assert_eq!(s.headers_per_second, 400.0);
        assert_eq!(s.seconds, [4.0, 1.0, 2.0, 3.0]);
        assert!((s.user_us - 1.0).abs() < 1e-9 && (s.cpu_us() - 4.0).abs() < 1e-9);
    }
}
