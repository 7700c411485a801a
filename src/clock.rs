//! The time the store's filesystem stamps files with. A draft's entries get their times from
//! two places: staged files from the kernel, everything else from the catalog. Both must come
//! from one clock, or a ctime could move backwards when an entry turns from a catalog row into
//! a staged file: the kernel stamps files with a coarse clock (a few milliseconds behind the
//! precise one, and never behind a precise time it has handed out), which no clock that a
//! process can read follows exactly. So where a mount runs, "now" is read off a file that the
//! kernel stamps just then.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

static CLOCK: OnceLock<File> = OnceLock::new();

/// Reads the time from a file in `dir` (the store's staging directory) from now on; until
/// then, and if that fails, the system clock. The file has no name, so nothing is left behind.
pub fn use_file_clock(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
    {
        Ok(f) => {
            let _ = CLOCK.set(f);
        }
        Err(e) => log::warn!(
            "cannot keep a clock file in {} ({e}); draft entries are stamped by the system clock",
            dir.display()
        ),
    }
}

/// Now, in nanoseconds since the epoch, as a file changed now would show it.
pub fn now_ns() -> i64 {
    if let Some(f) = CLOCK.get()
        && crate::staging::touch_file(f).is_ok()
        && let Ok(m) = f.metadata()
    {
        return m.ctime() * 1_000_000_000 + m.ctime_nsec();
    }
    crate::catalog::now_ns()
}
