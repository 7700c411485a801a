//! Drafts through the mount under bad input and interruptions: refused names and commit
//! requests, a `.commit` file arriving with `cp -r` or `rsync -a`, a commit while a file is
//! open for writing, a full disk while staging, and drafts surviving an unmount, a killed
//! server and the CLI working on the same draft. Every refusal is checked for its errno and
//! for having lost or half-written nothing. Mounted for real; these tests fail, never skip.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::mount::*;
use common::*;

/// How soon a change made through the CLI must show in the mount (the spec says within a
/// second; this leaves room for a loaded machine).
const COHERENCE: Duration = Duration::from_millis(1500);

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// Fails (never skips) when a tool a test drives is missing.
fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .any(|d| d.join(name).is_file());
    assert!(
        found,
        "{name} is not installed, and this test needs it: run scripts/setup.sh (it installs \
         python3, rsync and fuse3)"
    );
}

/// `python3 -c SCRIPT ARGS...` with a timeout; the script itself must not crash.
fn python(script: &str, args: &[&OsStr]) -> String {
    require_tool("python3");
    let mut all: Vec<&OsStr> = vec![os("-c"), os(script)];
    all.extend_from_slice(args);
    let out = run_tool("python3", &all, None);
    assert!(
        out.status.success(),
        "python3 failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    stdout(&out).trim().to_string()
}

/// Every regular file under `dir` with its bytes, by relative path.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, n)| n.kind == 'f')
        .map(|(p, _)| {
            let data = fs::read(dir.join(&p))
                .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(&p).display()));
            (p, data)
        })
        .collect()
}

fn expect_files(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(p, c)| (p.to_string(), c.to_vec()))
        .collect()
}

/// Shows which paths differ, rather than two walls of bytes.
fn assert_contents(
    what: &str,
    expected: &BTreeMap<String, Vec<u8>>,
    actual: &BTreeMap<String, Vec<u8>>,
) {
    let mut diffs = Vec::new();
    for (p, e) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}")),
            Some(a) if a != e => diffs.push(format!(
                "{p}: expected {} bytes {:?}, got {} bytes {:?}",
                e.len(),
                String::from_utf8_lossy(&e[..e.len().min(40)]),
                a.len(),
                String::from_utf8_lossy(&a[..a.len().min(40)])
            )),
            Some(_) => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}"));
        }
    }
    assert!(diffs.is_empty(), "{what}:\n{}", diffs.join("\n"));
}

/// A mount's log, for failure messages about the server.
fn log_tail(s: &TestStore) -> String {
    tail(
        &fs::read_to_string(s.root.join("mount.log")).unwrap_or_default(),
        3000,
    )
}

/// A tmpfs of a fixed size mounted on a directory, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let dir = fs::canonicalize(dir).unwrap();
        let out = run_tool(
            "mount",
            &[
                os("-t"),
                os("tmpfs"),
                os("-o"),
                os(&format!("size={size}")),
                os("tmpfs"),
                dir.as_os_str(),
            ],
            None,
        );
        assert!(
            out.status.success(),
            "mount -t tmpfs -o size={size} on {} failed ({}): this test puts the store on a \
             small filesystem to fill it, which needs root\n{}",
            dir.display(),
            out.status,
            stderr(&out)
        );
        assert!(is_mounted(&dir), "tmpfs not mounted at {}", dir.display());
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for args in [&["umount"][..], &["umount", "-l"][..]] {
            if !is_mounted(&self.0) {
                return;
            }
            let _ = Command::new(args[0])
                .args(&args[1..])
                .arg(&self.0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The text `draft status NAME` prints.
fn status_of(s: &TestStore, draft: &str) -> String {
    s.ok(&["draft", "status", draft])
}

fn assert_status_has(status: &str, lines: &[&str]) {
    for l in lines {
        assert!(
            status.lines().any(|x| x.trim() == *l),
            "draft status should list {l:?}:\n{status}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------------

/// `mkdir drafts/NAME` with a name that is not a valid artifact (or distributed id) name is
/// EINVAL, and nothing at all is created.
#[test]
fn invalid_draft_names_are_einval_and_create_nothing() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let before = fingerprint(&s);

    let long = "x".repeat(129);
    let bad = [
        "a:b",
        ".hidden",
        "a b",
        "drafts",
        "caf\u{e9}",
        long.as_str(),
        "m@bad:id",
        "m@",
        "@run",
        "m@a@b",
        "m@.dot",
    ];
    for name in bad {
        assert_eq!(
            py_errno("os.mkdir(p)", &m.path(&format!("drafts/{name}"))),
            "EINVAL",
            "mkdir drafts/{name}"
        );
    }
    // A name that is not UTF-8 at all.
    assert_eq!(
        py_errno("os.mkdir(os.fsencode(p) + b'/bad\\xff')", &m.path("drafts")),
        "EINVAL",
        "mkdir drafts/bad\\xff"
    );

    assert_unchanged(&before, &fingerprint(&s), "refused mkdirs in drafts/");
    assert!(
        drafts_listed(&s).is_empty(),
        "no draft may exist: {:?}",
        drafts_listed(&s)
    );
    let listed: Vec<_> = fs::read_dir(m.path("drafts"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(listed.is_empty(), "drafts/ should be empty: {listed:?}");
    for name in ["a:b", "m@bad:id"] {
        let r = fs::symlink_metadata(m.path(&format!("drafts/{name}")));
        assert!(r.is_err(), "drafts/{name} exists after a refused mkdir");
    }
    assert_eq!(versions(&s, "m"), ["v0"]);
}

/// A commit asking for another type than the artifact's is EEXIST and leaves the draft
/// exactly as it was; a plain commit afterwards works.
#[test]
fn a_conflicting_type_is_eexist_and_keeps_the_draft() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n"), ("d/b.txt", "bee\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");
    fs::write(draft.join("new.txt"), "new\n").unwrap();
    fs::write(draft.join("d/b.txt"), "BEE\n").unwrap();
    fs::create_dir(draft.join("e")).unwrap();
    fs::write(draft.join("e/c.txt"), "sea\n").unwrap();

    let before = fingerprint(&s);
    let tree_before = snapshot(&draft);
    let control = draft.join(".commit");
    assert_eq!(
        write_control(&control, "{\"type\": \"model\"}"),
        "EEXIST",
        "a dataset committed as a model"
    );
    assert_eq!(
        write_control(
            &control,
            "{\"type\": \"model\", \"aliases\": [\"best\"], \"description\": \"x\"}\n"
        ),
        "EEXIST",
        "a type conflict with other fields"
    );
    assert_unchanged(
        &before,
        &fingerprint(&s),
        "a refused commit (type conflict)",
    );
    assert_same_tree(
        "the draft after a refused commit",
        &tree_before,
        &snapshot(&draft),
        |_, _| Ignore::default(),
    );
    assert_eq!(versions(&s, "m"), ["v0"], "no version may be created");
    assert_eq!(drafts_listed(&s), ["m"]);

    assert_eq!(write_control(&control, "commit\n"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_eq!(s.json(&["show", "m:latest"])["type"], "dataset");
    assert_contents(
        "m:v1 through the mount",
        &expect_files(&[
            ("a.txt", b"alpha\n"),
            ("d/b.txt", b"BEE\n"),
            ("e/c.txt", b"sea\n"),
            ("new.txt", b"new\n"),
        ]),
        &contents(&m.path("m/v1")),
    );
    assert!(drafts_listed(&s).is_empty());
}

/// `cp -r` and `rsync -a` of a tree that has a file named `.commit` at its top: that one
/// file is refused (it is the control file, and its content is no request), every other file
/// arrives, and nothing is committed.
#[test]
fn a_dot_commit_file_in_a_copied_tree_is_refused_alone() {
    require_tool("rsync");
    let s = TestStore::new();
    let base = s.tree("base", &[("base.txt", "base\n")]);
    log(&s, "m", &base);
    let src = s.tree(
        "src",
        &[
            (".commit", "not a request\n"),
            ("a.txt", "alpha\n"),
            ("sub/b.txt", "bee\n"),
            ("sub/deeper/c.bin", "sea\n"),
            ("z.txt", "zed\n"),
        ],
    );
    let m = Mounted::new(&s, &mountpoint(&s));
    let arrived = expect_files(&[
        ("a.txt", b"alpha\n"),
        ("base.txt", b"base\n"),
        ("sub/b.txt", b"bee\n"),
        ("sub/deeper/c.bin", b"sea\n"),
        ("z.txt", b"zed\n"),
    ]);

    for (tool, draft_name) in [("cp", "m"), ("rsync", "m@rs")] {
        fs::create_dir(m.path(&format!("drafts/{draft_name}"))).unwrap();
        let draft = m.path(&format!("drafts/{draft_name}"));
        let out: Output = if tool == "cp" {
            run_tool(
                "cp",
                &[os("-r"), src.join(".").as_os_str(), draft.as_os_str()],
                None,
            )
        } else {
            let mut from = src.as_os_str().to_owned();
            from.push("/");
            let mut to = draft.as_os_str().to_owned();
            to.push("/");
            run_tool("rsync", &[os("-a"), &from, &to], None)
        };
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "{tool} into drafts/{draft_name} should fail for .commit, but succeeded:\n{err}\nmount.log:\n{}",
            log_tail(&s)
        );
        assert!(
            err.contains(".commit"),
            "{tool}: the error should name .commit:\n{err}"
        );
        // Only .commit failed: every error line is about it (rsync adds its summary).
        for line in err.lines().filter(|l| !l.trim().is_empty()) {
            assert!(
                line.contains(".commit") || (tool == "rsync" && line.contains("rsync error")),
                "{tool} failed on something other than .commit: {line:?}\nall of stderr:\n{err}"
            );
        }

        let expected = if draft_name == "m" {
            arrived.clone()
        } else {
            // A distributed draft starts empty.
            let mut e = arrived.clone();
            e.remove("base.txt");
            e
        };
        assert_contents(
            &format!("drafts/{draft_name} after {tool}"),
            &expected,
            &contents(&draft),
        );
        // The control file is still the control file, and rsync left no temporary file.
        // (After cp, whose bytes were refused as a request, the refusal heads the status.)
        let status = fs::read_to_string(draft.join(".commit")).unwrap();
        let body = match status.split_once('\n') {
            Some((first, rest)) if first.starts_with("the last commit request was refused: ") => {
                assert!(
                    tool == "cp" && first.contains("write `commit` or a JSON object"),
                    "{tool}: {first}"
                );
                rest
            }
            _ => status.as_str(),
        };
        assert!(
            body.starts_with(&format!("draft {draft_name},")) && !status.contains("not a request"),
            "{tool}: .commit should still show the draft's status:\n{status}"
        );
        let names: Vec<String> = fs::read_dir(&draft)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".commit")),
            "{tool} left {names:?} in the draft"
        );
        assert_eq!(
            versions(&s, "m"),
            ["v0"],
            "{tool}: nothing may be committed"
        );
        assert!(
            drafts_listed(&s).contains(&draft_name.to_string()),
            "{tool}: the draft must still exist: {:?}",
            drafts_listed(&s)
        );
    }
    // The copied drafts still commit as they are.
    assert_eq!(write_control(&m.path("drafts/m/.commit"), "commit"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_contents("m:v1", &arrived, &contents(&m.path("m/v1")));
}

/// While a file of the draft is open for writing, a commit is EBUSY (through the mount and
/// through the CLI) and commits nothing; once it is closed, the commit takes its full content.
#[test]
fn a_commit_while_a_file_is_open_for_writing_is_ebusy() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");
    fs::write(draft.join("other.txt"), "other\n").unwrap();

    let held = Holder::open(&draft.join("held.txt"), "partial ");
    let before = fingerprint(&s);
    let control = draft.join(".commit");
    assert_eq!(
        write_control(&control, "commit"),
        "EBUSY",
        "commit with held.txt open for writing\nmount.log:\n{}",
        log_tail(&s)
    );
    assert_eq!(
        write_control(&control, "{\"aliases\": [\"best\"]}"),
        "EBUSY",
        "a JSON commit with held.txt open for writing"
    );
    let err = s.fail(&["draft", "commit", "m"]);
    assert!(
        err.contains("open for writing") || err.to_lowercase().contains("busy"),
        "the CLI's commit should be refused as busy: {err}"
    );
    assert_unchanged(&before, &fingerprint(&s), "commits refused as busy");
    assert_eq!(versions(&s, "m"), ["v0"]);
    assert_eq!(drafts_listed(&s), ["m"]);

    held.close("done");
    assert_eq!(write_control(&control, "commit\n"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_contents(
        "m:v1",
        &expect_files(&[
            ("a.txt", b"alpha\n"),
            ("held.txt", b"partial done\n"),
            ("other.txt", b"other\n"),
        ]),
        &contents(&m.path("m/v1")),
    );
}

/// A write that fills the store's filesystem gets ENOSPC; the draft stays usable and no
/// version is made of what was half-written.
#[test]
fn enospc_while_staging_leaves_a_usable_draft() {
    let s = TestStore::new();
    let _tmpfs = Tmpfs::mount(&s.root, "64m");
    let src = s.tree("src", &[("a.txt", "alpha\n"), ("d/b.txt", "bee\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");

    let filler = r#"
import errno, os, sys
chunk = bytes(range(256)) * 4096
written = 0
try:
    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while written < 200 * 1024 * 1024:
            written += os.write(fd, chunk)
    finally:
        os.close(fd)
    print("ok", written)
except OSError as e:
    print(errno.errorcode[e.errno], written)
"#;
    let got = python(filler, &[draft.join("big.bin").as_os_str()]);
    let (errno, written) = got.split_once(' ').unwrap();
    assert_eq!(
        errno,
        "ENOSPC",
        "writing 200 MiB into a draft on a 64 MiB store: got {got}\nmount.log:\n{}",
        log_tail(&s)
    );
    let written: u64 = written.parse().unwrap();
    assert!(written < 64 << 20, "wrote {written} bytes into 64 MiB");
    assert_eq!(versions(&s, "m"), ["v0"], "a full disk made a version");
    assert_eq!(drafts_listed(&s), ["m"]);

    // The draft is usable: remove the big file (on a full disk, as a local filesystem
    // allows), write small ones, commit.
    assert_eq!(
        py_errno("os.unlink(p)", &draft.join("big.bin")),
        "ok",
        "unlink of the file that filled the store\nmount.log:\n{}",
        log_tail(&s)
    );
    fs::write(draft.join("small.txt"), "small\n").unwrap();
    fs::write(draft.join("d/b.txt"), "BEE\n").unwrap();
    assert_eq!(
        write_control(&draft.join(".commit"), "commit"),
        "ok",
        "commit after the disk was freed\nmount.log:\n{}",
        log_tail(&s)
    );
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_eq!(ls(&s, "m:latest"), ["a.txt", "d/b.txt", "small.txt"]);
    assert_contents(
        "m:v1",
        &expect_files(&[
            ("a.txt", b"alpha\n"),
            ("d/b.txt", b"BEE\n"),
            ("small.txt", b"small\n"),
        ]),
        &contents(&m.path("m/v1")),
    );
    s.ok(&["verify"]);
    drop(m);
}

/// Fills the filesystem at `dir` with a file `name`: returns its path once writing it hit
/// ENOSPC.
fn fill_disk(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever page was half free is taken too.
    while f.write(&[1]).is_ok() {}
    path
}

/// A commit on a full disk, through `.commit` and through the CLI, fails with ENOSPC and
/// leaves no version and the draft whole; `log` on a full disk stores nothing. Once space is
/// freed, the same draft commits to exactly what was staged.
#[test]
fn enospc_during_a_commit_keeps_the_draft_whole() {
    let s = TestStore::new();
    let _tmpfs = Tmpfs::mount(&s.root, "64m");
    let src = s.tree("src", &[("a.txt", "alpha\n"), ("d/b.txt", "bee\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");
    // Enough entries that sealing the version needs pages the catalog does not have yet.
    let mut expected = expect_files(&[("a.txt", b"alpha\n"), ("d/b.txt", b"BEE\n")]);
    fs::write(draft.join("d/b.txt"), "BEE\n").unwrap();
    fs::create_dir(draft.join("many")).unwrap();
    for i in 0..3000 {
        let rel = format!("many/file-{i:05}.txt");
        let body = format!("file {i} {}\n", "x".repeat(i % 97));
        fs::write(draft.join(&rel), &body).unwrap();
        expected.insert(rel, body.into_bytes());
    }
    let tree_before = snapshot(&draft);
    // The write-ahead log keeps its size after a checkpoint; empty it, so that sealing the
    // version needs new space.
    let busy: i64 = rusqlite::Connection::open(s.root.join("catalog.db"))
        .and_then(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(busy, 0, "the catalog's log could not be emptied");
    let filler = fill_disk(&s.root, "filler");
    let before = fingerprint(&s);

    assert_eq!(
        write_control(&draft.join(".commit"), "commit"),
        "ENOSPC",
        "commit through .commit on a full disk\nmount.log:\n{}",
        log_tail(&s)
    );
    let err = s.fail(&["draft", "commit", "m"]);
    assert!(
        err.contains("disk is full") && err.contains("catalog.db"),
        "draft commit on a full disk: {err}"
    );
    let more = s.tree("more", &[("new.txt", &"n".repeat(1 << 20))]);
    let err = s.fail(&[
        os("log"),
        os("other"),
        more.as_os_str(),
        os("--type"),
        os("t"),
    ]);
    assert!(
        err.contains("No space left on device"),
        "log on a full disk: {err}"
    );

    assert_eq!(versions(&s, "m"), ["v0"], "a full disk made a version");
    assert_eq!(drafts_listed(&s), ["m"]);
    assert_eq!(snapshot(&draft), tree_before, "the draft changed");
    s.ok(&["verify"]);
    fs::remove_file(&filler).unwrap();
    assert_unchanged(&before, &fingerprint(&s), "store after the refused commits");

    assert_eq!(
        write_control(&draft.join(".commit"), "commit"),
        "ok",
        "commit after the disk was freed\nmount.log:\n{}",
        log_tail(&s)
    );
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_contents("m:v1", &expected, &contents(&m.path("m/v1")));
    s.ok(&["verify"]);
    let gc = s.ok(&["gc"]);
    assert!(!gc.is_empty());
    drop(m);
}

/// Requests that are neither `commit` nor a valid JSON object are EINVAL (at the write, or
/// at close for an unfinished one) and leave the store and the draft as they were.
#[test]
fn invalid_commit_requests_are_einval_and_change_nothing() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");
    fs::write(draft.join("new.txt"), "new\n").unwrap();
    fs::write(draft.join("a.txt"), "ALPHA\n").unwrap();
    let control = draft.join(".commit");

    let before = fingerprint(&s);
    let tree_before = snapshot(&draft);
    for bad in [
        "nonsense",
        "nonsense\n",
        "commit please\n",
        "{\"aliases\": 5}",
        "{\"aliases\": [5]}",
        "{\"aliases\": [\"v3\"]}",
        "{\"aliases\": [\"bad alias\"]}",
        "{\"colour\": \"red\"}",
        "{\"aliases\": [\"best\"], \"unknown\": 1}",
        "{\"metadata\": [1, 2]}",
        "{\"description\": 7}",
        "{\"type\": \"no such type!\"}",
        "[1, 2]",
        "\"commit\"",
        "{]",
        // Unfinished: refused when the file is closed.
        "{\"aliases\": [\"be",
        "comm",
    ] {
        assert_eq!(
            write_control(&control, bad),
            "EINVAL",
            "request {bad:?}\nmount.log:\n{}",
            log_tail(&s)
        );
    }
    assert_unchanged(&before, &fingerprint(&s), "refused commit requests");
    assert_same_tree(
        "the draft after refused requests",
        &tree_before,
        &snapshot(&draft),
        |_, _| Ignore::default(),
    );
    assert_eq!(versions(&s, "m"), ["v0"]);
    assert_eq!(drafts_listed(&s), ["m"]);

    assert_eq!(write_control(&control, "{\"aliases\": [\"best\"]}"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_contents(
        "m:best",
        &expect_files(&[("a.txt", b"ALPHA\n"), ("new.txt", b"new\n")]),
        &contents(&m.path("m/best/")),
    );
}

// ---------------------------------------------------------------------------------------
// Durability
// ---------------------------------------------------------------------------------------

/// A draft with new files, modified base files, a renamed and a deleted file, a new
/// directory, a symlink and a changed mode shows exactly the same after umount and mount,
/// and then commits.
#[test]
fn drafts_survive_unmount_and_remount() {
    let s = TestStore::new();
    let src = s.tree(
        "src",
        &[
            ("a.txt", "alpha\n"),
            ("b.txt", "bravo\n"),
            ("d/c.txt", "charlie\n"),
            ("gone.txt", "going\n"),
            ("mv.txt", "moving\n"),
        ],
    );
    log(&s, "m", &src);
    let mp = mountpoint(&s);
    let big = pseudo_random(2 * 1024 * 1024 + 17, 7);
    let (tree_before, status_before) = {
        let m = Mounted::new(&s, &mp);
        fs::create_dir(m.path("drafts/m")).unwrap();
        let draft = m.path("drafts/m");
        fs::write(draft.join("new.txt"), "new\n").unwrap();
        fs::create_dir(draft.join("nd")).unwrap();
        fs::write(draft.join("nd/big.bin"), &big).unwrap();
        fs::create_dir(draft.join("empty")).unwrap();
        // Modified in place (copied from the base on open) and rewritten whole.
        let f = fs::OpenOptions::new()
            .write(true)
            .open(draft.join("a.txt"))
            .unwrap();
        f.write_all_at(b"ALPHA", 0).unwrap();
        drop(f);
        fs::write(draft.join("d/c.txt"), "CHARLIE, longer\n").unwrap();
        fs::rename(draft.join("mv.txt"), draft.join("d/moved.txt")).unwrap();
        fs::remove_file(draft.join("gone.txt")).unwrap();
        std::os::unix::fs::symlink("../a.txt", draft.join("d/link")).unwrap();
        fs::set_permissions(draft.join("b.txt"), fs::Permissions::from_mode(0o755)).unwrap();
        let tree = snapshot(&draft);
        let status = fs::read_to_string(draft.join(".commit")).unwrap();
        let out = m.umount();
        assert!(
            out.status.success(),
            "umount: {}\n{}",
            stderr(&out),
            stdout(&out)
        );
        (tree, status)
    };
    assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
    assert_status_has(
        &status_before,
        &[
            "A new.txt",
            "A nd/big.bin",
            "M a.txt",
            "M d/c.txt",
            "M b.txt",
            "D gone.txt",
            "D mv.txt",
            "A d/moved.txt",
            "A d/link",
        ],
    );

    let m = Mounted::new(&s, &mp);
    let draft = m.path("drafts/m");
    assert_same_tree(
        "the draft after umount and mount",
        &tree_before,
        &snapshot(&draft),
        ignore_dir_size_and_mtime,
    );
    assert_eq!(
        fs::read_to_string(draft.join(".commit")).unwrap(),
        status_before,
        "the draft's status after umount and mount"
    );
    assert_eq!(fs::read(draft.join("a.txt")).unwrap(), b"ALPHA\n");

    assert_eq!(write_control(&draft.join(".commit"), "commit"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    let committed = snapshot(&m.path("m/v1"));
    assert_contents(
        "m:v1",
        &expect_files(&[
            ("a.txt", b"ALPHA\n"),
            ("b.txt", b"bravo\n"),
            ("d/c.txt", b"CHARLIE, longer\n"),
            ("d/moved.txt", b"moving\n"),
            ("new.txt", b"new\n"),
            ("nd/big.bin", &big),
        ]),
        &contents(&m.path("m/v1")),
    );
    assert_eq!(committed["d/link"].content, "../a.txt");
    assert_eq!(committed["b.txt"].mode, 0o555, "the executable bit is kept");
    assert_eq!(committed["empty"].kind, 'd', "the empty directory is kept");
}

/// Files closed (or fsynced) in a draft are all there, complete, after the server is killed
/// with SIGKILL and the store is mounted again on the same mount point; the draft commits and
/// the store verifies.
#[test]
fn drafts_survive_a_killed_server() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n"), ("d/b.txt", "bee\n")]);
    log(&s, "m", &src);
    let mp = mountpoint(&s);
    let m = Mounted::new(&s, &mp);
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");

    let big = pseudo_random(3 * 1024 * 1024 + 5, 3);
    let synced = pseudo_random(1024 * 1024 + 1, 4);
    fs::write(draft.join("closed.txt"), "closed\n").unwrap();
    fs::write(draft.join("big.bin"), &big).unwrap();
    fs::create_dir(draft.join("sub")).unwrap();
    fs::write(draft.join("sub/deep.txt"), "deep\n").unwrap();
    {
        let mut f = fs::File::create(draft.join("synced.bin")).unwrap();
        f.write_all(&synced).unwrap();
        f.sync_all().unwrap();
    }
    {
        // A base file modified and fsynced (not closed before the sync).
        let f = fs::OpenOptions::new()
            .write(true)
            .open(draft.join("d/b.txt"))
            .unwrap();
        f.write_all_at(b"BEE", 0).unwrap();
        f.sync_data().unwrap();
    }
    fs::rename(draft.join("a.txt"), draft.join("renamed.txt")).unwrap();
    let expected = expect_files(&[
        ("big.bin", &big),
        ("closed.txt", b"closed\n"),
        ("d/b.txt", b"BEE\n"),
        ("renamed.txt", b"alpha\n"),
        ("sub/deep.txt", b"deep\n"),
        ("synced.bin", &synced),
    ]);
    assert_contents("the draft before the kill", &expected, &contents(&draft));

    let pid = m.server_pid();
    m.kill_server(pid, Duration::from_secs(10));

    // `artifactfs mount` replaces the dead mount.
    let out = s.run(&[os("mount"), m.mp.as_os_str()]);
    assert!(
        out.status.success(),
        "mount over a dead mount failed ({}):\n{}\nmount.log:\n{}",
        out.status,
        stderr(&out),
        log_tail(&s)
    );
    assert!(
        stderr(&out).contains("stale"),
        "mount should say it replaced a stale mount: {}",
        stderr(&out)
    );
    let m2 = Mounted::adopt(&s, &m.mp);
    assert_ne!(m2.server_pid(), pid, "a new server serves the mount");
    let draft = m2.path("drafts/m");
    assert_contents(
        "the draft after the server was killed",
        &expected,
        &contents(&draft),
    );

    assert_eq!(
        write_control(&draft.join(".commit"), "commit"),
        "ok",
        "commit after a killed server\nmount.log:\n{}",
        log_tail(&s)
    );
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_contents("m:v1", &expected, &contents(&m2.path("m/v1")));
    let out = s.run(&["verify"]);
    assert!(
        out.status.success(),
        "verify after a killed server and a commit failed ({}):\n{}{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
}

/// The CLI and the mount work on the same drafts: what `draft new`/`draft add` do shows in
/// the mount, what is written through the mount shows in `draft status` and is what `draft
/// commit` commits.
#[test]
fn the_cli_and_the_mount_share_drafts() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha\n"), ("old.txt", "old\n")]);
    log(&s, "m", &src);
    let extra = s.tree(
        "extra",
        &[("cli.txt", "from the cli\n"), ("cli2.txt", "later\n")],
    );
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&extra.join("cli.txt"))]);
    let m = Mounted::new(&s, &mountpoint(&s));
    let draft = m.path("drafts/m");

    // The CLI's draft in the mount.
    assert_eq!(fs::read(draft.join("cli.txt")).unwrap(), b"from the cli\n");
    assert_eq!(fs::read(draft.join("a.txt")).unwrap(), b"alpha\n");

    // Written through the mount, seen by the CLI.
    fs::write(draft.join("mount.txt"), "from the mount\n").unwrap();
    fs::write(draft.join("a.txt"), "ALPHA via mount\n").unwrap();
    fs::create_dir(draft.join("md")).unwrap();
    fs::write(draft.join("md/x.bin"), "x\n").unwrap();
    fs::remove_file(draft.join("old.txt")).unwrap();
    let status = status_of(&s, "m");
    assert_status_has(
        &status,
        &[
            "A cli.txt",
            "A mount.txt",
            "A md/x.bin",
            "M a.txt",
            "D old.txt",
        ],
    );

    // Added by the CLI while mounted: shows in the mount.
    s.ok(&["draft", "add", "m", p(&extra.join("cli2.txt"))]);
    wait_until(
        "a file added by the CLI shows in the mounted draft",
        COHERENCE,
        || match fs::read(draft.join("cli2.txt")) {
            Ok(b) if b == b"later\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The CLI commits what the mount wrote.
    s.ok(&["draft", "commit", "m", "--alias", "best"]);
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_eq!(cat(&s, "m:latest", "mount.txt"), "from the mount\n");
    assert_eq!(cat(&s, "m:latest", "a.txt"), "ALPHA via mount\n");
    assert_eq!(cat(&s, "m:latest", "md/x.bin"), "x\n");
    assert_eq!(
        ls(&s, "m:latest"),
        ["a.txt", "cli.txt", "cli2.txt", "md/x.bin", "mount.txt"]
    );
    let expected = expect_files(&[
        ("a.txt", b"ALPHA via mount\n"),
        ("cli.txt", b"from the cli\n"),
        ("cli2.txt", b"later\n"),
        ("md/x.bin", b"x\n"),
        ("mount.txt", b"from the mount\n"),
    ]);
    wait_until(
        "the CLI's commit shows in the mount",
        COHERENCE,
        || match fs::read_link(m.path("m/best")) {
            Ok(t) if t == Path::new("v1") => Ok(()),
            other => Err(format!("m/best: {other:?}")),
        },
    );
    assert_contents(
        "m/best through the mount",
        &expected,
        &contents(&m.path("m/best/")),
    );
    wait_until(
        "the committed draft leaves the mount",
        COHERENCE,
        || match fs::symlink_metadata(&draft) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // The other way round: a draft started in the mount, filled there and by the CLI,
    // committed by the CLI.
    fs::create_dir(m.path("drafts/fresh")).unwrap();
    assert!(drafts_listed(&s).contains(&"fresh".to_string()));
    fs::write(m.path("drafts/fresh/w.txt"), "written\n").unwrap();
    s.ok(&["draft", "add", "fresh", p(&extra.join("cli.txt"))]);
    let status = status_of(&s, "fresh");
    assert_status_has(&status, &["A w.txt", "A cli.txt"]);
    let committed = s.json(&["draft", "commit", "fresh", "--type", "model"]);
    assert_eq!(committed["ref"], "fresh:v0", "{committed}");
    assert_eq!(cat(&s, "fresh:v0", "w.txt"), "written\n");
    assert_eq!(cat(&s, "fresh:v0", "cli.txt"), "from the cli\n");
    assert_eq!(s.json(&["show", "fresh:v0"])["type"], "model");
}
