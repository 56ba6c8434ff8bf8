//! rb-bench's own words for the library's errors. The library's messages speak to C
//! callers (RB_OPEN_OVERWRITE_OK, RB_ENGINE_IO_URING, ...); someone at a shell needs the
//! flag to pass or the command to run, so the errors with a known remedy are phrased here
//! from the error's kind, not from the library's text.

use std::io::{ErrorKind, Read};
use std::path::Path;

use rawblock::engine::EngineChoice;
use rawblock::format::superblock::MAGIC;
use rawblock::Error;

/// Formatting the device for --prepare failed.
pub fn prepare(e: Error, device: &Path, direct: bool) -> String {
    match e {
        Error::Exists(_) => format!(
            "{} already holds data; pass --i-understand-this-overwrites-device to format it anyway",
            device.display()
        ),
        e => common(e, device, direct),
    }
}

/// Opening the fixture for --measure failed.
pub fn open_fixture(e: Error, device: &Path, direct: bool) -> String {
    let shown = device.display();
    let prepare = format!("prepare it with: rb-bench --device-path {shown} --prepare --i-understand-this-overwrites-device");
    match e {
        Error::Io { source, .. } if source.kind() == ErrorKind::NotFound => format!("{shown} does not exist; {prepare}"),
        Error::Format(_) if !starts_with_magic(device) => format!("{shown} is not a rawblock device; {prepare}"),
        // A superblock that is corrupt, of another version or describes more than is there.
        Error::Format(m) => format!("{m}; {prepare}"),
        e => common(e, device, direct),
    }
}

/// A variant's engine could not be set up (or its recovery failed).
pub fn engine(e: Error, choice: EngineChoice, device: &Path, direct: bool) -> String {
    match (e, choice) {
        (Error::Unsupported(_), EngineChoice::UringCmd) => {
            "NVMe passthrough is not implemented yet; --io-engine io_uring reads the same headers".into()
        }
        (Error::Unsupported(m), EngineChoice::IoUring) => format!("{m}; --io-engine posix needs no io_uring"),
        (e, _) => common(e, device, direct),
    }
}

fn common(e: Error, device: &Path, direct: bool) -> String {
    match e {
        Error::Io { source, .. } if direct && source.raw_os_error() == Some(libc::EINVAL) => format!(
            "{}: {source} with O_DIRECT; if its filesystem does not support O_DIRECT, --buffered goes through \
             the page cache (and then measures it, not the device)",
            device.display()
        ),
        e => e.to_string(),
    }
}

fn starts_with_magic(device: &Path) -> bool {
    let mut head = [0u8; MAGIC.len()];
    std::fs::File::open(device).and_then(|mut f| f.read_exact(&mut head)).is_ok() && head == MAGIC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hint_names_a_c_identifier() {
        let dev = Path::new("/nonexistent/fixture.img");
        let einval = || Error::io("cannot open x (RB_OPEN_BUFFERED turns it off)", std::io::Error::from_raw_os_error(libc::EINVAL));
        let hints = [
            prepare(Error::Exists("x; pass RB_OPEN_OVERWRITE_OK".into()), dev, false),
            prepare(einval(), dev, true),
            open_fixture(Error::Format("x; open with RB_OPEN_CREATE".into()), dev, true),
            open_fixture(Error::io("cannot open x", ErrorKind::NotFound.into()), dev, true),
            engine(Error::Unsupported("RB_ENGINE_URING_CMD".into()), EngineChoice::UringCmd, dev, true),
        ];
        for h in &hints {
            assert!(!h.contains("RB_"), "{h}");
        }
        assert!(hints[0].contains("--i-understand-this-overwrites-device"));
        assert!(hints[1].contains("--buffered"));
        assert!(hints[2].contains("is not a rawblock device; prepare it with: rb-bench --device-path"));
        assert!(hints[3].contains("does not exist"));
        assert!(hints[4].contains("--io-engine io_uring"));
    }
}
