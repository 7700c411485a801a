//! Drafts through the mount, filled by the tools people fill directories with: `cp -r`,
//! `cp -a`, `rsync`, `tar`, `git clone`, Python file I/O, SQLite, and several processes at
//! once. Each test applies the same operations to a plain local directory and to a draft,
//! commits the draft through its `.commit` control file, and checks that exactly one new
//! version appeared and that it holds what the plain directory holds: contents, modes (as a
//! version shows them: the executable bit), symlink targets, empty directories and every mtime
//! the tool keeps.
//!
//! A tool that fails in the draft, or a difference, is recorded and the test goes on, so that
//! its failure lists everything that went wrong (with the requests STORE/mount.log shows
//! failed), not only the first thing. These tests fail, never skip, when FUSE or a tool is missing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::mount::*;
use common::*;
use serde_json::Value;

type Tree = BTreeMap<String, Node>;

const NS: i128 = 1_000_000_000;

/// Every entry these tests make to be copied is dated before this (2022), and the tools run
/// now: an entry of the plain copy still dated before it kept its source's mtime, so the draft
/// and the version must have kept it too.
const SOURCE_DATES_END: i128 = 1_650_000_000 * NS;

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

/// Fails (never skips) when a program these tests drive is missing.
fn require_tools(tools: &[(&str, &str)]) {
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    for (program, package) in tools {
        assert!(
            path.iter().any(|d| d.join(program).is_file()),
            "{program} not found on PATH: these tests drive it through the mount and do not skip; \
             scripts/setup.sh installs it (apt-get install {package})"
        );
    }
}

/// Writes `content` at `dir/rel` with `mode` and an mtime in the past (with nanoseconds).
fn put(dir: &Path, rel: &str, content: &[u8], mode: u32, stamp: u64) {
    let p = dir.join(rel);
    write_file(&p, content);
    set_mode(&p, mode);
    set_mtime(
        &p,
        time_at(1_000_000_000 + 86_400 * stamp, 1_000 + stamp as u32),
    );
}

fn put_symlink(dir: &Path, rel: &str, target: &str, stamp: i64) {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    symlink(target, &p).unwrap();
    set_symlink_mtime(&p, 1_100_000_000 + 3_600 * stamp, 5 + stamp);
}

/// Dates `dir` and every directory under it in the past, each differently. Run after the
/// last change inside them: adding an entry dates a directory now.
fn age_dirs(dir: &Path) {
    let dirs: Vec<String> = snapshot(dir)
        .into_iter()
        .filter(|(_, n)| n.kind == 'd')
        .map(|(p, _)| p)
        .collect();
    for (i, rel) in dirs.iter().enumerate() {
        set_mtime(
            &dir.join(rel),
            time_at(1_200_000_000 + 3_600 * i as u64, 77 + i as u32),
        );
    }
    set_mtime(dir, time_at(1_199_000_000, 76));
}

/// The tree the copying tools start from: nested directories, empty ones, symlinks (relative,
/// to a directory, dangling), executable files, an empty file, a 3 MiB file, 200 small files,
/// names with spaces and non-ASCII letters, modes other than 644; every entry dated in the
/// past, with nanoseconds.
fn make_source(dir: &Path) {
    put(dir, "README.md", b"# source tree\n", 0o644, 0);
    put(dir, "bin/run.sh", b"#!/bin/sh\necho run\n", 0o755, 1);
    put(dir, "bin/tool", &pseudo_random(5_000, 2), 0o700, 2);
    put(dir, "data/big.bin", &pseudo_random(3 << 20, 3), 0o644, 3);
    put(
        dir,
        "data/nested/deep/x.json",
        br#"{"k": [1, 2]}"#,
        0o600,
        4,
    );
    put(dir, "name with space.txt", b"spaced out\n", 0o644, 5);
    put(
        dir,
        "\u{fc}n\u{ef}c\u{f6}de.txt",
        "ünïcöde\n".as_bytes(),
        0o664,
        6,
    );
    put(dir, "empty-file", b"", 0o644, 7);
    for i in 0..200u64 {
        let content = format!("small file {i}\n").repeat(i as usize % 7 + 1);
        put(
            dir,
            &format!("small/f{i:03}.txt"),
            content.as_bytes(),
            0o644,
            10 + i,
        );
    }
    fs::create_dir_all(dir.join("empty")).unwrap();
    fs::create_dir_all(dir.join("data/nested/also-empty")).unwrap();
    put_symlink(dir, "link-to-readme", "README.md", 0);
    put_symlink(dir, "data/up", "../README.md", 1);
    put_symlink(dir, "bin-link", "bin", 2);
    put_symlink(dir, "dangling", "no/such/file", 3);
    set_mode(&dir.join("data/nested/deep"), 0o750);
    age_dirs(dir);
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// What the mount shows of a tree once committed: files read-only, keeping only the executable
/// bit; directories read-only.
fn as_version(tree: &Tree) -> Tree {
    tree.iter()
        .map(|(p, n)| {
            let mode = match n.kind {
                'f' if n.mode & 0o111 != 0 => 0o555,
                'f' => 0o444,
                'd' => 0o555,
                _ => n.mode,
            };
            (p.clone(), Node { mode, ..n.clone() })
        })
        .collect()
}

fn time_text(ns: i128) -> String {
    format!("{}.{:09}", ns.div_euclid(NS), ns.rem_euclid(NS))
}

fn describe(n: &Node) -> String {
    match n.kind {
        'd' => format!("directory {:o}", n.mode),
        'l' => format!("symlink -> {}", n.content),
        _ => format!("file {:o}, {} bytes", n.mode, n.size),
    }
}

/// Which mtimes a comparison holds to.
#[derive(Clone, Copy)]
enum Mtimes {
    /// Every entry's, directories included.
    All,
    /// Those the expected tree kept from a source dated in the past (see SOURCE_DATES_END).
    KeptFromSource,
}

/// Every difference between two trees: entries missing or unexpected, and per entry the kind,
/// mode, size (not of directories: that is the filesystem's own), content or link target, and
/// the mtime as `mtimes` says. `volatile` paths only have to exist with the same kind and mode:
/// their bytes are the tool's own per filesystem (git's index records inode numbers).
fn differences(expected: &Tree, actual: &Tree, mtimes: Mtimes, volatile: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for (p, e) in expected {
        let Some(a) = actual.get(p) else {
            out.push(format!("{p}: missing (expected: {})", describe(e)));
            continue;
        };
        if a.kind != e.kind {
            out.push(format!("{p}: {} instead of {}", describe(a), describe(e)));
            continue;
        }
        let mut why = Vec::new();
        let exact = !volatile.contains(&p.as_str());
        if a.mode != e.mode {
            why.push(format!("mode {:o} instead of {:o}", a.mode, e.mode));
        }
        if e.kind != 'd' && exact && a.size != e.size {
            why.push(format!("size {} instead of {}", a.size, e.size));
        }
        if e.kind == 'l' && a.content != e.content {
            why.push(format!("target {:?} instead of {:?}", a.content, e.content));
        }
        if e.kind == 'f' && exact && a.content != e.content {
            why.push("different content".into());
        }
        let check_mtime = match mtimes {
            Mtimes::All => true,
            Mtimes::KeptFromSource => e.mtime_ns < SOURCE_DATES_END,
        };
        if check_mtime && exact && a.mtime_ns != e.mtime_ns {
            why.push(format!(
                "mtime {} instead of {}",
                time_text(a.mtime_ns),
                time_text(e.mtime_ns)
            ));
        }
        if !why.is_empty() {
            out.push(format!("{p} ({}): {}", e.kind, why.join(", ")));
        }
    }
    for (p, a) in actual {
        if !expected.contains_key(p) {
            out.push(format!("{p}: not expected ({})", describe(a)));
        }
    }
    out
}

/// Mounts the store, logging failed requests (see [`Mounted::logging_requests`]).
fn mount(s: &TestStore) -> Mounted<'_> {
    Mounted::logging_requests(s, &mountpoint(s))
}

/// The first and last lines of a tool's output, for a failure message.
fn head(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let shown: Vec<String> = if all.len() <= lines + 2 {
        all.iter().map(|l| format!("      {l}")).collect()
    } else {
        let mut v: Vec<String> = all[..lines].iter().map(|l| format!("      {l}")).collect();
        v.push(format!(
            "      ... ({} lines in all; the last two:)",
            all.len()
        ));
        v.extend(all[all.len() - 2..].iter().map(|l| format!("      {l}")));
        v
    };
    shown.join("\n")
}

/// What went wrong in one test, reported all at once when it ends.
struct Findings<'a> {
    test: &'static str,
    store: &'a TestStore,
    problems: Vec<String>,
}

impl<'a> Findings<'a> {
    fn new(test: &'static str, store: &'a TestStore) -> Self {
        Findings {
            test,
            store,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, text: String) {
        self.problems.push(text);
    }

    fn check(&mut self, ok: bool, text: impl FnOnce() -> String) {
        if !ok {
            self.problem(text());
        }
    }

    fn report(&self) -> String {
        let list: Vec<String> = self
            .problems
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}. {p}", i + 1))
            .collect();
        format!(
            "{}: {} problem(s):\n{}\nfailed requests in STORE/mount.log:\n{}",
            self.test,
            self.problems.len(),
            list.join("\n"),
            mount_log_problems(
                &fs::read_to_string(self.store.root.join("mount.log")).unwrap_or_default()
            )
            .0
        )
    }

    /// Stops the test: what follows cannot be checked.
    fn fatal(&mut self, text: String) -> ! {
        self.problem(format!("FATAL: {text}"));
        panic!("{}", self.report());
    }

    /// Ends the test, failing it with everything found.
    fn done(self) {
        assert!(self.problems.is_empty(), "{}", self.report());
    }

    /// Runs a tool on a draft; its failure is recorded, with its standard error, and the test
    /// goes on to compare what the tool did manage.
    fn tool(&mut self, label: &str, program: &str, args: &[&OsStr], cwd: Option<&Path>) -> Output {
        let out = run_tool(program, args, cwd);
        if !out.status.success() {
            self.problem(format!(
                "`{label}` in the draft failed ({}); on the plain directory it succeeds. stderr:\n{}",
                out.status,
                head(&stderr(&out), 6)
            ));
        }
        out
    }

    fn compare(
        &mut self,
        what: &str,
        expected: &Tree,
        actual: &Tree,
        mtimes: Mtimes,
        volatile: &[&str],
    ) {
        let d = differences(expected, actual, mtimes, volatile);
        if !d.is_empty() {
            let shown: Vec<String> = d.iter().take(15).map(|l| format!("      {l}")).collect();
            self.problem(format!(
                "{what}: {} difference(s){}:\n{}",
                d.len(),
                if d.len() > 15 { " (first 15)" } else { "" },
                shown.join("\n")
            ));
        }
    }

    /// Commits draft `name` by writing `commit` to its control file (as `echo commit >`
    /// does) and checks that this made exactly one new version, that `latest` names it and
    /// that the draft is gone. Returns the version ("v1").
    fn commit(&mut self, m: &Mounted, name: &str) -> String {
        let before = versions(self.store, name);
        let control = m.path(&format!("drafts/{name}/.commit"));
        if let Err(e) = fs::write(&control, "commit\n") {
            self.fatal(format!(
                "writing `commit` to drafts/{name}/.commit failed: {e} (errno {:?})",
                e.raw_os_error()
            ));
        }
        let after = versions(self.store, name);
        let new: Vec<&String> = after.iter().filter(|v| !before.contains(v)).collect();
        if new.len() != 1 || after.len() != before.len() + 1 {
            self.fatal(format!(
                "committing drafts/{name} should have made one new version of {name}: \
                 versions before {before:?}, after {after:?}"
            ));
        }
        let v = new[0].clone();
        let latest = fs::read_link(m.path(&format!("{name}/latest")));
        self.check(latest.as_ref().is_ok_and(|t| t == Path::new(&v)), || {
            format!("after the commit {name}/latest should be a symlink to {v}: {latest:?}")
        });
        // Read from the server: whether the kernel still has the draft's directory cached is
        // the business of `right_after_a_commit_the_draft_is_gone_and_latest_moved`.
        let listed: Vec<String> = fs::read_dir(m.path("drafts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        self.check(!listed.iter().any(|d| d == name), || {
            format!("drafts/ still lists {name} after its commit: {listed:?}")
        });
        let drafts = self.store.json(&["draft", "list"]);
        self.check(
            !drafts
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["draft"].as_str() == Some(name)),
            || format!("draft {name} is still listed after its commit: {drafts}"),
        );
        v
    }

    /// Compares draft `name` with `plain` (the same operations on a local directory), commits
    /// it, and compares the new version with the draft as it was and with `plain`. Returns the
    /// version and what the mount shows of it.
    fn commit_and_compare(
        &mut self,
        m: &Mounted,
        name: &str,
        plain: &Path,
        volatile: &[&str],
    ) -> (String, Tree) {
        let plain_tree = snapshot(plain);
        let draft_tree = snapshot(&m.path(&format!("drafts/{name}")));
        self.compare(
            &format!("drafts/{name} before its commit vs the plain directory"),
            &plain_tree,
            &draft_tree,
            Mtimes::KeptFromSource,
            volatile,
        );
        let v = self.commit(m, name);
        let version = snapshot(&m.path(&format!("{name}/{v}")));
        self.compare(
            &format!("{name}/{v} vs drafts/{name} just before its commit"),
            &as_version(&draft_tree),
            &version,
            Mtimes::All,
            &[],
        );
        self.compare(
            &format!("{name}/{v} vs the plain directory"),
            &as_version(&plain_tree),
            &version,
            Mtimes::KeptFromSource,
            volatile,
        );
        let reference = format!("{name}:{v}");
        let out = self.store.run(&["verify", &reference]);
        self.check(out.status.success(), || {
            format!("artifactfs verify {reference} failed: {}", stderr(&out))
        });
        (v, version)
    }
}

fn slash(p: &Path) -> String {
    format!("{}/", p.display())
}

// ----- cp -----

#[test]
fn cp_r_into_a_draft_of_a_new_artifact() {
    require_tools(&[("cp", "coreutils")]);
    let s = TestStore::new();
    let src = s.path("src");
    make_source(&src);
    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    tool_ok("cp", &[os("-r"), os(&src.join(".")), os(&plain)], None);
    let m = mount(&s);
    let mut f = Findings::new("cp -r into drafts/copied", &s);

    fs::create_dir(m.path("drafts/copied")).unwrap();
    let draft = m.path("drafts/copied");
    f.tool(
        "cp -r src/. drafts/copied/",
        "cp",
        &[os("-r"), os(&src.join(".")), os(&draft)],
        None,
    );
    let (v, version) = f.commit_and_compare(&m, "copied", &plain, &[]);
    f.check(v == "v0", || format!("the first version is v0, not {v}"));
    for dir in ["empty", "data/nested/also-empty"] {
        f.check(version.get(dir).is_some_and(|n| n.kind == 'd'), || {
            format!("the empty directory {dir} is missing from copied/{v}")
        });
    }
    f.done();
}

#[test]
fn cp_a_into_a_draft_based_on_a_version() {
    require_tools(&[("cp", "coreutils")]);
    let s = TestStore::new();
    let base = s.path("base");
    make_source(&base);
    assert_eq!(log(&s, "cpa", &base), "cpa:v0");
    // What is copied over it: some files of the base changed (content, mode, executable bit),
    // new files, directories, an empty directory and symlinks.
    let update = s.path("update");
    put(&update, "README.md", b"# updated\n", 0o644, 300);
    put(
        &update,
        "bin/run.sh",
        b"#!/bin/sh\necho run v2\n",
        0o644,
        301,
    );
    put(&update, "bin/tool", &pseudo_random(7_000, 9), 0o750, 302);
    put(
        &update,
        "data/big.bin",
        &pseudo_random(3 << 20, 10),
        0o644,
        303,
    );
    for i in 10..20u64 {
        put(
            &update,
            &format!("small/f{i:03}.txt"),
            format!("changed {i}\n").as_bytes(),
            0o640,
            310 + i,
        );
    }
    put(&update, "added/private/key.txt", b"secret\n", 0o600, 330);
    put(&update, "added/exec", b"#!/bin/sh\n", 0o700, 331);
    fs::create_dir_all(update.join("added/empty")).unwrap();
    put_symlink(&update, "added/to-key", "private/key.txt", 10);
    set_mode(&update.join("added/private"), 0o700);
    age_dirs(&update);

    let plain = s.path("plain");
    tool_ok("cp", &[os("-a"), os(&base), os(&plain)], None);
    tool_ok("cp", &[os("-a"), os(&update.join(".")), os(&plain)], None);
    let m = mount(&s);
    let mut f = Findings::new("cp -a into drafts/cpa (based on cpa:v0)", &s);

    fs::create_dir(m.path("drafts/cpa")).unwrap();
    let draft = m.path("drafts/cpa");
    f.tool(
        "cp -a update/. drafts/cpa/",
        "cp",
        &[os("-a"), os(&update.join(".")), os(&draft)],
        None,
    );
    let (v, _) = f.commit_and_compare(&m, "cpa", &plain, &[]);
    f.check(v == "v1", || format!("the second version is v1, not {v}"));
    let diff = s.ok(&["diff", "cpa:v0", "cpa:v1"]);
    for line in ["M README.md", "M bin/run.sh", "A added/private/key.txt"] {
        f.check(diff.lines().any(|l| l == line), || {
            format!("artifactfs diff cpa:v0 cpa:v1 should list {line:?}:\n{diff}")
        });
    }
    f.done();
}

// ----- rsync -----

#[test]
fn rsync_into_a_draft_then_again_with_nothing_to_do_then_with_delete() {
    require_tools(&[("rsync", "rsync")]);
    let s = TestStore::new();
    let src = s.path("src");
    make_source(&src);
    let plain = s.path("plain");
    let rsync = |args: &[&str], from: &Path, to: &Path| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        all.push(slash(from));
        all.push(slash(to));
        all
    };
    let plain_args = rsync(&["-a"], &src, &plain);
    tool_ok(
        "rsync",
        &plain_args.iter().map(os).collect::<Vec<_>>(),
        None,
    );
    let m = mount(&s);
    let mut f = Findings::new("rsync into drafts/rs", &s);

    // A new artifact, filled by rsync -a.
    fs::create_dir(m.path("drafts/rs")).unwrap();
    let draft = m.path("drafts/rs");
    let args = rsync(&["-a"], &src, &draft);
    f.tool(
        "rsync -a src/ drafts/rs/",
        "rsync",
        &args.iter().map(os).collect::<Vec<_>>(),
        None,
    );
    // A second run finds every file, mode and mtime as it left them: nothing to transfer.
    let args = rsync(&["-a", "--itemize-changes"], &src, &draft);
    let again = f.tool(
        "rsync -a --itemize-changes src/ drafts/rs/ (second run)",
        "rsync",
        &args.iter().map(os).collect::<Vec<_>>(),
        None,
    );
    let again = stdout(&again);
    f.check(again.trim().is_empty(), || {
        format!(
            "a second `rsync -a --itemize-changes src/ drafts/rs/` should change nothing; it did:\n{}",
            head(&again, 10)
        )
    });
    let (v, _) = f.commit_and_compare(&m, "rs", &plain, &[]);
    f.check(v == "v0", || format!("the first version is v0, not {v}"));

    // The source changes: files and a whole directory removed, contents, an executable bit and
    // a link target changed, files added. rsync --delete brings a new draft of v0 up to date,
    // updating files in place from their old contents.
    for i in 0..50 {
        fs::remove_file(src.join(format!("small/f{i:03}.txt"))).unwrap();
    }
    fs::remove_dir_all(src.join("data/nested")).unwrap();
    fs::remove_file(src.join("dangling")).unwrap();
    put(
        &src,
        "README.md",
        b"# source tree, second edition\n",
        0o644,
        400,
    );
    let mut big = fs::read(src.join("data/big.bin")).unwrap();
    big[1_500_000..1_500_100].copy_from_slice(&[0xAB; 100]);
    put(&src, "data/big.bin", &big, 0o644, 401);
    set_mode(&src.join("bin/run.sh"), 0o644);
    fs::remove_file(src.join("link-to-readme")).unwrap();
    put_symlink(&src, "link-to-readme", "bin/run.sh", 20);
    put(&src, "new/dir/file.txt", b"new\n", 0o644, 402);
    fs::create_dir_all(src.join("new/empty")).unwrap();
    age_dirs(&src);
    let update = ["-a", "--delete", "--inplace", "--no-whole-file"];
    let plain_args = rsync(&update, &src, &plain);
    tool_ok(
        "rsync",
        &plain_args.iter().map(os).collect::<Vec<_>>(),
        None,
    );

    fs::create_dir(m.path("drafts/rs")).unwrap();
    let args = rsync(&update, &src, &draft);
    f.tool(
        "rsync -a --delete --inplace --no-whole-file src/ drafts/rs/ (draft of rs:v0)",
        "rsync",
        &args.iter().map(os).collect::<Vec<_>>(),
        None,
    );
    let args = rsync(&["-a", "--delete", "--itemize-changes"], &src, &draft);
    let again = f.tool(
        "rsync -a --delete --itemize-changes src/ drafts/rs/ (second run)",
        "rsync",
        &args.iter().map(os).collect::<Vec<_>>(),
        None,
    );
    let again = stdout(&again);
    f.check(again.trim().is_empty(), || {
        format!(
            "a second `rsync -a --delete --itemize-changes` should change nothing; it did:\n{}",
            head(&again, 10)
        )
    });
    let (v, version) = f.commit_and_compare(&m, "rs", &plain, &[]);
    f.check(v == "v1", || format!("the second version is v1, not {v}"));
    f.check(
        !version.contains_key("small/f000.txt") && !version.contains_key("data/nested"),
        || "rsync --delete removed small/f000.txt and data/nested, yet rs/v1 has them".into(),
    );
    let diff = s.ok(&["diff", "rs:v0", "rs:v1"]);
    for line in [
        "D small/f000.txt",
        "D data/nested/deep/x.json",
        "D dangling",
        "M README.md",
        "M data/big.bin",
        "M bin/run.sh",
        "M link-to-readme",
        "A new/dir/file.txt",
    ] {
        f.check(diff.lines().any(|l| l == line), || {
            format!(
                "artifactfs diff rs:v0 rs:v1 should list {line:?}:\n{}",
                head(&diff, 20)
            )
        });
    }
    f.done();
}

// ----- tar -----

#[test]
fn tar_x_into_a_draft_and_over_a_version() {
    require_tools(&[("tar", "tar"), ("gzip", "gzip")]);
    let s = TestStore::new();
    let src = s.path("src");
    make_source(&src);
    let whole = s.path("whole.tar");
    // POSIX format: mtimes with nanoseconds.
    tool_ok(
        "tar",
        &[
            os("--format=posix"),
            os("-C"),
            os(&src),
            os("-cf"),
            os(&whole),
            os("."),
        ],
        None,
    );
    let update = s.path("update");
    put(
        &update,
        "README.md",
        b"# from the second tarball\n",
        0o644,
        500,
    );
    put(&update, "small/f001.txt", b"replaced by tar\n", 0o600, 501);
    put(&update, "bin/run.sh", b"#!/bin/sh\necho tar\n", 0o755, 502);
    put(
        &update,
        "more/deeper/new.bin",
        &pseudo_random(100_000, 5),
        0o644,
        503,
    );
    fs::create_dir_all(update.join("more/empty")).unwrap();
    put_symlink(&update, "more/link", "deeper/new.bin", 30);
    age_dirs(&update);
    let patch = s.path("update.tar.gz");
    tool_ok(
        "tar",
        &[
            os("--format=posix"),
            os("-C"),
            os(&update),
            os("-czf"),
            os(&patch),
            os("README.md"),
            os("small"),
            os("bin"),
            os("more"),
        ],
        None,
    );
    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    tool_ok("tar", &[os("-C"), os(&plain), os("-xf"), os(&whole)], None);
    let m = mount(&s);
    let mut f = Findings::new("tar x into drafts/tarred", &s);

    fs::create_dir(m.path("drafts/tarred")).unwrap();
    let draft = m.path("drafts/tarred");
    f.tool(
        "tar -C drafts/tarred -xf whole.tar",
        "tar",
        &[os("-C"), os(&draft), os("-xf"), os(&whole)],
        None,
    );
    let (v, _) = f.commit_and_compare(&m, "tarred", &plain, &[]);
    f.check(v == "v0", || format!("the first version is v0, not {v}"));

    // A second tarball extracted over a draft of v0: tar replaces existing files.
    tool_ok("tar", &[os("-C"), os(&plain), os("-xzf"), os(&patch)], None);
    fs::create_dir(m.path("drafts/tarred")).unwrap();
    f.tool(
        "tar -C drafts/tarred -xzf update.tar.gz (draft of tarred:v0)",
        "tar",
        &[os("-C"), os(&draft), os("-xzf"), os(&patch)],
        None,
    );
    let (v, _) = f.commit_and_compare(&m, "tarred", &plain, &[]);
    f.check(v == "v1", || format!("the second version is v1, not {v}"));
    f.done();
}

// ----- git -----

/// git with no user or system configuration and fixed identities and dates, so that the same
/// commands make the same objects in the draft and in the plain directory.
fn git(home: &Path, args: &[&OsStr], cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.invalid")
        .env("GIT_AUTHOR_DATE", "2020-01-02T03:04:05Z")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.invalid")
        .env("GIT_COMMITTER_DATE", "2020-01-02T03:04:05Z")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    run_command(cmd)
}

fn git_ok(home: &Path, args: &[&str], cwd: &Path) -> String {
    let out = git(home, &args.iter().map(os).collect::<Vec<_>>(), Some(cwd));
    assert!(
        out.status.success(),
        "git {args:?} in {} failed ({}): {}",
        cwd.display(),
        out.status,
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn git_clone_into_a_draft_works_there_and_once_committed() {
    require_tools(&[("git", "git")]);
    let s = TestStore::new();
    let home = s.path("home");
    fs::create_dir_all(&home).unwrap();
    // A small repository with a few commits: files, an executable, a symlink, a binary, a tag.
    let repo = s.path("origin");
    fs::create_dir_all(&repo).unwrap();
    git_ok(&home, &["init", "-q", "-b", "main"], &repo);
    write_file(&repo.join("README.md"), b"# origin\n");
    write_file(&repo.join("src/main.py"), b"print('hello')\n");
    git_ok(&home, &["add", "-A"], &repo);
    git_ok(&home, &["commit", "-q", "-m", "first"], &repo);
    write_file(&repo.join("scripts/build.sh"), b"#!/bin/sh\nmake\n");
    set_mode(&repo.join("scripts/build.sh"), 0o755);
    symlink("../README.md", repo.join("src/readme-link")).unwrap();
    write_file(&repo.join("data/blob.bin"), &pseudo_random(100_000, 7));
    git_ok(&home, &["add", "-A"], &repo);
    git_ok(&home, &["commit", "-q", "-m", "second"], &repo);
    write_file(&repo.join("src/main.py"), b"print('hello, world')\n");
    fs::remove_file(repo.join("README.md")).unwrap();
    write_file(&repo.join("README.md"), b"# origin, edited\n");
    git_ok(&home, &["add", "-A"], &repo);
    git_ok(&home, &["commit", "-q", "-m", "third"], &repo);
    git_ok(&home, &["tag", "v1"], &repo);
    let origin_log = git_ok(&home, &["log", "--format=%H %s"], &repo);

    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    let m = mount(&s);
    let mut f = Findings::new("git clone into drafts/code", &s);
    fs::create_dir(m.path("drafts/code")).unwrap();
    let draft = m.path("drafts/code");

    // The same commands in the plain directory (which must work) and in the draft. The clone
    // copies objects in both: next to the origin, git would hard-link them (keeping their 0444
    // mode), which a draft refuses and git then copies instead.
    let steps: &[&[&str]] = &[
        &["clone", "-q", "--no-hardlinks", "ORIGIN", "repo"],
        &["-C", "repo", "fsck", "--full", "--strict"],
        &["-C", "repo", "status", "--porcelain"],
        &["-C", "repo", "log", "--format=%H %s"],
        &["-C", "repo", "checkout", "-q", "-b", "feature"],
        &["-C", "repo", "rm", "-q", "src/main.py"],
        &["-C", "repo", "commit", "-q", "-m", "in the draft"],
        &["-C", "repo", "status", "--porcelain"],
        &["-C", "repo", "fsck", "--full", "--strict"],
        &["-C", "repo", "rev-parse", "HEAD"],
    ];
    for step in steps {
        let args: Vec<&OsStr> = step
            .iter()
            .map(|a| if *a == "ORIGIN" { os(&repo) } else { os(*a) })
            .collect();
        let want = git(&home, &args, Some(&plain));
        assert!(
            want.status.success(),
            "git {step:?} in the plain directory failed: {}",
            stderr(&want)
        );
        let got = git(&home, &args, Some(&draft));
        if !got.status.success() {
            f.problem(format!(
                "`git {}` in the draft failed ({}); in the plain directory it succeeds. stderr:\n{}",
                step.join(" "),
                got.status,
                head(&stderr(&got), 6)
            ));
        } else if stdout(&got) != stdout(&want) {
            f.problem(format!(
                "`git {}` prints in the draft:\n{}\nbut in the plain directory:\n{}",
                step.join(" "),
                head(&stdout(&got), 10),
                head(&stdout(&want), 10)
            ));
        }
    }
    f.check(
        stdout(&git(
            &home,
            &[
                os("-C"),
                os("repo"),
                os("log"),
                os("--format=%H %s"),
                os("main"),
            ],
            Some(&draft),
        )) == origin_log,
        || "the clone in the draft does not have the origin's history".into(),
    );
    // The index records inode numbers and devices: its bytes are the filesystem's own.
    let (v, _) = f.commit_and_compare(&m, "code", &plain, &["repo/.git/index"]);
    f.check(v == "v0", || format!("the first version is v0, not {v}"));

    // The committed clone is a working (read-only) repository.
    let committed = m.path("code/latest/repo");
    let want_head = git_ok(&home, &["log", "--format=%H %s"], &plain.join("repo"));
    for (args, want) in [
        (vec!["log", "--format=%H %s"], Some(want_head)),
        (vec!["log", "--format=%H %s", "main"], Some(origin_log)),
        (vec!["fsck", "--full", "--strict"], None),
        (vec!["status", "--porcelain"], Some(String::new())),
        (vec!["diff", "--stat", "v1", "HEAD"], None),
        (
            vec!["show", "main:src/main.py"],
            Some("print('hello, world')\n".to_string()),
        ),
    ] {
        let out = git(
            &home,
            &args.iter().map(os).collect::<Vec<_>>(),
            Some(&committed),
        );
        if !out.status.success() {
            f.problem(format!(
                "`git {}` in code/latest/repo failed ({}): {}",
                args.join(" "),
                out.status,
                head(&stderr(&out), 6)
            ));
        } else if let Some(want) = want {
            f.check(stdout(&out) == want, || {
                format!(
                    "`git {}` in code/latest/repo prints:\n{}\nexpected:\n{}",
                    args.join(" "),
                    head(&stdout(&out), 10),
                    head(&want, 10)
                )
            });
        }
    }
    f.done();
}

// ----- Python -----

/// Writes and rewrites files in directory argv[1] (a copy of `python_base`) with Python's file
/// API, reading back as it goes; prints what it read and any OSError, as JSON.
const PYTHON_WRITES: &str = r#"
import errno, hashlib, json, mmap, os, sys
os.chdir(sys.argv[1])
log, errors = [], []

def note(label, value):
    log.append([label, value])

def digest(path):
    with open(path, "rb") as f:
        data = f.read()
    return [len(data), hashlib.sha256(data).hexdigest()]

def writes():
    with open("new.bin", "wb") as f:
        f.write(bytes(range(256)) * 40)
        f.seek(5000); f.write(b"XYZ")
        f.seek(20000); f.write(b"end")  # leaves a hole
        note("new.bin tell", f.tell())
    with open("new.bin", "rb") as f:
        f.seek(10230); note("new.bin at the hole", f.read(20).hex())
    note("new.bin", digest("new.bin"))

def rewrite_existing():
    with open("existing.bin", "r+b") as f:
        f.seek(100); f.write(b"MIDDLE")
        f.seek(0, 2); f.write(b"TAIL")
        f.seek(95); note("existing.bin at 95", f.read(16).hex())
    note("existing.bin", digest("existing.bin"))

def positioned():
    fd = os.open("pw.bin", os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        os.pwrite(fd, b"A" * 10, 0)
        os.pwrite(fd, b"B" * 10, 3 * 4096)
        os.pwrite(fd, b"C" * 5, 7)
        note("pw.bin pread", os.pread(fd, 24, 0).hex())
        note("pw.bin fstat size", os.fstat(fd).st_size)
    finally:
        os.close(fd)
    fd = os.open("existing.bin", os.O_RDWR)
    try:
        os.pwrite(fd, b"pw-in-base", 40000)
        note("existing.bin pread", os.pread(fd, 10, 40000).hex())
    finally:
        os.close(fd)

def truncations():
    os.truncate("shrink.bin", 1234)
    note("shrink.bin", digest("shrink.bin"))
    os.truncate("grow.bin", 50000)
    note("grow.bin", digest("grow.bin"))
    with open("new.bin", "r+b") as f:
        os.ftruncate(f.fileno(), 15000)
        note("new.bin fstat after ftruncate", os.fstat(f.fileno()).st_size)
        f.truncate(12000)
    note("new.bin", digest("new.bin"))
    with open("emptied.txt", "r+b") as f:
        f.truncate(0)
    with open("reopened.txt", "w") as f:  # O_TRUNC on a file of the base
        f.write("rewritten\n")
    note("reopened.txt", open("reopened.txt").read())

def appends():
    with open("log.txt", "a") as f:
        f.write("one\n")
    with open("log.txt", "a") as f:
        f.write("two\n")
    fd = os.open("log.txt", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"three\n")
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, b"four\n")  # O_APPEND: still at the end
    finally:
        os.close(fd)
    note("log.txt", open("log.txt").read())
    with open("new-log.txt", "a+") as f:
        f.write("first\n")
        f.seek(0)
        note("new-log.txt read through its a+ handle", f.read())
        f.write("second\n")
    note("new-log.txt", open("new-log.txt").read())

def replace():
    with open("cfg.json.tmp", "w") as f:
        f.write('{"version": 2}\n')
        f.flush()
        os.fsync(f.fileno())
    os.replace("cfg.json.tmp", "cfg.json")
    note("cfg.json", open("cfg.json").read())
    with open("fresh.tmp", "w") as f:
        f.write("fresh\n")
    os.replace("fresh.tmp", "sub/inner.txt")  # over a file of the base, in a subdirectory
    note("sub/inner.txt", open("sub/inner.txt").read())
    note("listing", sorted(os.listdir(".")))

def allocations():
    fd = os.open("alloc.bin", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
        os.pwrite(fd, b"header", 0)
        note("alloc.bin fstat size", os.fstat(fd).st_size)
    finally:
        os.close(fd)
    note("alloc.bin", digest("alloc.bin"))
    fd = os.open("existing.bin", os.O_RDWR)
    try:
        os.posix_fallocate(fd, 60000, 10000)  # past the end: the file grows
        note("existing.bin fstat size after fallocate", os.fstat(fd).st_size)
    finally:
        os.close(fd)
    note("existing.bin", digest("existing.bin"))

def mapped():
    with open("mapped.bin", "w+b") as f:
        f.truncate(8192)
        with mmap.mmap(f.fileno(), 8192) as mm:
            mm[0:5] = b"hello"
            mm[4096:4101] = b"world"
            mm.flush()
    note("mapped.bin", digest("mapped.bin"))

def attributes():
    os.chmod("pw.bin", 0o750)
    os.utime("new.bin", ns=(1_500_000_000_123_456_789, 1_500_000_000_123_456_789))
    os.utime("log.txt", ns=(1_400_000_000_000_000_001, 1_400_000_000_000_000_001))
    note("new.bin mtime", os.stat("new.bin").st_mtime_ns)

for step in (writes, rewrite_existing, positioned, truncations, appends, replace,
             allocations, mapped, attributes):
    try:
        step()
    except OSError as e:
        errors.append(f"{step.__name__}: {errno.errorcode.get(e.errno, e.errno)}: {e}")

for dirpath, dirnames, filenames in os.walk("."):
    dirnames.sort()
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        note("at the end " + path, digest(path))
print(json.dumps({"log": log, "errors": errors}))
"#;

/// Runs a Python script on `dir`; returns its JSON output.
fn python_json(script: &str, args: &[&OsStr]) -> Value {
    let out = python_ok(script, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the script printed no JSON ({e}): {out}"))
}

/// The entries of two script outputs `{"log": [[label, value]...]}` that differ.
fn log_differences(want: &Value, got: &Value) -> Vec<String> {
    let empty = Vec::new();
    let want_log = want["log"].as_array().unwrap_or(&empty);
    let got_log = got["log"].as_array().unwrap_or(&empty);
    let mut out = Vec::new();
    for (i, w) in want_log.iter().enumerate() {
        match got_log.get(i) {
            Some(g) if g == w => {}
            Some(g) => out.push(format!("{w} on the plain directory, {g} in the draft")),
            None => out.push(format!("{w} on the plain directory, nothing in the draft")),
        }
    }
    if got_log.len() > want_log.len() {
        out.push(format!(
            "the draft run read {} more values",
            got_log.len() - want_log.len()
        ));
    }
    out
}

#[test]
fn python_writes_rewrites_truncates_appends_and_replaces_in_a_draft() {
    require_tools(&[("python3", "python3")]);
    let s = TestStore::new();
    let base = s.path("base");
    put(&base, "existing.bin", &pseudo_random(65_536, 11), 0o644, 0);
    put(&base, "log.txt", b"base\n", 0o644, 1);
    put(&base, "cfg.json", b"{\"version\": 1}\n", 0o644, 2);
    put(&base, "shrink.bin", &pseudo_random(10_000, 12), 0o644, 3);
    put(&base, "grow.bin", &pseudo_random(100, 13), 0o644, 4);
    put(&base, "emptied.txt", b"about to be emptied\n", 0o644, 5);
    put(&base, "reopened.txt", b"about to be rewritten\n", 0o644, 6);
    put(&base, "keep.txt", b"untouched\n", 0o644, 7);
    put(&base, "sub/inner.txt", b"inner\n", 0o644, 8);
    age_dirs(&base);
    assert_eq!(log(&s, "py", &base), "py:v0");
    let plain = s.path("plain");
    tool_ok("cp", &[os("-a"), os(&base), os(&plain)], None);
    let want = python_json(PYTHON_WRITES, &[os(&plain)]);
    assert_eq!(
        want["errors"],
        serde_json::json!([]),
        "the script fails on a plain directory"
    );

    let m = mount(&s);
    let mut f = Findings::new("Python file I/O in drafts/py (based on py:v0)", &s);
    fs::create_dir(m.path("drafts/py")).unwrap();
    let draft = m.path("drafts/py");
    let got = python_json(PYTHON_WRITES, &[os(&draft)]);
    for e in got["errors"].as_array().unwrap() {
        f.problem(format!("in the draft, Python raised {e}"));
    }
    let d = log_differences(&want, &got);
    f.check(d.is_empty(), || {
        format!(
            "what Python read back in the draft differs from the plain directory:\n      {}",
            d.join("\n      ")
        )
    });
    let (v, _) = f.commit_and_compare(&m, "py", &plain, &[]);
    f.check(v == "v1", || format!("the second version is v1, not {v}"));
    f.done();
}

// ----- SQLite -----

/// Creates (`create`) or changes (`update`) two SQLite databases in argv[1], one with the
/// default rollback journal and one in WAL mode, over several transactions; `read` opens them
/// read-only and immutable. Prints, per database, its journal mode, the digest of its rows and
/// the integrity check, plus the directory's listing, as JSON.
const SQLITE_SCRIPT: &str = r#"
import hashlib, json, os, sqlite3, sys
root, phase = sys.argv[1], sys.argv[2]
out = {}
for name, wal in (("rollback.db", False), ("wal.db", True)):
    path = os.path.join(root, name)
    if phase == "read":
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, isolation_level=None)
        mode = None
    else:
        db = sqlite3.connect(path, isolation_level=None)
        mode = db.execute("PRAGMA journal_mode=" + ("WAL" if wal else "DELETE")).fetchone()[0]
    def txn(*statements, many=None):
        db.execute("BEGIN")
        for s in statements:
            db.execute(s)
        if many:
            db.executemany(*many)
        db.execute("COMMIT")
    if phase == "create":
        db.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL, qty INTEGER, payload BLOB)")
        db.execute("CREATE INDEX items_name ON items(name)")
        for t in range(6):
            txn(many=("INSERT INTO items(name, qty, payload) VALUES (?, ?, ?)",
                      [(f"item-{t}-{i}", i * t, bytes([(i + t) % 256]) * (i * 53 % 3000)) for i in range(300)]))
        txn("UPDATE items SET qty = qty + 1000 WHERE id % 7 = 0")
        txn("DELETE FROM items WHERE id % 3 = 0")
        db.execute("BEGIN"); db.execute("DELETE FROM items"); db.execute("ROLLBACK")
        db.execute("VACUUM")
    elif phase == "update":
        txn("UPDATE items SET name = name || '-updated' WHERE id % 5 = 1")
        txn("DELETE FROM items WHERE qty > 1500")
        txn(many=("INSERT INTO items(name, qty, payload) VALUES (?, ?, ?)",
                  [(f"late-{i}", -i, bytes([i % 256]) * 4000) for i in range(100)]))
        db.execute("VACUUM")
        txn("UPDATE items SET payload = NULL WHERE name LIKE 'late-%' AND qty % 2 = 0")
    rows = db.execute("SELECT id, name, qty, hex(payload) FROM items ORDER BY id").fetchall()
    out[name] = {
        "journal_mode": mode,
        "rows": len(rows),
        "digest": hashlib.sha256(json.dumps(rows).encode()).hexdigest(),
        "integrity_check": db.execute("PRAGMA integrity_check").fetchone()[0],
    }
    if wal and phase != "read":
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
out["files"] = sorted(os.listdir(root))
print(json.dumps(out, sort_keys=True))
"#;

#[test]
fn sqlite_databases_built_in_a_draft_open_read_only_once_committed() {
    require_tools(&[("python3", "python3")]);
    let probe = run_tool("python3", &[os("-c"), os("import sqlite3")], None);
    assert!(
        probe.status.success(),
        "Python's sqlite3 module is missing ({}): scripts/setup.sh installs Debian's python3, \
         which has it",
        stderr(&probe)
    );
    let s = TestStore::new();
    let plain = s.path("plain");
    fs::create_dir(&plain).unwrap();
    let m = mount(&s);
    let mut f = Findings::new("SQLite in drafts/db", &s);

    for (phase, version) in [("create", "v0"), ("update", "v1")] {
        let want = python_json(SQLITE_SCRIPT, &[os(&plain), os(phase)]);
        for db in ["rollback.db", "wal.db"] {
            assert_eq!(
                want[db]["integrity_check"], "ok",
                "{db} on the plain directory: {want}"
            );
        }
        fs::create_dir(m.path("drafts/db")).unwrap();
        let draft = m.path("drafts/db");
        let out = run_tool(
            "python3",
            &[os("-c"), os(SQLITE_SCRIPT), os(&draft), os(phase)],
            None,
        );
        if !out.status.success() {
            f.problem(format!(
                "SQLite `{phase}` in the draft failed ({}):\n{}",
                out.status,
                head(&stderr(&out), 8)
            ));
        } else {
            let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
            f.check(got == want, || {
                format!("SQLite `{phase}` in the draft gave\n      {got}\n    on the plain directory\n      {want}")
            });
        }
        let (v, _) = f.commit_and_compare(&m, "db", &plain, &[]);
        f.check(v == version, || {
            format!("`{phase}` should have made db:{version}, not {v}")
        });
        // Read-only and immutable, as a committed version is.
        let out = run_tool(
            "python3",
            &[
                os("-c"),
                os(SQLITE_SCRIPT),
                os(&m.path("db/latest")),
                os("read"),
            ],
            None,
        );
        if !out.status.success() {
            f.problem(format!(
                "opening the databases of db/latest ({version}) read-only failed ({}):\n{}",
                out.status,
                head(&stderr(&out), 8)
            ));
            continue;
        }
        let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
        for db in ["rollback.db", "wal.db"] {
            // integrity_check: "ok", as on the plain directory.
            for key in ["rows", "digest", "integrity_check"] {
                f.check(got[db][key] == want[db][key], || {
                    format!(
                        "{db} in db/latest ({version}): {key} is {}, on the plain directory {}",
                        got[db][key], want[db][key]
                    )
                });
            }
        }
    }
    f.done();
}

// ----- several writers at once -----

/// In directory argv[1]: 8 processes writing different files (some into a directory they all
/// create) at once; then 4 processes writing disjoint, interleaved ranges of one new file with
/// pwrite, the same on a file of the base version, and 4 processes appending lines to one log.
/// Each group starts together. Prints which workers failed and the log's lines, as JSON.
const PARALLEL_WRITERS: &str = r#"
import hashlib, json, os, sys
os.chdir(sys.argv[1])
CHUNK = 64 * 1024

def fill(seed, n):
    block = hashlib.sha256(seed.encode()).digest()
    return block * (n // len(block))

def together(n, work):
    r, w = os.pipe()
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)  # EOF once the parent closes its end: every worker starts at once
            try:
                work(i)
                os._exit(0)
            except BaseException as e:
                sys.stderr.write(f"{work.__name__} {i}: {e!r}\n")
                sys.stderr.flush()
                os._exit(1)
        pids.append(pid)
    os.close(r)
    os.close(w)
    return [i for i, pid in enumerate(pids) if os.waitpid(pid, 0)[1] != 0]

def writer(i):
    os.makedirs("out/shared", exist_ok=True)
    with open(f"out/w{i}.bin", "wb") as f:
        for k in range(32):
            f.write(fill(f"w{i}-{k}", 8192))
    for k in range(10):
        with open(f"out/shared/{i}-{k}.txt", "w") as f:
            f.write(f"writer {i} file {k}\n" * (k + 1))
    os.rename(f"out/shared/{i}-9.txt", f"out/shared/{i}-last.txt")

def ranges(target):
    def ranger(i):
        fd = os.open(target, os.O_WRONLY)
        try:
            for k in range(16):
                os.pwrite(fd, fill(f"{target}-{i}-{k}", CHUNK), (k * 4 + i) * CHUNK)
        finally:
            os.close(fd)
    ranger.__name__ = f"ranger of {target}"
    return ranger

def appender(i):
    for k in range(50):
        fd = os.open("appended.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"appender {i} line {k}\n".encode())
        finally:
            os.close(fd)

failed = {}
failed["writers"] = together(8, writer)
open("same-new.bin", "wb").close()
failed["ranges of a new file"] = together(4, ranges("same-new.bin"))
failed["ranges of a file of the base"] = together(4, ranges("same-base.bin"))
failed["appenders"] = together(4, appender)
lines = open("appended.log").read().splitlines()
print(json.dumps({"failed": failed, "appended": sorted(lines)}, sort_keys=True))
"#;

#[test]
fn parallel_writers_in_one_draft_match_a_local_filesystem() {
    require_tools(&[("python3", "python3")]);
    let s = TestStore::new();
    let base = s.path("base");
    put(
        &base,
        "same-base.bin",
        &pseudo_random((4 << 20) + 100, 21),
        0o644,
        0,
    );
    put(&base, "keep.txt", b"untouched\n", 0o644, 1);
    age_dirs(&base);
    assert_eq!(log(&s, "par", &base), "par:v0");
    let plain = s.path("plain");
    tool_ok("cp", &[os("-a"), os(&base), os(&plain)], None);
    let want = python_json(PARALLEL_WRITERS, &[os(&plain)]);
    assert_eq!(want["appended"].as_array().unwrap().len(), 200, "{want}");

    let m = mount(&s);
    let mut f = Findings::new("parallel writers in drafts/par (based on par:v0)", &s);
    fs::create_dir(m.path("drafts/par")).unwrap();
    let draft = m.path("drafts/par");
    let out = run_tool(
        "python3",
        &[os("-c"), os(PARALLEL_WRITERS), os(&draft)],
        None,
    );
    if !out.status.success() {
        f.problem(format!(
            "the parallel writers failed in the draft ({}):\n{}",
            out.status,
            head(&stderr(&out), 10)
        ));
    } else {
        let got: Value = serde_json::from_str(&stdout(&out)).unwrap();
        f.check(got["failed"] == want["failed"], || {
            format!(
                "workers that failed in the draft: {}; stderr:\n{}",
                got["failed"],
                head(&stderr(&out), 10)
            )
        });
        f.check(got["appended"] == want["appended"], || {
            "the lines appended at once by 4 processes are not all there, once each".into()
        });
    }
    // Appends from several processes land in any order: appended.log is compared by its lines.
    let (v, _) = f.commit_and_compare(&m, "par", &plain, &["appended.log"]);
    f.check(v == "v1", || format!("the second version is v1, not {v}"));
    let committed: BTreeSet<String> = fs::read_to_string(m.path("par/latest/appended.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: BTreeSet<String> = fs::read_to_string(plain.join("appended.log"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    f.check(committed == expected, || {
        "par/latest/appended.log does not have the 200 appended lines".into()
    });
    f.done();
}

// ----- the commit, as a script sees it -----

/// Right after the write to `.commit` returns, the draft's directory is gone and `latest` names
/// the new version (SEMANTICS: "the write returns once the version is durable, after which the
/// draft directory is gone and NAME/latest names the new version") — also for a script that
/// looked at both just before, as the tools above do.
#[test]
fn right_after_a_commit_the_draft_is_gone_and_latest_moved() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "round 0")]);
    assert_eq!(log(&s, "m", &src), "m:v0");
    let m = mount(&s);
    let mut f = Findings::new("a commit as a script sees it", &s);
    let draft = m.path("drafts/m");
    for round in 1..=5 {
        fs::create_dir(&draft).unwrap();
        fs::write(draft.join("a.txt"), format!("round {round}")).unwrap();
        // What a script looks at just before it commits.
        assert!(fs::symlink_metadata(&draft).unwrap().is_dir());
        let before = fs::read_link(m.path("m/latest")).unwrap();
        assert_eq!(before, Path::new(&format!("v{}", round - 1)));
        fs::write(draft.join(".commit"), "commit\n")
            .unwrap_or_else(|e| f.fatal(format!("round {round}: writing `commit`: {e}")));
        // Straight away, before anything else has had time to pass.
        let after = fs::symlink_metadata(&draft);
        let latest = fs::read_link(m.path("m/latest"));
        f.check(
            matches!(&after, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
            || {
                format!(
                    "round {round}: lstat(drafts/m) right after its commit should fail with \
                     ENOENT, but gave {:?}: the kernel still has the committed draft's directory \
                     cached (its entry and attributes are not invalidated at the commit)",
                    after.map(|m| m.is_dir())
                )
            },
        );
        f.check(
            latest
                .as_ref()
                .is_ok_and(|t| t == Path::new(&format!("v{round}"))),
            || format!("round {round}: m/latest right after the commit: {latest:?}, not v{round}"),
        );
        let all = versions(&s, "m");
        f.check(all.len() == round + 1, || {
            format!("round {round}: versions of m after the commit: {all:?}")
        });
        let content = fs::read_to_string(m.path("m/latest/a.txt"));
        f.check(
            content.as_deref().ok() == Some(format!("round {round}").as_str()),
            || format!("round {round}: m/latest/a.txt right after the commit: {content:?}"),
        );
    }
    f.done();
}
