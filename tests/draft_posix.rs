//! Drafts behave like a local directory (docs/SEMANTICS.md, "Inside a draft"): files removed
//! or renamed over while open, timestamps, directory link counts, set-ID bits, permissions and
//! hard links. Each test runs one Python script twice, on a draft through a real mount and on
//! a plain directory holding the same files, and requires both to print the same: the same
//! results and errnos for the same syscalls, the same bytes read back. Scripts print times
//! only as comparisons ("did the ctime advance"), never as values the clock chose.

mod common;

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::mount::*;
use common::*;

/// What every script starts with: ROOT is the directory under test.
const PRELUDE: &str = r#"
import errno, hashlib, os, stat, sys, tempfile, time
ROOT = sys.argv[1]
def p(*parts): return os.path.join(ROOT, *parts)
def show(label, value): print(label, value)
def attempt(label, f):
    try:
        r = f()
        print(label, "ok" if r is None else r)
    except OSError as e:
        print(label, errno.errorcode[e.errno])
def tick():
    # Local files are stamped by a clock that moves every few milliseconds: wait for it, so
    # a time that should change can be seen to change.
    time.sleep(0.012)
def digest(b): return hashlib.sha256(b).hexdigest()[:16]
def read_all(fd):
    os.lseek(fd, 0, 0)
    out = b""
    while True:
        b = os.read(fd, 1000)
        if not b:
            return out
        out += b
def who(uid): return "me" if uid == os.getuid() else ("root" if uid == 0 else "other")
"#;

/// The Python that runs the scripts: Debian's (scripts/setup.sh installs it), which every
/// user can run, unlike one under root's home.
fn python() -> &'static str {
    let py = "/usr/bin/python3";
    assert!(
        Path::new(py).exists(),
        "{py} is missing: run scripts/setup.sh (it installs Debian's python3)"
    );
    py
}

/// A draft of `m:v0` through a mount, and a plain directory with the same files.
struct Pair<'a> {
    m: Mounted<'a>,
    local: PathBuf,
}

impl<'a> Pair<'a> {
    fn new(s: &'a TestStore) -> Self {
        let a: String = (0..3000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let src = s.tree(
            "src",
            &[
                ("a.txt", a.as_str()),
                ("b.txt", "bee\n"),
                ("sub/c.txt", a.as_str()),
                ("sub/deeper/d.txt", "dee\n"),
                ("run.sh", "#!/bin/sh\n"),
            ],
        );
        set_mode(&src.join("run.sh"), 0o755);
        log(s, "m", &src);
        let local = s.path("local");
        tool_ok(
            "cp",
            &["-a".as_ref(), src.as_os_str(), local.as_os_str()],
            None,
        );
        let mp = s.path("mnt");
        fs::create_dir_all(&mp).unwrap();
        s.open_scratch_to_others();
        let m = Mounted::new(s, &mp);
        fs::create_dir(m.path("drafts/m")).unwrap();
        Pair { m, local }
    }

    fn draft(&self) -> PathBuf {
        self.m.path("drafts/m")
    }

    /// Runs `script` on the draft and on the plain directory (as `uid`, when given) and
    /// requires the same output; returns it.
    fn same(&self, script: &str, uid: Option<u32>) -> String {
        let run = |root: &Path| {
            let mut cmd = Command::new(python());
            cmd.arg("-c").arg(format!("{PRELUDE}\n{script}")).arg(root);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(u) = uid {
                cmd.uid(u).gid(u);
            }
            let out = run_command(cmd);
            assert!(
                out.status.success(),
                "the script failed on {}:\n{}\n{}",
                root.display(),
                stdout(&out),
                stderr(&out)
            );
            stdout(&out)
        };
        let (local, draft) = (run(&self.local), run(&self.draft()));
        assert!(!local.trim().is_empty(), "the script printed nothing");
        if local != draft {
            let diff: Vec<String> = local
                .lines()
                .zip(draft.lines())
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("  local: {a}\n  draft: {b}"))
                .collect();
            panic!(
                "the draft differs from a local directory:\n{}\nlocal:\n{local}\ndraft:\n{draft}\nmount.log: {}",
                diff.join("\n"),
                tail(&self.m.log(), 3000)
            );
        }
        draft
    }
}

#[test]
fn open_files_keep_their_content_and_attributes_after_their_name_goes() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    let out = pair.same(
        r#"
# A file of the base, open for reading, then removed.
fd = os.open(p("a.txt"), os.O_RDONLY)
os.unlink(p("a.txt"))
st = os.fstat(fd)
show("base fstat", (st.st_nlink, st.st_size, oct(st.st_mode)))
show("base read", (len(read_all(fd)), digest(read_all(fd))))
os.fchmod(fd, 0o600)
show("base fchmod", oct(os.fstat(fd).st_mode))
os.close(fd)
attempt("base name", lambda: os.stat(p("a.txt")))

# A file written here, open twice, removed: both descriptors keep it, writable to the end.
with open(p("new"), "wb") as f:
    f.write(bytes(range(256)) * 12)
fd = os.open(p("new"), os.O_RDWR)
fd2 = os.open(p("new"), os.O_RDONLY)
os.unlink(p("new"))
show("staged fstat", (os.fstat(fd).st_nlink, os.fstat(fd).st_size))
os.pwrite(fd, b"tail" * 100, 3072)
os.ftruncate(fd, 3300)
os.fchmod(fd, 0o640)
st = os.fstat(fd2)
show("staged after writes", (st.st_nlink, st.st_size, oct(st.st_mode)))
data = read_all(fd2)
show("staged read", (len(data), digest(data)))
os.close(fd)
os.close(fd2)
attempt("staged name", lambda: os.stat(p("new")))

# A name made again while the old file is open is another file.
with open(p("again"), "wb") as f:
    f.write(b"first" * 600)
fd = os.open(p("again"), os.O_RDONLY)
os.unlink(p("again"))
with open(p("again"), "wb") as f:
    f.write(b"second")
show("old and new", (os.fstat(fd).st_size, os.stat(p("again")).st_size,
                     os.fstat(fd).st_ino == os.stat(p("again")).st_ino))
show("old read", digest(read_all(fd)))
os.close(fd)

# Renamed over while open: the old descriptor keeps the old file, to its end.
for old in ["sub/c.txt", "staged-old"]:
    if old == "staged-old":
        with open(p(old), "wb") as f:
            f.write(b"o" * 3000)
    with open(p("newer"), "wb") as f:
        f.write(b"n" * 30)
    fd = os.open(p(old), os.O_RDONLY)
    os.rename(p("newer"), p(old))
    st = os.fstat(fd)
    show(old + " renamed over", (st.st_size, st.st_nlink))
    data = read_all(fd)
    show(old + " read", (len(data), digest(data)))
    show(old + " now", (os.stat(p(old)).st_size, os.stat(p(old)).st_nlink))
    os.close(fd)

# Temporary files made in the directory.
with tempfile.TemporaryFile(dir=ROOT) as t:
    t.write(b"x" * 5000)
    t.seek(0)
    show("TemporaryFile", (len(t.read()), os.fstat(t.fileno()).st_nlink))
with tempfile.NamedTemporaryFile(dir=ROOT) as t:
    t.write(b"y" * 100)
    t.flush()
    show("NamedTemporaryFile", os.stat(t.name).st_size)

# A directory removed while open lists nothing and has no links.
os.mkdir(p("gone"))
fd = os.open(p("gone"), os.O_RDONLY)
os.rmdir(p("gone"))
show("removed dir", (os.fstat(fd).st_nlink, os.listdir(fd)))
os.close(fd)
show("left", sorted(os.listdir(ROOT)))
"#,
        None,
    );
    assert!(out.contains("staged read (3300, "), "{out}");
    assert!(out.contains("staged-old read (3000, "), "{out}");
    // Nothing that was removed is committed; the draft commits as it shows.
    assert_eq!(write_control(&pair.draft().join(".commit"), "commit"), "ok");
    assert_eq!(
        ls(&s, "m:v1"),
        [
            "again",
            "b.txt",
            "run.sh",
            "staged-old",
            "sub/c.txt",
            "sub/deeper/d.txt"
        ]
    );
    assert_eq!(s.ok(&["cat", "m:v1", "sub/c.txt"]), "n".repeat(30));
    let staged: Vec<_> = fs::read_dir(s.root.join("staged")).unwrap().collect();
    assert!(staged.is_empty(), "staged files left behind: {staged:?}");
}

#[test]
fn times_change_as_on_a_local_filesystem() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    pair.same(
        r#"
def advanced(path, op, fields=("st_mtime_ns", "st_ctime_ns"), follow=False):
    before = os.stat(path) if follow else os.lstat(path)
    tick()
    op()
    after = os.stat(path) if follow else os.lstat(path)
    return tuple(getattr(after, f) > getattr(before, f) for f in fields)

f = p("t")
open(f, "w").close()
os.utime(f, ns=(1_000_000_001_000_000_123, 1_100_000_002_000_000_456))
st = os.stat(f)
show("utime", (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns > st.st_mtime_ns))
show("touch -d keeps ctime", advanced(f, lambda: os.utime(f, (5, 5)), ("st_ctime_ns",)))
show("chmod", advanced(f, lambda: os.chmod(f, 0o600), ("st_mtime_ns", "st_ctime_ns")))
show("chown to itself", advanced(f, lambda: os.chown(f, os.getuid(), os.getgid()),
                                 ("st_mtime_ns", "st_ctime_ns")))
show("write", advanced(f, lambda: open(f, "a").write("x"), ("st_mtime_ns", "st_ctime_ns")))
show("truncate", advanced(f, lambda: os.truncate(f, 0), ("st_mtime_ns", "st_ctime_ns")))
show("link", advanced(f, lambda: os.link(f, p("t2")), ("st_mtime_ns", "st_ctime_ns")))
show("unlink other name", advanced(f, lambda: os.unlink(p("t2")), ("st_mtime_ns", "st_ctime_ns")))
fd = os.open(f, os.O_RDONLY)
before = os.fstat(fd)
tick()
os.rename(f, p("t3"))
after = os.fstat(fd)
show("rename", (after.st_mtime_ns > before.st_mtime_ns, after.st_ctime_ns > before.st_ctime_ns))
os.close(fd)
# Files of the base, and a directory of it.
show("base chmod", advanced(p("b.txt"), lambda: os.chmod(p("b.txt"), 0o600)))
show("base utime atime", (os.utime(p("b.txt"), ns=(2_000_000_000_000_000_000, 1_000)),
                          os.stat(p("b.txt")).st_atime_ns, os.stat(p("b.txt")).st_mtime_ns))
show("dir chmod", advanced(p("sub"), lambda: os.chmod(p("sub"), 0o700)))

# The directory holding an entry changes when entries are made, removed or renamed, and
# not when a file in it is written or its attributes change.
d = p("sub")
show("create", advanced(d, lambda: open(p("sub", "n1"), "w").close()))
show("write a file", advanced(d, lambda: open(p("sub", "n1"), "a").write("x")))
show("chmod a file", advanced(d, lambda: os.chmod(p("sub", "n1"), 0o600)))
show("mkdir", advanced(d, lambda: os.mkdir(p("sub", "n2"))))
show("symlink", advanced(d, lambda: os.symlink("n1", p("sub", "n3"))))
show("link", advanced(d, lambda: os.link(p("sub", "n1"), p("sub", "n4"))))
show("rename within", advanced(d, lambda: os.rename(p("sub", "n4"), p("sub", "n5"))))
show("rename out of", advanced(d, lambda: os.rename(p("sub", "n5"), p("n5"))))
show("rename into", advanced(d, lambda: os.rename(p("n5"), p("sub", "n5"))))
show("rename into, the source dir", advanced(ROOT, lambda: os.rename(p("b.txt"), p("sub", "b.txt"))))
show("unlink", advanced(d, lambda: os.unlink(p("sub", "n5"))))
show("rmdir", advanced(d, lambda: os.rmdir(p("sub", "n2"))))
show("base dir create", advanced(p("sub", "deeper"), lambda: open(p("sub", "deeper", "x"), "w").close()))
show("top create", advanced(ROOT, lambda: open(p("top"), "w").close()))
"#,
        None,
    );
}

#[test]
fn directories_count_their_subdirectories_in_their_links() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    pair.same(
        r#"
def links(): return [os.stat(p(d)).st_nlink for d in ["", "sub", "sub/deeper"]]
show("base", links())
os.mkdir(p("x"))
os.mkdir(p("sub", "y"))
show("mkdir", links())
os.rename(p("sub", "y"), p("sub", "deeper", "y"))
show("rename a dir", links())
os.rename(p("sub", "deeper"), p("deeper"))
show("rename a base dir", links() if False else [os.stat(p(d)).st_nlink for d in ["", "sub", "deeper"]])
os.rmdir(p("x"))
os.rmdir(p("deeper", "y"))
show("rmdir", [os.stat(p(d)).st_nlink for d in ["", "sub", "deeper"]])
open(p("sub", "f"), "w").close()
show("a file", os.stat(p("sub")).st_nlink)
"#,
        None,
    );
}

#[test]
fn hard_links_share_one_file_until_the_commit() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    pair.same(
        r#"
os.link(p("a.txt"), p("a-link"))
a, l = os.stat(p("a.txt")), os.stat(p("a-link"))
show("base file linked", (a.st_nlink, l.st_nlink, a.st_ino == l.st_ino, l.st_size))
with open(p("a-link"), "r+b") as f:
    f.write(b"CHANGED")
show("written through the link", open(p("a.txt"), "rb").read()[:10])
os.chmod(p("a.txt"), 0o600)
show("chmod shows on both", oct(os.stat(p("a-link")).st_mode))
os.mkdir(p("dir"))
os.link(p("a-link"), p("dir", "third"))
show("three names", os.stat(p("a.txt")).st_nlink)
os.rename(p("a.txt"), p("a-link"))
show("rename onto itself keeps both", (os.path.exists(p("a.txt")), os.stat(p("a-link")).st_nlink))
os.unlink(p("a.txt"))
show("one name fewer", os.stat(p("a-link")).st_nlink)
fd = os.open(p("a-link"), os.O_RDWR)
os.unlink(p("a-link"))
show("unlinked, still linked", (os.fstat(fd).st_nlink, os.stat(p("dir", "third")).st_nlink))
os.pwrite(fd, b"LAST", 0)
show("written through the open file", open(p("dir", "third"), "rb").read()[:10])
os.close(fd)
with open(p("w"), "wb") as f:
    f.write(b"written")
os.link(p("w"), p("w2"))
show("new file linked", (os.stat(p("w")).st_nlink, open(p("w2"), "rb").read()))
os.symlink("b.txt", p("sym"))
os.link(p("sym"), p("sym2"), follow_symlinks=False)
show("symlink linked", (os.readlink(p("sym2")), stat.S_ISLNK(os.lstat(p("sym2")).st_mode)))
attempt("link a directory", lambda: os.link(p("sub"), p("sub2")))
attempt("link onto a name", lambda: os.link(p("w"), p("b.txt")))
attempt("link a missing file", lambda: os.link(p("nope"), p("nope2")))
"#,
        None,
    );
    let d = pair.draft();
    // Across drafts, and from a version into a draft: EXDEV.
    fs::create_dir(pair.m.path("drafts/other")).unwrap();
    let other = pair.m.path("drafts/other/x").display().to_string();
    assert_eq!(
        py_errno(&format!("os.link(p, {other:?})"), &d.join("w")),
        "EXDEV"
    );
    let into = d.join("from-version").display().to_string();
    let v0 = pair.m.path("m/v0/b.txt");
    assert_eq!(py_errno(&format!("os.link(p, {into:?})"), &v0), "EXDEV");
    assert_eq!(py_errno("os.link(p, p + '2')", &v0), "EROFS");
    // The tools that make hard links.
    tool_ok(
        "cp",
        &[
            "-al".as_ref(),
            d.join("sub").as_os_str(),
            d.join("sub-al").as_os_str(),
        ],
        None,
    );
    let linked = python_ok(
        "import os, sys; print(os.stat(sys.argv[1]).st_ino == os.stat(sys.argv[2]).st_ino)",
        &[
            d.join("sub/c.txt").as_os_str(),
            d.join("sub-al/c.txt").as_os_str(),
        ],
    );
    assert_eq!(linked.trim(), "True");
    let hsrc = s.tree("hsrc", &[("one", "same bytes\n")]);
    fs::hard_link(hsrc.join("one"), hsrc.join("two")).unwrap();
    let dest = format!("{}/", d.join("rsynced").display());
    tool_ok(
        "rsync",
        &[
            "-aH".as_ref(),
            format!("{}/", hsrc.display()).as_ref(),
            dest.as_ref(),
        ],
        None,
    );
    let nlink = python_ok(
        "import os, sys; print(os.stat(sys.argv[1]).st_nlink)",
        &[d.join("rsynced/two").as_os_str()],
    );
    assert_eq!(nlink.trim(), "2");
    // Committed, the names are separate files with the same content.
    assert_eq!(write_control(&d.join(".commit"), "commit"), "ok");
    assert_eq!(s.ok(&["cat", "m:v1", "w2"]), "written");
    assert_eq!(s.ok(&["cat", "m:v1", "rsynced/two"]), "same bytes\n");
    let third = s.ok(&["cat", "m:v1", "dir/third"]);
    assert!(third.starts_with("LASTGED"), "{third}");
    let nlinks = python_ok(
        "import os, sys; print(os.stat(sys.argv[1]).st_nlink, os.stat(sys.argv[2]).st_nlink)",
        &[
            pair.m.path("m/v1/w").as_os_str(),
            pair.m.path("m/v1/w2").as_os_str(),
        ],
    );
    assert_eq!(nlinks.trim(), "1 1");
    s.ok(&["verify"]);
}

/// Set-ID bits go when a process that may not keep them writes or truncates, as the kernel's
/// killpriv contract has it; root keeps them.
#[test]
fn writes_by_other_users_clear_set_id_bits() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    let setup = r#"
os.mkdir(p("open"))
os.chmod(p("open"), 0o777)
for name in ["w", "t", "o", "root"]:
    with open(p("open", name), "w") as f:
        f.write("x")
    os.chmod(p("open", name), 0o6777)
show("set up", sorted(os.listdir(p("open"))))
"#;
    pair.same(setup, None);
    pair.same(
        r#"
with open(p("open", "w"), "a") as f:
    f.write("y")
show("write", oct(os.stat(p("open", "w")).st_mode))
os.truncate(p("open", "t"), 1)
show("truncate", oct(os.stat(p("open", "t")).st_mode))
open(p("open", "o"), "w").close()
show("O_TRUNC", oct(os.stat(p("open", "o")).st_mode))
"#,
        Some(NOBODY),
    );
    pair.same(
        r#"
with open(p("open", "root"), "a") as f:
    f.write("y")
show("root writes", oct(os.stat(p("open", "root")).st_mode))
"#,
        None,
    );
}

/// Other users meet the mode bits, the owner and the sticky bit as on a local filesystem.
#[test]
fn other_users_are_held_to_the_modes() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    pair.same(
        r#"
for d, mode in [("shared", 0o777), ("sticky", 0o1777), ("closed", 0o700)]:
    os.mkdir(p(d))
    os.chmod(p(d), mode)
    with open(p(d, "rootfile"), "w") as f:
        f.write("root's")
    os.chmod(p(d, "rootfile"), 0o666)
show("set up", [oct(os.stat(p(d)).st_mode) for d in ["shared", "sticky", "closed"]])
"#,
        None,
    );
    let out = pair.same(
        r#"
attempt("unlink a base file", lambda: os.unlink(p("a.txt")))
attempt("truncate it", lambda: os.truncate(p("a.txt"), 0))
attempt("open it for writing", lambda: os.close(os.open(p("a.txt"), os.O_WRONLY)))
attempt("read it", lambda: len(open(p("a.txt"), "rb").read()))
attempt("chmod it", lambda: os.chmod(p("a.txt"), 0o777))
attempt("chown it to myself", lambda: os.chown(p("a.txt"), os.getuid(), -1))
attempt("rename it", lambda: os.rename(p("a.txt"), p("sub", "a.txt")))
attempt("touch it", lambda: os.utime(p("a.txt")))
attempt("set its times", lambda: os.utime(p("a.txt"), (1, 1)))
attempt("link to it", lambda: os.link(p("a.txt"), p("shared", "a-link")))
attempt("create in a 755 dir", lambda: open(p("mine"), "w").close())
attempt("mkdir in it", lambda: os.mkdir(p("mydir")))
attempt("symlink in it", lambda: os.symlink("a.txt", p("mylink")))
attempt("list a 700 dir", lambda: os.listdir(p("closed")))
attempt("enter it", lambda: os.stat(p("closed", "rootfile")) and None)
for d in ["shared", "sticky"]:
    attempt(d + ": create", lambda: open(p(d, "mine"), "w").write("mine"))
    attempt(d + ": own it", lambda: who(os.stat(p(d, "mine")).st_uid))
    attempt(d + ": chmod mine", lambda: os.chmod(p(d, "mine"), 0o600))
    attempt(d + ": write root's", lambda: open(p(d, "rootfile"), "a").write("+"))
    attempt(d + ": chmod root's", lambda: os.chmod(p(d, "rootfile"), 0o600))
    attempt(d + ": rename root's", lambda: os.rename(p(d, "rootfile"), p(d, "moved")))
    attempt(d + ": unlink root's", lambda: os.unlink(p(d, "moved" if d == "shared" else "rootfile")))
    attempt(d + ": mkdir mine", lambda: os.mkdir(p(d, "mysub")))
    attempt(d + ": own that", lambda: who(os.stat(p(d, "mysub")).st_uid))
    attempt(d + ": rename mine", lambda: os.rename(p(d, "mine"), p(d, "mine2")))
    attempt(d + ": unlink mine", lambda: os.unlink(p(d, "mine2")))
    attempt(d + ": access", lambda: (os.access(p(d), os.W_OK), os.access(p(d, "mysub"), os.W_OK)))
"#,
        Some(NOBODY),
    );
    assert!(out.contains("unlink a base file EACCES"), "{out}");
    assert!(out.contains("sticky: unlink root's EPERM"), "{out}");
    // Versions are read-only for everyone, whatever the modes: EROFS before EACCES.
    let v0 = pair.m.path("m/v0/a.txt");
    let as_nobody = |op: &str, path: &Path| {
        let script = format!(
            "import errno, os, sys\np = sys.argv[1]\ntry:\n    {op}\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
        );
        let mut cmd = Command::new(python());
        cmd.arg("-c").arg(script).arg(path).uid(NOBODY).gid(NOBODY);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        stdout(&run_command(cmd)).trim().to_string()
    };
    for op in [
        "os.unlink(p)",
        "os.close(os.open(p, os.O_WRONLY))",
        "os.chmod(p, 0o777)",
        "os.truncate(p, 0)",
        "os.utime(p)",
        "os.mkdir(p + '.d')",
    ] {
        assert_eq!(as_nobody(op, &v0), "EROFS", "{op} on a version");
    }
    // A draft made by another user belongs to that user, who may commit it; others may not.
    assert_eq!(
        as_nobody("os.mkdir(p)", &pair.m.path("drafts/theirs")),
        "ok"
    );
    let theirs = pair.m.path("drafts/theirs");
    assert_eq!(
        as_nobody("open(p, 'w').write('x')", &theirs.join("f")),
        "ok"
    );
    let owner = python_ok(
        "import os, sys; print(os.stat(sys.argv[1]).st_uid, os.stat(sys.argv[2]).st_uid)",
        &[theirs.as_os_str(), theirs.join("f").as_os_str()],
    );
    assert_eq!(owner.trim(), format!("{NOBODY} {NOBODY}"));
    assert_eq!(as_nobody("os.rmdir(p)", &pair.draft()), "EPERM");
    assert_eq!(
        as_nobody(
            "open(p, 'w').write('commit')",
            &pair.draft().join(".commit")
        ),
        "EACCES"
    );
    assert_eq!(
        as_nobody("open(p, 'w').write('commit')", &theirs.join(".commit")),
        "ok"
    );
    assert_eq!(ls(&s, "theirs:v0"), ["f"]);
    assert!(
        s.sql("SELECT * FROM versions WHERE number = 1").is_empty(),
        "m was not committed"
    );
}

/// What a version cannot record stays refused: FIFOs, sockets and device nodes, and owners
/// other than the one a file has.
#[test]
fn special_files_and_other_owners_stay_refused() {
    let s = TestStore::new();
    let pair = Pair::new(&s);
    let d = pair.draft();
    assert_eq!(py_errno("os.mkfifo(p)", &d.join("fifo")), "EPERM");
    assert_eq!(
        py_errno(
            "import socket; socket.socket(socket.AF_UNIX).bind(p)",
            &d.join("sock")
        ),
        "EPERM"
    );
    assert_eq!(
        py_errno(
            "os.mknod(p, 0o600 | stat.S_IFCHR, os.makedev(1, 3))"
                .replace("stat.", "__import__('stat').")
                .as_str(),
            &d.join("dev")
        ),
        "EPERM"
    );
    assert_eq!(py_errno("os.chown(p, 1234, -1)", &d.join("a.txt")), "EPERM");
    assert_eq!(py_errno("os.chown(p, 0, 0)", &d.join("a.txt")), "ok");
    let status = fs::read_to_string(d.join(".commit")).unwrap();
    assert!(
        status.contains("0 added, 0 modified, 0 removed"),
        "{status}"
    );
}
