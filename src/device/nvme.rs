//! An NVMe namespace reached through its generic character device (/dev/ngXnY): finding it
//! from either of its names, what it is (namespace id, LBA size, largest transfer), and
//! synchronous NVMe commands (read, write, flush) issued with IORING_OP_URING_CMD.
//!
//! Every command's buffer is aligned to [`IO_ALIGN`] and a whole number of LBAs: an
//! unaligned caller buffer is copied through an aligned one here, so no unaligned address
//! ever reaches the driver (the passthrough bug rawblock grew out of: EINVAL on every read).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::aligned::{AlignedBuf, IO_ALIGN};
use crate::sync::lock;

/// `struct nvme_uring_cmd` of <linux/nvme_ioctl.h> (72 bytes; the SQE's 80-byte command area).
/// The same layout, with `result` in place of the reserved word, is `struct nvme_passthru_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct NvmeCmd {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

const _: () = assert!(std::mem::size_of::<NvmeCmd>() == 72);

/// _IOWR('N', 0x80, struct nvme_uring_cmd): the uring_cmd op of an NVMe I/O command.
pub(crate) const NVME_URING_CMD_IO: u32 = 0xC048_4E80;
/// _IO('N', 0x40): the namespace id of a namespace's device.
const NVME_IOCTL_ID: libc::c_ulong = 0x4E40;
/// _IOWR('N', 0x41, struct nvme_passthru_cmd): one admin command (identify).
const NVME_IOCTL_ADMIN_CMD: libc::c_ulong = 0xC048_4E41;

const OP_FLUSH: u8 = 0x00;
const OP_WRITE: u8 = 0x01;
const OP_READ: u8 = 0x02;
const ADMIN_IDENTIFY: u8 = 0x06;
/// Force Unit Access (cdw12 bit 30): the write is on stable media when it completes.
const FUA: u32 = 1 << 30;

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
}

impl NvmeCmd {
    /// A read or write of `len` bytes (whole LBAs) at byte `offset`, into or from `addr`.
    pub fn rw(dir: Dir, nsid: u32, lba_shift: u32, offset: u64, addr: u64, len: u32, fua: bool) -> NvmeCmd {
        let slba = offset >> lba_shift;
        let nlb = (len >> lba_shift) - 1;
        NvmeCmd {
            opcode: if dir == Dir::Read { OP_READ } else { OP_WRITE },
            nsid,
            addr,
            data_len: len,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb | if fua && dir == Dir::Write { FUA } else { 0 },
            ..Default::default()
        }
    }

    /// A flush of the namespace's volatile write cache.
    pub fn flush(nsid: u32) -> NvmeCmd {
        NvmeCmd { opcode: OP_FLUSH, nsid, ..Default::default() }
    }

    /// The 80-byte command area of a 128-byte SQE.
    pub fn bytes(&self) -> [u8; 80] {
        let mut out = [0u8; 80];
        // SAFETY: NvmeCmd is plain integers (repr(C), no padding: 72 bytes asserted), copied
        // into a larger byte array.
        unsafe { std::ptr::copy_nonoverlapping((self as *const NvmeCmd).cast::<u8>(), out.as_mut_ptr(), 72) };
        out
    }
}

/// A completion's meaning: 0 is success, a positive value an NVMe status (status code type
/// << 8 | status code), a negative one an errno.
pub fn completion_error(res: i32) -> Option<io::Error> {
    match res {
        0 => None,
        r if r < 0 => Some(io::Error::from_raw_os_error(-r)),
        r => Some(io::Error::other(format!("NVMe command failed with status {r:#x}"))),
    }
}

/// One command of a transfer: `len` bytes at device `offset`, at memory `addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    pub offset: u64,
    pub addr: u64,
    pub len: u32,
}

/// Splits a transfer of `len` bytes at `offset` from memory `addr` into commands of at most
/// `max_transfer` bytes. `max_transfer` is a multiple of the LBA size.
pub fn chunks(offset: u64, addr: u64, len: usize, max_transfer: u32) -> impl Iterator<Item = Chunk> {
    let max = max_transfer as usize;
    (0..len.div_ceil(max)).map(move |i| {
        let done = i * max;
        Chunk { offset: offset + done as u64, addr: addr + done as u64, len: (len - done).min(max) as u32 }
    })
}

/// What the namespace is, and where its two names are.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// /dev/ngXnY: the generic character device commands go through.
    pub char_path: PathBuf,
    /// /dev/nvmeXnY, when the kernel made one: the one-writer claim (O_EXCL) and lock live on it.
    pub block_path: Option<PathBuf>,
    pub nsid: u32,
    pub lba_shift: u32,
    /// Bytes one command moves at most: the controller's MDTS and the queue's limits.
    pub max_transfer: u32,
    pub capacity: u64,
}

impl Namespace {
    pub fn lba_bytes(&self) -> u32 {
        1 << self.lba_shift
    }
}

/// Which NVMe namespace `path` names, or why it names none (the reason for RB_E_UNSUPPORTED).
/// Either name works: a block device /dev/nvmeXnY maps to its generic character device
/// /dev/ngXnY through sysfs, and the reverse.
pub fn probe(path: &Path) -> Result<Namespace, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot open {shown}: {e}"))?;
    let ft = meta.file_type();
    let (rdev, class) = match () {
        _ if ft.is_char_device() => (meta.rdev(), "char"),
        _ if ft.is_block_device() => (meta.rdev(), "block"),
        _ if ft.is_file() => return Err(format!("{shown} is a regular file; passthrough needs an NVMe namespace (/dev/ngXnY or /dev/nvmeXnY)")),
        _ => return Err(format!("{shown} is not an NVMe namespace (/dev/ngXnY or /dev/nvmeXnY)")),
    };
    let sys = PathBuf::from(format!("/sys/dev/{class}/{}:{}", libc::major(rdev), libc::minor(rdev)));
    let name = std::fs::canonicalize(&sys)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .ok_or_else(|| format!("{shown}: sysfs has no entry {}", sys.display()))?;
    let (ctrl_ns, char_name, block_name) = match class {
        "char" => match name.strip_prefix("ng") {
            Some(rest) if is_ctrl_ns(rest) => (rest.to_string(), name.clone(), format!("nvme{rest}")),
            _ => return Err(format!("{shown} ({name}) is a character device but not an NVMe generic one (/dev/ngXnY)")),
        },
        _ => match name.strip_prefix("nvme") {
            Some(rest) if is_ctrl_ns(rest) => (rest.to_string(), format!("ng{rest}"), name.clone()),
            _ if name.starts_with("nvme") => {
                return Err(format!("{shown} ({name}) is a partition; passthrough addresses a whole NVMe namespace"))
            }
            _ => return Err(format!("{shown} ({name}) is a block device but not an NVMe namespace (/dev/nvmeXnY)")),
        },
    };
    let char_path = node_of(&char_name, "char", &format!("/sys/class/nvme-generic/{char_name}/dev"))
        .ok_or_else(|| format!("{shown}: namespace {ctrl_ns} has no generic character device /dev/{char_name} (kernel 5.13+ makes one)"))?;
    let block_path = node_of(&block_name, "block", &format!("/sys/block/{block_name}/dev"));
    let file = File::open(&char_path).map_err(|e| format!("cannot open {}: {e}", char_path.display()))?;
    let nsid = namespace_id(file.as_raw_fd()).map_err(|e| format!("{}: NVME_IOCTL_ID failed: {e}", char_path.display()))?;
    if let Some(b) = &block_path {
        // Both names must be the same namespace (they are unless multipath renumbered one).
        let other = File::open(b).and_then(|f| namespace_id(f.as_raw_fd()));
        if other.as_ref().ok() != Some(&nsid) {
            return Err(format!("{} and {} are not the same namespace ({nsid} vs {other:?})", char_path.display(), b.display()));
        }
    }
    let id = identify(file.as_raw_fd(), nsid)?;
    let lba_shift = id.lbads;
    if !(9..=12).contains(&lba_shift) {
        return Err(format!("{}: LBA size {} is outside 512..4096", char_path.display(), 1u64 << lba_shift));
    }
    if id.metadata_bytes != 0 {
        return Err(format!(
            "{}: the namespace's LBA format carries {} bytes of metadata per LBA, which rawblock does not send",
            char_path.display(),
            id.metadata_bytes
        ));
    }
    let lba = 1u32 << lba_shift;
    let mut max = id.mdts_bytes.unwrap_or(u32::MAX).min(4 << 20);
    if let Some(b) = &block_name_sysfs(&block_path, &block_name) {
        // The kernel maps a passthrough buffer within the queue's limits (sectors and segments).
        if let Some(kb) = read_u64(&b.join("queue/max_hw_sectors_kb")) {
            max = max.min((kb * 1024).min(u32::MAX as u64) as u32);
        }
        if let Some(segs) = read_u64(&b.join("queue/max_segments")) {
            max = max.min((segs * 4096).min(u32::MAX as u64) as u32);
        }
    } else {
        max = max.min(128 << 10);
    }
    let max_transfer = (max / lba * lba).max(lba);
    Ok(Namespace { char_path, block_path, nsid, lba_shift, max_transfer, capacity: id.nsze << lba_shift })
}

fn block_name_sysfs(block_path: &Option<PathBuf>, block_name: &str) -> Option<PathBuf> {
    block_path.as_ref().map(|_| PathBuf::from(format!("/sys/block/{block_name}")))
}

/// "XnY" (controller or subsystem X, namespace Y), digits only.
fn is_ctrl_ns(s: &str) -> bool {
    match s.split_once('n') {
        Some((x, y)) => !x.is_empty() && !y.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) && y.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// /dev/NAME when it is the device sysfs lists under `dev_attr` ("MAJOR:MINOR").
fn node_of(name: &str, class: &str, dev_attr: &str) -> Option<PathBuf> {
    let want = std::fs::read_to_string(dev_attr).ok()?;
    let (major, minor) = want.trim().split_once(':')?;
    let path = PathBuf::from(format!("/dev/{name}"));
    let m = std::fs::metadata(&path).ok()?;
    let kind_ok = if class == "char" { m.file_type().is_char_device() } else { m.file_type().is_block_device() };
    let same = major.parse() == Ok(libc::major(m.rdev())) && minor.parse() == Ok(libc::minor(m.rdev()));
    (kind_ok && same).then_some(path)
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn namespace_id(fd: RawFd) -> io::Result<u32> {
    // SAFETY: NVME_IOCTL_ID takes no argument and returns the namespace id.
    let r = unsafe { libc::ioctl(fd, NVME_IOCTL_ID as _) };
    if r <= 0 {
        return Err(if r < 0 { io::Error::last_os_error() } else { io::Error::other("namespace id 0") });
    }
    Ok(r as u32)
}

/// The numbers identify gives rawblock.
struct Identified {
    nsze: u64,
    lbads: u32,
    metadata_bytes: u32,
    /// The controller's largest transfer; None: no limit stated.
    mdts_bytes: Option<u32>,
}

fn identify(fd: RawFd, nsid: u32) -> Result<Identified, String> {
    let admin = |cns: u32, nsid: u32| -> io::Result<AlignedBuf> {
        let mut buf = AlignedBuf::zeroed(4096);
        let mut cmd = NvmeCmd {
            opcode: ADMIN_IDENTIFY,
            nsid,
            addr: buf.as_mut_ptr() as u64,
            data_len: 4096,
            cdw10: cns,
            ..Default::default()
        };
        // SAFETY: the admin command writes at most data_len (4096) bytes into buf, which lives
        // across the call; the struct is nvme_passthru_cmd's layout.
        let r = unsafe { libc::ioctl(fd, NVME_IOCTL_ADMIN_CMD as _, &mut cmd as *mut NvmeCmd) };
        match r {
            0 => Ok(buf),
            r if r < 0 => Err(io::Error::last_os_error()),
            r => Err(io::Error::other(format!("NVMe status {r:#x}"))),
        }
    };
    let ns = admin(0, nsid).map_err(|e| format!("identify namespace {nsid} failed: {e}"))?;
    let nsze = u64::from_le_bytes(ns[0..8].try_into().expect("8 bytes"));
    let flbas = ns[26];
    let format = ((flbas & 0x0F) | ((flbas >> 5) & 0x03) << 4) as usize;
    let lbaf = u32::from_le_bytes(ns[128 + 4 * format..132 + 4 * format].try_into().expect("4 bytes"));
    // MDTS is in units of the controller's minimum page size: 4 KiB on every host rawblock runs on.
    let mdts_bytes = admin(1, 0).ok().map(|c| c[77]).and_then(|m| (m != 0).then(|| (4096u64 << m).min(u32::MAX as u64) as u32));
    Ok(Identified { nsze, lbads: (lbaf >> 16) & 0xFF, metadata_bytes: lbaf & 0xFFFF, mdts_bytes })
}

/// Synchronous NVMe commands through small io_uring rings (128-byte SQEs, 32-byte CQEs),
/// one per calling thread at a time, kept for reuse.
pub struct Passthrough {
    file: File,
    ns: Namespace,
    fua: bool,
    rings: Mutex<Vec<IoUring<squeue::Entry128, cqueue::Entry32>>>,
}

/// Commands one synchronous call keeps in flight at most.
const SYNC_RING_ENTRIES: u32 = 16;

impl std::fmt::Debug for Passthrough {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passthrough").field("ns", &self.ns).field("fua", &self.fua).finish()
    }
}

impl Passthrough {
    /// `file` is the namespace's character device; `fua`: every write is durable on completion.
    /// Sets up one ring now, so a kernel without uring_cmd (or 128-byte SQEs) is refused at open.
    pub fn new(file: File, ns: Namespace, fua: bool) -> io::Result<Passthrough> {
        let ring = new_ring(SYNC_RING_ENTRIES)?;
        Ok(Passthrough { file, ns, fua, rings: Mutex::new(vec![ring]) })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
    pub fn fua(&self) -> bool {
        self.fua
    }

    /// Reads exactly `buf.len()` bytes at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_segments(&mut [buf], offset)
    }

    /// Reads `header` then `payload` from consecutive bytes at `offset`: their commands go
    /// out together, one wait for both.
    pub fn read_two(&self, header: &mut [u8], payload: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_segments(&mut [header, payload], offset)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_segments(&[buf], offset)
    }

    /// Writes `header` then `payload` to consecutive bytes at `offset`, their commands together.
    pub fn write_two(&self, header: &[u8], payload: &[u8], offset: u64) -> io::Result<()> {
        self.write_segments(&[header, payload], offset)
    }

    fn read_segments(&self, segs: &mut [&mut [u8]], offset: u64) -> io::Result<()> {
        self.check(offset, segs.iter().map(|s| s.len()))?;
        // Unaligned memory never reaches the driver: it gets an aligned buffer of its own.
        let mut bounces: Vec<Option<AlignedBuf>> =
            segs.iter().map(|s| (s.as_ptr() as usize % IO_ALIGN != 0).then(|| AlignedBuf::zeroed(s.len()))).collect();
        let addrs: Vec<(u64, usize)> = segs
            .iter_mut()
            .zip(bounces.iter_mut())
            .map(|(s, b)| (b.as_mut().map_or(s.as_mut_ptr(), |b| b.as_mut_ptr()) as u64, s.len()))
            .collect();
        self.transfer(Dir::Read, &addrs, offset)?;
        for (s, b) in segs.iter_mut().zip(&bounces) {
            if let Some(b) = b {
                s.copy_from_slice(b);
            }
        }
        Ok(())
    }

    fn write_segments(&self, segs: &[&[u8]], offset: u64) -> io::Result<()> {
        self.check(offset, segs.iter().map(|s| s.len()))?;
        let bounces: Vec<Option<AlignedBuf>> = segs
            .iter()
            .map(|s| {
                (s.as_ptr() as usize % IO_ALIGN != 0).then(|| {
                    let mut b = AlignedBuf::zeroed(s.len());
                    b.copy_from_slice(s);
                    b
                })
            })
            .collect();
        let addrs: Vec<(u64, usize)> =
            segs.iter().zip(&bounces).map(|(s, b)| (b.as_ref().map_or(s.as_ptr(), |b| b.as_ptr()) as u64, s.len())).collect();
        self.transfer(Dir::Write, &addrs, offset)
    }

    /// An NVMe Flush: completed writes are on stable media when it returns.
    pub fn flush(&self) -> io::Result<()> {
        self.run(&mut std::iter::once(NvmeCmd::flush(self.ns.nsid)))
    }

    /// Offsets and lengths are whole LBAs (the store plans in logical blocks).
    fn check(&self, offset: u64, lens: impl Iterator<Item = usize>) -> io::Result<()> {
        let lba = u64::from(self.ns.lba_bytes());
        let mut len = 0u64;
        for n in lens {
            if n as u64 % lba != 0 || n == 0 {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            len += n as u64;
        }
        if offset % lba != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if offset + len > self.ns.capacity {
            // As a read past the end of a block device: short, which rawblock calls EIO.
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }

    /// The commands of aligned segments `(address, length)` at consecutive device bytes.
    fn transfer(&self, dir: Dir, segs: &[(u64, usize)], offset: u64) -> io::Result<()> {
        let ns = &self.ns;
        let starts = segs.iter().scan(offset, |at, &(_, n)| {
            let here = *at;
            *at += n as u64;
            Some(here)
        });
        let mut cmds = segs
            .iter()
            .zip(starts)
            .flat_map(|(&(addr, len), at)| chunks(at, addr, len, ns.max_transfer))
            .map(|c| NvmeCmd::rw(dir, ns.nsid, ns.lba_shift, c.offset, c.addr, c.len, self.fua));
        self.run(&mut cmds)
    }

    /// Runs every command, at most [`SYNC_RING_ENTRIES`] in flight; the first error wins.
    fn run(&self, cmds: &mut dyn Iterator<Item = NvmeCmd>) -> io::Result<()> {
        let mut ring = match lock(&self.rings).pop() {
            Some(r) => r,
            None => new_ring(SYNC_RING_ENTRIES)?,
        };
        match self.run_on(&mut ring, cmds) {
            Ok(r) => {
                lock(&self.rings).push(ring);
                r
            }
            // The kernel refused a submit: the ring is dropped, not reused.
            Err(e) => Err(e),
        }
    }

    /// Ok(result of the commands) with the ring reusable; Err: a submit was refused.
    fn run_on(&self, ring: &mut IoUring<squeue::Entry128, cqueue::Entry32>, cmds: &mut dyn Iterator<Item = NvmeCmd>) -> io::Result<io::Result<()>> {
        let mut first_err: Option<io::Error> = None;
        let mut done = false;
        while !done {
            let mut pushed = 0;
            while pushed < SYNC_RING_ENTRIES as usize {
                let Some(cmd) = cmds.next() else {
                    done = true;
                    break;
                };
                let sqe = opcode::UringCmd80::new(types::Fd(self.fd()), NVME_URING_CMD_IO).cmd(cmd.bytes()).build();
                // SAFETY: the command's buffer belongs to the caller's borrowed slice (or a
                // bounce buffer) for the whole call, and the call waits for every completion.
                unsafe { ring.submission().push(&sqe) }.expect("at most SYNC_RING_ENTRIES queued");
                pushed += 1;
            }
            let mut reaped = 0;
            while reaped < pushed {
                match ring.submit_and_wait(pushed - reaped) {
                    Ok(_) => {}
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)) => {}
                    // A refused io_uring_enter took none of the queued commands.
                    Err(e) => return Err(e),
                }
                for c in ring.completion() {
                    reaped += 1;
                    if let Some(e) = completion_error(c.result()) {
                        first_err.get_or_insert(e);
                    }
                }
            }
        }
        Ok(first_err.map_or(Ok(()), Err))
    }
}

/// A ring with 128-byte SQEs and 32-byte CQEs (what NVMe passthrough needs), COOP_TASKRUN where
/// the kernel has it.
pub fn new_ring(entries: u32) -> io::Result<IoUring<squeue::Entry128, cqueue::Entry32>> {
    IoUring::<squeue::Entry128, cqueue::Entry32>::builder()
        .setup_coop_taskrun()
        .build(entries)
        .or_else(|_| IoUring::<squeue::Entry128, cqueue::Entry32>::builder().build(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_layout_and_fields() {
        let c = NvmeCmd::rw(Dir::Read, 1, 12, 5 << 32 << 12 | 8192, 0x1000, 3 * 4096, true);
        assert_eq!((c.opcode, c.nsid, c.cdw10, c.cdw11, c.cdw12, c.data_len), (0x02, 1, 2, 5, 2, 12288));
        let w = NvmeCmd::rw(Dir::Write, 1, 9, 512, 0x1000, 512, true);
        assert_eq!((w.opcode, w.cdw10, w.cdw12), (0x01, 1, FUA), "FUA on a write of one LBA (nlb 0)");
        let b = w.bytes();
        assert_eq!(b[0], 0x01);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 1, "nsid at byte 4");
        assert_eq!(u64::from_le_bytes(b[24..32].try_into().unwrap()), 0x1000, "addr at byte 24");
        assert_eq!(u32::from_le_bytes(b[36..40].try_into().unwrap()), 512, "data_len at byte 36");
        assert_eq!(u32::from_le_bytes(b[40..44].try_into().unwrap()), 1, "cdw10 at byte 40");
        assert_eq!(NvmeCmd::flush(7).opcode, 0);
    }

    #[test]
    fn transfers_split_by_the_largest_command() {
        let got: Vec<Chunk> = chunks(4096, 0x10000, 10 * 4096, 4 * 4096).collect();
        assert_eq!(
            got,
            [
                Chunk { offset: 4096, addr: 0x10000, len: 16384 },
                Chunk { offset: 4096 + 16384, addr: 0x10000 + 16384, len: 16384 },
                Chunk { offset: 4096 + 32768, addr: 0x10000 + 32768, len: 8192 },
            ]
        );
        assert_eq!(chunks(0, 0, 4096, 4096).count(), 1);
    }

    #[test]
    fn names_and_completions() {
        assert!(is_ctrl_ns("0n1") && is_ctrl_ns("12n3"));
        assert!(!is_ctrl_ns("0n1p1") && !is_ctrl_ns("0") && !is_ctrl_ns("n1"));
        assert!(completion_error(0).is_none());
        assert_eq!(completion_error(-libc::EINVAL).unwrap().raw_os_error(), Some(libc::EINVAL));
        assert!(completion_error(0x281).unwrap().to_string().contains("0x281"));
    }

    #[test]
    fn files_and_loop_devices_are_not_namespaces() {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-tmp/nvme"));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("plain.img");
        std::fs::write(&p, [0u8; 4096]).unwrap();
        assert!(probe(&p).unwrap_err().contains("regular file"));
        assert!(probe(Path::new("/dev/null")).unwrap_err().contains("not an NVMe generic"));
    }
}
