//! The ABI version, in the one place it is written: build.rs reads this file for
//! the SONAME (librawblock.so.N), the Makefile for install names, and cbindgen
//! puts it in the header for C and the Python binding to compare at load time.

/// ABI version: bumped on any incompatible change to this header. It is also the
/// SONAME's number (librawblock.so.1).
pub const RB_ABI_VERSION: u32 = 1;
