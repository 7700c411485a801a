//! The mount table: which filesystems this machine has mounted where, and what an artifactfs
//! server publishes on the root of its mount. Low in the crate, so that the core (references
//! refusing paths inside mounts) and `doctor` can ask without depending on the mount layer.

use std::fs;
use std::path::Path;

use crate::error::{IoContext, Result};

/// The filesystem type of an artifactfs mount in /proc/mounts.
pub const FS_TYPE: &str = "fuse.artifactfs";
/// On the root of a mount: the serving process, so `umount` can wait for it to finish.
pub const XATTR_PID: &str = "user.artifactfs.pid";
/// On the root of a mount: `on` when the kernel reads version files directly, else `off`.
pub const XATTR_PASSTHROUGH: &str = "user.artifactfs.passthrough";

/// One line of /proc/self/mountinfo.
pub struct MountEntry {
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    /// Whether it is a FUSE filesystem: `fuse`, or `fuse.SUBTYPE`.
    pub fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }
}

/// This process's mounts, in mount order.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let info = fs::read_to_string("/proc/self/mountinfo").at(Path::new("/proc/self/mountinfo"))?;
    Ok(info
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mountpoint options [optional...] - fstype source super
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                mountpoint: unescape(fields.get(4)?),
                fstype: fields.get(sep + 1)?.to_string(),
                source: unescape(fields.get(sep + 2)?),
            })
        })
        .collect())
}

/// The filesystem type mounted exactly at `path`.
pub fn mount_type(path: &Path) -> Result<Option<String>> {
    let want = path.to_string_lossy();
    // The last mount there is what shows.
    Ok(mounts()?
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == want)
        .map(|m| m.fstype))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The pid of the process serving `mountpoint`, which it publishes as an xattr of the root.
pub fn server_pid(mountpoint: &Path) -> Option<i32> {
    root_xattr(mountpoint, XATTR_PID)?.parse().ok()
}

/// An attribute the server publishes on the root of its mount, as text.
pub fn root_xattr(mountpoint: &Path, name: &str) -> Option<String> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).ok()?;
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: buffers are valid for the given length.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n <= 0 {
        return None;
    }
    Some(
        String::from_utf8_lossy(&buf[..n as usize])
            .trim()
            .to_string(),
    )
}
