//! Runs and lineage (docs/SEMANTICS.md, "Runs and lineage"), with the real binary and real
//! mounts: a three-stage pipeline whose training reads through the mount from Python worker
//! processes and commits through `.commit`, checked against its exact lineage graph and an
//! SVG of it; processes outside any run record nothing; two runs at once on one mount are
//! told apart; a run whose `run` process is SIGKILLed is found crashed; hostile names and
//! configs, and an ARTIFACTFS_RUN that names no run, get a clear error or are ignored.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::mount::*;
use common::*;
use serde_json::{Value, json};

fn mountpoint(s: &TestStore) -> std::path::PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

/// `artifactfs --store S ARGS` with extra environment (ARTIFACTFS_RUN …), run to the end.
fn run_env(s: &TestStore, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut cmd = s.command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd)
}

/// The inputs (or outputs) of a run, as `ref via` strings.
fn links(s: &TestStore, run: &str, which: &str) -> Vec<String> {
    let shown = s.json(&["run", "show", run]);
    shown[which]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{} {}",
                l["ref"].as_str().unwrap(),
                l["via"].as_str().unwrap()
            )
        })
        .collect()
}

fn count(s: &TestStore, table: &str) -> usize {
    s.sql(&format!("SELECT count(*) FROM {table}"))[0][0]
        .parse()
        .unwrap()
}

/// Training: two worker processes read the dataset through the mount; the parent writes the
/// model into a draft and commits it through `.commit`, as a user's code would.
const TRAIN: &str = r#"
import json, multiprocessing, os, sys
mount = sys.argv[1]
data = os.path.join(mount, "mnist", "latest")

def load(name):
    with open(os.path.join(data, "images", name)) as f:
        return len(f.read())

if __name__ == "__main__":
    names = sorted(os.listdir(os.path.join(data, "images")))
    with multiprocessing.get_context("fork").Pool(2) as pool:
        sizes = pool.map(load, names)
    draft = os.path.join(mount, "drafts", "model")
    os.mkdir(draft)
    with open(os.path.join(draft, "weights.txt"), "w") as f:
        f.write("w=%d\n" % sum(sizes))
    with open(os.path.join(draft, ".commit"), "r+") as f:
        f.write(json.dumps({"type": "model", "aliases": ["best"]}))
        f.flush()
        print(f.read().strip())
"#;

/// Evaluation: a child process reads the model through the mount; the labels come by `cat`;
/// the report is logged.
const EVALUATE: &str = r#"
set -e
weights=$(python3 -c 'import sys; print(open(sys.argv[1]).read())' "$MOUNT/model/best/weights.txt")
"$BIN" cat mnist:v0 labels.csv > "$WORK/labels.csv"
mkdir -p "$WORK/report"
echo "$weights $(wc -l < "$WORK/labels.csv")" > "$WORK/report/score.txt"
"$BIN" log report "$WORK/report" --type evaluation
"#;

#[test]
fn a_three_stage_pipeline_has_its_exact_lineage() {
    require_fuse();
    let s = TestStore::new();
    let raw = s.tree("raw", &[("scan.csv", "id\n0\n1\n")]);
    log(&s, "raw", &raw);
    let m = Mounted::new(&s, &mountpoint(&s));
    let work = s.path("work");
    fs::create_dir_all(&work).unwrap();
    let bin = Path::new(BIN);

    // 1. prepare: get the raw data, log the dataset.
    let prepare = format!(
        "set -e; '{b}' get raw:v0 '{w}/raw' >/dev/null; mkdir -p '{w}/ds/images'; \
         cp '{w}/raw/scan.csv' '{w}/ds/labels.csv'; echo img0 > '{w}/ds/images/0.png'; \
         echo img1 > '{w}/ds/images/1.png'; '{b}' log mnist '{w}/ds' --type dataset",
        b = bin.display(),
        w = work.display()
    );
    let out = s.ok(&[
        "run",
        "--id",
        "prep",
        "--name",
        "prepare",
        "--job-type",
        "preprocess",
        "--",
        "sh",
        "-c",
        &prepare,
    ]);
    assert_eq!(out.trim(), "mnist:v0");

    // 2. train: Python workers read through the mount; the model is committed through it.
    let out = s.ok(&[
        "run",
        "--id",
        "train",
        "--name",
        "train",
        "--job-type",
        "train",
        "--config",
        r#"{"lr": 0.1, "epochs": 2}"#,
        "--",
        "python3",
        "-c",
        TRAIN,
        p(&m.mp),
    ]);
    assert_eq!(out.trim(), "model:v0");

    // 3. evaluate: a child process reads the model through the mount, `cat` the labels.
    let mut cmd = s.command(&[
        "run",
        "--id",
        "eval",
        "--name",
        "evaluate",
        "--job-type",
        "eval",
        "--",
        "sh",
        "-c",
        EVALUATE,
    ]);
    cmd.env("MOUNT", &m.mp).env("WORK", &work).env("BIN", bin);
    let out = run_command(cmd);
    assert_success(&out, &["run evaluate"]);
    assert_eq!(stdout(&out).trim(), "report:v0");

    // Each run's inputs and outputs, and how each was seen.
    assert_eq!(links(&s, "prep", "inputs"), ["raw:v0 get"]);
    assert_eq!(links(&s, "prep", "outputs"), ["mnist:v0 log"]);
    assert_eq!(links(&s, "train", "inputs"), ["mnist:v0 mount"]);
    assert_eq!(links(&s, "train", "outputs"), ["model:v0 .commit"]);
    assert_eq!(
        links(&s, "eval", "inputs"),
        ["mnist:v0 cat", "model:v0 mount"]
    );
    assert_eq!(links(&s, "eval", "outputs"), ["report:v0 log"]);
    let train = s.json(&["run", "show", "train"]);
    assert_eq!(train["state"], "finished");
    assert_eq!(train["exit_code"], 0);
    assert_eq!(train["config"], json!({"lr": 0.1, "epochs": 2}));
    assert_eq!(train["job_type"], "train");
    assert_eq!(train["command"][0], "python3");

    // The exact graph around the model: every node, every edge.
    let g = s.json(&["lineage", "model:v0"]);
    let nodes: BTreeSet<(String, String)> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let what = match n["kind"].as_str().unwrap() {
                "run" => format!("run {} {}", n["name"], n["state"]),
                _ => format!("version {} exists={}", n["type"], n["exists"]),
            };
            (n["id"].as_str().unwrap().to_string(), what)
        })
        .collect();
    let want_nodes: BTreeSet<(String, String)> = [
        ("raw:v0", "version \"dataset\" exists=true"),
        ("prep", "run \"prepare\" \"finished\""),
        ("mnist:v0", "version \"dataset\" exists=true"),
        ("train", "run \"train\" \"finished\""),
        ("model:v0", "version \"model\" exists=true"),
        ("eval", "run \"evaluate\" \"finished\""),
        ("report:v0", "version \"evaluation\" exists=true"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(nodes, want_nodes, "{g:#}");
    let edges: BTreeSet<String> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| format!("{} -{}-> {}", e["from"], e["kind"], e["to"]).replace('"', ""))
        .collect();
    let want_edges: BTreeSet<String> = [
        "raw:v0 -input-> prep",
        "prep -output-> mnist:v0",
        "mnist:v0 -input-> train",
        "train -output-> model:v0",
        "model:v0 -input-> eval",
        "mnist:v0 -input-> eval",
        "eval -output-> report:v0",
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    assert_eq!(edges, want_edges, "{g:#}");
    assert_eq!(g["ref"], "model:v0");
    assert_eq!(g["truncated"], false);

    // --depth bounds the walk: one run each way.
    let near = s.json(&["lineage", "model:v0", "--depth", "1"]);
    let ids: BTreeSet<&str> = near["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["mnist:v0", "train", "model:v0", "eval", "report:v0"])
    );

    // The picture: valid SVG with a node for every run and version.
    let svg = s.path("lineage.svg");
    s.ok(&["lineage", "model:v0", "--svg", p(&svg)]);
    let titles = python_ok(
        r#"
import sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
for g in root.iter("{http://www.w3.org/2000/svg}g"):
    if g.get("class") == "node":
        print(g.find("s:title", ns).text)
"#,
        &[svg.as_os_str()],
    );
    let titles: BTreeSet<&str> = titles.lines().collect();
    let ids: BTreeSet<&str> = want_nodes.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(titles, ids);

    // The text, and who made a version: show, and the version directory's xattr.
    let text = s.ok(&["lineage", "model:v0"]);
    assert!(
        text.contains("made by run train \"train\" [train], finished"),
        "{text}"
    );
    assert!(text.contains("read by run eval \"evaluate\""), "{text}");
    assert_eq!(s.json(&["show", "model:best"])["run"], "train");
    assert_eq!(s.json(&["show", "raw:v0"])["run"], Value::Null);
    assert!(s.ok(&["show", "model:v0"]).contains("run: train (made it)"));
    assert_eq!(
        getxattr(&m.path("model/v0"), "user.artifactfs.run").unwrap(),
        b"train"
    );
    assert_eq!(
        getxattr(&m.path("raw/v0"), "user.artifactfs.run"),
        Err(libc::ENODATA)
    );
    let dot = s.ok(&["lineage", "model:v0", "--dot"]);
    assert!(dot.starts_with("digraph lineage {"), "{dot}");
    // Without Graphviz, the picture says how to get it.
    let mut cmd = s.command(&["lineage", "model:v0", "--svg", p(&s.path("none.svg"))]);
    cmd.env("PATH", "/nonexistent");
    let out = run_command(cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("apt install graphviz"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn processes_outside_any_run_record_nothing() {
    require_fuse();
    let s = TestStore::new();
    log(
        &s,
        "mnist",
        &s.tree("d", &[("a.txt", "a\n"), ("b/c.txt", "c\n")]),
    );
    let m = Mounted::new(&s, &mountpoint(&s));
    python_ok(
        r#"
import multiprocessing, os, sys
def read(p):
    return open(p).read()
if __name__ == "__main__":
    root = os.path.join(sys.argv[1], "mnist", "latest")
    with multiprocessing.Pool(2) as pool:
        pool.map(read, [os.path.join(root, "a.txt"), os.path.join(root, "b", "c.txt")] * 4)
"#,
        &[m.mp.as_os_str()],
    );
    fs::create_dir(m.path("drafts/out")).unwrap();
    fs::write(m.path("drafts/out/x.txt"), "x\n").unwrap();
    assert_eq!(write_control(&m.path("drafts/out/.commit"), "commit"), "ok");
    assert_eq!(versions(&s, "out"), ["v0"]);
    s.ok(&["cat", "mnist", "a.txt"]);
    s.ok(&["get", "mnist", p(&s.path("got"))]);
    log(&s, "other", &s.tree("o", &[("o.txt", "o\n")]));
    for table in ["runs", "run_inputs", "run_outputs"] {
        assert_eq!(count(&s, table), 0, "{table}");
    }
    assert_eq!(s.ok(&["runs"]).trim(), "no runs");
    assert_eq!(
        getxattr(&m.path("out/v0"), "user.artifactfs.run"),
        Err(libc::ENODATA)
    );
}

#[test]
fn two_runs_at_once_on_one_mount_are_told_apart() {
    require_fuse();
    let s = TestStore::new();
    log(&s, "left", &s.tree("l", &[("x.txt", "left\n")]));
    log(&s, "right", &s.tree("r", &[("x.txt", "right\n")]));
    let m = Mounted::new(&s, &mountpoint(&s));
    let reader = r#"
import multiprocessing, os, sys, time
def read(p):
    end = time.time() + 1.5
    while time.time() < end:
        with open(p) as f:
            f.read()
    return True
if __name__ == "__main__":
    path = os.path.join(sys.argv[1], sys.argv[2], "v0", "x.txt")
    with multiprocessing.Pool(2) as pool:
        pool.map(read, [path, path])
"#;
    let mut children = Vec::new();
    for (id, artifact) in [("run-left", "left"), ("run-right", "right")] {
        s.ok(&["run", "begin", "--id", id]);
        let child = Command::new("python3")
            .args(["-c", reader])
            .arg(&m.mp)
            .arg(artifact)
            .env("ARTIFACTFS_RUN", id)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for child in children {
        let out = finish(child, Duration::from_secs(60));
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(links(&s, "run-left", "inputs"), ["left:v0 mount"]);
    assert_eq!(links(&s, "run-right", "inputs"), ["right:v0 mount"]);
    // Once per run and version, however many opens.
    assert_eq!(count(&s, "run_inputs"), 2);
    for id in ["run-left", "run-right"] {
        let ended = s.json(&["run", "end", id]);
        assert_eq!(ended["state"], "finished");
    }
}

#[test]
fn a_run_whose_process_is_killed_is_marked_so() {
    let s = TestStore::new();
    s.init();
    let pidfile = s.path("cmd.pid");
    let script = format!("echo $$ > '{}'; exec sleep 60", pidfile.display());
    let mut run = s
        .command(&["run", "--id", "doomed", "--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    wait_until("the command runs", Duration::from_secs(20), || {
        let out = s.run(&["--json", "run", "show", "doomed"]);
        let shown: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match (pidfile.exists(), shown["state"] == "running") {
            (true, true) => Ok(()),
            _ => Err(stderr(&out)),
        }
    });
    // SIGKILL: `run` can record nothing; the next reader finds it gone.
    run.kill().unwrap();
    run.wait().unwrap();
    let cmd_pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    unsafe { libc::kill(cmd_pid, libc::SIGKILL) };
    let runs = s.json(&["runs"]);
    assert_eq!(runs[0]["run"], "doomed");
    assert_eq!(runs[0]["state"], "crashed", "{runs:#}");
    assert!(runs[0]["ended"].is_string());
    assert_eq!(s.sql("SELECT state FROM runs")[0][0], "\"crashed\"");
    assert!(s.ok(&["runs"]).contains("crashed"));

    // The command killed by a signal: `run` sees it, says so, and exits as a shell would.
    let out = s.run(&["run", "--id", "shot", "--", "sh", "-c", "kill -9 $$"]);
    assert_eq!(out.status.code(), Some(137));
    let shot = s.json(&["run", "show", "shot"]);
    assert_eq!(
        (shot["state"].clone(), shot["signal"].clone()),
        (json!("killed"), json!(9))
    );
    // Other statuses pass through; a command that cannot start is 127, as in a shell.
    let out = s.run(&["run", "--id", "three", "--", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(s.json(&["run", "show", "three"])["state"], "failed");
    let out = s.run(&["run", "--", "no-such-command-anywhere"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("cannot run no-such-command-anywhere"),
        "{}",
        stderr(&out)
    );

    // A begun run tied to a process dies with it; one ended by hand says how.
    let mut job = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = job.id().to_string();
    s.ok(&["run", "begin", "--id", "job", "--pid", &pid]);
    assert_eq!(s.json(&["run", "show", "job"])["state"], "running");
    job.kill().unwrap();
    job.wait().unwrap();
    assert_eq!(s.json(&["run", "show", "job"])["state"], "crashed");
    s.ok(&["run", "begin", "--id", "manual"]);
    let ended = s.json(&["run", "end", "manual", "--exit-code", "2"]);
    assert_eq!(
        (ended["state"].clone(), ended["exit_code"].clone()),
        (json!("failed"), json!(2))
    );
    refused(
        &s,
        &["run", "end", "manual"],
        &["run end manual", "ended already"],
    );
}

#[test]
fn a_group_is_the_distributed_id_inside_a_run() {
    let s = TestStore::new();
    s.init();
    let bin = Path::new(BIN).display().to_string();
    for part in ["a", "b"] {
        let file = s.file(&format!("{part}.txt"), part);
        let script = format!("'{bin}' upsert shards '{}'", file.display());
        s.ok(&["run", "--group", "epoch-1", "--", "sh", "-c", &script]);
    }
    let script = format!("'{bin}' finish shards");
    let out = s.ok(&[
        "run", "--id", "fin", "--group", "epoch-1", "--", "sh", "-c", &script,
    ]);
    assert_eq!(out.trim(), "shards:v0");
    assert_eq!(ls(&s, "shards:v0"), ["a.txt", "b.txt"]);
    assert_eq!(links(&s, "fin", "outputs"), ["shards:v0 finish"]);
    // The group reaches the command too; outside a run, the id is needed.
    let out = s.ok(&[
        "run",
        "--group",
        "g7",
        "--",
        "sh",
        "-c",
        "echo $ARTIFACTFS_RUN_GROUP",
    ]);
    assert_eq!(out.trim(), "g7");
    let err = s.fail(&["upsert", "shards", p(&s.file("c.txt", "c"))]);
    assert!(err.contains("--distributed-id"), "{err}");
}

#[test]
fn deleted_versions_keep_their_lineage_and_gc_keeps_runs() {
    let s = TestStore::new();
    s.init();
    let bin = Path::new(BIN).display().to_string();
    let d = s.tree("d", &[("a.txt", "1\n")]);
    let script = format!(
        "set -e; '{bin}' log x '{d}'; echo 2 > '{d}/a.txt'; '{bin}' log x '{d}'; '{bin}' log x '{d}'",
        d = d.display()
    );
    s.ok(&["run", "--id", "maker", "--", "sh", "-c", &script]);
    s.ok(&["delete", "x:v0"]);
    s.ok(&["gc"]);
    let shown = s.json(&["run", "show", "maker"]);
    assert_eq!(
        shown["outputs"],
        json!([
            {"ref": "x:v0", "via": "log", "exists": false, "unchanged": false},
            {"ref": "x:v1", "via": "log", "exists": true, "unchanged": false},
        ])
    );
    let g = s.json(&["lineage", "x:v0"]);
    let v0 = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "x:v0")
        .unwrap()
        .clone();
    assert_eq!(v0["exists"], false);
    assert!(
        s.ok(&["lineage", "x:v0"])
            .contains("x:v0 (dataset) [deleted]")
    );
    assert!(
        s.ok(&["run", "show", "maker"])
            .contains("x:v0 (by log) [deleted]")
    );
    // A version no run ever touched is still unknown once deleted.
    log(&s, "y", &s.tree("y", &[("y.txt", "y\n")]));
    s.ok(&["delete", "y:v0"]);
    let err = s.fail(&["lineage", "y:v0"]);
    assert!(err.contains("y:v0"), "{err}");
}

#[test]
fn hostile_names_configs_and_unknown_runs() {
    require_fuse();
    let s = TestStore::new();
    log(&s, "mnist", &s.tree("d", &[("a.txt", "a\n")]));
    // Refused at parse time, or before anything is recorded; each names what was wrong.
    let long = "n".repeat(129);
    for (args, needle) in [
        (
            vec!["run", "--name", "a\nb", "--", "true"],
            "control character",
        ),
        (
            vec!["run", "--name", "\u{1b}[31m", "--", "true"],
            "control character",
        ),
        (vec!["run", "--name", "  ", "--", "true"], "empty"),
        (vec!["run", "--name", &long, "--", "true"], "129 characters"),
        (vec!["run", "--group", "a b", "--", "true"], "' '"),
        (vec!["run", "--group", "../x", "--", "true"], "'/'"),
        (vec!["run", "--job-type", "t;rm", "--", "true"], "';'"),
        (vec!["run", "--id", "x/y", "--", "true"], "'/'"),
        (
            vec!["run", "--config", "[1, 2]", "--", "true"],
            "must be a JSON object",
        ),
        (
            vec!["run", "--config", "{nope", "--", "true"],
            "not valid JSON",
        ),
        (vec!["run", "--"], "<CMD>"),
        (vec!["run", "show", "nosuch"], "run nosuch does not exist"),
    ] {
        let err = s.fail(&args);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    assert_eq!(count(&s, "runs"), 0);
    let err = s.fail(&["run", "echo", "hi"]);
    assert!(err.contains("after `--`"), "{err}");
    s.ok(&["run", "--id", "dup", "--", "true"]);
    let err = s.fail(&["run", "--id", "dup", "--", "true"]);
    assert!(err.contains("run dup already exists"), "{err}");

    // Any text is a name, and shows as itself in JSON, DOT and SVG.
    let name = "it's \"quoted\" \\ <b>&amp; ✓";
    let bin = Path::new(BIN).display().to_string();
    let script = format!("'{bin}' cat mnist a.txt >/dev/null");
    s.ok(&[
        "run", "--id", "odd", "--name", name, "--", "sh", "-c", &script,
    ]);
    assert_eq!(s.json(&["run", "show", "odd"])["name"], name);
    let svg = s.path("odd.svg");
    s.ok(&["lineage", "mnist", "--svg", p(&svg)]);
    let text = python_ok(
        "import sys, xml.etree.ElementTree as ET; print(''.join(ET.parse(sys.argv[1]).getroot().itertext()))",
        &[svg.as_os_str()],
    );
    assert!(text.contains(name), "{text}");

    // An ARTIFACTFS_RUN naming no run: a warning, the command does its work, nothing is
    // recorded (and with --json, nothing on standard error).
    let before = (count(&s, "run_inputs"), count(&s, "run_outputs"));
    for bogus in ["nosuch", "'; DROP TABLE runs; --", &"z".repeat(5000)] {
        let out = run_env(&s, &[("ARTIFACTFS_RUN", bogus)], &["cat", "mnist", "a.txt"]);
        assert_success(&out, &["cat"]);
        assert_eq!(stdout(&out), "a\n");
        assert!(stderr(&out).contains("names no run"), "{}", stderr(&out));
    }
    let out = run_env(
        &s,
        &[("ARTIFACTFS_RUN", "nosuch")],
        &["--json", "log", "other", p(&s.tree("o", &[("o", "o")]))],
    );
    assert_success(&out, &["log"]);
    assert_eq!(stderr(&out), "");
    // Through the mount: read as usual, recorded nowhere.
    let m = Mounted::new(&s, &mountpoint(&s));
    let mut cmd = Command::new("cat");
    cmd.arg(m.path("mnist/v0/a.txt"))
        .env("ARTIFACTFS_RUN", "nosuch")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = run_command(cmd);
    assert_eq!(stdout(&out), "a\n");
    assert_eq!((count(&s, "run_inputs"), count(&s, "run_outputs")), before);
    assert_eq!(count(&s, "runs"), 2);
    wait_until(
        "the mount logs the unknown run",
        Duration::from_secs(5),
        || match m.log().contains("names no run") {
            true => Ok(()),
            false => Err(tail(&m.log(), 500)),
        },
    );
}
