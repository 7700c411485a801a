//! drafts/ through the mount: mkdir starts a draft, rmdir discards an empty one, the control
//! file `.commit` commits it, and directories, symlinks, renames, removals and attributes
//! inside a draft behave as in a local directory.

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
            py_errno("os.mkdir(p)", &m.path(&format!("drafts/{name}"))),
            want,
            "mkdir drafts/{name}"
        );
    }
    assert_eq!(py_errno("os.mkdir(p)", &m.path("m/v0/new")), "EROFS");
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
    assert_eq!(py_errno("os.mkdir(p)", &m.path("drafts/m@done")), "EEXIST");
    assert_eq!(py_errno("os.rmdir(p)", &m.path("drafts/m")), "ENOTEMPTY");
    assert_eq!(py_errno("os.rmdir(p)", &m.path("drafts/nope")), "ENOENT");
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

/// The same directory, symlink, rename, removal and attribute changes applied to a plain
/// directory and to a draft leave the same tree, also once committed.
#[test]
fn changes_in_a_draft_match_the_same_changes_in_a_directory() {
    let s = TestStore::new();
    let src = s.tree(
        "src",
        &[
            ("a.txt", "alpha"),
            ("d/b.txt", "bee"),
            ("d/e/c.txt", "sea"),
            ("keep.txt", "k"),
        ],
    );
    // Far from "now": rsync-style same-second ambiguities cannot arise.
    for rel in ["a.txt", "d/b.txt", "d/e/c.txt", "keep.txt"] {
        set_mtime(
            &src.join(rel),
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000),
        );
    }
    log(&s, "m", &src);
    let plain = s.path("plain");
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success(), "cp -a: {}", stderr(&out));
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let draft = m.path("drafts/m");

    let script = r#"
import os, sys
root = sys.argv[1]
os.chdir(root)
os.mkdir("new")
os.mkdir("new/deeper", 0o750)
os.symlink("../a.txt", "new/link")
os.rename("a.txt", "renamed.txt")
os.rename("keep.txt", "new/keep.txt")
os.unlink("d/e/c.txt")
os.rmdir("d/e")
os.chmod("renamed.txt", 0o755)
os.utime("renamed.txt", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
os.utime("d/b.txt", ns=(1_650_000_000_000_000_001, 1_650_000_000_000_000_001))
"#;
    for root in [&plain, &draft] {
        let out = Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(root)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "changes in {}: {}",
            root.display(),
            stderr(&out)
        );
    }
    let files_only = |_: &str, n: &Node| Ignore {
        size: n.kind == 'd',
        mtime: n.kind != 'f',
        mode: false,
    };
    assert_same_tree(
        "draft vs plain directory",
        &snapshot(&plain),
        &snapshot(&draft),
        files_only,
    );

    assert_eq!(write_control(&draft.join(".commit"), "commit"), "ok");
    let committed = snapshot(&m.path("m/latest/"));
    // A committed version shows read-only permissions: compare the executable bit only.
    let mut expected = snapshot(&plain);
    for n in expected.values_mut() {
        if n.kind == 'f' {
            n.mode = if n.mode & 0o111 != 0 { 0o555 } else { 0o444 };
        } else if n.kind == 'd' {
            n.mode = 0o555;
        }
    }
    assert_same_tree(
        "committed version vs plain directory",
        &expected,
        &committed,
        files_only,
    );
}

#[test]
fn draft_changes_fail_as_a_local_filesystem_would() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha"), ("d/b.txt", "bee")]);
    log(&s, "m", &src);
    log(&s, "other", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    fs::create_dir(m.path("drafts/other")).unwrap();
    let d = m.path("drafts/m");
    let at = |rel: &str| d.join(rel);
    assert_eq!(py_errno("os.unlink(p)", &at("d")), "EISDIR");
    assert_eq!(py_errno("os.rmdir(p)", &at("d")), "ENOTEMPTY");
    assert_eq!(py_errno("os.rmdir(p)", &at("a.txt")), "ENOTDIR");
    assert_eq!(py_errno("os.unlink(p)", &at("nope")), "ENOENT");
    assert_eq!(py_errno("os.mkdir(p)", &at("a.txt")), "EEXIST");
    assert_eq!(py_errno("os.symlink('x', p)", &at("d")), "EEXIST");
    // Hard links stay within one draft.
    assert_eq!(
        py_errno(
            &format!(
                "os.link(p, {:?})",
                m.path("drafts/other/hard").display().to_string()
            ),
            &at("a.txt")
        ),
        "EXDEV"
    );
    assert_eq!(
        py_errno(
            &format!("os.link(p, {:?})", at("hard").display().to_string()),
            &m.path("m/v0/a.txt")
        ),
        "EXDEV"
    );
    assert_eq!(py_errno("os.link(p, p + '-dir-link')", &at("d")), "EPERM");
    assert_eq!(py_errno("os.mkfifo(p)", &at("fifo")), "EPERM");
    assert_eq!(
        py_errno(
            &format!(
                "os.rename(p, {:?})",
                m.path("drafts/other/a2.txt").display().to_string()
            ),
            &at("a.txt")
        ),
        "EXDEV"
    );
    // RENAME_NOREPLACE onto an existing name.
    let noreplace = "import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n    \
        r = libc.renameat2(-100, p.encode(), -100, (os.path.dirname(p) + '/d/b.txt').encode(), 1)\n    \
        if r != 0: raise OSError(ctypes.get_errno(), 'renameat2')";
    assert_eq!(py_errno(noreplace, &at("a.txt")), "EEXIST");
    // Nothing of that changed the draft.
    let status = fs::read_to_string(at(".commit")).unwrap();
    assert!(
        status.contains("0 added, 0 modified, 0 removed"),
        "{status}"
    );
}

/// access(2) in a draft answers from the modes shown, as a local filesystem does: the draft,
/// its files and its control file are writable (to root, whatever the bits); outside drafts
/// writing is still EROFS.
#[test]
fn access_in_a_draft_follows_the_modes() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let access = |mask: i32| {
        format!(
            "import ctypes\n    libc = ctypes.CDLL(None, use_errno=True)\n    \
             if libc.access(p.encode(), {mask}) != 0: raise OSError(ctypes.get_errno(), 'access')"
        )
    };
    let (w, x) = (access(libc::W_OK), access(libc::X_OK));
    for rel in ["drafts/m", "drafts/m/a.txt", "drafts/m/.commit"] {
        assert_eq!(py_errno(&w, &m.path(rel)), "ok", "access(W_OK) {rel}");
    }
    fs::set_permissions(
        m.path("drafts/m/a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o444),
    )
    .unwrap();
    assert_eq!(
        py_errno(&w, &m.path("drafts/m/a.txt")),
        "ok",
        "root may write a file without write bits"
    );
    assert_eq!(py_errno(&x, &m.path("drafts/m/a.txt")), "EACCES");
    fs::set_permissions(
        m.path("drafts/m/a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    assert_eq!(py_errno(&x, &m.path("drafts/m/a.txt")), "ok");
    for rel in ["", "m", "m/v0", "m/v0/a.txt", "drafts"] {
        assert_eq!(py_errno(&w, &m.path(rel)), "EROFS", "access(W_OK) /{rel}");
    }
}

/// The control file is no file: changing its attributes (even to what they are), its size
/// (other than emptying it, as `>` does) or its extended attributes, or allocating space in it,
/// is EPERM, not the EROFS of a read-only area: the draft around it is writable.
#[test]
fn the_control_file_refuses_attribute_changes() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    fs::create_dir(m.path("drafts/m")).unwrap();
    let control = m.path("drafts/m/.commit");
    for op in [
        "os.chmod(p, 0o600)",
        "os.chmod(p, 0o644)",
        "os.chown(p, os.getuid(), os.getgid())",
        "os.chown(p, 1000, 1000)",
        "os.utime(p, ns=(1, 1))",
        "os.utime(p)",
        "os.truncate(p, 5)",
        "os.setxattr(p, 'user.test', b'1')",
        "os.removexattr(p, 'user.test')",
        "fd = os.open(p, os.O_WRONLY)\n    try:\n        os.posix_fallocate(fd, 0, 4096)\n    \
         finally:\n        os.close(fd)",
    ] {
        assert_eq!(py_errno(op, &control), "EPERM", "{op}");
    }
    assert_eq!(py_errno("os.truncate(p, 0)", &control), "ok");
    let status = fs::read_to_string(&control).unwrap();
    assert!(status.contains("based on m:v0"), "{status}");
    assert_eq!(drafts_listed(&s), ["m"]);
}

/// What a commit request came to reaches the user where they are: through the descriptor that
/// wrote it (the version made, or the error), and at the top of the status after a refusal.
#[test]
fn the_control_file_answers_each_request() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let control = m.path("drafts/m/.commit");

    // Python, in the one `with` that writes the request.
    fs::create_dir(m.path("drafts/m")).unwrap();
    fs::write(m.path("drafts/m/b.txt"), "bee").unwrap();
    let script = r#"
import sys
with open(sys.argv[1], "r+") as f:
    f.write("commit")
    f.flush()
    print(f.read(), end="")
"#;
    assert_eq!(python_ok(script, &[control.as_os_str()]), "m:v1\n");
    // A draft equal to its base makes no version, and says which it is.
    fs::create_dir(m.path("drafts/m")).unwrap();
    assert_eq!(
        python_ok(script, &[control.as_os_str()]),
        "m:v1 (unchanged)\n"
    );

    // The shell, through one descriptor opened for reading and writing.
    fs::create_dir(m.path("drafts/m")).unwrap();
    fs::write(m.path("drafts/m/c.txt"), "sea").unwrap();
    let out = sh_ok(
        r#"exec 3<>"$1" && echo commit >&3 && cat <&3"#,
        &[control.as_os_str()],
    );
    assert_eq!(out, "m:v2\n");

    // A refused request: the error through the descriptor, then in the status.
    fs::create_dir(m.path("drafts/m")).unwrap();
    let open = fs::File::create(m.path("drafts/m/busy.txt")).unwrap();
    // (Unbuffered: a buffered file would send the refused request again when read.)
    let refused = r#"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.write(fd, b"commit")
    print("committed")
except OSError as e:
    print(e.strerror)
    print(os.read(fd, 4096).decode(), end="")
"#;
    let out = python_ok(refused, &[control.as_os_str()]);
    assert_eq!(
        out,
        "Device or resource busy\nerror: draft m: busy.txt is open for writing; close it \
         before committing\n"
    );
    let status = fs::read_to_string(&control).unwrap();
    assert!(
        status.starts_with(
            "the last commit request was refused: draft m: busy.txt is open for writing; \
             close it before committing\n"
        ),
        "{status}"
    );
    drop(open);
    assert_eq!(write_control(&control, "{\"colour\": 1}"), "EINVAL");
    let status = fs::read_to_string(&control).unwrap();
    assert!(
        status.starts_with("the last commit request was refused: ")
            && status
                .lines()
                .next()
                .unwrap()
                .contains("unknown field \"colour\""),
        "{status}"
    );
    assert_eq!(
        versions(&s, "m"),
        ["v0", "v1", "v2"],
        "nothing was committed"
    );
    // A request that succeeds clears the refusal (the draft is gone with it).
    assert_eq!(write_control(&control, "commit"), "ok");
    assert_eq!(versions(&s, "m"), ["v0", "v1", "v2", "v3"]);
}
