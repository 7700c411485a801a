//! The shared store end to end: several "hosts" (store directories with caches and mounts of
//! their own) on one PostgreSQL database and one S3 bucket, driven through the real binary
//! and the kernel's FUSE mounts. Versions and alias moves made on one host read on another;
//! concurrent committers on both hosts number versions without gaps; three hosts fill one
//! distributed draft through `upsert` and their mounts, and a `finish` on one holds the
//! union; a draft file open on one host keeps another host's commit out; a killed object
//! store, a restarted database, gc during commits and damaged objects are survived or named;
//! bad URLs and credentials, a database of another schema and a damaged config are refused
//! creating nothing; copy-store moves a store in and out; the cache stays bounded.
//!
//! The servers are real and started by the tests (tests/common/services.rs): a missing
//! initdb or s3s-fs fails the test, saying what to install. Tests that stop or kill a server
//! start their own; the others share one of each per process, with a database and a bucket
//! per test.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::Duration;

use common::mount::*;
use common::services::{Postgres, ProcessServices, S3Server};
use common::*;

/// How long another host may take to show a change (the docs say about a second); only a
/// bound against hanging, never a measurement.
const SHOWS: Duration = Duration::from_secs(20);

/// `n` hosts of the shared store `side`, each made with `init`.
fn hosts(side: &SharedSide, n: usize) -> Vec<TestStore> {
    (0..n)
        .map(|_| {
            let h = TestStore::sharing(side.clone());
            h.init();
            h
        })
        .collect()
}

/// A new database and bucket on the process's servers, and `n` hosts of it.
fn shared_hosts(n: usize) -> (SharedSide, Vec<TestStore>) {
    let side = ProcessServices::new_side();
    let hs = hosts(&side, n);
    (side, hs)
}

/// An empty directory to mount `s` on.
fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// `sha256sum` of every file under `dir`, run in it: relative path → digest.
fn sha256sums(dir: &Path) -> BTreeMap<String, String> {
    let out = sh_ok(
        "cd \"$1\" && find . -type f -print0 | sort -z | xargs -0 sha256sum",
        &[dir.as_os_str()],
    );
    out.lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").unwrap_or_else(|| panic!("{l}"));
            (path.trim_start_matches("./").to_string(), sum.to_string())
        })
        .collect()
}

/// The names `ls` lists in `dir`.
fn ls_names(dir: &Path) -> Vec<String> {
    let out = run_tool("ls", &[OsStr::new("-A"), dir.as_os_str()], None);
    if !out.status.success() {
        return Vec::new();
    }
    stdout(&out).lines().map(str::to_string).collect()
}

/// Where symlink `path` points, if it is one.
fn link_of(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
}

/// The versions of `name` with their aliases, as `list NAME --json` shows them.
fn versions_and_aliases(s: &TestStore, name: &str) -> Vec<(String, Vec<String>)> {
    s.json(&["list", name])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let mut aliases: Vec<String> = v["aliases"]
                .as_array()
                .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            aliases.sort();
            (v["version"].as_str().unwrap().to_string(), aliases)
        })
        .collect()
}

/// Spawns every command before waiting for any, so they run at the same time.
fn run_all(commands: Vec<std::process::Command>, limit: Duration) -> Vec<Output> {
    let children: Vec<Child> = commands
        .into_iter()
        .map(|mut c| c.spawn().expect("spawn artifactfs"))
        .collect();
    children
        .into_iter()
        .map(|c| wait_with_timeout(c, limit))
        .collect()
}

/// Every file under `dir` with its content.
fn contents_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    snapshot(dir)
        .into_iter()
        .filter(|(_, n)| n.kind == 'f')
        .map(|(rel, _)| {
            let data = fs::read(dir.join(&rel)).unwrap();
            (rel, data)
        })
        .collect()
}

fn digests(files: &BTreeMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(k, v)| (k.clone(), sha256_hex(v)))
        .collect()
}

#[test]
fn a_version_and_alias_moves_made_on_one_host_show_on_anothers_mount() {
    let (_side, hs) = shared_hosts(2);
    let (a, b) = (&hs[0], &hs[1]);
    let ma = Mounted::new(a, &mountpoint(a));
    let mb = Mounted::new(b, &mountpoint(b));

    // v0 is logged on A; B's mount shows it, byte for byte (B's cache is empty: every file
    // is downloaded and checked).
    let big = pseudo_random(3 << 20, 7);
    let src = a.tree("src", &[("a.txt", "alpha\n"), ("sub/b.txt", "bee\n")]);
    write_file(&src.join("sub/big.bin"), &big);
    assert_eq!(log(a, "m", &src), "m:v0");
    let want = digests(&contents_of(&src));
    wait_until("v0 of A shows on B's mount", SHOWS, || {
        match ls_names(&mb.path("m")).contains(&"v0".to_string()) {
            true => Ok(()),
            false => Err(format!("ls m: {:?}", ls_names(&mb.path("m")))),
        }
    });
    assert_eq!(ls_names(&mb.path("m/v0")), ["a.txt", "sub"]);
    assert_eq!(sha256sums(&mb.path("m/v0")), want, "m/v0 read on B");
    assert_eq!(sha256sums(&mb.path("m/latest")), want, "m/latest read on B");
    assert_eq!(link_of(&mb.path("m/latest")).as_deref(), Some("v0"));

    // v1, committed on A through its mount; latest moves on B.
    fs::create_dir(ma.path("drafts/m")).unwrap();
    fs::write(ma.path("drafts/m/c.txt"), "sea\n").unwrap();
    assert_eq!(write_control(&ma.path("drafts/m/.commit"), "commit"), "ok");
    wait_until("latest moves to v1 on B's mount", SHOWS, || {
        match link_of(&mb.path("m/latest")) {
            Some(t) if t == "v1" => Ok(()),
            other => Err(format!("m/latest -> {other:?}")),
        }
    });
    let mut want1 = want.clone();
    want1.insert("c.txt".into(), sha256_hex(b"sea\n"));
    assert_eq!(sha256sums(&mb.path("m/latest")), want1, "m/v1 read on B");

    // An alias set on B shows on A's mount; moved on A, it shows moved on B.
    b.ok(&["alias", "set", "m:v0", "best"]);
    wait_until("best -> v0 on A's mount", SHOWS, || {
        match link_of(&ma.path("m/best")) {
            Some(t) if t == "v0" => Ok(()),
            other => Err(format!("m/best -> {other:?}")),
        }
    });
    a.ok(&["alias", "set", "m:v1", "best"]);
    wait_until("best moved to v1 on B's mount", SHOWS, || {
        match link_of(&mb.path("m/best")) {
            Some(t) if t == "v1" => Ok(()),
            other => Err(format!("m/best -> {other:?}")),
        }
    });
    assert_eq!(sha256sums(&mb.path("m/best")), want1);
    for h in [a, b] {
        assert_eq!(
            versions_and_aliases(h, "m"),
            [
                ("v0".to_string(), vec![]),
                (
                    "v1".to_string(),
                    vec!["best".to_string(), "latest".to_string()]
                )
            ]
        );
    }
    b.ok(&["verify"]);
}

#[test]
fn eight_committers_on_two_hosts_number_versions_without_gaps() {
    let (_side, hs) = shared_hosts(2);
    let mut commands = Vec::new();
    let mut sources = Vec::new();
    for w in 0..8 {
        let host = &hs[w % 2];
        let dir = host.tree(
            &format!("w{w}"),
            &[
                ("who.txt", &format!("committer {w}\n")),
                ("common.txt", "the same for all\n"),
            ],
        );
        commands.push(host.command(&[
            OsStr::new("--json"),
            "log".as_ref(),
            "m".as_ref(),
            dir.as_os_str(),
        ]));
        sources.push(dir);
    }
    let outs = run_all(commands, Duration::from_secs(120));
    let mut numbers = BTreeMap::new();
    for (w, out) in outs.iter().enumerate() {
        assert_success(out, &["log", "m", p(&sources[w])]);
        let v: serde_json::Value = serde_json::from_str(&stdout(out))
            .unwrap_or_else(|e| panic!("log --json printed {:?}: {e}", stdout(out)));
        let version = v["version"]
            .as_str()
            .unwrap_or_else(|| panic!("no version in {v}"))
            .to_string();
        assert!(
            numbers.insert(version.clone(), w).is_none(),
            "{version} given twice: {numbers:?}"
        );
    }
    let want: BTreeSet<String> = (0..8).map(|n| format!("v{n}")).collect();
    assert_eq!(
        numbers.keys().cloned().collect::<BTreeSet<_>>(),
        want,
        "numbers handed out"
    );
    for h in &hs {
        let listed: BTreeSet<String> = versions(h, "m").into_iter().collect();
        assert_eq!(listed, want, "versions listed on a host");
    }
    // Every version holds what its committer logged, read on the other host, and verifies.
    for (version, w) in &numbers {
        let other = &hs[(w + 1) % 2];
        let reference = format!("m:{version}");
        assert_eq!(
            cat(other, &reference, "who.txt"),
            format!("committer {w}\n")
        );
        assert_eq!(cat(other, &reference, "common.txt"), "the same for all\n");
        other.ok(&["verify", &reference]);
    }
    assert_eq!(
        versions_and_aliases(&hs[0], "m").last().unwrap().1,
        ["latest"]
    );
}

#[test]
fn a_draft_file_open_on_one_host_keeps_a_commit_on_another_out_until_closed() {
    let (_side, hs) = shared_hosts(2);
    let (a, b) = (&hs[0], &hs[1]);
    let src = a.tree("src", &[("base.txt", "base\n")]);
    assert_eq!(log(a, "m", &src), "m:v0");
    let ma = Mounted::new(a, &mountpoint(a));
    let mb = Mounted::new(b, &mountpoint(b));

    // Host A writes into the distributed draft m@job: one file closed, one still open.
    let draft_a = ma.path("drafts/m@job");
    fs::create_dir(&draft_a).unwrap();
    fs::write(draft_a.join("done.txt"), "done\n").unwrap();
    let held = Holder::open(&draft_a.join("held.txt"), "partial ");
    let draft_b = mb.path("drafts/m@job");
    wait_until(
        "A's draft and its closed file show on B",
        SHOWS,
        || match fs::read_to_string(draft_b.join("done.txt")) {
            Ok(t) if t == "done\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // B's commit, from the CLI and through its mount, is refused as busy, naming the file.
    let before = shared_fingerprint(b.side());
    let err = b.fail(&["finish", "m", "--distributed-id", "job"]);
    assert!(
        err.contains("held.txt")
            && (err.contains("never closed") || err.contains("open for writing")),
        "finish on B while held.txt is open on A: {err}"
    );
    assert_eq!(write_control(&draft_b.join(".commit"), "commit"), "EBUSY");
    assert_unchanged(&before, &shared_fingerprint(b.side()), "refused commits");
    assert_eq!(versions(b, "m"), ["v0"]);

    // Once A closes it, B's commit takes it with all its content.
    held.close("done");
    b.ok(&["finish", "m", "--distributed-id", "job"]);
    assert_eq!(versions(a, "m"), ["v0", "v1"]);
    assert_eq!(cat(b, "m:v1", "held.txt"), "partial done\n");
    assert_eq!(cat(b, "m:v1", "done.txt"), "done\n");
    wait_until(
        "v1 shows on A's mount",
        SHOWS,
        || match fs::read_to_string(ma.path("m/v1/held.txt")) {
            Ok(t) if t == "partial done\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    drop(mb);
    drop(ma);
}

/// The union a distributed draft must hold once finished: path → (content, the host that
/// wrote it last).
type Written = BTreeMap<String, (Vec<u8>, usize)>;

/// Writes `files` into scratch directory `dir` of host `h`, for an upsert, and records them
/// in `written` as host `w`'s.
fn upsert_tree(
    h: &TestStore,
    dir: &str,
    files: &[(&str, Vec<u8>)],
    w: usize,
    written: &mut Written,
) -> PathBuf {
    let d = h.path(dir);
    for (rel, data) in files {
        write_file(&d.join(rel), data);
        written.insert(rel.to_string(), (data.clone(), w));
    }
    d
}

/// Writes `files` into the draft directory `draft` of host `w`'s mount (each closed, so
/// uploaded and recorded, before this returns), and records them in `written`.
fn write_into_mount(draft: &Path, files: &[(&str, Vec<u8>)], w: usize, written: &mut Written) {
    for (rel, data) in files {
        let path = draft.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, data)
            .unwrap_or_else(|e| panic!("host {w} writes {}: {e}", path.display()));
        written.insert(rel.to_string(), (data.clone(), w));
    }
}

#[test]
fn three_hosts_fill_one_distributed_draft_through_cli_and_mounts() {
    let (_side, hs) = shared_hosts(3);
    let ms: Vec<Mounted> = hs.iter().map(|h| Mounted::new(h, &mountpoint(h))).collect();
    let draft = "feats@run-7";
    let upsert = |w: usize, dir: &Path| -> serde_json::Value {
        hs[w].json(&["upsert", "feats", p(dir), "--distributed-id", "run-7"])
    };
    let mut written = Written::new();

    // Host 0 starts the draft with an upsert: its own files, and two paths that others
    // write again later (one through a mount, one with an upsert).
    let a = upsert_tree(
        &hs[0],
        "a-out",
        &[
            ("a/cli.txt", b"host 0, upserted\n".to_vec()),
            ("a/sub/deep.bin", pseudo_random(200 << 10, 41)),
            ("shared/cli-then-mount.txt", b"host 0 was first\n".to_vec()),
            ("shared/cli-then-cli.txt", b"host 0 was first\n".to_vec()),
        ],
        0,
        &mut written,
    );
    assert_eq!(
        upsert(0, &a),
        serde_json::json!({"draft": draft, "files": 4, "replaced": []})
    );

    // The draft shows on every mount as drafts/NAME@ID/; each host writes into it there.
    let dirs: Vec<PathBuf> = ms
        .iter()
        .map(|m| m.path(&format!("drafts/{draft}")))
        .collect();
    for (w, dir) in dirs.iter().enumerate() {
        wait_until(
            &format!("the draft shows on host {w}'s mount"),
            SHOWS,
            || match fs::read(dir.join("a/cli.txt")) {
                Ok(t) if t == b"host 0, upserted\n" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }
    write_into_mount(
        &dirs[0],
        &[("a/mnt.txt", b"host 0, through its mount\n".to_vec())],
        0,
        &mut written,
    );
    write_into_mount(
        &dirs[1],
        &[
            ("b/mnt.txt", b"host 1, through its mount\n".to_vec()),
            ("b/big.bin", pseudo_random(3 << 20, 42)),
            // Over what host 0 upserted: the later writer wins.
            (
                "shared/cli-then-mount.txt",
                b"host 1 wrote it later\n".to_vec(),
            ),
            ("shared/mount-then-cli.txt", b"host 1 was first\n".to_vec()),
        ],
        1,
        &mut written,
    );
    let b = upsert_tree(
        &hs[1],
        "b-out",
        &[("b/cli.txt", b"host 1, upserted\n".to_vec())],
        1,
        &mut written,
    );
    assert_eq!(
        upsert(1, &b),
        serde_json::json!({"draft": draft, "files": 1, "replaced": []})
    );

    // Host 2 upserts over a path host 1 wrote through its mount and one host 0 upserted,
    // and says so, naming both.
    let c = upsert_tree(
        &hs[2],
        "c-out",
        &[
            ("c/cli.txt", b"host 2, upserted\n".to_vec()),
            (
                "shared/mount-then-cli.txt",
                b"host 2 wrote it later\n".to_vec(),
            ),
            (
                "shared/cli-then-cli.txt",
                b"host 2 wrote it later\n".to_vec(),
            ),
        ],
        2,
        &mut written,
    );
    assert_eq!(
        hs[2].ok(&["upsert", "feats", p(&c), "--distributed-id", "run-7"]),
        format!(
            "added 3 files to draft {draft}\nreplaced what an earlier writer had added at 2 \
             paths: shared/cli-then-cli.txt, shared/mount-then-cli.txt\n"
        )
    );
    write_into_mount(
        &dirs[2],
        &[("c/mnt.txt", b"host 2, through its mount\n".to_vec())],
        2,
        &mut written,
    );
    let want: BTreeMap<String, String> = written
        .iter()
        .map(|(k, (data, _))| (k.clone(), sha256_hex(data)))
        .collect();

    // Before the finish, host 0's mount shows the whole draft, whoever wrote each file.
    wait_until(
        "host 0's mount shows the whole draft",
        SHOWS,
        || match sha256sums(&dirs[0]) {
            got if got == want => Ok(()),
            got => Err(format!("{got:?}")),
        },
    );

    // `finish` on host 1: the version holds exactly the union, each path as its last
    // writer left it.
    assert_eq!(
        hs[1]
            .ok(&["finish", "feats", "--distributed-id", "run-7"])
            .trim(),
        "feats:v0"
    );
    let paths: Vec<String> = want.keys().cloned().collect();
    for h in &hs {
        assert_eq!(ls(h, "feats:v0"), paths, "the version, listed");
    }
    // Each file read on a host that did not write it: through its mount and with `cat`.
    for (w, m) in ms.iter().enumerate() {
        wait_until(
            &format!("feats:v0 shows on host {w}'s mount"),
            SHOWS,
            || match ls_names(&m.path("feats")).contains(&"v0".to_string()) {
                true => Ok(()),
                false => Err(format!("ls feats: {:?}", ls_names(&m.path("feats")))),
            },
        );
    }
    for (path, (data, writer)) in &written {
        let reader = (writer + 1) % hs.len();
        let through_mount = fs::read(ms[reader].path(&format!("feats/v0/{path}")))
            .unwrap_or_else(|e| panic!("host {reader} reads feats/v0/{path}: {e}"));
        assert_eq!(
            sha256_hex(&through_mount),
            sha256_hex(data),
            "{path} (written by host {writer}) read through host {reader}'s mount"
        );
        let out = hs[reader].run(&["cat", "feats:v0", path]);
        assert_success(&out, &["cat", "feats:v0", path]);
        assert_eq!(
            sha256_hex(&out.stdout),
            sha256_hex(data),
            "{path} (written by host {writer}) read with cat on host {reader}"
        );
    }
    assert_eq!(sha256sums(&ms[2].path("feats/v0")), want);

    // The id is sealed: an upsert on another host is refused, naming the version, and
    // changes nothing; the draft is gone from every mount, and cannot be made again there.
    let late = hs[2].tree("late", &[("late.txt", "too late\n")]);
    refused(
        &hs[2],
        &["upsert", "feats", p(&late), "--distributed-id", "run-7"],
        &["draft feats@run-7 was already finished as feats:v0"],
    );
    for (w, dir) in dirs.iter().enumerate() {
        wait_until(
            &format!("the draft is gone from host {w}'s mount"),
            SHOWS,
            || match dir.exists() {
                false => Ok(()),
                true => Err("drafts/feats@run-7 still there".into()),
            },
        );
    }
    assert_eq!(
        fs::create_dir(&dirs[0]).map_err(|e| e.raw_os_error()),
        Err(Some(libc::EEXIST)),
        "mkdir of a finished distributed id through a mount"
    );
    assert_eq!(versions(&hs[0], "feats"), ["v0"]);
    drop(ms);
}

/// Long enough for a command that retries an unreachable server for its 30 s and gives up.
const GIVES_UP: Duration = Duration::from_secs(150);

/// Whether the bucket holds an object for each of these contents.
fn bucket_has(side: &SharedSide, content: &[u8]) -> bool {
    let hex = sha256_hex(content);
    side.bucket_dir
        .join("store/blobs")
        .join(&hex[..2])
        .join(&hex)
        .is_file()
}

/// The file in which the S3 server keeps the blob of `content`.
fn object_file(side: &SharedSide, content: &[u8]) -> PathBuf {
    let hex = sha256_hex(content);
    side.bucket_dir
        .join("store/blobs")
        .join(&hex[..2])
        .join(hex)
}

/// How many blobs the bucket holds.
fn objects_in_bucket(side: &SharedSide) -> usize {
    side.objects()
        .iter()
        .filter(|(k, _)| k.starts_with("store/blobs/"))
        .count()
}

#[test]
fn an_object_store_killed_during_a_commit_fails_it_cleanly_and_the_retry_succeeds() {
    let services = ProcessServices::get();
    let mut s3 = S3Server::start();
    let side = SharedSide::new(&services.pg, &s3, "s3-killed");
    let hs = hosts(&side, 2);
    let (a, b) = (&hs[0], &hs[1]);
    let small = a.tree("small", &[("a.txt", "alpha\n")]);
    assert_eq!(log(a, "m", &small), "m:v0");

    // Enough files that the upload is still going when the first of them arrives.
    let big = a.path("big");
    let files: Vec<Vec<u8>> = (0..400)
        .map(|i| pseudo_random(16 << 10, 1000 + i))
        .collect();
    for (i, data) in files.iter().enumerate() {
        write_file(&big.join(format!("part{i:03}.bin")), data);
    }
    let already = objects_in_bucket(&side);
    let before = shared_fingerprint(&side);
    let child = a
        .command(&["log", "m", p(&big)])
        .spawn()
        .expect("spawn artifactfs log");
    wait_until("the commit uploads its first blob", GIVES_UP, || {
        match objects_in_bucket(&side) > already {
            true => Ok(()),
            false => Err("nothing uploaded yet".into()),
        }
    });
    s3.kill();
    let out = wait_with_timeout(child, GIVES_UP);
    let err = assert_failure(&out, &["log", "m", p(&big)]);
    let uploaded = files.iter().filter(|f| bucket_has(&side, f)).count();
    assert!(
        uploaded < files.len(),
        "every file was uploaded before the server was killed: make the commit bigger"
    );
    // The error names the object store and why it failed.
    assert!(
        err.contains("s3://s3-killed/store") && err.contains(&s3.endpoint()),
        "the error should name the object store and its endpoint: {err}"
    );
    assert!(
        err.to_lowercase().contains("connect") || err.contains("refused"),
        "the error should say the server could not be reached: {err}"
    );
    // No version, nothing changed in the catalog, nothing it refers to missing.
    assert_unchanged(&before, &shared_fingerprint(&side), "the failed commit");
    assert_eq!(versions(b, "m"), ["v0"]);

    // Once the server is back, the same command succeeds and every file reads back on the
    // other host.
    s3.start_again();
    assert_eq!(log(a, "m", &big), "m:v1");
    b.ok(&["verify", "m:v1"]);
    for i in [0usize, 199, 399] {
        let got = b.run(&["cat", "m:v1", &format!("part{i:03}.bin")]);
        assert_success(&got, &["cat"]);
        assert!(got.stdout == files[i], "part{i:03}.bin read on B");
    }
    drop(hs);
    let _ = fs::remove_dir_all(&big);
}

#[test]
fn a_database_restart_between_operations_is_survived_by_commands_and_mounts() {
    let services = ProcessServices::get();
    let mut pg = Postgres::start();
    let side = SharedSide::new(&pg, &services.s3, "pg-restarted");
    let hs = hosts(&side, 2);
    let (a, b) = (&hs[0], &hs[1]);
    let mb = Mounted::new(b, &mountpoint(b));
    let v0 = a.tree("v0", &[("a.txt", "alpha\n")]);
    assert_eq!(log(a, "m", &v0), "m:v0");
    wait_until(
        "v0 shows on B's mount",
        SHOWS,
        || match fs::read_to_string(mb.path("m/v0/a.txt")) {
            Ok(t) if t == "alpha\n" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // A crash and a restart of the database between two commands: the next command works,
    // and the mount, whose connections the restart dropped, shows what it made.
    pg.restart();
    let v1 = a.tree("v1", &[("a.txt", "alpha\n"), ("b.txt", "bee\n")]);
    assert_eq!(log(a, "m", &v1), "m:v1");
    wait_until(
        "v1 shows on B's mount after the restart",
        SHOWS,
        || match fs::read_to_string(mb.path("m/v1/b.txt")) {
            Ok(t) if t == "bee\n" => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => panic!(
                "reading B's mount after the database restarted: {e}\nmount.log:\n{}",
                tail(&mb.log(), 3000)
            ),
            other => Err(format!("{other:?}")),
        },
    );
    // The mount writes and commits a draft on the restarted database too: its pooled
    // connections, which the restart ended while they sat unused, are replaced as they
    // are used, with no request failing.
    pg.restart();
    if let Err(e) = fs::create_dir(mb.path("drafts/m")) {
        panic!(
            "mkdir in B's mount after the database restarted: {e}\nmount.log:\n{}",
            tail(&mb.log(), 3000)
        );
    }
    fs::write(mb.path("drafts/m/c.txt"), "sea\n").unwrap();
    assert_eq!(write_control(&mb.path("drafts/m/.commit"), "commit"), "ok");
    assert_eq!(versions(a, "m"), ["v0", "v1", "v2"]);
    assert_eq!(cat(a, "m:v2", "c.txt"), "sea\n");

    // Down while a command starts, then back: the command waits for it and succeeds.
    pg.stop(true);
    let v3 = a.tree("v3", &[("d.txt", "dee\n")]);
    let child = a
        .command(&["log", "m", p(&v3)])
        .spawn()
        .expect("spawn artifactfs log");
    std::thread::sleep(Duration::from_millis(500));
    pg.start_again();
    let out = wait_with_timeout(child, GIVES_UP);
    assert_success(&out, &["log", "m", p(&v3)]);
    assert_eq!(stdout(&out).trim(), "m:v3");
    a.ok(&["verify"]);
    drop(mb);
}

#[test]
fn gc_during_commits_on_two_hosts_leaves_every_version_whole() {
    let (side, hs) = shared_hosts(3);
    // Each host commits its own artifact again and again, cycling through three contents and
    // deleting the version before: content that gc may take (unreferenced, older than the
    // grace period of 0 s) is committed again while gc runs from the third host.
    let done = std::sync::atomic::AtomicBool::new(false);
    let variant = |w: usize, i: usize| format!("host {w} variant {}\n", i % 3);
    let (committed, gcs) = std::thread::scope(|scope| {
        let committers: Vec<_> = (0..2)
            .map(|w| {
                let h = &hs[w];
                let variant = &variant;
                scope.spawn(move || {
                    let name = format!("art{w}");
                    let mut made: Vec<String> = Vec::new();
                    for i in 0..8 {
                        let dir = h.tree(
                            &format!("c{i}"),
                            &[
                                ("common.txt", "the same everywhere\n"),
                                ("cycle.txt", &variant(w, i)),
                                ("own.txt", &format!("host {w} commit {i}\n")),
                            ],
                        );
                        let v = log(h, &name, &dir);
                        if let Some(prev) = made.pop() {
                            h.ok(&["delete", &prev]);
                        }
                        made.push(v.clone());
                        let _ = fs::remove_dir_all(&dir);
                    }
                    made
                })
            })
            .collect();
        let gc = scope.spawn(|| {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
                hs[2].ok(&["gc", "--grace", "0s"]);
                runs += 1;
            }
            runs
        });
        let committed: Vec<String> = committers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (committed, gc.join().unwrap())
    });
    assert!(gcs >= 1);
    assert_eq!(committed, ["art0:v7", "art1:v7"]);
    // A last gc with no grace, then everything is still there, checked against its name,
    // and reads on a host whose cache never held it.
    hs[2].ok(&["gc", "--grace", "0s"]);
    let fresh = TestStore::sharing(side.clone());
    fresh.init();
    fresh.ok(&["verify"]);
    for (w, reference) in committed.iter().enumerate() {
        assert_eq!(
            cat(&fresh, reference, "common.txt"),
            "the same everywhere\n"
        );
        assert_eq!(cat(&fresh, reference, "cycle.txt"), variant(w, 7));
        assert_eq!(
            cat(&fresh, reference, "own.txt"),
            format!("host {w} commit 7\n")
        );
    }
    // What gc took was garbage: the bucket holds exactly what the two versions refer to.
    assert_eq!(objects_in_bucket(&side), 5);

    // With the default grace period (an hour), garbage younger than that is counted and kept:
    // it may be an upload still in flight on another host.
    let dir = hs[0].tree("gone", &[("gone.txt", "deleted at once\n")]);
    let v = log(&hs[0], "art0", &dir);
    hs[0].ok(&["delete", &v]);
    hs[2].ok(&["gc"]);
    assert!(
        bucket_has(&side, b"deleted at once\n"),
        "gc took a young object"
    );
    hs[2].ok(&["gc", "--grace", "0s"]);
    assert!(
        !bucket_has(&side, b"deleted at once\n"),
        "gc --grace 0s kept garbage"
    );
    assert_eq!(objects_in_bucket(&side), 5);
}

#[test]
fn a_damaged_or_missing_object_is_named_by_verify_and_reads_fail() {
    let (side, hs) = shared_hosts(2);
    let (a, b) = (&hs[0], &hs[1]);
    let src = a.tree(
        "src",
        &[
            ("good.txt", "fine\n"),
            ("damaged.txt", "will be damaged\n"),
            ("gone.txt", "will be deleted\n"),
        ],
    );
    assert_eq!(log(a, "m", &src), "m:v0");
    b.ok(&["verify"]);
    // The same size, other bytes; and an object deleted from the bucket.
    fs::write(
        object_file(&side, b"will be damaged\n"),
        "WILL BE DAMAGED\n",
    )
    .unwrap();
    fs::remove_file(object_file(&side, b"will be deleted\n")).unwrap();
    let damaged = sha256_hex(b"will be damaged\n");
    let gone = sha256_hex(b"will be deleted\n");

    for h in [a, b] {
        let out = h.run(&["verify"]);
        assert!(!out.status.success(), "verify found nothing wrong");
        let report = format!("{}{}", stdout(&out), stderr(&out));
        for needle in [&damaged[..], "damaged.txt", &gone[..], "gone.txt", "m:v0"] {
            assert!(
                report.contains(needle),
                "verify should name {needle}: {report}"
            );
        }
        assert!(!report.contains("good.txt"), "good.txt is intact: {report}");
        let json = h.run(&["--json", "verify"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
        let problems: BTreeMap<String, String> = v["damaged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["blob"].as_str().unwrap().to_string(),
                    d["problem"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            problems,
            BTreeMap::from([
                (damaged.clone(), "corrupted".into()),
                (gone.clone(), "missing".into())
            ])
        );
    }

    // B never had them in its cache: reading them fails, naming the file and the blob, and
    // is EIO through its mount; the intact file reads.
    for (file, blob) in [("damaged.txt", &damaged), ("gone.txt", &gone)] {
        let err = b.fail(&["cat", "m:v0", file]);
        assert!(
            err.contains(file) && err.contains(&blob[..]),
            "cat {file}: {err}"
        );
    }
    assert_eq!(cat(b, "m:v0", "good.txt"), "fine\n");
    let mb = Mounted::new(b, &mountpoint(b));
    for file in ["damaged.txt", "gone.txt"] {
        let got = fs::read(mb.path(&format!("m/v0/{file}")));
        assert_eq!(
            got.as_ref().map_err(|e| e.raw_os_error()),
            Err(Some(libc::EIO)),
            "reading {file} through the mount"
        );
    }
    assert_eq!(
        fs::read_to_string(mb.path("m/v0/good.txt")).unwrap(),
        "fine\n"
    );
    // Nothing damaged entered B's cache.
    assert!(!b.blob_path_of(b"WILL BE DAMAGED\n").exists());
    assert!(!b.blob_path_of(b"will be damaged\n").exists());
}

/// Unmounts (lazily) whatever is mounted at its path when dropped: for mounts that should
/// have been refused.
struct UnmountAtEnd(PathBuf);

impl Drop for UnmountAtEnd {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = run_tool(
                "fusermount3",
                &[OsStr::new("-u"), OsStr::new("-z"), self.0.as_os_str()],
                None,
            );
        }
    }
}

/// Whether the database at `url` holds any table (a refused `init` must make none).
fn tables_in(url: &str) -> i64 {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    db.query_one(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
        &[],
    )
    .unwrap()
    .get(0)
}

/// `init DIR --catalog CATALOG --objects OBJECTS`, from `s`'s scratch area, with `env`
/// (the S3 server's variables as changed) instead of the side's.
fn init_command(
    s: &TestStore,
    dir: &Path,
    catalog: &str,
    objects: &str,
    env: &[(&str, String)],
) -> std::process::Command {
    let mut cmd = s.command(&[
        OsStr::new("init"),
        dir.as_os_str(),
        "--catalog".as_ref(),
        catalog.as_ref(),
        "--objects".as_ref(),
        objects.as_ref(),
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The side's S3 variables with `key` set to `value`.
fn env_with(side: &SharedSide, key: &str, value: &str) -> Vec<(&'static str, String)> {
    side.env
        .iter()
        .map(|(k, v)| {
            (
                *k,
                if *k == key {
                    value.to_string()
                } else {
                    v.clone()
                },
            )
        })
        .collect()
}

#[test]
fn unreachable_servers_and_wrong_credentials_are_named_and_nothing_is_made() {
    let services = ProcessServices::get();
    let side = SharedSide::new(&services.pg, &services.s3, "bad-input");
    let s = TestStore::sharing(side.clone());
    let dead_port = common::services::free_port();
    let dead_pg = format!("postgres://postgres@127.0.0.1:{dead_port}/artifactfs");
    let dead_s3 = format!("http://127.0.0.1:{dead_port}");

    // A host made properly, whose mounts are then pointed at servers that do not answer.
    let host = TestStore::sharing(side.clone());
    host.init();
    let log_dir = host.tree("src", &[("a.txt", "alpha\n")]);
    assert_eq!(log(&host, "m", &log_dir), "m:v0");
    let before = shared_fingerprint(&side);
    let mp = mountpoint(&host);
    let moved = host.path("moved-store");
    fs::create_dir(&moved).unwrap();
    fs::copy(host.root.join("config"), moved.join("config")).unwrap();
    let config = fs::read_to_string(moved.join("config")).unwrap();
    let pg_port = services.pg.port().to_string();
    assert!(config.contains(&pg_port), "{config}");
    fs::write(
        moved.join("config"),
        config.replace(&format!(":{pg_port}/"), &format!(":{dead_port}/")),
    )
    .unwrap();

    // Whatever happens, nothing stays mounted there after the test.
    // (A mount holds a lock on its mount point's parent while it checks: the two mounts
    // below use mount points in different directories, so they run at the same time.)
    let other_mp = mountpoint(&s);
    let _unmount = UnmountAtEnd(fs::canonicalize(&mp).unwrap());
    let _unmount_other = UnmountAtEnd(fs::canonicalize(&other_mp).unwrap());

    // The slow ones (each retries for 30 s before it gives up) run at the same time.
    let dirs: Vec<PathBuf> = (0..2).map(|i| s.path(&format!("never-made-{i}"))).collect();
    let mut mount_dead_pg = s.command(&[OsStr::new("mount"), other_mp.as_os_str()]);
    mount_dead_pg
        .arg("--store")
        .arg(&moved)
        .envs(side.env.iter().map(|(k, v)| (k, v)));
    let mut mount_dead_s3 = host.command(&[OsStr::new("mount"), mp.as_os_str()]);
    mount_dead_s3.env("AWS_ENDPOINT_URL", &dead_s3);
    let slow = run_all(
        vec![
            init_command(&s, &dirs[0], &dead_pg, &side.objects, &side.env),
            init_command(
                &s,
                &dirs[1],
                &side.catalog,
                &side.objects,
                &env_with(&side, "AWS_ENDPOINT_URL", &dead_s3),
            ),
            mount_dead_pg,
            mount_dead_s3,
        ],
        GIVES_UP,
    );
    let what = [
        "init, database not answering",
        "init, object store not answering",
        "mount, database not answering",
        "mount, object store not answering",
    ];
    for (out, what) in slow.iter().zip(what) {
        let err = assert_failure(out, &[what]);
        let named = if what.contains("database") {
            format!("127.0.0.1:{dead_port}")
        } else {
            dead_s3.clone()
        };
        assert!(
            err.contains(&named),
            "{what}: the error should name {named}: {err}"
        );
        assert!(
            err.to_lowercase().contains("connect")
                || err.contains("refused")
                || err.contains("does not answer"),
            "{what}: the error should say it could not connect: {err}"
        );
    }
    for d in &dirs {
        assert!(!d.exists(), "a refused init made {}", d.display());
    }
    for m in [&mp, &other_mp] {
        assert!(!is_mounted(&fs::canonicalize(m).unwrap()));
        assert_eq!(fs::read_dir(m).unwrap().count(), 0);
    }
    assert_unchanged(&before, &shared_fingerprint(&side), "refused mounts");

    // Refused at once: credentials the object store refuses, a role or a database that does
    // not exist, a bucket that does not exist. Each names what is wrong; nothing is made.
    let fresh = services.pg.create_database("bad-input-fresh");
    let quick: Vec<(&str, std::process::Command, &[&str])> = vec![
        (
            "a wrong secret key",
            init_command(
                &s,
                &dirs[0],
                &fresh,
                &side.objects,
                &env_with(&side, "AWS_SECRET_ACCESS_KEY", "not-the-secret"),
            ),
            &[S3Server::ACCESS_KEY],
        ),
        (
            "an unknown access key",
            init_command(
                &s,
                &dirs[0],
                &fresh,
                &side.objects,
                &env_with(&side, "AWS_ACCESS_KEY_ID", "nobody-at-all"),
            ),
            &["nobody-at-all"],
        ),
        (
            "a missing bucket",
            init_command(&s, &dirs[0], &fresh, "s3://no-such-bucket/x", &side.env),
            &["no-such-bucket"],
        ),
        (
            "a role that does not exist",
            init_command(
                &s,
                &dirs[0],
                &fresh.replace("postgres@", "nosuchrole@"),
                &side.objects,
                &side.env,
            ),
            &["nosuchrole"],
        ),
        (
            "a database that does not exist",
            init_command(
                &s,
                &dirs[0],
                &services.pg.url_of("no_such_db"),
                &side.objects,
                &side.env,
            ),
            &["no_such_db"],
        ),
    ];
    for (what, cmd, needles) in quick {
        let out = run_command(cmd);
        let err = assert_failure(&out, &[what]);
        for n in needles {
            assert!(err.contains(n), "{what}: the error should name {n}: {err}");
        }
        assert!(
            !err.contains("not-the-secret"),
            "{what}: the error shows the secret key: {err}"
        );
        assert!(
            !dirs[0].exists(),
            "{what}: a refused init made {}",
            dirs[0].display()
        );
    }
    assert_eq!(tables_in(&fresh), 0, "a refused init made tables");
    // A mount with credentials the object store refuses is refused too, mounting nothing.
    let mut cmd = host.command(&[OsStr::new("mount"), mp.as_os_str()]);
    cmd.env("AWS_SECRET_ACCESS_KEY", "not-the-secret");
    let err = assert_failure(&run_command(cmd), &["mount with a wrong secret"]);
    assert!(
        err.contains(S3Server::ACCESS_KEY),
        "mount, wrong secret: {err}"
    );
    assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
    assert_unchanged(&before, &shared_fingerprint(&side), "refused mounts");
}

/// Every table of the database at `url` with its columns and every row: what a refused
/// command must leave as it was.
fn database_dump(url: &str) -> String {
    let mut db = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut out = String::new();
    let tables = pg_rows(
        &mut db,
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'public' ORDER BY 1",
    );
    for table in tables {
        let table = table[0].trim_matches('"').to_string();
        let columns = pg_rows(
            &mut db,
            &format!(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                  WHERE table_name = '{table}' ORDER BY ordinal_position"
            ),
        );
        out.push_str(&format!("table {table} {columns:?}\n"));
        for row in pg_rows(
            &mut db,
            &format!("SELECT t::text FROM \"{table}\" t ORDER BY 1"),
        ) {
            out.push_str(&format!("  {}\n", row.join(" | ")));
        }
    }
    out
}

/// `s`'s config with its catalog changed to `catalog`, in a new directory `name` of its
/// scratch area: a host pointed at another database.
fn side_pointed_at(s: &TestStore, name: &str, catalog: &str) -> PathBuf {
    let dir = s.path(name);
    fs::create_dir(&dir).unwrap();
    let config = fs::read_to_string(s.root.join("config")).unwrap();
    let catalog_now = &s.side().catalog;
    assert!(config.contains(catalog_now.as_str()), "{config}");
    fs::write(
        dir.join("config"),
        config.replace(catalog_now.as_str(), catalog),
    )
    .unwrap();
    dir
}

/// Fails naming every entry that differs between two [`snapshot`]s of one directory.
fn assert_same_files(before: &BTreeMap<String, Node>, after: &BTreeMap<String, Node>, what: &str) {
    let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    let differ: Vec<String> = keys
        .into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|k| format!("{k}: {:?} -> {:?}", before.get(k), after.get(k)))
        .collect();
    assert!(
        differ.is_empty(),
        "{what} changed or made files:\n{}",
        differ.join("\n")
    );
}

/// Runs `artifactfs --store DIR ARGS` as host `s` would (its environment), which must fail;
/// returns standard error.
fn fail_on(s: &TestStore, dir: &Path, args: &[&str]) -> String {
    let mut cmd = s.command(args);
    cmd.arg("--store").arg(dir);
    assert_failure(&run_command(cmd), args)
}

#[test]
fn a_database_of_another_schema_is_refused_and_left_as_it_was() {
    let services = ProcessServices::get();
    let side = SharedSide::new(&services.pg, &services.s3, "other-schema");
    let host = TestStore::sharing(side.clone());
    host.init();
    let src = host.tree("src", &[("a.txt", "alpha\n")]);
    assert_eq!(log(&host, "m", &src), "m:v0");
    let objects_before = side.objects();
    let never = host.path("never-made");

    // A database another application uses, with a table named as one of the catalog's.
    let app = services.pg.create_database("other-schema-app");
    postgres::Client::connect(&app, postgres::NoTls)
        .unwrap()
        .batch_execute(
            "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO users VALUES (1, 'ada'), (2, 'grace');
             CREATE TABLE versions (release TEXT);
             INSERT INTO versions VALUES ('1.0');",
        )
        .unwrap();
    let app_before = database_dump(&app);
    let err = assert_failure(
        &run_command(init_command(&host, &never, &app, &side.objects, &side.env)),
        &["init on another application's database"],
    );
    for needle in ["other-schema-app", "other tables", "users", "versions"] {
        assert!(
            err.contains(needle),
            "init: the error should name {needle}: {err}"
        );
    }
    assert!(!never.exists(), "a refused init made {}", never.display());
    // A host whose config points there is refused the same way by every command.
    let pointed = side_pointed_at(&host, "pointed", &app);
    let pointed_before = snapshot(&pointed);
    for args in [
        &["list"][..],
        &["log", "m", p(&src)],
        &["upsert", "m", p(&src), "--distributed-id", "x"],
        &["gc"],
    ] {
        let err = fail_on(&host, &pointed, args);
        assert!(
            err.contains("other-schema-app") && err.contains("other tables (users, versions)"),
            "{args:?} on a host pointed at another application's database: {err}"
        );
    }
    assert_same_files(
        &pointed_before,
        &snapshot(&pointed),
        "refused commands, in the pointed host's directory,",
    );
    assert_eq!(
        database_dump(&app),
        app_before,
        "the other application's database"
    );

    // The store's own database, its schema recorded as one a newer artifactfs made.
    let before = host.fingerprint();
    let mut db = side.db();
    let supported: i64 = db
        .query_one("SELECT version FROM artifactfs_schema", &[])
        .unwrap()
        .get(0);
    db.execute("UPDATE artifactfs_schema SET version = version + 1", &[])
        .unwrap();
    let before_newer = host.fingerprint();
    let newer = format!(
        "written by a newer artifactfs (schema {}, this build knows up to {supported})",
        supported + 1
    );
    let err = assert_failure(
        &run_command(init_command(
            &host,
            &never,
            &side.catalog,
            &side.objects,
            &side.env,
        )),
        &["init on a newer schema"],
    );
    assert!(
        err.contains(&newer) && err.contains("other-schema"),
        "init on a newer schema: {err}"
    );
    assert!(!never.exists(), "a refused init made {}", never.display());
    let mp = mountpoint(&host);
    let _unmount = UnmountAtEnd(fs::canonicalize(&mp).unwrap());
    let dest = host.path("dest");
    for args in [
        &["list"][..],
        &["cat", "m:v0", "a.txt"],
        &["log", "m", p(&src)],
        &["upsert", "m", p(&src), "--distributed-id", "x"],
        &["finish", "m", "--distributed-id", "x"],
        &["alias", "set", "m:v0", "best"],
        &["get", "m:v0", p(&dest)],
        &["verify"],
        &["gc", "--grace", "0s"],
        &["mount", p(&mp)],
    ] {
        let err = host.fail(args);
        assert!(
            err.contains(&newer) && err.contains("other-schema"),
            "{args:?} on a newer schema: {err}"
        );
    }
    assert!(!dest.exists(), "a refused get made {}", dest.display());
    assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
    assert_unchanged(
        &before_newer,
        &host.fingerprint(),
        "commands on a newer schema",
    );
    assert_eq!(side.objects(), objects_before, "the bucket");

    // A schema table that records no version, or two: a damaged catalog, said so.
    db.execute("UPDATE artifactfs_schema SET version = version - 1", &[])
        .unwrap();
    for (damage, undo, found) in [
        (
            "DELETE FROM artifactfs_schema".to_string(),
            format!("INSERT INTO artifactfs_schema VALUES ({supported})"),
            "records 0 schema versions".to_string(),
        ),
        (
            "INSERT INTO artifactfs_schema VALUES (1)".to_string(),
            "DELETE FROM artifactfs_schema WHERE version = 1".to_string(),
            format!("records 2 schema versions ([1, {supported}])"),
        ),
    ] {
        db.batch_execute(&damage).unwrap();
        let damaged = host.fingerprint();
        let init = init_command(&host, &never, &side.catalog, &side.objects, &side.env);
        let mut errors = vec![assert_failure(&run_command(init), &[&damage])];
        for args in [&["list"][..], &["log", "m", p(&src)], &["mount", p(&mp)]] {
            errors.push(host.fail(args));
        }
        for err in errors {
            assert!(
                err.contains("other-schema") && err.contains(&found) && err.contains("damaged"),
                "after {damage}: the error should say the catalog is damaged, {found}: {err}"
            );
        }
        assert!(!never.exists(), "a refused init made {}", never.display());
        assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
        assert_unchanged(&damaged, &host.fingerprint(), &damage);
        db.batch_execute(&undo).unwrap();
    }

    // Put back, the store is as it was and works.
    assert_unchanged(
        &before,
        &host.fingerprint(),
        "the store, its schema put back",
    );
    assert_eq!(cat(&host, "m:v0", "a.txt"), "alpha\n");
}

#[test]
fn a_damaged_config_is_named_by_every_command_and_nothing_is_made() {
    let (side, hs) = shared_hosts(1);
    let host = &hs[0];
    let src = host.tree("src", &[("a.txt", "alpha\n")]);
    assert_eq!(log(host, "m", &src), "m:v0");
    let good = fs::read_to_string(host.root.join("config")).unwrap();
    let config_path = host.root.join("config");
    let config_shown = config_path.display().to_string();
    let fingerprint_before = shared_fingerprint(&side);
    let objects_before = side.objects();
    let mp = mountpoint(host);
    let _unmount = UnmountAtEnd(fs::canonicalize(&mp).unwrap());
    let dest = host.path("dest");
    let new_store = host.path("new-store");
    let embedded = TestStore::embedded();
    embedded.ok(&["log", "e", p(&src)]);

    let without = |key: &str| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v.as_object_mut().unwrap().remove(key);
        v.to_string()
    };
    let with = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&good).unwrap();
        v[key] = value;
        v.to_string()
    };
    let damages: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not valid JSON"),
        (
            "cut in half",
            good.as_bytes()[..good.len() / 2].to_vec(),
            "not valid JSON",
        ),
        (
            "garbage",
            b"\x00\xff\x89PNG not a config at all".to_vec(),
            "not valid JSON",
        ),
        (
            "not an object",
            br#"["postgres://somewhere/db"]"#.to_vec(),
            r#"it has no "catalog""#,
        ),
        (
            "no objects",
            without("objects").into_bytes(),
            r#"it has no "objects""#,
        ),
        (
            "no catalog",
            without("catalog").into_bytes(),
            r#"it has no "catalog""#,
        ),
        (
            "a cache size in words",
            with("cache_size", "ten gigabytes".into()).into_bytes(),
            r#"it has no "cache_size""#,
        ),
        (
            "a catalog that is not PostgreSQL",
            with("catalog", "mysql://root@db/artifacts".into()).into_bytes(),
            "PostgreSQL",
        ),
    ];
    let commands: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["ls", "m:v0"],
        vec!["cat", "m:v0", "a.txt"],
        vec!["show", "m:v0"],
        vec!["diff", "m:v0", "m:v0"],
        vec!["get", "m:v0", p(&dest)],
        vec!["log", "m", p(&src)],
        vec!["draft", "new", "m"],
        vec!["upsert", "m", p(&src), "--distributed-id", "x"],
        vec!["finish", "m", "--distributed-id", "x"],
        vec!["alias", "set", "m:v0", "best"],
        vec!["delete", "m:v0"],
        vec!["verify"],
        vec!["gc"],
        vec!["runs"],
        vec!["lineage", "m:v0"],
        vec!["run", "--", "true"],
        vec!["mount", p(&mp)],
        vec!["init"],
        vec!["copy-store", p(&host.root), p(&new_store)],
        vec!["copy-store", p(&embedded.root), p(&host.root)],
    ];
    let embedded_before = embedded.fingerprint();
    for (what, bytes, cause) in &damages {
        fs::write(&config_path, bytes).unwrap();
        let before = snapshot(host.tmp.path());
        for args in &commands {
            let err = host.fail(args);
            assert!(
                err.contains(&config_shown) && err.contains("damaged") && err.contains(cause),
                "{args:?} with a config {what}: the error should name {config_shown} and say \
                 {cause:?}: {err}"
            );
            assert_same_files(
                &before,
                &snapshot(host.tmp.path()),
                &format!("{args:?} with a config {what}"),
            );
        }
        // doctor reports it as this host's problem, and also makes nothing.
        let out = host.run(&["doctor"]);
        assert_eq!(out.status.code(), Some(3), "doctor with a config {what}");
        let report = stdout(&out);
        assert!(
            report.contains(&config_shown) && report.contains(cause),
            "doctor with a config {what}: {report}"
        );
        assert_same_files(
            &before,
            &snapshot(host.tmp.path()),
            &format!("doctor, config {what}"),
        );

        // `init` with the store's URLs writes it again, once both servers answered (a
        // database that does not exist leaves it damaged), and then it works.
        let no_db = side
            .catalog
            .replace(&format!("/{}", side.bucket), "/no_such_db");
        let init = |catalog: &str| {
            host.run(&[
                "init",
                p(&host.root),
                "--catalog",
                catalog,
                "--objects",
                &side.objects,
            ])
        };
        let err = assert_failure(&init(&no_db), &["init", "no_such_db"]);
        assert!(err.contains("no_such_db"), "{err}");
        assert_eq!(
            fs::read(&config_path).unwrap(),
            *bytes,
            "a refused init, config {what}"
        );
        let out = init(&side.catalog);
        assert_success(&out, &["init, config", what]);
        assert_eq!(
            stdout(&out),
            format!(
                "wrote the damaged config of store {} again\n",
                host.root.display()
            )
        );
        let written: serde_json::Value =
            serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
        assert_eq!(
            written,
            serde_json::from_str::<serde_json::Value>(&good).unwrap()
        );
        assert_eq!(
            cat(host, "m:v0", "a.txt"),
            "alpha\n",
            "config {what} written again"
        );
    }
    assert!(!dest.exists() && !new_store.exists());
    assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
    assert_unchanged(
        &fingerprint_before,
        &shared_fingerprint(&side),
        "the commands",
    );
    assert_eq!(side.objects(), objects_before, "the bucket");
    assert_unchanged(
        &embedded_before,
        &embedded.fingerprint(),
        "copy-store's source",
    );
}

/// What a store shows of itself through the CLI: artifacts, versions with their aliases and
/// `show` (digest, sizes, metadata, description), every file's path and content digest, and
/// the drafts with their status.
fn described(s: &TestStore) -> String {
    let mut out = String::new();
    out.push_str(&format!("list {}\n", s.json(&["list"])));
    let names: Vec<String> = s
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifact"].as_str().unwrap().to_string())
        .collect();
    for name in names {
        out.push_str(&format!("list {name} {}\n", s.json(&["list", &name])));
        for v in versions(s, &name) {
            let reference = format!("{name}:{v}");
            out.push_str(&format!(
                "show {reference} {}\n",
                s.json(&["show", &reference])
            ));
            for path in ls(s, &reference) {
                let data = s.run(&["cat", &reference, &path]);
                assert_success(&data, &["cat", &reference, &path]);
                out.push_str(&format!("  {path} {}\n", sha256_hex(&data.stdout)));
            }
        }
    }
    for d in drafts_listed(s) {
        out.push_str(&format!("draft {d} {}\n", s.json(&["draft", "status", &d])));
    }
    out
}

#[test]
fn copy_store_moves_an_embedded_store_into_a_shared_one_and_back() {
    let embedded = TestStore::embedded();
    let e = &embedded;
    let big = pseudo_random(2 << 20, 3);
    let v0 = e.tree("v0", &[("a.txt", "alpha\n"), ("sub/b.txt", "bee\n")]);
    write_file(&v0.join("sub/big.bin"), &big);
    e.ok(&[
        "log",
        "m",
        p(&v0),
        "--type",
        "model",
        "--description",
        "the first",
        "--metadata",
        r#"{"epochs": 3}"#,
    ]);
    let v1 = e.tree("v1", &[("a.txt", "alpha again\n")]);
    e.ok(&["log", "m", p(&v1), "--alias", "best"]);
    e.ok(&["log", "other", p(&v0)]);
    e.ok(&["delete", "other:v0"]);
    e.ok(&["log", "other", p(&v1)]);
    // A draft in progress and a distributed one.
    e.ok(&["draft", "new", "m"]);
    let extra = e.file("extra.txt", "extra\n");
    e.ok(&["draft", "add", "m", p(&extra)]);
    let shard = e.tree("shard", &[("part0", "zero\n")]);
    e.ok(&["upsert", "m", p(&shard), "--distributed-id", "run-1"]);
    let want = described(e);
    let before = e.fingerprint();

    // Into a shared store (one host's side, made with init).
    let (side, hs) = shared_hosts(2);
    let (a, b) = (&hs[0], &hs[1]);
    a.ok(&["copy-store", p(&e.root), p(&a.root)]);
    assert_unchanged(&before, &e.fingerprint(), "copy-store, of its source");
    assert_eq!(
        described(a),
        want,
        "the shared store, read on the host that copied"
    );
    assert_eq!(described(b), want, "the shared store, read on another host");
    b.ok(&["verify"]);
    assert!(bucket_has(&side, &big));
    // Work goes on there with the numbers it had.
    a.ok(&["draft", "commit", "m"]);
    assert_eq!(versions(b, "m"), ["v0", "v1", "v2"]);
    assert_eq!(cat(b, "m:v2", "extra.txt"), "extra\n");
    b.ok(&["finish", "m", "--distributed-id", "run-1"]);
    assert_eq!(cat(a, "m:v3", "part0"), "zero\n");
    let want_shared = described(b);

    // And back, from a host that never read it (its cache is empty), into a new embedded
    // store: the same again, and every blob is there.
    let fresh = TestStore::sharing(side.clone());
    fresh.init();
    let back = TestStore::embedded();
    fresh.ok(&["copy-store", p(&fresh.root), p(&back.root)]);
    assert!(back.root.join("catalog.db").exists());
    back.ok(&["verify"]);
    assert_eq!(
        described(&back),
        want_shared,
        "copied back into an embedded store"
    );
    let _ = fs::remove_dir_all(&v0);
}

/// The files under `dir` that process `pid` has open.
fn held_open(pid: i32, dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.flatten()
                .filter_map(|fd| fs::read_link(fd.path()).ok())
                .filter(|target| target.starts_with(dir))
                .collect()
        })
        .unwrap_or_default()
}

/// Bytes in the files of a host's cache (`blobs/`).
fn cache_usage(s: &TestStore) -> u64 {
    s.blob_files()
        .iter()
        .map(|f| fs::metadata(s.root.join("blobs").join(f)).unwrap().len())
        .sum()
}

#[test]
fn a_small_cache_serves_more_data_than_it_holds_and_stays_bounded() {
    const CACHE: u64 = 4 << 20;
    let side = ProcessServices::new_side().with_cache_size("4M");
    let hs = hosts(&side, 2);
    let (a, b) = (&hs[0], &hs[1]);
    // Twice the cache in files read through the page cache (up to 1 MiB), and twice in
    // files read through kernel passthrough (bigger): two artifacts.
    let sets: [(&str, usize, u64); 2] = [("small", 512 << 10, 16), ("big", 1536 << 10, 6)];
    let mut all = Vec::new();
    for (name, size, count) in sets {
        let src = a.path(name);
        let files: Vec<Vec<u8>> = (0..count)
            .map(|i| pseudo_random(size, 500 + i + size as u64))
            .collect();
        for (i, data) in files.iter().enumerate() {
            write_file(&src.join(format!("f{i:02}.bin")), data);
        }
        assert_eq!(log(a, name, &src), format!("{name}:v0"));
        let _ = fs::remove_dir_all(&src);
        // What the writing host stored went through its cache, bounded too.
        assert!(
            cache_usage(a) <= CACHE,
            "A's cache holds {} bytes after logging {name}, over its {CACHE}",
            cache_usage(a)
        );
        all.push((name, size as u64, files));
    }

    // Two epochs of reading everything through B's mount, one file at a time: every byte
    // right, and the cache never more than its size plus the file being read.
    let mb = Mounted::new(b, &mountpoint(b));
    for (name, size, files) in &all {
        let mut most = 0;
        for epoch in 0..2 {
            for (i, data) in files.iter().enumerate() {
                let got = fs::read(mb.path(&format!("{name}/v0/f{i:02}.bin"))).unwrap();
                assert!(got == *data, "epoch {epoch}: {name}/f{i:02}.bin differs");
                let used = cache_usage(b);
                most = most.max(used);
                if used > CACHE + size {
                    let held = held_open(mb.server_pid(), &b.root.join("blobs"));
                    panic!(
                        "epoch {epoch}, after {name}/f{i:02}.bin: B's cache holds {used} bytes, \
                         over its {CACHE} and the file in use; the mount server holds {} of \
                         its blobs open (so they cannot be evicted): {held:?}",
                        held.len()
                    );
                }
            }
        }
        assert!(
            most > CACHE / 2,
            "reading {name}, the cache was hardly used: {most} bytes at most"
        );
        let sums = sha256sums(&mb.path(&format!("{name}/v0")));
        assert_eq!(sums.len(), files.len());
        for (i, data) in files.iter().enumerate() {
            assert_eq!(sums[&format!("f{i:02}.bin")], sha256_hex(data), "{name}");
        }
    }
    drop(mb);
    // The store as a whole is intact (verify downloads through the same small cache).
    b.ok(&["verify"]);
}
