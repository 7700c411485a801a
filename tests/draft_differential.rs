//! Differential property test of drafts through the mount (SPEC §3): proptest generates a
//! sequence of file and directory operations over a small pool of names, so that names collide,
//! and each operation is applied both to a plain directory and to a draft through a real FUSE
//! mount, from this process (libc calls, no subprocesses). Every operation must have the same
//! outcome on both sides: success (with the same result, e.g. bytes written) or the same errno.
//!
//! Both sides start from the same tree: the plain directory is written first and logged with
//! the CLI as the artifact's v0, then `mkdir drafts/NAME` starts the draft. The trees are
//! compared at the start, at `Check` ops, around each mid-sequence commit and at the end:
//! names, kinds, file contents and sizes, symlink targets, permission bits, and modification
//! times of files and symlinks wherever an operation set them explicitly (any mtime before the
//! case started must be equal on both sides; two times the system set to "now" may differ).
//! Directory sizes and mtimes are the filesystem's own and are not compared.
//!
//! Around every step that changes something, the times are compared too (the case waits for
//! the clock that stamps local files to move first): for each path on both sides before and
//! after, whether its mtime and whether its ctime advanced must agree (directories included,
//! so a new, removed or renamed entry must touch its parent); link counts of files and
//! directories must agree; no ctime may be older than its mtime (every explicit time is in the
//! past); and after an explicit `utimensat` the access time is the one set. Descriptors that
//! outlive their name (`WriteWhileMoved`, `ReadRenamedOver`) are `fstat`-ed and read to EOF.
//!
//! A commit (writing `commit` to `.commit`, mid-sequence or at the end) must remove the draft
//! directory and leave `NAME/latest` naming the expected version: a new one exactly when the
//! digest (kinds, contents, executable bits, link targets) changed, and then showing the plain
//! directory's tree with read-only modes that keep only the executable bit. A commit that
//! changes only mtimes or other permission bits makes no version (docs/SEMANTICS.md): latest
//! must then still show the tree it was made from, and the plain directory takes back its modes
//! and mtimes. A new draft from latest must show the plain directory again, permission bits
//! included, and the sequence carries on in it.
//!
//! One mount serves the whole test; each case (and each shrinking run) uses a fresh artifact.
//! On failure the message lists the resolved operations of the minimal case with both
//! outcomes, the differing paths, and the tail of STORE/mount.log. `PROPTEST_CASES=N` runs more
//! cases (default 64), `DRAFT_DIFF_MAX_OPS=N` longer sequences (default at most 40 steps);
//! `--nocapture` shows how often each kind of step met each outcome.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::mount::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---------------------------------------------------------------------------------------------
// Pools the operations index into (modulo their length).

/// Paths, at most three deep, that collide often: `a` may be a file or a directory holding
/// `a/b`, `d` an ancestor of `d/e/f` (renaming `d` to `d/e/a` is EINVAL), and so on. `d-1` and
/// `d/e-f` sort between a directory's name and its children in byte order (`-` < `/`), where
/// prefix scans go wrong.
const POOL: &[&str] = &[
    "a", "b", "c", "d", "a/b", "b/a", "d/e", "d/a", "c/d", "d/e/f", "d/e/a", "a/b/c", "d-1",
    "d-1/a", "d/e-f",
];
/// Symlink targets, relative to the link's directory, never leaving the tree (`zz` dangles).
const TARGETS: &[&str] = &["a", "b", "d", "d/e", "e/f", "zz"];
const FILE_MODES: &[u32] = &[0o644, 0o755, 0o600, 0o700, 0o444, 0o640, 0o711, 0o000];
const DIR_MODES: &[u32] = &[0o755, 0o700, 0o750, 0o777];
const CHMOD_MODES: &[u32] = &[
    0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o640, 0o711, 0o000, 0o777,
];
/// Explicit mtimes are between 2001 and 2023, far from "now".
const PAST_SECS: i64 = 1_000_000_000;
/// The process umask for the whole test, so both sides see the same modes.
const UMASK: libc::mode_t = 0o022;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64)
}

/// The most steps in one case (`DRAFT_DIFF_MAX_OPS`, default 40).
fn max_ops() -> usize {
    std::env::var("DRAFT_DIFF_MAX_OPS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(40)
}

// ---------------------------------------------------------------------------------------------
// Operations, as generated (indices) and as resolved against the plain directory (paths).

/// Bytes to write: `len` bytes of a pattern that starts at `seed`.
#[derive(Clone, Copy, Debug)]
struct Data {
    seed: u8,
    len: usize,
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        (0..self.len)
            .map(|i| self.seed.wrapping_add((i % 251) as u8))
            .collect()
    }
}

impl fmt::Display for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes from {}", self.len, self.seed)
    }
}

/// A path: one that exists in the plain directory (index modulo their count; a pool path if
/// there is none), or one of the pool, which may or may not exist.
#[derive(Clone, Debug)]
enum Pick {
    Existing(usize),
    /// An existing file or symlink (any existing path if there is none).
    File(usize),
    /// An existing directory (any existing path if there is none).
    Dir(usize),
    Pool(usize),
}

#[derive(Clone, Debug)]
enum Op {
    /// open(O_WRONLY | O_CREAT [| O_EXCL], mode), close.
    Create {
        path: Pick,
        excl: bool,
        mode: usize,
    },
    /// open(O_WRONLY), pwrite at `offset` (past the end leaves a hole), close.
    Write {
        path: Pick,
        offset: u64,
        data: Data,
    },
    /// open(O_WRONLY | O_APPEND [| O_CREAT]), write, close.
    Append {
        path: Pick,
        data: Data,
        create: bool,
    },
    /// truncate(2), or open + ftruncate + close.
    Truncate {
        path: Pick,
        size: u64,
        via_fd: bool,
    },
    /// open(O_WRONLY | O_TRUNC [| O_CREAT]), write (unless empty), close.
    Overwrite {
        path: Pick,
        data: Data,
        create: bool,
    },
    /// renameat2, with or without RENAME_NOREPLACE.
    Rename {
        from: Pick,
        to: Pick,
        noreplace: bool,
    },
    Unlink {
        path: Pick,
    },
    Mkdir {
        path: Pick,
        mode: usize,
    },
    Rmdir {
        path: Pick,
    },
    Symlink {
        target: usize,
        path: Pick,
    },
    Chmod {
        path: Pick,
        mode: usize,
    },
    /// utimensat with explicit times (seconds after PAST_SECS, nanoseconds) or UTIME_NOW,
    /// following symlinks or not.
    Utime {
        path: Pick,
        time: Option<(u32, u32)>,
        nofollow: bool,
    },
    /// open(O_RDWR), then unlink it, rename it, or rename its parent directory, then pwrite
    /// through the descriptor, fstat it and read it to EOF, close: the bytes land in the moved
    /// file, or in the removed one that only the descriptor still reaches.
    WriteWhileMoved {
        path: Pick,
        moved: Moved,
        offset: u64,
        data: Data,
    },
    /// open(O_RDONLY), rename another path over it, then fstat the descriptor and read it to
    /// EOF: it still reaches the file it opened, whole.
    ReadRenamedOver {
        path: Pick,
        over: Pick,
    },
    /// link(2), which does not follow a symlink.
    Link {
        from: Pick,
        to: Pick,
    },
    /// open(O_RDWR), pwrite, then fstat and pread the whole file through the same descriptor:
    /// the size and bytes read must be the same on both sides.
    WriteRead {
        path: Pick,
        offset: u64,
        data: Data,
    },
    /// Compare the trees now.
    Check,
    /// Commit the draft, compare latest, start a new draft from latest.
    Commit,
}

#[derive(Clone, Debug)]
enum Moved {
    Unlink,
    Rename(Pick),
    /// The parent directory (the file itself at the top level) is renamed to this.
    RenameParent(Pick),
}

#[derive(Clone, Debug)]
enum Step {
    Create {
        path: String,
        excl: bool,
        mode: u32,
    },
    Write {
        path: String,
        offset: u64,
        data: Data,
    },
    Append {
        path: String,
        data: Data,
        create: bool,
    },
    Truncate {
        path: String,
        size: u64,
        via_fd: bool,
    },
    Overwrite {
        path: String,
        data: Data,
        create: bool,
    },
    Rename {
        from: String,
        to: String,
        noreplace: bool,
    },
    Unlink {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rmdir {
        path: String,
    },
    Symlink {
        target: &'static str,
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Utime {
        path: String,
        mtime_ns: Option<i64>,
        nofollow: bool,
    },
    WriteWhileMoved {
        path: String,
        /// What is renamed to `to`; with no `to`, `path` is unlinked.
        from: String,
        to: Option<String>,
        offset: u64,
        data: Data,
    },
    WriteRead {
        path: String,
        offset: u64,
        data: Data,
    },
    ReadRenamedOver {
        path: String,
        over: String,
    },
    Link {
        from: String,
        to: String,
    },
    Check,
    Commit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Create { path, excl, mode } => write!(
                f,
                "create {path:?} O_WRONLY|O_CREAT{} mode {mode:o}",
                if *excl { "|O_EXCL" } else { "" }
            ),
            Step::Write { path, offset, data } => {
                write!(f, "pwrite {path:?} at {offset}: {data}")
            }
            Step::Append { path, data, create } => write!(
                f,
                "append {path:?} (O_APPEND{}): {data}",
                if *create { "|O_CREAT" } else { "" }
            ),
            Step::Truncate { path, size, via_fd } => write!(
                f,
                "{} {path:?} to {size}",
                if *via_fd { "ftruncate" } else { "truncate" }
            ),
            Step::Overwrite { path, data, create } => write!(
                f,
                "overwrite {path:?} (O_TRUNC{}): {data}",
                if *create { "|O_CREAT" } else { "" }
            ),
            Step::Rename {
                from,
                to,
                noreplace,
            } => write!(
                f,
                "rename {from:?} -> {to:?}{}",
                if *noreplace { " RENAME_NOREPLACE" } else { "" }
            ),
            Step::Unlink { path } => write!(f, "unlink {path:?}"),
            Step::Mkdir { path, mode } => write!(f, "mkdir {path:?} mode {mode:o}"),
            Step::Rmdir { path } => write!(f, "rmdir {path:?}"),
            Step::Symlink { target, path } => write!(f, "symlink {path:?} -> {target:?}"),
            Step::Chmod { path, mode } => write!(f, "chmod {path:?} {mode:o}"),
            Step::Utime {
                path,
                mtime_ns,
                nofollow,
            } => write!(
                f,
                "utimensat {path:?} {}{}",
                match mtime_ns {
                    Some(ns) => format!("ns={ns}"),
                    None => "UTIME_NOW".into(),
                },
                if *nofollow {
                    " AT_SYMLINK_NOFOLLOW"
                } else {
                    ""
                }
            ),
            Step::WriteWhileMoved {
                path,
                from,
                to,
                offset,
                data,
            } => write!(
                f,
                "open {path:?} O_RDWR, {}, pwrite at {offset}: {data}, fstat, read to EOF, close",
                match to {
                    Some(to) => format!("rename {from:?} -> {to:?}"),
                    None => "unlink it".into(),
                }
            ),
            Step::WriteRead { path, offset, data } => write!(
                f,
                "open {path:?} O_RDWR, pwrite at {offset}: {data}, fstat, pread all, close"
            ),
            Step::ReadRenamedOver { path, over } => write!(
                f,
                "open {path:?} O_RDONLY, rename {over:?} -> {path:?}, fstat, read to EOF, close"
            ),
            Step::Link { from, to } => write!(f, "link {from:?} -> {to:?}"),
            Step::Check => write!(f, "check: compare the trees"),
            Step::Commit => write!(f, "commit, then mkdir drafts/NAME again"),
        }
    }
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        2 => (0..64usize).prop_map(Pick::Existing),
        1 => (0..POOL.len()).prop_map(Pick::Pool),
    ]
}

/// A path for an operation on files: mostly an existing file.
fn file_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        3 => (0..64usize).prop_map(Pick::File),
        1 => (0..64usize).prop_map(Pick::Existing),
        1 => (0..POOL.len()).prop_map(Pick::Pool),
    ]
}

/// A path for an operation on directories: often an existing directory.
fn dir_pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        2 => (0..64usize).prop_map(Pick::Dir),
        1 => (0..64usize).prop_map(Pick::Existing),
        1 => (0..POOL.len()).prop_map(Pick::Pool),
    ]
}

fn data(min: usize) -> impl Strategy<Value = Data> {
    let len = prop_oneof![
        6 => min..64usize,
        3 => min..5000usize,
        1 => Just(70_000usize),
    ];
    (any::<u8>(), len).prop_map(|(seed, len)| Data { seed, len })
}

fn offset() -> impl Strategy<Value = u64> {
    prop_oneof![5 => 0..16u64, 3 => 0..6000u64, 1 => Just(131_069u64)]
}

fn size() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0..64u64, 3 => 0..8000u64, 1 => Just(200_000u64)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (file_pick(), any::<bool>(), 0..FILE_MODES.len())
            .prop_map(|(path, excl, mode)| Op::Create { path, excl, mode }),
        4 => (file_pick(), offset(), data(1))
            .prop_map(|(path, offset, data)| Op::Write { path, offset, data }),
        2 => (file_pick(), data(1), any::<bool>())
            .prop_map(|(path, data, create)| Op::Append { path, data, create }),
        2 => (file_pick(), size(), any::<bool>())
            .prop_map(|(path, size, via_fd)| Op::Truncate { path, size, via_fd }),
        2 => (file_pick(), data(0), any::<bool>())
            .prop_map(|(path, data, create)| Op::Overwrite { path, data, create }),
        2 => (file_pick(), pick(), prop::bool::weighted(0.25))
            .prop_map(|(from, to, noreplace)| Op::Rename { from, to, noreplace }),
        3 => (dir_pick(), pick(), prop::bool::weighted(0.25))
            .prop_map(|(from, to, noreplace)| Op::Rename { from, to, noreplace }),
        2 => file_pick().prop_map(|path| Op::Unlink { path }),
        3 => (pick(), 0..DIR_MODES.len()).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        2 => dir_pick().prop_map(|path| Op::Rmdir { path }),
        2 => (0..TARGETS.len(), pick()).prop_map(|(target, path)| Op::Symlink { target, path }),
        2 => (pick(), 0..CHMOD_MODES.len()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        2 => (
            pick(),
            prop::option::weighted(0.8, (0..700_000_000u32, 0..1_000_000_000u32)),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(path, time, nofollow)| Op::Utime { path, time, nofollow }),
        2 => (
            file_pick(),
            prop_oneof![
                Just(Moved::Unlink),
                pick().prop_map(Moved::Rename),
                pick().prop_map(Moved::RenameParent),
            ],
            offset(),
            data(1),
        )
            .prop_map(|(path, moved, offset, data)| Op::WriteWhileMoved {
                path,
                moved,
                offset,
                data
            }),
        2 => (file_pick(), offset(), data(1))
            .prop_map(|(path, offset, data)| Op::WriteRead { path, offset, data }),
        2 => (file_pick(), file_pick()).prop_map(|(path, over)| Op::ReadRenamedOver { path, over }),
        2 => (file_pick(), pick()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => Just(Op::Check),
        1 => Just(Op::Commit),
    ]
}

/// One entry of the base tree: a pool path and what it is.
#[derive(Clone, Debug)]
enum BaseKind {
    File { data: Data, mode: usize, mtime: u32 },
    Dir { mode: usize },
    Link { target: usize },
}

fn base() -> impl Strategy<Value = Vec<(usize, BaseKind)>> {
    let kind = prop_oneof![
        5 => (data(0), 0..FILE_MODES.len(), 0..700_000_000u32)
            .prop_map(|(data, mode, mtime)| BaseKind::File { data, mode, mtime }),
        2 => (0..DIR_MODES.len()).prop_map(|mode| BaseKind::Dir { mode }),
        1 => (0..TARGETS.len()).prop_map(|target| BaseKind::Link { target }),
    ];
    prop::collection::vec((0..POOL.len(), kind), 1..8)
}

// ---------------------------------------------------------------------------------------------
// Applying a step to one side.

/// Success with a result (bytes written, else 0), or the call that failed and its errno.
type Outcome = Result<i64, (&'static str, i32)>;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn sys(call: &'static str, r: i64) -> Result<i64, (&'static str, i32)> {
    if r < 0 { Err((call, errno())) } else { Ok(r) }
}

/// Opens, runs `f` on the descriptor, closes (a failing close is an outcome too).
fn with_fd(p: &Path, flags: i32, mode: u32, f: impl FnOnce(i32) -> Outcome) -> Outcome {
    let c = cstr(p);
    // SAFETY: `c` is NUL-terminated; the mode argument is what O_CREAT reads.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) };
    let fd = sys("open", fd as i64)? as i32;
    let r = f(fd);
    // SAFETY: fd was opened above and is closed once.
    let closed = sys("close", unsafe { libc::close(fd) } as i64);
    let v = r?;
    closed?;
    Ok(v)
}

fn write_all_at(fd: i32, data: &Data, offset: Option<u64>) -> Outcome {
    let b = data.bytes();
    // SAFETY: the buffer is valid for its length.
    let n = unsafe {
        match offset {
            Some(o) => libc::pwrite(fd, b.as_ptr().cast(), b.len(), o as libc::off_t),
            None => libc::write(fd, b.as_ptr().cast(), b.len()),
        }
    };
    sys(if offset.is_some() { "pwrite" } else { "write" }, n as i64)
}

/// fstat(2) of a descriptor and everything read through it from offset 0 to EOF: the result
/// is the first 60 bits of the SHA-256 of the size, the link count and the bytes.
fn fstat_and_read(fd: i32) -> Outcome {
    // SAFETY: fstat writes into the zeroed struct; pread into a buffer of the length given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    sys("fstat", unsafe { libc::fstat(fd, &mut st) } as i64)?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sys("pread", unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                all.len() as libc::off_t,
            )
        } as i64)?;
        if n == 0 {
            break;
        }
        all.extend_from_slice(&buf[..n as usize]);
    }
    if all.len() as i64 != st.st_size {
        return Err(("pread (to EOF: a count other than fstat's size)", 0));
    }
    let mut seen = format!("{} {} ", st.st_size, st.st_nlink).into_bytes();
    seen.extend_from_slice(&all);
    Ok(i64::from_str_radix(&sha256_hex(&seen)[..15], 16).unwrap())
}

fn apply(root: &Path, step: &Step) -> Outcome {
    let at = |rel: &str| root.join(rel);
    use libc::{O_APPEND, O_CREAT, O_EXCL, O_TRUNC, O_WRONLY};
    let flag = |on: bool, f: i32| if on { f } else { 0 };
    // SAFETY (every unsafe block below): the paths are NUL-terminated strings that outlive the
    // call, and the pointers passed point to live values of the right type.
    match step {
        Step::Create { path, excl, mode } => with_fd(
            &at(path),
            O_WRONLY | O_CREAT | flag(*excl, O_EXCL),
            *mode,
            |_| Ok(0),
        ),
        Step::Write { path, offset, data } => with_fd(&at(path), O_WRONLY, 0, |fd| {
            write_all_at(fd, data, Some(*offset))
        }),
        Step::Append { path, data, create } => with_fd(
            &at(path),
            O_WRONLY | O_APPEND | flag(*create, O_CREAT),
            0o644,
            |fd| write_all_at(fd, data, None),
        ),
        Step::Truncate {
            path,
            size,
            via_fd: false,
        } => {
            let c = cstr(&at(path));
            sys(
                "truncate",
                unsafe { libc::truncate(c.as_ptr(), *size as libc::off_t) } as i64,
            )
        }
        Step::Truncate {
            path,
            size,
            via_fd: true,
        } => with_fd(&at(path), O_WRONLY, 0, |fd| {
            sys(
                "ftruncate",
                unsafe { libc::ftruncate(fd, *size as libc::off_t) } as i64,
            )
        }),
        Step::Overwrite { path, data, create } => with_fd(
            &at(path),
            O_WRONLY | O_TRUNC | flag(*create, O_CREAT),
            0o644,
            |fd| {
                if data.len == 0 {
                    Ok(0)
                } else {
                    write_all_at(fd, data, None)
                }
            },
        ),
        Step::Rename {
            from,
            to,
            noreplace,
        } => {
            let (f, t) = (cstr(&at(from)), cstr(&at(to)));
            let flags = if *noreplace {
                libc::RENAME_NOREPLACE
            } else {
                0
            };
            sys("rename", unsafe {
                libc::renameat2(
                    libc::AT_FDCWD,
                    f.as_ptr(),
                    libc::AT_FDCWD,
                    t.as_ptr(),
                    flags,
                )
            } as i64)
        }
        Step::Unlink { path } => {
            let c = cstr(&at(path));
            sys("unlink", unsafe { libc::unlink(c.as_ptr()) } as i64)
        }
        Step::Mkdir { path, mode } => {
            let c = cstr(&at(path));
            sys("mkdir", unsafe { libc::mkdir(c.as_ptr(), *mode) } as i64)
        }
        Step::Rmdir { path } => {
            let c = cstr(&at(path));
            sys("rmdir", unsafe { libc::rmdir(c.as_ptr()) } as i64)
        }
        Step::Symlink { target, path } => {
            let (t, c) = (CString::new(*target).unwrap(), cstr(&at(path)));
            sys("symlink", unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) }
                as i64)
        }
        Step::Chmod { path, mode } => {
            let c = cstr(&at(path));
            sys("chmod", unsafe { libc::chmod(c.as_ptr(), *mode) } as i64)
        }
        Step::Utime {
            path,
            mtime_ns,
            nofollow,
        } => {
            let c = cstr(&at(path));
            let t = match mtime_ns {
                Some(ns) => libc::timespec {
                    tv_sec: ns / 1_000_000_000,
                    tv_nsec: ns % 1_000_000_000,
                },
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
            };
            let times = [t, t];
            let flags = if *nofollow {
                libc::AT_SYMLINK_NOFOLLOW
            } else {
                0
            };
            sys("utimensat", unsafe {
                libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags)
            } as i64)
        }
        Step::WriteWhileMoved {
            path,
            from,
            to,
            offset,
            data,
        } => with_fd(&at(path), libc::O_RDWR, 0, |fd| {
            // Every part runs whatever an earlier one did; the first failure is the outcome.
            let moved = match to {
                Some(to) => apply(
                    root,
                    &Step::Rename {
                        from: from.clone(),
                        to: to.clone(),
                        noreplace: false,
                    },
                ),
                None => apply(root, &Step::Unlink { path: path.clone() }),
            };
            let written = write_all_at(fd, data, Some(*offset));
            let read = fstat_and_read(fd);
            moved.and(written).and(read)
        }),
        Step::ReadRenamedOver { path, over } => with_fd(&at(path), libc::O_RDONLY, 0, |fd| {
            apply(
                root,
                &Step::Rename {
                    from: over.clone(),
                    to: path.clone(),
                    noreplace: false,
                },
            )?;
            fstat_and_read(fd)
        }),
        Step::Link { from, to } => {
            let (f, t) = (cstr(&at(from)), cstr(&at(to)));
            sys("link", unsafe { libc::link(f.as_ptr(), t.as_ptr()) } as i64)
        }
        Step::WriteRead { path, offset, data } => with_fd(&at(path), libc::O_RDWR, 0, |fd| {
            write_all_at(fd, data, Some(*offset))?;
            // SAFETY: fstat writes into the zeroed struct; pread into a buffer of that size.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            sys("fstat", unsafe { libc::fstat(fd, &mut st) } as i64)?;
            let mut buf = vec![0u8; st.st_size as usize + 16];
            let n = sys(
                "pread",
                unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) } as i64,
            )?;
            buf.truncate(n as usize);
            if n != st.st_size as i64 {
                return Err(("pread (a count other than fstat's size)", 0));
            }
            // The result: the first 60 bits of the SHA-256 of what was read.
            Ok(i64::from_str_radix(&sha256_hex(&buf)[..15], 16).unwrap())
        }),
        Step::Check | Step::Commit => Ok(0),
    }
}

/// What a path of the plain directory is, for the statistics.
fn kind_of(root: &Path, rel: &str) -> &'static str {
    match fs::symlink_metadata(root.join(rel)) {
        Ok(m) if m.is_dir() => "dir",
        Ok(m) if m.is_symlink() => "symlink",
        Ok(_) => "file",
        Err(_) => "none",
    }
}

/// A step's kind and what its paths are, before it runs: `rename dir -> none`.
fn label(root: &Path, step: &Step) -> String {
    let k = |p: &String| kind_of(root, p);
    match step {
        Step::Create { path, excl, .. } => {
            format!("create{} {}", if *excl { " excl" } else { "" }, k(path))
        }
        Step::Write { path, .. } => format!("pwrite {}", k(path)),
        Step::Append { path, .. } => format!("append {}", k(path)),
        Step::Truncate { path, .. } => format!("truncate {}", k(path)),
        Step::Overwrite { path, .. } => format!("overwrite {}", k(path)),
        Step::Rename {
            from,
            to,
            noreplace,
        } => format!(
            "rename{} {} -> {}{}",
            if *noreplace { " noreplace" } else { "" },
            k(from),
            k(to),
            if to.starts_with(&format!("{from}/")) {
                " (below itself)"
            } else {
                ""
            }
        ),
        Step::Unlink { path } => format!("unlink {}", k(path)),
        Step::Mkdir { path, .. } => format!("mkdir {}", k(path)),
        Step::Rmdir { path } => format!("rmdir {}", k(path)),
        Step::Symlink { path, .. } => format!("symlink {}", k(path)),
        Step::Chmod { path, .. } => format!("chmod {}", k(path)),
        Step::Utime { path, .. } => format!("utimensat {}", k(path)),
        Step::WriteWhileMoved { path, from, to, .. } => format!(
            "write to {} while {}",
            k(path),
            match to {
                None => "unlinked".to_string(),
                Some(_) if from == path => "renamed".to_string(),
                Some(to) => format!("its parent is renamed to {}", k(to)),
            }
        ),
        Step::WriteRead { path, .. } => format!("write and read {}", k(path)),
        Step::ReadRenamedOver { path, over } => {
            format!("read {} renamed over by {}", k(path), k(over))
        }
        Step::Link { from, to } => format!("link {} -> {}", k(from), k(to)),
        Step::Check | Step::Commit => String::new(),
    }
}

fn show_kind(o: &Outcome) -> String {
    match o {
        Ok(_) => "ok".into(),
        Err((_, e)) => errno_name(*e),
    }
}

fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

fn show(o: &Outcome) -> String {
    match o {
        Ok(v) => format!("ok({v})"),
        Err((call, e)) => format!("{call}: {}", errno_name(*e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Trees and their comparison.

type Tree = BTreeMap<String, Node>;

/// The tree under `dir` (see `snapshot`), or why it could not be read.
fn try_snapshot(dir: &Path) -> Result<Tree, String> {
    catch_unwind(AssertUnwindSafe(|| snapshot(dir))).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!("reading the tree under {} failed: {msg}", dir.display())
    })
}

/// What is compared: directories without size and mtime; an mtime the system set during the
/// case (at or after `recent`) as -1, so that any two such times compare equal while an
/// explicitly set one must match exactly. `committed` turns modes into what a version shows.
fn normalize(tree: &Tree, recent: i128, committed: bool) -> Tree {
    tree.iter()
        .map(|(p, n)| {
            let mut n = n.clone();
            if n.kind == 'd' {
                n.size = 0;
                n.mtime_ns = 0;
            } else if n.mtime_ns >= recent {
                n.mtime_ns = -1;
            }
            if committed {
                n.mode = match n.kind {
                    'f' if n.mode & 0o111 != 0 => 0o555,
                    'f' => 0o444,
                    'd' => 0o555,
                    _ => n.mode,
                };
            }
            (p.clone(), n)
        })
        .collect()
}

fn fmt_node(n: &Node) -> String {
    let mtime = match n.mtime_ns {
        -1 => "now".to_string(),
        t => t.to_string(),
    };
    match n.kind {
        'd' => format!("dir mode {:o}", n.mode),
        'l' => format!("symlink -> {:?} mode {:o} mtime {mtime}", n.content, n.mode),
        _ => format!(
            "file mode {:o} size {} sha256 {} mtime {mtime}",
            n.mode,
            n.size,
            &n.content[..12]
        ),
    }
}

/// Every difference between two normalized trees, or nothing.
fn differences(left: &str, l: &Tree, right: &str, r: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (p, a) in l {
        match r.get(p) {
            None => out.push(format!("{p:?}: only in {left} ({})", fmt_node(a))),
            Some(b) if a != b => out.push(format!(
                "{p:?}: {left} has {}, {right} has {}",
                fmt_node(a),
                fmt_node(b)
            )),
            Some(_) => {}
        }
    }
    for (p, b) in r {
        if !l.contains_key(p) {
            out.push(format!("{p:?}: only in {right} ({})", fmt_node(b)));
        }
    }
    out
}

/// What a version's digest depends on: kinds, contents, executable bits, link targets.
fn digest_view(tree: &Tree) -> BTreeMap<String, (char, String, bool)> {
    tree.iter()
        .map(|(p, n)| {
            let exec = n.kind == 'f' && n.mode & 0o111 != 0;
            (p.clone(), (n.kind, n.content.clone(), exec))
        })
        .collect()
}

/// Every path under `dir` (not following symlinks), sorted.
fn paths(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Times and link counts.

/// What the times check looks at for one path ("" is the directory itself).
#[derive(Clone, Copy, Debug)]
struct Stamp {
    ino: u64,
    dir: bool,
    symlink: bool,
    nlink: u64,
    atime: i128,
    mtime: i128,
    ctime: i128,
}

fn stamps(root: &Path) -> BTreeMap<String, Stamp> {
    let mut out = BTreeMap::new();
    let mut all = paths(root);
    all.push(String::new());
    for rel in all {
        let Ok(m) = fs::symlink_metadata(root.join(&rel)) else {
            continue;
        };
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        out.insert(
            rel,
            Stamp {
                ino: m.ino(),
                dir: m.is_dir(),
                symlink: m.file_type().is_symlink(),
                nlink: m.nlink(),
                atime: ns(m.atime(), m.atime_nsec()),
                mtime: ns(m.mtime(), m.mtime_nsec()),
                ctime: ns(m.ctime(), m.ctime_nsec()),
            },
        );
    }
    out
}

/// Waits until the clock that stamps local files (the kernel's coarse clock) has moved on, so
/// that whatever the next step changes gets a later time than anything before it.
fn tick() {
    let coarse = || {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into `t`.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut t) };
        (t.tv_sec, t.tv_nsec)
    };
    let start = coarse();
    while coarse() == start {
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// How a step changed times on one side, per path naming the same file before and after.
fn changes(
    before: &BTreeMap<String, Stamp>,
    after: &BTreeMap<String, Stamp>,
) -> BTreeMap<String, (bool, bool)> {
    after
        .iter()
        .filter_map(|(p, a)| {
            // A path that names another file now (renamed over) has no times to compare.
            let b = before.get(p).filter(|b| b.ino == a.ino)?;
            Some((p.clone(), (a.mtime > b.mtime, a.ctime > b.ctime)))
        })
        .collect()
}

/// Every disagreement between the plain directory and the draft about what a step did to
/// times and link counts.
fn time_differences(
    step: &Step,
    plain: (&BTreeMap<String, Stamp>, &BTreeMap<String, Stamp>),
    draft: (&BTreeMap<String, Stamp>, &BTreeMap<String, Stamp>),
) -> Vec<String> {
    let mut out = Vec::new();
    let (p_changes, d_changes) = (changes(plain.0, plain.1), changes(draft.0, draft.1));
    let yes = |b: bool| if b { "advanced" } else { "stayed" };
    let times = |m: &BTreeMap<String, Stamp>, path: &str| {
        m.get(path)
            .map_or("-".to_string(), |s| format!("m {} c {}", s.mtime, s.ctime))
    };
    for (path, pc) in &p_changes {
        match d_changes.get(path) {
            Some(dc) if dc != pc => out.push(format!(
                "{path:?}: plain mtime {} ctime {} ({} -> {}), draft mtime {} ctime {} ({} -> {})",
                yes(pc.0),
                yes(pc.1),
                times(plain.0, path),
                times(plain.1, path),
                yes(dc.0),
                yes(dc.1),
                times(draft.0, path),
                times(draft.1, path),
            )),
            _ => {}
        }
    }
    for (path, a) in plain.1 {
        let Some(b) = draft.1.get(path) else { continue };
        if a.nlink != b.nlink {
            out.push(format!(
                "{path:?}: nlink plain {}, draft {}",
                a.nlink, b.nlink
            ));
        }
    }
    for (side, stamps) in [("plain", plain.1), ("draft", draft.1)] {
        for (path, st) in stamps {
            if st.ctime < st.mtime {
                out.push(format!("{path:?} in the {side}: ctime is older than mtime"));
            }
        }
    }
    if let Step::Utime {
        path,
        mtime_ns: Some(ns),
        nofollow,
    } = step
    {
        for (side, stamps) in [("plain", plain.1), ("draft", draft.1)] {
            // (Following a symlink sets its target's times, not the link's. A listing of the
            // directory, as taking the stamps makes, updates a local directory's atime; a
            // draft's directories keep theirs, as docs/SEMANTICS.md says.)
            if let Some(st) = stamps.get(path)
                && (*nofollow || !st.symlink)
                && !st.dir
                && st.atime != *ns as i128
            {
                out.push(format!(
                    "{path:?} in the {side}: atime {} after setting {ns}",
                    st.atime
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// One case.

struct Case<'a> {
    m: &'a Mounted<'a>,
    /// How often each kind of step had each outcome, over the whole test.
    stats: &'a RefCell<BTreeMap<String, usize>>,
    name: String,
    plain: PathBuf,
    draft: PathBuf,
    /// The resolved steps so far, with their outcomes.
    log: Vec<String>,
    /// Nanoseconds since the epoch a little before the case started.
    recent: i128,
    /// The number of the latest version, and the plain directory as it was when that version
    /// was made (or logged).
    latest: u64,
    latest_plain: Tree,
}

impl Case<'_> {
    fn fail(&self, what: String) -> String {
        format!(
            "{what}\n\nartifact {}; steps (plain directory outcome, draft outcome):\n{}",
            self.name,
            self.log.join("\n")
        )
    }

    fn resolve(&self, p: &Pick) -> String {
        match p {
            Pick::Existing(i) => {
                let all = paths(&self.plain);
                if all.is_empty() {
                    POOL[i % POOL.len()].to_string()
                } else {
                    all[i % all.len()].clone()
                }
            }
            Pick::File(i) | Pick::Dir(i) => {
                let want_dir = matches!(p, Pick::Dir(_));
                let all: Vec<String> = paths(&self.plain)
                    .into_iter()
                    .filter(|p| (kind_of(&self.plain, p) == "dir") == want_dir)
                    .collect();
                if all.is_empty() {
                    self.resolve(&Pick::Existing(*i))
                } else {
                    all[i % all.len()].clone()
                }
            }
            Pick::Pool(i) => POOL[i % POOL.len()].to_string(),
        }
    }

    fn step(&self, op: &Op) -> Step {
        match op {
            Op::Create { path, excl, mode } => Step::Create {
                path: self.resolve(path),
                excl: *excl,
                mode: FILE_MODES[mode % FILE_MODES.len()],
            },
            Op::Write { path, offset, data } => Step::Write {
                path: self.resolve(path),
                offset: *offset,
                data: *data,
            },
            Op::Append { path, data, create } => Step::Append {
                path: self.resolve(path),
                data: *data,
                create: *create,
            },
            Op::Truncate { path, size, via_fd } => Step::Truncate {
                path: self.resolve(path),
                size: *size,
                via_fd: *via_fd,
            },
            Op::Overwrite { path, data, create } => Step::Overwrite {
                path: self.resolve(path),
                data: *data,
                create: *create,
            },
            Op::Rename {
                from,
                to,
                noreplace,
            } => Step::Rename {
                from: self.resolve(from),
                to: self.resolve(to),
                noreplace: *noreplace,
            },
            Op::Unlink { path } => Step::Unlink {
                path: self.resolve(path),
            },
            Op::Mkdir { path, mode } => Step::Mkdir {
                path: self.resolve(path),
                mode: DIR_MODES[mode % DIR_MODES.len()],
            },
            Op::Rmdir { path } => Step::Rmdir {
                path: self.resolve(path),
            },
            Op::Symlink { target, path } => Step::Symlink {
                target: TARGETS[target % TARGETS.len()],
                path: self.resolve(path),
            },
            Op::Chmod { path, mode } => Step::Chmod {
                path: self.resolve(path),
                mode: CHMOD_MODES[mode % CHMOD_MODES.len()],
            },
            Op::Utime {
                path,
                time,
                nofollow,
            } => Step::Utime {
                path: self.resolve(path),
                mtime_ns: time.map(|(s, ns)| (PAST_SECS + s as i64) * 1_000_000_000 + ns as i64),
                nofollow: *nofollow,
            },
            Op::WriteWhileMoved {
                path,
                moved,
                offset,
                data,
            } => {
                let path = self.resolve(path);
                let (from, to) = match moved {
                    Moved::Unlink => (path.clone(), None),
                    Moved::Rename(to) => (path.clone(), Some(self.resolve(to))),
                    Moved::RenameParent(to) => (
                        match path.rsplit_once('/') {
                            Some((parent, _)) => parent.to_string(),
                            None => path.clone(),
                        },
                        Some(self.resolve(to)),
                    ),
                };
                Step::WriteWhileMoved {
                    path,
                    from,
                    to,
                    offset: *offset,
                    data: *data,
                }
            }
            Op::WriteRead { path, offset, data } => Step::WriteRead {
                path: self.resolve(path),
                offset: *offset,
                data: *data,
            },
            Op::ReadRenamedOver { path, over } => Step::ReadRenamedOver {
                path: self.resolve(path),
                over: self.resolve(over),
            },
            // A link to a symlink is a copy in a draft, by design (docs/SEMANTICS.md); the
            // steps link anything else, and tests/draft_posix.rs covers symlinks.
            Op::Link { from, to } => Step::Link {
                from: {
                    let from = self.resolve(from);
                    if kind_of(&self.plain, &from) == "symlink" {
                        // (With no file at all, a name that does not exist: ENOENT.)
                        paths(&self.plain)
                            .into_iter()
                            .find(|p| kind_of(&self.plain, p) == "file")
                            .unwrap_or_else(|| "no-such-file".to_string())
                    } else {
                        from
                    }
                },
                to: self.resolve(to),
            },
            Op::Check => Step::Check,
            Op::Commit => Step::Commit,
        }
    }

    /// The draft shows exactly the plain directory.
    fn compare_draft(&self, when: &str) -> Result<(), String> {
        let plain = normalize(&try_snapshot(&self.plain)?, self.recent, false);
        let draft = normalize(&try_snapshot(&self.draft)?, self.recent, false);
        let diffs = differences("plain", &plain, "draft", &draft);
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{when}: the draft differs from the plain directory:\n  {}",
                diffs.join("\n  ")
            ))
        }
    }

    /// Commits the draft; `NAME/latest` must be the expected version and show the plain tree.
    fn commit(&mut self, when: &str) -> Result<(), String> {
        let r = with_fd(
            &self.draft.join(".commit"),
            libc::O_WRONLY | libc::O_TRUNC,
            0,
            |fd| {
                let b = b"commit";
                // SAFETY: the buffer is valid for its length.
                sys(
                    "write",
                    unsafe { libc::write(fd, b.as_ptr().cast(), b.len()) } as i64,
                )
            },
        );
        if let Err((call, e)) = r {
            return Err(format!(
                "{when}: committing by writing `commit` to drafts/{}/.commit failed at {call} with {}",
                self.name,
                errno_name(e)
            ));
        }
        if let Ok(meta) = fs::symlink_metadata(&self.draft) {
            return Err(format!(
                "{when}: drafts/{} is still there after the commit (mode {:o})",
                self.name,
                meta.mode()
            ));
        }
        // A version records each name of a hard-linked file as a file of its own
        // (docs/SEMANTICS.md), and the next draft shows them so: so must the plain directory.
        separate_hard_links(&self.plain);
        let plain = try_snapshot(&self.plain)?;
        // A tree with the digest of the draft's base (latest) makes no new version: changes of
        // mtimes and of permission bits other than the executable bit are then not recorded
        // (docs/SEMANTICS.md, "Versions and aliases"), and latest keeps its own.
        let unchanged = digest_view(&plain) == digest_view(&self.latest_plain);
        let expected = self.latest + u64::from(!unchanged);
        let link = self.m.path(&format!("{}/latest", self.name));
        match fs::read_link(&link) {
            Ok(t) if t == Path::new(&format!("v{expected}")) => {}
            other => {
                return Err(format!(
                    "{when}: {}/latest should name v{expected} ({}), readlink gives {other:?}",
                    self.name,
                    if unchanged {
                        "the tree has the digest of the base"
                    } else {
                        "the tree changed"
                    }
                ));
            }
        }
        if !unchanged {
            self.latest = expected;
            self.latest_plain = plain;
        }
        let want = normalize(&self.latest_plain, self.recent, true);
        let got = normalize(
            &try_snapshot(&self.m.path(&format!("{}/latest/", self.name)))?,
            self.recent,
            false,
        );
        let diffs = differences("plain (as committed)", &want, "latest", &got);
        if !diffs.is_empty() {
            return Err(format!(
                "{when}: {}/latest (v{expected}) differs from the plain directory as committed:\n  {}",
                self.name,
                diffs.join("\n  ")
            ));
        }
        if unchanged {
            // The next draft starts from latest: the plain directory takes its modes and mtimes.
            for (rel, n) in &self.latest_plain {
                let p = self.plain.join(rel);
                if n.kind != 'l' {
                    set_mode(&p, n.mode);
                }
                if n.kind != 'd' {
                    set_times(&p, n.mtime_ns as i64);
                }
            }
        }
        Ok(())
    }

    fn start_draft(&self, when: &str) -> Result<(), String> {
        fs::create_dir(&self.draft).map_err(|e| {
            format!(
                "{when}: mkdir drafts/{} failed: {e} ({})",
                self.name,
                errno_name(e.raw_os_error().unwrap_or(0))
            )
        })?;
        self.compare_draft(&format!("{when}, in the new draft"))
    }

    fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        self.start_draft("at the start")?;
        for (i, op) in ops.iter().enumerate() {
            let step = self.step(op);
            let when = format!("after step {i}");
            match step {
                Step::Check => {
                    self.log.push(format!("{i:3}. {step}"));
                    self.compare_draft(&when)?;
                }
                Step::Commit => {
                    self.log.push(format!("{i:3}. {step}"));
                    self.compare_draft(&format!("{when}, before the commit"))?;
                    self.commit(&when)?;
                    self.start_draft(&when)?;
                }
                _ => {
                    let label = label(&self.plain, &step);
                    let before = (stamps(&self.plain), stamps(&self.draft));
                    tick();
                    let plain = apply(&self.plain, &step);
                    let draft = apply(&self.draft, &step);
                    let after = (stamps(&self.plain), stamps(&self.draft));
                    let same = plain == draft;
                    *self
                        .stats
                        .borrow_mut()
                        .entry(format!("{label}: {}", show_kind(&plain)))
                        .or_default() += 1;
                    self.log.push(format!(
                        "{i:3}. {step}: {}{}",
                        show(&plain),
                        if same {
                            String::new()
                        } else {
                            format!(", draft {}   <-- differs", show(&draft))
                        }
                    ));
                    if !same {
                        return Err(format!(
                            "step {i} ({step}) had different outcomes: plain directory {}, \
                             draft {}",
                            show(&plain),
                            show(&draft)
                        ));
                    }
                    let wrong =
                        time_differences(&step, (&before.0, &after.0), (&before.1, &after.1));
                    if !wrong.is_empty() {
                        return Err(format!(
                            "step {i} ({step}) changed times or links differently:\n  {}",
                            wrong.join("\n  ")
                        ));
                    }
                }
            }
        }
        self.compare_draft("at the end")?;
        self.commit("at the final commit")
    }
}

/// Replaces every name of a file with several by a copy of its own, with the same content,
/// mode and mtime.
fn separate_hard_links(dir: &Path) {
    for rel in paths(dir) {
        let p = dir.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        if m.is_file() && m.nlink() > 1 {
            let data = fs::read(&p).unwrap();
            fs::remove_file(&p).unwrap();
            fs::write(&p, data).unwrap();
            set_mode(&p, m.mode() & 0o7777);
            set_times(&p, m.mtime() * 1_000_000_000 + m.mtime_nsec());
        }
    }
}

/// Writes the base tree into `dir`; entries that collide with earlier ones are left out. There
/// is always at least one file.
fn write_base(dir: &Path, base: &[(usize, BaseKind)]) {
    fs::create_dir(dir).unwrap();
    let mut dir_modes = Vec::new();
    let mut any_file = false;
    'entries: for (i, kind) in base {
        let rel = POOL[*i];
        let mut prefix = PathBuf::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            prefix.push(part);
            match fs::symlink_metadata(dir.join(&prefix)) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue 'entries,
                Err(_) => fs::create_dir(dir.join(&prefix)).unwrap(),
            }
        }
        let p = dir.join(rel);
        if fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        match kind {
            BaseKind::File { data, mode, mtime } => {
                fs::write(&p, data.bytes()).unwrap();
                set_mode(&p, FILE_MODES[*mode]);
                set_times(&p, (PAST_SECS + *mtime as i64) * 1_000_000_000 + 7);
                any_file = true;
            }
            BaseKind::Dir { mode } => {
                fs::create_dir(&p).unwrap();
                dir_modes.push((p, DIR_MODES[*mode]));
            }
            BaseKind::Link { target } => {
                std::os::unix::fs::symlink(TARGETS[*target], &p).unwrap();
                set_times(&p, (PAST_SECS + 123) * 1_000_000_000 + 456);
            }
        }
    }
    if !any_file {
        let p = dir.join("z");
        fs::write(&p, b"zed").unwrap();
        set_times(&p, PAST_SECS * 1_000_000_000);
    }
    // Deepest first, so a read-only parent never gets in the way (it would not, as root).
    for (p, mode) in dir_modes.iter().rev() {
        set_mode(p, *mode);
    }
}

/// Sets atime and mtime of `p` itself (not a symlink's target).
fn set_times(p: &Path, ns: i64) {
    let c = cstr(p);
    let t = libc::timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    };
    let times = [t, t];
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}: errno {}", p.display(), errno());
}

#[test]
fn a_draft_behaves_like_a_plain_directory() {
    // SAFETY: umask has no preconditions; this test file runs this one test.
    unsafe { libc::umask(UMASK) };
    let s = TestStore::new();
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    let counter = Cell::new(0usize);
    let stats = RefCell::new(BTreeMap::new());
    let mut config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    // Shrinking a sequence of 40 steps takes more than proptest's default 4 x cases runs; a
    // run takes tens of milliseconds.
    if std::env::var_os("PROPTEST_MAX_SHRINK_ITERS").is_none() {
        config.max_shrink_iters = 4096;
    }
    if std::env::var_os("PROPTEST_MAX_SHRINK_TIME").is_none() {
        config.max_shrink_time = 60_000;
    }
    let mut runner = TestRunner::new(config);
    let started = std::time::Instant::now();
    let result = runner.run(
        &(base(), prop::collection::vec(op(), 1..=max_ops())),
        |(base, ops)| {
            let n = counter.get();
            counter.set(n + 1);
            let name = format!("c{n}");
            let plain = s.path(&format!("plain/{name}"));
            fs::create_dir_all(plain.parent().unwrap()).unwrap();
            let recent = SystemTime::now() - Duration::from_secs(10);
            write_base(&plain, &base);
            s.ok(&["log", &name, p(&plain), "--type", "dataset"]);
            let mut case = Case {
                m: &m,
                stats: &stats,
                name: name.clone(),
                draft: m.path(&format!("drafts/{name}")),
                plain,
                log: Vec::new(),
                recent: recent.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128,
                latest: 0,
                latest_plain: Tree::new(),
            };
            case.latest_plain = try_snapshot(&case.plain).map_err(TestCaseError::fail)?;
            case.run(&ops)
                .map_err(|e| TestCaseError::fail(case.fail(e)))
        },
    );
    eprintln!(
        "draft_differential: {} cases (with shrinking runs) in {:.1?}",
        counter.get(),
        started.elapsed()
    );
    // What the steps met, to see that the interesting cases come up (`--nocapture`).
    for (what, n) in stats.borrow().iter() {
        eprintln!("  {n:5}  {what}");
    }
    if let Err(e) = result {
        panic!("{e}\n\nmount.log (tail):\n{}", tail(&m.log(), 4000));
    }
}
