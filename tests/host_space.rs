//! Issue 11 item 4: a device file on a filesystem that fills up.
//!
//! A sparse image has no blocks under its metadata region until it is written,
//! so once the filesystem filled every checkpoint failed (and puts acknowledged
//! since the last one were lost at the next restart), ENOSPC came back as a
//! plain I/O error, and a format on a full filesystem left a file behind. Each
//! scenario runs on a small tmpfs and on a loop-mounted ext4 (root only; they
//! say why when they skip).

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use rawblock::{Error, Status, Store};

const MIB: u64 = 1 << 20;
const SLOT: u64 = 64 * 1024;

/// A scratch filesystem of `bytes`: "tmpfs", or "ext4" on a loop device.
fn filesystem(kind: &str, name: &str, bytes: u64) -> Result<(Option<Loop>, Mount), String> {
    let dir = scratch(&format!("{name}-{kind}"));
    match kind {
        "tmpfs" => Ok((None, Mount::tmpfs(&dir.join("mnt"), bytes)?)),
        _ => {
            let lo = ext4_on_loop(&dir.join("ext4.img"), bytes)?;
            let m = Mount::new(&lo.name(), &dir.join("mnt"), &[])?;
            Ok((Some(lo), m))
        }
    }
}

fn expect_no_space<T>(r: Result<T, Error>, what: &str, mount: &Path) -> Error {
    let e = match r {
        Err(e) => e,
        Ok(_) => panic!("{what}: succeeded on a full filesystem"),
    };
    assert_eq!(e.status(), Status::NoSpace, "{what}: {e}");
    assert!(matches!(e, Error::HostNoSpace { .. }), "{what}: {e:?}");
    assert!(e.to_string().contains(&mount.display().to_string()), "{what}: the message names the filesystem: {e}");
    eprintln!("{what}: {e}");
    e
}

fn format_on_a_full_filesystem(kind: &str) {
    let _serial = serial();
    let (_lo, mnt) = match filesystem(kind, "full-format", 16 * MIB) {
        Ok(f) => f,
        Err(e) => skip!("{e}"),
    };
    let existing = mnt.dir.join("existing.img");
    std::fs::File::create(&existing).unwrap();
    fill(&mnt.dir);

    // A new file: the format fails before its superblock, and the file is gone.
    let new = mnt.dir.join("new.img");
    expect_no_space(Store::open(&new, &format_options(64 * MIB, SLOT, false, false)), "formatting a new file", &mnt.dir);
    assert!(!new.exists(), "a failed format leaves no file behind");

    // An existing (empty) file: back to what it was, not a device.
    expect_no_space(
        Store::open(&existing, &format_options(64 * MIB, SLOT, true, false)),
        "formatting an existing file",
        &mnt.dir,
    );
    assert_eq!(std::fs::metadata(&existing).unwrap().len(), 0, "the file is cut back to its length");
    assert!(matches!(open_rw(&existing), Err(Error::Format(_) | Error::NotRawblock { .. })));
}

#[test]
fn format_on_a_full_tmpfs_is_no_space_and_leaves_no_device() {
    format_on_a_full_filesystem("tmpfs");
}

#[test]
fn format_on_a_full_ext4_is_no_space_and_leaves_no_device() {
    format_on_a_full_filesystem("ext4");
}

fn checkpoints_survive_a_full_filesystem(kind: &str) {
    let _serial = serial();
    let (_lo, mnt) = match filesystem(kind, "full-puts", 32 * MIB) {
        Ok(f) => f,
        Err(e) => skip!("{e}"),
    };
    let path = mnt.dir.join("dev.img");
    // 64 MiB on a 32 MiB filesystem: sparse, as cache images usually are.
    let s = Store::open(&path, &format_options(64 * MIB, SLOT, false, false)).unwrap();
    s.put(b"a", &value(1000, 5000)).unwrap();
    s.checkpoint().unwrap();
    let acknowledged: Vec<(String, Vec<u8>)> = (0..46).map(|i| (format!("k{i}"), value(i, 10_000 + i * 100))).collect();
    for (k, v) in &acknowledged {
        s.put(k.as_bytes(), v).unwrap();
    }
    fill(&mnt.dir);

    // A put needing new blocks fails with NO_SPACE; the key's previous value stays.
    expect_no_space(s.put(b"a", &value(2000, 5000)), "replacing a", &mnt.dir);
    assert_eq!(get(&s, b"a").unwrap(), value(1000, 5000), "the old value of a is still readable");
    expect_no_space(s.put(b"new", &value(3000, 40_000)), "a new key", &mnt.dir);
    assert!(matches!(get(&s, b"new"), Err(Error::NotFound)));
    s.delete(b"k0").unwrap();

    // The metadata region was allocated at format: checkpoints still work.
    let info = s.checkpoint().expect("a checkpoint on a full filesystem");
    assert_eq!(info.entries, 46, "a and k1..k45");
    s.checkpoint().expect("the other container too");
    drop(s);

    let s = reopen_from_checkpoint(&path);
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= s.geometry().meta_bytes());
    assert_eq!(get(&s, b"a").unwrap(), value(1000, 5000));
    assert!(matches!(get(&s, b"k0"), Err(Error::NotFound)));
    for (k, v) in &acknowledged[1..] {
        assert_eq!(&get(&s, k.as_bytes()).unwrap(), v, "{k} survived the restart");
    }
}

#[test]
fn checkpoints_and_acknowledged_puts_survive_a_full_tmpfs() {
    checkpoints_survive_a_full_filesystem("tmpfs");
}

#[test]
fn checkpoints_and_acknowledged_puts_survive_a_full_ext4() {
    checkpoints_survive_a_full_filesystem("ext4");
}

fn preallocation(kind: &str) {
    let _serial = serial();
    let (_lo, mnt) = match filesystem(kind, "prealloc", 16 * MIB) {
        Ok(f) => f,
        Err(e) => skip!("{e}"),
    };
    // More than the filesystem holds: refused up front, nothing left behind.
    let big = mnt.dir.join("big.img");
    expect_no_space(Store::open(&big, &format_options(64 * MIB, SLOT, false, true)), "preallocating 64 MiB", &mnt.dir);
    assert!(!big.exists());

    // What fits is allocated whole: every slot can be written however full the filesystem gets.
    let path = mnt.dir.join("dev.img");
    let s = Store::open(&path, &format_options(6 * MIB, SLOT, false, true)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().blocks() * 512 >= s.geometry().device_bytes());
    fill(&mnt.dir);
    let n = s.geometry().slot_count() as usize;
    for i in 0..n {
        s.put(format!("k{i}").as_bytes(), &value(i, SLOT as usize - 4096)).unwrap();
    }
    s.checkpoint().unwrap();
    drop(s);
    let s = reopen_from_checkpoint(&path);
    assert_eq!(s.len(), n);
}

#[test]
fn preallocate_allocates_the_whole_file_on_tmpfs() {
    preallocation("tmpfs");
}

#[test]
fn preallocate_allocates_the_whole_file_on_ext4() {
    preallocation("ext4");
}

/// On an ordinary filesystem (target/): the metadata region is allocated, the
/// slots are not, unless asked; and a device formatted before this (its
/// metadata region a hole) gets it allocated when opened for writing.
#[test]
fn format_allocates_the_metadata_region_and_preallocate_the_rest() {
    let _serial = serial();
    let dir = scratch("alloc");
    let sparse = dir.join("sparse.img");
    let s = Store::open(&sparse, &format_options(64 * MIB, SLOT, false, false)).unwrap();
    let (meta, total) = (s.geometry().meta_bytes(), s.geometry().device_bytes());
    drop(s);
    let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
    assert!(allocated(&sparse) >= meta, "{} < {meta}", allocated(&sparse));
    assert!(allocated(&sparse) < total / 2, "the slots stay sparse");

    let full = dir.join("full.img");
    drop(Store::open(&full, &format_options(64 * MIB, SLOT, false, true)).unwrap());
    assert!(allocated(&full) >= total, "{} < {total}", allocated(&full));

    // An image from before: punch the containers out, as a format without allocation left them.
    let f = std::fs::OpenOptions::new().write(true).open(&sparse).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: fallocate on a descriptor we own.
    let punched = unsafe {
        libc::fallocate(fd, libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE, 4096, (meta - 4096) as libc::off_t)
    };
    assert_eq!(punched, 0, "{}", std::io::Error::last_os_error());
    drop(f);
    assert!(allocated(&sparse) < meta);
    drop(open_ro(&sparse).unwrap());
    assert!(allocated(&sparse) < meta, "a reader changes nothing");
    drop(open_rw(&sparse).unwrap());
    assert!(allocated(&sparse) >= meta, "a writer allocates the metadata region");
}
