//! How the command line fits a terminal and a shell: progress bars (drawn through a
//! pseudo-terminal, absent when piped or with `--quiet`), shell completion and man pages.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Stdio;

use common::mount::*;
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
        2,
        "quiet log made a version (under the header)"
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
    // Every page has the sections a man page reader looks for; every command's page shows
    // examples; the main page and mount's show the mount's layout and the .commit protocol.
    let render = |page: &str| {
        bash(&format!(
            "MANWIDTH=200 man -l '{}' 2>&1 | col -b",
            dir.join(page).display()
        ))
    };
    for page in &pages {
        let text = render(page);
        for section in [
            "\nNAME\n",
            "\nSYNOPSIS\n",
            "\nENVIRONMENT\n",
            "\nFILES\n",
            "\nSEE ALSO\n",
        ] {
            assert!(text.contains(section), "{page} has no {section:?}:\n{text}");
        }
        assert!(
            text.contains("ARTIFACTFS_STORE") && text.contains("catalog.db"),
            "{page}"
        );
        assert!(
            text.contains("\nEXAMPLES\n"),
            "{page} has no examples:\n{text}"
        );
        assert!(
            !text.contains("warning:"),
            "{page} renders with a warning:\n{text}"
        );
    }
    for page in ["artifactfs.1", "artifactfs-mount.1"] {
        let text = render(page);
        for want in [
            "\nTHE MOUNT\n",
            "drafts/",
            "ALIAS -> vN",
            "\nCOMMITTING THROUGH THE MOUNT\n",
            "EBUSY",
            "with open(",
        ] {
            assert!(text.contains(want), "{page}: no {want:?}:\n{text}");
        }
    }
    let text = render("artifactfs-alias-rm.1");
    assert!(text.contains("artifactfs alias rm mnist:v3 best"), "{text}");
    // Not a store command: nothing is created where the store would be.
    assert!(
        !s.root.exists(),
        "`man` created the store {}",
        s.root.display()
    );
}

/// A mount helper for this test build, under a type name of its own so that an installed
/// `mount.fuse.artifactfs` is neither used nor disturbed; removed when dropped.
struct Helper {
    link: std::path::PathBuf,
    fstype: String,
}

impl Helper {
    fn install() -> Self {
        let fstype = format!("fuse.artifactfs-test{}", std::process::id());
        let link = std::path::PathBuf::from(format!("/sbin/mount.{fstype}"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(BIN, &link)
            .unwrap_or_else(|e| panic!("link {} to the test binary: {e}", link.display()));
        Helper { link, fstype }
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.link);
    }
}

fn system_tool(program: &str, args: &[&str]) -> std::process::Output {
    let mut c = std::process::Command::new(program);
    c.args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_command(c)
}

#[test]
fn mount_t_and_fstab_lines_mount_through_the_helper() {
    require_fuse();
    let s = TestStore::new();
    let src = s.tree("src", &[("train/x.csv", "1,2\n"), ("README", "hello\n")]);
    log(&s, "mnist", &src);
    let helper = Helper::install();
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let (store, mnt) = (p(&s.root).to_string(), p(&mp).to_string());

    // mount -t fuse.artifactfs STORE DIR, with options mount(8) and systemd pass along.
    let out = system_tool(
        "mount",
        &[
            "-t",
            &helper.fstype,
            "-o",
            "noatime,x-systemd.automount",
            &store,
            &mnt,
        ],
    );
    assert_success(&out, &["mount", "-t", &helper.fstype]);
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(
        fs::read_to_string(m.path("mnist/latest/README")).unwrap(),
        "hello\n"
    );
    assert!(m.path("drafts").is_dir(), "the mount has its drafts/");
    let out = system_tool("umount", &[&mnt]);
    assert_success(&out, &["umount", &mnt]);
    assert!(!is_mounted(&m.mp), "umount left the mount in place");
    drop(m);

    // The /etc/fstab line docs/MOUNTING.md gives (here in a file of its own, given to
    // mount -T).
    let documented = documented_fstab_line();
    let fstab = s.path("fstab");
    let line = documented
        .replace("/srv/artifacts", &store)
        .replace("/mnt/artifacts", &mnt)
        .replace("fuse.artifactfs", &helper.fstype);
    fs::write(&fstab, format!("# artifacts\n{line}\n")).unwrap();
    let out = system_tool("mount", &["-T", p(&fstab), &mnt]);
    assert_success(&out, &["mount", "-T", p(&fstab), &mnt]);
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(
        fs::read_to_string(m.path("mnist/v0/train/x.csv")).unwrap(),
        "1,2\n"
    );
    drop(m);

    // -o ro: the read-only mount, versions only (as `artifactfs mount --read-only`).
    let out = system_tool(
        "mount",
        &["-t", &helper.fstype, "-o", "ro,nofail", &store, &mnt],
    );
    assert_success(&out, &["mount", "-t", &helper.fstype, "-o", "ro,nofail"]);
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(
        fs::read_to_string(m.path("mnist/latest/train/x.csv")).unwrap(),
        "1,2\n"
    );
    assert!(
        !m.path("drafts").exists(),
        "the read-only mount has no drafts/"
    );
    assert_eq!(
        fs::create_dir(m.path("drafts"))
            .err()
            .and_then(|e| e.raw_os_error()),
        Some(libc::EROFS)
    );
    let out = system_tool("findmnt", &["-no", "OPTIONS", &mnt]);
    assert!(
        stdout(&out).split(',').any(|o| o.trim() == "ro"),
        "findmnt shows ro: {}",
        stdout(&out)
    );
    drop(m);

    // Options it cannot honour fail the mount, naming the option; nothing is mounted.
    let out = system_tool(
        "mount",
        &["-t", &helper.fstype, "-o", "allow_root", &store, &mnt],
    );
    let err = assert_failure(&out, &["mount", "-o", "allow_root"]);
    assert!(err.contains("allow_root"), "mount -o allow_root: {err}");
    assert!(!is_mounted(&mp), "mount -o allow_root mounted anyway");
    // A store that is not one: mount(8) reports the helper's error.
    let not_store = s.file("plain-file", "x");
    let out = system_tool("mount", &["-t", &helper.fstype, p(&not_store), &mnt]);
    assert_eq!(
        out.status.code(),
        Some(32),
        "mount(8)'s status for a failed mount"
    );
    let err = stderr(&out);
    assert!(
        err.contains("plain-file") && err.contains("not a directory"),
        "the error names the store and the cause: {err}"
    );
    assert!(!is_mounted(&mp));
}

fn mounting_doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/MOUNTING.md");
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The fstab line of docs/MOUNTING.md.
fn documented_fstab_line() -> String {
    let doc = mounting_doc();
    let lines: Vec<&str> = doc
        .lines()
        .filter(|l| l.starts_with('/') && l.contains(" fuse.artifactfs "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "docs/MOUNTING.md has one fstab line: {lines:?}"
    );
    lines[0].to_string()
}

/// The value of `key=` in the systemd unit of docs/MOUNTING.md, split into words.
fn documented_unit(key: &str) -> Vec<String> {
    let doc = mounting_doc();
    let unit = doc
        .split("```ini")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/MOUNTING.md has an ```ini unit");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="));
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn the_documented_systemd_service_starts_serves_and_stops() {
    require_fuse();
    let s = TestStore::new();
    let src = s.tree("src", &[("weights.bin", "w1")]);
    log(&s, "model", &src);
    let mp = s.path("mnt");
    let (store, mnt) = (p(&s.root).to_string(), p(&mp).to_string());
    // What systemd would run, with this build, store and mount point in the unit's places.
    let command = |key: &str| -> std::process::Command {
        let words: Vec<String> = documented_unit(key)
            .into_iter()
            .map(|w| {
                w.replace("/usr/local/bin/artifactfs", BIN)
                    .replace("/srv/artifacts", &store)
                    .replace("/mnt/artifacts", &mnt)
            })
            .collect();
        let mut c = std::process::Command::new(&words[0]);
        c.args(&words[1..])
            .env_remove("RUST_LOG")
            .env_remove("ARTIFACTFS_STORE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let out = run_command(command("ExecStartPre"));
    assert_success(&out, &["ExecStartPre"]);
    let service = command("ExecStart").spawn().expect("start ExecStart");
    wait_until(
        "the service's mount to answer",
        std::time::Duration::from_secs(20),
        || {
            fs::read_to_string(mp.join("model/latest/weights.bin"))
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(
        fs::read_to_string(m.path("model/v0/weights.bin")).unwrap(),
        "w1"
    );
    let out = run_command(command("ExecStop"));
    assert_success(&out, &["ExecStop"]);
    let done = finish(service, std::time::Duration::from_secs(20));
    assert!(
        done.status.success(),
        "the service's main process ended with {}: {}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(!is_mounted(&m.mp), "ExecStop left the mount in place");
}

#[test]
fn the_training_example_reads_from_the_mount_and_commits_a_model() {
    require_fuse();
    let numpy = std::process::Command::new("python3")
        .args(["-c", "import numpy"])
        .output();
    assert!(
        numpy.is_ok_and(|o| o.status.success()),
        "examples/train.py needs NumPy: run scripts/setup.sh (it installs numpy from PyPI)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/train.py");
    let s = TestStore::new();
    let data = s.path("data");
    tool_ok(
        "python3",
        &[script.as_ref(), "--make-data".as_ref(), data.as_os_str()],
        None,
    );
    log(&s, "regression", &data);
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    let mnt = m.mp.as_os_str();

    let first = tool_ok("python3", &[script.as_ref(), mnt], None);
    assert!(
        first.starts_with("linear:v0: ") && first.contains("on regression:v0"),
        "first run: {first}"
    );
    let second = tool_ok(
        "python3",
        &[script.as_ref(), mnt, "--alias".as_ref(), "best".as_ref()],
        None,
    );
    assert!(second.starts_with("linear:v1: "), "second run: {second}");

    let show: serde_json::Value =
        serde_json::from_str(&s.ok(&["--json", "show", "linear:best"])).unwrap();
    assert_eq!(show["type"], "model");
    assert_eq!(show["metadata"]["trained_on"], "regression:v0");
    assert!(show["metadata"]["loss"].as_f64().unwrap() < 0.01, "{show}");
    assert_eq!(ls(&s, "linear:v1"), ["metrics.json", "weights.npy"]);
    // The committed weights are what a reader of the mount loads, and what `cat` gives.
    let through_mount = fs::read(m.path("linear/best/weights.npy")).unwrap();
    let out = s.run(&["cat", "linear:v1", "weights.npy"]);
    assert_eq!(out.stdout, through_mount);
    assert_eq!(
        s.ok(&["draft", "list"]),
        "no drafts\n",
        "the drafts were committed"
    );
}

fn doctor(s: &TestStore) -> (Option<i32>, serde_json::Value, String) {
    let out = s.run(&["doctor", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("doctor --json: {e}: {}", stdout(&out)));
    let text = stdout(&s.run(&["doctor"]));
    (out.status.code(), report, text)
}

/// The findings of a report at `severity`, as "what: why (fix)" lines.
fn findings(report: &serde_json::Value, severity: &str) -> Vec<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == severity)
        .map(|f| format!("{}: {} (fix: {})", f["what"], f["why"], f["fix"]))
        .collect()
}

#[test]
fn doctor_describes_the_store_and_its_mounts_and_names_what_is_wrong_with_a_fix() {
    require_fuse();
    let s = TestStore::new();
    let (code, report, _) = doctor(&s);
    assert_eq!(code, Some(0), "no store yet is not a problem: {report}");
    assert_eq!(report["exists"], false);
    assert!(
        findings(&report, "warning")
            .iter()
            .any(|f| f.contains("no store here yet")),
        "{report}"
    );
    assert!(!s.root.exists(), "doctor created the store");

    let src = s.tree("src", &[("a.bin", "alpha"), ("b.bin", "bravo")]);
    log(&s, "data", &src);
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    let (code, report, text) = doctor(&s);
    assert_eq!(code, Some(0), "{report}");
    assert!(findings(&report, "problem").is_empty(), "{report}");
    assert_eq!(report["schema"], report["supported_schema"]);
    assert!(
        report["shared"].is_null(),
        "an embedded store has no shared part: {report}"
    );
    // The shape docs/JSON.md gives.
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "artifact_count",
            "blob_bytes",
            "blob_count",
            "catalog_bytes",
            "draft_count",
            "exists",
            "findings",
            "free_bytes",
            "mounts",
            "schema",
            "shared",
            "store",
            "supported_schema"
        ],
    );
    assert_eq!(
        (report["blob_count"].as_u64(), report["blob_bytes"].as_u64()),
        (Some(2), Some(10))
    );
    assert_eq!(
        (
            report["artifact_count"].as_u64(),
            report["draft_count"].as_u64()
        ),
        (Some(1), Some(0))
    );
    let mounts = report["mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{report}");
    assert_eq!(mounts[0]["mountpoint"], p(&m.mp));
    assert_eq!(mounts[0]["server_pid"], m.server_pid());
    assert_eq!(mounts[0]["answering"], true);
    assert!(
        ["on", "off"].contains(&mounts[0]["passthrough"].as_str().unwrap_or("")),
        "{report}"
    );
    assert!(
        text.contains(&format!("{} (server pid {}", p(&m.mp), m.server_pid())),
        "{text}"
    );

    // Leftovers of an interrupted writer: a warning, fixed by gc.
    fs::write(s.root.join("staging/ingest-leftover"), b"x").unwrap();
    let (code, report, _) = doctor(&s);
    assert_eq!(code, Some(0));
    assert!(
        findings(&report, "warning")
            .iter()
            .any(|f| f.contains("interrupted") && f.contains("gc")),
        "{report}"
    );

    // A mount whose server died: a problem naming the mount point, status 3; its fix works.
    m.kill_server(m.server_pid(), std::time::Duration::from_secs(20));
    let (code, report, text) = doctor(&s);
    assert_eq!(code, Some(3), "{report}");
    let problems = findings(&report, "problem");
    assert!(
        problems.len() == 1 && problems[0].contains(p(&m.mp)) && problems[0].contains("umount -l"),
        "{problems:?}"
    );
    let finding = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "problem")
        .unwrap();
    let keys: Vec<&str> = finding
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["fix", "severity", "what", "why"]);
    assert!(
        text.contains("problem: mount ") && text.contains("fix: umount -l"),
        "{text}"
    );
    let out = system_tool("umount", &["-l", p(&m.mp)]);
    assert_success(&out, &["umount", "-l"]);
    s.ok(&["gc"]);
    let (code, report, _) = doctor(&s);
    assert_eq!(code, Some(0), "after the fixes: {report}");
    assert!(report["mounts"].as_array().unwrap().is_empty());
    assert!(
        findings(&report, "warning")
            .iter()
            .all(|f| !f.contains("interrupted"))
    );
    drop(m);

    // A catalog from a newer build: a problem, and nothing is changed.
    {
        let conn = rusqlite::Connection::open(s.root.join("catalog.db")).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let (code, report, _) = doctor(&s);
    assert_eq!(code, Some(3), "{report}");
    let problems = findings(&report, "problem");
    assert!(
        problems
            .iter()
            .any(|f| f.contains("newer") && f.contains("99")),
        "{problems:?}"
    );
    // A store path that is a file.
    let file = s.file("not-a-store", "x");
    let out = run_command({
        let mut c = s.command(&["doctor"]);
        c.arg("--store").arg(&file);
        c
    });
    assert_eq!(out.status.code(), Some(3));
    assert!(stdout(&out).contains("not a directory"), "{}", stdout(&out));
}

const README: &str = include_str!("../README.md");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The README's commands for completions and man pages work as printed in a new home
/// directory (where neither ~/.zfunc nor a man directory exists), and every mount it shows
/// is preceded by the `mkdir` its mount point needs.
#[test]
fn the_readme_commands_work_as_printed_on_a_fresh_home() {
    let s = TestStore::new();
    let home = s.path("home");
    fs::create_dir_all(&home).unwrap();
    let bin_dir = s.path("bin");
    fs::create_dir_all(&bin_dir).unwrap();
    std::os::unix::fs::symlink(BIN, bin_dir.join("artifactfs")).unwrap();
    let lines: Vec<&str> = README
        .lines()
        .filter(|l| l.starts_with("mkdir -p ~/.zfunc") || l.starts_with("artifactfs man ~/"))
        .collect();
    assert_eq!(
        lines.len(),
        2,
        "the README's completion and man lines: {lines:?}"
    );
    for line in lines {
        let out = run_command({
            let mut c = std::process::Command::new("bash");
            c.arg("-c")
                .arg(line)
                .env("HOME", &home)
                .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c
        });
        assert_success(&out, &[line]);
    }
    assert!(
        fs::read_to_string(home.join(".zfunc/_artifactfs"))
            .unwrap()
            .contains("artifactfs")
    );
    assert!(
        home.join(".local/share/man/man1/artifactfs-draft-commit.1")
            .is_file()
    );

    for (i, line) in README.lines().enumerate() {
        let Some(rest) = line.strip_prefix("artifactfs mount ") else {
            continue;
        };
        // The mount point is the first argument that is not a flag.
        let mp = rest
            .split_whitespace()
            .find(|w| !w.starts_with('-'))
            .unwrap();
        let before: Vec<&str> = README.lines().take(i).collect();
        assert!(
            before
                .iter()
                .rev()
                .take(3)
                .any(|l| l.contains(&format!("mkdir -p {mp}"))),
            "README line {}: `{line}` without `mkdir -p {mp}` before it",
            i + 1
        );
    }
}

/// demo.sh prints each command as a shell reads it back: the words it ran, quotes and all.
#[test]
fn demo_sh_prints_commands_that_can_be_pasted() {
    require_fuse();
    let s = TestStore::new();
    let dir = s.path("demo");
    let out = run_command({
        let mut c = std::process::Command::new("bash");
        c.arg(format!("{REPO}/scripts/demo.sh"))
            .env("ARTIFACTFS_BIN", BIN)
            .env("DEMO_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    });
    assert_success(&out, &["scripts/demo.sh"]);
    let text = stdout(&out);
    let commands: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("$ ")).collect();
    assert!(commands.len() > 10, "{text}");
    assert_eq!(
        commands[0],
        format!("export ARTIFACTFS_STORE={}/store", dir.display())
    );
    let words = |line: &str| -> Vec<String> {
        bash(&format!("set -- {line}; printf '%s\\n' \"$@\""))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let log = commands
        .iter()
        .find(|c| c.contains("--metadata"))
        .expect("the demo logs with metadata");
    let w = words(log);
    assert_eq!(w[0], "artifactfs");
    let after = |flag: &str| w[w.iter().position(|x| x == flag).unwrap() + 1].clone();
    assert_eq!(after("--description"), "first cut");
    assert_eq!(after("--metadata"), r#"{"source": "bundled example"}"#);
    for c in &commands[1..] {
        let first = words(c)[0].clone();
        assert!(
            ["artifactfs", "ls", "cat", "sha256sum", "mkdir"].contains(&first.as_str()),
            "{c}: the binary is printed as artifactfs"
        );
    }
    // A pasted query gives what the demo printed.
    let show = commands
        .iter()
        .find(|c| c.starts_with("artifactfs show"))
        .unwrap();
    let pasted = bash(&format!(
        "export ARTIFACTFS_STORE='{}/store'; PATH='{}':$PATH; {}",
        dir.display(),
        std::path::Path::new(BIN).parent().unwrap().display(),
        show
    ));
    assert!(text.contains(&pasted), "{pasted}\nnot in\n{text}");
}

/// The installed binary is stripped; the build keeps its line tables for profiling.
#[test]
fn install_sh_strips_the_binary_it_installs() {
    let install = fs::read_to_string(format!("{REPO}/scripts/install.sh")).unwrap();
    assert!(
        install
            .lines()
            .any(|l| l.contains("install -D -s") && l.contains("target/release/artifactfs")),
        "install.sh installs with -s (strip)"
    );
    let cargo = fs::read_to_string(format!("{REPO}/Cargo.toml")).unwrap();
    assert!(
        cargo.contains("[profile.release]\ndebug = 1"),
        "release keeps line tables"
    );
}
