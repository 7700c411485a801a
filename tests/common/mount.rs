//! Helpers for tests that mount a store for real: a guard that mounts and always unmounts,
//! checks that FUSE is usable (failing loudly, never skipping), the mount table, polling with a
//! deadline, external tools with a timeout, and snapshots of directory trees to compare a copy
//! made out of the mount with its source.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::{
    BIN, TestStore, bin_for_others, run_command, sha256_hex, stderr, stdout, wait_with_timeout,
};

/// How long a mount may take to answer, and an unmounted server to exit.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(20);

/// Mount tests talk to the kernel's FUSE device and mount as root. When that is impossible they
/// fail with a message saying why; they never pass by skipping.
pub fn require_fuse() {
    match fs::metadata("/dev/fuse") {
        Ok(m) if m.file_type().is_char_device() => {}
        Ok(_) => panic!("FUSE is unusable: /dev/fuse exists but is not a character device"),
        Err(e) => panic!(
            "FUSE is unusable: /dev/fuse: {e}. These tests mount for real: load the fuse module \
             (modprobe fuse) or give the container the device (--device /dev/fuse); they do not skip"
        ),
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid,
        0,
        "mount tests run as root (they mount with /dev/fuse directly and switch to uid {} for the \
         fusermount3 test); run them as root, e.g. through .ci/run",
        super::NOBODY
    );
}

/// The path of `fusermount3`, which the unprivileged mount goes through; fails if missing.
pub fn require_fusermount3() -> PathBuf {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file());
    let Some(path) = found else {
        panic!(
            "fusermount3 not found: install fuse3 (scripts/setup.sh does: apt-get install fuse3); \
             unprivileged mounts go through it"
        );
    };
    let mode = fs::metadata(&path).unwrap().permissions().mode();
    assert!(
        mode & 0o4000 != 0 && fs::metadata(&path).unwrap().uid() == 0,
        "{} is not setuid root (mode {mode:o}); reinstall fuse3",
        path.display()
    );
    path
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Every mount exactly at `path` (absolute, canonical): (filesystem type, source), in mount order.
pub fn mounts_at(path: &Path) -> Vec<(String, String)> {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let want = path.as_os_str().as_bytes();
    let mut found = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() > 4 && unescape_mountinfo(fields[4]) == want && sep + 2 < fields.len() {
            found.push((fields[sep + 1].to_string(), fields[sep + 2].to_string()));
        }
    }
    found
}

pub fn is_mounted(path: &Path) -> bool {
    !mounts_at(path).is_empty()
}

/// Polls `check` every 20 ms until it returns Ok or `limit` has passed; then fails with `what`
/// and the last reason. Returns how long it took.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> Duration {
    let start = Instant::now();
    loop {
        match check() {
            Ok(()) => return start.elapsed(),
            Err(why) => {
                if start.elapsed() > limit {
                    panic!("{what}: not so after {limit:?}: {why}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads an extended attribute; Err(errno) on failure.
pub fn getxattr(path: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated and the buffer is valid for its length.
    let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// Whether process `pid` is gone or a zombie (done serving, not yet reaped).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

/// A command with captured output, run with a timeout (a hang fails the test).
pub fn run_tool(program: &str, args: &[&OsStr], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    run_command(cmd)
}

/// Like [`run_tool`], and the command must succeed; returns its standard output.
pub fn tool_ok(program: &str, args: &[&OsStr], cwd: Option<&Path>) -> String {
    let out = run_tool(program, args, cwd);
    assert!(
        out.status.success(),
        "{program} {args:?} (in {cwd:?}) failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        tail(&stdout(&out), 3000),
        tail(&stderr(&out), 3000)
    );
    stdout(&out)
}

/// `sh -c SCRIPT` with positional arguments $1..., which must succeed; returns stdout.
pub fn sh_ok(script: &str, args: &[&OsStr]) -> String {
    let mut all: Vec<&OsStr> = vec![OsStr::new("-c"), OsStr::new(script), OsStr::new("sh")];
    all.extend_from_slice(args);
    tool_ok("sh", &all, None)
}

/// `python3 -c SCRIPT ARGS...`, which must succeed; returns stdout.
pub fn python_ok(script: &str, args: &[&OsStr]) -> String {
    let mut all: Vec<&OsStr> = vec![OsStr::new("-c"), OsStr::new(script)];
    all.extend_from_slice(args);
    tool_ok("python3", &all, None)
}

/// The last `n` bytes of a long text, for failure messages.
pub fn tail(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    format!("...{}", &s[i..])
}

/// A mounted store. Dropping it unmounts (`artifactfs umount`, then `fusermount3 -u -z`, then
/// `umount -l`) so that a failing test never leaves a mount behind.
pub struct Mounted<'a> {
    pub store: &'a TestStore,
    /// The mount point, absolute and canonical.
    pub mp: PathBuf,
    /// The user the mount runs as, when not the test's own.
    uid: Option<u32>,
    /// The `mount --foreground` process, when the mount runs attached.
    child: Option<Child>,
}

impl<'a> Mounted<'a> {
    /// `artifactfs --store S mount MP`: returns once the command has returned, which must
    /// mean the mount answers.
    pub fn new(store: &'a TestStore, mp: &Path) -> Self {
        Self::background(store, mp, None)
    }

    /// A guard for a mount made by the test itself (by running `artifactfs mount`), so it is
    /// unmounted however the test ends.
    pub fn adopt(store: &'a TestStore, mp: &Path) -> Self {
        let mp = canonical_mountpoint(mp);
        assert!(is_mounted(&mp), "nothing is mounted at {}", mp.display());
        Mounted {
            store,
            mp,
            uid: None,
            child: None,
        }
    }

    /// The same, run as `uid` (and that user's group).
    pub fn new_as(store: &'a TestStore, mp: &Path, uid: u32) -> Self {
        Self::background(store, mp, Some(uid))
    }

    /// Mounting needs a store: one that nothing was logged into yet is made with `init` first.
    fn background(store: &'a TestStore, mp: &Path, uid: Option<u32>) -> Self {
        require_fuse();
        store.ensure_store();
        let mp = canonical_mountpoint(mp);
        let args = [OsStr::new("mount"), mp.as_os_str()];
        let out = match uid {
            Some(u) => store.run_as(u, &args),
            None => store.run(&args),
        };
        let guard = Mounted {
            store,
            mp: mp.clone(),
            uid,
            child: None,
        };
        assert!(
            out.status.success(),
            "artifactfs mount {} {}failed ({}): FUSE mounting is unusable here, and mount tests \
             fail rather than skip.\nstderr: {}\n{}",
            mp.display(),
            uid.map(|u| format!("as uid {u} ")).unwrap_or_default(),
            out.status,
            stderr(&out),
            guard.diagnostics()
        );
        // Returning means ready: no polling.
        assert!(
            is_mounted(&mp),
            "artifactfs mount {} returned success but nothing is mounted there\n{}",
            mp.display(),
            guard.diagnostics()
        );
        guard
    }

    /// The same, with the FUSE adapter's failed requests in STORE/mount.log too (it logs only
    /// unexpected failures by default), so that a test's failure can name the request that
    /// got an error.
    pub fn logging_requests(store: &'a TestStore, mp: &Path) -> Self {
        require_fuse();
        store.ensure_store();
        fs::create_dir_all(mp).unwrap();
        let mut cmd = store.command(&[OsStr::new("mount"), mp.as_os_str()]);
        cmd.env("RUST_LOG", "info,artifactfs::fuse=debug");
        let out = run_command(cmd);
        assert!(
            out.status.success(),
            "artifactfs mount {} failed ({}): FUSE mounting is unusable here, and mount tests \
             fail rather than skip.\nstderr: {}",
            mp.display(),
            out.status,
            stderr(&out)
        );
        Self::adopt(store, mp)
    }

    /// `artifactfs --store S mount MP --foreground`, spawned; returns once the mount answers.
    pub fn foreground(store: &'a TestStore, mp: &Path) -> Self {
        require_fuse();
        store.ensure_store();
        let mp = canonical_mountpoint(mp);
        let mut cmd =
            store.command(&[OsStr::new("mount"), mp.as_os_str(), "--foreground".as_ref()]);
        // Its output is not read while it runs: keep it out of pipes that could fill up.
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn artifactfs mount --foreground: {e}"));
        let mut guard = Mounted {
            store,
            mp: mp.clone(),
            uid: None,
            child: Some(child),
        };
        let start = Instant::now();
        loop {
            if let Some(status) = guard.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "artifactfs mount {} --foreground exited ({status}) before the mount \
                     answered: FUSE mounting is unusable here\n{}",
                    mp.display(),
                    guard.diagnostics()
                );
            }
            if is_mounted(&mp) && getxattr(&mp, "user.artifactfs.pid").is_ok() {
                return guard;
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                panic!(
                    "artifactfs mount {} --foreground did not answer within {MOUNT_TIMEOUT:?}\n{}",
                    mp.display(),
                    guard.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mp.clone()
        } else {
            self.mp.join(rel)
        }
    }

    /// The mount process's log (STORE/mount.log).
    pub fn log(&self) -> String {
        fs::read_to_string(self.store.root.join("mount.log")).unwrap_or_default()
    }

    fn diagnostics(&self) -> String {
        let mut dev = fs::metadata("/dev/fuse")
            .map(|m| format!("/dev/fuse mode {:o}", m.permissions().mode() & 0o7777))
            .unwrap_or_else(|e| format!("/dev/fuse: {e}"));
        if let (Some(u), Ok(m)) = (self.uid, fs::metadata("/dev/fuse"))
            && m.permissions().mode() & 0o006 != 0o006
        {
            dev.push_str(&format!(
                " (not open to uid {u}: an unprivileged mount must get its FUSE descriptor \
                 from the setuid fusermount3, not by opening /dev/fuse itself)"
            ));
        }
        format!(
            "{dev}; mounts at {}: {:?}\nmount.log:\n{}",
            self.mp.display(),
            mounts_at(&self.mp),
            tail(&self.log(), 4000)
        )
    }

    /// The serving process, as published on the root (user.artifactfs.pid).
    pub fn server_pid(&self) -> i32 {
        let v = getxattr(&self.mp, "user.artifactfs.pid").unwrap_or_else(|e| {
            panic!(
                "getxattr {} user.artifactfs.pid: errno {e}",
                self.mp.display()
            )
        });
        String::from_utf8_lossy(&v)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("user.artifactfs.pid is not a pid: {v:?}"))
    }

    /// `artifactfs umount MP`, run as the user who mounted; the outcome is the caller's to check.
    pub fn umount(&self) -> Output {
        let args = [OsStr::new("umount"), self.mp.as_os_str()];
        match self.uid {
            Some(u) => self.store.run_as(u, &args),
            None => self.store.run(&args),
        }
    }

    /// For `--foreground`: whether the process is still running.
    pub fn foreground_running(&mut self) -> bool {
        let child = self.child.as_mut().expect("not a --foreground mount");
        child.try_wait().unwrap().is_none()
    }

    /// For `--foreground`: waits for the process to exit; fails after `limit`.
    pub fn wait_foreground(&mut self, limit: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("not a --foreground mount");
        let start = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                panic!(
                    "artifactfs mount --foreground still running {limit:?} after umount\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn canonical_mountpoint(mp: &Path) -> PathBuf {
    fs::canonicalize(mp).unwrap_or_else(|e| panic!("mount point {}: {e}", mp.display()))
}

/// Runs a cleanup command without panicking (this runs in Drop, possibly while unwinding).
fn quietly(mut cmd: Command, limit: Duration) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let Ok(mut child) = cmd.spawn() else {
        return false;
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return s.success(),
            Ok(None) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if is_mounted(&self.mp) {
            let mut cmd = Command::new(if self.uid.is_some() {
                bin_for_others()
            } else {
                Path::new(BIN)
            });
            cmd.arg("umount").arg(&self.mp).env_remove("RUST_LOG");
            if let Some(u) = self.uid {
                cmd.uid(u).gid(u).current_dir("/");
            }
            quietly(cmd, Duration::from_secs(15));
        }
        if is_mounted(&self.mp) {
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u").arg("-z").arg(&self.mp);
            quietly(cmd, Duration::from_secs(10));
        }
        if is_mounted(&self.mp) {
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(&self.mp);
            quietly(cmd, Duration::from_secs(10));
        }
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && start.elapsed() < MOUNT_TIMEOUT {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One entry of a directory tree, as a local filesystem shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// 'f', 'd' or 'l'.
    pub kind: char,
    /// Permission bits.
    pub mode: u32,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime_ns: i128,
    /// SHA-256 of a file's content; a symlink's target.
    pub content: String,
}

/// Every entry under `dir` (not `dir` itself), by relative path. Reads every file.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    snapshot_into(dir, dir, &mut out);
    out
}

fn snapshot_into(base: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()));
    for e in entries {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
        let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
        let ft = m.file_type();
        let (kind, content) = if ft.is_dir() {
            ('d', String::new())
        } else if ft.is_symlink() {
            let t = fs::read_link(&p).unwrap();
            ('l', t.to_string_lossy().into_owned())
        } else {
            let data = fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
            ('f', sha256_hex(&data))
        };
        out.insert(
            rel,
            Node {
                kind,
                mode: m.mode() & 0o7777,
                size: m.len(),
                mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
                content,
            },
        );
        if ft.is_dir() {
            snapshot_into(base, &p, out);
        }
    }
}

/// What a committed version of `source` looks like through the mount: the same files and
/// symlinks with their content, size and mtime, on read-only permissions that keep only the
/// executable bit; directories that hold something, read-only.
pub fn expected_in_mount(source: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    source
        .iter()
        .filter(|(path, n)| {
            // Empty directories are not part of a manifest.
            n.kind != 'd'
                || source
                    .iter()
                    .any(|(p, c)| c.kind != 'd' && p.starts_with(&format!("{path}/")))
        })
        .map(|(path, n)| {
            let mode = match n.kind {
                'f' if n.mode & 0o111 != 0 => 0o555,
                'f' => 0o444,
                'd' => 0o555,
                _ => 0o777,
            };
            (path.clone(), Node { mode, ..n.clone() })
        })
        .collect()
}

/// Asserts two snapshots are equal, ignoring what `ignore` says to, listing every difference.
pub fn assert_same_tree(
    what: &str,
    expected: &BTreeMap<String, Node>,
    actual: &BTreeMap<String, Node>,
    ignore: impl Fn(&str, &Node) -> Ignore,
) {
    let mut diffs = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}")),
            Some(a) => {
                let ig = ignore(p, e);
                let mut a = a.clone();
                let mut e = e.clone();
                if ig.mtime {
                    a.mtime_ns = 0;
                    e.mtime_ns = 0;
                }
                if ig.size {
                    a.size = 0;
                    e.size = 0;
                }
                if ig.mode {
                    a.mode = 0;
                    e.mode = 0;
                }
                if a != e {
                    diffs.push(format!("{p}: expected {e:?}, got {a:?}"));
                }
            }
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Which fields of an entry a comparison leaves out.
#[derive(Clone, Copy, Default)]
pub struct Ignore {
    pub mtime: bool,
    pub size: bool,
    pub mode: bool,
}

/// Directory sizes and mtimes are the filesystem's own; only files and symlinks carry them.
pub fn ignore_dir_size_and_mtime(_: &str, n: &Node) -> Ignore {
    Ignore {
        mtime: n.kind == 'd',
        size: n.kind == 'd',
        mode: false,
    }
}

/// Waits for a child with piped output; a hang fails the test.
pub fn finish(child: Child, limit: Duration) -> Output {
    wait_with_timeout(child, limit)
}

// ----- helpers for drafts through the mount -----

/// Runs `op` (Python statements using `p`, indented as one block) on `path` and returns "ok" or the errno name.
pub fn py_errno(op: &str, path: &Path) -> String {
    let script = format!(
        "import errno, os, sys\np = sys.argv[1]\ntry:\n    {op}\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "python3: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

/// Writes `request` to a control file in one write with os.open/os.write/os.close; "ok" or
/// the errno name of the first call that failed.
pub fn write_control(path: &Path, request: &str) -> String {
    py_errno(
        &format!(
            "fd = os.open(p, os.O_WRONLY | os.O_TRUNC)\n    try:\n        os.write(fd, {request:?}.encode())\n    finally:\n        os.close(fd)"
        ),
        path,
    )
}

/// The versions of `name` (`v0`, `v1`...), as `list NAME` shows them; empty for no artifact.
pub fn versions(s: &TestStore, name: &str) -> Vec<String> {
    let listed = s.json(&["list"]);
    if !listed
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["artifact"] == name)
    {
        return Vec::new();
    }
    s.json(&["list", name])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v["version"]
                .as_str()
                .unwrap_or_else(|| panic!("a version without a number: {v}"))
                .to_string()
        })
        .collect()
}

/// The drafts `draft list` shows, as NAME or NAME@ID.
pub fn drafts_listed(s: &TestStore) -> Vec<String> {
    s.json(&["draft", "list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["draft"].as_str().unwrap().to_string())
        .collect()
}

/// Sets a symlink's own mtime (utimensat with AT_SYMLINK_NOFOLLOW).
pub fn set_symlink_mtime(path: &Path, secs: i64, nsec: i64) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat(2) takes.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "set the mtime of symlink {}", path.display());
}

impl Mounted<'_> {
    /// SIGKILLs the server (`pid`) and waits, up to `limit` each, until it is gone and the
    /// mount is dead: once the server's last thread has exited the connection is aborted and
    /// every new request fails with ENOTCONN (one already in flight may get ECONNABORTED).
    pub fn kill_server(&self, pid: i32, limit: Duration) {
        // SAFETY: kill has no memory-safety preconditions.
        assert_eq!(
            unsafe { libc::kill(pid, libc::SIGKILL) },
            0,
            "kill -9 {pid}"
        );
        wait_until(
            &format!("the mount server (pid {pid}) is gone after SIGKILL"),
            limit,
            || match process_gone(pid) {
                true => Ok(()),
                false => Err("still running".into()),
            },
        );
        wait_until(
            "the mount whose server was killed is dead (ENOTCONN)",
            limit,
            || match fs::metadata(&self.mp) {
                Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
                other => Err(format!("stat gives {other:?}")),
            },
        );
    }
}

/// Warnings, errors and failed FUSE requests in a mount log, each kind once with a count and
/// its first line as an example. Lookups and extended-attribute reads of missing names (every
/// tool makes them) are left out, and the unimplemented `ioctl`s (Python's `isatty` on open)
/// only counted: the count is returned beside the text.
pub fn mount_log_problems(log: &str) -> (String, usize) {
    const SHOWN: usize = 25;
    let mut seen: Vec<(String, String, usize)> = Vec::new();
    let mut ioctls = 0;
    for line in log.lines() {
        let Some((level_and_target, text)) = line.split_once("] ") else {
            continue;
        };
        if text.starts_with("[Not Implemented] ioctl") {
            ioctls += 1;
            continue;
        }
        let failed_request = level_and_target.contains("DEBUG artifactfs::fuse")
            && !["lookup:", "getxattr:", "listxattr:"]
                .iter()
                .any(|op| text.starts_with(op));
        if !(level_and_target.contains(" WARN ")
            || level_and_target.contains(" ERROR ")
            || failed_request)
        {
            continue;
        }
        // Lines that differ only in paths and numbers are one kind.
        let shape: String = text
            .split(' ')
            .map(|w| {
                if w.starts_with('/') || w.chars().any(|c| c.is_ascii_digit()) {
                    "<>"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        match seen.iter_mut().find(|(s, _, _)| *s == shape) {
            Some((_, _, n)) => *n += 1,
            None => seen.push((shape, line.to_string(), 1)),
        }
    }
    if seen.is_empty() {
        return ("  (none)".into(), ioctls);
    }
    let mut shown: Vec<String> = seen
        .iter()
        .take(SHOWN)
        .map(|(_, example, n)| format!("  {n}x like: {example}"))
        .collect();
    if seen.len() > SHOWN {
        shown.push(format!("  ... and {} more kinds", seen.len() - SHOWN));
    }
    (shown.join("\n"), ioctls)
}

/// A Python process holding a file open for writing until told to close it; killed if the
/// test ends first. A process of its own, not the test: the test's descriptors are closed
/// (so flushed, which publishes a shared store's draft file) in every child it spawns.
pub struct Holder {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Holder {
    /// Opens `path` (creating it) for writing, writes `first`, and waits.
    pub fn open(path: &Path, first: &str) -> Self {
        let script = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, sys.argv[2].encode())
print("open", flush=True)
rest = sys.stdin.readline()
os.write(fd, rest.encode())
os.fsync(fd)
os.close(fd)
print("closed", flush=True)
"#;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(path)
            .arg(first)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/setup.sh installs it)");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let mut h = Holder { child, out };
        if line.trim() != "open" {
            // It exited (or failed): its error output says why.
            let _ = h.child.kill();
            let _ = h.child.wait();
            let mut err = String::new();
            if let Some(mut e) = h.child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!(
                "python could not open {} for writing: {line:?}\n{err}",
                path.display()
            );
        }
        h
    }

    /// Writes `rest`, fsyncs and closes the file; both must succeed.
    pub fn close(mut self, rest: &str) {
        let mut stdin = self.child.stdin.take().unwrap();
        writeln!(stdin, "{rest}").unwrap();
        drop(stdin);
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let status = self.child.wait().unwrap();
        assert!(
            status.success() && line.trim() == "closed",
            "closing the held file failed ({status}): {line:?}"
        );
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
