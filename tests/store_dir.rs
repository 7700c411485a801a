//! The store directory: made by `init` or by the first command that adds a version, in a new
//! or empty directory only; every other command, `mount` among them, needs a store and creates
//! nothing; errors name the store and, where they can, the name that was probably meant.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::mount::{is_mounted, require_fuse};
use common::*;
use serde_json::json;

/// The names in `dir`, sorted; empty for a directory that does not exist.
fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every command that needs a store, with arguments that would work on a store holding
/// `m:v0` (a.txt) and a draft `m`.
fn readers<'a>(data: &'a str, dest: &'a str, mp: &'a str) -> Vec<Vec<&'a str>> {
    vec![
        vec!["list"],
        vec!["list", "m"],
        vec!["show", "m"],
        vec!["ls", "m"],
        vec!["cat", "m", "a.txt"],
        vec!["diff", "m:v0", "m"],
        vec!["get", "m", dest],
        vec!["draft", "list"],
        vec!["draft", "status", "m"],
        vec!["draft", "add", "m", data],
        vec!["draft", "rm", "m", "a.txt"],
        vec!["draft", "commit", "m"],
        vec!["draft", "discard", "m"],
        vec!["alias", "set", "m:v0", "best"],
        vec!["alias", "rm", "m", "best"],
        vec!["delete", "m:v0"],
        vec!["verify"],
        vec!["gc"],
        vec!["mount", mp],
    ]
}

#[test]
fn reading_commands_and_mount_create_no_store_and_say_where_they_looked() {
    require_fuse();
    let s = TestStore::new();
    let data = s.tree("data", &[("a.txt", "a")]);
    let dest = s.path("dest");
    let mp = s.path("mnt");
    fs::create_dir(&mp).unwrap();
    let root = p(&s.root);
    for args in readers(p(&data), p(&dest), p(&mp)) {
        // Missing, then an empty directory: neither becomes a store.
        for empty_dir in [false, true] {
            if empty_dir {
                fs::create_dir_all(&s.root).unwrap();
            }
            let out = s.run(&args);
            let err = assert_failure(&out, &args);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            let why = match empty_dir {
                true => "the directory is empty",
                false => "the directory does not exist",
            };
            assert_eq!(
                err.trim(),
                format!(
                    "error: no artifactfs store at {root}: {why}; create one with \
                     `artifactfs init {root}`, or log a first version into it"
                ),
                "{args:?}"
            );
            match empty_dir {
                true => assert_eq!(names(&s.root), Vec::<String>::new(), "{args:?}"),
                false => assert!(!s.root.exists(), "{args:?} created {root}"),
            }
            assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()), "{args:?}");
            assert!(!dest.exists(), "{args:?}");
        }
        fs::remove_dir(&s.root).unwrap();
    }
}

#[test]
fn the_message_says_which_setting_named_a_missing_store() {
    let s = TestStore::new();
    let run = |env: &[(&str, &Path)], home: &Path| {
        let mut cmd = Command::new(BIN);
        cmd.arg("list")
            .env_remove("ARTIFACTFS_STORE")
            .env_remove("XDG_DATA_HOME")
            .env("HOME", home)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run_command(cmd);
        assert_eq!(out.status.code(), Some(1));
        stderr(&out)
    };
    let home = s.path("home");
    let env_store = s.path("from-env");
    let err = run(&[("ARTIFACTFS_STORE", &env_store)], &home);
    assert!(
        err.contains(&format!(
            "no artifactfs store at {}: $ARTIFACTFS_STORE names it, and the directory does not exist",
            p(&env_store)
        )),
        "{err}"
    );
    let err = run(&[], &home);
    let default = home.join(".local/share/artifactfs");
    assert!(
        err.contains(&format!(
            "no artifactfs store at {}: it is the default location, and the directory does not exist",
            p(&default)
        )),
        "{err}"
    );
    assert!(!env_store.exists() && !home.exists());
}

#[test]
fn a_directory_of_other_files_never_becomes_a_store_unasked() {
    require_fuse();
    let s = TestStore::new();
    let data = s.tree("data", &[("a.txt", "a")]);
    // The user's own directory of CSVs, named as the store by mistake.
    write_tree(&s.root, &[("train.csv", "x,y\n"), ("test.csv", "x,y\n")]);
    let before = names(&s.root);
    let root = p(&s.root);
    let mp = s.path("mnt");
    fs::create_dir(&mp).unwrap();
    let d = p(&data);
    let writers: Vec<Vec<&str>> = vec![
        vec!["log", "m", d, "--type", "dataset"],
        vec!["draft", "new", "m"],
        vec![
            "upsert",
            "m",
            d,
            "--distributed-id",
            "r1",
            "--type",
            "dataset",
        ],
        vec![
            "finish",
            "m",
            d,
            "--distributed-id",
            "r1",
            "--type",
            "dataset",
        ],
    ];
    for args in &writers {
        let err = s.fail(args);
        assert!(
            err.contains(&format!(
                "no artifactfs store at {root}: the directory holds other files (test.csv, \
                 train.csv) and no catalog.db; a store is made only in a new or empty directory \
                 unless asked: use another directory, or run `artifactfs init {root}` to make \
                 one here anyway"
            )),
            "{args:?}: {err}"
        );
        assert_eq!(names(&s.root), before, "{args:?} wrote into {root}");
    }
    for args in readers(d, p(&s.path("dest")), p(&mp)) {
        let err = s.fail(&args);
        assert!(
            err.contains(&format!(
                "no artifactfs store at {root}: the directory holds other files (test.csv, \
                 train.csv) and no catalog.db; point --store or $ARTIFACTFS_STORE at a store, \
                 or run `artifactfs init {root}` to make one here"
            )),
            "{args:?}: {err}"
        );
        assert_eq!(names(&s.root), before, "{args:?} wrote into {root}");
    }
    // Asked for, it is made there, and the files are left alone.
    assert_eq!(
        s.ok(&["init"]).trim(),
        format!("created store {root} beside the 2 entries already there, left as they were")
    );
    assert_eq!(
        fs::read_to_string(s.root.join("train.csv")).unwrap(),
        "x,y\n"
    );
    assert_eq!(log(&s, "m", &data), "m:v0");
}

#[test]
fn init_makes_a_store_once_and_commands_that_add_versions_make_one_in_an_empty_place() {
    let s = TestStore::new();
    let root = p(&s.root);
    assert_eq!(s.ok(&["init"]).trim(), format!("created store {root}"));
    assert!(s.root.join("catalog.db").is_file() && s.root.join("blobs").is_dir());
    let before = s.fingerprint();
    assert_eq!(
        s.ok(&["init"]).trim(),
        format!("{root} is already a store; nothing changed")
    );
    assert_unchanged(&before, &s.fingerprint(), "a second init");
    assert_eq!(s.json(&["init"]), json!({"store": root, "existed": true}));
    // A directory given to init, relative to where it runs, is named absolute.
    let other = s.path("other");
    assert_eq!(
        s.json(&["init", "other"]),
        json!({"store": p(&other), "existed": false})
    );
    assert!(other.join("catalog.db").is_file());

    // The commands that add versions make a store where there is none, or an empty directory.
    let data = s.tree("data", &[("a.txt", "a")]);
    let d = p(&data);
    for (i, args) in [
        vec!["log", "m", d, "--type", "dataset"],
        vec!["draft", "new", "m"],
        vec![
            "upsert",
            "m",
            d,
            "--distributed-id",
            "r",
            "--type",
            "dataset",
        ],
        vec![
            "finish",
            "m",
            d,
            "--distributed-id",
            "r",
            "--type",
            "dataset",
        ],
    ]
    .into_iter()
    .enumerate()
    {
        for empty_dir in [false, true] {
            let dir = s.path(&format!("new-{i}-{empty_dir}"));
            if empty_dir {
                fs::create_dir(&dir).unwrap();
            }
            let mut cmd = Command::new(BIN);
            cmd.arg("--store")
                .arg(&dir)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let out = run_command(cmd);
            assert_success(&out, &args);
            assert!(dir.join("catalog.db").is_file(), "{args:?} in {}", p(&dir));
        }
    }
}

#[test]
fn missing_names_are_named_with_the_store_and_close_names_suggested() {
    let s = TestStore::new();
    let root = p(&s.root);
    let data = s.tree("data", &[("a.txt", "a")]);
    s.ok(&[
        "log",
        "mnist",
        p(&data),
        "--type",
        "dataset",
        "--alias",
        "best",
    ]);
    s.ok(&["draft", "new", "mnist"]);
    for (args, message) in [
        (
            vec!["show", "mnsit"],
            format!("artifact mnsit does not exist in store {root}; did you mean mnist?"),
        ),
        (
            vec!["show", "imagenet"],
            format!("artifact imagenet does not exist in store {root}"),
        ),
        (
            vec!["show", "mnist:bset"],
            format!("alias mnist:bset does not exist in store {root}; did you mean mnist:best?"),
        ),
        (
            vec!["get", "mnist:v7", "out"],
            format!(
                "version mnist:v7 does not exist in store {root}; the newest version of mnist \
                 is mnist:v0"
            ),
        ),
        (
            vec!["draft", "status", "mnsit"],
            format!("draft mnsit does not exist in store {root}; did you mean mnist?"),
        ),
        (
            vec!["draft", "commit", "cifar"],
            format!(
                "draft cifar does not exist in store {root}; create it with `artifactfs draft \
                 new cifar`"
            ),
        ),
        (
            vec!["alias", "rm", "mnist", "bets"],
            format!("alias mnist:bets does not exist in store {root}; did you mean mnist:best?"),
        ),
    ] {
        let err = refused(&s, &args, &[]);
        assert_eq!(err.trim(), format!("error: {message}"), "{args:?}");
    }
    // Every version deleted: latest names nothing.
    s.ok(&["alias", "rm", "mnist", "best"]);
    s.ok(&["delete", "mnist:v0"]);
    let err = refused(&s, &["show", "mnist"], &[]);
    assert_eq!(
        err.trim(),
        format!(
            "error: mnist:latest does not exist in store {root}; every version of mnist was \
             deleted"
        )
    );
}

#[test]
fn the_mount_helper_mounts_no_missing_store() {
    require_fuse();
    let s = TestStore::new();
    let helper = s.path("bin/mount.fuse.artifactfs");
    fs::create_dir_all(helper.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(BIN, &helper).unwrap();
    let mp = s.path("mnt");
    fs::create_dir(&mp).unwrap();
    let mut cmd = Command::new(&helper);
    cmd.arg(&s.root)
        .arg(&mp)
        .args(["-o", "rw"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_command(cmd);
    assert_eq!(
        out.status.code(),
        Some(32),
        "mount(8)'s status for a failed mount"
    );
    assert!(
        stderr(&out).contains(&format!("no artifactfs store at {}", p(&s.root))),
        "{}",
        stderr(&out)
    );
    assert!(!s.root.exists());
    assert!(!is_mounted(&fs::canonicalize(&mp).unwrap()));
}
