//! The command line, declared once: clap derives the parser and every --help from it.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rawblock::engine::EngineChoice;
use rawblock::store::RecoverMode;

#[derive(Parser)]
#[command(name = "rawblock", version, about = "Look at and operate a rawblock device (a block device or an image file)")]
#[command(after_help = "Exit status: 0 done (check: no damage found), 1 check found damage or get/rm found no such key, \
2 bad usage, 3 the command could not run.\nSee rawblock(1).")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Format a device or image file (destroys what it holds)
    Format(FormatArgs),
    /// Geometry, device id, checkpoint containers, and which engines can run
    Info(InfoArgs),
    /// Verify the superblock, every checkpoint entry and every slot header (--deep: every payload)
    Check(CheckArgs),
    /// List the indexed keys with their value lengths and generations
    Ls(LsArgs),
    /// Write the value of KEY to stdout
    Get(KeyArgs),
    /// Store stdin as the value of KEY, then checkpoint
    Put(KeyArgs),
    /// Remove KEY, then checkpoint
    Rm(KeyArgs),
    /// Keys, slots used and free, bytes stored, and what recovery took
    Stats(StatsArgs),
    /// Show what recovery would do, reading only (--dry-run is required)
    Recover(RecoverArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Format(_) => "format",
            Command::Info(_) => "info",
            Command::Check(_) => "check",
            Command::Ls(_) => "ls",
            Command::Get(_) => "get",
            Command::Put(_) => "put",
            Command::Rm(_) => "rm",
            Command::Stats(_) => "stats",
            Command::Recover(_) => "recover",
        }
    }
}

/// The device and how to do I/O on it: every command takes these.
#[derive(Args)]
pub struct Common {
    /// The block device or image file
    pub device: PathBuf,
    /// The I/O engine
    #[arg(long, value_enum, default_value_t = Engine::Auto)]
    pub engine: Engine,
    /// Threads of the POSIX engine (0: the library's default)
    #[arg(long, default_value_t = 0)]
    pub posix_threads: usize,
    /// Reads in flight with io_uring (0: the library's default)
    #[arg(long, default_value_t = 0)]
    pub queue_depth: usize,
    /// Without O_DIRECT (e.g. an image on tmpfs)
    #[arg(long)]
    pub buffered: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Engine {
    Auto,
    Posix,
    #[value(name = "io_uring")]
    IoUring,
    #[value(name = "uring_cmd")]
    UringCmd,
}

impl Engine {
    pub fn choice(self) -> EngineChoice {
        match self {
            Engine::Auto => EngineChoice::Auto,
            Engine::Posix => EngineChoice::Posix,
            Engine::IoUring => EngineChoice::IoUring,
            Engine::UringCmd => EngineChoice::UringCmd,
        }
    }
}

#[derive(Args)]
pub struct FormatArgs {
    #[command(flatten)]
    pub common: Common,
    /// Bytes to use, with an optional K, M, G or T suffix (powers of 1024); an image file is
    /// created or grown to this size. Default: the whole device or the file's size
    #[arg(long, value_parser = parse_bytes)]
    pub capacity: Option<u64>,
    /// Bytes per slot (header + value)
    #[arg(long, value_parser = parse_bytes)]
    pub slot_bytes: Option<u64>,
    /// Bytes of each slot's header block
    #[arg(long, value_parser = parse_bytes)]
    pub header_bytes: Option<u64>,
    /// The format's block size
    #[arg(long, value_parser = parse_bytes)]
    pub block_size: Option<u64>,
    /// Longest key
    #[arg(long)]
    pub max_key_bytes: Option<u32>,
    /// Allocate the whole image file now (fallocate)
    #[arg(long)]
    pub preallocate: bool,
    /// Format over a rawblock device or other data
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub common: Common,
    /// One JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: Common,
    /// Also read every value and verify its CRC
    #[arg(long)]
    pub deep: bool,
    /// One JSON object instead of text (and no progress bar)
    #[arg(long)]
    pub json: bool,
    /// Problems to list in the text report (all are counted)
    #[arg(long, default_value_t = 20)]
    pub max_problems: usize,
}

#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub common: Common,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub common: Common,
    /// The key, as bytes (the argument's bytes, no terminator)
    pub key: OsString,
}

#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub common: Common,
    /// Read only: report what recovery would do and change nothing (required)
    #[arg(long, required = true)]
    pub dry_run: bool,
    /// auto: fast recovery (the checkpoint and the slots leased since), else the newest checkpoint
    /// that verifies, else a scan; checkpoint: full validation of the checkpoint only; scan: every header
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    Auto,
    Checkpoint,
    Scan,
}

impl Mode {
    pub fn mode(self) -> RecoverMode {
        match self {
            Mode::Auto => RecoverMode::Auto,
            Mode::Checkpoint => RecoverMode::Checkpoint,
            Mode::Scan => RecoverMode::Scan,
        }
    }
}

/// "64M" -> 67108864: a number with an optional K, M, G or T (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{s}: the suffix is K, M, G or T")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("{s}: not a number of bytes"))?;
    n.checked_mul(1u64 << shift).ok_or_else(|| format!("{s}: too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert!(parse_bytes("1X").is_err() && parse_bytes("M").is_err() && parse_bytes("99999999T").is_err());
    }
}
