//! Distributed drafts written by several processes at once, sealing, and concurrent commits of
//! one artifact.

mod common;

use std::collections::BTreeSet;
use std::process::Child;
use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

/// Spawns every command before waiting for any, so they run at the same time.
fn run_all(s: &TestStore, commands: &[Vec<String>]) -> Vec<std::process::Output> {
    let children: Vec<Child> = commands
        .iter()
        .map(|args| s.command(args).spawn().expect("spawn artifactfs"))
        .collect();
    children
        .into_iter()
        .map(|c| wait_with_timeout(c, WAIT))
        .collect()
}

fn upsert_args(dir: &std::path::Path, id: &str) -> Vec<String> {
    vec![
        "upsert".into(),
        "mnist".into(),
        p(dir).into(),
        "--type".into(),
        "dataset".into(),
        "--distributed-id".into(),
        id.into(),
    ]
}

/// 8 writers, each with its own shard of files; writers 0..3 also write `shared/common.txt`
/// (identical content) and writers 4..7 `shared/contested.txt` (each different).
fn concurrent_upserts(s: &TestStore) -> (Vec<String>, BTreeSet<String>) {
    let mut commands = Vec::new();
    let mut expected = Vec::new();
    for w in 0..8 {
        let mut files: Vec<(String, String)> = (0..5)
            .map(|i| {
                (
                    format!("shard{w}/part{i}.txt"),
                    format!("writer {w} part {i}\n"),
                )
            })
            .collect();
        if w < 4 {
            files.push(("shared/common.txt".into(), "the same for everyone\n".into()));
        } else {
            files.push(("shared/contested.txt".into(), format!("writer {w} wins\n")));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = s.tree(&format!("writer{w}"), &refs);
        expected.extend((0..5).map(|i| format!("shard{w}/part{i}.txt")));
        commands.push(upsert_args(&dir, "run-1"));
    }
    expected.push("shared/common.txt".into());
    expected.push("shared/contested.txt".into());
    expected.sort();
    let outs = run_all(s, &commands);
    let mut replacements = 0;
    for (i, out) in outs.iter().enumerate() {
        assert_success(out, &commands[i]);
        let text = stdout(out);
        match text.strip_prefix("added 6 files to draft mnist@run-1\n") {
            Some("") => {}
            // Each writer of contested.txt but the first replaced another's; common.txt,
            // the same bytes from everyone, replaces nothing.
            Some("replaced what an earlier writer had added at 1 path: shared/contested.txt\n")
                if i >= 4 =>
            {
                replacements += 1
            }
            _ => panic!("writer {i} printed {text:?}"),
        }
    }
    assert_eq!(
        replacements, 3,
        "every later writer of contested.txt says so"
    );
    let contested: BTreeSet<String> = (4..8).map(|w| format!("writer {w} wins\n")).collect();
    (expected, contested)
}

fn check_finished(s: &TestStore, expected: &[String], contested: &BTreeSet<String>) {
    assert_eq!(ls(s, "mnist:v0"), expected, "a file was lost");
    for w in 0..8 {
        for i in 0..5 {
            assert_eq!(
                cat(s, "mnist:v0", &format!("shard{w}/part{i}.txt")),
                format!("writer {w} part {i}\n")
            );
        }
    }
    assert_eq!(
        cat(s, "mnist:v0", "shared/common.txt"),
        "the same for everyone\n"
    );
    let winner = cat(s, "mnist:v0", "shared/contested.txt");
    assert!(
        contested.contains(&winner),
        "contested.txt holds {winner:?}"
    );
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
}

#[test]
fn concurrent_upserts_lose_no_file() {
    let s = TestStore::new();
    // The store exists before the writers start.
    let seed = s.tree("seed", &[("seed.txt", "seed")]);
    log(&s, "seed", &seed);
    let (expected, contested) = concurrent_upserts(&s);
    let list = s.json(&["draft", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["draft"], "mnist@run-1");
    let st = s.json(&["draft", "status", "mnist@run-1"]);
    assert_eq!(
        st["added"].as_array().unwrap().len(),
        expected.len(),
        "{st}"
    );

    let out = s.ok(&[
        "finish",
        "mnist",
        "--type",
        "dataset",
        "--distributed-id",
        "run-1",
    ]);
    assert_eq!(out, "mnist:v0\n");
    check_finished(&s, &expected, &contested);
}

#[test]
fn concurrent_upserts_into_a_brand_new_store() {
    // The very first commands run against the store are the concurrent writers: each of
    // them creates and migrates the catalog if it finds none.
    let s = TestStore::new();
    let (expected, contested) = concurrent_upserts(&s);
    let out = s.ok(&[
        "finish",
        "mnist",
        "--type",
        "dataset",
        "--distributed-id",
        "run-1",
    ]);
    assert_eq!(out, "mnist:v0\n");
    check_finished(&s, &expected, &contested);
}

#[test]
fn finish_adds_its_own_paths_commits_and_seals() {
    let s = TestStore::new();
    let a = s.tree("a", &[("a.txt", "a")]);
    s.ok(&upsert_args(&a, "job"));
    let b = s.tree("b", &[("b.txt", "b")]);
    let f = s.json(&[
        "finish",
        "mnist",
        p(&b),
        "--type",
        "dataset",
        "--distributed-id",
        "job",
        "--alias",
        "best",
    ]);
    assert_eq!(f["ref"], "mnist:v0");
    assert_eq!(f["unchanged"], false);
    assert_eq!(f["aliases"], json!(["latest", "best"]));
    assert_eq!(ls(&s, "mnist:v0"), ["a.txt", "b.txt"]);
    assert_eq!(
        s.sql("SELECT artifact, dist_id, number FROM seals"),
        [["\"mnist\"", "\"job\"", "0"]]
    );
    assert!(
        s.sql("SELECT * FROM drafts").is_empty(),
        "the draft is gone"
    );
}

#[test]
fn a_finished_id_is_sealed_and_names_its_version() {
    let s = TestStore::new();
    let a = s.tree("a", &[("a.txt", "a")]);
    s.ok(&upsert_args(&a, "run-1"));
    assert_eq!(
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "run-1"
        ]),
        "mnist:v0\n"
    );
    // Another version on top, so "the version it became" is not simply latest.
    let b = s.tree("b", &[("b.txt", "b")]);
    log(&s, "mnist", &b);
    let later = s.tree("later", &[("late.txt", "late")]);
    refused(
        &s,
        &upsert_args(&later, "run-1"),
        &["mnist@run-1", "mnist:v0"],
    );
    refused(
        &s,
        &[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "run-1",
        ],
        &["mnist@run-1", "mnist:v0"],
    );
    refused(
        &s,
        &[
            "finish",
            "mnist",
            p(&later),
            "--type",
            "dataset",
            "--distributed-id",
            "run-1",
        ],
        &["mnist@run-1", "mnist:v0"],
    );
    refused(
        &s,
        &["draft", "new", "mnist@run-1"],
        &["mnist@run-1", "mnist:v0"],
    );
    refused(
        &s,
        &["draft", "add", "mnist@run-1", p(&later)],
        &["mnist@run-1", "mnist:v0"],
    );
    // Other ids, and the same id on another artifact, are unaffected.
    s.ok(&upsert_args(&later, "run-2"));
    s.ok(&[
        "upsert",
        "other",
        p(&later),
        "--type",
        "dataset",
        "--distributed-id",
        "run-1",
    ]);
}

#[test]
fn distributed_drafts_start_empty_unless_from_is_given() {
    let s = TestStore::new();
    let base = s.tree("base", &[("old.txt", "old")]);
    log(&s, "mnist", &base);
    let shard = s.tree("shard", &[("new.txt", "new")]);
    s.ok(&upsert_args(&shard, "fresh"));
    assert_eq!(
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "fresh"
        ]),
        "mnist:v1\n"
    );
    assert_eq!(
        ls(&s, "mnist:v1"),
        ["new.txt"],
        "upsert provides the whole version"
    );

    assert_eq!(
        s.ok(&["draft", "new", "mnist@incr", "--from", "mnist:v0"]),
        "draft mnist@incr created from mnist:v0\n"
    );
    s.ok(&upsert_args(&shard, "incr"));
    assert_eq!(
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "incr"
        ]),
        "mnist:v2\n"
    );
    assert_eq!(ls(&s, "mnist:v2"), ["new.txt", "old.txt"]);
}

#[test]
fn a_distributed_draft_equal_to_latest_finishes_unchanged_and_seals() {
    let s = TestStore::new();
    let base = s.tree("base", &[("x.txt", "x")]);
    log(&s, "mnist", &base);
    s.ok(&upsert_args(&base, "again"));
    assert_eq!(
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "again"
        ]),
        "mnist:v0 (unchanged)\n"
    );
    refused(
        &s,
        &upsert_args(&base, "again"),
        &["mnist@again", "mnist:v0"],
    );
}

#[test]
fn concurrent_commits_get_distinct_consecutive_numbers() {
    let s = TestStore::new();
    let seed = s.tree("seed", &[("seed.txt", "seed")]);
    log(&s, "seed", &seed);
    concurrent_logs(&s);
}

#[test]
fn concurrent_commits_into_a_brand_new_store() {
    let s = TestStore::new();
    concurrent_logs(&s);
}

fn concurrent_logs(s: &TestStore) {
    let n = 6;
    let mut commands = Vec::new();
    for i in 0..n {
        let dir = s.tree(&format!("c{i}"), &[("data.txt", &format!("content {i}\n"))]);
        commands.push(vec![
            "log".to_string(),
            "mnist".into(),
            p(&dir).into(),
            "--type".into(),
            "dataset".into(),
        ]);
    }
    let outs = run_all(s, &commands);
    let mut got = Vec::new();
    for (i, out) in outs.iter().enumerate() {
        assert_success(out, &commands[i]);
        let line = stdout(out).trim().to_string();
        let num: u64 = line
            .strip_prefix("mnist:v")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected output {line:?}"));
        // Each process's version holds exactly its own content.
        assert_eq!(cat(s, &line, "data.txt"), format!("content {i}\n"));
        got.push(num);
    }
    got.sort();
    assert_eq!(
        got,
        (0..n as u64).collect::<Vec<_>>(),
        "numbers must be v0..v{}",
        n - 1
    );
    let list = s.json(&["list", "mnist"]);
    assert_eq!(list.as_array().unwrap().len(), n);
    assert_eq!(
        s.json(&["show", "mnist"])["ref"],
        format!("mnist:v{}", n - 1)
    );
}

#[test]
fn concurrent_draft_commits_of_different_drafts() {
    // Plain draft and distributed drafts of one artifact committed at the same moment.
    let s = TestStore::new();
    let base = s.tree("base", &[("b.txt", "b")]);
    log(&s, "mnist", &base);
    s.ok(&["draft", "new", "mnist"]);
    let mine = s.tree("mine", &[("mine.txt", "mine")]);
    s.ok(&["draft", "add", "mnist", p(&mine)]);
    let mut commands = vec![vec!["draft".to_string(), "commit".into(), "mnist".into()]];
    for k in 0..4 {
        let d = s.tree(&format!("k{k}"), &[(&format!("k{k}.txt") as &str, "k")]);
        s.ok(&upsert_args(&d, &format!("job{k}")));
        commands.push(vec![
            "finish".into(),
            "mnist".into(),
            "--type".into(),
            "dataset".into(),
            "--distributed-id".into(),
            format!("job{k}"),
        ]);
    }
    let outs = run_all(&s, &commands);
    let mut nums: Vec<String> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            assert_success(o, &commands[i]);
            stdout(o).trim().to_string()
        })
        .collect();
    nums.sort();
    assert_eq!(
        nums,
        ["mnist:v1", "mnist:v2", "mnist:v3", "mnist:v4", "mnist:v5"]
    );
}

#[test]
fn concurrent_identical_logs_make_one_version() {
    let s = TestStore::new();
    let dir = s.tree(
        "same",
        &[("a.txt", "identical"), ("b/c.txt", "also identical")],
    );
    let commands: Vec<Vec<String>> = (0..6)
        .map(|_| {
            vec![
                "log".into(),
                "mnist".into(),
                p(&dir).into(),
                "--type".into(),
                "dataset".into(),
            ]
        })
        .collect();
    let outs = run_all(&s, &commands);
    let mut lines: Vec<String> = outs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            assert_success(o, &commands[i]);
            stdout(o).trim().to_string()
        })
        .collect();
    lines.sort();
    let mut expected = vec!["mnist:v0".to_string()];
    expected.extend((0..5).map(|_| "mnist:v0 (unchanged)".to_string()));
    assert_eq!(lines, expected);
    assert_eq!(s.json(&["list", "mnist"]).as_array().unwrap().len(), 1);
}

#[test]
fn gc_running_beside_writers_never_collects_their_blobs() {
    let s = TestStore::new();
    let seed = s.tree("seed", &[("seed.txt", "seed")]);
    log(&s, "seed", &seed);
    let mut commands = Vec::new();
    let mut expected = Vec::new();
    for w in 0..6 {
        let files: Vec<(String, String)> = (0..20)
            .map(|i| (format!("w{w}/f{i}.txt"), format!("writer {w} file {i}\n")))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let dir = s.tree(&format!("writer{w}"), &refs);
        expected.extend(files.iter().map(|(a, _)| a.clone()));
        commands.push(upsert_args(&dir, "gc-race"));
        commands.push(vec!["gc".into()]);
    }
    expected.sort();
    let outs = run_all(&s, &commands);
    for (i, out) in outs.iter().enumerate() {
        assert_success(out, &commands[i]);
    }
    s.ok(&[
        "finish",
        "mnist",
        "--type",
        "dataset",
        "--distributed-id",
        "gc-race",
    ]);
    s.ok(&["gc"]);
    assert_eq!(ls(&s, "mnist"), expected);
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
    assert_eq!(cat(&s, "mnist", "w3/f7.txt"), "writer 3 file 7\n");
}

#[test]
fn upsert_with_a_type_other_than_the_drafts_stores_nothing() {
    // The artifact does not exist yet, so only the draft knows its type.
    let s = TestStore::new();
    let a = s.tree("a", &[("a.txt", "a")]);
    s.ok(&upsert_args(&a, "typed"));
    let b = s.tree("b", &[("b.txt", "content of b")]);
    let args = [
        "upsert",
        "mnist",
        p(&b),
        "--type",
        "model",
        "--distributed-id",
        "typed",
    ];
    let err = refused(&s, &args, &["mnist@typed", "dataset", "model"]);
    assert!(err.contains("type"), "{err}");
    assert!(!s.blob_path_of(b"content of b").exists());
}

#[test]
fn a_catalog_being_created_by_another_process_is_waited_for() {
    // Deterministic form of the race between processes that use a new store at the same
    // moment: another connection is in the middle of creating catalog.db (it holds the write
    // lock on a database still in rollback-journal mode). A command arriving now must wait
    // for it, as it waits for any writer (busy_timeout), not fail with "database is locked".
    // SQLite's catalog file being created: an embedded store wherever this file is compiled.
    let s = TestStore::embedded();
    std::fs::create_dir_all(&s.root).unwrap();
    let conn = rusqlite::Connection::open(s.root.join("catalog.db")).unwrap();
    conn.execute_batch("BEGIN IMMEDIATE; CREATE TABLE being_created (x);")
        .unwrap();
    let d = s.tree("d", &[("a.txt", "a")]);
    let child = s
        .command(&["log", "mnist", p(&d), "--type", "dataset"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    conn.execute_batch("ROLLBACK;").unwrap();
    drop(conn);
    let out = wait_with_timeout(child, WAIT);
    assert_success(&out, &["log while the catalog is being created"]);
    assert_eq!(stdout(&out), "mnist:v0\n");
}

/// Workers copy through the mount, one job calls `finish`: the files written through the
/// mount are stored as `draft commit` stores them, with or without paths of its own, mounted
/// or not.
#[test]
fn finish_commits_files_written_through_the_mount() {
    let s = TestStore::new();
    let mp = s.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let finish = |id: &str, extra: &[String]| {
        let mut args: Vec<String> = ["finish", "x", "--type", "dataset", "--distributed-id", id]
            .map(String::from)
            .to_vec();
        args.extend_from_slice(extra);
        s.json(&args)
    };
    {
        let m = common::mount::Mounted::new(&s, &mp);
        for id in ["id1", "id2", "id3"] {
            std::fs::create_dir(m.path(&format!("drafts/x@{id}"))).unwrap();
            std::fs::write(
                m.path(&format!("drafts/x@{id}/a.txt")),
                format!("hello {id}\n"),
            )
            .unwrap();
        }
        let f = finish("id1", &[]);
        assert_eq!(f["ref"], "x:v0");
        assert_eq!(s.ok(&["cat", "x:v0", "a.txt"]), "hello id1\n");
        let b = s.tree("b", &[("b.txt", "b")]);
        let f = finish("id2", &[p(&b).to_string()]);
        assert_eq!(f["ref"], "x:v1");
        assert_eq!(ls(&s, "x:v1"), ["a.txt", "b.txt"]);
        assert_eq!(s.ok(&["cat", "x:v1", "a.txt"]), "hello id2\n");
    }
    // Unmounted: the staged file waits in the store for the finish.
    let f = finish("id3", &[]);
    assert_eq!(f["ref"], "x:v2");
    assert_eq!(s.ok(&["cat", "x:v2", "a.txt"]), "hello id3\n");
    assert!(
        s.sql("SELECT * FROM drafts").is_empty(),
        "the drafts are gone"
    );
    s.ok(&["verify"]);
    let staged = std::fs::read_dir(s.root.join("staged")).unwrap().count();
    assert_eq!(staged, 0, "no staged file is left behind");
}

/// A file still open for writing through the mount: `finish` is refused, naming the file, and
/// the draft keeps everything; once the file is closed the same command succeeds.
#[test]
fn finish_refuses_a_file_open_for_writing_naming_it() {
    use std::io::Write;
    let s = TestStore::new();
    let mp = s.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    let m = common::mount::Mounted::new(&s, &mp);
    std::fs::create_dir(m.path("drafts/x@w")).unwrap();
    std::fs::write(m.path("drafts/x@w/done.txt"), "done\n").unwrap();
    let mut open = std::fs::File::create(m.path("drafts/x@w/sub-open.txt")).unwrap();
    open.write_all(b"partial").unwrap();
    let args = ["finish", "x", "--type", "dataset", "--distributed-id", "w"];
    let err = s.fail(&args);
    assert!(
        err.contains("draft x@w: sub-open.txt is open for writing; close it before committing"),
        "{err}"
    );
    assert!(
        s.sql("SELECT * FROM versions").is_empty(),
        "no version was made"
    );
    assert_eq!(
        std::fs::read_to_string(m.path("drafts/x@w/done.txt")).unwrap(),
        "done\n"
    );
    // `draft commit` says the same.
    let err = s.fail(&["draft", "commit", "x@w"]);
    assert!(err.contains("sub-open.txt is open for writing"), "{err}");
    open.write_all(b" and whole\n").unwrap();
    drop(open);
    let f = s.json(&args);
    assert_eq!(f["ref"], "x:v0");
    assert_eq!(ls(&s, "x:v0"), ["done.txt", "sub-open.txt"]);
    assert_eq!(
        s.ok(&["cat", "x:v0", "sub-open.txt"]),
        "partial and whole\n"
    );
}

/// `--type` may be left out of `log`, `upsert` and `finish`: a new artifact is a `dataset`, an
/// existing one keeps its type, and a distributed draft keeps the type it was given; a type
/// that conflicts is still refused.
#[test]
fn type_defaults_to_the_artifacts_then_to_dataset() {
    let s = TestStore::new();
    let a = s.tree("a", &[("a.txt", "a")]);
    let b = s.tree("b", &[("b.txt", "b")]);
    let type_of = |r: &str| s.json(&["show", r])["type"].as_str().unwrap().to_string();

    assert_eq!(s.ok(&["log", "mnist", p(&a)]).trim(), "mnist:v0");
    assert_eq!(type_of("mnist"), "dataset");
    s.ok(&["log", "net", p(&a), "--type", "model"]);
    assert_eq!(s.ok(&["log", "net", p(&b)]).trim(), "net:v1");
    assert_eq!(type_of("net:v1"), "model");
    refused(
        &s,
        &["log", "net", p(&a), "--type", "dataset"],
        &["artifact net has type model, not dataset"],
    );

    // Distributed: an existing artifact's type, with no --type on either command.
    s.ok(&["upsert", "net", p(&a), "--distributed-id", "r1"]);
    assert_eq!(
        s.json(&["finish", "net", p(&b), "--distributed-id", "r1"])["type"],
        "model"
    );
    // The type given to the first upsert holds for the finish that gives none.
    s.ok(&[
        "upsert",
        "ckpt",
        p(&a),
        "--type",
        "model",
        "--distributed-id",
        "r1",
    ]);
    s.ok(&["upsert", "ckpt", p(&b), "--distributed-id", "r1"]);
    assert_eq!(
        s.json(&["finish", "ckpt", "--distributed-id", "r1"])["type"],
        "model"
    );
    // And a new artifact with no type anywhere is a dataset.
    s.ok(&["upsert", "shards", p(&a), "--distributed-id", "r1"]);
    assert_eq!(
        s.json(&["finish", "shards", "--distributed-id", "r1"])["type"],
        "dataset"
    );
    s.ok(&[
        "upsert",
        "ckpt",
        p(&a),
        "--type",
        "model",
        "--distributed-id",
        "r2",
    ]);
    refused(
        &s,
        &[
            "finish",
            "ckpt",
            "--type",
            "dataset",
            "--distributed-id",
            "r2",
        ],
        &["has type model, not dataset"],
    );
    // Leaving the type out does not let a mistyped id through.
    refused(
        &s,
        &["finish", "ckpt", "--distributed-id", "r3"],
        &["nothing was upserted to this distributed id"],
    );
}

/// When two workers upsert the same path the later still wins, and says which paths it
/// replaced; the same content upserted again is no replacement.
#[test]
fn an_upsert_that_replaces_an_earlier_writers_file_says_so() {
    let s = TestStore::new();
    let w1 = s.tree("w1", &[("shared.csv", "from worker 1\n"), ("a.csv", "a")]);
    let w2 = s.tree("w2", &[("shared.csv", "from worker 2\n"), ("b.csv", "b")]);
    let w3 = s.tree("w3", &[("a.csv", "a")]);
    assert_eq!(
        s.ok(&["upsert", "shards", p(&w1), "--distributed-id", "run"]),
        "added 2 files to draft shards@run\n"
    );
    assert_eq!(
        s.ok(&["upsert", "shards", p(&w2), "--distributed-id", "run"]),
        "added 2 files to draft shards@run\nreplaced what an earlier writer had added at 1 \
         path: shared.csv\n"
    );
    let v = s.json(&["upsert", "shards", p(&w3), "--distributed-id", "run"]);
    assert_eq!(
        v,
        json!({"draft": "shards@run", "files": 1, "replaced": []})
    );
    let v = s.json(&["upsert", "shards", p(&w1), "--distributed-id", "run"]);
    assert_eq!(v["replaced"], json!(["shared.csv"]));
    // `finish` with files of its own says the same of the paths it replaced.
    let last = s.tree(
        "last",
        &[("shared.csv", "from the finisher\n"), ("c.csv", "c")],
    );
    assert_eq!(
        s.ok(&["finish", "shards", p(&last), "--distributed-id", "run"]),
        "shards:v0\nreplaced what a worker had upserted at 1 path: shared.csv\n"
    );
    assert_eq!(cat(&s, "shards", "shared.csv"), "from the finisher\n");
    assert_eq!(cat(&s, "shards", "b.csv"), "b");
    let w4 = s.tree("w4", &[("d.csv", "d")]);
    s.ok(&["upsert", "more", p(&w4), "--distributed-id", "r2"]);
    let v = s.json(&["finish", "more", p(&w4), "--distributed-id", "r2"]);
    assert_eq!(
        v["replaced"],
        json!([]),
        "the same content again is no replacement: {v}"
    );
    assert_eq!(v["ref"], "more:v0");
}
