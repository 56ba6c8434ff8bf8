//! rb-bench's own words for the library's errors. The library's errors are structured and
//! name no C identifier; someone at a shell needs the flag to pass or the command to run,
//! so the errors with a known remedy are phrased here from the error's variant.

use std::io::ErrorKind;
use std::path::Path;

use rawblock::engine::EngineChoice;
use rawblock::Error;

/// Formatting the device for --prepare failed.
pub fn prepare(e: Error, device: &Path, direct: bool) -> String {
    match e {
        Error::Exists { holds, .. } => format!(
            "{} already holds {holds}; pass --i-understand-this-overwrites-device to format it anyway",
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
        Error::NotRawblock { .. } => format!("{shown} is not a rawblock device; {prepare}"),
        // A superblock that is corrupt, of another version or describes more than is there.
        Error::Format(m) => format!("{m}; {prepare}"),
        e => common(e, device, direct),
    }
}

/// A variant's engine could not be set up (or its recovery failed).
pub fn engine(e: Error, choice: EngineChoice, device: &Path, direct: bool) -> String {
    match (e, choice) {
        (e @ Error::EngineUnavailable { engine: EngineChoice::UringCmd, .. }, _) => {
            format!("{e}; --io-engine io_uring reads the same headers through the block layer")
        }
        (e @ Error::EngineUnavailable { engine: EngineChoice::IoUring, .. }, _) => format!("{e}; --io-engine posix needs no io_uring"),
        (e, _) => common(e, device, direct),
    }
}

fn common(e: Error, device: &Path, direct: bool) -> String {
    match e {
        Error::DirectIoRefused { source, .. } if direct => format!(
            "{}: {source} with O_DIRECT; if its filesystem does not support O_DIRECT, --buffered goes through \
             the page cache (and then measures it, not the device)",
            device.display()
        ),
        e => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_hint_names_a_c_identifier() {
        let dev = Path::new("/nonexistent/fixture.img");
        let einval = || Error::DirectIoRefused { path: dev.into(), source: std::io::Error::from_raw_os_error(libc::EINVAL) };
        let hints = [
            prepare(Error::Exists { path: dev.into(), holds: rawblock::error::Holds::Data }, dev, false),
            prepare(einval(), dev, true),
            open_fixture(Error::NotRawblock { path: dev.into() }, dev, true),
            open_fixture(Error::io("cannot open x", ErrorKind::NotFound.into()), dev, true),
            engine(Error::EngineUnavailable { engine: EngineChoice::UringCmd, reason: "not yet".into() }, EngineChoice::UringCmd, dev, true),
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
