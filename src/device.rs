//! Opening a path (block device or regular file) and positional I/O on it.
//!
//! One writer per device: a writable block device is claimed exclusively
//! (O_EXCL: the kernel refuses while it is mounted or claimed through another
//! node of it), every handle takes an advisory lock, a loop device's handle
//! locks its backing file as well, and a regular file backing an attached loop
//! device is refused for writing.
//!
//! An NVMe namespace opened for passthrough ([`nvme`]) does its I/O through its generic
//! character device whichever of its two names was given; its claim (O_EXCL) and lock live
//! on its block device, which the character device's own open does not claim, so the rule
//! holds across both names.

pub mod nvme;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::aligned::AlignedBuf;
use crate::engine::EngineChoice;
use crate::error::{Error, HostSpace, Result};

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
    /// Open with O_DSYNC: every write is durable when it returns (passthrough: FUA writes).
    pub sync_writes: bool,
    /// Every I/O as NVMe commands through the namespace's generic character device
    /// (RB_ENGINE_URING_CMD); a path that is not an NVMe namespace is refused.
    pub passthrough: bool,
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
    /// A second descriptor that holds the advisory lock and, for a writable
    /// block device, the kernel's exclusive claim (O_EXCL). io_uring may keep
    /// the main descriptor alive after close (registered files are released
    /// asynchronously), so neither may live on it: the next writer would find
    /// the device still locked or claimed.
    lock_file: Option<File>,
    /// A loop device's backing file, locked like the device, so a writer on the
    /// loop device and a writer on its file exclude each other.
    backing_lock: Option<File>,
    /// Opening created the file (a failed format removes it again).
    created: bool,
    /// The file's length when it was opened (a failed format restores it).
    opened_len: u64,
    /// Test support: sees every write and sync (the power-loss simulator).
    write_log: Option<(Arc<dyn WriteLog>, bool)>,
    /// NVMe passthrough: every read, write and sync goes through it.
    nvme: Option<Arc<nvme::Passthrough>>,
    /// The node the advisory lock is taken on: the path, or an NVMe namespace's block device.
    lock_path: PathBuf,
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

/// How [`Device::allocate`] reserved the space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allocated {
    /// Nothing to do: a block device, or no bytes.
    Nothing,
    /// fallocate(2).
    Fallocate,
    /// The filesystem has no fallocate: zeros were written (and synced).
    Zeroed,
}

impl Device {
    pub fn open(path: &Path, mode: OpenMode) -> Result<Device> {
        if mode.passthrough {
            return Self::open_nvme(path, mode);
        }
        let write = mode.access != Access::ReadOnly;
        let meta = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound && mode.access == Access::Create => None,
            Err(e) => return Err(Error::io(format!("cannot open {}", path.display()), e)),
        };
        let kind = kind_of(path, meta.as_ref())?;
        // A writer claims a block device before anything else is done with it.
        let claim = match kind {
            DeviceKind::BlockDevice if write => Some(claim_block_device(path)?),
            _ => None,
        };
        let (file, created) = open_file(path, mode, meta.is_some())?;
        let (capacity, logical_block) = match kind {
            DeviceKind::BlockDevice => block_device_geometry(file.as_raw_fd())
                .map_err(|e| Error::io(format!("cannot read the size of block device {}", path.display()), e))?,
            DeviceKind::RegularFile => (regular_file_size(path, &file, write)?, 512),
        };
        Ok(Device {
            file,
            path: path.to_path_buf(),
            kind,
            capacity,
            logical_block,
            direct: !mode.buffered,
            writable: write,
            lock_file: claim,
            backing_lock: None,
            created,
            opened_len: capacity,
            write_log: None,
            nvme: None,
            lock_path: path.to_path_buf(),
        })
    }

    /// Opens an NVMe namespace for passthrough from either of its names. A writer claims the
    /// block device (O_EXCL) as a block device writer would: the character device has no
    /// claim of its own, so without this a writer through /dev/ngXnY and one through
    /// /dev/nvmeXnY would not see each other.
    fn open_nvme(path: &Path, mode: OpenMode) -> Result<Device> {
        let unavailable = |reason: String| Error::EngineUnavailable { engine: EngineChoice::UringCmd, reason };
        if mode.buffered {
            return Err(unavailable("passthrough never goes through the page cache: buffered I/O cannot be asked of it".into()));
        }
        let ns = nvme::probe(path).map_err(unavailable)?;
        let write = mode.access != Access::ReadOnly;
        let claim = match (&ns.block_path, write) {
            (Some(block), true) => Some(claim_block_device(block)?),
            _ => None,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(&ns.char_path)
            .map_err(|e| Error::io(format!("cannot open {}", ns.char_path.display()), e))?;
        let lock_path = ns.block_path.clone().unwrap_or_else(|| ns.char_path.clone());
        let (capacity, logical_block) = (ns.capacity, ns.lba_bytes());
        let io_file = file.try_clone().map_err(|e| Error::io("cannot duplicate a descriptor", e))?;
        let pt = nvme::Passthrough::new(io_file, ns, mode.sync_writes)
            .map_err(|e| unavailable(format!("the kernel refused a ring with 128-byte SQEs and 32-byte CQEs: {e}")))?;
        Ok(Device {
            file,
            path: path.to_path_buf(),
            kind: DeviceKind::BlockDevice,
            capacity,
            logical_block,
            direct: true,
            writable: write,
            lock_file: claim,
            backing_lock: None,
            created: false,
            opened_len: capacity,
            write_log: None,
            nvme: Some(Arc::new(pt)),
            lock_path,
        })
    }

    /// The NVMe passthrough every I/O goes through, when the device was opened for it.
    pub fn passthrough(&self) -> Option<&Arc<nvme::Passthrough>> {
        self.nvme.as_ref()
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
    /// Whether opening created the file.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Takes an advisory lock for the life of the handle: exclusive for a
    /// writer, shared for a reader, so two writers never share a device. A
    /// loop device's backing file is locked the same way, so a writer on the
    /// loop device and one on its file exclude each other in either order.
    /// An NVMe namespace is locked on its block device whichever name was opened.
    pub fn lock(&mut self) -> Result<()> {
        let file = match self.lock_file.take() {
            Some(claimed) => claimed,
            None => OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&self.lock_path)
                .map_err(|e| Error::io(format!("cannot open {} to lock it", self.lock_path.display()), e))?,
        };
        let held = if self.writable { "in use" } else { "open for writing" };
        match self.flock(&file) {
            Ok(()) => self.lock_file = Some(file),
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                return Err(Error::Busy(format!("{} is {held} by another handle or process", self.path.display())))
            }
            Err(e) => return Err(Error::io(format!("cannot lock {}", self.path.display()), e)),
        }
        if self.kind == DeviceKind::BlockDevice && self.nvme.is_none() {
            if let Some((backing, file)) = self.loop_backing_file() {
                match self.flock(&file) {
                    Ok(()) => self.backing_lock = Some(file),
                    Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                        return Err(Error::Busy(format!(
                            "{} is a loop device whose backing file {} is {held} by another handle or process",
                            self.path.display(),
                            backing.display()
                        )))
                    }
                    Err(e) => return Err(Error::io(format!("cannot lock {}", backing.display()), e)),
                }
            }
        }
        Ok(())
    }

    fn flock(&self, file: &File) -> io::Result<()> {
        let op = if self.writable { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// When this block device is a loop device (or a partition of one): its
    /// backing file, opened, if the path sysfs gives reaches the very file the
    /// loop device reads (the same device and inode, where the loop driver says).
    fn loop_backing_file(&self) -> Option<(PathBuf, File)> {
        let rdev = std::fs::metadata(&self.path).ok()?.rdev();
        let sys = PathBuf::from(format!("/sys/dev/block/{}:{}", libc::major(rdev), libc::minor(rdev)));
        let text = std::fs::read_to_string(sys.join("loop/backing_file"))
            .or_else(|_| std::fs::read_to_string(sys.join("../loop/backing_file")))
            .ok()?;
        let backing = PathBuf::from(text.trim_end_matches('\n'));
        let file = OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC).open(&backing).ok()?;
        let m = file.metadata().ok()?;
        if !m.is_file() {
            return None;
        }
        match loop_backing_identity(self.file.as_raw_fd()) {
            Some(id) if id != (m.dev(), m.ino()) => None,
            _ => Some((backing, file)),
        }
    }

    /// Undoes what a failed format did to the filesystem, as far as it can: a
    /// file this handle created is removed (when the path still names it), an
    /// existing file it grew is cut back to its length at open.
    pub fn undo_format(&mut self) {
        if self.kind != DeviceKind::RegularFile {
            return;
        }
        if self.created {
            if let (Ok(ours), Ok(now)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
                if (ours.dev(), ours.ino()) == (now.dev(), now.ino()) {
                    let _ = std::fs::remove_file(&self.path);
                }
            }
        } else if self.capacity > self.opened_len && self.file.set_len(self.opened_len).is_ok() {
            self.capacity = self.opened_len;
        }
    }

    /// Grows a regular file (sparsely) to `len` bytes.
    pub fn extend_to(&mut self, len: u64) -> Result<()> {
        if self.kind == DeviceKind::RegularFile && self.capacity < len {
            self.file
                .set_len(len)
                .map_err(|e| Error::io(format!("cannot extend {} to {len} bytes", self.path.display()), self.space(e)))?;
            self.capacity = len;
        }
        Ok(())
    }

    /// Reserves the filesystem blocks under `len` bytes at `offset` of a
    /// regular file, so writes there cannot fail later for want of space.
    /// Where the filesystem has no fallocate, zeros are written (and synced)
    /// instead: for formatting only, as it overwrites the range. A no-op on a
    /// block device. `offset` and `len` are multiples of the logical block size.
    pub fn allocate(&self, offset: u64, len: u64) -> io::Result<Allocated> {
        match self.reserve(offset, len)? {
            false if self.kind == DeviceKind::RegularFile && len > 0 => {
                self.zero_fill(offset, len)?;
                Ok(Allocated::Zeroed)
            }
            false => Ok(Allocated::Nothing),
            true => Ok(Allocated::Fallocate),
        }
    }

    /// fallocate without touching the bytes (already allocated ranges stay as
    /// they are). `Ok(false)`: nothing done (a block device, no bytes, or a
    /// filesystem without fallocate).
    pub fn reserve(&self, offset: u64, len: u64) -> io::Result<bool> {
        if self.kind != DeviceKind::RegularFile || len == 0 {
            return Ok(false);
        }
        loop {
            match fallocate(self.file.as_raw_fd(), offset, len) {
                Ok(()) => return Ok(true),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(false),
                Err(e) => return Err(self.space(e)),
            }
        }
    }

    /// Writes zeros over `len` bytes at `offset`, then syncs them.
    fn zero_fill(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = AlignedBuf::zeroed(CHUNK.min(len) as usize);
        let mut done = 0;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.write_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        self.sync()
    }

    /// Reads exactly `buf.len()` bytes at `offset`; EINTR is retried, a short read is an error.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.nvme {
            Some(pt) => pt.read(buf, offset),
            None => self.file.read_exact_at(buf, offset),
        }
    }

    /// Reads `header` then `payload` from consecutive bytes at `offset` in one call (preadv),
    /// so a payload lands straight in the caller's memory. Both must meet the O_DIRECT
    /// alignment rule. EINTR is retried; a short read is an error (EIO).
    pub fn read_two_at(&self, header: &mut [u8], payload: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(pt) = &self.nvme {
            return pt.read_two(header, payload, offset);
        }
        let iov = [
            libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() },
            libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() },
        ];
        let want = header.len() + payload.len();
        loop {
            // SAFETY: both iovecs point into live, exclusively borrowed slices of their lengths.
            let n = unsafe { libc::preadv(self.file.as_raw_fd(), iov.as_ptr(), 2, offset as libc::off_t) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize == want {
                return Ok(());
            }
            // O_DIRECT transfers are whole or end at the device's end: a short one is an error.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
    }

    /// Writes `header` then `payload` to consecutive bytes at `offset` in one call (pwritev),
    /// so a payload goes straight from the caller's memory. Alignment as for
    /// [`read_two_at`](Self::read_two_at); a short write is an error.
    pub fn write_two_at(&self, header: &[u8], payload: &[u8], offset: u64) -> io::Result<()> {
        if let (Some(pt), None) = (&self.nvme, &self.write_log) {
            return pt.write_two(header, payload, offset);
        }
        if self.write_log.is_some() {
            // The simulator records writes one buffer at a time.
            self.write_at(header, offset)?;
            return self.write_at(payload, offset + header.len() as u64);
        }
        let iov = [
            libc::iovec { iov_base: header.as_ptr() as *mut libc::c_void, iov_len: header.len() },
            libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() },
        ];
        let want = header.len() + payload.len();
        loop {
            // SAFETY: both iovecs point into live slices of their lengths; the kernel only reads them.
            let n = unsafe { libc::pwritev(self.file.as_raw_fd(), iov.as_ptr(), 2, offset as libc::off_t) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.space(e));
            }
            if n as usize == want {
                return Ok(());
            }
            return Err(self.space(io::Error::from_raw_os_error(libc::ENOSPC)));
        }
    }

    /// Writes all of `buf` at `offset`; EINTR is retried. Running out of space
    /// (ENOSPC, EDQUOT) comes back carrying a [`HostSpace`] that names the
    /// filesystem; `Error::io` turns it into `Error::HostNoSpace`.
    pub fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match &self.write_log {
            None => self.write_all_at(buf, offset).map_err(|e| self.space(e)),
            Some((log, dsync)) => {
                let n = log.cut(offset, buf.len()).unwrap_or(buf.len()).min(buf.len());
                let done = self.write_all_at(&buf[..n], offset);
                log.wrote(offset, &buf[..n], *dsync);
                done.and(if n < buf.len() { Err(io::Error::from_raw_os_error(libc::ENOSPC)) } else { Ok(()) })
                    .map_err(|e| self.space(e))
            }
        }
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match &self.nvme {
            Some(pt) => pt.write(buf, offset),
            None => self.file.write_all_at(buf, offset),
        }
    }

    /// Makes completed writes durable (fdatasync; passthrough: an NVMe Flush); out of space
    /// as in [`Device::write_at`].
    pub fn sync(&self) -> io::Result<()> {
        match &self.nvme {
            Some(pt) => pt.flush()?,
            None => self.file.sync_data().map_err(|e| self.space(e))?,
        }
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

    /// An out-of-space error wrapped with where it happened; other errors unchanged.
    fn space(&self, e: io::Error) -> io::Error {
        if !matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            return e;
        }
        let filesystem = match self.kind {
            DeviceKind::RegularFile => Some(filesystem_of(&self.path, self.file.metadata().ok().map(|m| m.dev()))),
            DeviceKind::BlockDevice => None,
        };
        io::Error::new(e.kind(), HostSpace { filesystem, source: e })
    }
}

/// What a path names: a block device or a regular file (one about to be created counts as one).
fn kind_of(path: &Path, meta: Option<&std::fs::Metadata>) -> Result<DeviceKind> {
    let shown = path.display();
    match meta {
        Some(m) if m.file_type().is_block_device() => Ok(DeviceKind::BlockDevice),
        Some(m) if m.is_file() => Ok(DeviceKind::RegularFile),
        None => Ok(DeviceKind::RegularFile),
        Some(m) if m.is_dir() => Err(Error::InvalidArgument(format!("{shown} is a directory, not a block device or file"))),
        Some(m) if m.file_type().is_char_device() && nvme::probe(path).is_ok() => Err(Error::InvalidArgument(format!(
            "{shown} is an NVMe namespace's generic character device: only NVMe passthrough (the uring_cmd engine) \
             reads it; other engines take its block device"
        ))),
        Some(_) => Err(Error::InvalidArgument(format!("{shown} is neither a block device nor a regular file"))),
    }
}

/// Opens the I/O descriptor (O_DIRECT unless buffered, O_DSYNC with sync writes); creates a
/// missing file for a format. Also says whether it created the file (a failed format removes
/// only that).
fn open_file(path: &Path, mode: OpenMode, exists: bool) -> Result<(File, bool)> {
    let mut flags = libc::O_CLOEXEC;
    if !mode.buffered {
        flags |= libc::O_DIRECT;
    }
    if mode.sync_writes {
        flags |= libc::O_DSYNC;
    }
    let open_error = |e: io::Error| {
        if e.raw_os_error() == Some(libc::EINVAL) && !mode.buffered {
            Error::DirectIoRefused { path: path.to_path_buf(), source: e }
        } else {
            Error::io(format!("cannot open {}", path.display()), e)
        }
    };
    let mut options = OpenOptions::new();
    options.read(true).write(mode.access != Access::ReadOnly).custom_flags(flags);
    if exists {
        return Ok((options.open(path).map_err(open_error)?, false));
    }
    match options.clone().create_new(true).open(path) {
        Ok(f) => Ok((f, true)),
        // Made meanwhile, or a dangling symlink (whose target O_CREAT makes, not ours to remove).
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((options.create(true).open(path).map_err(open_error)?, false)),
        Err(e) => Err(open_error(e)),
    }
}

/// A regular file's size; a file that backs an attached loop device is refused for writing.
fn regular_file_size(path: &Path, file: &File, write: bool) -> Result<u64> {
    let shown = path.display();
    let m = file.metadata().map_err(|e| Error::io(format!("cannot stat {shown}"), e))?;
    if write {
        if let Some(loop_dev) = loops_backed_by(m.dev(), m.ino()).first() {
            return Err(Error::Busy(format!(
                "{shown} is the backing file of the loop device {loop_dev}; a writer on the file beside \
                 one on the loop device would destroy what either writes (open {loop_dev} instead, \
                 or detach it first)"
            )));
        }
    }
    Ok(m.len())
}

/// The errno an I/O error carries, or EIO when it carries none (e.g. a short read).
pub fn errno_of(e: &io::Error) -> i32 {
    e.raw_os_error()
        .or_else(|| e.get_ref()?.downcast_ref::<HostSpace>()?.source.raw_os_error())
        .unwrap_or(libc::EIO)
}

/// Claims a block device exclusively (O_EXCL) on a descriptor of its own. The
/// kernel answers EBUSY while the device is mounted or claimed through any of
/// its nodes: another writer, a filesystem, device mapper, RAID.
fn claim_block_device(path: &Path) -> Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_CLOEXEC | libc::O_EXCL).open(path).map_err(|e| {
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Error::io(format!("cannot open {}", path.display()), e);
        }
        let rdev = std::fs::metadata(path).map(|m| m.rdev()).ok();
        let why = match rdev.and_then(|r| mounted_at(r).or_else(|| holders(r))) {
            Some(why) => why,
            None => "held exclusively by another process (a rawblock writer through this or another node \
                     of the device, a filesystem, device mapper or RAID)"
                .to_string(),
        };
        Error::Busy(format!("{} is {why}", path.display()))
    })
}

/// "mounted at MOUNTPOINT (FSTYPE)" when a filesystem of block device `rdev` is mounted.
fn mounted_at(rdev: u64) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields.get(2) == Some(&wanted.as_str()) && dash >= 5).then(|| {
            format!("mounted at {} ({})", unescape_mountinfo(fields[4]), fields.get(dash + 1).unwrap_or(&"?"))
        })
    })
}

/// "held by NAME, ..." when block devices (device mapper, RAID) are stacked on `rdev`.
fn holders(rdev: u64) -> Option<String> {
    let dir = format!("/sys/dev/block/{}:{}/holders", libc::major(rdev), libc::minor(rdev));
    let mut names: Vec<String> =
        std::fs::read_dir(dir).ok()?.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    (!names.is_empty()).then(|| format!("held by the block device(s) {} stacked on it", names.join(", ")))
}

/// The attached loop devices ("/dev/loopN") whose backing file is the file
/// with this device and inode number. sysfs names each backing file by path;
/// one that no longer resolves (deleted, another mount namespace) is skipped.
pub fn loops_backed_by(dev: u64, ino: u64) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else { return Vec::new() };
    let mut found: Vec<String> = entries
        .flatten()
        // Only the loop driver's devices, named loopN, have loop/backing_file (when attached).
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("loop"))
        .filter_map(|entry| {
            let text = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            let m = std::fs::metadata(text.trim_end_matches('\n')).ok()?;
            ((m.dev(), m.ino()) == (dev, ino)).then(|| format!("/dev/{}", entry.file_name().to_string_lossy()))
        })
        .collect();
    found.sort();
    found
}

/// The (device, inode) of the file behind a loop device's descriptor (LOOP_GET_STATUS64).
fn loop_backing_identity(fd: RawFd) -> Option<(u64, u64)> {
    /// struct loop_info64 of <linux/loop.h>.
    #[repr(C)]
    struct LoopInfo64 {
        device: u64,
        inode: u64,
        rdevice: u64,
        offset: u64,
        sizelimit: u64,
        number: u32,
        encrypt_type: u32,
        encrypt_key_size: u32,
        flags: u32,
        file_name: [u8; 64],
        crypt_name: [u8; 64],
        encrypt_key: [u8; 32],
        init: [u64; 2],
    }
    const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;
    // SAFETY: all-zero bytes are a valid LoopInfo64 (integers and byte arrays).
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: LOOP_GET_STATUS64 writes one struct loop_info64 through the valid pointer.
    if unsafe { libc::ioctl(fd, LOOP_GET_STATUS64 as _, &mut info as *mut LoopInfo64) } != 0 {
        return None;
    }
    Some((info.device, info.inode))
}

/// fallocate(2) mode 0: allocates, extending the file when the range ends past it.
fn fallocate(fd: RawFd, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(test)]
    if tests::NO_FALLOCATE.with(|c| c.get()) {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    // SAFETY: fallocate on a descriptor we own; no memory is passed.
    if unsafe { libc::fallocate(fd, 0, offset as libc::off_t, len as libc::off_t) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Names the filesystem holding `path` (whose st_dev is `dev`) from
/// /proc/self/mountinfo: "MOUNTPOINT (FSTYPE on SOURCE)", the deepest mount
/// of that device above the path.
pub fn filesystem_of(path: &Path, dev: Option<u64>) -> String {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let full = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in text.lines() {
        // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else { continue };
        if dash < 5 || fields.len() < dash + 3 {
            continue;
        }
        let same_dev = match (dev, fields[2].split_once(':')) {
            (Some(d), Some((major, minor))) => {
                major.parse() == Ok(libc::major(d)) && minor.parse() == Ok(libc::minor(d))
            }
            (None, _) => true,
            _ => false,
        };
        let mount_point = unescape_mountinfo(fields[4]);
        if !same_dev || !full.starts_with(&mount_point) {
            continue;
        }
        let (fstype, source) = (fields[dash + 1], unescape_mountinfo(fields[dash + 2]));
        let what = if source == fstype || source == "none" { fstype.to_string() } else { format!("{fstype} on {source}") };
        if best.as_ref().is_none_or(|(depth, _)| mount_point.len() >= *depth) {
            best = Some((mount_point.len(), format!("{mount_point} ({what})")));
        }
    }
    best.map_or_else(|| format!("holding {}", path.display()), |(_, name)| name)
}

/// mountinfo writes space, tab, newline and backslash in paths as \ and three octal digits.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 3 < b.len()
            && (b'0'..=b'3').contains(&b[i + 1])
            && b[i + 2..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if octal {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
pub(crate) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Makes fallocate answer EOPNOTSUPP on this thread, as some filesystems do.
        pub(crate) static NO_FALLOCATE: Cell<bool> = const { Cell::new(false) };
    }

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

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape_mountinfo(r"/mnt/a\040b\011c\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape_mountinfo(r"/x\04"), r"/x\04", "a cut-off escape stays as it is");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn filesystem_of_names_the_mount_holding_a_file() {
        let p = tmp("fs.img");
        std::fs::write(&p, b"x").unwrap();
        let dev = std::fs::metadata(&p).unwrap().dev();
        let name = filesystem_of(&p, Some(dev));
        assert!(name.starts_with('/') && name.contains(" ("), "{name}");
        let mount_point = name.split(" (").next().unwrap();
        assert!(std::fs::canonicalize(&p).unwrap().starts_with(mount_point), "{name} for {}", p.display());
    }

    #[test]
    fn allocate_reserves_blocks_and_falls_back_to_zeros() {
        for no_fallocate in [false, true] {
            let p = tmp(&format!("alloc-{no_fallocate}.img"));
            let mut d = Device::open(&p, OpenMode { access: Access::Create, ..Default::default() }).unwrap();
            d.extend_to(8 << 20).unwrap();
            assert!(d.created());
            NO_FALLOCATE.with(|c| c.set(no_fallocate));
            let how = d.allocate(0, 3 << 20);
            NO_FALLOCATE.with(|c| c.set(false));
            let want = if no_fallocate { Allocated::Zeroed } else { Allocated::Fallocate };
            assert_eq!(how.unwrap(), want);
            let m = std::fs::metadata(&p).unwrap();
            assert!(m.blocks() * 512 >= 3 << 20, "{} bytes allocated", m.blocks() * 512);
            assert!(m.blocks() * 512 < 8 << 20, "only the range asked for is allocated");
            assert_eq!(m.len(), 8 << 20);
        }
    }

    #[test]
    fn undo_format_removes_a_created_file_and_shrinks_an_existing_one() {
        let p = tmp("undo-new.img");
        let mut d = Device::open(&p, OpenMode { access: Access::Create, ..Default::default() }).unwrap();
        d.extend_to(1 << 20).unwrap();
        d.undo_format();
        assert!(!p.exists(), "the file this handle created is gone");

        let p = tmp("undo-old.img");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let mut d = Device::open(&p, OpenMode { access: Access::Create, ..Default::default() }).unwrap();
        assert!(!d.created());
        d.extend_to(1 << 20).unwrap();
        d.undo_format();
        assert_eq!(std::fs::read(&p).unwrap(), vec![7u8; 8192], "an existing file is back to its length and bytes");
    }

    #[test]
    fn errno_of_sees_through_a_host_space_error() {
        let e = io::Error::other(
            HostSpace { filesystem: Some("/x (tmpfs)".into()), source: io::Error::from_raw_os_error(libc::ENOSPC) },
        );
        assert_eq!(errno_of(&e), libc::ENOSPC);
    }
}
