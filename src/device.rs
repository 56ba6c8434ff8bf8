//! Opening a path (block device or regular file) and positional I/O on it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    BlockDevice,
    RegularFile,
}

/// What a handle may do with its device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    #[default]
    ReadOnly,
    ReadWrite,
    /// Read and write, creating a regular file that does not exist (formatting).
    Create,
}

/// How to open a device path.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    pub access: Access,
    /// Open without O_DIRECT.
    pub buffered: bool,
    /// Open with O_DSYNC: every write is durable when it returns.
    pub sync_writes: bool,
}

/// An open device with its size and logical block size.
#[derive(Debug)]
pub struct Device {
    file: File,
    path: PathBuf,
    kind: DeviceKind,
    capacity: u64,
    logical_block: u32,
    direct: bool,
    writable: bool,
    /// A second descriptor that holds the advisory lock. io_uring may keep the
    /// main descriptor alive after close (registered files are released
    /// asynchronously), so the lock must not live on it.
    lock_file: Option<File>,
    /// Test support: sees every write and sync (the power-loss simulator).
    write_log: Option<(Arc<dyn WriteLog>, bool)>,
}

/// Sees, in order, every write and sync that reaches a device: the power-loss simulator
/// records them to build crash images, and may cut a write short to simulate a failure.
/// Every write path reports here; engine writes (io_uring) must too once they exist.
pub(crate) trait WriteLog: Send + Sync {
    /// Before a write of `len` bytes at `offset`: `Some(n)` lets only the first `n` bytes
    /// reach the device and fails the write with ENOSPC, as a filling filesystem does.
    fn cut(&self, offset: u64, len: usize) -> Option<usize>;
    /// The bytes that reached the device; `durable` on an O_DSYNC device (already synced).
    fn wrote(&self, offset: u64, data: &[u8], durable: bool);
    /// An fdatasync completed.
    fn synced(&self);
}

impl std::fmt::Debug for dyn WriteLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriteLog")
    }
}

impl Device {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Device> {
        let shown = path.display();
        let write = mode.access != Access::ReadOnly;
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode.access == Access::Create => None,
            Err(e) => return Err(Error::io(format!("cannot open {shown}"), e)),
        };
        let kind = match &meta {
            Some(m) if m.file_type().is_block_device() => DeviceKind::BlockDevice,
            Some(m) if m.is_file() => DeviceKind::RegularFile,
            None => DeviceKind::RegularFile,
            Some(m) if m.is_dir() => {
                return Err(Error::InvalidArgument(format!("{shown} is a directory, not a block device or file")))
            }
            Some(_) => {
                return Err(Error::InvalidArgument(format!("{shown} is neither a block device nor a regular file")))
            }
        };
        let mut flags = libc::O_CLOEXEC;
        if !mode.buffered {
            flags |= libc::O_DIRECT;
        }
        if mode.sync_writes {
            flags |= libc::O_DSYNC;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .create(mode.access == Access::Create && kind == DeviceKind::RegularFile)
            .custom_flags(flags)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EINVAL) && !mode.buffered {
                    Error::DirectIoRefused { path: path.to_path_buf(), source: e }
                } else {
                    Error::io(format!("cannot open {shown}"), e)
                }
            })?;
        let (capacity, logical_block) = match kind {
            DeviceKind::BlockDevice => block_device_geometry(file.as_raw_fd())
                .map_err(|e| Error::io(format!("cannot read the size of block device {shown}"), e))?,
            DeviceKind::RegularFile => {
                let len = file.metadata().map_err(|e| Error::io(format!("cannot stat {shown}"), e))?.len();
                (len, 512)
            }
        };
        Ok(Device {
            file,
            path: path.to_path_buf(),
            kind,
            capacity,
            logical_block,
            direct: !mode.buffered,
            writable: write,
            lock_file: None,
            write_log: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn kind(&self) -> DeviceKind {
        self.kind
    }
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
    pub fn logical_block(&self) -> u32 {
        self.logical_block
    }
    pub fn is_direct(&self) -> bool {
        self.direct
    }
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Takes an advisory lock for the life of the handle: exclusive for a
    /// writer, shared for a reader, so two writers never share a device.
    pub fn lock(&mut self) -> Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|e| Error::io(format!("cannot open {} to lock it", self.path.display()), e))?;
        let op = if self.writable { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            self.lock_file = Some(file);
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let held = if self.writable { "in use" } else { "open for writing" };
            Err(Error::Busy(format!("{} is {held} by another handle or process", self.path.display())))
        } else {
            Err(Error::io(format!("cannot lock {}", self.path.display()), e))
        }
    }

    /// Grows a regular file (sparsely) to `len` bytes.
    pub fn extend_to(&mut self, len: u64) -> Result<()> {
        if self.kind == DeviceKind::RegularFile && self.capacity < len {
            self.file.set_len(len).map_err(|e| Error::io(format!("cannot extend {} to {len} bytes", self.path.display()), e))?;
            self.capacity = len;
        }
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes at `offset`; EINTR is retried, a short read is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    /// Writes all of `buf` at `offset`; EINTR is retried.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match &self.write_log {
            None => self.file.write_all_at(buf, offset),
            Some((log, dsync)) => {
                let n = log.cut(offset, buf.len()).unwrap_or(buf.len()).min(buf.len());
                let done = self.file.write_all_at(&buf[..n], offset);
                log.wrote(offset, &buf[..n], *dsync);
                done.and(if n < buf.len() { Err(io::Error::from_raw_os_error(libc::ENOSPC)) } else { Ok(()) })
            }
        }
    }

    /// Makes completed writes durable (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        if let Some((log, _)) = &self.write_log {
            log.synced();
        }
        Ok(())
    }

    /// Test support: reports every later write and sync to `log`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn set_write_log(&mut self, log: Arc<dyn WriteLog>) {
        // SAFETY: F_GETFL on a descriptor we own; no memory is passed.
        let dsync = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_GETFL) } & libc::O_DSYNC == libc::O_DSYNC;
        self.write_log = Some((log, dsync));
    }
}

/// The errno an I/O error carries, or EIO when it carries none (e.g. a short read).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn block_device_geometry(fd: RawFd) -> io::Result<(u64, u32)> {
    const BLKSSZGET: libc::c_ulong = 0x1268;
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    let mut lbs: libc::c_int = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 through the pointer, which is valid.
    if unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut size as *mut u64) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: BLKSSZGET writes one int through the pointer, which is valid.
    if unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut lbs as *mut libc::c_int) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((size, lbs.max(512) as u32))
}

/// Draws a random 128-bit device id from the kernel.
pub fn random_device_id() -> Result<[u8; 16]> {
    let mut id = [0u8; 16];
    let mut filled = 0;
    while filled < id.len() {
        // SAFETY: getrandom writes at most the given length into the valid buffer tail.
        let n = unsafe { libc::getrandom(id[filled..].as_mut_ptr().cast(), id.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("getrandom failed", e));
        }
        filled += n as usize;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aligned::AlignedBuf;

    fn tmp(name: &str) -> PathBuf {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/device"));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        let _ = std::fs::remove_file(&p);
        p
    }

    #[test]
    fn file_round_trip_with_o_direct() {
        let p = tmp("rt.img");
        let mode = OpenMode { access: Access::Create, ..Default::default() };
        let mut d = Device::open(&p, mode).unwrap();
        assert_eq!(d.kind(), DeviceKind::RegularFile);
        assert!(d.is_direct());
        d.extend_to(1 << 20).unwrap();
        assert_eq!(d.capacity(), 1 << 20);
        let mut w = AlignedBuf::zeroed(8192);
        w.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8);
        d.write_at(&w, 4096).unwrap();
        let mut r = AlignedBuf::zeroed(8192);
        d.read_at(&mut r, 4096).unwrap();
        assert_eq!(&r[..], &w[..]);
        let e = d.read_at(&mut r, 1 << 20).unwrap_err();
        assert_eq!(errno_of(&e), libc::EIO, "short read at end of device");
    }

    #[test]
    fn missing_path_and_directory() {
        let e = Device::open(Path::new("/nonexistent/rawblock"), OpenMode::default()).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");
        let e = Device::open(Path::new("/"), OpenMode::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }

    #[test]
    fn second_writer_is_busy() {
        let p = tmp("lock.img");
        let mode = OpenMode { access: Access::Create, ..Default::default() };
        let mut a = Device::open(&p, mode).unwrap();
        a.lock().unwrap();
        let mut b = Device::open(&p, mode).unwrap();
        assert!(matches!(b.lock(), Err(Error::Busy(_))));
        drop(a);
        b.lock().unwrap();
    }

    #[test]
    fn device_ids_differ() {
        assert_ne!(random_device_id().unwrap(), random_device_id().unwrap());
    }
}
