//! W&B Artifacts semantics of versions, aliases, types, metadata and digests (SPEC §1).

mod common;

use std::fs;

use common::*;
use serde_json::{Value, json};

fn aliases(s: &TestStore, r: &str) -> Vec<String> {
    let mut a: Vec<String> = s.json(&["show", r])["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    a.sort();
    a
}

fn version_numbers(s: &TestStore, name: &str) -> Vec<String> {
    s.json(&["list", name])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect()
}

fn digest(s: &TestStore, r: &str) -> String {
    s.json(&["show", r])["digest"].as_str().unwrap().to_string()
}

#[test]
fn first_version_is_v0_and_latest_moves() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f.txt", "one")]);
    assert_eq!(log(&s, "m", &d), "m:v0");
    assert_eq!(aliases(&s, "m:v0"), ["latest"]);
    for (i, content) in ["two", "three", "four"].iter().enumerate() {
        fs::write(d.join("f.txt"), content).unwrap();
        assert_eq!(log(&s, "m", &d), format!("m:v{}", i + 1));
        assert_eq!(s.json(&["show", "m"])["ref"], format!("m:v{}", i + 1));
        assert_eq!(cat(&s, "m:latest", "f.txt"), *content);
    }
    assert_eq!(version_numbers(&s, "m"), ["v0", "v1", "v2", "v3"]);
    for n in 0..3 {
        assert_eq!(aliases(&s, &format!("m:v{n}")), Vec::<String>::new());
    }
    assert_eq!(aliases(&s, "m:v3"), ["latest"]);
    // Each artifact numbers its own versions.
    let other = s.tree("o", &[("g.txt", "g")]);
    assert_eq!(log(&s, "other", &other), "other:v0");
}

#[test]
fn version_numbers_are_never_reused() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f.txt", "0")]);
    log(&s, "m", &d);
    fs::write(d.join("f.txt"), "1").unwrap();
    log(&s, "m", &d);
    fs::write(d.join("f.txt"), "2").unwrap();
    log(&s, "m", &d);
    s.ok(&["delete", "m:v2"]);
    s.ok(&["delete", "m:v1"]);
    fs::write(d.join("f.txt"), "3").unwrap();
    assert_eq!(log(&s, "m", &d), "m:v3");
    assert_eq!(version_numbers(&s, "m"), ["v0", "v3"]);
    // Even after every version is gone.
    s.ok(&["delete", "m:v3"]);
    s.ok(&["delete", "m:v0"]);
    fs::write(d.join("f.txt"), "4").unwrap();
    assert_eq!(log(&s, "m", &d), "m:v4");
    let err = s.fail(&["show", "m:v1"]);
    assert!(err.contains("m:v1"), "{err}");
}

#[test]
fn latest_falls_back_after_deleting_the_newest() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f.txt", "0")]);
    log(&s, "m", &d);
    fs::write(d.join("f.txt"), "1").unwrap();
    log(&s, "m", &d);
    fs::write(d.join("f.txt"), "2").unwrap();
    log(&s, "m", &d);
    s.ok(&["delete", "m:latest"]);
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v1");
    assert_eq!(aliases(&s, "m:v1"), ["latest"]);
    assert_eq!(s.json(&["list"])[0]["latest"], "m:v1");
    // Deleting an older version leaves latest alone.
    s.ok(&["delete", "m:v0"]);
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v1");
    s.ok(&["delete", "m:v1"]);
    let err = s.fail(&["show", "m"]);
    assert!(err.contains("m"), "{err}");
    assert_eq!(s.json(&["list"])[0]["latest"], json!(null));
}

#[test]
fn log_of_unchanged_content_reports_the_existing_version() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a"), ("sub/b.txt", "b")]);
    assert_eq!(log(&s, "m", &d), "m:v0");
    let before = fingerprint(&s);
    assert_eq!(log(&s, "m", &d), "m:v0 (unchanged)");
    assert_unchanged(&before, &fingerprint(&s), "logging unchanged content");
    let v = s.json(&["log", "m", p(&d), "--type", "dataset"]);
    assert_eq!(v["ref"], "m:v0");
    assert_eq!(v["unchanged"], true);
    assert_eq!(version_numbers(&s, "m"), ["v0"]);

    // Unchanged is judged against latest: content equal to an older version is new.
    let d2 = s.tree("d2", &[("a.txt", "changed")]);
    assert_eq!(log(&s, "m", &d2), "m:v1");
    assert_eq!(log(&s, "m", &d), "m:v2");
    assert_eq!(digest(&s, "m:v0"), digest(&s, "m:v2"));
}

#[test]
fn unchanged_log_adds_its_aliases_to_the_existing_version() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a")]);
    log(&s, "m", &d);
    let out = s.ok(&["log", "m", p(&d), "--type", "dataset", "--alias", "best"]);
    assert_eq!(out, "m:v0 (unchanged)\n");
    assert_eq!(aliases(&s, "m:v0"), ["best", "latest"]);
}

#[test]
fn incremental_draft_equal_to_its_base_is_unchanged() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a"), ("b.txt", "b")]);
    log(&s, "m", &d);
    let d1 = s.tree("d1", &[("a.txt", "a"), ("b.txt", "b2")]);
    log(&s, "m", &d1);

    // Re-adding identical content (with a different mtime) changes nothing.
    s.ok(&["draft", "new", "m"]);
    let same = s.tree("same", &[("b.txt", "b2")]);
    set_mtime(&same.join("b.txt"), time_at(1_234_567_890, 0));
    s.ok(&["draft", "add", "m", p(&same.join("b.txt"))]);
    assert_eq!(s.ok(&["draft", "commit", "m"]), "m:v1 (unchanged)\n");
    assert_eq!(version_numbers(&s, "m"), ["v0", "v1"]);
    assert_eq!(
        s.json(&["draft", "list"]),
        json!([]),
        "the draft is gone after commit"
    );

    // A change undone within the draft is unchanged as well.
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "rm", "m", "a.txt"]);
    let a = s.file("again/a.txt", "a");
    s.ok(&["draft", "add", "m", p(&a)]);
    let v = s.json(&["draft", "commit", "m"]);
    assert_eq!(v["ref"], "m:v1");
    assert_eq!(v["unchanged"], true);

    // Equal to its (older) base: reports the base, even though latest differs.
    s.ok(&["draft", "new", "m", "--from", "m:v0"]);
    assert_eq!(s.ok(&["draft", "commit", "m"]), "m:v0 (unchanged)\n");
    assert_eq!(version_numbers(&s, "m"), ["v0", "v1"]);
    assert_eq!(
        s.json(&["show", "m"])["ref"],
        "m:v1",
        "latest must not move"
    );
}

#[test]
fn from_scratch_draft_equal_to_latest_is_unchanged() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a"), ("b.txt", "b")]);
    log(&s, "m", &d);
    s.ok(&["draft", "new", "m", "--empty"]);
    s.ok(&["draft", "add", "m", p(&d)]);
    assert_eq!(s.ok(&["draft", "commit", "m"]), "m:v0 (unchanged)\n");
    assert_eq!(version_numbers(&s, "m"), ["v0"]);
}

#[test]
fn aliases_are_unique_per_artifact_and_move() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    s.ok(&[
        "log",
        "m",
        p(&d),
        "--type",
        "dataset",
        "--alias",
        "best",
        "--alias",
        "prod",
    ]);
    assert_eq!(aliases(&s, "m:v0"), ["best", "latest", "prod"]);
    fs::write(d.join("f"), "1").unwrap();
    s.ok(&["log", "m", p(&d), "--type", "dataset", "--alias", "best"]);
    assert_eq!(aliases(&s, "m:v0"), ["prod"]);
    assert_eq!(aliases(&s, "m:v1"), ["best", "latest"]);
    s.ok(&["alias", "set", "m:v0", "best"]);
    assert_eq!(aliases(&s, "m:v0"), ["best", "prod"]);
    assert_eq!(aliases(&s, "m:v1"), ["latest"]);
    assert_eq!(s.json(&["show", "m:best"])["ref"], "m:v0");
    // Setting an alias where it already is changes nothing.
    s.ok(&["alias", "set", "m:best", "best"]);
    assert_eq!(aliases(&s, "m:v0"), ["best", "prod"]);
    // The same alias name on another artifact is independent.
    let o = s.tree("o", &[("g", "g")]);
    s.ok(&[
        "log",
        "other",
        p(&o),
        "--type",
        "dataset",
        "--alias",
        "best",
    ]);
    assert_eq!(s.json(&["show", "m:best"])["ref"], "m:v0");
    assert_eq!(s.json(&["show", "other:best"])["ref"], "other:v0");
    // list NAME shows aliases per version.
    let list = s.json(&["list", "m"]);
    assert_eq!(list[0]["aliases"], json!(["best", "prod"]));
    assert_eq!(list[1]["aliases"], json!(["latest"]));
}

#[test]
fn version_form_aliases_are_refused() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    log(&s, "m", &d);
    for a in ["v3", "v0", "v123"] {
        let err = refused(&s, &["alias", "set", "m:v0", a], &[a, "reserved"]);
        assert!(err.contains("vN") || err.contains("version"), "{err}");
        refused(
            &s,
            &["log", "m", p(&d), "--type", "dataset", "--alias", a],
            &[a, "reserved"],
        );
    }
    // Not version numbers: allowed.
    for a in ["v", "v3a", "version2", "V3"] {
        s.ok(&["alias", "set", "m:v0", a]);
    }
}

#[test]
fn latest_cannot_be_set_or_removed_by_hand() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    log(&s, "m", &d);
    fs::write(d.join("f"), "1").unwrap();
    log(&s, "m", &d);
    let err = refused(&s, &["alias", "set", "m:v0", "latest"], &["latest"]);
    assert!(err.contains("automatic"), "{err}");
    let err = refused(&s, &["alias", "rm", "m", "latest"], &["latest"]);
    assert!(err.contains("automatic"), "{err}");
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v1");
}

#[test]
fn the_type_is_fixed_at_creation() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    s.ok(&["log", "net", p(&d), "--type", "model"]);
    assert_eq!(s.json(&["show", "net"])["type"], "model");
    fs::write(d.join("f"), "1").unwrap();
    let err = refused(
        &s,
        &["log", "net", p(&d), "--type", "dataset"],
        &["net", "model", "dataset"],
    );
    assert!(err.contains("type"), "{err}");
    // Every other way of committing checks it too.
    refused(
        &s,
        &["draft", "new", "net", "--type", "dataset"],
        &["net", "model", "dataset"],
    );
    s.ok(&["draft", "new", "net"]);
    s.ok(&["draft", "add", "net", p(&d)]);
    refused(
        &s,
        &["draft", "commit", "net", "--type", "dataset"],
        &["net", "model", "dataset"],
    );
    assert_eq!(s.ok(&["draft", "commit", "net"]), "net:v1\n");
    refused(
        &s,
        &[
            "upsert",
            "net",
            p(&d),
            "--type",
            "dataset",
            "--distributed-id",
            "r",
        ],
        &["net", "model", "dataset"],
    );
    refused(
        &s,
        &[
            "finish",
            "net",
            p(&d),
            "--type",
            "dataset",
            "--distributed-id",
            "r",
        ],
        &["net", "model", "dataset"],
    );
    assert_eq!(s.json(&["list"])[0]["type"], "model");
}

#[test]
fn new_artifact_type_comes_from_the_draft_or_defaults_to_dataset() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    s.ok(&["draft", "new", "net", "--type", "model"]);
    s.ok(&["draft", "add", "net", p(&d)]);
    s.ok(&["draft", "commit", "net"]);
    assert_eq!(s.json(&["show", "net"])["type"], "model");
    s.ok(&["draft", "new", "plain"]);
    s.ok(&["draft", "add", "plain", p(&d)]);
    s.ok(&["draft", "commit", "plain"]);
    assert_eq!(s.json(&["show", "plain"])["type"], "dataset");
}

#[test]
fn description_and_metadata_are_stored_per_version() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    s.ok(&[
        "log",
        "m",
        p(&d),
        "--type",
        "dataset",
        "--description",
        "first cut",
        "--metadata",
        r#"{"epochs": 3, "lr": 0.001, "tags": ["a", "b"], "nested": {"k": null}}"#,
    ]);
    fs::write(d.join("f"), "1").unwrap();
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&d.join("f"))]);
    s.ok(&[
        "draft",
        "commit",
        "m",
        "--description",
        "second",
        "--metadata",
        r#"{"epochs": 5}"#,
    ]);
    let v0 = s.json(&["show", "m:v0"]);
    assert_eq!(v0["description"], "first cut");
    assert_eq!(
        v0["metadata"],
        json!({"epochs": 3, "lr": 0.001, "tags": ["a", "b"], "nested": {"k": null}})
    );
    let created = v0["created"].as_str().unwrap();
    assert!(created.len() >= 20 && created.ends_with('Z'), "{created}");
    let v1 = s.json(&["show", "m:v1"]);
    assert_eq!(v1["description"], "second");
    assert_eq!(v1["metadata"], json!({"epochs": 5}));
    let text = s.ok(&["show", "m:v0"]);
    assert!(text.contains("description: first cut"), "{text}");
    assert!(text.contains("epochs"), "{text}");
    // Without any, description is empty and metadata an empty object.
    fs::write(d.join("f"), "2").unwrap();
    log(&s, "m", &d);
    let v2 = s.json(&["show", "m:v2"]);
    assert_eq!(v2["description"], "");
    assert_eq!(v2["metadata"], json!({}));
}

#[test]
fn digest_ignores_mtimes() {
    let s = TestStore::new();
    let a = s.tree("a", &[("x.txt", "x"), ("sub/y.txt", "y")]);
    let b = s.tree("b", &[("x.txt", "x"), ("sub/y.txt", "y")]);
    set_mtime(&a.join("x.txt"), time_at(1_000_000_000, 1));
    set_mtime(&b.join("x.txt"), time_at(1_700_000_000, 999));
    set_mtime(&a.join("sub/y.txt"), time_at(100, 0));
    log(&s, "first", &a);
    log(&s, "second", &b);
    let da = digest(&s, "first");
    assert_eq!(da.len(), 64);
    assert_eq!(da, digest(&s, "second"));
    // Same artifact, only mtimes changed: no new version.
    set_mtime(&a.join("x.txt"), time_at(1_100_000_000, 0));
    assert_eq!(log(&s, "first", &a), "first:v0 (unchanged)");
    // Non-executable permission bits are not part of it either.
    set_mode(&a.join("x.txt"), 0o600);
    assert_eq!(log(&s, "first", &a), "first:v0 (unchanged)");
}

#[test]
fn digest_changes_with_the_executable_bit() {
    let s = TestStore::new();
    let a = s.tree("a", &[("run", "echo")]);
    set_mode(&a.join("run"), 0o644);
    log(&s, "m", &a);
    let d0 = digest(&s, "m:v0");
    set_mode(&a.join("run"), 0o755);
    assert_eq!(log(&s, "m", &a), "m:v1");
    let d1 = digest(&s, "m:v1");
    assert_ne!(d0, d1);
    // Back to non-executable: the digest of v0 again.
    set_mode(&a.join("run"), 0o644);
    assert_eq!(log(&s, "m", &a), "m:v2");
    assert_eq!(digest(&s, "m:v2"), d0);
}

#[test]
fn digest_depends_on_paths_content_and_kinds() {
    let s = TestStore::new();
    let base = s.tree("base", &[("a", "1"), ("d/b", "2")]);
    log(&s, "base", &base);
    let d = digest(&s, "base");
    let renamed = s.tree("renamed", &[("a2", "1"), ("d/b", "2")]);
    log(&s, "renamed", &renamed);
    let content = s.tree("content", &[("a", "1!"), ("d/b", "2")]);
    log(&s, "content", &content);
    let moved = s.tree("moved", &[("a", "1"), ("e/b", "2")]);
    log(&s, "moved", &moved);
    let kind = s.tree("kind", &[("d/b", "2")]);
    std::os::unix::fs::symlink("1", kind.join("a")).unwrap();
    log(&s, "kind", &kind);
    let all = [
        d,
        digest(&s, "renamed"),
        digest(&s, "content"),
        digest(&s, "moved"),
        digest(&s, "kind"),
    ];
    for i in 0..all.len() {
        for j in i + 1..all.len() {
            assert_ne!(all[i], all[j], "digests {i} and {j} collide");
        }
    }
}

#[test]
fn delete_is_refused_while_another_alias_names_the_version() {
    let s = TestStore::new();
    let d = s.tree("d", &[("f", "0")]);
    s.ok(&["log", "m", p(&d), "--type", "dataset", "--alias", "best"]);
    fs::write(d.join("f"), "1").unwrap();
    s.ok(&["log", "m", p(&d), "--type", "dataset", "--alias", "prod"]);
    let err = refused(&s, &["delete", "m:v0"], &["m:v0", "best"]);
    assert!(!err.contains("latest"), "latest does not hold v0: {err}");
    let err = refused(&s, &["delete", "m:best"], &["m:v0", "best"]);
    assert!(err.contains("alias"), "{err}");
    refused(&s, &["delete", "m:v1"], &["m:v1", "prod"]);
    // latest alone does not hold a version.
    s.ok(&["alias", "rm", "m", "prod"]);
    s.ok(&["delete", "m:v1"]);
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v0");
    s.ok(&["alias", "rm", "m", "best"]);
    s.ok(&["delete", "m:v0"]);
    assert_eq!(s.json(&["list", "m"]), json!([]));
}

#[test]
fn deleted_versions_do_not_resolve_and_leave_others_intact() {
    let s = TestStore::new();
    let d = s.tree("d", &[("shared", "s"), ("f", "0")]);
    log(&s, "m", &d);
    fs::write(d.join("f"), "1").unwrap();
    log(&s, "m", &d);
    fs::write(d.join("f"), "2").unwrap();
    log(&s, "m", &d);
    s.ok(&["delete", "m:v1"]);
    let err = s.fail(&["cat", "m:v1", "f"]);
    assert!(err.contains("m:v1"), "{err}");
    assert_eq!(cat(&s, "m:v0", "f"), "0");
    assert_eq!(cat(&s, "m:v2", "f"), "2");
    assert_eq!(cat(&s, "m:v2", "shared"), "s");
    let v: Value = s.json(&["diff", "m:v0", "m:v2"]);
    assert_eq!(v["modified"], json!(["f"]));
    s.ok(&["gc"]);
    assert_eq!(cat(&s, "m:v0", "f"), "0");
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
}

#[test]
fn a_stale_based_commit_records_its_base() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a", "a0"), ("b", "b0")]);
    log(&s, "m", &d);
    fs::write(d.join("a"), "a1").unwrap();
    log(&s, "m", &d);
    s.ok(&["draft", "new", "m", "--from", "m:v0"]);
    let c = s.file("c/c", "c");
    s.ok(&["draft", "add", "m", p(&c)]);
    let v = s.json(&["draft", "commit", "m"]);
    assert_eq!(v["ref"], "m:v2");
    assert_eq!(v["base"], "m:v0");
    assert!(s.ok(&["show", "m:v2"]).contains("base: m:v0"));
    // The draft holds the whole new content: v0 plus c, not v1's change.
    assert_eq!(ls(&s, "m:v2"), ["a", "b", "c"]);
    assert_eq!(cat(&s, "m:v2", "a"), "a0");
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v2");
}

#[test]
fn empty_directories_are_part_of_the_digest() {
    let s = TestStore::new();
    let a = s.tree("a", &[("f", "f")]);
    log(&s, "m", &a);
    fs::create_dir(a.join("empty")).unwrap();
    assert_eq!(log(&s, "m", &a), "m:v1");
    assert_ne!(digest(&s, "m:v0"), digest(&s, "m:v1"));
}

fn count(s: &TestStore, query: &str) -> i64 {
    s.sql(query)[0][0].parse().unwrap()
}

/// A directory's listing is stored in chunks of at most this many entries (nodes.rs).
const CHUNK_MAX: i64 = 256;

#[test]
fn a_one_file_commit_in_a_large_directory_stores_one_chunk_of_it() {
    // About catalog.db's tables and blobs/ themselves: an embedded store wherever this file
    // is compiled (tests/on_postgres.rs runs the rest of it on a shared store).
    let s = TestStore::embedded();
    let d = s.path("d");
    for i in 0..3000 {
        write_file(
            &d.join(format!("data/f{i:04}.txt")),
            format!("file {i}\n").as_bytes(),
        );
    }
    write_file(&d.join("README"), b"readme\n");
    assert_eq!(log(&s, "m", &d), "m:v0");
    let entries = "SELECT count(*) FROM chunk_entries";
    let before = count(&s, entries);
    assert_eq!(before, 3002);

    let changed = s.file("changed.txt", "changed\n");
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&changed), "--as", "data/f1500.txt"]);
    assert_eq!(s.ok(&["draft", "commit", "m"]).trim(), "m:v1");
    // The changed chunk of data/ and the root's (two entries) are new; nothing else is.
    let added = count(&s, entries) - before;
    assert!(
        (1..=CHUNK_MAX + 2).contains(&added),
        "a one-file commit stored {added} entries"
    );
    // The two versions' data/ directories share all their chunks but one.
    let shared = count(
        &s,
        "SELECT count(*) FROM node_chunks a JOIN node_chunks b ON a.chunk = b.chunk
          WHERE a.node = (SELECT child FROM chunk_entries WHERE name = CAST('data' AS BLOB)
                           ORDER BY child LIMIT 1)
            AND b.node = (SELECT child FROM chunk_entries WHERE name = CAST('data' AS BLOB)
                           ORDER BY child DESC LIMIT 1)",
    );
    let chunks_of_v0 = count(
        &s,
        "SELECT count(*) FROM node_chunks WHERE node = (SELECT min(child) FROM chunk_entries
          WHERE name = CAST('data' AS BLOB))",
    );
    assert!(chunks_of_v0 >= 3000 / CHUNK_MAX, "{chunks_of_v0} chunks");
    assert_eq!(shared, chunks_of_v0 - 1);

    assert_eq!(s.ok(&["diff", "m:v0", "m:v1"]), "M data/f1500.txt\n");
    assert_eq!(ls(&s, "m:v1"), ls(&s, "m:v0"));
    assert_eq!(ls(&s, "m:v1").len(), 3001);
    assert_eq!(cat(&s, "m:v1", "data/f1500.txt"), "changed\n");
    assert_eq!(cat(&s, "m:v0", "data/f1500.txt"), "file 1500\n");
    assert_eq!(cat(&s, "m:v1", "data/f2999.txt"), "file 2999\n");
    assert_eq!(
        s.json(&["verify"]),
        json!({"checked": 3002, "damaged": [], "references_checked": 0, "drifted": []}),
        "3,000 files, README and the changed file"
    );

    // A damaged blob is traced up through the shared chunks to both versions.
    let blob = s.blob_path_of(b"file 2999\n");
    set_mode(&blob, 0o644);
    fs::write(&blob, "damaged\n").unwrap();
    let out = s.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["damaged"][0]["used_by"],
        json!([
            {"ref": "m:v0", "path": "data/f2999.txt"},
            {"ref": "m:v1", "path": "data/f2999.txt"}
        ]),
        "{v}"
    );
}

/// Rewrites the store's catalog as schema 2 kept it (every listing whole in `node_entries`),
/// with the real migrations of that schema, so the upgrade can be tested on it.
fn downgrade_to_schema_2(s: &TestStore) {
    use artifactfs::catalog::MIGRATIONS;
    let db = s.root.join("catalog.db");
    let old = s.root.join("catalog-v2.db");
    let conn = rusqlite::Connection::open(&old).unwrap();
    for sql in &MIGRATIONS[..2] {
        conn.execute_batch(sql).unwrap();
    }
    conn.execute("ATTACH ?1 AS v3", [db.to_str().unwrap()])
        .unwrap();
    // Schema 4 added a column to nodes (a count of references, none before it).
    conn.execute(
        "INSERT INTO main.nodes SELECT id, hash, digest, files, bytes, subdirs FROM v3.nodes",
        [],
    )
    .unwrap();
    for table in ["artifacts", "versions", "aliases", "seals"] {
        conn.execute(
            &format!("INSERT INTO main.{table} SELECT * FROM v3.{table}"),
            [],
        )
        .unwrap();
    }
    // Schema 5 added times and owners to drafts and their entries (none before it).
    conn.execute_batch(
        "INSERT INTO main.drafts
             SELECT id, artifact, dist_id, type, base_number, base_root, created_ns, root_mode,
                    root_mtime_ns
               FROM v3.drafts;
         INSERT INTO main.draft_entries
             SELECT draft, parent, name, kind, blob, size, mode, mtime_ns, target, opaque, staged,
                    moved
               FROM v3.draft_entries;",
    )
    .unwrap();
    conn.execute_batch(
        "INSERT INTO main.node_entries
             SELECT c.node, e.name, e.kind, e.blob, e.size, e.mode, e.mtime_ns, e.child, e.target
               FROM v3.node_chunks c JOIN v3.chunk_entries e ON e.chunk = c.chunk;
         DETACH v3;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = fs::remove_file(s.root.join(format!("catalog.db{suffix}")));
    }
    fs::rename(&old, &db).unwrap();
}

#[test]
fn versions_stored_by_schema_2_read_the_same_after_the_upgrade() {
    // An upgrade of SQLite's schema: an embedded store wherever this file is compiled.
    let s = TestStore::embedded();
    let mut files: Vec<(String, String)> = (0..700)
        .map(|i| (format!("many/f{i:03}"), format!("{i}")))
        .collect();
    files.push(("a.txt".into(), "a".into()));
    files.push(("sub/deeper/b.txt".into(), "b".into()));
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let d = s.tree("d", &files);
    set_mode(&d.join("sub/deeper/b.txt"), 0o755);
    fs::create_dir(d.join("empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", d.join("link")).unwrap();
    assert_eq!(log(&s, "m", &d), "m:v0");
    fs::write(d.join("many/f350"), "changed").unwrap();
    fs::remove_file(d.join("a.txt")).unwrap();
    s.ok(&["log", "m", p(&d), "--type", "dataset", "--alias", "best"]);
    let seen = |s: &TestStore| {
        (
            ["m:v0", "m:v1"].map(|r| s.json(&["show", r])),
            ["m:v0", "m:v1"].map(|r| ls(s, r)),
            s.ok(&["diff", "m:v0", "m:v1"]),
            s.json(&["verify"]),
            cat(s, "m:best", "many/f350"),
        )
    };
    let before = seen(&s);

    downgrade_to_schema_2(&s);
    assert_eq!(s.sql("PRAGMA user_version")[0][0], "2");
    let chunked = "SELECT count(*) FROM sqlite_master WHERE name = 'node_chunks'";
    assert_eq!(count(&s, chunked), 0);
    let after = seen(&s);
    assert_eq!(after, before);
    let latest = artifactfs::catalog::MIGRATIONS.len().to_string();
    assert_eq!(s.sql("PRAGMA user_version")[0][0], latest);
    // Each listing became one chunk, under a hash no chunk written later can have.
    assert_eq!(
        count(&s, "SELECT count(*) FROM node_chunks"),
        count(&s, "SELECT count(DISTINCT node) FROM node_chunks")
    );
    assert_eq!(
        count(&s, "SELECT count(*) FROM chunks WHERE length(hash) != 33"),
        0
    );

    // New versions build on the migrated ones; gc keeps what they still share.
    let e = s.file("e.txt", "e");
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&e), "--as", "many/f999"]);
    s.ok(&["draft", "commit", "m"]);
    s.ok(&["delete", "m:v0"]);
    s.ok(&["gc"]);
    assert_eq!(s.ok(&["diff", "m:v1", "m:v2"]), "A many/f999\n");
    assert_eq!(ls(&s, "m:v2").len(), ls(&s, "m:v1").len() + 1);
    assert_eq!(cat(&s, "m:v2", "sub/deeper/b.txt"), "b");
    let v = s.json(&["verify"]);
    assert_eq!(v["damaged"], json!([]), "{v}");
}
