//! Hostile input (issue "Reliability"): names no tool expects, paths at PATH_MAX, `--as` that
//! tries to leave the draft, symlinks pointing out of the draft, absurd metadata, a damaged
//! catalog, blobs damaged behind the store's back, a store on a read-only filesystem, and
//! requests to the mount that only a fuzzer would send.
//!
//! Every case either works exactly (names and bytes read back unchanged) or is refused with an
//! error naming the object and the cause, and leaves the store as it was. Nothing panics: not
//! the CLI (no signal, no "panicked" on stderr) and not the mount server (no "panicked" in
//! STORE/mount.log, and it still answers afterwards).
//!
//! Cases already covered elsewhere are not repeated here: `--as /abs`, `../x`, `a/../../b` for
//! a single file (drafts.rs), verify naming missing and same-size corrupted blobs (cli.rs),
//! a garbage catalog refused by `mount` (mount_read.rs), EROFS outside drafts/ (mount_read.rs),
//! hard links, FIFOs and EXDEV renames inside drafts (mount_write.rs).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{CString, OsStr};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::*;
use common::*;

// ----- helpers -----

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn ob(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn show(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// The errno's symbolic name, for assertions that read like the man page.
fn ename(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::EFBIG => "EFBIG",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ERANGE => "ERANGE",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOTCONN => "ENOTCONN",
        libc::ESTALE => "ESTALE",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

/// "ok" or the errno name of a std call.
fn res<T>(r: std::io::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e
            .raw_os_error()
            .map(ename)
            .unwrap_or_else(|| format!("error {e}")),
    }
}

/// A libc return value: Ok(value), or Err(errno name).
fn sys(r: i64) -> Result<i64, String> {
    if r < 0 {
        Err(ename(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ))
    } else {
        Ok(r)
    }
}

/// Records a problem when `got` is none of `want`.
fn check(problems: &mut Vec<String>, what: &str, got: String, want: &[&str]) {
    if !want.contains(&got.as_str()) {
        problems.push(format!("{what}: {got}, expected {}", want.join(" or ")));
    }
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The process ended by itself (no signal, no Rust panic).
fn assert_no_crash(out: &Output, what: &str) {
    let all = format!("{}{}", stdout(out), stderr(out));
    assert!(
        out.status.code().is_some(),
        "{what} was killed by a signal ({}):\n{all}",
        out.status
    );
    assert!(
        out.status.code() != Some(101) && !all.contains("panicked"),
        "{what} panicked ({}):\n{all}",
        out.status
    );
}

fn assert_no_panic_logged(s: &TestStore, what: &str) {
    let log = fs::read_to_string(s.root.join("mount.log")).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "{what}: the mount server panicked; mount.log:\n{}",
        tail(&log, 6000)
    );
}

/// The server is alive and answers: the root lists, and a version file reads right.
fn assert_mount_answers(m: &Mounted, pid: i32, file: &str, content: &[u8], what: &str) {
    assert!(
        !process_gone(pid),
        "{what}: the mount server (pid {pid}) is gone"
    );
    let listed = fs::read_dir(m.path("")).map(|d| d.count());
    assert!(
        listed.is_ok(),
        "{what}: the mount no longer lists its root: {listed:?}"
    );
    assert_eq!(
        fs::read(m.path(file)).unwrap_or_else(|e| panic!("{what}: read {file} afterwards: {e}")),
        content,
        "{what}: {file} reads differently afterwards"
    );
}

/// Runs a cleanup command without panicking (this runs in Drop, possibly while unwinding).
fn quietly(mut cmd: Command, limit: Duration) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return,
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// Unmounts whatever is mounted at a path when dropped: for mounts a test expected to be
/// refused but that happened anyway, and for the read-only bind mount of a store.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        for _ in 0..4 {
            if !is_mounted(&self.0) {
                return;
            }
            let fuse = mounts_at(&self.0)
                .last()
                .is_some_and(|(t, _)| t.starts_with("fuse"));
            if fuse {
                let mut cmd = Command::new(BIN);
                cmd.arg("umount").arg(&self.0);
                quietly(cmd, Duration::from_secs(15));
            }
            if is_mounted(&self.0) {
                let mut cmd = Command::new("umount");
                cmd.arg(&self.0);
                quietly(cmd, Duration::from_secs(10));
            }
        }
        if is_mounted(&self.0) {
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&self.0);
            quietly(cmd, Duration::from_secs(10));
        }
    }
}

/// Makes `dir` a read-only filesystem: a bind mount of itself, remounted read-only.
fn bind_read_only(dir: &Path) -> Unmount {
    let dir = fs::canonicalize(dir).unwrap();
    let run = |args: &[&OsStr]| {
        let out = run_tool("mount", args, None);
        assert!(
            out.status.success(),
            "mount {args:?} failed ({}): {} — this test needs root and mount(8) to put a store \
             on a read-only filesystem",
            out.status,
            stderr(&out)
        );
    };
    run(&[os("--bind"), dir.as_os_str(), dir.as_os_str()]);
    let guard = Unmount(dir.clone());
    run(&[os("-o"), os("remount,bind,ro"), dir.as_os_str()]);
    let probe = dir.join(".probe");
    let e = fs::write(&probe, b"x");
    assert_eq!(res(e), "EROFS", "{} should be read-only now", dir.display());
    guard
}

/// What a path in a tree is, with its bytes or link target.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Item {
    File(Vec<u8>),
    Link(Vec<u8>),
    Dir,
}

/// Every entry under `dir`, by relative path as bytes; symlinks are not followed.
fn walk(dir: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    walk_into(dir, b"", &mut out);
    out
}

fn walk_into(dir: &Path, prefix: &[u8], out: &mut BTreeMap<Vec<u8>, Item>) {
    for e in fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display())) {
        let e = e.unwrap();
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(e.file_name().as_bytes());
        let path = e.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.insert(rel.clone(), Item::Dir);
            walk_into(&path, &rel, out);
        } else if meta.file_type().is_symlink() {
            let t = fs::read_link(&path).unwrap();
            out.insert(rel, Item::Link(t.as_os_str().as_bytes().to_vec()));
        } else {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            out.insert(rel, Item::File(data));
        }
    }
}

fn describe_tree(t: &BTreeMap<Vec<u8>, Item>) -> String {
    t.iter()
        .map(|(p, i)| match i {
            Item::File(d) => format!("  {} = {}", show(p), show(d)),
            Item::Link(l) => format!("  {} -> {}", show(p), show(l)),
            Item::Dir => format!("  {}/", show(p)),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same(what: &str, expected: &BTreeMap<Vec<u8>, Item>, actual: &BTreeMap<Vec<u8>, Item>) {
    assert!(
        expected == actual,
        "{what}: trees differ\nexpected:\n{}\nactual:\n{}",
        describe_tree(expected),
        describe_tree(actual)
    );
}

/// Names that a careless tool mangles: newlines, tabs, control bytes, DEL, bytes that are not
/// UTF-8 (two that read the same once made "lossy"), a leading dash, a bidi override, and the
/// longest name a Linux filesystem takes (255 bytes).
fn hostile_names() -> Vec<Vec<u8>> {
    vec![
        b"new\nline".to_vec(),
        b"\n".to_vec(),
        b"tab\there".to_vec(),
        b"ctl\x01\x02\x1b[31m".to_vec(),
        b"del\x7f".to_vec(),
        b"cr\r".to_vec(),
        b"back\\slash \"quoted\"".to_vec(),
        b"-n".to_vec(),
        b"bad\xff\xfe".to_vec(),
        b"bad\xfe\xff".to_vec(),
        "rtl\u{202e}txt.exe".as_bytes().to_vec(),
        vec![b'L'; 255],
    ]
}

/// The tree built from [`hostile_names`]: one file per name, plus a directory whose name is
/// hostile too, holding a file and a symlink whose target is hostile.
fn hostile_tree() -> BTreeMap<Vec<u8>, Item> {
    let mut t = BTreeMap::new();
    for n in hostile_names() {
        let mut content = b"content of ".to_vec();
        content.extend_from_slice(&n);
        t.insert(n, Item::File(content));
    }
    let dir = b"d\nir\xff".to_vec();
    t.insert(dir.clone(), Item::Dir);
    let mut inner = dir.clone();
    inner.extend_from_slice(b"/in\x01ner");
    t.insert(inner, Item::File(b"inner\n".to_vec()));
    let mut link = dir;
    link.extend_from_slice(b"/li\nnk");
    t.insert(link, Item::Link(b"../tar\nget\xff".to_vec()));
    t
}

fn write_items(dir: &Path, tree: &BTreeMap<Vec<u8>, Item>) {
    fs::create_dir_all(dir).unwrap();
    for (rel, item) in tree {
        let p = dir.join(ob(rel));
        match item {
            Item::Dir => {
                fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", show(rel)))
            }
            Item::File(d) => {
                fs::write(&p, d).unwrap_or_else(|e| panic!("write {}: {e}", show(rel)))
            }
            Item::Link(t) => std::os::unix::fs::symlink(ob(t), &p)
                .unwrap_or_else(|e| panic!("symlink {}: {e}", show(rel))),
        }
    }
}

/// What `ls` prints for a tree: every file and symlink path, in byte order, one per line.
fn ls_bytes(tree: &BTreeMap<Vec<u8>, Item>) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, i) in tree {
        if *i != Item::Dir {
            out.extend_from_slice(p);
            out.push(b'\n');
        }
    }
    out
}

/// A directory held open, so paths far beyond PATH_MAX can be reached one component at a
/// time: `/proc/self/fd/N/NAME` is always short.
struct DirFd(File);

impl DirFd {
    fn open(p: &Path) -> DirFd {
        DirFd(File::open(p).unwrap_or_else(|e| panic!("open directory {}: {e}", p.display())))
    }

    fn at(&self, name: &[u8]) -> PathBuf {
        Path::new(&format!("/proc/self/fd/{}", self.0.as_raw_fd())).join(ob(name))
    }

    fn sub(&self, name: &[u8]) -> DirFd {
        DirFd(File::open(self.at(name)).unwrap_or_else(|e| panic!("open {}: {e}", show(name))))
    }

    fn mkdir(&self, name: &[u8]) -> DirFd {
        fs::create_dir(self.at(name)).unwrap_or_else(|e| panic!("mkdir {}: {e}", show(name)));
        self.sub(name)
    }

    /// Follows `rel` (components separated by '/') from this directory.
    fn walk_to(&self, rel: &[u8]) -> DirFd {
        let mut d = DirFd(self.0.try_clone().unwrap());
        for c in rel.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
            d = d.sub(c);
        }
        d
    }
}

/// Builds `components` directories of `width` bytes each under `base`, then a file whose name
/// makes the whole relative path exactly `total` bytes long. Returns that relative path.
fn deep_tree(
    base: &Path,
    width: usize,
    components: usize,
    total: usize,
    content: &[u8],
) -> Vec<u8> {
    fs::create_dir_all(base).unwrap();
    let mut d = DirFd::open(base);
    let mut rel = Vec::new();
    for i in 0..components {
        let name: Vec<u8> = format!("{i:02}")
            .into_bytes()
            .into_iter()
            .chain(std::iter::repeat_n(b'd', width - 2))
            .collect();
        d = d.mkdir(&name);
        rel.extend_from_slice(&name);
        rel.push(b'/');
    }
    let leaf_len = total - rel.len();
    assert!(
        (1..=255).contains(&leaf_len),
        "deep_tree: a leaf of {leaf_len} bytes"
    );
    let leaf = vec![b'f'; leaf_len];
    fs::write(d.at(&leaf), content).unwrap();
    rel.extend_from_slice(&leaf);
    rel
}

/// Reads the file at `rel` below `base` one component at a time.
fn read_deep(base: &Path, rel: &[u8]) -> std::io::Result<Vec<u8>> {
    let (dir, leaf) = match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&b""[..], rel),
    };
    let d = DirFd::open(base).walk_to(dir);
    fs::read(d.at(leaf))
}

/// Everything regular under `dir` (recursively), for "nothing was written" checks.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd {
            let p = e.unwrap().path();
            out.push(p.clone());
            if fs::symlink_metadata(&p)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                out.extend(files_under(&p));
            }
        }
    }
    out
}

// ----- 1. names -----

#[test]
fn hostile_names_logged_read_back_byte_exact_through_ls_get_and_the_mount() {
    let s = TestStore::new();
    let tree = hostile_tree();
    let src = s.path("src");
    write_items(&src, &tree);
    let printed = log(&s, "names", &src);
    assert_eq!(printed, "names:v0");

    // `ls` prints the raw bytes of every path, in byte order.
    let out = s.run(&["ls", "names"]);
    assert_success(&out, &["ls", "names"]);
    assert_eq!(
        show(&out.stdout),
        show(&ls_bytes(&tree)),
        "ls must print each stored path byte for byte"
    );

    // `ls --json` gives every name that is UTF-8 exactly (JSON cannot carry the others).
    let listed: Vec<String> = serde_json::from_value(s.json(&["ls", "names"])).unwrap();
    for (p, i) in &tree {
        if *i == Item::Dir {
            continue;
        }
        if let Ok(text) = std::str::from_utf8(p) {
            assert!(
                listed.iter().any(|l| l == text),
                "ls --json lacks {text:?}: {listed:?}"
            );
        }
    }

    // `cat` of every UTF-8 name gives its bytes (a name starting with '-' after `--`).
    for (p, i) in &tree {
        let (Item::File(content), Ok(_)) = (i, std::str::from_utf8(p)) else {
            continue;
        };
        let args = [os("cat"), os("names"), os("--"), ob(p)];
        let out = s.run(&args);
        assert_success(&out, &args);
        assert_eq!(
            show(&out.stdout),
            show(content),
            "cat of {} gave other bytes",
            show(p)
        );
    }

    // `get` recreates every name, file and link exactly.
    let dest = s.path("out");
    s.ok(&[os("get"), os("names"), dest.as_os_str()]);
    assert_same("get of hostile names", &tree, &walk(&dest));

    // The mount shows the same names and bytes.
    let m = Mounted::new(&s, &mountpoint(&s));
    assert_same(
        "names:v0 through the mount",
        &tree,
        &walk(&m.path("names/v0")),
    );
    // Looking a name up directly (not from a listing) works for each of them.
    for (p, i) in &tree {
        if let Item::File(content) = i {
            let got = fs::read(m.path("names/v0").join(ob(p)));
            assert_eq!(
                got.as_ref().map_err(|e| e.to_string()),
                Ok(content),
                "read names/v0/{} through the mount",
                show(p)
            );
        }
    }
    drop(m);
    assert_no_panic_logged(&s, "hostile names through the mount");
}

#[test]
fn cat_reads_a_file_whose_name_is_not_utf8() {
    // The store keeps names as bytes (ls and get show them), so the CLI must be able to read
    // one back: a path argument is bytes on Unix, as for cat(1).
    let s = TestStore::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(ob(b"bad\xff\xfe")), b"not utf-8 named\n").unwrap();
    fs::write(src.join("good"), b"fine\n").unwrap();
    log(&s, "m", &src);
    let args = [os("cat"), os("m"), ob(b"bad\xff\xfe")];
    let out = s.run(&args);
    assert_no_crash(&out, "cat of a non-UTF-8 name");
    assert!(
        out.status.success(),
        "cat m $'bad\\xff\\xfe' should print the file stored under that name, got {}:\n{}",
        out.status,
        stderr(&out)
    );
    assert_eq!(show(&out.stdout), show(b"not utf-8 named\n"));
}

#[test]
fn ls_json_keeps_names_that_are_not_utf8_apart() {
    // JSON strings cannot carry arbitrary bytes. Whatever ls --json does with such a name, it
    // must not print two different stored paths as the same string (here both would read
    // "bad\u{FFFD}\u{FFFD}" after a lossy conversion), which would serve a wrong name as right.
    let s = TestStore::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(ob(b"bad\xff\xfe")), b"one").unwrap();
    fs::write(src.join(ob(b"bad\xfe\xff")), b"two").unwrap();
    log(&s, "m", &src);
    let out = s.run(&["--json", "ls", "m"]);
    assert_no_crash(&out, "ls --json with non-UTF-8 names");
    assert_success(&out, &["--json", "ls", "m"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ls --json printed invalid JSON ({e}): {}", stdout(&out)));
    let entries: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.to_string())
        .collect();
    let distinct: BTreeSet<&String> = entries.iter().collect();
    assert_eq!(
        distinct.len(),
        2,
        "ls --json shows two different stored names as the same entry: {entries:?}"
    );
}

#[test]
fn hostile_names_created_through_the_mount_commit_and_read_back() {
    let s = TestStore::new();
    let m = Mounted::new(&s, &mountpoint(&s));
    let d = m.path("drafts/names");
    fs::create_dir(&d).unwrap();
    let tree = hostile_tree();
    write_items(&d, &tree);
    assert_same("the draft before commit", &tree, &walk(&d));
    assert_eq!(write_control(&d.join(".commit"), "commit"), "ok");
    assert_eq!(versions(&s, "names"), ["v0"]);
    assert_same(
        "names:v0 committed from the mount",
        &tree,
        &walk(&m.path("names/v0")),
    );
    let out = s.run(&["ls", "names"]);
    assert_success(&out, &["ls", "names"]);
    assert_eq!(show(&out.stdout), show(&ls_bytes(&tree)));
    let dest = s.path("out");
    s.ok(&[os("get"), os("names"), dest.as_os_str()]);
    assert_same(
        "get of names committed through the mount",
        &tree,
        &walk(&dest),
    );
    let pid = m.server_pid();
    assert_mount_answers(
        &m,
        pid,
        "names/v0/tab\there",
        b"content of tab\there",
        "names",
    );
    drop(m);
    assert_no_panic_logged(&s, "hostile names created through the mount");
}

#[test]
fn a_256_byte_name_is_enametoolong_through_the_mount() {
    // Linux names are at most 255 bytes (NAME_MAX). A local filesystem refuses a longer one
    // with ENAMETOOLONG for every operation, lookups included; a version holding one could
    // never be written out by `get`.
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha"), ("sub/b.txt", "bee")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let d = m.path("drafts/m");
    fs::create_dir(&d).unwrap();
    let long = "y".repeat(256);
    let ok255 = "z".repeat(255);
    assert_eq!(
        res(fs::write(d.join(&ok255), b"255")),
        "ok",
        "255 bytes is allowed"
    );
    fs::remove_file(d.join(&ok255)).unwrap();
    let before = s.fingerprint();

    let at = |rel: &str| d.join(rel);
    let mkfifo = |p: &Path| {
        let c = cpath(p);
        // SAFETY: a NUL-terminated path.
        sys(unsafe { libc::mkfifo(c.as_ptr(), 0o644) } as i64).map(|_| ())
    };
    type Op<'a> = Box<dyn Fn() -> String + 'a>;
    let ops: Vec<(&str, Op)> = vec![
        ("create", Box::new(|| res(fs::write(at(&long), b"x")))),
        (
            "create O_EXCL",
            Box::new(|| {
                res(OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(at(&long)))
            }),
        ),
        (
            "create in a subdirectory",
            Box::new(|| res(fs::write(d.join("sub").join(&long), b"x"))),
        ),
        ("mkdir", Box::new(|| res(fs::create_dir(at(&long))))),
        (
            "symlink",
            Box::new(|| res(std::os::unix::fs::symlink("a.txt", at(&long)))),
        ),
        (
            "rename onto",
            Box::new(|| res(fs::rename(at("a.txt"), at(&long)))),
        ),
        (
            "mkfifo",
            Box::new(|| mkfifo(&at(&long)).err().unwrap_or("ok".into())),
        ),
        (
            "stat in the draft",
            Box::new(|| res(fs::symlink_metadata(at(&long)))),
        ),
        (
            "stat in a version",
            Box::new(|| res(fs::symlink_metadata(m.path("m/v0").join(&long)))),
        ),
        (
            "stat at the root",
            Box::new(|| res(fs::symlink_metadata(m.path("").join(&long)))),
        ),
    ];
    // Each operation on its own: whatever an accepted one made is taken away again.
    let long_entries = || -> Vec<PathBuf> {
        [d.clone(), d.join("sub")]
            .iter()
            .flat_map(|dir| fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()))
            .filter(|p| p.file_name().unwrap().len() > 255)
            .collect()
    };
    let mut wrong = Vec::new();
    for (op, run) in &ops {
        let got = run();
        let made = long_entries();
        if got != "ENAMETOOLONG" {
            wrong.push(format!(
                "{op} of a 256-byte name: {got}, expected ENAMETOOLONG{}",
                if made.is_empty() {
                    String::new()
                } else {
                    format!(" (and the draft now holds a {}-byte name)", long.len())
                }
            ));
        }
        for p in made {
            let _ = fs::remove_file(&p).or_else(|_| fs::remove_dir(&p));
        }
        if !at("a.txt").exists() {
            // Renamed away: put the base file back as it was.
            let _ = fs::write(at("a.txt"), b"alpha");
        }
    }
    drop(ops);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_unchanged(
        &before,
        &s.fingerprint(),
        "256-byte names through the mount",
    );
    let pid = m.server_pid();
    assert_mount_answers(&m, pid, "m/v0/a.txt", b"alpha", "256-byte names");
    drop(m);
    assert_no_panic_logged(&s, "256-byte names");
}

#[test]
fn paths_near_path_max_are_stored_exactly_or_refused_cleanly() {
    let s = TestStore::new();
    // 19 components of 200 bytes and a 181-byte file name: a 4,000-byte relative path, whose
    // absolute path in the scratch directory is still below PATH_MAX (4,096).
    let content = b"four thousand bytes down\n";
    let rel = deep_tree(&s.path("deep"), 200, 19, 4000, content);
    assert_eq!(log(&s, "deep", &s.path("deep")), "deep:v0");
    let out = s.run(&["ls", "deep"]);
    assert_success(&out, &["ls", "deep"]);
    let mut want = rel.clone();
    want.push(b'\n');
    assert_eq!(out.stdout, want, "ls of the 4,000-byte path");
    let args = [os("cat"), os("deep"), ob(&rel)];
    let out = s.run(&args);
    assert_success(&out, &args);
    assert_eq!(out.stdout, content);
    let dest = s.path("o");
    s.ok(&[os("get"), os("deep"), dest.as_os_str()]);
    assert_eq!(
        read_deep(&dest, &rel).map_err(|e| e.to_string()),
        Ok(content.to_vec()),
        "get of a 4,000-byte path"
    );
    {
        let m = Mounted::new(&s, &mountpoint(&s));
        assert_eq!(
            read_deep(&m.path("deep/v0"), &rel).map_err(|e| e.to_string()),
            Ok(content.to_vec()),
            "reading the 4,000-byte path through the mount, one component at a time"
        );
    }

    // 20 components and a 75-byte name: a relative path of 4,095 bytes, the most PATH_MAX
    // allows; the absolute path is longer than that. Either it is stored exactly, or `log`
    // refuses it, naming the path and the cause, and stores nothing.
    let content2 = b"at the limit\n";
    let rel2 = deep_tree(&s.path("deeper"), 200, 20, 4095, content2);
    let before = s.fingerprint();
    let deeper = s.path("deeper");
    let args = [
        os("log"),
        os("deeper"),
        deeper.as_os_str(),
        os("--type"),
        os("dataset"),
    ];
    let out = s.run(&args);
    assert_no_crash(&out, "log of a path at PATH_MAX");
    if out.status.success() {
        let args = [os("cat"), os("deeper"), ob(&rel2)];
        let got = s.run(&args);
        assert_success(&got, &args);
        assert_eq!(
            got.stdout, content2,
            "the 4,095-byte path was stored with other bytes"
        );
    } else {
        let err = assert_failure(&out, &args);
        let leaf = String::from_utf8(rel2[rel2.len() - 75..].to_vec()).unwrap();
        assert!(
            err.contains(&leaf),
            "the refusal should name the path that is too long: {}",
            tail(&err, 600)
        );
        assert!(
            err.contains("too long"),
            "the refusal should say the name is too long: {}",
            tail(&err, 600)
        );
        assert_unchanged(&before, &s.fingerprint(), "refused log at PATH_MAX");
    }
}

#[test]
fn get_of_a_path_that_exceeds_path_max_under_dest_writes_everything_or_nothing() {
    // deep:v0 holds a 4,000-byte path; under a destination whose own path is 150 bytes long,
    // it is longer than PATH_MAX. `get` either writes it (as `cp -r` and `tar` do, one
    // directory at a time) or refuses naming it — and then leaves nothing half-written.
    let s = TestStore::new();
    let content = b"deep\n";
    let rel = deep_tree(&s.path("deep"), 200, 19, 4000, content);
    log(&s, "deep", &s.path("deep"));
    let dest = s.path(&"g".repeat(150));
    let args = [os("get"), os("deep"), dest.as_os_str()];
    let before = s.fingerprint();
    let out = s.run(&args);
    assert_no_crash(&out, "get beyond PATH_MAX");
    assert_unchanged(&before, &s.fingerprint(), "get beyond PATH_MAX");
    if out.status.success() {
        assert_eq!(
            read_deep(&dest, &rel).map_err(|e| e.to_string()),
            Ok(content.to_vec()),
            "get reported success; the deep file must then be there"
        );
    } else {
        let err = assert_failure(&out, &args);
        assert!(err.contains("too long"), "{}", tail(&err, 400));
        let left = files_under(&dest);
        assert!(
            left.is_empty(),
            "get failed (\"{}\") but left {} entries under {}: a half-written copy",
            tail(&err, 200),
            left.len(),
            dest.display()
        );
    }
}

#[test]
fn a_path_longer_than_path_max_built_in_a_draft_commits_and_reads_back() {
    // Through the mount, a tree is built one directory at a time, as any tool does; a local
    // filesystem puts no limit on a path's total length, only on each name.
    let s = TestStore::new();
    let m = Mounted::new(&s, &mountpoint(&s));
    let draft = m.path("drafts/deep");
    fs::create_dir(&draft).unwrap();
    let content = b"beyond PATH_MAX\n";
    let rel = deep_tree(&draft, 200, 20, 4110, content);
    assert_eq!(write_control(&draft.join(".commit"), "commit"), "ok");
    assert_eq!(
        read_deep(&m.path("deep/v0"), &rel).map_err(|e| e.to_string()),
        Ok(content.to_vec()),
        "the 4,110-byte path read through the mount"
    );
    let out = s.run(&["ls", "deep"]);
    assert_success(&out, &["ls", "deep"]);
    let mut want = rel.clone();
    want.push(b'\n');
    assert_eq!(out.stdout, want);
    let args = [os("cat"), os("deep"), ob(&rel)];
    let out = s.run(&args);
    assert_success(&out, &args);
    assert_eq!(out.stdout, content);
    drop(m);
    assert_no_panic_logged(&s, "a path beyond PATH_MAX in a draft");
}

// ----- 2. --as -----

#[test]
fn as_destinations_that_are_empty_or_leave_the_draft_are_refused() {
    let s = TestStore::new();
    let base = s.tree("base", &[("a.txt", "alpha")]);
    log(&s, "n", &base);
    s.ok(&["draft", "new", "n"]);
    let f = s.file("src/f.txt", "f");
    let dir = s.tree("srcdir", &[("x.txt", "x"), ("sub/y.txt", "y")]);
    // Already covered for a single file in drafts.rs: /abs/f, ../escape, a/../../b.
    let file_only = [".", "./x", "a/./b", "x/..", "/", "//", "/abs/x"];
    for dest in file_only {
        refused(&s, &["draft", "add", "n", p(&f), "--as", dest], &[dest]);
    }
    for dest in [
        "../x",
        "/abs/x",
        "a/../../x",
        ".",
        "./x",
        "a/./b",
        "x/..",
        "/",
    ] {
        refused(&s, &["draft", "add", "n", p(&dir), "--as", dest], &[dest]);
        refused(
            &s,
            &["draft", "add", "n", p(&f), p(&dir), "--as", dest],
            &[dest],
        );
    }
    // An empty destination is not a path: refused, saying --as is the problem.
    let mut problems = Vec::new();
    for paths in [vec![p(&f)], vec![p(&dir)], vec![p(&f), p(&dir)]] {
        let mut args = vec!["draft", "add", "n"];
        args.extend(paths.iter().copied());
        args.extend(["--as", ""]);
        let before = s.fingerprint();
        let out = s.run(&args);
        assert_no_crash(&out, &format!("{args:?}"));
        let err = stderr(&out);
        if out.status.success() {
            problems.push(format!("{args:?} was accepted: {}", stdout(&out).trim()));
            s.ok(&["draft", "discard", "n"]);
            s.ok(&["draft", "new", "n"]);
        } else {
            if !err.contains("--as") {
                problems.push(format!(
                    "{args:?}: refused, but the error does not say --as is wrong: {}",
                    err.trim()
                ));
            }
            assert_unchanged(&before, &s.fingerprint(), &format!("{args:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let st = s.json(&["draft", "status", "n"]);
    assert_eq!(st["added"], serde_json::json!([]), "{st}");
}

// ----- 3. symlinks that point out of the draft -----

#[test]
fn symlinks_pointing_outside_are_stored_as_links_and_never_followed() {
    let s = TestStore::new();
    let outside = s.tree(
        "outside",
        &[("secret.txt", "outside secret, never to be stored\n")],
    );
    let outside_before = walk(&outside);
    let passwd = fs::read("/etc/passwd").expect("/etc/passwd exists");

    let src = s.tree("src", &[("a.txt", "alpha"), ("sub/inner.txt", "inner")]);
    let links: [(&str, &[u8]); 4] = [
        ("pw", b"/etc/passwd"),
        ("up", b"../../../.."),
        ("out", outside.as_os_str().as_bytes()),
        ("sub/esc", b"../../outside/secret.txt"),
    ];
    for (name, target) in links {
        std::os::unix::fs::symlink(ob(target), src.join(name)).unwrap();
    }
    log(&s, "m", &src);

    // Through the mount: more of the same, made with ln -s in a draft.
    let m = Mounted::new(&s, &mountpoint(&s));
    for (name, target) in links {
        assert_eq!(
            fs::read_link(m.path("m/v0").join(name))
                .map(|t| t.as_os_str().as_bytes().to_vec())
                .map_err(|e| e.to_string()),
            Ok(target.to_vec()),
            "m/v0/{name} through the mount"
        );
    }
    let d = m.path("drafts/m");
    fs::create_dir(&d).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("passwd2")).unwrap();
    std::os::unix::fs::symlink("../../../..", d.join("up2")).unwrap();
    std::os::unix::fs::symlink("/", d.join("root")).unwrap();
    assert_eq!(write_control(&d.join(".commit"), "commit"), "ok");
    let mut expected_links: Vec<(&str, &[u8])> = links.to_vec();
    expected_links.extend([
        ("passwd2", &b"/etc/passwd"[..]),
        ("up2", b"../../../.."),
        ("root", b"/"),
    ]);
    for (name, target) in &expected_links {
        let meta = fs::symlink_metadata(m.path("m/v1").join(name)).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "m/v1/{name} is not a symlink"
        );
        assert_eq!(
            fs::read_link(m.path("m/v1").join(name))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            *target,
            "m/v1/{name}"
        );
    }
    drop(m);
    assert_no_panic_logged(&s, "symlinks out of a draft");

    // The store holds the links, never what they point to.
    for (what, content) in [
        ("/etc/passwd", passwd.as_slice()),
        (
            "outside/secret.txt",
            b"outside secret, never to be stored\n".as_slice(),
        ),
    ] {
        assert!(
            !s.blob_path_of(content).exists(),
            "the store copied the content of {what}, which a symlink points to"
        );
    }

    // `get` recreates links as links, and never writes through one.
    let dest = s.path("dest");
    s.ok(&[os("get"), os("m:v1"), dest.as_os_str()]);
    for (name, target) in &expected_links {
        let meta = fs::symlink_metadata(dest.join(name)).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "get made {name} something else than a symlink"
        );
        assert_eq!(
            fs::read_link(dest.join(name))
                .unwrap()
                .as_os_str()
                .as_bytes(),
            *target
        );
    }
    // A DEST where the version's directory `sub` is a symlink to the outside: replaced by the
    // directory, and nothing lands outside.
    let dest2 = s.path("dest2");
    fs::create_dir_all(&dest2).unwrap();
    std::os::unix::fs::symlink(&outside, dest2.join("sub")).unwrap();
    let out = s.run(&[os("get"), os("m:v1"), dest2.as_os_str()]);
    assert_no_crash(&out, "get over a symlinked directory");
    assert_same(
        "the outside directory after get",
        &outside_before,
        &walk(&outside),
    );
    if out.status.success() {
        assert!(
            fs::symlink_metadata(dest2.join("sub")).unwrap().is_dir(),
            "get left DEST/sub a symlink"
        );
        assert_eq!(fs::read(dest2.join("sub/inner.txt")).unwrap(), b"inner");
    }

    // Adding beneath a stored symlink would make `get` write through it: refused.
    s.ok(&["draft", "new", "m"]);
    let evil = s.file("evil/evil.txt", "evil");
    for dest in ["out/evil.txt", "pw/evil.txt", "up/evil.txt"] {
        refused(
            &s,
            &["draft", "add", "m", p(&evil), "--as", dest],
            &[&dest[..dest.find('/').unwrap()], "not a directory"],
        );
    }
    let evil_dir = s.tree("evil-dir", &[("out/evil.txt", "evil")]);
    refused(&s, &["draft", "add", "m", p(&evil_dir)], &["out"]);
    assert_same(
        "the outside directory at the end",
        &outside_before,
        &walk(&outside),
    );
}

// ----- 4. metadata -----

fn nested_array(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

fn nested_object(depth: usize) -> String {
    format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
}

fn says_too_deep(err: &str) -> bool {
    let e = err.to_lowercase();
    ["recursion", "deep", "nest", "depth"]
        .iter()
        .any(|w| e.contains(w))
}

#[test]
fn metadata_nested_10000_deep_is_refused_by_every_command() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let src2 = s.tree("src2", &[("b.txt", "bee")]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&src2)]);
    for (what, meta) in [
        ("array", nested_array(10_000)),
        ("object", nested_object(10_000)),
        (
            "object holding an array",
            format!("{{\"k\": {}}}", nested_array(10_000)),
        ),
    ] {
        let commands: Vec<Vec<&str>> = vec![
            vec![
                "log",
                "fresh",
                p(&src2),
                "--type",
                "dataset",
                "--metadata",
                &meta,
            ],
            vec![
                "log",
                "m",
                p(&src2),
                "--type",
                "dataset",
                "--metadata",
                &meta,
            ],
            vec!["draft", "commit", "m", "--metadata", &meta],
            vec![
                "finish",
                "m",
                p(&src2),
                "--type",
                "dataset",
                "--distributed-id",
                "run",
                "--metadata",
                &meta,
            ],
        ];
        for args in &commands {
            let err = refused(&s, args, &["metadata"]);
            assert!(
                says_too_deep(&err),
                "{} with metadata {what} nested 10,000 deep: the error should say it is too \
                 deeply nested: {err}",
                args[..2].join(" ")
            );
        }
    }
    // The draft is still there and commits.
    assert_eq!(s.ok(&["draft", "commit", "m"]).trim(), "m:v1");
}

#[test]
fn metadata_as_large_as_one_argument_can_be_is_stored_exactly() {
    // The CLI takes metadata only as an argument (`--metadata JSON`; there is no form that
    // reads a file), and Linux caps one argument at 128 KiB (MAX_ARG_STRLEN), below the 1 MiB
    // limit: 100 MB of metadata cannot reach the CLI at all (exec fails with E2BIG), so the
    // size limit is tested through the mount's control file below. Here: the largest
    // argument there can be is accepted and stored exactly.
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    let value = "v".repeat(128 * 1024 - 64);
    let meta = format!("{{\"k\": \"{value}\"}}");
    let v = s.json(&[
        "log",
        "m",
        p(&src),
        "--type",
        "dataset",
        "--metadata",
        &meta,
    ]);
    assert_eq!(v["metadata"]["k"].as_str().map(str::len), Some(value.len()));
    let shown = s.json(&["show", "m"]);
    assert_eq!(shown["metadata"]["k"].as_str(), Some(value.as_str()));
}

#[test]
fn metadata_of_100_mb_or_10000_deep_through_the_control_file_is_refused() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let d = m.path("drafts/m");
    fs::create_dir(&d).unwrap();
    fs::write(d.join("new.txt"), b"new").unwrap();
    let control = d.join(".commit");
    let pid = m.server_pid();

    // Writes `request` to .commit the way `cat file > .commit` does (write until all is
    // written or a write fails), then closes; returns the first errno, or "ok".
    let send = |request: &[u8]| -> String {
        let f = OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&control)
            .unwrap_or_else(|e| panic!("open .commit: {e}"));
        let mut f = f;
        let mut off = 0;
        let mut first_err = None;
        while off < request.len() {
            match f.write(&request[off..]) {
                Ok(0) => {
                    first_err = Some("write returned 0".to_string());
                    break;
                }
                Ok(n) => off += n,
                Err(e) => {
                    first_err = Some(res::<()>(Err(e)));
                    break;
                }
            }
        }
        let fd = f.into_raw_fd();
        // SAFETY: fd is ours, closed once.
        let closed = sys(unsafe { libc::close(fd) } as i64);
        match (first_err, closed) {
            (Some(e), _) => e,
            (None, Err(e)) => e,
            (None, Ok(_)) => "ok".into(),
        }
    };
    let before = s.fingerprint();
    let log_len = m.log().len();

    let mut request = Vec::with_capacity(100 * 1024 * 1024 + 64);
    request.extend_from_slice(br#"{"metadata": {"k": ""#);
    request.resize(request.len() + 100 * 1024 * 1024, b'x');
    request.extend_from_slice(br#""}}"#);
    let start = Instant::now();
    let got = send(&request);
    let took = start.elapsed();
    drop(request);
    assert!(
        ["EINVAL", "EFBIG", "E2BIG", "EMSGSIZE"].contains(&got.as_str()),
        "a 100 MB commit request should fail with EINVAL or EFBIG, got {got}"
    );
    let logged = m.log()[log_len..].to_string();
    assert!(
        (logged.contains("metadata") || logged.contains(".commit"))
            && (logged.contains("limit") || logged.contains("large")),
        "mount.log should say the commit request (or its metadata) is too large:\n{}",
        tail(&logged, 2000)
    );
    assert!(
        took < Duration::from_secs(30),
        "refusing 100 MB of metadata took {took:?}"
    );
    assert_eq!(versions(&s, "m"), ["v0"], "nothing may be committed");
    assert_unchanged(&before, &s.fingerprint(), "a 100 MB commit request");

    for (what, meta) in [
        ("array", nested_array(10_000)),
        ("object", nested_object(10_000)),
    ] {
        let log_len = m.log().len();
        let got = send(format!("{{\"metadata\": {meta}}}").as_bytes());
        assert_eq!(
            got, "EINVAL",
            "metadata {what} nested 10,000 deep via .commit"
        );
        let logged = m.log()[log_len..].to_string();
        assert!(
            says_too_deep(&logged),
            "mount.log should say the request is nested too deeply:\n{}",
            tail(&logged, 2000)
        );
        assert_unchanged(&before, &s.fingerprint(), "a deeply nested commit request");
    }
    // The draft is intact and still commits.
    assert_eq!(send(b"commit"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_mount_answers(
        &m,
        pid,
        "m/v1/new.txt",
        b"new",
        "after hostile commit requests",
    );
    drop(m);
    assert_no_panic_logged(&s, "hostile commit requests");
}

// ----- 5. a damaged catalog -----

/// A store with two versions of 300 files and a draft, so the catalog spans many pages.
fn store_with_a_big_catalog() -> (TestStore, PathBuf) {
    let s = TestStore::new();
    let src = s.path("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("f{i:03}.txt")), format!("file {i}\n")).unwrap();
    }
    log(&s, "m", &src);
    fs::write(src.join("f000.txt"), b"changed\n").unwrap();
    log(&s, "m", &src);
    s.ok(&["draft", "new", "m"]);
    for ext in ["-wal", "-shm"] {
        let _ = fs::remove_file(s.root.join(format!("catalog.db{ext}")));
    }
    (s, src)
}

fn says_blob_damaged(err: &str) -> bool {
    let e = err.to_lowercase();
    ["damaged", "corrupt", "missing", "size"]
        .iter()
        .any(|w| e.contains(w))
}

fn says_damaged(err: &str) -> bool {
    let e = err.to_lowercase();
    ["damaged", "corrupt", "malformed", "not a database"]
        .iter()
        .any(|w| e.contains(w))
}

/// Runs every kind of command against the damaged store. With `all_fail`, each must fail
/// cleanly, naming catalog.db and saying it is damaged; otherwise each either succeeds or
/// fails that way, and `verify`, which exists to find damage, must report it. Nothing may
/// rewrite the catalog or remove a blob.
fn check_damaged_catalog(s: &TestStore, src: &Path, damage: &str, all_fail: bool) {
    let db = s.root.join("catalog.db");
    let catalog_before = fs::read(&db).unwrap();
    let blobs_before = s.blob_files();
    let mp = mountpoint(s);
    let mp_canon = fs::canonicalize(&mp).unwrap();
    let commands: Vec<Vec<&OsStr>> = vec![
        vec![os("list")],
        vec![os("list"), os("m")],
        vec![os("show"), os("m")],
        vec![os("ls"), os("m")],
        vec![os("cat"), os("m"), os("f001.txt")],
        vec![os("diff"), os("m:v0"), os("m:v1")],
        vec![os("verify")],
        vec![os("draft"), os("list")],
        vec![
            os("log"),
            os("m"),
            src.as_os_str(),
            os("--type"),
            os("dataset"),
        ],
        vec![os("draft"), os("new"), os("other")],
        vec![os("gc")],
        vec![os("mount"), mp.as_os_str()],
    ];
    let mut problems = Vec::new();
    for args in &commands {
        let _guard = Unmount(mp_canon.clone());
        let what = format!(
            "{damage}: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = s.run(args);
        assert_no_crash(&out, &what);
        let err = stderr(&out);
        let is_verify = args[0] == "verify";
        if out.status.success() {
            if all_fail || is_verify {
                problems.push(format!(
                    "{what}: succeeded on a damaged catalog (stdout: {})",
                    tail(&stdout(&out), 300)
                ));
            }
            if args[0] == "mount" {
                // It mounted: at least it must not crash while serving.
                let _ = fs::read_dir(mp_canon.join("m")).map(|d| d.count());
                let _ = fs::read(mp_canon.join("m/v0/f001.txt"));
                assert_no_panic_logged(s, &what);
            }
        } else if !(err.contains("catalog.db") && says_damaged(&err)) {
            problems.push(format!(
                "{what}: exit {}, but the error should name catalog.db and say it is \
                 damaged: {}",
                out.status,
                tail(&err, 400)
            ));
        }
    }
    if all_fail && fs::read(&db).unwrap() != catalog_before {
        problems.push(format!("{damage}: a command rewrote catalog.db"));
    }
    let blobs_after = s.blob_files();
    let lost: Vec<&String> = blobs_before
        .iter()
        .filter(|b| !blobs_after.contains(b))
        .collect();
    if !lost.is_empty() {
        problems.push(format!("{damage}: blobs were removed: {lost:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_catalog_truncated_to_half_is_reported_by_every_command() {
    let (s, src) = store_with_a_big_catalog();
    let db = s.root.join("catalog.db");
    let len = fs::metadata(&db).unwrap().len();
    assert!(
        len >= 64 * 1024,
        "catalog of {len} bytes is too small for this test"
    );
    OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    check_damaged_catalog(&s, &src, "catalog truncated to half", true);
}

#[test]
fn a_catalog_truncated_to_zero_bytes_is_reported_by_every_command() {
    // An empty catalog.db next to a blobs/ directory full of content is a lost catalog, not a
    // new store: treating it as empty would hide every version (and let gc collect them).
    let (s, src) = store_with_a_big_catalog();
    let db = s.root.join("catalog.db");
    OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(0)
        .unwrap();
    check_damaged_catalog(&s, &src, "catalog truncated to 0 bytes", true);
}

#[test]
fn a_missing_catalog_beside_blobs_is_refused_and_nothing_is_made() {
    // A store whose catalog was lost (and whose staging directories went with it, as when
    // blobs/ alone was restored) is refused as it is: not even the empty staging
    // directories are made again.
    let s = TestStore::new();
    let a = s.tree("a", &[("x.txt", "x0")]);
    log(&s, "m", &a);
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = fs::remove_file(s.root.join(f));
    }
    for d in ["staged", "staging"] {
        fs::remove_dir_all(s.root.join(d)).unwrap();
    }
    let before = ls_tree(&s.root);
    let a = a.to_str().unwrap();
    for args in [&["list"][..], &["log", "m", a], &["gc"]] {
        let out = s.run(args);
        assert!(!out.status.success(), "{args:?} worked on a lost catalog");
        let err = stderr(&out);
        assert!(
            err.contains("catalog.db") && err.contains("lost or truncated"),
            "{args:?}: {err}"
        );
        assert!(ls_tree(&s.root) == before, "{args:?} changed the store");
    }
}

/// Every path below `dir`, sorted.
fn ls_tree(dir: &Path) -> Vec<PathBuf> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            all.push(p);
        }
    }
    all.sort();
    all
}

#[test]
fn a_catalog_with_a_garbage_header_is_reported_by_every_command() {
    let (s, src) = store_with_a_big_catalog();
    let db = s.root.join("catalog.db");
    let mut bytes = fs::read(&db).unwrap();
    for (i, b) in bytes.iter_mut().take(100).enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    fs::write(&db, bytes).unwrap();
    check_damaged_catalog(&s, &src, "catalog header overwritten", true);
}

#[test]
fn a_catalog_with_4_kib_of_garbage_in_the_middle_is_found_by_verify() {
    // Damage in one page may go unnoticed by a query that never reads that page; commands then
    // either work or fail naming catalog.db as damaged, and `verify` must find it.
    let (s, src) = store_with_a_big_catalog();
    let db = s.root.join("catalog.db");
    let mut bytes = fs::read(&db).unwrap();
    let mid = (bytes.len() / 2) / 4096 * 4096;
    let mut x: u32 = 12345;
    for b in &mut bytes[mid..mid + 4096] {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    fs::write(&db, bytes).unwrap();
    check_damaged_catalog(
        &s,
        &src,
        "4 KiB of garbage in the middle of the catalog",
        false,
    );
}

#[test]
fn wal_and_shm_removed_while_not_mounted_lose_nothing() {
    let s = TestStore::new();
    let a = s.tree("a", &[("x.txt", "x0")]);
    log(&s, "m", &a);
    fs::write(a.join("x.txt"), "x1").unwrap();
    log(&s, "m", &a);
    let rm_wal = || {
        for ext in ["-wal", "-shm"] {
            let _ = fs::remove_file(s.root.join(format!("catalog.db{ext}")));
        }
    };
    rm_wal();
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_eq!(cat(&s, "m", "x.txt"), "x1");
    {
        let m = Mounted::new(&s, &mountpoint(&s));
        fs::create_dir(m.path("drafts/m")).unwrap();
        fs::write(m.path("drafts/m/y.txt"), "y").unwrap();
        assert_eq!(write_control(&m.path("drafts/m/.commit"), "commit"), "ok");
        fs::create_dir(m.path("drafts/m")).unwrap();
        fs::write(m.path("drafts/m/z.txt"), "z").unwrap();
    }
    rm_wal();
    assert_eq!(versions(&s, "m"), ["v0", "v1", "v2"]);
    assert_eq!(cat(&s, "m:v2", "y.txt"), "y");
    assert_eq!(
        s.json(&["draft", "status", "m"])["added"],
        serde_json::json!(["z.txt"]),
        "the draft written through the mount"
    );
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
}

// ----- 6. blobs damaged behind the store's back -----

const VICTIM: &[u8] = b"the victim file, sixty-four bytes of content exactly, padded..\n";
const OTHER: &[u8] = b"an undamaged neighbour\n";

fn store_with_victim() -> (TestStore, PathBuf) {
    let s = TestStore::new();
    let src = s.path("src");
    write_file(&src.join("a.txt"), VICTIM);
    write_file(&src.join("b.txt"), OTHER);
    write_file(&src.join("sub/c.txt"), b"c\n");
    log(&s, "m", &src);
    let blob = s.blob_path_of(VICTIM);
    assert!(blob.exists(), "blob of a.txt at {}", blob.display());
    (s, blob)
}

/// `verify` exits 3 and names the blob, the version and the path.
fn assert_verify_names_victim(s: &TestStore, damage: &str) {
    let out = s.run(&["verify"]);
    assert_no_crash(&out, "verify");
    let err = stderr(&out);
    let hex = sha256_hex(VICTIM);
    assert_eq!(out.status.code(), Some(3), "verify after {damage}: {err}");
    assert!(
        err.contains(&hex) && err.contains("m:v0") && err.contains("a.txt"),
        "verify after {damage} should name blob {hex}, m:v0 and a.txt: {err}"
    );
}

/// `cat` and `get` of the damaged file fail naming it, and print or write none of its bytes.
fn assert_cli_refuses_victim(s: &TestStore, damage: &str) {
    let before = s.fingerprint();
    let out = s.run(&["cat", "m", "a.txt"]);
    assert_no_crash(&out, "cat");
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("a.txt") && says_blob_damaged(&err),
        "cat of a.txt after {damage} should fail naming a.txt and the damage; got {} with \
         stdout {:?} and stderr {err}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        out.stdout.is_empty(),
        "cat after {damage} printed {} bytes before failing: wrong bytes served as the file",
        out.stdout.len()
    );
    let dest = s.path("got");
    let out = s.run(&[os("get"), os("m"), dest.as_os_str()]);
    assert_no_crash(&out, "get");
    let err = stderr(&out);
    assert!(
        !out.status.success() && err.contains("a.txt"),
        "get after {damage} should fail naming a.txt; got {}: {err}",
        out.status
    );
    assert!(
        files_under(&dest).iter().all(|p| !p.ends_with("a.txt")),
        "get after {damage} wrote a.txt anyway"
    );
    // The undamaged file still reads, and nothing in the store changed.
    assert_eq!(cat(s, "m", "b.txt").as_bytes(), OTHER);
    assert_unchanged(
        &before,
        &s.fingerprint(),
        &format!("cat and get after {damage}"),
    );
}

/// Through the mount, reading a.txt fails with EIO (at open or read); the mount goes on
/// serving the other files.
fn assert_mount_eio_for_victim(s: &TestStore, damage: &str) {
    let m = Mounted::new(s, &mountpoint(s));
    let pid = m.server_pid();
    let path = m.path("m/v0/a.txt");
    let got = File::open(&path).and_then(|mut f| {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map(|_| buf)
    });
    match got {
        Err(e) => assert_eq!(
            e.raw_os_error().map(ename),
            Some("EIO".to_string()),
            "reading a.txt after {damage}: {e}"
        ),
        Ok(data) => panic!(
            "reading a.txt after {damage} through the mount gave {} bytes ({:?}) instead of \
             EIO; the file is {} bytes",
            data.len(),
            String::from_utf8_lossy(&data[..data.len().min(80)]),
            VICTIM.len()
        ),
    }
    // Also with pread at an offset, and a second open.
    let again = File::open(&path).and_then(|f| {
        let mut buf = [0u8; 16];
        std::os::unix::fs::FileExt::read_at(&f, &mut buf, 8).map(|n| buf[..n].to_vec())
    });
    assert_eq!(
        res(again),
        "EIO",
        "a second read of a.txt after {damage} through the mount"
    );
    assert_mount_answers(&m, pid, "m/v0/b.txt", OTHER, damage);
    assert_eq!(fs::read(m.path("m/v0/sub/c.txt")).unwrap(), b"c\n");
    drop(m);
    assert_no_panic_logged(s, damage);
}

#[test]
fn a_deleted_blob_gives_errors_naming_the_file_and_eio_through_the_mount() {
    let (s, blob) = store_with_victim();
    fs::remove_file(&blob).unwrap();
    assert_cli_refuses_victim(&s, "deleting its blob");
    assert_mount_eio_for_victim(&s, "deleting its blob");
}

#[test]
fn a_truncated_blob_is_reported_and_never_served_as_the_file() {
    let (s, blob) = store_with_victim();
    set_mode(&blob, 0o644);
    OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(20)
        .unwrap();
    assert_verify_names_victim(&s, "truncating its blob");
    assert_cli_refuses_victim(&s, "truncating its blob");
    assert_mount_eio_for_victim(&s, "truncating its blob");
}

#[test]
fn an_extended_blob_is_reported_and_never_served_as_the_file() {
    let (s, blob) = store_with_victim();
    set_mode(&blob, 0o644);
    OpenOptions::new()
        .append(true)
        .open(&blob)
        .unwrap()
        .write_all(b"APPENDED BEHIND THE STORE'S BACK\n")
        .unwrap();
    assert_verify_names_victim(&s, "extending its blob");
    assert_cli_refuses_victim(&s, "extending its blob");
    assert_mount_eio_for_victim(&s, "extending its blob");
}

#[test]
fn a_blob_altered_in_place_is_named_by_verify_and_crashes_nothing() {
    let (s, blob) = store_with_victim();
    set_mode(&blob, 0o644);
    let mut altered = VICTIM.to_vec();
    altered[10] ^= 0x20;
    fs::write(&blob, &altered).unwrap();
    assert_verify_names_victim(&s, "altering its blob in place");
    // Same size: reads may serve the bytes (only hashing tells); they must not crash.
    let out = s.run(&["cat", "m", "a.txt"]);
    assert_no_crash(&out, "cat of an altered blob");
    let out = s.run(&[os("get"), os("m"), s.path("got").as_os_str()]);
    assert_no_crash(&out, "get of an altered blob");
    let m = Mounted::new(&s, &mountpoint(&s));
    let pid = m.server_pid();
    let _ = fs::read(m.path("m/v0/a.txt"));
    assert_mount_answers(&m, pid, "m/v0/b.txt", OTHER, "an altered blob");
    drop(m);
    assert_no_panic_logged(&s, "an altered blob");
}

// ----- 7. a store on a read-only filesystem -----

fn read_only_store() -> (TestStore, PathBuf) {
    require_root();
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha"), ("b.txt", "bee")]);
    log(&s, "m", &src);
    let one = s.tree("one", &[("a.txt", "alpha v1")]);
    log(&s, "m", &one);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&src)]);
    (s, src)
}

#[test]
fn read_commands_work_on_a_store_on_a_read_only_filesystem() {
    let (s, _src) = read_only_store();
    let _ro = bind_read_only(&s.root);
    let dest = s.path("dest");
    let commands: Vec<Vec<&OsStr>> = vec![
        vec![os("list")],
        vec![os("list"), os("m")],
        vec![os("show"), os("m:v0")],
        vec![os("ls"), os("m")],
        vec![os("cat"), os("m:v0"), os("a.txt")],
        vec![os("get"), os("m:v0"), dest.as_os_str()],
        vec![os("verify")],
        vec![os("diff"), os("m:v0"), os("m:v1")],
        vec![os("draft"), os("list")],
    ];
    let mut problems = Vec::new();
    for args in &commands {
        let out = s.run(args);
        let what = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        assert_no_crash(&out, &what);
        if !out.status.success() {
            problems.push(format!(
                "{what} on a read-only store: exit {}: {}",
                out.status,
                stderr(&out).trim()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(cat(&s, "m:v0", "a.txt"), "alpha");
    assert_eq!(fs::read(dest.join("b.txt")).unwrap(), b"bee");
}

#[test]
fn changes_to_a_store_on_a_read_only_filesystem_fail_naming_it() {
    let (s, src) = read_only_store();
    let _ro = bind_read_only(&s.root);
    let store = p(&s.root).to_string();
    let g = p(&src);
    let commands: Vec<Vec<&str>> = vec![
        vec!["log", "m", g, "--type", "dataset"],
        vec!["log", "fresh", g, "--type", "dataset"],
        vec!["draft", "new", "other"],
        vec!["draft", "add", "m", g],
        vec!["draft", "commit", "m"],
        vec!["draft", "discard", "m"],
        // Status builds the draft's tree in a transaction it rolls back: a write, refused.
        vec!["draft", "status", "m"],
        vec![
            "upsert",
            "m",
            g,
            "--type",
            "dataset",
            "--distributed-id",
            "r",
        ],
        vec!["alias", "set", "m:v0", "best"],
        vec!["delete", "m:v0"],
        vec!["gc"],
    ];
    let before = s.fingerprint();
    let mut problems = Vec::new();
    for args in &commands {
        let out = s.run(args);
        let what = args.join(" ");
        assert_no_crash(&out, &what);
        let err = stderr(&out);
        if out.status.code() != Some(1) {
            problems.push(format!("{what}: exit {} (expected 1): {err}", out.status));
        } else if !(err.contains(&store) && err.to_lowercase().contains("read-only")) {
            problems.push(format!(
                "{what}: the error should name the store {store} and say it is read-only: {}",
                err.trim()
            ));
        }
        assert_unchanged(&before, &s.fingerprint(), &what);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_store_on_a_read_only_filesystem_mounts_read_only() {
    let (s, _src) = read_only_store();
    let _ro = bind_read_only(&s.root);
    let before = s.fingerprint();
    let m = Mounted::new(&s, &mountpoint(&s));
    assert_eq!(fs::read(m.path("m/v0/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read(m.path("m/latest/a.txt")).unwrap(), b"alpha v1");
    assert_eq!(
        res(fs::create_dir(m.path("drafts/new"))),
        "EROFS",
        "mkdir drafts/new"
    );
    assert_eq!(
        res(fs::write(m.path("drafts/m/new.txt"), b"x")),
        "EROFS",
        "creating a file in an existing draft"
    );
    assert_eq!(
        res(OpenOptions::new()
            .write(true)
            .open(m.path("drafts/m/a.txt"))),
        "EROFS",
        "opening a draft's file for writing"
    );
    assert_eq!(
        fs::read(m.path("drafts/m/b.txt")).unwrap(),
        b"bee",
        "reading a draft"
    );
    drop(m);
    assert_unchanged(&before, &s.fingerprint(), "mounting a read-only store");
}

// ----- 8. hostile requests to the mount -----

/// A mounted store with m:v0 = {a.txt, sub/b.txt}, a draft of it, and a local directory with
/// the same files, for comparing errnos with a local filesystem.
struct Hostile<'a> {
    m: Mounted<'a>,
    pid: i32,
    local: PathBuf,
}

const A: &[u8] = b"alpha content\n";

fn hostile_setup(s: &TestStore) -> Hostile<'_> {
    let src = s.path("src");
    write_file(&src.join("a.txt"), A);
    write_file(&src.join("sub/b.txt"), b"bee\n");
    log(s, "m", &src);
    let local = s.path("local");
    write_file(&local.join("a.txt"), A);
    write_file(&local.join("sub/b.txt"), b"bee\n");
    let m = Mounted::new(s, &mountpoint(s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let pid = m.server_pid();
    Hostile { m, pid, local }
}

/// Reads through `fd` in ways no normal program does; each result as "ok:VALUE" or an errno.
fn hostile_reads(path: &Path) -> BTreeMap<&'static str, String> {
    let mut r = BTreeMap::new();
    let c = cpath(path);
    let open = |flags: i32| -> Result<i32, String> {
        // SAFETY: a NUL-terminated path.
        sys(unsafe { libc::open(c.as_ptr(), flags) } as i64).map(|fd| fd as i32)
    };
    let fmt = |x: Result<i64, String>| match x {
        Ok(v) => format!("ok:{v}"),
        Err(e) => e,
    };
    // O_DIRECT open, then an aligned read of the whole file.
    r.insert(
        "O_DIRECT read",
        match open(libc::O_RDONLY | libc::O_DIRECT) {
            Err(e) => e,
            Ok(fd) => {
                let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
                // SAFETY: a 4096-byte, 4096-aligned buffer, freed below.
                let buf = unsafe { std::alloc::alloc_zeroed(layout) };
                // SAFETY: buf is valid for 4096 bytes.
                let n = sys(unsafe { libc::read(fd, buf.cast(), 4096) } as i64);
                let out = match n {
                    Ok(n) => {
                        // SAFETY: n bytes were written into buf.
                        let data = unsafe { std::slice::from_raw_parts(buf, n as usize) };
                        if data == A {
                            "ok:content".into()
                        } else {
                            format!("ok:{} other bytes", n)
                        }
                    }
                    Err(e) => e,
                };
                // SAFETY: allocated above with this layout; fd is ours.
                unsafe {
                    std::alloc::dealloc(buf, layout);
                    libc::close(fd);
                }
                out
            }
        },
    );
    let fd = open(libc::O_RDONLY).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = [0u8; 64];
    let pread = |off: i64, len: usize| -> Result<i64, String> {
        // SAFETY: buf is valid for 64 bytes and len is at most 16.
        sys(unsafe { libc::pread(fd, buf.as_ptr() as *mut _, len, off) } as i64)
    };
    r.insert("pread at 2^62", fmt(pread(1 << 62, 16)));
    r.insert("pread at 2^63-1", fmt(pread(i64::MAX, 16)));
    r.insert("pread at -1", fmt(pread(-1, 16)));
    r.insert("pread at size", fmt(pread(A.len() as i64, 16)));
    r.insert("pread of 0 bytes", fmt(pread(0, 0)));
    // Sizes far beyond the buffer: the kernel refuses them before any byte is copied (the
    // buffer is large enough for anything a server could send in one reply regardless).
    let mut big = vec![0u8; 1 << 20];
    for (label, count) in [
        ("pread of SSIZE_MAX bytes", isize::MAX as usize),
        ("pread of 2^63 bytes", 1usize << 63),
        ("pread of 2^40 bytes", 1usize << 40),
    ] {
        // SAFETY: `big` is valid for 1 MiB; larger counts fail the kernel's range check
        // (user space ends below 2^47) before anything is written.
        let n = sys(unsafe { libc::pread(fd, big.as_mut_ptr().cast(), count, 0) } as i64);
        r.insert(label, fmt(n));
    }
    let seek = |off: i64, whence: i32| -> Result<i64, String> {
        // SAFETY: fd is open.
        sys(unsafe { libc::lseek(fd, off, whence) })
    };
    r.insert("SEEK_DATA 0", fmt(seek(0, libc::SEEK_DATA)));
    r.insert("SEEK_HOLE 0", fmt(seek(0, libc::SEEK_HOLE)));
    r.insert(
        "SEEK_DATA at size",
        fmt(seek(A.len() as i64, libc::SEEK_DATA)),
    );
    r.insert(
        "SEEK_HOLE at size",
        fmt(seek(A.len() as i64, libc::SEEK_HOLE)),
    );
    r.insert("SEEK_DATA 2^40", fmt(seek(1 << 40, libc::SEEK_DATA)));
    r.insert("SEEK_DATA -1", fmt(seek(-1, libc::SEEK_DATA)));
    r.insert("SEEK_END +2^63-1", fmt(seek(i64::MAX, libc::SEEK_END)));
    r.insert("SEEK_SET -1", fmt(seek(-1, libc::SEEK_SET)));
    r.insert("read after seek to 2^62", {
        let _ = seek(1 << 62, libc::SEEK_SET);
        // SAFETY: buf is valid for 64 bytes.
        fmt(sys(
            unsafe { libc::read(fd, buf.as_mut_ptr().cast(), 64) } as i64
        ))
    });
    r.insert("getdents on a file", {
        let mut dbuf = [0u8; 1024];
        // SAFETY: dbuf is valid for its length.
        fmt(sys(unsafe {
            libc::syscall(libc::SYS_getdents64, fd, dbuf.as_mut_ptr(), dbuf.len())
        }))
    });
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    r.insert(
        "O_DIRECTORY on a file",
        fmt(open(libc::O_RDONLY | libc::O_DIRECTORY).map(|fd| {
            // SAFETY: fd is ours.
            unsafe { libc::close(fd) };
            0
        })),
    );
    r.insert("opendir on a file", res(fs::read_dir(path)));
    let mut slash = path.as_os_str().as_bytes().to_vec();
    slash.push(b'/');
    r.insert("stat with a trailing slash", res(fs::metadata(ob(&slash))));
    r.insert("lookup beneath a file", res(fs::metadata(path.join("x"))));
    r.insert("readlink of a file", res(fs::read_link(path)));
    r
}

#[test]
fn hostile_reads_get_the_answers_a_local_file_gives() {
    let s = TestStore::new();
    let h = hostile_setup(&s);
    let local = hostile_reads(&h.local.join("a.txt"));
    let mut problems = Vec::new();
    for (what, path) in [
        ("version", h.m.path("m/v0/a.txt")),
        ("alias", h.m.path("m/latest/a.txt")),
        ("draft", h.m.path("drafts/m/a.txt")),
    ] {
        let got = hostile_reads(&path);
        for (op, want) in &local {
            if got.get(op) != Some(want) {
                problems.push(format!(
                    "{op} on a {what} file: {:?}, a local file gives {want}",
                    got.get(op)
                ));
            }
        }
    }
    // A directory of a version read as a file.
    let dir = h.m.path("m/v0/sub");
    let got = res(File::open(&dir).and_then(|mut f| f.read(&mut [0u8; 16])));
    let want = res(File::open(h.local.join("sub")).and_then(|mut f| f.read(&mut [0u8; 16])));
    if got != want {
        problems.push(format!(
            "read(2) of a version directory: {got}, locally {want}"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_mount_answers(&h.m, h.pid, "m/v0/a.txt", A, "hostile reads");
    drop(h);
    assert_no_panic_logged(&s, "hostile reads");
}

fn getxattr_sized(path: &Path, name: &str, size: usize) -> Result<i64, String> {
    let c = cpath(path);
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: NUL-terminated strings; buf is valid for `size` bytes (null when 0).
    sys(unsafe {
        libc::getxattr(
            c.as_ptr(),
            n.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    } as i64)
}

fn listxattr_sized(path: &Path, size: usize) -> Result<i64, String> {
    let c = cpath(path);
    let mut buf = vec![0u8; size.max(1)];
    // SAFETY: a NUL-terminated path; buf is valid for `size` bytes (null when 0).
    sys(unsafe {
        libc::listxattr(
            c.as_ptr(),
            if size == 0 {
                std::ptr::null_mut()
            } else {
                buf.as_mut_ptr().cast()
            },
            size,
        )
    } as i64)
}

fn mknod(path: &Path, mode: u32, dev: u64) -> String {
    let c = cpath(path);
    // SAFETY: a NUL-terminated path.
    match sys(unsafe { libc::mknod(c.as_ptr(), mode, dev) } as i64) {
        Ok(_) => "ok".into(),
        Err(e) => e,
    }
}

#[test]
fn hostile_xattr_and_special_file_requests_get_local_errnos() {
    let s = TestStore::new();
    let h = hostile_setup(&s);
    let m = &h.m;
    let mut problems = Vec::new();
    let mut expect =
        |what: String, got: String, want: &[&str]| check(&mut problems, &what, got, want);

    // Extended attributes: size 0 asks for the length; a buffer too small is ERANGE.
    let attrs: Vec<(PathBuf, &str)> = vec![
        (m.path("m/v0/a.txt"), "user.artifactfs.sha256"),
        (m.path("m/v0"), "user.artifactfs.digest"),
        (m.path("m/v0"), "user.artifactfs.ref"),
        (m.path("m/v0"), "user.artifactfs.created"),
        (m.path("m"), "user.artifactfs.type"),
        (m.path(""), "user.artifactfs.pid"),
    ];
    for (path, name) in &attrs {
        let full = getxattr(path, name)
            .unwrap_or_else(|e| panic!("getxattr {} {name}: errno {e}", path.display()));
        let len = full.len();
        let fmt = |r: Result<i64, String>| match r {
            Ok(v) => format!("ok:{v}"),
            Err(e) => e,
        };
        expect(
            format!("getxattr {name} size 0"),
            fmt(getxattr_sized(path, name, 0)),
            &[&format!("ok:{len}")],
        );
        for size in [1, len - 1] {
            expect(
                format!("getxattr {name} size {size}"),
                fmt(getxattr_sized(path, name, size)),
                &["ERANGE"],
            );
        }
        expect(
            format!("getxattr {name} exact size"),
            fmt(getxattr_sized(path, name, len)),
            &[&format!("ok:{len}")],
        );
    }
    for path in [
        m.path("m/v0/a.txt"),
        m.path("m/v0"),
        m.path("m"),
        m.path(""),
        m.path("drafts/m/a.txt"),
    ] {
        let total = listxattr_sized(&path, 0);
        match total {
            Ok(0) => {}
            Ok(n) => {
                let fmt = |r: Result<i64, String>| match r {
                    Ok(v) => format!("ok:{v}"),
                    Err(e) => e,
                };
                expect(
                    format!("listxattr {} size 1", path.display()),
                    fmt(listxattr_sized(&path, 1)),
                    &["ERANGE"],
                );
                expect(
                    format!("listxattr {} size {}", path.display(), n - 1),
                    fmt(listxattr_sized(&path, n as usize - 1)),
                    &["ERANGE"],
                );
                expect(
                    format!("listxattr {} exact size", path.display()),
                    fmt(listxattr_sized(&path, n as usize)),
                    &[&format!("ok:{n}")],
                );
            }
            Err(e) => expect(format!("listxattr {} size 0", path.display()), e, &["ok"]),
        }
    }
    expect(
        "getxattr of a missing name".into(),
        getxattr(&m.path("m/v0/a.txt"), "user.nope")
            .err()
            .map(ename)
            .unwrap_or("ok".into()),
        &["ENODATA"],
    );
    expect(
        "getxattr sha256 of a directory".into(),
        getxattr(&m.path("m/v0/sub"), "user.artifactfs.sha256")
            .err()
            .map(ename)
            .unwrap_or("ok".into()),
        &["ENODATA"],
    );
    let setx = |path: &Path, name: &str| -> String {
        let c = cpath(path);
        let n = CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings and a 1-byte value.
        match sys(
            unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) } as i64,
        ) {
            Ok(_) => "ok".into(),
            Err(e) => e,
        }
    };
    expect(
        "setxattr on a version file".into(),
        setx(&m.path("m/v0/a.txt"), "user.x"),
        &["EROFS"],
    );
    expect(
        "setxattr on a version dir".into(),
        setx(&m.path("m/v0"), "user.x"),
        &["EROFS"],
    );
    expect(
        "setxattr replacing user.artifactfs.sha256".into(),
        setx(&m.path("m/v0/a.txt"), "user.artifactfs.sha256"),
        &["EROFS"],
    );
    expect(
        "setxattr on the root".into(),
        setx(&m.path(""), "user.artifactfs.pid"),
        &["EROFS"],
    );
    expect(
        "setxattr on a draft file".into(),
        setx(&m.path("drafts/m/a.txt"), "user.x"),
        &["EOPNOTSUPP"],
    );
    let rmx = |path: &Path, name: &str| -> String {
        let c = cpath(path);
        let n = CString::new(name).unwrap();
        // SAFETY: NUL-terminated strings.
        match sys(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) } as i64) {
            Ok(_) => "ok".into(),
            Err(e) => e,
        }
    };
    expect(
        "removexattr on a version file".into(),
        rmx(&m.path("m/v0/a.txt"), "user.artifactfs.sha256"),
        &["EROFS"],
    );

    // Special files in a draft: none of them can be stored.
    let d = m.path("drafts/m");
    expect(
        "mknod FIFO".into(),
        mknod(&d.join("fifo"), libc::S_IFIFO | 0o644, 0),
        &["EPERM"],
    );
    expect(
        "mknod char device".into(),
        mknod(&d.join("null"), libc::S_IFCHR | 0o644, libc::makedev(1, 3)),
        &["EPERM"],
    );
    expect(
        "mknod block device".into(),
        mknod(&d.join("loop"), libc::S_IFBLK | 0o644, libc::makedev(7, 0)),
        &["EPERM"],
    );
    expect(
        "mknod socket".into(),
        mknod(&d.join("sock"), libc::S_IFSOCK | 0o644, 0),
        &["EPERM"],
    );
    // mknod of a regular file is how some programs create one: a local filesystem makes it.
    expect(
        "mknod regular file".into(),
        mknod(&d.join("reg"), libc::S_IFREG | 0o644, 0),
        &["ok"],
    );
    expect(
        "mknod in a version".into(),
        mknod(&m.path("m/v0/fifo"), libc::S_IFIFO | 0o644, 0),
        &["EROFS"],
    );

    // Crossing between versions and drafts.
    expect(
        "link version file into a draft".into(),
        res(fs::hard_link(m.path("m/v0/a.txt"), d.join("hard"))),
        &["EPERM", "EXDEV"],
    );
    expect(
        "link draft file into a version".into(),
        res(fs::hard_link(d.join("a.txt"), m.path("m/v0/hard"))),
        &["EROFS", "EXDEV"],
    );
    expect(
        "rename version file into a draft".into(),
        res(fs::rename(m.path("m/v0/a.txt"), d.join("moved"))),
        &["EROFS", "EXDEV"],
    );
    expect(
        "rename draft file into a version".into(),
        res(fs::rename(d.join("a.txt"), m.path("m/v0/moved"))),
        &["EROFS", "EXDEV"],
    );
    expect(
        "rename a version dir into drafts/".into(),
        res(fs::rename(m.path("m/v0"), m.path("drafts/zz"))),
        &["EROFS", "EXDEV"],
    );
    expect(
        "rename a draft over a version".into(),
        res(fs::rename(m.path("drafts/m"), m.path("m/v9"))),
        &["EROFS", "EXDEV"],
    );

    // O_TMPFILE: unsupported is what a filesystem without it answers.
    let tmpfile = |dir: &Path| -> String {
        let c = cpath(dir);
        // SAFETY: a NUL-terminated path.
        match sys(unsafe { libc::open(c.as_ptr(), libc::O_TMPFILE | libc::O_RDWR, 0o644) } as i64) {
            Ok(fd) => {
                // SAFETY: fd is ours.
                unsafe { libc::close(fd as i32) };
                "ok".into()
            }
            Err(e) => e,
        }
    };
    expect(
        "O_TMPFILE in a draft".into(),
        tmpfile(&d),
        &["ok", "EOPNOTSUPP"],
    );
    expect(
        "O_TMPFILE in a version".into(),
        tmpfile(&m.path("m/v0")),
        &["EROFS", "EOPNOTSUPP"],
    );

    // Nothing of that reached the draft but the regular file.
    let names: BTreeSet<String> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let allowed: BTreeSet<String> = ["a.txt", "sub", "reg"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    expect(
        "what the draft holds afterwards".into(),
        if names.is_subset(&allowed) {
            "ok".into()
        } else {
            format!("{names:?}")
        },
        &["ok"],
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_mount_answers(
        &h.m,
        h.pid,
        "m/v0/a.txt",
        A,
        "hostile xattr and special-file requests",
    );
    drop(h);
    assert_no_panic_logged(&s, "hostile xattr and special-file requests");
}

/// Changes in `dir` (a draft, or a local directory holding the same files) that no normal
/// program makes; each result as "ok[:VALUE]" or an errno.
fn hostile_changes(dir: &Path) -> BTreeMap<&'static str, String> {
    let mut r = BTreeMap::new();
    let a = dir.join("a.txt");
    let ca = cpath(&a);
    let fmt = |x: Result<i64, String>| match x {
        Ok(_) => "ok".to_string(),
        Err(e) => e,
    };
    // SAFETY (all calls below): NUL-terminated paths, fds we opened.
    r.insert(
        "truncate to -1",
        fmt(sys(unsafe { libc::truncate(ca.as_ptr(), -1) } as i64)),
    );
    r.insert(
        "truncate to 2^63-1",
        fmt(sys(unsafe { libc::truncate(ca.as_ptr(), i64::MAX) } as i64)),
    );
    let fd = unsafe { libc::open(ca.as_ptr(), libc::O_RDWR) };
    assert!(fd >= 0, "open {} for writing", a.display());
    r.insert(
        "ftruncate to -1",
        fmt(sys(unsafe { libc::ftruncate(fd, -1) } as i64)),
    );
    r.insert(
        "ftruncate to 2^63-1",
        fmt(sys(unsafe { libc::ftruncate(fd, i64::MAX) } as i64)),
    );
    r.insert(
        "pwrite at 2^63-2",
        fmt(sys(
            unsafe { libc::pwrite(fd, b"xy".as_ptr().cast(), 2, i64::MAX - 1) } as i64,
        )),
    );
    r.insert(
        "pwrite at -1",
        fmt(sys(
            unsafe { libc::pwrite(fd, b"xy".as_ptr().cast(), 2, -1) } as i64,
        )),
    );
    r.insert(
        "fallocate past 2^63",
        fmt(sys(
            unsafe { libc::fallocate(fd, 0, i64::MAX - 10, 100) } as i64
        )),
    );
    r.insert(
        "fallocate negative length",
        fmt(sys(unsafe { libc::fallocate(fd, 0, 0, -1) } as i64)),
    );
    unsafe { libc::close(fd) };
    r.insert(
        "size afterwards",
        format!(
            "ok:{}",
            fs::metadata(&a).map(|m| m.len()).unwrap_or(u64::MAX)
        ),
    );

    let omit = libc::UTIME_OMIT;
    let now = libc::UTIME_NOW;
    let ut = |path: &Path, at: i64, mt: i64, flags: i32| -> String {
        let c = cpath(path);
        let times = [
            libc::timespec {
                tv_sec: 1_000_000,
                tv_nsec: at,
            },
            libc::timespec {
                tv_sec: 2_000_000,
                tv_nsec: mt,
            },
        ];
        fmt(sys(
            unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), flags) } as i64,
        ))
    };
    let mtime_before = fs::metadata(&a).map(|m| (m.mtime(), m.mtime_nsec())).ok();
    r.insert("utimensat OMIT OMIT", ut(&a, omit, omit, 0));
    r.insert(
        "mtime kept by OMIT OMIT",
        format!(
            "{}",
            fs::metadata(&a).map(|m| (m.mtime(), m.mtime_nsec())).ok() == mtime_before
        ),
    );
    r.insert("utimensat NOW OMIT", ut(&a, now, omit, 0));
    r.insert(
        "mtime kept by NOW OMIT",
        format!(
            "{}",
            fs::metadata(&a).map(|m| (m.mtime(), m.mtime_nsec())).ok() == mtime_before
        ),
    );
    r.insert("utimensat OMIT 5ns", ut(&a, omit, 5, 0));
    r.insert(
        "mtime after OMIT 5ns",
        format!(
            "{:?}",
            fs::metadata(&a).map(|m| (m.mtime(), m.mtime_nsec())).ok()
        ),
    );
    r.insert("utimensat OMIT NOW", ut(&a, omit, now, 0));
    r.insert("utimensat bad nanoseconds", ut(&a, 1_000_000_000, omit, 0));
    r.insert("utimensat negative nanoseconds", ut(&a, omit, -5, 0));
    r.insert("utimensat on a symlink, NOFOLLOW", {
        let l = dir.join("lnk");
        let _ = std::os::unix::fs::symlink("a.txt", &l);
        ut(&l, omit, 7, libc::AT_SYMLINK_NOFOLLOW)
    });
    r.insert("utimensat NOW NOW on the directory", ut(dir, now, now, 0));

    let cnew = cpath(&dir.join("newdir"));
    r.insert("open O_CREAT|O_DIRECTORY", {
        let fd = unsafe {
            libc::open(
                cnew.as_ptr(),
                libc::O_RDONLY | libc::O_CREAT | libc::O_DIRECTORY,
                0o644,
            )
        };
        let out = fmt(sys(fd as i64));
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        out
    });
    r.insert("rmdir of .", res(fs::remove_dir(dir.join("sub/."))));
    r.insert("rmdir of ..", res(fs::remove_dir(dir.join("sub/.."))));
    r.insert(
        "mkdir beneath a file",
        res(fs::create_dir(dir.join("a.txt/x"))),
    );
    r.insert(
        "create beneath a file",
        res(fs::write(dir.join("a.txt/x"), b"x")),
    );
    r.insert(
        "rename onto a path beneath a file",
        res(fs::rename(dir.join("sub/b.txt"), dir.join("a.txt/b"))),
    );
    r.insert(
        "rename a directory into itself",
        res(fs::rename(dir.join("sub"), dir.join("sub/inner"))),
    );
    r.insert("unlink a directory", res(fs::remove_file(dir.join("sub"))));
    r.insert(
        "symlink with an empty target",
        res(std::os::unix::fs::symlink("", dir.join("empty-link"))),
    );
    r.insert("open O_RDONLY|O_TRUNC", {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_TRUNC)
            .open(dir.join("sub/b.txt"));
        let size = fs::metadata(dir.join("sub/b.txt"))
            .map(|m| m.len())
            .unwrap_or(u64::MAX);
        format!("{} size {size}", res(f))
    });

    // Readdir while the entries are being removed: no error, no name twice.
    let many = dir.join("many");
    fs::create_dir(&many).unwrap();
    for i in 0..300 {
        fs::write(many.join(format!("f{i:03}")), b"x").unwrap();
    }
    let mut seen = Vec::new();
    let mut err = None;
    for (i, e) in fs::read_dir(&many).unwrap().enumerate() {
        match e {
            Ok(e) => seen.push(e.file_name()),
            Err(e) => {
                err = Some(res::<()>(Err(e)));
                break;
            }
        }
        if i == 5 {
            for j in 0..300 {
                let _ = fs::remove_file(many.join(format!("f{j:03}")));
            }
        }
    }
    let distinct: BTreeSet<_> = seen.iter().collect();
    r.insert(
        "readdir while removing",
        match err {
            Some(e) => e,
            None if distinct.len() == seen.len() => "ok".into(),
            None => format!("a name seen twice among {}", seen.len()),
        },
    );
    r.insert(
        "listing afterwards",
        format!("{:?}", fs::read_dir(&many).map(|d| d.count()).ok()),
    );
    r.insert("rmdir afterwards", res(fs::remove_dir(&many)));
    r
}

#[test]
fn hostile_changes_in_a_draft_get_the_errnos_of_a_local_directory() {
    let s = TestStore::new();
    let h = hostile_setup(&s);
    let local = hostile_changes(&h.local);
    let draft = hostile_changes(&h.m.path("drafts/m"));
    let mut problems = Vec::new();
    for (op, want) in &local {
        let got = draft.get(op);
        if got != Some(want) {
            problems.push(format!(
                "{op} in a draft: {got:?}, in a local directory: {want}"
            ));
        }
    }
    // And on a version: every change is EROFS, with the same no-op exceptions a read-only
    // filesystem makes.
    let v = h.m.path("m/v0/a.txt");
    let cv = cpath(&v);
    // SAFETY: NUL-terminated path.
    let trunc = sys(unsafe { libc::truncate(cv.as_ptr(), -1) } as i64);
    if !matches!(
        trunc.as_ref().err().map(String::as_str),
        Some("EINVAL" | "EROFS")
    ) {
        problems.push(format!("truncate of a version file to -1: {trunc:?}"));
    }
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: NUL-terminated path, two timespecs.
    let ut = sys(unsafe { libc::utimensat(libc::AT_FDCWD, cv.as_ptr(), times.as_ptr(), 0) } as i64);
    if ut != Err("EROFS".into()) {
        problems.push(format!(
            "utimensat NOW OMIT on a version file: {ut:?}, expected EROFS"
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // Nothing enormous is left to commit: the draft commits like a local copy would.
    let _ = fs::write(h.m.path("drafts/m/a.txt"), A);
    assert_eq!(write_control(&h.m.path("drafts/m/.commit"), "commit"), "ok");
    assert_mount_answers(&h.m, h.pid, "m/v0/a.txt", A, "hostile changes");
    drop(h);
    assert_no_panic_logged(&s, "hostile changes in a draft");
}

#[test]
fn hostile_names_at_the_top_of_the_mount_are_refused_without_harm() {
    let s = TestStore::new();
    let h = hostile_setup(&s);
    let m = &h.m;
    let mut problems = Vec::new();
    let mut expect = |what: &str, got: String, want: &[&str]| check(&mut problems, what, got, want);
    for (what, rel) in [
        ("artifact not UTF-8", &b"\xff\xfe"[..]),
        ("version number overflowing u64", b"m/v18446744073709551616"),
        (
            "version number of 30 digits",
            b"m/v999999999999999999999999999999",
        ),
        ("negative version", b"m/v-1"),
        ("alias not UTF-8", b"m/\xff"),
        ("a reference instead of a name", b"m:v0"),
        ("draft not UTF-8", b"drafts/\xff"),
        ("distributed draft without an id", b"drafts/m@"),
        ("control file of a missing draft", b"drafts/zz/.commit"),
    ] {
        expect(
            what,
            res(fs::symlink_metadata(m.path("").join(ob(rel)))),
            &["ENOENT", "EINVAL"],
        );
    }
    for (what, rel) in [
        ("draft not UTF-8", &b"drafts/\xff\xfe"[..]),
        ("draft with a newline", b"drafts/a\nb"),
        ("draft named drafts", b"drafts/drafts"),
        (
            "draft of 200 characters",
            &[&b"drafts/"[..], &[b'q'; 200]].concat(),
        ),
        ("distributed id not UTF-8", b"drafts/m@\xff"),
        ("distributed id empty", b"drafts/m@"),
    ] {
        expect(
            what,
            res(fs::create_dir(m.path("").join(ob(rel)))),
            &["EINVAL", "ENAMETOOLONG"],
        );
    }
    // A write far beyond the end of a control file is still just a request.
    let control = m.path("drafts/m/.commit");
    let f = OpenOptions::new().write(true).open(&control).unwrap();
    let far = std::os::unix::fs::FileExt::write_at(&f, b"x", 1 << 62);
    drop(f);
    expect(
        "write at 2^62 into .commit",
        res(far),
        &["EINVAL", "EFBIG", "ok"],
    );
    assert_eq!(versions(&s, "m"), ["v0"], "nothing committed");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_mount_answers(&h.m, h.pid, "m/v0/a.txt", A, "hostile names at the top");
    drop(h);
    assert_no_panic_logged(&s, "hostile names at the top of the mount");
}

#[test]
fn a_deleted_catalog_next_to_blobs_is_refused_not_recreated() {
    // Without its catalog the store's blobs are unreachable, not garbage: taking the store for
    // a new one would let gc delete every one of them.
    let (s, src) = store_with_a_big_catalog();
    for ext in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(s.root.join(format!("catalog.db{ext}")));
    }
    let blobs_before = s.blob_files();
    let g = p(&src);
    for args in [
        vec!["list"],
        vec!["gc"],
        vec!["verify"],
        vec!["log", "m", g, "--type", "dataset"],
    ] {
        let out = s.run(&args);
        assert_no_crash(&out, &args.join(" "));
        let err = assert_failure(&out, &args);
        assert!(
            err.contains("catalog.db") && err.contains("missing"),
            "{}: the error should name the missing catalog: {err}",
            args.join(" ")
        );
        assert!(
            !s.root.join("catalog.db").exists(),
            "{}: recreated an empty catalog",
            args.join(" ")
        );
        assert_eq!(
            s.blob_files(),
            blobs_before,
            "{}: blobs changed",
            args.join(" ")
        );
    }
}
