//! The query and maintenance commands, run through the real binary on real files: text and
//! `--json` output, `get` fidelity, `verify` damage reports, `gc`, and deduplication.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use serde_json::json;

/// v0: a.txt, sub/b.txt, run.sh (executable), link -> a.txt. v1: a.txt changed, c.txt added,
/// sub/b.txt removed.
fn two_versions(s: &TestStore) {
    let d0 = s.tree(
        "v0",
        &[
            ("a.txt", "alpha\n"),
            ("sub/b.txt", "bravo\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
        ],
    );
    set_mode(&d0.join("run.sh"), 0o755);
    std::os::unix::fs::symlink("a.txt", d0.join("link")).unwrap();
    assert_eq!(log(s, "mnist", &d0), "mnist:v0");
    let d1 = s.tree(
        "v1",
        &[
            ("a.txt", "alpha two\n"),
            ("c.txt", "charlie\n"),
            ("run.sh", "#!/bin/sh\necho hi\n"),
        ],
    );
    set_mode(&d1.join("run.sh"), 0o755);
    std::os::unix::fs::symlink("a.txt", d1.join("link")).unwrap();
    assert_eq!(log(s, "mnist", &d1), "mnist:v1");
}

#[test]
fn log_prints_the_version_and_json_describes_it() {
    let s = TestStore::new();
    let d = s.tree("data", &[("x.txt", "hello\n"), ("y/z.txt", "world!\n")]);
    let out = s.ok(&["log", "ds", p(&d), "--type", "dataset"]);
    assert_eq!(out, "ds:v0\n");
    let d2 = s.tree("data2", &[("x.txt", "hello again\n")]);
    let v = s.json(&[
        "log",
        "ds",
        p(&d2),
        "--type",
        "dataset",
        "--alias",
        "best",
        "--description",
        "second",
        "--metadata",
        r#"{"epochs": 3}"#,
    ]);
    assert_eq!(v["ref"], "ds:v1");
    assert_eq!(v["artifact"], "ds");
    assert_eq!(v["version"], "v1");
    assert_eq!(v["type"], "dataset");
    assert_eq!(v["files"], 1);
    assert_eq!(v["size"], "hello again\n".len());
    assert_eq!(v["unchanged"], false);
    assert_eq!(v["description"], "second");
    assert_eq!(v["metadata"], json!({"epochs": 3}));
    let aliases: Vec<&str> = v["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        aliases.contains(&"latest") && aliases.contains(&"best"),
        "{v}"
    );
    assert_eq!(v["digest"].as_str().unwrap().len(), 64);
}

/// An unchanged `log` (or commit) sets its aliases on the version it found but never its
/// description or metadata, and says which of those it did not apply.
#[test]
fn an_unchanged_commit_says_which_description_and_metadata_it_did_not_apply() {
    let s = TestStore::new();
    let d = s.tree("data", &[("x.txt", "hello\n")]);
    s.ok(&[
        "log",
        "ds",
        p(&d),
        "--description",
        "first",
        "--metadata",
        r#"{"n": 1}"#,
    ]);
    let before = s.fingerprint();
    let out = s.ok(&[
        "log",
        "ds",
        p(&d),
        "--description",
        "second",
        "--metadata",
        "{}",
    ]);
    assert_eq!(
        out,
        "ds:v0 (unchanged; --description and --metadata were not applied: ds:v0 keeps its own)\n"
    );
    assert_unchanged(&before, &s.fingerprint(), "an unchanged log");
    let v = s.json(&[
        "log",
        "ds",
        p(&d),
        "--metadata",
        r#"{"n": 2}"#,
        "--alias",
        "best",
    ]);
    assert_eq!(v["unchanged"], true);
    assert_eq!(v["not_applied"], json!(["metadata"]));
    assert_eq!(v["metadata"], json!({"n": 1}), "the version's own");
    assert_eq!(v["description"], "first");
    assert_eq!(
        v["aliases"],
        json!(["latest", "best"]),
        "aliases are applied"
    );
    // Nothing given, nothing to report; a new version applies both.
    assert_eq!(s.ok(&["log", "ds", p(&d)]), "ds:v0 (unchanged)\n");
    assert_eq!(s.json(&["log", "ds", p(&d)])["not_applied"], json!([]));
    // The same for a draft commit equal to its base.
    s.ok(&["draft", "new", "ds"]);
    assert_eq!(
        s.ok(&["draft", "commit", "ds", "--description", "again"]),
        "ds:v0 (unchanged; --description was not applied: ds:v0 keeps its own)\n"
    );
    let d2 = s.tree("data2", &[("x.txt", "changed\n")]);
    let v = s.json(&["log", "ds", p(&d2), "--description", "third"]);
    assert_eq!(
        (v["unchanged"].clone(), v["not_applied"].clone()),
        (json!(false), json!([]))
    );
    assert_eq!(v["description"], "third");
}

#[test]
fn list_artifacts_and_versions() {
    let s = TestStore::new();
    two_versions(&s);
    let m = s.tree("model", &[("weights.bin", "0123456789")]);
    s.ok(&["log", "net", p(&m), "--type", "model"]);

    // A header, columns two spaces apart, nothing trailing.
    assert_eq!(
        s.ok(&["list"]),
        "ARTIFACT  TYPE     VERSIONS  LATEST\n\
         mnist     dataset  2         v1\n\
         net       model    1         v0\n"
    );

    let v = s.json(&["list"]);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["artifact"], "mnist");
    assert_eq!(arr[0]["type"], "dataset");
    assert_eq!(arr[0]["versions"], 2);
    assert_eq!(arr[0]["latest"], "mnist:v1");
    assert_eq!(arr[1]["artifact"], "net");
    assert_eq!(arr[1]["type"], "model");

    let text = s.ok(&["list", "mnist"]);
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], ["VERSION", "CREATED", "FILES", "SIZE", "ALIASES"]);
    assert_eq!(
        (lines[1][0], lines[1][2], lines[1].len()),
        ("v0", "4", 5),
        "{text}"
    );
    assert_eq!(
        (lines[2][0], lines[2][2], lines[2][5]),
        ("v1", "4", "latest"),
        "{text}"
    );
    assert!(
        !text.contains('\t') && !text.lines().any(|l| l.ends_with(' ')),
        "{text:?}"
    );

    let v = s.json(&["list", "mnist"]);
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["version"], "v0");
    assert_eq!(arr[0]["aliases"], json!([]));
    assert_eq!(arr[1]["version"], "v1");
    assert_eq!(arr[1]["aliases"], json!(["latest"]));
    assert_eq!(arr[1]["base"], json!(null));
}

#[test]
fn show_text_and_json() {
    let s = TestStore::new();
    two_versions(&s);
    let text = s.ok(&["show", "mnist:v0"]);
    assert!(text.starts_with("mnist:v0\n"), "{text}");
    assert!(text.contains("type: dataset"), "{text}");
    assert!(text.contains("files: 4"), "{text}");
    let size = "alpha\n".len() + "bravo\n".len() + "#!/bin/sh\necho hi\n".len();
    assert!(text.contains(&format!("size: {size} bytes")), "{text}");
    let v0 = s.json(&["show", "mnist:v0"]);
    assert_eq!(v0["ref"], "mnist:v0");
    assert_eq!(v0["files"], 4);
    assert_eq!(v0["size"], size);
    assert!(
        text.contains(&format!("digest: {}", v0["digest"].as_str().unwrap())),
        "{text}"
    );
    // A bare name means NAME:latest.
    let latest = s.json(&["show", "mnist"]);
    assert_eq!(latest["ref"], "mnist:v1");
    assert_eq!(s.json(&["show", "mnist:latest"])["ref"], "mnist:v1");
    assert_ne!(latest["digest"], v0["digest"]);
}

#[test]
fn ls_lists_every_file_under_a_prefix() {
    let s = TestStore::new();
    let d = s.tree(
        "data",
        &[
            ("b.txt", "b"),
            ("a/x.txt", "x"),
            ("a/deep/y.txt", "y"),
            ("ab.txt", "ab"),
        ],
    );
    std::os::unix::fs::symlink("b.txt", d.join("lnk")).unwrap();
    log(&s, "m", &d);
    assert_eq!(
        ls(&s, "m:v0"),
        ["a/deep/y.txt", "a/x.txt", "ab.txt", "b.txt", "lnk"]
    );
    assert_eq!(s.ok(&["ls", "m", "a"]), "a/deep/y.txt\na/x.txt\n");
    assert_eq!(s.ok(&["ls", "m", "a/"]), "a/deep/y.txt\na/x.txt\n");
    assert_eq!(s.ok(&["ls", "m", "a/deep/y.txt"]), "a/deep/y.txt\n");
    assert_eq!(
        s.json(&["ls", "m", "a"]),
        json!(["a/deep/y.txt", "a/x.txt"])
    );
    assert_eq!(s.json(&["ls", "m"]).as_array().unwrap().len(), 5);
    let err = s.fail(&["ls", "m", "nope"]);
    assert!(err.contains("nope") && err.contains("m:v0"), "{err}");
}

#[test]
fn cat_writes_the_exact_bytes() {
    let s = TestStore::new();
    let d = s.path("data");
    fs::create_dir_all(&d).unwrap();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    fs::write(d.join("bin.dat"), &bytes).unwrap();
    fs::create_dir_all(d.join("dir")).unwrap();
    fs::write(d.join("dir/t.txt"), "text\n").unwrap();
    log(&s, "m", &d);
    let out = s.run(&["cat", "m", "bin.dat"]);
    assert_success(&out, &["cat"]);
    assert_eq!(out.stdout, bytes);
    assert_eq!(cat(&s, "m:v0", "dir/t.txt"), "text\n");
    let err = s.fail(&["cat", "m", "missing.txt"]);
    assert!(err.contains("missing.txt"), "{err}");
    let err = s.fail(&["cat", "m", "dir"]);
    assert!(err.contains("dir") && err.contains("directory"), "{err}");
}

#[test]
fn diff_reports_added_modified_removed() {
    let s = TestStore::new();
    two_versions(&s);
    let text = s.ok(&["diff", "mnist:v0", "mnist:v1"]);
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["A c.txt", "D sub/b.txt", "M a.txt"], "{text}");
    let v = s.json(&["diff", "mnist:v0", "mnist:v1"]);
    assert_eq!(
        v,
        json!({"added": ["c.txt"], "modified": ["a.txt"], "removed": ["sub/b.txt"]})
    );
    // Backwards, and a version against itself.
    let v = s.json(&["diff", "mnist:v1", "mnist:v0"]);
    assert_eq!(
        v,
        json!({"added": ["sub/b.txt"], "modified": ["a.txt"], "removed": ["c.txt"]})
    );
    assert_eq!(s.ok(&["diff", "mnist:v1", "mnist"]), "");
}

#[test]
fn diff_sees_the_executable_bit_but_not_mtimes() {
    let s = TestStore::new();
    let d = s.tree("d", &[("tool", "binary"), ("data", "values")]);
    log(&s, "m", &d);
    set_mode(&d.join("tool"), 0o755);
    set_mtime(&d.join("data"), time_at(1_000_000, 0));
    assert_eq!(log(&s, "m", &d), "m:v1");
    assert_eq!(s.ok(&["diff", "m:v0", "m:v1"]), "M tool\n");
}

#[test]
fn get_materializes_files_modes_mtimes_and_symlinks() {
    let s = TestStore::new();
    let d = s.tree(
        "src",
        &[
            ("plain.txt", "plain\n"),
            ("bin/tool.sh", "#!/bin/sh\n"),
            ("deep/er/x.txt", "x"),
        ],
    );
    set_mode(&d.join("bin/tool.sh"), 0o755);
    set_mode(&d.join("plain.txt"), 0o640);
    fs::create_dir_all(d.join("empty")).unwrap();
    std::os::unix::fs::symlink("../plain.txt", d.join("bin/link")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", d.join("dangling")).unwrap();
    let t_plain = time_at(1_500_000_000, 123_456_789);
    let t_tool = time_at(1_600_000_000, 987_654_321);
    set_mtime(&d.join("plain.txt"), t_plain);
    set_mtime(&d.join("bin/tool.sh"), t_tool);
    log(&s, "m", &d);

    let dest = s.path("out");
    let out = s.ok(&["get", "m:v0", p(&dest)]);
    assert!(out.starts_with("m:v0 -> "), "{out}");
    assert!(out.contains("(5 files)"), "{out}");

    assert_eq!(
        fs::read_to_string(dest.join("plain.txt")).unwrap(),
        "plain\n"
    );
    assert_eq!(fs::read_to_string(dest.join("deep/er/x.txt")).unwrap(), "x");
    assert_eq!(mode_of(&dest.join("bin/tool.sh")), 0o755);
    assert_eq!(mode_of(&dest.join("plain.txt")), 0o640);
    assert_eq!(mtime_of(&dest.join("plain.txt")), t_plain);
    assert_eq!(mtime_of(&dest.join("bin/tool.sh")), t_tool);
    let link = dest.join("bin/link");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(&link).unwrap().to_str().unwrap(),
        "../plain.txt"
    );
    assert_eq!(fs::read_to_string(&link).unwrap(), "plain\n");
    assert_eq!(
        fs::read_link(dest.join("dangling"))
            .unwrap()
            .to_str()
            .unwrap(),
        "does/not/exist"
    );
    assert!(
        dest.join("empty").is_dir(),
        "empty directories are part of a version"
    );
    // Materialized files are the user's own, writable copies, not the read-only blobs.
    fs::write(dest.join("plain.txt"), "changed").unwrap();
    assert_eq!(cat(&s, "m", "plain.txt"), "plain\n");

    // --json, into an existing directory whose files are replaced (--merge: it holds files).
    let v = s.json(&["get", "m", p(&dest), "--merge"]);
    assert_eq!(v["ref"], "m:v0");
    assert_eq!(v["files"], 5);
    assert_eq!(v["dest"], p(&dest));
    assert_eq!(
        (v["extra_kept"].clone(), v["extra_removed"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        fs::read_to_string(dest.join("plain.txt")).unwrap(),
        "plain\n"
    );
}

/// `get` into a directory that holds files is refused, changing nothing, unless `--delete`
/// (the destination becomes exactly the version) or `--merge` (files the version does not
/// have are kept, and counted).
#[test]
fn get_into_a_non_empty_directory_needs_delete_or_merge() {
    let s = TestStore::new();
    two_versions(&s);
    let dest = s.path("checkout");
    s.ok(&["get", "mnist:v0", p(&dest)]);
    // A user's own files beside the checkout, and a directory where v1 has a file.
    write_tree(&dest, &[("notes.txt", "mine"), ("results/run1.csv", "r")]);
    fs::remove_file(dest.join("a.txt")).unwrap();
    write_tree(&dest, &[("a.txt/inner", "in the way")]);
    let snapshot = || {
        let mut out = Vec::new();
        for e in walk(&dest) {
            let content = fs::read(dest.join(&e)).unwrap_or_default();
            out.push((e, content));
        }
        out
    };
    let before = snapshot();
    let err = s.fail(&["get", "mnist:v1", p(&dest)]);
    assert_eq!(
        err.trim(),
        format!(
            "error: get into {}: the directory is not empty (a.txt, link, notes.txt, …); add \
             --delete to make it exactly mnist:v1, removing what the version does not have, or \
             --merge to write the version over it and keep the rest",
            p(&dest)
        )
    );
    assert_eq!(snapshot(), before, "a refused get changed the destination");
    // --merge will not replace a directory with a file: refused before anything is written.
    let err = s.fail(&["get", "mnist:v1", p(&dest), "--merge"]);
    assert!(
        err.contains("a.txt, where the version has a file, is a directory"),
        "{err}"
    );
    assert_eq!(snapshot(), before);
    fs::remove_dir_all(dest.join("a.txt")).unwrap();
    assert_eq!(
        s.ok(&["get", "mnist:v1", p(&dest), "--merge"]).trim(),
        format!(
            "mnist:v1 -> {} (4 files; kept 3 files the version does not have)",
            p(&dest)
        )
    );
    assert_eq!(fs::read_to_string(dest.join("notes.txt")).unwrap(), "mine");
    assert!(dest.join("sub/b.txt").exists(), "v0's file, kept");
    // --delete: exactly the version, whatever was there.
    fs::remove_file(dest.join("c.txt")).unwrap();
    write_tree(&dest, &[("c.txt/x", "a directory where v1 has a file")]);
    let v = s.json(&["get", "mnist:v1", p(&dest), "--delete"]);
    assert_eq!(
        (
            v["files"].clone(),
            v["extra_removed"].clone(),
            v["extra_kept"].clone()
        ),
        (json!(4), json!(4), json!(0)),
        "{v}"
    );
    assert_eq!(walk(&dest), ["a.txt", "c.txt", "link", "run.sh"]);
    assert_eq!(fs::read_to_string(dest.join("c.txt")).unwrap(), "charlie\n");
    assert_eq!(
        s.ok(&["get", "mnist:v1", p(&dest), "--delete"]).trim(),
        format!("mnist:v1 -> {} (4 files)", p(&dest))
    );
    let out = s.run(&["get", "mnist:v1", p(&dest), "--delete", "--merge"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the two flags exclude each other"
    );
}

/// Every file and symlink under `dir`, relative, sorted; directories only when empty.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    fn go(base: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        let mut any = false;
        for e in fs::read_dir(dir).unwrap() {
            any = true;
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                go(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
        if !any && dir != base {
            out.push(format!(
                "{}/",
                dir.strip_prefix(base).unwrap().to_string_lossy()
            ));
        }
    }
    go(dir, dir, &mut out);
    out.sort();
    out
}

/// `alias rm` takes the form `alias set` takes: the version, then the alias (refused, naming
/// where the alias is, when it names another version); a bare NAME still removes it wherever
/// it is.
#[test]
fn alias_rm_takes_the_version_as_alias_set_does() {
    let s = TestStore::new();
    two_versions(&s);
    s.ok(&["alias", "set", "mnist:v0", "best"]);
    let err = refused(&s, &["alias", "rm", "mnist:v1", "best"], &[]);
    assert_eq!(
        err.trim(),
        "error: alias rm mnist:v1 best: alias best names mnist:v0, not mnist:v1; nothing was \
         removed"
    );
    assert_eq!(
        s.ok(&["alias", "rm", "mnist:v0", "best"]),
        "removed alias mnist:best from mnist:v0\n"
    );
    s.ok(&["alias", "set", "mnist:v1", "prod"]);
    assert_eq!(
        s.json(&["alias", "rm", "mnist:prod", "prod"]),
        json!({"artifact": "mnist", "alias": "prod", "ref": "mnist:v1"})
    );
}

/// Empty listings say so; counts are singular for one.
#[test]
fn listings_say_when_they_are_empty_and_counts_agree_with_their_nouns() {
    let s = TestStore::new();
    s.init();
    let root = p(&s.root);
    assert_eq!(
        s.ok(&["list"]),
        format!("no artifacts in store {root} yet\n")
    );
    assert_eq!(s.ok(&["draft", "list"]), "no drafts\n");
    let d = s.tree("d", &[("a.txt", "a")]);
    s.ok(&["log", "m", p(&d)]);
    s.ok(&["draft", "new", "m"]);
    assert_eq!(
        s.ok(&["draft", "add", "m", p(&d.join("a.txt")), "--as", "b.txt"]),
        "added 1 file to draft m\n"
    );
    assert_eq!(
        s.ok(&["draft", "list"]),
        "DRAFT  BASE  CHANGES\nm      m:v0  1\n"
    );
    assert_eq!(s.ok(&["verify"]), "checked 1 blob: 0 damaged\n");
    s.ok(&["draft", "discard", "m"]);
    s.ok(&["delete", "m:v0"]);
    assert_eq!(
        s.ok(&["list", "m"]),
        "m has no versions left: every one was deleted\n"
    );
    assert_eq!(
        s.ok(&["gc"]),
        "removed 1 blob (1 byte), 1 tree node and 0 staging files\n"
    );
}

/// A mistyped command gets the closest one as a tip, swapped letters included.
#[test]
fn mistyped_commands_get_a_suggestion() {
    let s = TestStore::new();
    for (args, tip) in [
        (vec!["lgo"], "'log'"),
        (vec!["draft", "comit"], "'commit'"),
        (vec!["moutn"], "'mount'"),
    ] {
        let out = s.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        let tip_line = err
            .lines()
            .find(|l| l.contains("tip: "))
            .unwrap_or_default();
        assert!(tip_line.contains(tip), "{args:?}: {err}");
    }
    assert!(
        !stderr(&s.run(&["xyzzy"])).contains("tip:"),
        "no tip for what is far from any"
    );
}

#[test]
fn alias_set_and_rm_with_json() {
    let s = TestStore::new();
    two_versions(&s);
    assert_eq!(
        s.ok(&["alias", "set", "mnist:v0", "best"]),
        "mnist:best -> mnist:v0\n"
    );
    assert_eq!(s.json(&["show", "mnist:best"])["ref"], "mnist:v0");
    let v = s.json(&["alias", "set", "mnist:v1", "prod"]);
    assert_eq!(
        v,
        json!({"artifact": "mnist", "alias": "prod", "ref": "mnist:v1"})
    );
    assert_eq!(
        s.ok(&["alias", "rm", "mnist", "best"]),
        "removed alias mnist:best from mnist:v0\n"
    );
    let v = s.json(&["alias", "rm", "mnist", "prod"]);
    assert_eq!(
        v,
        json!({"artifact": "mnist", "alias": "prod", "ref": "mnist:v1"})
    );
    assert_eq!(s.json(&["show", "mnist:v0"])["aliases"], json!([]));
    assert_eq!(s.json(&["show", "mnist:v1"])["aliases"], json!(["latest"]));
}

#[test]
fn delete_with_text_and_json() {
    let s = TestStore::new();
    two_versions(&s);
    assert_eq!(s.ok(&["delete", "mnist:v0"]), "deleted mnist:v0\n");
    assert_eq!(
        s.json(&["delete", "mnist:v1"]),
        json!({"deleted": "mnist:v1"})
    );
    assert_eq!(s.json(&["list", "mnist"]), json!([]));
    let err = s.fail(&["show", "mnist"]);
    assert!(err.contains("mnist"), "{err}");
}

#[test]
fn verify_passes_on_a_healthy_store() {
    let s = TestStore::new();
    two_versions(&s);
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
    // Distinct contents: alpha, bravo, run.sh, alpha two, charlie.
    assert_eq!(stdout(&out), "checked 5 blobs: 0 damaged\n");
    let v = s.json(&["verify"]);
    assert_eq!(
        v,
        json!({"checked": 5, "damaged": [], "references_checked": 0, "drifted": []})
    );
    let v = s.json(&["verify", "mnist:v0"]);
    assert_eq!(
        v,
        json!({"checked": 3, "damaged": [], "references_checked": 0, "drifted": []})
    );
}

#[test]
fn verify_names_a_corrupted_blob_and_every_version_containing_it() {
    let s = TestStore::new();
    let shared = "shared content\n";
    let d0 = s.tree("d0", &[("data/shared.txt", shared), ("only0.txt", "zero")]);
    log(&s, "mnist", &d0);
    let d1 = s.tree("d1", &[("data/shared.txt", shared), ("only1.txt", "one")]);
    log(&s, "mnist", &d1);
    let d2 = s.tree("d2", &[("copy.txt", shared)]);
    log(&s, "other", &d2);
    let d3 = s.tree("d3", &[("unrelated.txt", "unrelated")]);
    log(&s, "third", &d3);

    let blob = s.blob_path_of(shared.as_bytes());
    assert!(blob.exists(), "blob {} should exist", blob.display());
    assert_eq!(mode_of(&blob) & 0o222, 0, "blobs are read-only on disk");
    set_mode(&blob, 0o644);
    fs::write(&blob, "tampered!\n").unwrap();
    let hex = sha256_hex(shared.as_bytes());

    let out = s.run(&["verify"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "verify must exit 3 on damage: {out:?}"
    );
    let err = stderr(&out);
    assert!(err.contains(&hex), "the damaged blob must be named: {err}");
    assert!(err.contains("corrupt"), "{err}");
    for r in ["mnist:v0", "mnist:v1", "other:v0"] {
        assert!(
            err.contains(r),
            "{r} contains the blob and must be named: {err}"
        );
    }
    assert!(
        err.contains("data/shared.txt") && err.contains("copy.txt"),
        "{err}"
    );
    assert!(
        !err.contains("third"),
        "third does not contain the blob: {err}"
    );
    assert!(stdout(&out).contains("1 damaged"), "{}", stdout(&out));

    let out = s.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let damaged = v["damaged"].as_array().unwrap();
    assert_eq!(damaged.len(), 1, "{v}");
    assert_eq!(damaged[0]["blob"], hex);
    assert_eq!(damaged[0]["problem"], "corrupted");
    assert_eq!(damaged[0]["actual"], sha256_hex(b"tampered!\n"));
    let mut refs: Vec<String> = damaged[0]["used_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            format!(
                "{} {}",
                u["ref"].as_str().unwrap(),
                u["path"].as_str().unwrap()
            )
        })
        .collect();
    refs.sort();
    assert_eq!(
        refs,
        [
            "mnist:v0 data/shared.txt",
            "mnist:v1 data/shared.txt",
            "other:v0 copy.txt"
        ]
    );

    // Verifying only a version that does not contain the blob finds nothing wrong.
    let out = s.run(&["verify", "third"]);
    assert_success(&out, &["verify", "third"]);
    // Verifying one that does fails.
    let out = s.run(&["verify", "other:v0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}

#[test]
fn verify_names_a_missing_blob_and_the_drafts_using_it() {
    let s = TestStore::new();
    let d0 = s.tree("d0", &[("a.txt", "precious\n"), ("b.txt", "fine\n")]);
    log(&s, "m", &d0);
    let d1 = s.tree(
        "d1",
        &[("deep/er/kept.txt", "precious\n"), ("b.txt", "fine\n")],
    );
    log(&s, "m", &d1);
    let d2 = s.tree("d2", &[("b.txt", "fine\n")]);
    log(&s, "m", &d2);
    let extra = s.tree("extra", &[("p.txt", "precious\n")]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&extra), "--as", "again"]);
    let blob = s.blob_path_of(b"precious\n");
    fs::remove_file(&blob).unwrap();
    let hex = sha256_hex(b"precious\n");

    let out = s.run(&["verify"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains(&hex) && err.contains("missing"), "{err}");
    assert!(err.contains("m:v0 (a.txt)"), "{err}");
    assert!(err.contains("m:v1 (deep/er/kept.txt)"), "{err}");
    assert!(
        !err.contains("m:v2"),
        "m:v2 does not contain the blob: {err}"
    );
    assert!(
        err.contains("draft m"),
        "the draft referencing the blob must be named: {err}"
    );

    let out = s.run(&["--json", "verify", "m:v0"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["checked"], 2);
    assert_eq!(v["damaged"][0]["blob"], hex);
    assert_eq!(v["damaged"][0]["problem"], "missing");
    assert_eq!(v["damaged"][0]["actual"], json!(null));
    let out = s.run(&["verify", "m:v2"]);
    assert_success(&out, &["verify", "m:v2"]);
}

#[test]
fn gc_removes_unreferenced_blobs_only() {
    let s = TestStore::new();
    let d0 = s.tree(
        "d0",
        &[("keep.txt", "keep\n"), ("gone.txt", "only in v0\n")],
    );
    log(&s, "m", &d0);
    let d1 = s.tree("d1", &[("keep.txt", "keep\n"), ("new.txt", "only in v1\n")]);
    log(&s, "m", &d1);
    assert_eq!(s.blob_files().len(), 3);

    // Nothing unreferenced yet: gc removes nothing.
    let v = s.json(&["gc"]);
    assert_eq!(v["blobs_removed"], 0, "{v}");
    assert_eq!(s.blob_files().len(), 3);

    s.ok(&["delete", "m:v0"]);
    let text = s.ok(&["gc"]);
    assert!(text.starts_with("removed 1 blob ("), "{text}");
    assert!(!s.blob_path_of(b"only in v0\n").exists());
    assert!(s.blob_path_of(b"keep\n").exists());
    assert!(s.blob_path_of(b"only in v1\n").exists());
    assert_eq!(s.blob_files().len(), 2);
    assert_eq!(cat(&s, "m:v1", "keep.txt"), "keep\n");
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);

    let v = s.json(&["gc"]);
    assert_eq!(v["blobs_removed"], 0);
    assert_eq!(v["bytes_freed"], 0);
}

#[test]
fn gc_keeps_blobs_referenced_only_by_drafts() {
    let s = TestStore::new();
    let d0 = s.tree("d0", &[("base.txt", "base content\n")]);
    log(&s, "m", &d0);

    // A blob only a draft references.
    let add = s.tree("add", &[("drafted.txt", "only in a draft\n")]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&add)]);
    // A distributed draft too.
    let up = s.tree("up", &[("shard.txt", "only in an upsert\n")]);
    s.ok(&[
        "upsert",
        "m",
        p(&up),
        "--type",
        "dataset",
        "--distributed-id",
        "run1",
    ]);

    // A version that only a draft's base still uses: other:v0 -> draft based on it -> delete.
    let o = s.tree("o", &[("base-only.txt", "only in a deleted base\n")]);
    log(&s, "other", &o);
    s.ok(&["draft", "new", "other", "--from", "other:v0"]);
    let o2 = s.tree("o2", &[("more.txt", "more\n")]);
    s.ok(&["draft", "add", "other", p(&o2)]);
    s.ok(&["delete", "other:v0"]);

    let before = s.blob_files();
    let v = s.json(&["gc"]);
    assert_eq!(v["blobs_removed"], 0, "gc removed referenced blobs: {v}");
    assert_eq!(s.blob_files(), before);

    let c = s.json(&["draft", "commit", "m"]);
    assert_eq!(c["ref"], "m:v1");
    assert_eq!(cat(&s, "m:v1", "drafted.txt"), "only in a draft\n");
    assert_eq!(cat(&s, "m:v1", "base.txt"), "base content\n");
    let c = s.json(&[
        "finish",
        "m",
        "--type",
        "dataset",
        "--distributed-id",
        "run1",
    ]);
    assert_eq!(c["ref"], "m:v2");
    assert_eq!(cat(&s, "m:v2", "shard.txt"), "only in an upsert\n");
    let c = s.json(&["draft", "commit", "other"]);
    assert_eq!(c["ref"], "other:v1");
    assert_eq!(
        cat(&s, "other:v1", "base-only.txt"),
        "only in a deleted base\n"
    );
    assert_eq!(cat(&s, "other:v1", "more.txt"), "more\n");
    let out = s.run(&["verify"]);
    assert_success(&out, &["verify"]);
}

#[test]
fn gc_after_discarding_a_draft_reclaims_its_blobs() {
    let s = TestStore::new();
    let d0 = s.tree("d0", &[("a.txt", "a\n")]);
    log(&s, "m", &d0);
    let add = s.tree("add", &[("tmp.txt", "discard me\n")]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "add", "m", p(&add)]);
    assert!(s.blob_path_of(b"discard me\n").exists());
    s.ok(&["draft", "discard", "m"]);
    let v = s.json(&["gc"]);
    assert_eq!(v["blobs_removed"], 1, "{v}");
    assert!(!s.blob_path_of(b"discard me\n").exists());
    assert!(s.blob_path_of(b"a\n").exists());
}

#[test]
fn identical_content_is_stored_once() {
    let s = TestStore::new();
    let big: String = "0123456789abcdef".repeat(100_000); // 1.6 MB: the streaming path
    let d0 = s.tree(
        "d0",
        &[
            ("a.txt", "same\n"),
            ("b/copy.txt", "same\n"),
            ("big.bin", &big),
        ],
    );
    log(&s, "one", &d0);
    assert_eq!(s.blob_files().len(), 2, "{:?}", s.blob_files());
    // Same content again in a new version (plus one new file) and in another artifact.
    let d1 = s.tree(
        "d1",
        &[
            ("a.txt", "same\n"),
            ("big-again.bin", &big),
            ("new.txt", "new\n"),
        ],
    );
    log(&s, "one", &d1);
    assert_eq!(s.blob_files().len(), 3, "{:?}", s.blob_files());
    let d2 = s.tree("d2", &[("x/y/z.txt", "same\n"), ("big.bin", &big)]);
    log(&s, "two", &d2);
    s.ok(&["draft", "new", "two"]);
    s.ok(&["draft", "add", "two", p(&d1)]);
    s.ok(&["draft", "commit", "two"]);
    assert_eq!(s.blob_files().len(), 3, "{:?}", s.blob_files());
    // And every blob is named by the SHA-256 of its content, under a fan-out directory.
    for f in s.blob_files() {
        let (fan, name) = f.split_once('/').expect("blobs/XX/HEX");
        assert_eq!(fan, &name[..2]);
        let content = fs::read(s.root.join("blobs").join(&f)).unwrap();
        assert_eq!(sha256_hex(&content), name);
        let mode = fs::metadata(s.root.join("blobs").join(&f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o222, 0, "blob {f} is writable");
    }
    assert!(
        fs::read_dir(s.root.join("staging"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn draft_and_distributed_commands_print_json() {
    let s = TestStore::new();
    let d0 = s.tree("d0", &[("a.txt", "a\n"), ("b.txt", "b\n")]);
    log(&s, "m", &d0);
    assert_eq!(
        s.json(&["draft", "new", "m"]),
        json!({"draft": "m", "base": "m:v0"})
    );
    let add = s.tree("add", &[("c.txt", "c\n")]);
    assert_eq!(
        s.json(&["draft", "add", "m", p(&add)]),
        json!({"draft": "m", "files": 1})
    );
    assert_eq!(
        s.json(&["draft", "rm", "m", "b.txt"]),
        json!({"draft": "m", "removed": ["b.txt"]})
    );
    let st = s.json(&["draft", "status", "m"]);
    assert_eq!(st["added"], json!(["c.txt"]));
    assert_eq!(st["removed"], json!(["b.txt"]));
    assert_eq!(st["modified"], json!([]));
    assert_eq!(st["base"], "m:v0");
    assert_eq!(st["stale"], false);
    let list = s.json(&["draft", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["draft"], "m");
    assert_eq!(list[0]["base"], "m:v0");
    assert_eq!(list[0]["distributed_id"], json!(null));
    let c = s.json(&["draft", "commit", "m"]);
    assert_eq!(c["ref"], "m:v1");
    assert_eq!(c["base"], "m:v0");
    assert_eq!(c["unchanged"], false);

    assert_eq!(
        s.json(&[
            "upsert",
            "m",
            p(&add),
            "--type",
            "dataset",
            "--distributed-id",
            "r"
        ]),
        json!({"draft": "m@r", "files": 1, "replaced": []})
    );
    let list = s.json(&["draft", "list"]);
    assert_eq!(list[0]["draft"], "m@r");
    assert_eq!(list[0]["distributed_id"], "r");
    assert_eq!(list[0]["base"], json!(null));
    let f = s.json(&[
        "finish",
        "m",
        p(&d0),
        "--type",
        "dataset",
        "--distributed-id",
        "r",
    ]);
    assert_eq!(f["ref"], "m:v2");
    assert_eq!(f["files"], 3);
    s.ok(&["draft", "new", "m"]);
    assert_eq!(
        s.json(&["draft", "discard", "m"]),
        json!({"discarded": "m"})
    );
    assert_eq!(s.json(&["draft", "list"]), json!([]));
}

#[test]
fn store_location_falls_back_to_the_environment() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a")]);
    let env_store = s.path("env-store");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["log", "m", p(&d), "--type", "dataset"])
        .env("ARTIFACTFS_STORE", &env_store)
        .env("HOME", s.path("home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_command(cmd);
    assert_success(&out, &["log (ARTIFACTFS_STORE)"]);
    assert!(env_store.join("catalog.db").exists());
    assert!(env_store.join("blobs").is_dir() && env_store.join("staging").is_dir());

    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["log", "m", p(&d), "--type", "dataset"])
        .env_remove("ARTIFACTFS_STORE")
        .env_remove("XDG_DATA_HOME")
        .env("HOME", s.path("home"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = run_command(cmd);
    assert_success(&out, &["log (HOME)"]);
    assert!(s.path("home/.local/share/artifactfs/catalog.db").exists());
}

#[test]
fn file_names_with_spaces_and_unicode() {
    let s = TestStore::new();
    let d = s.tree(
        "d",
        &[
            ("my file.txt", "spaced"),
            ("donn\u{e9}es/\u{65e5}\u{672c}.csv", "unicode"),
        ],
    );
    log(&s, "m", &d);
    let mut names = ls(&s, "m");
    names.sort();
    assert_eq!(names, ["donn\u{e9}es/\u{65e5}\u{672c}.csv", "my file.txt"]);
    assert_eq!(cat(&s, "m", "my file.txt"), "spaced");
    assert_eq!(cat(&s, "m", "donn\u{e9}es/\u{65e5}\u{672c}.csv"), "unicode");
    let out = s.path("out");
    s.ok(&["get", "m", p(&out)]);
    assert_eq!(
        fs::read_to_string(out.join("donn\u{e9}es/\u{65e5}\u{672c}.csv")).unwrap(),
        "unicode"
    );
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "rm", "m", "my file.txt"]);
    assert_eq!(s.ok(&["draft", "commit", "m"]), "m:v1\n");
    assert_eq!(ls(&s, "m:v1"), ["donn\u{e9}es/\u{65e5}\u{672c}.csv"]);
}

#[test]
fn ls_lists_paths_in_byte_order() {
    // docs/SEMANTICS.md: "every file and symlink path under PREFIX ... in byte order".
    // '-' and '.' sort before '/', so a directory walk alone does not give this order.
    let s = TestStore::new();
    let d = s.tree(
        "d",
        &[
            ("data/x", "1"),
            ("data.csv", "2"),
            ("data-b", "3"),
            ("dat", "4"),
            ("data/y/z", "5"),
        ],
    );
    log(&s, "m", &d);
    let got = ls(&s, "m");
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "ls output is not in byte order");
    assert_eq!(sorted, ["dat", "data-b", "data.csv", "data/x", "data/y/z"]);
}

#[test]
fn get_restores_directory_modes_and_mtimes() {
    let s = TestStore::new();
    let d = s.tree("d", &[("sub/inner/f.txt", "f"), ("open/g.txt", "g")]);
    set_mode(&d.join("open"), 0o750);
    let t_sub = time_at(1_200_000_000, 5);
    let t_inner = time_at(1_300_000_000, 7);
    set_mtime(&d.join("sub/inner"), t_inner);
    set_mtime(&d.join("sub"), t_sub);
    log(&s, "m", &d);
    let out = s.path("out");
    s.ok(&["get", "m", p(&out)]);
    assert_eq!(mtime_of(&out.join("sub")), t_sub);
    assert_eq!(mtime_of(&out.join("sub/inner")), t_inner);
    assert_eq!(mode_of(&out.join("open")), 0o750);
}

#[test]
fn piped_output_has_no_progress_bar() {
    let s = TestStore::new();
    let big = "x".repeat(3 << 20);
    let d = s.tree("d", &[("big.bin", &big), ("small.txt", "s")]);
    let out = s.run(&["log", "m", p(&d), "--type", "dataset"]);
    assert_success(&out, &["log"]);
    assert_eq!(stdout(&out), "m:v0\n");
    assert_eq!(
        stderr(&out),
        "",
        "nothing but the result when not on a terminal"
    );
    let dest = s.path("dest");
    let out = s.run(&["get", "m", p(&dest)]);
    assert_success(&out, &["get"]);
    assert_eq!(stderr(&out), "");
    let out = s.run(&["verify"]);
    assert_eq!(stderr(&out), "");
}

#[test]
fn the_store_layout_matches_the_spec() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "a")]);
    log(&s, "m", &d);
    assert!(s.root.join("blobs").is_dir());
    assert!(s.root.join("staging").is_dir());
    let header = fs::read(s.root.join("catalog.db")).unwrap();
    assert_eq!(&header[..16], b"SQLite format 3\0");
    // File format read/write versions 2 mean WAL mode.
    assert_eq!(
        (header[18], header[19]),
        (2, 2),
        "catalog.db is not in WAL mode"
    );
    let blob = s.blob_path_of(b"a");
    assert!(blob.exists());
    assert_eq!(mode_of(&blob) & 0o222, 0);
}

/// Bad input: each refusal names the offending thing and leaves the store exactly as it was.
mod bad_input {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::path::PathBuf;

    /// A store with something of everything: mnist:v0 (best), v1, v2 (from the sealed
    /// distributed id mnist@done), aux:v0, a plain draft of aux with changes, and an open
    /// distributed draft mnist@open.
    fn populated() -> (TestStore, PathBuf) {
        let s = TestStore::new();
        let d0 = s.tree("p0", &[("a.txt", "a0"), ("dir/b.txt", "b0")]);
        s.ok(&[
            "log",
            "mnist",
            p(&d0),
            "--type",
            "dataset",
            "--alias",
            "best",
        ]);
        let d1 = s.tree("p1", &[("a.txt", "a1"), ("dir/b.txt", "b0")]);
        log(&s, "mnist", &d1);
        let done = s.tree("done", &[("shard.txt", "done")]);
        s.ok(&[
            "upsert",
            "mnist",
            p(&done),
            "--type",
            "dataset",
            "--distributed-id",
            "done",
        ]);
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "done",
        ]);
        let aux = s.tree("aux", &[("x.txt", "x")]);
        s.ok(&["log", "aux", p(&aux), "--type", "model"]);
        s.ok(&["draft", "new", "aux"]);
        let more = s.tree("more", &[("y.txt", "y")]);
        s.ok(&["draft", "add", "aux", p(&more)]);
        s.ok(&["draft", "rm", "aux", "x.txt"]);
        let open = s.tree("open", &[("o.txt", "o")]);
        s.ok(&[
            "upsert",
            "mnist",
            p(&open),
            "--type",
            "dataset",
            "--distributed-id",
            "open",
        ]);
        // Ready-made valid input for the commands under test.
        let good = s.tree("good", &[("g.txt", "fresh content")]);
        (s, good)
    }

    /// The invalid name `bad` is refused by every command that takes a name, with a message
    /// quoting it and containing `needle`.
    fn bad_artifact_name(bad: &str, needle: &str, with_show: bool) {
        let (s, good) = populated();
        let g = p(&good);
        let quoted = format!("{bad:?}");
        let mut commands: Vec<Vec<&str>> = vec![
            vec!["log", bad, g, "--type", "dataset"],
            vec!["draft", "new", bad],
            vec![
                "upsert",
                bad,
                g,
                "--type",
                "dataset",
                "--distributed-id",
                "x",
            ],
            vec!["list", bad],
        ];
        if with_show {
            commands.push(vec!["show", bad]);
        }
        for args in &commands {
            refused(&s, args, &[&quoted, needle]);
        }
    }

    #[test]
    fn name_with_slash() {
        bad_artifact_name("a/b", "'/'", true);
        // The same rule for types, aliases and distributed ids.
        let (s, good) = populated();
        refused(
            &s,
            &["log", "n", p(&good), "--type", "data/set"],
            &["\"data/set\"", "'/'"],
        );
        refused(
            &s,
            &["alias", "set", "mnist:v0", "a/b"],
            &["\"a/b\"", "'/'"],
        );
        refused(
            &s,
            &[
                "upsert",
                "n",
                p(&good),
                "--type",
                "dataset",
                "--distributed-id",
                "r/1",
            ],
            &["\"r/1\"", "'/'"],
        );
    }

    #[test]
    fn name_with_colon() {
        bad_artifact_name("a:b", "':'", false);
    }

    #[test]
    fn name_with_space() {
        bad_artifact_name("my data", "' '", true);
        let (s, good) = populated();
        refused(
            &s,
            &[
                "upsert",
                "n",
                p(&good),
                "--type",
                "dataset",
                "--distributed-id",
                "run 1",
            ],
            &["\"run 1\"", "' '"],
        );
    }

    #[test]
    fn name_with_leading_dot() {
        bad_artifact_name(".hidden", "'.'", true);
        let (s, _) = populated();
        refused(
            &s,
            &["alias", "set", "mnist:v0", ".best"],
            &["\".best\"", "'.'"],
        );
        // A dot elsewhere is fine.
        s.ok(&["alias", "set", "mnist:v0", "best.v2"]);
    }

    #[test]
    fn empty_name() {
        bad_artifact_name("", "empty", true);
        let (s, good) = populated();
        refused(
            &s,
            &["log", "n", p(&good), "--type", ""],
            &["type", "empty"],
        );
        refused(&s, &["draft", "new", "mnist@"], &["empty"]);
    }

    #[test]
    fn name_of_129_characters() {
        let long = "n".repeat(129);
        bad_artifact_name(&long, "129", true);
        // 128 is the limit, and allowed.
        let (s, good) = populated();
        let max = "m".repeat(128);
        assert_eq!(log(&s, &max, &good), format!("{max}:v0"));
    }

    #[test]
    fn name_with_other_characters() {
        bad_artifact_name("donn\u{e9}es", "'\u{e9}'", true);
        bad_artifact_name("a#b", "'#'", true);
        let (s, good) = populated();
        // '#' in a distributed id (the hidden draft of `log` uses one).
        refused(
            &s,
            &[
                "upsert",
                "mnist",
                p(&good),
                "--type",
                "dataset",
                "--distributed-id",
                "#log",
            ],
            &["\"#log\"", "'#'"],
        );
        refused(&s, &["draft", "new", "mnist@a@b"], &["'@'"]);
    }

    #[test]
    fn reserved_name_drafts() {
        bad_artifact_name("drafts", "reserved", true);
    }

    #[test]
    fn alias_of_the_form_vn() {
        let (s, good) = populated();
        refused(
            &s,
            &["alias", "set", "mnist:v1", "v3"],
            &["\"v3\"", "reserved"],
        );
        refused(
            &s,
            &[
                "log",
                "mnist",
                p(&good),
                "--type",
                "dataset",
                "--alias",
                "v3",
            ],
            &["\"v3\"", "reserved"],
        );
        refused(
            &s,
            &["draft", "commit", "aux", "--alias", "v3"],
            &["\"v3\"", "reserved"],
        );
        refused(&s, &["alias", "rm", "mnist", "v3"], &["\"v3\""]);
    }

    fn assert_says_missing(err: &str) {
        assert!(
            err.contains("does not exist") || err.contains("not found") || err.contains("no such"),
            "the error should say the object does not exist: {err}"
        );
    }

    #[test]
    fn unknown_artifact() {
        let (s, _) = populated();
        let dest = s.path("dest");
        let d = p(&dest);
        let commands: Vec<Vec<&str>> = vec![
            vec!["show", "nope"],
            vec!["show", "nope:v0"],
            vec!["list", "nope"],
            vec!["ls", "nope"],
            vec!["cat", "nope", "a.txt"],
            vec!["diff", "nope", "mnist"],
            vec!["diff", "mnist", "nope:v1"],
            vec!["get", "nope", d],
            vec!["alias", "set", "nope:v0", "best"],
            vec!["alias", "rm", "nope", "best"],
            vec!["delete", "nope:v0"],
            vec!["verify", "nope"],
            vec!["draft", "status", "nope"],
            vec!["draft", "commit", "nope"],
            vec!["draft", "discard", "nope"],
        ];
        for args in &commands {
            let err = refused(&s, args, &["nope"]);
            assert_says_missing(&err);
        }
        assert!(
            !dest.exists(),
            "a failed get must not create its destination"
        );
    }

    #[test]
    fn unknown_version() {
        let (s, good) = populated();
        let dest = s.path("dest");
        let d = p(&dest);
        let commands: Vec<Vec<&str>> = vec![
            vec!["show", "mnist:v7"],
            vec!["ls", "mnist:v7"],
            vec!["cat", "mnist:v7", "a.txt"],
            vec!["diff", "mnist:v0", "mnist:v7"],
            vec!["get", "mnist:v7", d],
            vec!["alias", "set", "mnist:v7", "best"],
            vec!["delete", "mnist:v7"],
            vec!["verify", "mnist:v7"],
            vec!["draft", "new", "mnist", "--from", "mnist:v7"],
            vec!["draft", "new", "mnist@x", "--from", "mnist:v7"],
        ];
        for args in &commands {
            let err = refused(&s, args, &["mnist:v7"]);
            assert_says_missing(&err);
        }
        // A version number that was deleted is unknown too.
        s.ok(&["delete", "mnist:v1"]);
        let err = refused(&s, &["show", "mnist:v1"], &["mnist:v1"]);
        assert_says_missing(&err);
        let _ = good;
        assert!(!dest.exists());
    }

    #[test]
    fn unknown_alias() {
        let (s, _) = populated();
        let dest = s.path("dest");
        let d = p(&dest);
        let commands: Vec<Vec<&str>> = vec![
            vec!["show", "mnist:prod"],
            vec!["ls", "mnist:prod"],
            vec!["cat", "mnist:prod", "a.txt"],
            vec!["diff", "mnist:prod", "mnist"],
            vec!["get", "mnist:prod", d],
            vec!["alias", "set", "mnist:prod", "other"],
            vec!["alias", "rm", "mnist", "prod"],
            vec!["delete", "mnist:prod"],
            vec!["verify", "mnist:prod"],
        ];
        for args in &commands {
            let err = refused(&s, args, &["mnist:prod"]);
            assert_says_missing(&err);
        }
        // An alias of another artifact does not count.
        let err = refused(&s, &["show", "aux:best"], &["aux:best"]);
        assert_says_missing(&err);
        assert!(!dest.exists());
    }

    #[test]
    fn type_conflict() {
        let (s, good) = populated();
        let g = p(&good);
        let needles = ["mnist", "dataset", "model"];
        refused(&s, &["log", "mnist", g, "--type", "model"], &needles);
        refused(
            &s,
            &[
                "upsert",
                "mnist",
                g,
                "--type",
                "model",
                "--distributed-id",
                "open",
            ],
            &needles,
        );
        refused(
            &s,
            &[
                "upsert",
                "mnist",
                g,
                "--type",
                "model",
                "--distributed-id",
                "new-id",
            ],
            &needles,
        );
        refused(
            &s,
            &[
                "finish",
                "mnist",
                "--type",
                "model",
                "--distributed-id",
                "open",
            ],
            &needles,
        );
        refused(&s, &["draft", "new", "mnist", "--type", "model"], &needles);
        refused(
            &s,
            &["draft", "commit", "aux", "--type", "dataset"],
            &["aux", "dataset", "model"],
        );
    }

    #[test]
    fn path_that_does_not_exist() {
        let (s, good) = populated();
        let missing = s.path("no/such/file.txt");
        let m = p(&missing);
        let g = p(&good);
        for args in [
            vec!["log", "mnist", m, "--type", "dataset"],
            vec!["log", "brand-new", m, "--type", "dataset"],
            // A good path beside the missing one stores nothing either.
            vec!["log", "mnist", g, m, "--type", "dataset"],
            vec!["draft", "add", "aux", g, m],
            vec![
                "upsert",
                "mnist",
                g,
                m,
                "--type",
                "dataset",
                "--distributed-id",
                "open",
            ],
            vec![
                "upsert",
                "mnist",
                m,
                "--type",
                "dataset",
                "--distributed-id",
                "new-id",
            ],
            // finish with a missing path must neither commit nor seal.
            vec![
                "finish",
                "mnist",
                m,
                "--type",
                "dataset",
                "--distributed-id",
                "open",
            ],
        ] {
            refused(&s, &args, &[m]);
        }
        // The id is still open.
        s.ok(&[
            "finish",
            "mnist",
            "--type",
            "dataset",
            "--distributed-id",
            "open",
        ]);
    }

    #[test]
    fn path_that_cannot_be_read() {
        require_root();
        let (s, good) = populated();
        s.hand_store_to(NOBODY);
        // Control: the unprivileged user can use this store and read ordinary files.
        let ctl = s.file("ctl/ctl.txt", "control");
        let out = s.run_as(NOBODY, &["log", "ctl", p(&ctl), "--type", "dataset"]);
        assert_success(&out, &["log ctl (as nobody)"]);

        let secret = s.file("secret/secret.bin", "classified");
        set_mode(&secret, 0o000);
        let tree = s.tree(
            "tree",
            &[("ok.txt", "readable"), ("sub/hidden.txt", "hidden")],
        );
        set_mode(&tree.join("sub/hidden.txt"), 0o000);
        let locked = s.tree("locked", &[("fine.txt", "fine"), ("closed/in.txt", "in")]);
        set_mode(&locked.join("closed"), 0o000);
        let g = p(&good);

        let cases: Vec<(Vec<&str>, PathBuf)> = vec![
            (
                vec!["log", "mnist", p(&secret), "--type", "dataset"],
                secret.clone(),
            ),
            (
                vec!["log", "mnist", g, p(&secret), "--type", "dataset"],
                secret.clone(),
            ),
            (
                vec!["log", "mnist", p(&tree), "--type", "dataset"],
                tree.join("sub/hidden.txt"),
            ),
            (
                vec!["log", "mnist", p(&locked), "--type", "dataset"],
                locked.join("closed"),
            ),
            (
                vec!["draft", "add", "aux", p(&tree)],
                tree.join("sub/hidden.txt"),
            ),
            (
                vec![
                    "upsert",
                    "mnist",
                    p(&secret),
                    "--type",
                    "dataset",
                    "--distributed-id",
                    "open",
                ],
                secret.clone(),
            ),
            (
                vec![
                    "finish",
                    "mnist",
                    p(&tree),
                    "--type",
                    "dataset",
                    "--distributed-id",
                    "open",
                ],
                tree.join("sub/hidden.txt"),
            ),
        ];
        for (args, culprit) in cases {
            let before = fingerprint(&s);
            let out = s.run_as(NOBODY, &args);
            let err = assert_failure(&out, &args);
            assert!(
                err.contains(p(&culprit)),
                "{args:?}: the error should name {}: {err}",
                culprit.display()
            );
            assert!(err.to_lowercase().contains("permission denied"), "{err}");
            assert_unchanged(&before, &fingerprint(&s), &format!("{args:?}"));
        }
        assert!(
            !s.blob_path_of(b"readable").exists(),
            "nothing of a failed log is stored"
        );
        set_mode(&locked.join("closed"), 0o755);
    }

    /// Every command that takes --metadata, given `bad` as its value.
    fn with_metadata<'a>(good: &'a str, bad: &'a str) -> Vec<Vec<&'a str>> {
        vec![
            vec!["log", "mnist", good, "--type", "dataset", "--metadata", bad],
            vec!["draft", "commit", "aux", "--metadata", bad],
            vec![
                "finish",
                "mnist",
                "--type",
                "dataset",
                "--distributed-id",
                "open",
                "--metadata",
                bad,
            ],
        ]
    }

    #[test]
    fn metadata_that_is_not_json() {
        let (s, good) = populated();
        for bad in ["{oops", "epochs=3", "", "{\"a\": 1,}"] {
            for args in with_metadata(p(&good), bad) {
                refused(&s, &args, &["metadata", "JSON"]);
            }
        }
    }

    #[test]
    fn metadata_that_is_not_an_object() {
        let (s, good) = populated();
        for bad in ["[1, 2]", "\"text\"", "3", "null", "true"] {
            for args in with_metadata(p(&good), bad) {
                refused(&s, &args, &["metadata", "object"]);
            }
        }
    }

    #[test]
    fn upsert_to_a_finished_id() {
        let (s, good) = populated();
        let g = p(&good);
        for args in [
            vec![
                "upsert",
                "mnist",
                g,
                "--type",
                "dataset",
                "--distributed-id",
                "done",
            ],
            vec![
                "finish",
                "mnist",
                "--type",
                "dataset",
                "--distributed-id",
                "done",
            ],
            vec![
                "finish",
                "mnist",
                g,
                "--type",
                "dataset",
                "--distributed-id",
                "done",
            ],
            vec!["draft", "new", "mnist@done"],
        ] {
            let err = refused(&s, &args, &["mnist@done", "mnist:v2"]);
            assert!(err.contains("finished"), "{err}");
        }
    }

    #[test]
    fn deleting_an_aliased_version() {
        let (s, _) = populated();
        let err = refused(&s, &["delete", "mnist:v0"], &["mnist:v0", "best"]);
        assert!(err.contains("alias"), "{err}");
        refused(&s, &["delete", "mnist:best"], &["mnist:v0", "best"]);
        s.ok(&["alias", "set", "mnist:v2", "prod"]);
        refused(&s, &["delete", "mnist"], &["mnist:v2", "prod"]);
    }

    fn says_not_writable(err: &str) -> bool {
        let e = err.to_lowercase();
        ["permission denied", "read-only", "readonly", "not writable"]
            .iter()
            .any(|w| e.contains(w))
    }

    #[test]
    fn store_directory_that_is_not_writable() {
        require_root();
        let (s, good) = populated();
        s.hand_store_to(NOBODY);
        // Control: with a writable store the unprivileged user succeeds.
        let ctl = s.file("ctl/ctl.txt", "control");
        let out = s.run_as(NOBODY, &["log", "ctl", p(&ctl), "--type", "dataset"]);
        assert_success(&out, &["log ctl (as nobody)"]);
        let g = p(&good);
        let commands: Vec<Vec<&str>> = vec![
            vec!["log", "mnist", g, "--type", "dataset"],
            vec!["log", "newthing", g, "--type", "dataset"],
            vec!["alias", "set", "mnist:v1", "prod"],
            vec!["draft", "new", "mnist"],
            vec!["draft", "add", "aux", g],
            vec!["draft", "commit", "aux"],
            vec![
                "upsert",
                "mnist",
                g,
                "--type",
                "dataset",
                "--distributed-id",
                "open",
            ],
            vec!["delete", "mnist:v1"],
            vec!["gc"],
        ];
        let check_all = |situation: &str| {
            for args in &commands {
                let before = fingerprint(&s);
                let out = s.run_as(NOBODY, args);
                let err = assert_failure(&out, args);
                assert!(
                    err.contains(p(&s.root)),
                    "{situation}: {args:?}: the error should name the store: {err}"
                );
                assert!(
                    says_not_writable(&err),
                    "{situation}: {args:?}: the error should say the store is not writable: {err}"
                );
                assert_unchanged(&before, &fingerprint(&s), &format!("{situation}: {args:?}"));
            }
        };
        // The user owns the store, but its directories are read-only.
        chmod_dirs(&s.root, 0o555);
        check_all("store owned by the user, directories 0555");
        // Someone else's store.
        chown_tree(&s.root, 0);
        check_all("store owned by root, directories 0555");
        chmod_dirs(&s.root, 0o755);
        check_all("store owned by root, directories 0755, files 0644");
        // Reading someone else's store works (no writer left a shared-memory file behind).
        for args in [
            vec!["list", "mnist"],
            vec!["show", "mnist:v1"],
            vec!["ls", "mnist:v1"],
            vec!["verify"],
        ] {
            let out = s.run_as(NOBODY, &args);
            assert_success(&out, &[format!("{args:?} as nobody on root's store")]);
        }

        // A store that does not exist yet, in a directory the user cannot write.
        let parent = s.path("readonly-parent");
        fs::create_dir_all(&parent).unwrap();
        set_mode(&parent, 0o555);
        let new_store = parent.join("store");
        let mut cmd = std::process::Command::new(bin_for_others());
        cmd.arg("--store")
            .arg(&new_store)
            .args(["log", "m", g, "--type", "dataset"])
            .uid(NOBODY)
            .gid(NOBODY)
            .current_dir("/")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let out = run_command(cmd);
        let err = assert_failure(&out, &["log into a new store under a read-only directory"]);
        assert!(err.contains(p(&new_store)), "{err}");
        assert!(says_not_writable(&err), "{err}");
        assert!(!new_store.exists());
    }

    #[test]
    fn catalog_from_a_newer_schema() {
        let (s, good) = populated();
        {
            let conn = rusqlite::Connection::open(s.root.join("catalog.db")).unwrap();
            conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let g = p(&good);
        for args in [
            vec!["list"],
            vec!["show", "mnist"],
            vec!["log", "mnist", g, "--type", "dataset"],
            vec!["draft", "commit", "aux"],
            vec!["gc"],
            vec!["verify"],
        ] {
            let err = refused(&s, &args, &["catalog.db", "newer"]);
            assert!(
                err.contains("99"),
                "the error should give the schema found: {err}"
            );
        }
    }
}
