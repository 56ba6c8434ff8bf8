//! rb-bench: prepare a fixture, then measure recovery per engine.
//!
//! ```text
//! rb-bench --prepare --i-understand-this-overwrites-device [--device-path P] [--cache-space-gb 64]
//! rb-bench --measure --io-engine posix io_uring --threads 1 8 --repeats 5 --queue-depth 128 [--compare-fio]
//! rb-bench --prepare --measure --dirty-percent 1 ...   (restart: fast recovery vs full validation)
//! ```
//! `--measure` opens the device read-only for every repeat and never writes to it.
//! `--workload data` formats its own fixture and times batched and single puts and gets.

mod args;
mod data;
mod fio;
mod fixture;
mod hints;
mod json;
mod measure;
mod report;
mod restart;

use std::io::Write as _;
use std::process::ExitCode;

use args::Args;
use fixture::Fixture;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("rb-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(false)`: the measurement ran but a variant indexed other than the prepared N.
fn run(args: &Args) -> Result<bool, String> {
    if args.data {
        return data::run(args);
    }
    if args.lease_cost {
        return restart::lease_cost(args);
    }
    if args.checkpoint_cost {
        return restart::checkpoint_cost(args);
    }
    if args.prepare {
        fixture::prepare(args)?;
    }
    if args.measure {
        return measure(args);
    }
    Ok(true)
}

/// `--measure`: every variant `--repeats` times, then the summaries, fio, and the JSON.
fn measure(args: &Args) -> Result<bool, String> {
    fixture::refuse_mounted(&args.device)?;
    report::preamble(args);
    let fixture = Fixture::open(args)?;
    if let Some(percent) = args.dirty_percent {
        return restart::measure(args, percent, fixture.expected);
    }
    report::fixture(fixture.expected, args.recover_mode);
    let summaries: Vec<_> =
        measure::variants(args).iter().filter_map(|v| measure::measure_variant(args, v, fixture.expected)).collect();
    let ok = fixture.expected > 0 && summaries.iter().all(|s| s.all_indexed(fixture.expected));
    summaries.iter().for_each(report::summary);
    report::speedups(&summaries);
    let fio = args.compare_fio.then(|| fio::compare(args, &fixture.geometry, &summaries));
    if let Some(c) = &fio {
        report::fio(c);
    }
    if let Some(path) = &args.json {
        json::write(path, &summaries, fio.as_ref().and_then(|c| c.as_ref().ok()))?;
    }
    if !ok {
        report::failed();
    }
    let _ = std::io::stdout().flush();
    Ok(ok)
}
