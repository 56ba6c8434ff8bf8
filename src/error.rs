//! One error type for the crate, and the status codes it maps to at the C boundary.

use std::ffi::CStr;
use std::io;

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
        }
    }

    pub fn from_code(code: i32) -> Option<Status> {
        use Status::*;
        [
            Ok, InvalidArgument, Io, Format, NoSpace, TooLarge, NotFound, Corrupt,
            BufferTooSmall, Unsupported, ReadOnly, Busy, State, Exists, Panic,
        ]
        .into_iter()
        .find(|s| *s as i32 == code)
    }
}

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
    #[error("{0}")]
    Format(String),
    #[error("no space: {0}")]
    NoSpace(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("key not found")]
    NotFound,
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall { needed: u64 },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("the handle is read-only")]
    ReadOnly,
    #[error("busy: {0}")]
    Busy(String),
    #[error("{0}")]
    State(String),
    #[error("{0}")]
    Exists(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    pub fn status(&self) -> Status {
        match self {
            Error::InvalidArgument(_) => Status::InvalidArgument,
            Error::Io { .. } => Status::Io,
            Error::Format(_) => Status::Format,
            Error::NoSpace(_) => Status::NoSpace,
            Error::TooLarge(_) => Status::TooLarge,
            Error::NotFound => Status::NotFound,
            Error::Corrupt(_) => Status::Corrupt,
            Error::BufferTooSmall { .. } => Status::BufferTooSmall,
            Error::Unsupported(_) => Status::Unsupported,
            Error::ReadOnly => Status::ReadOnly,
            Error::Busy(_) => Status::Busy,
            Error::State(_) => Status::State,
            Error::Exists(_) => Status::Exists,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
