//! Who may change what inside drafts: the rules a local filesystem applies, from the mode
//! bits and owner shown and the caller's user and groups. Root passes every check but the
//! execute bit of a file that has none. Everything outside drafts is read-only for everyone,
//! which callers check first (EROFS comes before EACCES, as on a read-only filesystem).

use std::sync::OnceLock;

use crate::error::{Error, Result};

use super::{Attr, Kind};

pub const READ: u32 = 4;
pub const WRITE: u32 = 2;
pub const SEARCH: u32 = 1;

const S_ISVTX: u16 = 0o1000;
const S_ISGID: u16 = 0o2000;
const S_ISUID: u16 = 0o4000;

/// The process behind a request.
#[derive(Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// Supplementary groups, read from /proc when first needed.
    groups: OnceLock<Vec<u32>>,
}

impl Caller {
    pub fn new(uid: u32, gid: u32, pid: u32) -> Caller {
        Caller {
            uid,
            gid,
            pid,
            groups: OnceLock::new(),
        }
    }

    /// Root, for what the server does on its own behalf.
    pub fn root() -> Caller {
        Caller::new(0, 0, 0)
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups().contains(&gid)
    }

    fn groups(&self) -> &[u32] {
        self.groups.get_or_init(|| {
            // A process that is gone has no groups to speak for it.
            std::fs::read_to_string(format!("/proc/{}/status", self.pid))
                .ok()
                .and_then(|status| {
                    status.lines().find_map(|l| {
                        l.strip_prefix("Groups:").map(|g| {
                            g.split_whitespace()
                                .filter_map(|n| n.parse().ok())
                                .collect()
                        })
                    })
                })
                .unwrap_or_default()
        })
    }

    /// Whether the caller owns what `attr` describes, or is root.
    pub fn owns(&self, attr: &Attr) -> bool {
        self.is_root() || self.uid == attr.uid
    }

    /// Whether the mode bits of `attr` grant the caller `want` (READ, WRITE, SEARCH bits).
    pub fn may(&self, attr: &Attr, want: u32) -> bool {
        if self.is_root() {
            return want & SEARCH == 0 || attr.kind == Kind::Dir || attr.perm & 0o111 != 0;
        }
        let perm = attr.perm as u32;
        let bits = if self.uid == attr.uid {
            perm >> 6
        } else if self.in_group(attr.gid) {
            perm >> 3
        } else {
            perm
        } & 0o7;
        want & !bits == 0
    }

    /// EACCES unless the mode bits grant `want`.
    pub fn check(&self, attr: &Attr, want: u32, what: impl FnOnce() -> String) -> Result<()> {
        if self.may(attr, want) {
            Ok(())
        } else {
            Err(Error::PermissionDenied(what()))
        }
    }

    /// May the caller remove or rename `victim` out of `dir`: write and search permission on
    /// the directory, and in a sticky directory owning the victim or the directory.
    pub fn may_delete(&self, dir: &Attr, victim: &Attr, what: impl Fn() -> String) -> Result<()> {
        self.check(dir, WRITE | SEARCH, &what)?;
        if dir.perm & S_ISVTX != 0 && !self.owns(victim) && !self.owns(dir) {
            return Err(Error::refused(
                what(),
                "the directory is sticky and the caller owns neither it nor the entry",
            ));
        }
        Ok(())
    }

    /// EPERM unless the caller owns `attr` (chmod, explicit times).
    pub fn check_owner(&self, attr: &Attr, what: impl FnOnce() -> String) -> Result<()> {
        if self.owns(attr) {
            Ok(())
        } else {
            Err(Error::refused(what(), "only its owner may do this"))
        }
    }

    /// The mode chmod(2) records: a caller outside the file's group cannot set its set-group-ID
    /// bit (it is dropped, without an error).
    pub fn chmod_mode(&self, attr: &Attr, mode: u32) -> u32 {
        if !self.is_root() && attr.kind != Kind::Dir && !self.in_group(attr.gid) {
            mode & !(S_ISGID as u32)
        } else {
            mode
        }
    }
}

/// The mode left after a write or truncate by a process that may not keep set-ID bits: the
/// set-user-ID bit goes, and the set-group-ID bit of a group-executable file (without group
/// execute it marks mandatory locking, which stays).
pub fn without_setid(mode: u32) -> u32 {
    let mut mode = mode & !(S_ISUID as u32);
    if mode & 0o010 != 0 {
        mode &= !(S_ISGID as u32);
    }
    mode
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn attr(kind: Kind, perm: u16, uid: u32, gid: u32) -> Attr {
        Attr {
            ino: 5,
            kind,
            size: 0,
            perm,
            nlink: 1,
            mtime: SystemTime::UNIX_EPOCH,
            atime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            uid,
            gid,
        }
    }

    #[test]
    fn owner_group_and_others_get_their_own_bits() {
        let f = attr(Kind::File, 0o640, 1000, 100);
        let owner = Caller::new(1000, 1000, 0);
        assert!(owner.may(&f, READ | WRITE));
        let member = Caller::new(2000, 100, 0);
        assert!(member.may(&f, READ) && !member.may(&f, WRITE));
        let other = Caller::new(3000, 3000, u32::MAX);
        assert!(!other.may(&f, READ));
        // Root reads and writes anything, but executes only what someone may execute.
        assert!(Caller::root().may(&f, READ | WRITE) && !Caller::root().may(&f, SEARCH));
        assert!(Caller::root().may(&attr(Kind::Dir, 0, 1, 1), SEARCH));
    }

    #[test]
    fn sticky_directories_keep_others_entries() {
        let dir = attr(Kind::Dir, 0o1777, 0, 0);
        let mine = attr(Kind::File, 0o644, 1000, 1000);
        let theirs = attr(Kind::File, 0o666, 2000, 2000);
        let me = Caller::new(1000, 1000, u32::MAX);
        assert!(me.may_delete(&dir, &mine, String::new).is_ok());
        let e = me.may_delete(&dir, &theirs, String::new).unwrap_err();
        assert_eq!(e.errno(), libc::EPERM);
        let closed = attr(Kind::Dir, 0o755, 0, 0);
        let e = me.may_delete(&closed, &mine, String::new).unwrap_err();
        assert_eq!(e.errno(), libc::EACCES);
    }

    #[test]
    fn setid_bits_go_as_the_kernel_drops_them() {
        assert_eq!(without_setid(0o6755), 0o755);
        assert_eq!(
            without_setid(0o6745),
            0o2745,
            "no group execute: sgid stays"
        );
        assert_eq!(without_setid(0o644), 0o644);
    }
}
