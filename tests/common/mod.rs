//! Helpers for the tests that need root: loop devices, mounts, full filesystems.
//! Each guard undoes its setup when dropped, also when the test fails.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use rawblock::format::GeometryRequest;
use rawblock::store::{FormatOptions, OpenMode, OpenOptions, RecoverMode, RecoverOptions};
use rawblock::{Error, Store};

/// Prints why a test cannot run here and returns from it.
#[macro_export]
macro_rules! skip {
    ($($why:tt)*) => {{
        eprintln!("SKIPPED {}: {}", module_path!(), format!($($why)*));
        return;
    }};
}

/// Serialises the tests of one binary. They spawn losetup, mount and mkfs, and a
/// child between fork and exec holds a copy of every descriptor of the process:
/// of another test's device, keeping its advisory lock held (Busy on reopen) or
/// an unlinked file's blocks in use (ENOSPC) after the handle was closed.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A fresh scratch directory under target/ (on a filesystem with O_DIRECT).
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tmp/integration")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a command; Err carries its output when it cannot run or fails.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A loop device attached to a file, detached on drop.
pub struct Loop {
    pub dev: PathBuf,
}

impl Loop {
    pub fn attach(file: &Path) -> Result<Loop, String> {
        if !is_root() {
            return Err("not root: cannot attach a loop device".into());
        }
        let dev = run("losetup", &["-f", "--show", "--direct-io=on", file.to_str().unwrap()])?;
        Ok(Loop { dev: PathBuf::from(dev) })
    }

    pub fn name(&self) -> String {
        self.dev.display().to_string()
    }

    /// Detaches and waits until the kernel has done it: a device still open
    /// (io_uring releases its registered file asynchronously) detaches on last close.
    pub fn detach(self) {
        drop(self)
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // A handle's io_uring rings release the device in a kernel worker after close: on a
        // loaded machine losetup -d can find it busy, and the detach can lag. Retry and wait.
        let mut detached = Err(String::new());
        for _ in 0..50 {
            detached = run("losetup", &["-d", self.dev.to_str().unwrap()]);
            if detached.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if let Err(e) = detached {
            eprintln!("cannot detach {}: {e}", self.dev.display());
            return;
        }
        let name = self.dev.file_name().unwrap().to_string_lossy().to_string();
        let attached = Path::new("/sys/block").join(name).join("loop/backing_file");
        for _ in 0..3000 {
            if !attached.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        eprintln!("{} is still attached 30 s after losetup -d", self.dev.display());
    }
}

/// A mounted filesystem, unmounted on drop.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn new(source: &str, dir: &Path, args: &[&str]) -> Result<Mount, String> {
        if !is_root() {
            return Err("not root: cannot mount".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        let mut all: Vec<&str> = args.to_vec();
        all.push(source);
        all.push(dir.to_str().unwrap());
        run("mount", &all)?;
        Ok(Mount { dir: dir.to_path_buf() })
    }

    /// A tmpfs of `bytes`.
    pub fn tmpfs(dir: &Path, bytes: u64) -> Result<Mount, String> {
        Mount::new("tmpfs", dir, &["-t", "tmpfs", "-o", &format!("size={bytes}")])
    }

    /// Unmounts, retrying while busy: io_uring releases a closed handle's
    /// registered file asynchronously, so a file on the mount may stay open a moment.
    pub fn unmount(self) -> Result<(), String> {
        let r = self.try_unmount();
        std::mem::forget(self);
        r
    }

    fn try_unmount(&self) -> Result<(), String> {
        let mut last = Ok(());
        for _ in 0..200 {
            last = run("umount", &[self.dir.to_str().unwrap()]).map(|_| ());
            if last.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        last
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.try_unmount() {
            eprintln!("{e}; detaching it lazily");
            let _ = run("umount", &["-l", self.dir.to_str().unwrap()]);
        }
    }
}

/// An ext4 image of `bytes` (no blocks reserved for root), attached to a loop device.
pub fn ext4_on_loop(image: &Path, bytes: u64) -> Result<Loop, String> {
    let f = std::fs::File::create(image).map_err(|e| e.to_string())?;
    f.set_len(bytes).map_err(|e| e.to_string())?;
    run("mkfs.ext4", &["-q", "-F", "-m", "0", "-b", "4096", image.to_str().unwrap()])?;
    Loop::attach(image)
}

/// Fills the filesystem holding `dir` until writes fail with ENOSPC; returns the bytes written.
pub fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let mut written = 0u64;
    for chunk in [1usize << 20, 64 << 10, 4096, 512] {
        let buf = vec![0x5au8; chunk];
        for _round in 0..2 {
            loop {
                match f.write(&buf) {
                    Ok(n) if n > 0 => written += n as u64,
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                    Err(e) => panic!("filling {}: {e}", dir.display()),
                }
            }
            // What a sync turns up (delayed allocation) is filled on the second round.
            let _ = f.sync_all();
        }
    }
    written
}

pub fn format_options(capacity: u64, slot_bytes: u64, overwrite: bool, preallocate: bool) -> OpenOptions {
    OpenOptions {
        mode: OpenMode::Create(FormatOptions {
            capacity_bytes: capacity,
            geometry: GeometryRequest { slot_bytes, ..Default::default() },
            overwrite,
            preallocate,
        }),
        ..Default::default()
    }
}

pub fn open_rw(path: &Path) -> Result<Store, Error> {
    Store::open(path, &OpenOptions { mode: OpenMode::ReadWrite, ..Default::default() })
}

pub fn open_ro(path: &Path) -> Result<Store, Error> {
    Store::open(path, &OpenOptions { mode: OpenMode::ReadOnly, ..Default::default() })
}

/// Opens a formatted device read-write and recovers it from its checkpoint.
pub fn reopen_from_checkpoint(path: &Path) -> Store {
    let s = open_rw(path).unwrap();
    let r = s.recover(&RecoverOptions { mode: RecoverMode::Checkpoint, ..Default::default() }).unwrap();
    eprintln!("recovered {} entries from checkpoint {}", r.indexed, r.checkpoint_sequence);
    s
}

pub fn get(s: &Store, key: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = vec![0u8; s.geometry().max_payload() as usize];
    let n = s.get(key, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 131 + j * 7 + 1) as u8).collect()
}
