//! The helper mount(8) runs for `mount -t fuse.artifactfs STORE DIR` and for /etc/fstab lines
//! of that type: the binary installed (or linked) as `mount.fuse.artifactfs`. It takes
//! mount(8)'s helper arguments, `STORE DIR [-sfnv] [-o OPTIONS] [-t TYPE]`, and mounts as
//! `artifactfs --store STORE mount DIR` does.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::error::{Error, Result};

/// mount(8)'s exit statuses for helpers: bad usage, and a mount that failed.
const USAGE: u8 = 1;
const MOUNT_FAILED: u8 = 32;

/// mount(8) options that concern mount(8), systemd or the kernel's generic mount flags, not
/// artifactfs: accepted and left alone.
const GENERIC: &[&str] = &[
    "defaults",
    "rw",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "exec",
    "noexec",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "diratime",
    "nodiratime",
    "lazytime",
    "async",
];

#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub store: PathBuf,
    pub mountpoint: PathBuf,
    /// `-f`: check everything but do not mount.
    pub fake: bool,
    /// `-o nonempty`: mount over a directory that holds files.
    pub nonempty: bool,
    /// `-o ro`: the read-only mount (versions only, no `drafts/`), as `mount --read-only`.
    pub read_only: bool,
}

/// Whether the program was started under a helper's name (`mount.fuse.artifactfs`).
pub fn invoked_as_helper(argv0: &OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(b"mount."))
}

pub fn parse(args: &[OsString]) -> Result<Request> {
    let usage = |why: String| Error::invalid("mount.fuse.artifactfs", why);
    let mut positional = Vec::new();
    let mut options = Vec::new();
    let (mut sloppy, mut fake) = (false, false);
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let bytes = arg.as_bytes();
        if bytes == b"-o" || bytes == b"-t" {
            let value = rest
                .next()
                .ok_or_else(|| usage(format!("{} needs a value", arg.to_string_lossy())))?;
            if bytes == b"-o" {
                options.push(value.to_string_lossy().into_owned());
            }
        } else if let Some(o) = bytes.strip_prefix(b"-o").filter(|o| !o.is_empty()) {
            options.push(String::from_utf8_lossy(o).into_owned());
        } else if bytes.len() > 1 && bytes[0] == b'-' {
            for flag in &bytes[1..] {
                match flag {
                    b's' => sloppy = true,
                    b'f' => fake = true,
                    b'n' | b'v' => {}
                    _ => {
                        return Err(usage(format!(
                            "flag -{} is not supported (known: -s, -f, -n, -v, -o, -t)",
                            *flag as char
                        )));
                    }
                }
            }
        } else {
            positional.push(PathBuf::from(arg));
        }
    }
    let [store, mountpoint] = <[PathBuf; 2]>::try_from(positional).map_err(|p| {
        usage(format!(
            "expected STORE and MOUNTPOINT, got {} argument(s)",
            p.len()
        ))
    })?;
    let mut nonempty = false;
    let mut read_only = false;
    for option in options.iter().flat_map(|o| o.split(',')) {
        if option == "nonempty" {
            nonempty = true;
            continue;
        }
        let known = option.is_empty()
            || GENERIC.contains(&option)
            || option.starts_with("x-")
            || option.starts_with("comment=");
        // The last of ro and rw wins, as for mount(8).
        match option {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => {}
        }
        if !known && option != "ro" && !sloppy {
            return Err(usage(format!(
                "unknown mount option {option:?} (add -s to ignore unknown options)"
            )));
        }
    }
    Ok(Request {
        store,
        mountpoint,
        fake,
        nonempty,
        read_only,
    })
}

/// Runs as mount(8)'s helper: mounts, or reports why not with mount(8)'s exit statuses.
pub fn run(args: &[OsString]) -> ExitCode {
    let request = match parse(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(USAGE);
        }
    };
    if request.fake {
        return ExitCode::SUCCESS;
    }
    let location = crate::store_dir::Location {
        path: request.store.clone(),
        origin: crate::store_dir::Origin::Flag,
    };
    let mounted = location.require().and_then(|()| {
        let opts = crate::mount::Options {
            foreground: false,
            nonempty: request.nonempty,
            read_only: request.read_only,
        };
        crate::mount::mount(&request.store, &request.mountpoint, opts, &mut |_| {})
    });
    match mounted {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(MOUNT_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<OsString> {
        line.split(' ').map(OsString::from).collect()
    }

    #[test]
    fn takes_what_mount_passes() {
        let r = parse(&args(
            "/data/store /mnt/a -o rw,noauto,user,_netdev,x-systemd.automount",
        ))
        .unwrap();
        assert_eq!(r.store, PathBuf::from("/data/store"));
        assert_eq!(r.mountpoint, PathBuf::from("/mnt/a"));
        assert!(!r.fake);
        assert!(!r.read_only);
        let r = parse(&args("s m -fnv -t fuse.artifactfs -orw")).unwrap();
        assert!(r.fake);
        assert!(!r.nonempty);
        assert!(parse(&args("s m -o rw,nonempty")).unwrap().nonempty);
    }

    #[test]
    fn ro_asks_for_the_read_only_mount_and_the_last_of_ro_rw_wins() {
        assert!(parse(&args("s m -o ro")).unwrap().read_only);
        assert!(parse(&args("s m -o defaults,ro,nofail")).unwrap().read_only);
        assert!(!parse(&args("s m -o ro -o rw")).unwrap().read_only);
        assert!(parse(&args("s m -o rw,ro")).unwrap().read_only);
    }

    #[test]
    fn refuses_what_it_cannot_honour_naming_it() {
        for (line, needle) in [
            ("s m -o rw,allow_root", "allow_root"),
            ("s", "got 1 argument"),
            ("s m extra", "got 3 argument"),
            ("s m -o", "-o needs a value"),
            ("s m -N /proc/1/ns/mnt", "-N"),
        ] {
            let e = parse(&args(line)).unwrap_err().to_string();
            assert!(e.contains(needle), "{line}: {e}");
        }
        assert!(
            parse(&args("s m -s -o allow_root")).is_ok(),
            "-s ignores unknown options"
        );
    }

    #[test]
    fn is_recognised_by_its_name() {
        assert!(invoked_as_helper(OsStr::new("/sbin/mount.fuse.artifactfs")));
        assert!(!invoked_as_helper(OsStr::new("/usr/local/bin/artifactfs")));
    }
}
