//! Issue 11 item 2: one writer per device, whatever path reaches it.
//!
//! The advisory lock alone covers one inode. A loop device and its backing
//! file, or two device nodes of one block device, are different inodes: before
//! O_EXCL and the loop checks, each of these tests opened two writers (or
//! formatted over a mounted ext4). They need root and losetup and say why
//! when they skip.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::*;
use rawblock::{Error, Status, Store};

const MIB: u64 = 1 << 20;
const SLOT: u64 = 64 * 1024;

fn expect_busy(r: Result<Store, Error>, what: &str, names: &str) {
    match r {
        Err(e) => {
            assert_eq!(e.status(), Status::Busy, "{what}: {e}");
            assert!(e.to_string().contains(names), "{what}: the message names {names}: {e}");
            eprintln!("{what}: {e}");
        }
        Ok(_) => panic!("{what}: opened, but another writer has the device"),
    }
}

/// A formatted 32 MiB file holding key "a" in its checkpoint.
fn formatted_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("backing.img");
    let s = Store::open(&file, &format_options(32 * MIB, SLOT, false, false)).unwrap();
    s.put(b"a", b"first").unwrap();
    s.checkpoint().unwrap();
    file
}

#[test]
fn the_backing_file_of_an_attached_loop_device_is_refused_for_writing() {
    let _serial = serial();
    let dir = scratch("alias-file");
    let file = formatted_file(&dir);
    let lo = match Loop::attach(&file) {
        Ok(l) => l,
        Err(e) => skip!("{e}"),
    };
    let name = lo.name();
    // Nobody has the loop device open, yet a writer on the file would share it with any later one.
    expect_busy(open_rw(&file), "the backing file, read-write", &name);
    expect_busy(Store::open(&file, &format_options(0, SLOT, true, false)), "the backing file, formatting", &name);
    drop(open_ro(&file).expect("a reader of the backing file is fine while nobody writes"));

    let writer = open_rw(&lo.dev).unwrap();
    writer.recover(&Default::default()).unwrap();
    assert_eq!(get(&writer, b"a").unwrap(), b"first");
    writer.put(b"a", b"through the loop device").unwrap();
    writer.checkpoint().unwrap();
    expect_busy(open_rw(&file), "the backing file while the loop device has a writer", &name);
    // The loop device's writer also locks the file: a reader there sees it open for writing.
    expect_busy(open_ro(&file), "the backing file, read-only, while the loop device has a writer", "open for writing");
    drop(writer);
    lo.detach();

    // Detached, the file is an ordinary device again, holding what the loop device wrote.
    let s = reopen_from_checkpoint(&file);
    assert_eq!(get(&s, b"a").unwrap(), b"through the loop device");
}

#[test]
fn a_loop_device_over_a_file_open_for_writing_is_busy() {
    let _serial = serial();
    let dir = scratch("alias-loop");
    let file = formatted_file(&dir);
    let writer = open_rw(&file).unwrap();
    writer.recover(&Default::default()).unwrap();
    // Attached after the file's writer opened it: only the loop side can notice.
    let lo = match Loop::attach(&file) {
        Ok(l) => l,
        Err(e) => skip!("{e}"),
    };
    let shown = file.display().to_string();
    expect_busy(open_rw(&lo.dev), "the loop device over a file with a writer", &shown);
    expect_busy(
        Store::open(&lo.dev, &format_options(0, SLOT, true, false)),
        "formatting the loop device over a file with a writer",
        &shown,
    );
    expect_busy(open_ro(&lo.dev), "reading the loop device over a file with a writer", &shown);
    // The loss: key "a" put and checkpointed by the file's writer survives.
    writer.put(b"a", b"second").unwrap();
    writer.checkpoint().unwrap();
    drop(writer);

    let s = open_rw(&lo.dev).expect("the loop device is free once the file's writer is gone");
    s.recover(&Default::default()).unwrap();
    assert_eq!(get(&s, b"a").unwrap(), b"second");
}

#[test]
fn two_nodes_of_one_block_device_exclude_each_other() {
    let _serial = serial();
    let dir = scratch("alias-node");
    let file = dir.join("backing.img");
    std::fs::File::create(&file).unwrap().set_len(32 * MIB).unwrap();
    let lo = match Loop::attach(&file) {
        Ok(l) => l,
        Err(e) => skip!("{e}"),
    };
    let meta = std::fs::metadata(&lo.dev).unwrap();
    assert!(meta.file_type().is_block_device());
    let alias = dir.join("alias-node");
    let c = std::ffi::CString::new(alias.to_str().unwrap()).unwrap();
    // SAFETY: mknod with a valid NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, meta.rdev()) } != 0 {
        skip!("cannot make a second node of {}: {}", lo.name(), std::io::Error::last_os_error());
    }

    let s = Store::open(&lo.dev, &format_options(0, SLOT, true, false)).unwrap();
    s.put(b"a", b"first").unwrap();
    s.checkpoint().unwrap();
    expect_busy(open_rw(&alias), "a second node while the first has a writer", "held exclusively");
    expect_busy(
        Store::open(&alias, &format_options(0, SLOT, true, false)),
        "formatting through a second node",
        "held exclusively",
    );
    drop(s);

    let s = open_rw(&alias).expect("the second node is free once the first closed");
    s.recover(&Default::default()).unwrap();
    assert_eq!(get(&s, b"a").unwrap(), b"first");
    expect_busy(open_rw(&lo.dev), "the first node while the second has a writer", "held exclusively");
    drop(s);
    // Closing released the claim at once (it does not live on the engine's descriptor).
    for _ in 0..3 {
        drop(open_rw(&lo.dev).expect("reopening right after close"));
    }
}

#[test]
fn a_mounted_filesystem_is_never_formatted() {
    let _serial = serial();
    let dir = scratch("alias-mounted");
    let image = dir.join("ext4.img");
    let lo = match ext4_on_loop(&image, 32 * MIB) {
        Ok(l) => l,
        Err(e) => skip!("{e}"),
    };
    let mnt = match Mount::new(&lo.name(), &dir.join("mnt"), &[]) {
        Ok(m) => m,
        Err(e) => skip!("{e}"),
    };
    let canary: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(mnt.dir.join("canary"), &canary).unwrap();
    run("sync", &[]).unwrap();

    expect_busy(Store::open(&lo.dev, &format_options(0, SLOT, true, false)), "formatting a mounted device", "mounted at");
    expect_busy(open_rw(&lo.dev), "opening a mounted device for writing", "mounted at");
    // A reader claims nothing (and finds no rawblock superblock).
    assert!(matches!(open_ro(&lo.dev), Err(Error::NotRawblock { .. })));

    mnt.unmount().unwrap();
    run("e2fsck", &["-f", "-n", &lo.name()]).expect("the filesystem is intact");
    let mnt = Mount::new(&lo.name(), &dir.join("mnt"), &[]).unwrap();
    assert_eq!(std::fs::read(mnt.dir.join("canary")).unwrap(), canary);
}
