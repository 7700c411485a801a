//! drafts/ through the mount: mkdir starts a draft, rmdir discards an empty one, and the
//! control file `.commit` commits it (reading it shows the draft's status).

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::mount::*;
use common::*;

fn mountpoint(s: &TestStore) -> std::path::PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// Runs `op` (a Python expression using `p`) on `path` and returns "ok" or the errno name.
fn errno_of(op: &str, path: &Path) -> String {
    let script = format!(
        "import errno, os, sys\np = sys.argv[1]\ntry:\n    {op}\n    print('ok')\nexcept OSError as e:\n    print(errno.errorcode[e.errno])\n"
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 runs (scripts/setup.sh installs it)");
    assert!(out.status.success(), "python3: {}", stderr(&out));
    stdout(&out).trim().to_string()
}

fn write_control(path: &Path, request: &str) -> String {
    errno_of(
        &format!(
            "fd = os.open(p, os.O_WRONLY | os.O_TRUNC); os.write(fd, {request:?}.encode()); os.close(fd)"
        ),
        path,
    )
}

fn drafts_listed(s: &TestStore) -> Vec<String> {
    let v = s.json(&["draft", "list"]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|d| d["draft"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn mkdir_starts_drafts_and_rmdir_discards_empty_ones() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));

    fs::create_dir(m.path("drafts/m")).unwrap();
    fs::create_dir(m.path("drafts/m@run1")).unwrap();
    fs::create_dir(m.path("drafts/fresh")).unwrap();
    assert_eq!(drafts_listed(&s), ["fresh", "m", "m@run1"]);
    // A plain draft starts from latest; a distributed one and a new artifact's start empty.
    assert_eq!(fs::read(m.path("drafts/m/a.txt")).unwrap(), b"alpha");
    assert_eq!(fs::read_dir(m.path("drafts/m@run1")).unwrap().count(), 0);
    assert_eq!(fs::read_dir(m.path("drafts/fresh")).unwrap().count(), 0);

    for (name, want) in [
        ("a:b", "EINVAL"),
        (".hidden", "EINVAL"),
        ("m", "EEXIST"),
        ("m@bad:id", "EINVAL"),
    ] {
        assert_eq!(
            errno_of("os.mkdir(p)", &m.path(&format!("drafts/{name}"))),
            want,
            "mkdir drafts/{name}"
        );
    }
    assert_eq!(errno_of("os.mkdir(p)", &m.path("m/v0/new")), "EROFS");
    // A finished distributed id cannot be drafted again.
    s.ok(&[
        "upsert",
        "m",
        p(&src),
        "--type",
        "dataset",
        "--distributed-id",
        "done",
    ]);
    s.ok(&[
        "finish",
        "m",
        "--type",
        "dataset",
        "--distributed-id",
        "done",
    ]);
    assert_eq!(errno_of("os.mkdir(p)", &m.path("drafts/m@done")), "EEXIST");
    assert_eq!(errno_of("os.rmdir(p)", &m.path("drafts/m")), "ENOTEMPTY");
    assert_eq!(errno_of("os.rmdir(p)", &m.path("drafts/nope")), "ENOENT");
    fs::remove_dir(m.path("drafts/m@run1")).unwrap();
    fs::remove_dir(m.path("drafts/fresh")).unwrap();
    assert_eq!(drafts_listed(&s), ["m"]);
}

#[test]
fn the_control_file_commits_and_shows_status() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    s.ok(&["draft", "new", "m"]);
    let extra = s.tree("extra", &[("b.txt", "bee")]);
    s.ok(&["draft", "add", "m", p(&extra.join("b.txt"))]);
    let m = Mounted::new(&s, &mountpoint(&s));

    let control = m.path("drafts/m/.commit");
    let names: Vec<String> = fs::read_dir(m.path("drafts/m"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.contains(&".commit".to_string()),
        "hidden from listings: {names:?}"
    );
    let status = fs::read_to_string(&control).unwrap();
    assert!(
        status.contains("based on m:v0")
            && status.contains("1 added")
            && status.contains("A b.txt"),
        "status: {status}"
    );

    // Bad requests are refused and commit nothing.
    for bad in [
        "garbage\n",
        "[1, 2]\n",
        "{\"aliases\": [\"v3\"]}\n",
        "{\"colour\": 1}\n",
    ] {
        assert_eq!(write_control(&control, bad), "EINVAL", "{bad:?}");
    }
    assert_eq!(
        write_control(&control, "{\"type\": \"model\"}\n"),
        "EEXIST",
        "type conflict"
    );
    assert_eq!(
        drafts_listed(&s),
        ["m"],
        "still there after refused requests"
    );
    assert_eq!(s.json(&["list", "m"]).as_array().unwrap().len(), 1);

    let request =
        r#"{"aliases": ["best"], "description": "via the mount", "metadata": {"epochs": 3}}"#;
    assert_eq!(write_control(&control, request), "ok");
    let v = s.json(&["show", "m:latest"]);
    assert_eq!(v["ref"], "m:v1");
    assert_eq!(v["aliases"], serde_json::json!(["latest", "best"]));
    assert_eq!(v["description"], "via the mount");
    assert_eq!(v["metadata"]["epochs"], 3);
    assert_eq!(fs::read(m.path("m/latest/b.txt")).unwrap(), b"bee");
    assert!(
        drafts_listed(&s).is_empty(),
        "the draft is gone after its commit"
    );
    assert_eq!(fs::read_link(m.path("m/latest")).unwrap(), Path::new("v1"));

    // `echo commit >`: a draft equal to its base makes no new version.
    fs::create_dir(m.path("drafts/m")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo commit > '{}'",
            m.path("drafts/m/.commit").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "echo commit: {}", stderr(&out));
    assert_eq!(
        s.json(&["list", "m"]).as_array().unwrap().len(),
        2,
        "unchanged: no v2"
    );
    assert!(drafts_listed(&s).is_empty());
}
