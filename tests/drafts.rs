//! Drafts: creating them from latest, from a version or empty; adding files and directories;
//! removing; status; discard; persistence across processes; committing on a stale base.

mod common;

use std::fs;

use common::*;
use serde_json::json;

/// m:v0 = a.txt, dir/x.txt, dir/sub/y.txt ; m:v1 = v0 with a.txt changed and z.txt added.
fn base(s: &TestStore) {
    let d = s.tree(
        "base",
        &[("a.txt", "a0"), ("dir/x.txt", "x"), ("dir/sub/y.txt", "y")],
    );
    assert_eq!(log(s, "m", &d), "m:v0");
    fs::write(d.join("a.txt"), "a1").unwrap();
    fs::write(d.join("z.txt"), "z").unwrap();
    assert_eq!(log(s, "m", &d), "m:v1");
}

fn commit(s: &TestStore, draft: &str) -> String {
    s.ok(&["draft", "commit", draft]).trim().to_string()
}

#[test]
fn draft_new_starts_from_latest_by_default() {
    let s = TestStore::new();
    base(&s);
    assert_eq!(s.ok(&["draft", "new", "m"]), "draft m created from m:v1\n");
    let extra = s.file("e/new.txt", "new");
    s.ok(&["draft", "add", "m", p(&extra)]);
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(
        ls(&s, "m:v2"),
        ["a.txt", "dir/sub/y.txt", "dir/x.txt", "new.txt", "z.txt"]
    );
    assert_eq!(cat(&s, "m:v2", "a.txt"), "a1");
    assert_eq!(s.json(&["show", "m:v2"])["base"], "m:v1");
}

#[test]
fn draft_new_from_a_version() {
    let s = TestStore::new();
    base(&s);
    assert_eq!(
        s.ok(&["draft", "new", "m", "--from", "m:v0"]),
        "draft m created from m:v0\n"
    );
    let extra = s.file("e/new.txt", "new");
    s.ok(&["draft", "add", "m", p(&extra)]);
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(
        ls(&s, "m:v2"),
        ["a.txt", "dir/sub/y.txt", "dir/x.txt", "new.txt"]
    );
    assert_eq!(cat(&s, "m:v2", "a.txt"), "a0");
    // From an alias too.
    s.ok(&["alias", "set", "m:v1", "best"]);
    assert_eq!(
        s.ok(&["draft", "new", "m", "--from", "m:best"]),
        "draft m created from m:v1\n"
    );
    // But only from a version of the same artifact.
    s.ok(&["draft", "discard", "m"]);
    let o = s.tree("o", &[("o", "o")]);
    log(&s, "other", &o);
    let err = refused(
        &s,
        &["draft", "new", "m", "--from", "other:v0"],
        &["other:v0"],
    );
    assert!(err.contains("m"), "{err}");
    refused(&s, &["draft", "new", "m", "--from", "m:v9"], &["m:v9"]);
}

#[test]
fn draft_new_empty_starts_with_nothing() {
    let s = TestStore::new();
    base(&s);
    assert_eq!(
        s.ok(&["draft", "new", "m", "--empty"]),
        "draft m created empty\n"
    );
    let only = s.tree("only", &[("only.txt", "only")]);
    s.ok(&["draft", "add", "m", p(&only)]);
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(ls(&s, "m:v2"), ["only.txt"]);
    assert_eq!(s.json(&["show", "m:v2"])["base"], json!(null));
    // A draft of an artifact that does not exist yet is empty too.
    assert_eq!(
        s.ok(&["draft", "new", "fresh"]),
        "draft fresh created empty\n"
    );
}

#[test]
fn a_second_plain_draft_of_the_same_artifact_is_refused() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    refused(&s, &["draft", "new", "m"], &["draft m", "exists"]);
}

#[test]
fn adding_a_directory_puts_its_contents_at_the_root() {
    let s = TestStore::new();
    let src = s.tree("src", &[("one.txt", "1"), ("nested/two.txt", "2")]);
    s.ok(&["draft", "new", "n"]);
    let out = s.ok(&["draft", "add", "n", p(&src)]);
    assert_eq!(out, "added 2 files to draft n\n");
    assert_eq!(commit(&s, "n"), "n:v0");
    assert_eq!(ls(&s, "n:v0"), ["nested/two.txt", "one.txt"]);
}

#[test]
fn adding_with_as_puts_a_directory_under_dest() {
    let s = TestStore::new();
    let src = s.tree("src", &[("one.txt", "1"), ("nested/two.txt", "2")]);
    s.ok(&["draft", "new", "n"]);
    s.ok(&["draft", "add", "n", p(&src), "--as", "data/train"]);
    assert_eq!(commit(&s, "n"), "n:v0");
    assert_eq!(
        ls(&s, "n:v0"),
        ["data/train/nested/two.txt", "data/train/one.txt"]
    );
    assert_eq!(cat(&s, "n", "data/train/nested/two.txt"), "2");
}

#[test]
fn adding_files() {
    let s = TestStore::new();
    let f = s.file("src/weights.bin", "w");
    let g = s.file("src/other/config.json", "{}");
    s.ok(&["draft", "new", "n"]);
    // A single file lands at its name, or exactly at --as DEST.
    s.ok(&["draft", "add", "n", p(&f)]);
    s.ok(&["draft", "add", "n", p(&g), "--as", "cfg/model.json"]);
    // Several files with --as land under DEST.
    s.ok(&["draft", "add", "n", p(&f), p(&g), "--as", "both"]);
    assert_eq!(commit(&s, "n"), "n:v0");
    assert_eq!(
        ls(&s, "n:v0"),
        [
            "both/config.json",
            "both/weights.bin",
            "cfg/model.json",
            "weights.bin"
        ]
    );
    assert_eq!(cat(&s, "n", "cfg/model.json"), "{}");
}

#[test]
fn adding_keeps_symlinks_inside_directories() {
    let s = TestStore::new();
    let src = s.tree("src", &[("real.txt", "real")]);
    std::os::unix::fs::symlink("real.txt", src.join("alias.txt")).unwrap();
    s.ok(&["draft", "new", "n"]);
    s.ok(&["draft", "add", "n", p(&src)]);
    commit(&s, "n");
    let out = s.path("out");
    s.ok(&["get", "n", p(&out)]);
    assert_eq!(
        fs::read_link(out.join("alias.txt"))
            .unwrap()
            .to_str()
            .unwrap(),
        "real.txt"
    );
}

#[test]
fn re_adding_a_path_replaces_it() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    let v1 = s.file("r1/a.txt", "first replacement");
    let v2 = s.file("r2/a.txt", "second replacement");
    s.ok(&["draft", "add", "m", p(&v1)]);
    s.ok(&["draft", "add", "m", p(&v2)]);
    let st = s.json(&["draft", "status", "m"]);
    assert_eq!(st["modified"], json!(["a.txt"]));
    assert_eq!(st["added"], json!([]));
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(cat(&s, "m:v2", "a.txt"), "second replacement");
    assert_eq!(ls(&s, "m:v2").len(), 4);
}

#[test]
fn rm_removes_a_file() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    assert_eq!(
        s.ok(&["draft", "rm", "m", "dir/x.txt"]),
        "removed dir/x.txt from draft m\n"
    );
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(ls(&s, "m:v2"), ["a.txt", "dir/sub/y.txt", "z.txt"]);
}

#[test]
fn rm_of_a_directory_removes_everything_under_it() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    // Something added in the draft under the directory goes too.
    let extra = s.file("e/added.txt", "added");
    s.ok(&["draft", "add", "m", p(&extra), "--as", "dir/sub/added.txt"]);
    s.ok(&["draft", "rm", "m", "dir/"]);
    let st = s.json(&["draft", "status", "m"]);
    let mut removed: Vec<String> = st["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    assert_eq!(removed, ["dir/sub/y.txt", "dir/x.txt"]);
    assert_eq!(st["added"], json!([]));
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(ls(&s, "m:v2"), ["a.txt", "z.txt"]);
    let err = s.fail(&["ls", "m:v2", "dir"]);
    assert!(err.contains("dir"), "{err}");
}

#[test]
fn rm_then_add_at_the_same_directory_starts_it_afresh() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "rm", "m", "dir"]);
    let fresh = s.tree("fresh", &[("only.txt", "only")]);
    s.ok(&["draft", "add", "m", p(&fresh), "--as", "dir"]);
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(ls(&s, "m:v2"), ["a.txt", "dir/only.txt", "z.txt"]);
}

#[test]
fn rm_of_a_path_matching_nothing_is_an_error() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    refused(&s, &["draft", "rm", "m", "nope.txt"], &["nope.txt"]);
    refused(&s, &["draft", "rm", "m", "dir/nope"], &["dir/nope"]);
    refused(&s, &["draft", "rm", "m", "a.txt/deeper"], &["a.txt/deeper"]);
    // One bad path in the call: nothing of that call is removed.
    refused(
        &s,
        &["draft", "rm", "m", "a.txt", "nope.txt"],
        &["nope.txt"],
    );
    // Removing twice: the second time it matches nothing.
    s.ok(&["draft", "rm", "m", "a.txt"]);
    refused(&s, &["draft", "rm", "m", "a.txt"], &["a.txt"]);
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(ls(&s, "m:v2"), ["dir/sub/y.txt", "dir/x.txt", "z.txt"]);
}

#[test]
fn status_lists_added_modified_and_removed() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    let add = s.tree("add", &[("a.txt", "changed"), ("new/n.txt", "n")]);
    s.ok(&["draft", "add", "m", p(&add)]);
    s.ok(&["draft", "rm", "m", "dir/sub"]);
    let out = s.run(&["draft", "status", "m"]);
    assert_success(&out, &["draft status"]);
    assert_eq!(stderr(&out), "", "no warning for a draft based on latest");
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "draft m, based on m:v1", "{text}");
    assert_eq!(lines[1], "1 added, 1 modified, 1 removed", "{text}");
    let mut rest: Vec<&str> = lines[2..].to_vec();
    rest.sort();
    assert_eq!(
        rest,
        ["A new/n.txt", "D dir/sub/y.txt", "M a.txt"],
        "{text}"
    );

    let st = s.json(&["draft", "status", "m"]);
    assert_eq!(st["draft"], "m");
    assert_eq!(st["base"], "m:v1");
    assert_eq!(st["latest"], "m:v1");
    assert_eq!(st["stale"], false);
    assert_eq!(st["added"], json!(["new/n.txt"]));
    assert_eq!(st["modified"], json!(["a.txt"]));
    assert_eq!(st["removed"], json!(["dir/sub/y.txt"]));
    // Status is read-only.
    let before = fingerprint(&s);
    s.ok(&["draft", "status", "m"]);
    assert_unchanged(&before, &fingerprint(&s), "draft status");
}

#[test]
fn status_of_an_empty_draft_lists_everything_as_added() {
    let s = TestStore::new();
    s.ok(&["draft", "new", "fresh"]);
    let src = s.tree("src", &[("a", "a"), ("b/c", "c")]);
    s.ok(&["draft", "add", "fresh", p(&src)]);
    let text = s.ok(&["draft", "status", "fresh"]);
    assert!(
        text.starts_with("draft fresh, from scratch\n2 added, 0 modified, 0 removed"),
        "{text}"
    );
    let st = s.json(&["draft", "status", "fresh"]);
    assert_eq!(st["base"], json!(null));
    assert_eq!(st["stale"], false);
    assert_eq!(st["added"], json!(["a", "b/c"]));
}

#[test]
fn status_warns_when_the_base_is_no_longer_latest() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m", "--from", "m:v0"]);
    let out = s.run(&["draft", "status", "m"]);
    assert_success(&out, &["draft status"]);
    let warn = stderr(&out);
    assert!(warn.contains("warning"), "{warn}");
    assert!(warn.contains("m:v0") && warn.contains("m:v1"), "{warn}");
    assert!(
        !stdout(&out).contains("warning"),
        "the warning goes to stderr only: {}",
        stdout(&out)
    );
    let st = s.json(&["draft", "status", "m"]);
    assert_eq!(st["stale"], true);
    assert_eq!(st["base"], "m:v0");
    assert_eq!(st["latest"], "m:v1");

    // A draft that was based on latest goes stale when someone commits meanwhile.
    s.ok(&["draft", "discard", "m"]);
    s.ok(&["draft", "new", "m"]);
    assert_eq!(stderr(&s.run(&["draft", "status", "m"])), "");
    let d = s.tree("other", &[("q", "q")]);
    log(&s, "m", &d);
    let warn = stderr(&s.run(&["draft", "status", "m"]));
    assert!(
        warn.contains("warning") && warn.contains("m:v1") && warn.contains("m:v2"),
        "{warn}"
    );
}

#[test]
fn a_stale_base_draft_still_commits() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    let mine = s.file("mine/mine.txt", "mine");
    s.ok(&["draft", "add", "m", p(&mine)]);
    // Someone else commits m:v2 meanwhile.
    let theirs = s.tree("theirs", &[("theirs.txt", "theirs")]);
    assert_eq!(log(&s, "m", &theirs), "m:v2");
    assert_eq!(commit(&s, "m"), "m:v3");
    assert_eq!(
        ls(&s, "m:v3"),
        ["a.txt", "dir/sub/y.txt", "dir/x.txt", "mine.txt", "z.txt"]
    );
    assert_eq!(s.json(&["show", "m:v3"])["base"], "m:v1");
    assert_eq!(s.json(&["show", "m"])["ref"], "m:v3");
}

#[test]
fn discard_throws_the_draft_away() {
    let s = TestStore::new();
    base(&s);
    let before = fingerprint(&s);
    s.ok(&["draft", "new", "m"]);
    let f = s.file("f/f.txt", "f");
    s.ok(&["draft", "add", "m", p(&f)]);
    assert_eq!(s.ok(&["draft", "discard", "m"]), "discarded draft m\n");
    assert_eq!(s.json(&["draft", "list"]), json!([]));
    let err = s.fail(&["draft", "status", "m"]);
    assert!(err.contains("draft m"), "{err}");
    refused(&s, &["draft", "commit", "m"], &["draft m"]);
    refused(&s, &["draft", "discard", "m"], &["draft m"]);
    let err = refused(&s, &["draft", "add", "m", p(&f)], &["draft m"]);
    assert!(
        err.contains("draft new"),
        "the error should say how to create it: {err}"
    );
    assert_eq!(version_count(&s), 2);
    s.ok(&["gc"]);
    assert_unchanged(&before, &fingerprint(&s), "a discarded draft after gc");
}

fn version_count(s: &TestStore) -> usize {
    s.json(&["list", "m"]).as_array().unwrap().len()
}

#[test]
fn drafts_survive_process_exit() {
    let s = TestStore::new();
    base(&s);
    // Every step is a separate process; the draft lives in the catalog between them.
    s.ok(&["draft", "new", "m"]);
    let rows = s.sql("SELECT artifact, dist_id, base_number FROM drafts");
    assert_eq!(rows, [["\"m\"", "\"\"", "1"]]);
    let f = s.file("f/later.txt", "later");
    s.ok(&["draft", "add", "m", p(&f)]);
    // The source file can go away: the draft holds its own copy.
    fs::remove_file(&f).unwrap();
    s.ok(&["draft", "rm", "m", "z.txt"]);
    let text = s.ok(&["draft", "list"]);
    assert_eq!(text, "DRAFT  BASE  CHANGES\nm      m:v1  2\n");
    let n = s.sql("SELECT count(*) FROM draft_entries");
    assert_ne!(n[0][0], "0");
    assert_eq!(commit(&s, "m"), "m:v2");
    assert_eq!(cat(&s, "m:v2", "later.txt"), "later");
    assert_eq!(
        ls(&s, "m:v2"),
        ["a.txt", "dir/sub/y.txt", "dir/x.txt", "later.txt"]
    );
    assert!(s.sql("SELECT * FROM drafts").is_empty());
    assert!(s.sql("SELECT * FROM draft_entries").is_empty());
}

#[test]
fn adding_a_file_where_the_draft_has_a_directory_is_refused_whole() {
    // docs/SEMANTICS.md: "The whole add is then undone: either every path is recorded or
    // none" -- and, as for every refused command, nothing is left behind in the store.
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    let ok = s.file("src/fine.txt", "fine");
    let clash = s.file("src2/dir", "a file named like the directory");
    let catalog_before = s.sql("SELECT * FROM draft_entries ORDER BY 1, 2, 3");
    let before = fingerprint(&s);
    let err = s.fail(&["draft", "add", "m", p(&ok), p(&clash)]);
    assert!(err.contains("dir") && err.contains("directory"), "{err}");
    assert_eq!(
        s.sql("SELECT * FROM draft_entries ORDER BY 1, 2, 3"),
        catalog_before,
        "the draft recorded part of a refused add"
    );
    assert!(
        !s.blob_path_of(b"fine").exists(),
        "a refused add left the blob of src/fine.txt in blobs/"
    );
    assert_unchanged(&before, &fingerprint(&s), "a refused draft add");
}

#[test]
fn adding_beneath_a_file_is_refused_whole() {
    let s = TestStore::new();
    base(&s);
    s.ok(&["draft", "new", "m"]);
    let beneath = s.file("src3/x", "content beneath a file");
    let err = refused(
        &s,
        &["draft", "add", "m", p(&beneath), "--as", "a.txt/x"],
        &["a.txt"],
    );
    assert!(err.contains("not a directory"), "{err}");
}

#[test]
fn dest_must_be_relative_without_dot_dot() {
    let s = TestStore::new();
    s.ok(&["draft", "new", "n"]);
    let f = s.file("src/f", "f");
    refused(
        &s,
        &["draft", "add", "n", p(&f), "--as", "/abs/f"],
        &["/abs/f"],
    );
    refused(
        &s,
        &["draft", "add", "n", p(&f), "--as", "../escape"],
        &["../escape"],
    );
    refused(
        &s,
        &["draft", "add", "n", p(&f), "--as", "a/../../b"],
        &["a/../../b"],
    );
}

#[test]
fn special_files_are_refused_and_nothing_is_stored() {
    let s = TestStore::new();
    base(&s);
    let src = s.tree("src", &[("ok.txt", "a file that is fine")]);
    let fifo = src.join("pipe");
    let c = std::ffi::CString::new(p(&fifo)).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo");
    s.ok(&["draft", "new", "m"]);
    let err = refused(&s, &["draft", "add", "m", p(&src)], &[p(&fifo)]);
    assert!(err.contains("FIFO") || err.contains("fifo"), "{err}");
    refused(&s, &["log", "m", p(&src), "--type", "dataset"], &[p(&fifo)]);
}

/// Two inputs of one `log`, `draft add`, `upsert` or `finish` that give the same path are
/// refused, naming the path and both inputs, and nothing is stored; `--overwrite` keeps the one
/// named last. Directories that several inputs fill are merged.
#[test]
fn colliding_inputs_are_refused_unless_overwrite_is_given() {
    let s = TestStore::new();
    let w1 = s.tree("w1", &[("same.csv", "one\n"), ("sub/a.txt", "a")]);
    let w2 = s.tree("w2", &[("same.csv", "two\n"), ("sub/b.txt", "b")]);
    let (a, b) = (p(&w1), p(&w2));
    let why = format!(
        "error: same.csv: two inputs give this path, {a}/same.csv and {b}/same.csv; give one \
         of them another name, or add --overwrite to keep the one named last"
    );
    s.ok(&["log", "other", p(&s.tree("x", &[("x", "x")]))]);
    s.ok(&["draft", "new", "coll"]);
    for args in [
        vec!["log", "coll", a, b],
        vec!["draft", "add", "coll", a, b],
        vec!["upsert", "coll", a, b, "--distributed-id", "r"],
        vec!["finish", "coll", a, b, "--distributed-id", "r"],
    ] {
        let err = refused(&s, &args, &[]);
        assert_eq!(err.trim(), why, "{args:?}");
        assert!(s.blob_files().len() == 1, "{args:?} stored content");
    }
    // The same file named twice, and a file beside a reference to another with its name.
    let file = w1.join("same.csv");
    let f = p(&file);
    refused(
        &s,
        &["log", "coll", f, f],
        &["same.csv: two inputs give this path"],
    );
    let uri = format!("file://{b}/same.csv");
    refused(
        &s,
        &["log", "coll", f, "--reference", &uri],
        &[&format!(
            "same.csv: two inputs give this path, {uri} and {f}"
        )],
    );

    // Asked to, the one named last wins; the directories both fill are merged.
    assert_eq!(
        s.ok(&["log", "coll", a, b, "--overwrite"]).trim(),
        "coll:v0"
    );
    assert_eq!(cat(&s, "coll", "same.csv"), "two\n");
    assert_eq!(ls(&s, "coll"), ["same.csv", "sub/a.txt", "sub/b.txt"]);
    s.ok(&["draft", "add", "coll", b, a, "--overwrite"]);
    assert_eq!(
        s.ok(&["draft", "commit", "coll"]).trim(),
        "coll:v1",
        "w1's same.csv, named last, replaced w2's"
    );
    assert_eq!(cat(&s, "coll", "same.csv"), "one\n");
}
