//! rawblock: fixed-size KV-cache slots on a raw block device, with an index
//! that is rebuilt after a restart at the speed of the device.
//!
//! Data flows one way through the modules:
//! - [`format`]: the bytes on the device (superblock, checkpoints, slot headers);
//! - [`device`]: opening a block device or file, aligned positional I/O;
//! - [`engine`]: how batches of header reads happen (POSIX, io_uring);
//! - [`store`]: what the bytes mean (index, allocation, put/get, checkpoint, recovery);
//! - `ffi`: the C boundary, which only converts and delegates.
//!
//! docs/DESIGN.md is the map: layers, slot lifecycle, lock order, media assumptions.

pub mod aligned;
pub mod device;
pub mod engine;
pub mod error;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
#[cfg(test)]
mod powerloss;
pub mod store;
mod sync;

pub mod ffi;

pub use error::{Error, Result, Status};
pub use store::{OpenOptions, Store};
