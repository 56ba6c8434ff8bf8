//! One code path for a first start and a restart: open-or-create
//! ([`OpenMode::OpenOrCreate`]) formats a device that holds no rawblock format
//! and opens one that does, and `recover` on a handle that has just formatted
//! answers an empty report instead of refusing, so a server always opens,
//! recovers, then serves.
//!
//! Open-or-create never formats over data: only a new or empty file, or a
//! device whose first block is zeros and that has no superblock copy
//! ([`Error::NotRawblock`]), is formatted, and formatting still refuses
//! anything but zeros at the device's start. A damaged or foreign superblock
//! is an error, as with [`OpenMode::ReadWrite`].

use std::time::Instant;

use super::{OpenMode, RecoverReport, Store};
use crate::device::Device;
use crate::error::{Error, Result};

impl Store {
    /// Whether this handle formatted the device when it opened ([`OpenMode::Create`], or
    /// [`OpenMode::OpenOrCreate`] finding no rawblock format).
    pub fn formatted(&self) -> bool {
        self.formatted
    }

    /// What `recover` answers on a handle that formatted and has not written since:
    /// nothing recovered, nothing read.
    pub(super) fn fresh_report(&self, start: Instant) -> RecoverReport {
        let mut report = RecoverReport::new(self.engine.kind(), 0);
        report.elapsed_ns = start.elapsed().as_nanos() as u64;
        report
    }
}

/// Open-or-create formats over zeros only.
pub(super) fn check_mode(mode: &OpenMode) -> Result<()> {
    match mode {
        OpenMode::OpenOrCreate(f) if f.overwrite => Err(Error::InvalidArgument(
            "open-or-create never formats over data; overwriting needs an explicit create".into(),
        )),
        _ => Ok(()),
    }
}

/// Whether reading the superblock failed because the device holds no rawblock format at
/// all (and not a damaged one): then open-or-create may format it.
pub(super) fn holds_no_rawblock(dev: &Device, e: &Error) -> bool {
    matches!(e, Error::NotRawblock { .. }) || dev.capacity() == 0
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use super::*;
    use crate::store::RecoveredFrom;
    use crate::error::Holds;
    use crate::format::GeometryRequest;
    use crate::store::{FormatOptions, OpenOptions, RecoverOptions};

    fn format_opts() -> FormatOptions {
        FormatOptions {
            capacity_bytes: 8 << 20,
            geometry: GeometryRequest { slot_bytes: 64 << 10, ..Default::default() },
            overwrite: false,
            ..Default::default()
        }
    }

    fn open_or_create(p: &Path) -> Result<Store> {
        Store::open(p, &OpenOptions { mode: OpenMode::OpenOrCreate(format_opts()), ..Default::default() })
    }

    fn get(s: &Store, key: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 4096];
        let n = s.get(key, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    /// The server's one code path: open-or-create, recover, serve; on the first start and after.
    #[test]
    fn first_start_and_restart_run_the_same_calls() {
        let p = crate::store::tmp_path("first-start");
        let s = open_or_create(&p).unwrap();
        assert!(s.formatted(), "a missing file is formatted");
        let r = s.recover(&RecoverOptions::default()).unwrap();
        assert_eq!((r.from, r.indexed, r.header_reads, r.io.reads_submitted), (RecoveredFrom::Nothing, 0, 0, 0));
        s.put(b"k", b"first").unwrap();
        s.checkpoint().unwrap();
        drop(s);
        let s = open_or_create(&p).unwrap();
        assert!(!s.formatted(), "a rawblock device is opened, not formatted");
        assert!(matches!(s.get(b"k", &mut [0u8; 16]), Err(Error::NeedsRecovery)));
        let r = s.recover(&RecoverOptions::default()).unwrap();
        assert_eq!((r.from, r.indexed), (RecoveredFrom::Journal, 1));
        assert_eq!(get(&s, b"k"), b"first");
    }

    #[test]
    fn an_empty_file_is_formatted_and_a_zeroed_one_too() {
        let p = crate::store::tmp_path("first-start-empty");
        std::fs::File::create(&p).unwrap();
        assert!(open_or_create(&p).unwrap().formatted(), "an empty file");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        let s = open_or_create(&p).unwrap();
        assert!(s.formatted(), "a file of zeros");
        let bytes = s.geometry().device_bytes();
        assert!(bytes > 1 << 20 && bytes <= 8 << 20, "to the capacity asked for: {bytes}");
    }

    /// Open-or-create never formats over data, a damaged format, or with overwrite.
    #[test]
    fn nothing_but_zeros_is_formatted() {
        let p = crate::store::tmp_path("first-start-data");
        let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8 + 1).collect();
        std::fs::write(&p, &data).unwrap();
        assert!(matches!(open_or_create(&p), Err(Error::Exists { holds: Holds::Data, .. })));
        assert_eq!(std::fs::read(&p).unwrap(), data, "the data is untouched");

        // A rawblock device whose first block was overwritten, its copy intact: not formatted over.
        let p = crate::store::tmp_path("first-start-damaged");
        drop(open_or_create(&p).unwrap());
        std::fs::OpenOptions::new().write(true).open(&p).unwrap().write_all_at(&[0x77; 4096], 0).unwrap();
        let before = std::fs::read(&p).unwrap();
        assert!(matches!(open_or_create(&p), Err(Error::Format(_))));
        assert_eq!(std::fs::read(&p).unwrap(), before, "the damaged device is untouched");

        let overwrite = FormatOptions { overwrite: true, ..format_opts() };
        let p = crate::store::tmp_path("first-start-overwrite");
        let opened = Store::open(&p, &OpenOptions { mode: OpenMode::OpenOrCreate(overwrite), ..Default::default() });
        assert!(matches!(opened, Err(Error::InvalidArgument(_))));
        assert!(!p.exists(), "refused before anything was created");
    }

    /// Recover on a handle that formatted is an empty report until the first write; after a
    /// write (a put, a delete, a checkpoint) it is refused as before.
    #[test]
    fn recover_after_format_is_empty_until_the_first_write() {
        let p = crate::store::tmp_path("first-start-recover");
        let create = OpenOptions { mode: OpenMode::Create(format_opts()), ..Default::default() };
        let s = Store::open(&p, &create).unwrap();
        assert!(s.formatted());
        for _ in 0..2 {
            assert_eq!(s.recover(&RecoverOptions::default()).unwrap().from, RecoveredFrom::Nothing);
        }
        let mut buf = [0u8; 8];
        assert!(matches!(s.get(b"k", &mut buf), Err(Error::NotFound)), "reads do not count as use");
        s.put(b"k", b"v").unwrap();
        assert!(matches!(s.recover(&RecoverOptions::default()), Err(Error::AlreadyRecovered)));
        drop(s);

        let writes: [&dyn Fn(&Store); 3] = [
            &|s| s.checkpoint().map(|_| ()).unwrap(),
            &|s| assert!(matches!(s.delete(b"nope"), Err(Error::NotFound))),
            &|s| s.put_many(&[(&b"a"[..], &b"1"[..])]).map(|_| ()).unwrap(),
        ];
        for (i, write) in writes.iter().enumerate() {
            let s = Store::open(&crate::store::tmp_path(&format!("first-start-w{i}")), &create).unwrap();
            write(&s);
            assert!(matches!(s.recover(&RecoverOptions::default()), Err(Error::AlreadyRecovered)), "write {i}");
        }
    }
}
