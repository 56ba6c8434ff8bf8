//! rawblock: look at and operate a rawblock device from the shell (what xfs_info, fsck and
//! nvme-cli answer for theirs): format, info, check, ls, get, put, rm, stats, recover --dry-run.
//!
//! Every command goes through the library's own code (`Store`, the format decoders, the
//! engines); only `format`, `put` and `rm` open the device for writing.
//!
//! Exit status: 0 done (check: no damage), 1 the answer is no (check found damage, get/rm:
//! no such key), 2 bad usage, 3 the command could not run (open failed, I/O error, ...).

mod args;
mod inspect;
mod kv;
mod show;

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;
use rawblock::engine::EngineConfig;
use rawblock::{OpenOptions, Store};

use args::{Cli, Command, Common};

/// What a command concluded, as an exit status.
pub enum Outcome {
    Done,
    /// Damage found, or the key asked for is absent.
    No,
}

/// A command that could not run, with what to tell the user.
pub struct Failure(pub String);

impl From<rawblock::Error> for Failure {
    fn from(e: rawblock::Error) -> Failure {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = cli.command.name();
    let outcome = match cli.command {
        Command::Format(a) => kv::format(&a),
        Command::Info(a) => inspect::info(&a),
        Command::Check(a) => inspect::check(&a),
        Command::Ls(a) => kv::ls(&a),
        Command::Get(a) => kv::get(&a),
        Command::Put(a) => kv::put(&a),
        Command::Rm(a) => kv::rm(&a),
        Command::Stats(a) => kv::stats(&a),
        Command::Recover(a) => kv::recover(&a),
    };
    let _ = std::io::stdout().flush();
    match outcome {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::No) => ExitCode::from(1),
        Err(Failure(msg)) => {
            eprintln!("rawblock {name}: {msg}");
            ExitCode::from(3)
        }
    }
}

/// Opens (or formats) the device with the command's engine and I/O options.
pub fn open(common: &Common, mode: rawblock::store::OpenMode) -> Result<Store> {
    Ok(open_store(common, mode)?)
}

/// [`open`], keeping the library's error for a command that answers some itself.
pub fn open_store(common: &Common, mode: rawblock::store::OpenMode) -> rawblock::Result<Store> {
    let opts = OpenOptions {
        mode,
        engine: EngineConfig::new(common.engine.choice(), common.posix_threads, common.queue_depth),
        buffered: common.buffered,
        sync_writes: false,
    };
    Store::open(Path::new(&common.device), &opts)
}
