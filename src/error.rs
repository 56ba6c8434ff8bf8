//! One error type for the crate, and the status codes it maps to at the C boundary.

use std::ffi::CStr;
use std::io;
use std::path::PathBuf;

use crate::engine::EngineChoice;

/// Status codes returned by every C-ABI function. Values are part of the ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    InvalidArgument = 1,
    Io = 2,
    Format = 3,
    NoSpace = 4,
    TooLarge = 5,
    NotFound = 6,
    Corrupt = 7,
    BufferTooSmall = 8,
    Unsupported = 9,
    ReadOnly = 10,
    Busy = 11,
    State = 12,
    Exists = 13,
    Panic = 14,
    NoMemory = 15,
}

impl Status {
    /// A static, NUL-terminated description (what rb_status_str returns).
    pub fn description(self) -> &'static CStr {
        match self {
            Status::Ok => c"ok",
            Status::InvalidArgument => c"invalid argument",
            Status::Io => c"I/O error",
            Status::Format => c"not a usable rawblock device",
            Status::NoSpace => c"no space",
            Status::TooLarge => c"too large",
            Status::NotFound => c"not found",
            Status::Corrupt => c"corrupt data detected",
            Status::BufferTooSmall => c"buffer too small",
            Status::Unsupported => c"unsupported",
            Status::ReadOnly => c"read-only handle",
            Status::Busy => c"device busy",
            Status::State => c"invalid state for this call",
            Status::Exists => c"device holds data",
            Status::Panic => c"internal panic",
            Status::NoMemory => c"out of memory or resources",
        }
    }

    pub fn from_code(code: i32) -> Option<Status> {
        use Status::*;
        [
            Ok, InvalidArgument, Io, Format, NoSpace, TooLarge, NotFound, Corrupt,
            BufferTooSmall, Unsupported, ReadOnly, Busy, State, Exists, Panic, NoMemory,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }
}

/// What a too-large argument was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    Key,
    Value,
}

impl std::fmt::Display for Oversized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Oversized::Key => "key",
            Oversized::Value => "value",
        })
    }
}

/// What a device about to be formatted already holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// A rawblock superblock.
    Rawblock,
    /// Bytes that are not all zero.
    Data,
}

impl std::fmt::Display for Holds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Holds::Rawblock => "a rawblock device",
            Holds::Data => "data",
        })
    }
}

/// Every error of the crate. Messages name no C identifier: each front end
/// (the C boundary, Python, the tools) adds hints in its own terms.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    /// Opening with O_DIRECT failed with EINVAL: the filesystem may not support it.
    #[error("cannot open {} with O_DIRECT: {source}", path.display())]
    DirectIoRefused {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No rawblock superblock at the start of the device.
    #[error("{}: no rawblock superblock (the device was never formatted)", path.display())]
    NotRawblock { path: PathBuf },
    #[error("{0}")]
    Format(String),
    /// Every slot holds a value.
    #[error("no space: all {slot_count} slots are in use")]
    SlotsFull { slot_count: u64 },
    #[error("no space: a checkpoint of {entries} entries needs {needed} bytes; each container holds {capacity}")]
    CheckpointTooLarge { entries: u64, needed: u64, capacity: u64 },
    #[error("too large: a {what} of {len} bytes exceeds the device's maximum of {max}")]
    TooLarge { what: Oversized, len: u64, max: u64 },
    #[error("key not found")]
    NotFound,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall { needed: u64 },
    /// The engine asked for cannot run here.
    #[error("the {engine} engine is not available: {reason}")]
    EngineUnavailable { engine: EngineChoice, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the handle is read-only")]
    ReadOnly,
    #[error("busy: {0}")]
    Busy(String),
    /// An existing device answers reads and writes only after recovery.
    #[error("the device must be recovered before it is used")]
    NeedsRecovery,
    /// Recovery on a writable handle that is already in use.
    #[error("this handle is already in use (formatted or recovered); reopen the device to recover again")]
    AlreadyRecovered,
    /// Formatting would overwrite something.
    #[error("{} already holds {holds}", path.display())]
    Exists { path: PathBuf, holds: Holds },
    /// The host could not provide `bytes` of memory for `what`; the call changed nothing.
    #[error("out of memory: cannot allocate {bytes} bytes for {what}")]
    OutOfMemory { what: &'static str, bytes: u64 },
    /// The host refused a thread (e.g. RLIMIT_NPROC, or no memory for its stack);
    /// the threads already started were stopped and joined.
    #[error("out of resources: {what}: {source}")]
    OutOfThreads {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The storage under the device ran out of space (ENOSPC) or quota (EDQUOT):
    /// the filesystem holding a device file, or a thinly provisioned block device.
    #[error("{context}: no space left on {}: {source}", .filesystem.as_ref().map_or("the storage under the device".to_string(), |f| format!("the filesystem {f}")))]
    HostNoSpace {
        context: String,
        /// "MOUNTPOINT (FSTYPE on SOURCE)" of a device file's filesystem.
        filesystem: Option<String>,
        #[source]
        source: io::Error,
    },
}

/// Out of space under a device, as the device's writes report it: the OS
/// error with the filesystem it happened on. It travels inside an
/// `io::Error`, and [`Error::io`] turns it into [`Error::HostNoSpace`].
#[derive(Debug)]
pub struct HostSpace {
    /// "MOUNTPOINT (FSTYPE on SOURCE)"; None for a block device.
    pub filesystem: Option<String>,
    /// ENOSPC or EDQUOT.
    pub source: io::Error,
}

impl std::fmt::Display for HostSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.filesystem {
            Some(fs) => write!(f, "{} (on {fs})", self.source),
            None => write!(f, "{}", self.source),
        }
    }
}

impl std::error::Error for HostSpace {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Error {
    /// An OS error with what was being done. Running out of space (ENOSPC,
    /// EDQUOT) is [`Error::HostNoSpace`], naming the filesystem when the
    /// error carries a [`HostSpace`].
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        let context = context.into();
        if source.get_ref().is_some_and(|e| e.is::<HostSpace>()) {
            let space = source.into_inner().and_then(|e| e.downcast::<HostSpace>().ok()).expect("checked above");
            return Error::HostNoSpace { context, filesystem: space.filesystem, source: space.source };
        }
        match source.raw_os_error() {
            Some(libc::ENOSPC | libc::EDQUOT) => Error::HostNoSpace { context, filesystem: None, source },
            _ => Error::Io { context, source },
        }
    }

    /// An allocation of `bytes` for `what` failed.
    pub fn out_of_memory(what: &'static str, bytes: impl TryInto<u64>) -> Error {
        Error::OutOfMemory { what, bytes: bytes.try_into().unwrap_or(u64::MAX) }
    }

    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::Io { .. } | Error::DirectIoRefused { .. } => Status::Io,
            Error::Format(_) | Error::NotRawblock { .. } => Status::Format,
            Error::SlotsFull { .. } | Error::CheckpointTooLarge { .. } | Error::HostNoSpace { .. } => Status::NoSpace,
            Error::TooLarge { .. } => Status::TooLarge,
            Error::NotFound => Status::NotFound,
            Error::Corrupt(_) => Status::Corrupt,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::EngineUnavailable { .. } | Error::Unsupported(_) => Status::Unsupported,
            Error::ReadOnly => Status::ReadOnly,
            Error::Busy(_) => Status::Busy,
            Error::NeedsRecovery | Error::AlreadyRecovered => Status::State,
            Error::Exists { .. } => Status::Exists,
            Error::OutOfMemory { .. } | Error::OutOfThreads { .. } => Status::NoMemory,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
