//! References (`--reference file:///…` on `log` and `draft add`): entries whose content stays
//! outside the store, recorded by URI, size, mtime and SHA-256 (or by URI alone with
//! `--no-checksum`). Driven through the real binary and, for reads, xattrs and drafts, through
//! a real FUSE mount: what is recorded (and that nothing is copied into `blobs/`), how the
//! version digest follows the referenced files, how a changed or vanished file is refused
//! (`EIO`, `get`, `cat`) and reported (`verify`), that `gc` leaves referenced files alone, how
//! `show` and `ls --long` mark references, and every bad input refused without a trace. The
//! referenced files always live in the test's scratch area, outside the store directory.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::mount::*;
use common::*;
use serde_json::{Value, json};

/// The exit status of a check that found something wrong (`verify`).
const EXIT_FOUND: i32 = 3;

fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

fn digest(s: &TestStore, r: &str) -> String {
    s.json(&["show", r])["digest"].as_str().unwrap().to_string()
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

/// `--json ls --long REF`: one object per entry, in path order.
fn ls_long(s: &TestStore, r: &str) -> Vec<Value> {
    s.json(&["ls", "--long", r]).as_array().unwrap().clone()
}

/// The errno of a failed std::fs call, or None if it succeeded.
fn errno_of<T>(r: std::io::Result<T>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// `verify` that must find drift: exit status 3; returns (stdout, stderr).
fn verify_finds_drift(s: &TestStore, args: &[&str]) -> (String, String) {
    let out = s.run(args);
    assert_eq!(
        code(&out),
        Some(EXIT_FOUND),
        "{args:?} should exit {EXIT_FOUND}:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    (stdout(&out), stderr(&out))
}

/// `--json verify ...`, whatever its exit status; returns the status and the report.
fn verify_json(s: &TestStore, args: &[&str]) -> (Option<i32>, Value) {
    let mut all = vec!["--json", "verify"];
    all.extend_from_slice(args);
    let out = s.run(&all);
    let report = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| {
        panic!(
            "{all:?} printed invalid JSON ({e}):\n{}\nstderr: {}",
            stdout(&out),
            stderr(&out)
        )
    });
    (code(&out), report)
}

#[test]
fn log_by_reference_records_files_and_directories_without_copying_them() {
    let s = TestStore::new();
    // A plain version first, so that blobs/ exists and holds something to compare against.
    log(&s, "plain", &s.tree("plain", &[("p.txt", "plain\n")]));
    let one = s.file("ext/one.txt", "hello\n");
    let dir = s.tree("ext/dir", &[("a", "a\n"), ("sub/b", "bee\n")]);
    std::os::unix::fs::symlink(&one, dir.join("link")).unwrap();
    let blobs_before = s.blob_files();

    let printed = s.ok(&[
        "log",
        "m",
        "--reference",
        &uri(&one),
        "--reference",
        &uri(&dir),
        "--type",
        "dataset",
    ]);
    assert_eq!(printed.trim(), "m:v0");
    assert_eq!(
        s.blob_files(),
        blobs_before,
        "a reference must not copy its content into blobs/"
    );

    // A symlink to a file is followed: it reads as its target, under its own URI.
    let expected = [
        ("a", uri(&dir.join("a")), "a\n"),
        ("link", uri(&dir.join("link")), "hello\n"),
        ("one.txt", uri(&one), "hello\n"),
        ("sub/b", uri(&dir.join("sub/b")), "bee\n"),
    ];
    let listed = ls_long(&s, "m:v0");
    let want: Vec<Value> = expected
        .iter()
        .map(|(path, u, content)| {
            json!({"path": path, "type": "reference", "size": content.len(),
                "sha256": sha256_hex(content.as_bytes()), "target": null, "uri": u})
        })
        .collect();
    assert_eq!(listed, want);
    let text: Vec<String> = s
        .ok(&["ls", "-l", "m:v0"])
        .lines()
        .map(str::to_string)
        .collect();
    let want_text: Vec<String> = expected
        .iter()
        .map(|(path, u, content)| {
            format!(
                "reference {} {} {path} -> {u}",
                content.len(),
                sha256_hex(content.as_bytes())
            )
        })
        .collect();
    assert_eq!(text, want_text);
    // A plain version lists its files as such.
    assert_eq!(
        s.ok(&["ls", "--long", "plain"]).trim(),
        format!("file 6 {} p.txt", sha256_hex(b"plain\n"))
    );
    assert_eq!(ls(&s, "m:v0"), ["a", "link", "one.txt", "sub/b"]);

    let show = s.ok(&["show", "m:v0"]);
    assert!(
        show.lines().any(|l| l.starts_with("references: 4")),
        "show should count the references:\n{show}"
    );
    let shown = s.json(&["show", "m:v0"]);
    assert_eq!(shown["references"], 4);
    assert_eq!(shown["files"], 4);
    assert_eq!(s.json(&["show", "plain"])["references"], 0);
    let plain_show = s.ok(&["show", "plain"]);
    assert!(
        !plain_show.contains("references:"),
        "a version without references should not mention them:\n{plain_show}"
    );

    for (path, _, content) in &expected {
        assert_eq!(cat(&s, "m:v0", path), *content, "cat m:v0 {path}");
    }

    // The same files, untouched: no new version.
    let again = s.ok(&[
        "log",
        "m",
        "--reference",
        &uri(&one),
        "--reference",
        &uri(&dir),
        "--type",
        "dataset",
    ]);
    assert_eq!(again.trim(), "m:v0 (unchanged)");
    assert_eq!(s.blob_files(), blobs_before);
}

#[test]
fn a_changed_or_touched_file_makes_a_new_version_when_logged_again() {
    let s = TestStore::new();
    let f = s.file("ext/data.bin", "first\n");
    set_mtime(&f, time_at(1_600_000_000, 111));
    let log_ref = || {
        s.ok(&["log", "m", "--reference", &uri(&f), "--type", "dataset"])
            .trim()
            .to_string()
    };
    assert_eq!(log_ref(), "m:v0");
    assert_eq!(log_ref(), "m:v0 (unchanged)");

    // New content (and size).
    write_file(&f, b"second, longer\n");
    set_mtime(&f, time_at(1_600_000_100, 222));
    assert_eq!(log_ref(), "m:v1");
    assert_eq!(log_ref(), "m:v1 (unchanged)");

    // Same content, new mtime: the old record no longer describes the file.
    set_mtime(&f, time_at(1_600_000_200, 333));
    assert_eq!(log_ref(), "m:v2");
    assert_eq!(log_ref(), "m:v2 (unchanged)");

    let digests = [digest(&s, "m:v0"), digest(&s, "m:v1"), digest(&s, "m:v2")];
    assert!(
        digests[0] != digests[1] && digests[1] != digests[2] && digests[0] != digests[2],
        "every recorded state should have its own digest: {digests:?}"
    );
    assert_eq!(
        s.ok(&["cat", "m:v2", "data.bin"]),
        "second, longer\n",
        "the latest record describes the file as it is"
    );
}

#[test]
fn no_checksum_references_are_versioned_by_their_uri_alone() {
    let s = TestStore::new();
    let f = s.file("ext/live.csv", "a,b\n1,2\n");
    let args = [
        "log",
        "m",
        "--reference",
        &uri(&f),
        "--no-checksum",
        "--type",
        "dataset",
    ];
    assert_eq!(s.ok(&args).trim(), "m:v0");
    assert!(s.blob_files().is_empty(), "{:?}", s.blob_files());
    assert_eq!(
        ls_long(&s, "m:v0"),
        [
            json!({"path": "live.csv", "type": "reference", "size": 8, "sha256": null,
            "target": null, "uri": uri(&f)})
        ]
    );
    assert_eq!(
        s.ok(&["ls", "-l", "m:v0"]).trim(),
        format!("reference 8 - live.csv -> {}", uri(&f))
    );
    let v0 = digest(&s, "m:v0");

    // Another file under the same path: same URI, so the same version.
    fs::remove_file(&f).unwrap();
    write_file(&f, b"x,y,z\n7,8,9\n10,11,12\n");
    set_mtime(&f, time_at(1_700_000_000, 5));
    assert_eq!(s.ok(&args).trim(), "m:v0 (unchanged)");
    assert_eq!(digest(&s, "m:v0"), v0);

    // Nothing is checked: reads give what the file holds now.
    assert_eq!(cat(&s, "m:v0", "live.csv"), "x,y,z\n7,8,9\n10,11,12\n");
    let dest = s.path("out");
    s.ok(&["get", "m:v0", dest.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(dest.join("live.csv")).unwrap(),
        "x,y,z\n7,8,9\n10,11,12\n"
    );
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(0), "{report}");
    // (The count may include the record the unchanged log left for gc: checked, not used.)
    assert!(report["references_checked"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["drifted"], json!([]));

    // Gone is gone, checksum or not.
    fs::remove_file(&f).unwrap();
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(EXIT_FOUND), "{report}");
    assert_eq!(report["drifted"].as_array().unwrap().len(), 1, "{report}");
    assert_eq!(report["drifted"][0]["problem"], "vanished");
    assert_eq!(
        report["drifted"][0]["used_by"],
        json!([{"ref": "m:v0", "path": "live.csv"}])
    );

    // --no-checksum means nothing without a reference.
    let plain = s.tree("plain", &[("p", "p")]);
    let err = s.fail(&["log", "m", p(&plain), "--no-checksum", "--type", "dataset"]);
    assert!(err.contains("--reference"), "{err}");
}

#[test]
fn draft_add_records_references_at_their_destination() {
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("keep.txt", "kept\n")]));
    let labels = s.file("ext/labels-v7.csv", "cat,dog\n");
    let images = s.tree("ext/images", &[("1.png", "one"), ("deep/2.png", "two")]);
    let blobs_before = s.blob_files();

    s.ok(&["draft", "new", "m"]);
    let added = s.json(&[
        "draft",
        "add",
        "m",
        "--reference",
        &uri(&labels),
        "--as",
        "meta/labels.csv",
    ]);
    assert_eq!(added["files"], 1, "{added}");
    s.ok(&[
        "draft",
        "add",
        "m",
        "--reference",
        &uri(&images),
        "--as",
        "img",
    ]);
    assert_eq!(s.ok(&["draft", "commit", "m"]).trim(), "m:v1");
    assert_eq!(s.blob_files(), blobs_before);

    let listed: Vec<(String, String, Value)> = ls_long(&s, "m:v1")
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["type"].as_str().unwrap().to_string(),
                e["uri"].clone(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (
                "img/1.png".into(),
                "reference".into(),
                json!(uri(&images.join("1.png")))
            ),
            (
                "img/deep/2.png".into(),
                "reference".into(),
                json!(uri(&images.join("deep/2.png")))
            ),
            ("keep.txt".into(), "file".into(), Value::Null),
            (
                "meta/labels.csv".into(),
                "reference".into(),
                json!(uri(&labels))
            ),
        ]
    );
    assert_eq!(cat(&s, "m:v1", "meta/labels.csv"), "cat,dog\n");
    assert_eq!(cat(&s, "m:v1", "img/deep/2.png"), "two");
    assert_eq!(s.json(&["show", "m:v1"])["references"], 3);
}

#[test]
fn mounted_references_read_as_their_files_and_fail_with_eio_once_changed() {
    require_fuse();
    let s = TestStore::new();
    let one = s.file("ext/one.txt", "hello\n");
    let touched = s.file("ext/touched.txt", "same bytes\n");
    let loose = s.file("ext/loose.txt", "loose\n");
    s.ok(&[
        "log",
        "m",
        "--reference",
        &uri(&one),
        "--reference",
        &uri(&touched),
        "--type",
        "dataset",
    ]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&[
        "draft",
        "add",
        "m",
        "--reference",
        &uri(&loose),
        "--no-checksum",
    ]);
    assert_eq!(s.ok(&["draft", "commit", "m"]).trim(), "m:v1");

    let m = Mounted::new(&s, &mountpoint(&s));
    let v1 = m.path("m/v1");
    assert_eq!(fs::read_to_string(v1.join("one.txt")).unwrap(), "hello\n");
    assert_eq!(fs::read_to_string(v1.join("loose.txt")).unwrap(), "loose\n");
    let meta = fs::metadata(v1.join("one.txt")).unwrap();
    assert!(meta.is_file());
    assert_eq!(meta.len(), 6);
    assert_eq!(
        getxattr(&v1.join("one.txt"), "user.artifactfs.ref"),
        Ok(uri(&one).into_bytes())
    );
    assert_eq!(
        getxattr(&v1.join("one.txt"), "user.artifactfs.sha256"),
        Ok(sha256_hex(b"hello\n").into_bytes())
    );
    assert_eq!(
        getxattr(&v1.join("loose.txt"), "user.artifactfs.ref"),
        Ok(uri(&loose).into_bytes())
    );
    assert_eq!(
        getxattr(&v1.join("loose.txt"), "user.artifactfs.sha256"),
        Err(libc::ENODATA),
        "a --no-checksum reference has no content digest"
    );

    // Changed size; touched only; and a --no-checksum file rewritten (same size).
    write_file(&one, b"hello, world!\n");
    set_mtime(&touched, time_at(1_650_000_000, 0));
    write_file(&loose, b"LOOSE\n");

    for path in [v1.join("one.txt"), m.path("m/v0/one.txt")] {
        assert_eq!(
            errno_of(fs::read(&path)),
            Some(libc::EIO),
            "reading {} once its file changed",
            path.display()
        );
    }
    assert_eq!(
        errno_of(fs::read(v1.join("touched.txt"))),
        Some(libc::EIO),
        "a touched file may hold other bytes: it must not be passed off as the version's"
    );
    let out = run_tool("cat", &[v1.join("one.txt").as_os_str()], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Input/output error"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read_to_string(v1.join("loose.txt")).unwrap(),
        "LOOSE\n",
        "a --no-checksum reference reads whatever the file holds now"
    );

    wait_until(
        "mount.log names the changed reference and what changed",
        Duration::from_secs(5),
        || {
            let log = m.log();
            let warned = log
                .lines()
                .any(|l| l.contains(&uri(&one)) && l.contains("size changed from 6 to 14 bytes"));
            let touched_warned = log
                .lines()
                .any(|l| l.contains(&uri(&touched)) && l.contains("modification time changed"));
            match warned && touched_warned {
                true => Ok(()),
                false => Err(tail(&log, 3000)),
            }
        },
    );

    // Recording the files again makes a version that reads, beside the old one that does not.
    assert_eq!(
        s.ok(&[
            "log",
            "m",
            "--reference",
            &uri(&one),
            "--reference",
            &uri(&touched),
            "--type",
            "dataset",
        ])
        .trim(),
        "m:v2"
    );
    let v2 = m.path("m/v2/one.txt");
    wait_until("m/v2 shows in the mount", Duration::from_secs(3), || {
        fs::read_to_string(&v2).map(drop).map_err(|e| e.to_string())
    });
    assert_eq!(fs::read_to_string(&v2).unwrap(), "hello, world!\n");
    assert_eq!(
        fs::read_to_string(m.path("m/v2/touched.txt")).unwrap(),
        "same bytes\n"
    );
    assert_eq!(errno_of(fs::read(v1.join("one.txt"))), Some(libc::EIO));
}

#[test]
fn writing_a_reference_in_a_draft_copies_it_and_commits_an_ordinary_file() {
    require_fuse();
    let s = TestStore::new();
    let ext = s.file("ext/notes.txt", "hello\n");
    set_mtime(&ext, time_at(1_600_000_000, 42));
    s.ok(&["log", "m", "--reference", &uri(&ext), "--type", "dataset"]);
    let ext_mtime = mtime_of(&ext);
    // A draft that records a reference itself, rather than showing one from its base.
    let other = s.file("ext/other.txt", "other\n");
    s.ok(&["draft", "new", "o"]);
    s.ok(&[
        "draft",
        "add",
        "o",
        "--reference",
        &uri(&other),
        "--as",
        "x.txt",
    ]);

    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let in_draft = m.path("drafts/m/notes.txt");
    assert_eq!(fs::read_to_string(&in_draft).unwrap(), "hello\n");
    assert_eq!(
        getxattr(&in_draft, "user.artifactfs.ref"),
        Ok(uri(&ext).into_bytes())
    );

    let mut f = fs::OpenOptions::new().append(true).open(&in_draft).unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    assert_eq!(fs::read_to_string(&in_draft).unwrap(), "hello\nmore\n");
    assert_eq!(
        fs::read(&ext).unwrap(),
        b"hello\n",
        "the referenced file must never be written"
    );
    assert_eq!(mtime_of(&ext), ext_mtime);

    assert_eq!(write_control(&m.path("drafts/m/.commit"), "commit"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1"]);
    assert_eq!(
        s.ok(&["ls", "-l", "m:v1"]).trim(),
        format!("file 11 {} notes.txt", sha256_hex(b"hello\nmore\n"))
    );
    assert_eq!(s.json(&["show", "m:v1"])["references"], 0);
    assert!(s.blob_path_of(b"hello\nmore\n").is_file());
    assert_eq!(cat(&s, "m:v1", "notes.txt"), "hello\nmore\n");
    // The old version still refers to the untouched file.
    assert_eq!(ls_long(&s, "m:v0")[0]["type"], "reference");
    assert_eq!(
        fs::read_to_string(m.path("m/v0/notes.txt")).unwrap(),
        "hello\n"
    );
    assert_eq!(fs::read(&ext).unwrap(), b"hello\n");

    let x = m.path("drafts/o/x.txt");
    assert_eq!(fs::read_to_string(&x).unwrap(), "other\n");
    assert_eq!(
        getxattr(&x, "user.artifactfs.ref"),
        Ok(uri(&other).into_bytes())
    );
    // A changed file is not copied into a draft either.
    write_file(&other, b"other, rewritten\n");
    assert_eq!(
        errno_of(fs::OpenOptions::new().append(true).open(&x)),
        Some(libc::EIO)
    );
    assert_eq!(fs::read(&other).unwrap(), b"other, rewritten\n");
}

#[test]
fn get_and_cat_copy_referenced_content_and_refuse_a_changed_file() {
    let s = TestStore::new();
    let dir = s.tree("ext/ds", &[("a.txt", "alpha\n"), ("sub/b.txt", "beta\n")]);
    set_mtime(&dir.join("a.txt"), time_at(1_600_000_000, 7));
    s.ok(&["log", "m", "--reference", &uri(&dir), "--type", "dataset"]);

    let dest = s.path("out");
    let got = s.json(&["get", "m:v0", p(&dest)]);
    assert_eq!(got["files"], 2, "{got}");
    assert_eq!(fs::read_to_string(dest.join("a.txt")).unwrap(), "alpha\n");
    assert_eq!(
        fs::read_to_string(dest.join("sub/b.txt")).unwrap(),
        "beta\n"
    );
    assert_eq!(mtime_of(&dest.join("a.txt")), time_at(1_600_000_000, 7));
    assert!(
        s.blob_files().is_empty(),
        "get copies, the store keeps nothing"
    );
    assert_eq!(cat(&s, "m:v0", "sub/b.txt"), "beta\n");

    write_file(&dir.join("sub/b.txt"), b"beta, changed\n");
    let b_uri = uri(&dir.join("sub/b.txt"));
    let fresh = s.path("out2");
    let err = s.fail(&["get", "m:v0", p(&fresh)]);
    assert!(err.contains(&b_uri), "the error should name the URI: {err}");
    assert!(!fresh.exists(), "a refused get must write nothing");
    let empty = s.path("out3");
    fs::create_dir(&empty).unwrap();
    s.fail(&["get", "m:v0", p(&empty)]);
    assert_eq!(
        fs::read_dir(&empty).unwrap().count(),
        0,
        "a refused get must write nothing"
    );

    let out = s.run(&["cat", "m:v0", "sub/b.txt"]);
    let err = assert_failure(&out, &["cat", "m:v0", "sub/b.txt"]);
    assert!(err.contains(&b_uri), "{err}");
    // The unchanged file still reads.
    assert_eq!(cat(&s, "m:v0", "a.txt"), "alpha\n");
}

/// A rewrite that keeps size and mtime (`cp -p`, `rsync -t`) passes the cheap checks; only the
/// digest shows it. `get` must still write nothing rather than half a version.
#[test]
fn get_never_writes_content_that_changed_under_the_same_size_and_mtime() {
    let s = TestStore::new();
    let dir = s.tree(
        "ext/ds",
        &[
            ("a.txt", "aaaa\n"),
            ("b.txt", "bbbb\n"),
            ("c.txt", "cccc\n"),
        ],
    );
    s.ok(&["log", "m", "--reference", &uri(&dir), "--type", "dataset"]);
    let b = dir.join("b.txt");
    let when = mtime_of(&b);
    write_file(&b, b"XXXX\n");
    set_mtime(&b, when);
    let b_uri = uri(&b);

    let (_, err) = verify_finds_drift(&s, &["verify"]);
    assert!(
        err.contains(&b_uri) && err.contains("no longer has the content recorded"),
        "{err}"
    );
    let err = s.fail(&["cat", "m:v0", "b.txt"]);
    assert!(err.contains(&b_uri), "{err}");

    let dest = s.path("out");
    let err = s.fail(&["get", "m:v0", p(&dest)]);
    assert!(err.contains(&b_uri), "{err}");
    // Size and mtime match, so the change is found while copying: get stops there, and what
    // it wrote before is the version's own content, never the changed bytes.
    let written: Vec<String> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !written.contains(&"b.txt".to_string()) && !written.contains(&"c.txt".to_string()),
        "get stops at the changed file and leaves no copy of it: {written:?}"
    );
    for name in written {
        assert_eq!(name, "a.txt", "{}", dest.display());
        assert_eq!(fs::read(dest.join("a.txt")).unwrap(), b"aaaa\n");
    }
}

#[test]
fn verify_reports_changed_references_with_the_versions_using_them() {
    let s = TestStore::new();
    let f = s.file("ext/one.txt", "hello\n");
    let intact = s.file("ext/intact.txt", "fine\n");
    let log_refs = || {
        s.ok(&[
            "log",
            "m",
            "--reference",
            &uri(&f),
            "--reference",
            &uri(&intact),
            "--type",
            "dataset",
        ])
        .trim()
        .to_string()
    };
    assert_eq!(log_refs(), "m:v0");
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["references_checked"], 2);
    assert!(
        s.ok(&["verify"])
            .contains("checked 2 references: 0 changed or vanished")
    );

    write_file(&f, b"hello, world!\n");
    let (out, err) = verify_finds_drift(&s, &["verify"]);
    assert!(
        out.contains("checked 2 references: 1 changed or vanished"),
        "{out}"
    );
    assert!(
        err.lines().any(|l| l
            == format!(
                "reference {} size changed from 6 to 14 bytes; used by m:v0 (one.txt)",
                uri(&f)
            )),
        "{err}"
    );
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(EXIT_FOUND));
    assert_eq!(report["checked"], 0);
    assert_eq!(report["damaged"], json!([]));
    assert_eq!(
        report["drifted"],
        json!([{"uri": uri(&f), "problem": "changed", "why": "size changed from 6 to 14 bytes",
            "used_by": [{"ref": "m:v0", "path": "one.txt"}], "drafts": []}])
    );

    // Recorded again, the file is m:v1's as it is now: only m:v0 holds a stale record.
    assert_eq!(log_refs(), "m:v1");
    let (status, report) = verify_json(&s, &["m:v1"]);
    assert_eq!(status, Some(0), "m:v1 is intact: {report}");
    assert_eq!(report["drifted"], json!([]));
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(EXIT_FOUND));
    assert_eq!(
        report["drifted"],
        json!([{"uri": uri(&f), "problem": "changed", "why": "size changed from 6 to 14 bytes",
            "used_by": [{"ref": "m:v0", "path": "one.txt"}], "drafts": []}]),
        "m:v1 recorded the file as it is now and reads fine: it must not be listed as using \
         the drifted record"
    );
}

#[test]
fn a_vanished_reference_is_reported_with_its_versions_and_drafts() {
    let s = TestStore::new();
    let dir = s.tree("ext/d", &[("x", "1\n"), ("y", "2\n")]);
    s.ok(&["log", "m", "--reference", &uri(&dir), "--type", "dataset"]);
    // One draft shows m:v0; another records the file itself.
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "new", "other"]);
    s.ok(&[
        "draft",
        "add",
        "other",
        "--reference",
        &uri(&dir.join("y")),
        "--as",
        "yy",
    ]);
    let y = uri(&dir.join("y"));
    fs::remove_file(dir.join("y")).unwrap();

    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(EXIT_FOUND), "{report}");
    assert_eq!(report["references_checked"], 2);
    let drifted = report["drifted"].as_array().unwrap();
    assert_eq!(drifted.len(), 1, "{report}");
    assert_eq!(drifted[0]["uri"], y);
    assert_eq!(drifted[0]["problem"], "vanished");
    assert!(drifted[0]["why"].as_str().unwrap().len() > 3, "{report}");
    assert_eq!(drifted[0]["used_by"], json!([{"ref": "m:v0", "path": "y"}]));
    assert_eq!(drifted[0]["drafts"], json!(["m", "other"]));
    let (_, err) = verify_finds_drift(&s, &["verify"]);
    assert!(
        err.lines()
            .any(|l| l.starts_with(&format!("reference {y} "))
                && l.ends_with("; used by m:v0 (y), draft m, draft other")),
        "{err}"
    );

    let dest = s.path("out");
    let err = s.fail(&["get", "m:v0", p(&dest)]);
    assert!(err.contains(&y), "{err}");
    assert!(!dest.exists(), "a refused get must write nothing");
}

#[test]
fn gc_never_touches_referenced_files() {
    let s = TestStore::new();
    let dir = s.tree(
        "ext/ds",
        &[("a.bin", "shared content\n"), ("b.bin", "bee\n")],
    );
    let loose = s.file("ext/loose.bin", "in a draft\n");
    s.ok(&["log", "m", "--reference", &uri(&dir), "--type", "dataset"]);
    // The same bytes as a stored file, whose blob gc may drop once its version is gone.
    log(
        &s,
        "copy",
        &s.tree("copy", &[("a.bin", "shared content\n")]),
    );
    s.ok(&["draft", "new", "d"]);
    s.ok(&["draft", "add", "d", "--reference", &uri(&loose)]);
    s.ok(&["delete", "copy:v0"]);
    let before: Vec<(Vec<u8>, std::time::SystemTime)> =
        [dir.join("a.bin"), dir.join("b.bin"), loose.clone()]
            .iter()
            .map(|f| (fs::read(f).unwrap(), mtime_of(f)))
            .collect();

    s.ok(&["gc"]);

    let after: Vec<(Vec<u8>, std::time::SystemTime)> =
        [dir.join("a.bin"), dir.join("b.bin"), loose.clone()]
            .iter()
            .map(|f| (fs::read(f).unwrap(), mtime_of(f)))
            .collect();
    assert_eq!(after, before, "gc changed a referenced file");
    assert!(
        s.blob_files().is_empty(),
        "no blob should be left, or kept alive by a reference: {:?}",
        s.blob_files()
    );
    let (status, report) = verify_json(&s, &[]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(report["references_checked"], 3);
    assert_eq!(cat(&s, "m:v0", "a.bin"), "shared content\n");
    assert_eq!(
        s.ok(&["draft", "commit", "d", "--type", "dataset"]).trim(),
        "d:v0"
    );
    assert_eq!(cat(&s, "d:v0", "loose.bin"), "in a draft\n");
}

#[test]
fn bad_references_are_refused_and_change_nothing() {
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a", "a")]));
    s.ok(&["draft", "new", "m"]);
    let real = s.file("ext/real.txt", "real\n");
    let many = s.tree(
        "ext/many",
        &[("1", "1"), ("2", "2"), ("sub/3", "3"), ("sub/4", "4")],
    );
    let with_dir_link = s.tree("ext/with-dir-link", &[("f", "f")]);
    std::os::unix::fs::symlink(&many, with_dir_link.join("linked-dir")).unwrap();
    let sneaky = s.path("ext/sneaky");
    std::os::unix::fs::symlink(s.root.join("catalog.db"), &sneaky).unwrap();
    let real_path = real.to_str().unwrap().to_string();
    let dotdot = format!("file://{}/../ext/real.txt", s.path("ext").display());

    let cases: Vec<(String, &str)> = vec![
        (
            "ext/real.txt".into(),
            "must be a URI such as file:///abs/path",
        ),
        (real_path.clone(), "write file:// before it"),
        (
            "s3://bucket/x".into(),
            "s3:// references are not supported yet",
        ),
        (
            "ftp://host/x".into(),
            "ftp:// references are not supported yet",
        ),
        ("file://host/x".into(), "absolute local path"),
        (dotdot, "'..'"),
        (uri(&s.path("ext/nope.txt")), "cannot be read"),
        (uri(&s.root.join("catalog.db")), "is inside the store"),
        (uri(&s.root), "is inside the store"),
        (uri(&sneaky), "is inside the store"),
        (uri(&with_dir_link), "symlink to a directory"),
    ];
    for (bad, why) in &cases {
        for args in [
            vec!["log", "m", "--reference", bad, "--type", "dataset"],
            vec!["draft", "add", "m", "--reference", bad],
            // A good reference beside it is not recorded either.
            vec![
                "log",
                "m",
                "--reference",
                &uri(&real),
                "--reference",
                bad,
                "--type",
                "dataset",
            ],
        ] {
            let err = refused(&s, &args, &[why]);
            let shown = bad.strip_prefix("file://").unwrap_or(bad);
            assert!(err.contains(shown), "the error should name {shown}: {err}");
        }
    }

    for cmd in [
        vec![
            "log",
            "m",
            "--reference",
            &uri(&many),
            "--max-objects",
            "3",
            "--type",
            "dataset",
        ],
        vec![
            "draft",
            "add",
            "m",
            "--reference",
            &uri(&many),
            "--max-objects",
            "3",
        ],
    ] {
        refused(&s, &cmd, &["--max-objects", &uri(&many)]);
    }
    // The limit counts files, and exactly the limit is allowed.
    s.ok(&[
        "log",
        "m",
        "--reference",
        &uri(&many),
        "--max-objects",
        "4",
        "--type",
        "dataset",
    ]);
    assert_eq!(ls(&s, "m:v1"), ["1", "2", "sub/3", "sub/4"]);
}

/// The store's own files change under gc, drafts and every commit: no reference may record
/// them, however the path reaches them.
#[test]
fn a_directory_holding_the_store_does_not_reference_the_store() {
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a", "a")]));
    s.file("ext/x.txt", "x\n");
    let scratch = s.tmp.path();
    let args = [
        "log",
        "all",
        "--reference",
        &uri(scratch),
        "--type",
        "dataset",
    ];
    let before = s.fingerprint();
    let out = s.run(&args);
    if !out.status.success() {
        let err = assert_failure(&out, &args);
        assert!(err.contains("holds the store"), "{err}");
        assert_unchanged(&before, &s.fingerprint(), "a refused log");
        return;
    }
    let store_uri = format!("{}/", uri(&s.root));
    let inside: Vec<Value> = ls_long(&s, "all")
        .into_iter()
        .filter(|e| e["uri"].as_str().is_some_and(|u| u.starts_with(&store_uri)))
        .collect();
    assert!(
        inside.is_empty(),
        "a reference to {} recorded {} files of the store itself, e.g. {}",
        scratch.display(),
        inside.len(),
        inside.first().map(|v| v.to_string()).unwrap_or_default()
    );
}

#[test]
fn a_symlink_into_the_store_below_a_referenced_directory_is_refused() {
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a", "a")]));
    let dir = s.tree("ext/d", &[("fine.txt", "fine\n")]);
    std::os::unix::fs::symlink(s.root.join("catalog.db"), dir.join("catalog")).unwrap();
    let args = ["log", "d", "--reference", &uri(&dir), "--type", "dataset"];
    refused(&s, &args, &["inside the store"]);
}

/// `get` back into the directory the references point at reads each file before it replaces
/// it, so nothing is lost, with or without checksums.
#[test]
fn get_into_the_referenced_directory_keeps_the_files() {
    let s = TestStore::new();
    let dir = s.tree("ext/ds", &[("a.txt", "alpha\n"), ("sub/b.txt", "bravo\n")]);
    s.ok(&["log", "m", "--reference", &uri(&dir), "--type", "dataset"]);
    s.ok(&[
        "log",
        "n",
        "--no-checksum",
        "--reference",
        &uri(&dir),
        "--type",
        "dataset",
    ]);
    // The directory holds the files, so get needs to be told what to do with them.
    for (r, mode) in [("m:v0", "--merge"), ("n:v0", "--delete")] {
        s.ok(&["get", r, p(&dir), mode]);
        assert_eq!(
            fs::read_to_string(dir.join("a.txt")).unwrap(),
            "alpha\n",
            "{r}"
        );
        assert_eq!(
            fs::read_to_string(dir.join("sub/b.txt")).unwrap(),
            "bravo\n",
            "{r}"
        );
    }
    let (status, v) = verify_json(&s, &[]);
    assert_eq!((status, &v["drifted"]), (Some(0), &json!([])), "{v}");
    let left: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "get left temporary files: {left:?}");
}

/// The recorded mtime is what a reference is checked against, so `touch` in a draft makes it
/// an ordinary file of the draft (as editing would), and a copy into a draft is checked
/// against the digest, not only size and mtime.
#[test]
fn touching_or_copying_a_reference_in_a_draft_keeps_its_check() {
    require_fuse();
    let s = TestStore::new();
    let a = s.file("ext/a.txt", "alpha\n");
    let b = s.file("ext/b.txt", "bravo\n");
    s.ok(&[
        "log",
        "m",
        "--reference",
        &uri(&a),
        "--reference",
        &uri(&b),
        "--type",
        "dataset",
    ]);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();

    let touched = m.path("drafts/m/a.txt");
    set_mtime(&touched, time_at(1_700_000_000, 0));
    assert_eq!(fs::read_to_string(&touched).unwrap(), "alpha\n");
    assert_eq!(mtime_of(&touched), time_at(1_700_000_000, 0));
    assert_eq!(
        getxattr(&touched, "user.artifactfs.ref"),
        Err(libc::ENODATA)
    );

    // Same size and mtime, other bytes: only the digest tells, and the copy must check it.
    let when = mtime_of(&b);
    write_file(&b, b"BRAVO\n");
    set_mtime(&b, when);
    let opened = fs::OpenOptions::new()
        .append(true)
        .open(m.path("drafts/m/b.txt"));
    assert_eq!(errno_of(opened), Some(libc::EIO));

    assert_eq!(write_control(&m.path("drafts/m/.commit"), "commit"), "ok");
    let long = s.ok(&["ls", "-l", "m:v1"]);
    assert!(
        long.contains(&format!("file 6 {} a.txt", sha256_hex(b"alpha\n"))),
        "{long}"
    );
    assert!(
        long.contains("reference 6 "),
        "b.txt stays a reference: {long}"
    );
    assert_eq!(fs::read(&a).unwrap(), b"alpha\n");
}

/// A reference through an artifactfs mount would have the server read through itself.
#[test]
fn references_into_an_artifactfs_mount_are_refused() {
    require_fuse();
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a", "a")]));
    let mnt = mountpoint(&s);
    let m = Mounted::new(&s, &mnt);
    let before = s.fingerprint();
    for (target, why) in [
        (m.path("m/v0/a"), "is inside the artifactfs mount"),
        (mnt.parent().unwrap().to_path_buf(), "holds the"),
    ] {
        let err = refused(
            &s,
            &[
                "log",
                "x",
                "--reference",
                &uri(&target),
                "--type",
                "dataset",
            ],
            &[why],
        );
        assert!(err.contains(&uri(&target)), "{err}");
    }
    assert_unchanged(&before, &s.fingerprint(), "refused references");
    let err = s.fail(&["log", "x", "a", "--max-objects", "3", "--type", "dataset"]);
    assert!(
        err.contains("--reference"),
        "--max-objects needs --reference: {err}"
    );
}

/// W&B's distributed runs with references: each worker upserts its shard by reference, the
/// last one finishes with another; nothing is copied.
#[test]
fn distributed_writers_upsert_and_finish_references() {
    let s = TestStore::new();
    let a = s.tree("ext/shard-a", &[("a1.bin", "a1"), ("a2.bin", "a2")]);
    let b = s.tree("ext/shard-b", &[("b1.bin", "b1")]);
    let c = s.file("ext/index.json", "{}\n");
    let blobs = s.blob_files();
    for shard in [&a, &b] {
        let out = s.ok(&[
            "upsert",
            "d",
            "--reference",
            &uri(shard),
            "--type",
            "dataset",
            "--distributed-id",
            "run-1",
        ]);
        assert!(out.starts_with("added "), "{out}");
    }
    let done = s.ok(&[
        "finish",
        "d",
        "--reference",
        &uri(&c),
        "--type",
        "dataset",
        "--distributed-id",
        "run-1",
    ]);
    assert_eq!(done.trim(), "d:v0");
    assert_eq!(ls(&s, "d:v0"), ["a1.bin", "a2.bin", "b1.bin", "index.json"]);
    assert_eq!(s.json(&["show", "d:v0"])["references"], 4);
    assert_eq!(s.blob_files(), blobs, "references copy nothing into blobs/");
    assert_eq!(cat(&s, "d:v0", "b1.bin"), "b1");
}
