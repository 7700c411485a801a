//! How the command line fits a terminal and a shell: progress bars (drawn through a
//! pseudo-terminal, absent when piped or with `--quiet`), shell completion and man pages.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use common::*;

/// What a command writes to standard error when that is a terminal: its exit status and the
/// bytes the terminal received.
fn on_terminal(s: &TestStore, args: &[&str]) -> (std::process::ExitStatus, String) {
    let (mut leader, mut follower) = (0, 0);
    // SAFETY: openpty writes two descriptors into the integers given; no name, termios or
    // window size is asked for.
    let rc = unsafe {
        libc::openpty(
            &mut leader,
            &mut follower,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (leader, follower) =
        unsafe { (OwnedFd::from_raw_fd(leader), OwnedFd::from_raw_fd(follower)) };
    let mut cmd = s.command(args);
    cmd.stderr(Stdio::from(follower));
    let mut child = cmd.spawn().expect("spawn artifactfs");
    // The command's copy is the only one left once `cmd` is gone: reading then ends with EIO
    // when the child exits.
    drop(cmd);
    let mut screen = Vec::new();
    let mut reader = File::from(leader);
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => screen.extend_from_slice(&buf[..n]),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => panic!("read the terminal: {e}"),
        }
    }
    let status = child.wait().unwrap();
    (status, String::from_utf8_lossy(&screen).into_owned())
}

/// A directory of `files` files of `each` pseudo-random bytes: enough work for a bar to show.
fn data(s: &TestStore, name: &str, files: usize, each: usize) -> std::path::PathBuf {
    let dir = s.path(name);
    for i in 0..files {
        write_file(
            &dir.join(format!("f{i:03}.bin")),
            &pseudo_random(each, i as u64 + 7),
        );
    }
    dir
}

#[test]
fn long_commands_draw_progress_on_a_terminal_only() {
    let s = TestStore::new();
    let src = data(&s, "src", 16, 4 << 20);
    let more = data(&s, "more", 8, 4 << 20);
    let dest = s.path("checkout");
    let dp = p(&dest).to_string();
    let commands: Vec<(Vec<&str>, &str)> = vec![
        (vec!["log", "big", p(&src), "--type", "dataset"], "MiB"),
        (vec!["draft", "new", "big"], ""),
        (vec!["draft", "add", "big", p(&more), "--as", "more"], "MiB"),
        (vec!["draft", "commit", "big"], ""),
        (
            vec![
                "upsert",
                "shards",
                p(&more),
                "--type",
                "dataset",
                "--distributed-id",
                "r1",
            ],
            "MiB",
        ),
        (vec!["get", "big:v1", &dp], "MiB"),
        (vec!["verify"], "blobs checked"),
        (vec!["delete", "big:v0"], ""),
        (vec!["gc"], "blobs"),
    ];
    for (args, bar) in &commands {
        let (status, screen) = on_terminal(&s, args);
        assert!(status.success(), "{args:?} failed on a terminal:\n{screen}");
        if !bar.is_empty() {
            assert!(
                screen.contains(bar) && screen.contains('\r'),
                "{args:?} drew no progress bar ({bar:?}) on its terminal; it wrote:\n{screen:?}"
            );
        }
    }

    // Piped: the same kinds of command leave standard error empty.
    let s2 = TestStore::new();
    let src2 = data(&s2, "src", 16, 4 << 20);
    for args in [
        vec!["log", "big", p(&src2), "--type", "dataset"],
        vec!["verify"],
        vec!["gc"],
    ] {
        let out = s2.run(&args);
        assert_success(&out, &args);
        assert_eq!(stderr(&out), "", "{args:?} wrote to a piped standard error");
    }

    // --quiet on a terminal: no bar, and the result is still printed.
    let s3 = TestStore::new();
    let src3 = data(&s3, "src", 16, 4 << 20);
    for args in [
        vec!["--quiet", "log", "big", p(&src3), "--type", "dataset"],
        vec!["-q", "verify"],
    ] {
        let (status, screen) = on_terminal(&s3, &args);
        assert!(status.success(), "{args:?} failed:\n{screen}");
        assert_eq!(screen, "", "{args:?} drew on the terminal");
    }
    assert_eq!(
        s3.ok(&["list", "big"]).lines().count(),
        1,
        "quiet log made a version"
    );
}

#[test]
fn quiet_leaves_out_warnings_but_not_results_or_errors() {
    let s = TestStore::new();
    let v0 = s.tree("v0", &[("a.txt", "one\n")]);
    let v1 = s.tree("v1", &[("a.txt", "two\n")]);
    log(&s, "m", &v0);
    s.ok(&["draft", "new", "m"]);
    log(&s, "m", &v1);
    let loud = s.run(&["draft", "status", "m"]);
    assert!(
        stderr(&loud).contains("no longer latest"),
        "a stale draft is warned about"
    );
    let quiet = s.run(&["--quiet", "draft", "status", "m"]);
    assert_success(&quiet, &["--quiet", "draft", "status", "m"]);
    assert_eq!(stderr(&quiet), "", "--quiet still warned");
    assert_eq!(stdout(&quiet), stdout(&loud), "--quiet changed the result");
    let err = assert_failure(&s.run(&["-q", "show", "m:v9"]), &["-q", "show", "m:v9"]);
    assert!(err.contains("m:v9"), "errors still name the object: {err}");
}

/// Runs `script` with bash and returns its standard output, failing the test on an error.
fn bash(script: &str) -> String {
    let out = run_command({
        let mut c = std::process::Command::new("bash");
        c.arg("-c").arg(script);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    });
    assert_success(&out, &["bash", "-c", script]);
    stdout(&out)
}

#[test]
fn bash_completion_completes_commands_and_their_options() {
    let s = TestStore::new();
    let script = s.tmp.path().join("artifactfs.bash");
    fs::write(&script, s.ok(&["completions", "bash"])).unwrap();
    let complete = |words: &[&str]| -> Vec<String> {
        let line = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; _artifactfs artifactfs '{}' '{}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            words.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        bash(&line).lines().map(str::to_string).collect()
    };
    assert_eq!(complete(&["artifactfs", "dr"]), ["draft"]);
    assert_eq!(complete(&["artifactfs", "log", "--ty"]), ["--type"]);
    let drafts = complete(&["artifactfs", "draft", "c"]);
    assert_eq!(drafts, ["commit"], "sub-commands of draft starting with c");
    for shell in ["zsh", "fish"] {
        let text = s.ok(&["completions", shell]);
        assert!(
            text.contains("artifactfs") && text.contains("upsert"),
            "{shell} completion names the program and its commands:\n{text}"
        );
    }
    let bad = assert_failure(&s.run(&["completions", "tcsh"]), &["completions", "tcsh"]);
    assert!(bad.contains("tcsh"), "the refusal names the shell: {bad}");
}

#[test]
fn man_pages_cover_every_command_and_render() {
    let s = TestStore::new();
    let dir = s.tmp.path().join("man");
    s.ok(&["man", p(&dir)]);
    let mut pages: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for want in [
        "artifactfs.1",
        "artifactfs-log.1",
        "artifactfs-draft-commit.1",
        "artifactfs-mount.1",
        "artifactfs-verify.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} among {pages:?}");
    }
    if std::process::Command::new("man")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("`man` is not installed: run scripts/setup.sh (it installs man-db)");
    }
    let log_page = dir.join("artifactfs-log.1");
    let text = bash(&format!(
        "MANWIDTH=200 man -l '{}' | col -b",
        log_page.display()
    ));
    assert!(
        text.contains("Log PATHs as the whole new version of NAME") && text.contains("--type"),
        "man artifactfs-log shows the command's help:\n{text}"
    );
    // Not a store command: nothing is created where the store would be.
    assert!(
        !s.root.exists(),
        "`man` created the store {}",
        s.root.display()
    );
}
