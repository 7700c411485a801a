//! Reliability under concurrency (issue "Reliability"): 8 processes write into one draft through
//! the mount while other processes read versions through the mount, the CLI commits drafts of
//! other artifacts, moves aliases and deletes old versions, a process commits drafts through
//! `.commit`, and `gc` (with `verify`) runs in a loop. Every actor is a separate OS process
//! (`python3` driving the mount or the `artifactfs` binary).
//!
//! What must hold: nothing hangs (a process still running at its deadline is a deadlock: every
//! process is killed and the test names the hung ones, with their kernel wait channels); no
//! process exits non-zero or prints `database is locked`, `busy` or a panic, nor does the mount
//! log; each artifact's version numbers are exactly v0..vN, each handed out once, minus the ones
//! deleted on purpose; a reader caught in a version deleted meanwhile gets ENOENT, nothing else;
//! the draft the 8 writers filled commits to exactly what they wrote; every remaining version
//! and draft reads back exactly through the mount; no blob a version or a remaining draft needs
//! was collected (`verify` during and after the run, and everything read back after a last gc).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::mount::*;
use common::*;
use serde_json::{Value, json};

/// Processes writing into the one shared draft.
const WRITERS: usize = 8;
/// Files each writer creates (plus appends, overwrites, renames, removals around them).
const FILES_PER_WRITER: usize = 160;
/// Processes reading versions through the mount.
const READERS: usize = 2;
/// Deadline for the writers, and for the commit of their draft: beyond it, a deadlock.
const WRITERS_LIMIT: Duration = Duration::from_secs(120);
/// Deadline for the background loops once told to stop (each finishes its current iteration).
const STOP_LIMIT: Duration = Duration::from_secs(90);

/// What no process, and no line of the mount log, may ever say (compared in lower case).
const FORBIDDEN: &[&str] = &[
    "database is locked",
    "sqlite_busy",
    "busy",
    "panicked",
    "deadlock",
];

// ----- the scripts each process runs -----

/// Shared by every script: contents that can be told from their names, so that a reader can
/// check any file of a version it never heard of.
const PY_COMMON: &str = r#"
import errno, hashlib, json, os, random, re, subprocess, sys, time

def content(key):
    return ((key + "\n") * (1 + (len(key) * 37) % 101)).encode()

def sha(data):
    return hashlib.sha256(data).hexdigest()

def walk(top, rel=""):
    """Every file under top, as relative paths; errors are raised, never skipped."""
    out = []
    for e in os.scandir(os.path.join(top, rel) if rel else top):
        r = f"{rel}/{e.name}" if rel else e.name
        if e.is_dir(follow_symlinks=False):
            out.extend(walk(top, r))
        else:
            out.append(r)
    return out

def read(path):
    with open(path, "rb") as f:
        return f.read()
"#;

/// One of the 8 writers: argv DRAFT K NFILES DUP_KEYS_JSON. Writes distinct files of its own in
/// DRAFT/wK/, overwrites and appends (with fsync) files of the same name there, appends to the
/// base version's wK/base.txt (copy-on-write), renames, removes, patches in place, appends lines
/// to DRAFT/all.log shared with every writer, and writes files whose content equals blobs of
/// versions the CLI deletes and gc collects meanwhile. Reads everything back, then prints what
/// the draft must hold of it.
const PY_WRITER: &str = r#"
draft, k, nfiles = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
dups = json.loads(sys.argv[4])
rnd = random.Random(1000 + k)
me = f"w{k}"
expected = {}
all_lines = []
counts = dict(files=0, writes=0, bytes=0, fsyncs=0, appends=0, renames=0, unlinks=0, patches=0)

def path(rel):
    return os.path.join(draft, rel)

def put(rel, data, fsync=False):
    with open(path(rel), "wb", buffering=0) as f:
        for o in range(0, len(data), 65536):
            f.write(data[o:o + 65536])
            counts["writes"] += 1
        if fsync:
            os.fsync(f.fileno())
            counts["fsyncs"] += 1
    counts["files"] += 1
    counts["bytes"] += len(data)
    expected[rel] = data

def append(rel, line, fsync):
    fd = os.open(path(rel), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        if fsync:
            os.fsync(fd)
            counts["fsyncs"] += 1
    finally:
        os.close(fd)
    counts["appends"] += 1
    counts["writes"] += 1

base_rel = f"{me}/base.txt"
base = read(path(base_rel))
if base != f"writer {k} base\n".encode():
    sys.exit(f"{base_rel} in the draft reads {base!r}, not what its base version holds")
expected[base_rel] = base
for sub in ("files", "renamed", "dup"):
    os.makedirs(path(f"{me}/{sub}"), exist_ok=True)

step = max(1, nfiles // max(1, len(dups)))
for j in range(nfiles):
    data = rnd.randbytes(512 + rnd.randrange(0, 100_000))
    put(f"{me}/files/f{j:03}.bin", data, fsync=(j % 5 == 0))
    if j % 3 == 0:
        line = f"w{k} step {j}\n".encode()
        append(f"{me}/log.txt", line, fsync=True)
        expected[f"{me}/log.txt"] = expected.get(f"{me}/log.txt", b"") + line
    if j % 4 == 0:
        put(f"{me}/state.bin", rnd.randbytes(2000 + j), fsync=True)
    if j % 6 == 0:
        line = f"appended at step {j}\n".encode()
        append(base_rel, line, fsync=(j % 12 == 0))
        expected[base_rel] += line
    if j % 5 == 1:
        tmp = f"{me}/tmp-{j}"
        put(tmp, rnd.randbytes(3000 + j))
        os.replace(path(tmp), path(f"{me}/renamed/r{j}.bin"))
        expected[f"{me}/renamed/r{j}.bin"] = expected.pop(tmp)
        counts["renames"] += 1
    if j % 7 == 2:
        put(f"{me}/gone-{j}.txt", b"short-lived\n")
        os.unlink(path(f"{me}/gone-{j}.txt"))
        del expected[f"{me}/gone-{j}.txt"]
        counts["unlinks"] += 1
    if j % 4 == 3:
        rel = f"{me}/files/f{j - 1:03}.bin"
        old = expected[rel]
        patch = rnd.randbytes(777)
        off = len(old) // 3
        fd = os.open(path(rel), os.O_WRONLY)
        try:
            os.pwrite(fd, patch, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        new = old[:off] + patch + old[off + len(patch):]
        if len(new) < off + len(patch):
            new = old[:off] + patch
        expected[rel] = new
        counts["patches"] += 1
        counts["writes"] += 1
    if j % 2 == 0:
        line = f"w{k} all {j}\n"
        append("all.log", line.encode(), fsync=False)
        all_lines.append(line.rstrip("\n"))
    if dups and j % step == 0:
        key = dups.pop(0)
        put(f"{me}/dup/{key}.txt", content(key), fsync=(j % 2 == 0))
for key in dups:
    put(f"{me}/dup/{key}.txt", content(key))

wrong = [rel for rel, data in sorted(expected.items()) if read(path(rel)) != data]
if wrong:
    sys.exit(f"writer {k}: read back differently from the draft: {wrong[:10]}")
print(json.dumps({
    "files": {rel: sha(data) for rel, data in expected.items()},
    "all_lines": all_lines,
    "counts": counts,
}))
"#;

/// A reader: argv MNT STOP MIN_PASSES FIXED_JSON DYNAMIC_JSON. Until STOP exists (and at least
/// MIN_PASSES times) reads every file of the fixed versions (exact manifests known) and of
/// every version of the dynamic artifacts (contents told by file names). Such a version may be
/// deleted meanwhile: ENOENT then, and the version is reported as vanished; any other error is
/// reported too, for the test to judge against the versions deleted on purpose.
const PY_READER: &str = r#"
mnt, stop, min_passes = sys.argv[1], sys.argv[2], int(sys.argv[3])
fixed = json.load(open(sys.argv[4]))
dynamic = json.loads(sys.argv[5])
problems = []
errors = []
vanished = set()
counts = dict(passes=0, files=0, bytes=0, versions=0, alias_reads=0, vanished=0)

def problem(text):
    if len(problems) < 30:
        problems.append(text)
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

while counts["passes"] < min_passes or not os.path.exists(stop):
    for vdir, manifest in fixed.items():
        top = os.path.join(mnt, vdir)
        try:
            files = walk(top)
            if sorted(files) != sorted(manifest):
                problem(f"{vdir}: lists {sorted(set(files) ^ set(manifest))[:10]} differently")
            for rel in files:
                data = read(os.path.join(top, rel))
                counts["files"] += 1
                counts["bytes"] += len(data)
                if sha(data) != manifest.get(rel):
                    problem(f"{vdir}/{rel}: wrong content ({len(data)} bytes)")
            counts["versions"] += 1
        except OSError as e:
            problem(f"{vdir}: {e!r}")
    for art in dynamic:
        try:
            entries = list(os.scandir(os.path.join(mnt, art)))
        except OSError as e:
            problem(f"{art}/: {e!r}")
            continue
        for e in entries:
            where = f"{art}/{e.name}"
            try:
                if e.is_symlink():
                    target = os.readlink(e.path)
                    counts["alias_reads"] += 1
                    if not re.fullmatch(r"v\d+", target):
                        problem(f"{where} -> {target!r}, not a version")
                    continue
                if not re.fullmatch(r"v\d+", e.name):
                    problem(f"{where}: neither a version nor an alias")
                    continue
                for rel in walk(e.path):
                    data = read(os.path.join(e.path, rel))
                    counts["files"] += 1
                    counts["bytes"] += len(data)
                    key = os.path.basename(rel)[:-len(".txt")]
                    if data != content(key):
                        problem(f"{where}/{rel}: wrong content ({len(data)} bytes)")
                counts["versions"] += 1
            except FileNotFoundError as err:
                # Deleted (or an alias moved) meanwhile; the test checks it was deleted on purpose.
                if not e.is_symlink():
                    vanished.add(where)
                    counts["vanished"] += 1
            except OSError as err:
                # The test tells apart a version deleted on purpose from one that is not.
                if len(errors) < 30:
                    errors.append([where, errno.errorcode.get(err.errno, str(err.errno)), str(err)])
                sys.stderr.write(f"{where}: {err!r}\n")
    counts["passes"] += 1
    time.sleep(0.02)

print(json.dumps({"counts": counts, "vanished": sorted(vanished), "errors": errors,
                  "problems": problems}))
sys.exit(1 if problems else 0)
"#;

/// A CLI committer: argv BIN STORE MNT STOP WORK STATE_JSON. Owns artifact ART: each iteration
/// makes a draft of it (`draft new`, `draft add`, `draft rm`, `draft commit`), logs a version of
/// `shared` (which the other committer logs to as well), deletes an old unaliased version of
/// ART, moves ART's `best` alias; the one with `manages_shared` also moves `shared`'s alias and
/// deletes old versions of it. Every new version and alias is checked through the mount.
const PY_COMMITTER: &str = r#"
BIN, STORE, MNT, STOP, WORK = sys.argv[1:6]
st = json.loads(sys.argv[6])
art = st["art"]
manages_shared = st["manages_shared"]
live = {int(n): m for n, m in st["live"].items()}
last = max(live)
manifest = dict(live[last])
cur = st["cur"]
rnd = random.Random(art)
versions = {art: {n: dict(m) for n, m in live.items()}, "shared": {}}
commits = {art: [], "shared": []}
deleted = {art: [], "shared": []}
best = {}
counts = dict(cli_calls=0, commits=0, logs=0, alias_moves=0, deletes=0, mount_checks=0, slowest_cli=0.0)

def report(failed=None):
    print(json.dumps({
        "commits": commits,
        "deleted": deleted,
        "versions": {a: {str(n): m for n, m in vs.items()} for a, vs in versions.items()},
        "best": best,
        "counts": counts,
        "failed": failed,
    }))

def fail(text):
    """Stops here, reporting what was done so far (so the test can still check it)."""
    sys.stderr.write(f"FAILED: {text}\n")
    sys.stderr.flush()
    report(text)
    sys.exit(1)

def cli(*args):
    counts["cli_calls"] += 1
    t = time.monotonic()
    p = subprocess.run([BIN, "--store", STORE, *args], capture_output=True, text=True)
    counts["slowest_cli"] = max(counts["slowest_cli"], time.monotonic() - t)
    if p.stderr.strip():
        sys.stderr.write(f"[artifactfs {' '.join(args)}] stderr: {p.stderr}")
    if p.returncode != 0:
        fail(f"artifactfs {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout

def number(out, name):
    m = re.fullmatch(rf"{re.escape(name)}:v(\d+)", out.strip())
    if not m:
        fail(f"a commit of {name} printed {out!r}, not one new version")
    return int(m.group(1))

def file_for(key):
    p = os.path.join(WORK, f"{key}.txt")
    with open(p, "wb") as f:
        f.write(content(key))
    return p

def check_version(name, n, man, may_vanish):
    """Version n of name shows in the mount within 5 s, with exactly the files of man."""
    top = os.path.join(MNT, name, f"v{n}")
    deadline = time.monotonic() + 5
    while not os.path.isdir(top):
        if time.monotonic() > deadline:
            if may_vanish:
                return
            fail(f"{name}:v{n} does not show in the mount 5 s after its commit")
        time.sleep(0.05)
    try:
        files = walk(top)
        if sorted(files) != sorted(man):
            fail(f"{name}:v{n} in the mount lists {sorted(files)}, expected {sorted(man)}")
        for rel in files:
            if read(os.path.join(top, rel)) != content(man[rel]):
                fail(f"{name}:v{n}/{rel} in the mount has the wrong content")
    except FileNotFoundError:
        if not may_vanish:
            raise
    counts["mount_checks"] += 1

def check_alias(name, alias, n):
    link = os.path.join(MNT, name, alias)
    deadline = time.monotonic() + 5
    while True:
        try:
            if os.readlink(link) == f"v{n}":
                return
        except FileNotFoundError:
            pass
        if time.monotonic() > deadline:
            fail(f"{name}/{alias} in the mount does not point at v{n} 5 s after `alias set`")
        time.sleep(0.05)

def move_best(name, candidates):
    v = rnd.choice(sorted(candidates))
    cli("alias", "set", f"{name}:v{v}", "best")
    best[name] = v
    counts["alias_moves"] += 1
    check_alias(name, "best", v)

def run():
    global cur, last
    i = 0
    while i < st["min_iters"] or not os.path.exists(STOP):
        i += 1
        # A draft of ART through the CLI, based on its latest version.
        cli("draft", "new", art)
        key = f"{art}-item-{i}"
        cli("draft", "add", art, file_for(key), "--as", f"items/{key}.txt")
        manifest[f"items/{key}.txt"] = key
        if not manages_shared and i % 2 == 0:
            # Content of a version of the other artifact, which may be deleted and collected by now.
            k2 = f"c0-cur-{rnd.randint(1, i)}"
            cli("draft", "add", art, file_for(k2), "--as", f"items/{k2}.txt")
            manifest[f"items/{k2}.txt"] = k2
        new_cur = f"{art}-cur-{i}"
        cli("draft", "add", art, file_for(new_cur), "--as", f"cur/{new_cur}.txt")
        cli("draft", "rm", art, f"cur/{cur}.txt")
        del manifest[f"cur/{cur}.txt"]
        manifest[f"cur/{new_cur}.txt"] = new_cur
        cur = new_cur
        n = number(cli("draft", "commit", art), art)
        counts["commits"] += 1
        commits[art].append(n)
        live[n] = dict(manifest)
        versions[art][n] = dict(manifest)
        if n != last + 1:
            fail(f"the commit after {art}:v{last} became {art}:v{n}: a number skipped or reused")
        last = n
        check_version(art, n, manifest, False)

        # A version of `shared`, logged by both committers at once.
        skey = f"shared-{art}-{i}"
        d = os.path.join(WORK, skey)
        os.makedirs(d)
        with open(os.path.join(d, f"{skey}.txt"), "wb") as f:
            f.write(content(skey))
        s = number(cli("log", "shared", d, "--type", "dataset"), "shared")
        counts["logs"] += 1
        commits["shared"].append(s)
        versions["shared"][s] = {f"{skey}.txt": skey}
        check_version("shared", s, versions["shared"][s], True)

        # Delete an old version of ART nothing but `latest` could name; first the base of a draft.
        if i == 1 and st.get("delete_first") is not None:
            victim = st["delete_first"]
        else:
            olds = [v for v in live if v < last - 1 and v != best.get(art)]
            victim = rnd.choice(olds) if olds and i % 2 == 0 else None
        if victim is not None:
            cli("delete", f"{art}:v{victim}")
            del live[victim]
            deleted[art].append(victim)
            counts["deletes"] += 1
        move_best(art, live)

        if manages_shared:
            listed = json.loads(cli("--json", "list", "shared"))
            shared_live = sorted(int(v["version"][1:]) for v in listed)
            move_best("shared", shared_live)
            olds = [v for v in shared_live if v <= shared_live[-1] - 4 and v != best["shared"]]
            if olds and i % 2 == 1:
                victim = rnd.choice(olds)
                cli("delete", f"shared:v{victim}")
                deleted["shared"].append(victim)
                counts["deletes"] += 1

try:
    run()
except Exception as e:
    fail(f"{e!r}")
report()
"#;

/// Commits drafts of artifact `m` through the mount: argv MNT STOP MIN_ITERS. Each iteration
/// makes `drafts/m`, writes a file, removes one of the base, commits by writing to `.commit`
/// (sometimes a JSON request that also sets `best`) and checks `m/latest` names the next number.
const PY_MOUNT_COMMITTER: &str = r#"
mnt, stop, min_iters = sys.argv[1], sys.argv[2], int(sys.argv[3])
manifest = {"m-cur-0.txt": "m-cur-0"}
versions = {0: dict(manifest)}
commits = []
best = None
counts = dict(commits=0, alias_moves=0)

def report(failed=None):
    print(json.dumps({
        "commits": {"m": commits},
        "deleted": {"m": []},
        "versions": {"m": {str(n): m for n, m in versions.items()}},
        "best": {"m": best} if best is not None else {},
        "counts": counts,
        "failed": failed,
    }))

def fail(text):
    """Stops here, reporting what was done so far (so the test can still check it)."""
    sys.stderr.write(f"FAILED: {text}\n")
    sys.stderr.flush()
    report(text)
    sys.exit(1)

def wait_link(link, want):
    deadline = time.monotonic() + 5
    got = None
    while time.monotonic() < deadline:
        try:
            got = os.readlink(link)
            if got == want:
                return
        except FileNotFoundError as e:
            got = repr(e)
        time.sleep(0.05)
    fail(f"{link} is {got}, not {want}, 5 s after the commit")

def run():
    global best
    i = 0
    while i < min_iters or not os.path.exists(stop):
        i += 1
        d = os.path.join(mnt, "drafts", "m")
        os.mkdir(d)
        os.makedirs(os.path.join(d, "items"), exist_ok=True)
        for key, rel in ((f"m-cur-{i}", f"m-cur-{i}.txt"), (f"m-item-{i}", f"items/m-item-{i}.txt")):
            with open(os.path.join(d, rel), "wb") as f:
                f.write(content(key))
                os.fsync(f.fileno())
            manifest[rel] = key
        os.unlink(os.path.join(d, f"m-cur-{i - 1}.txt"))
        del manifest[f"m-cur-{i - 1}.txt"]
        request = json.dumps({"aliases": ["best"]}) if i % 3 == 0 else "commit\n"
        fd = os.open(os.path.join(d, ".commit"), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, request.encode())
        finally:
            os.close(fd)
        commits.append(i)
        versions[i] = dict(manifest)
        counts["commits"] += 1
        wait_link(os.path.join(mnt, "m", "latest"), f"v{i}")
        if i % 3 == 0:
            best = i
            counts["alias_moves"] += 1
            wait_link(os.path.join(mnt, "m", "best"), f"v{i}")
        top = os.path.join(mnt, "m", f"v{i}")
        files = walk(top)
        if sorted(files) != sorted(manifest):
            fail(f"m/v{i} lists {sorted(files)}, expected {sorted(manifest)}")
        for rel in files:
            if read(os.path.join(top, rel)) != content(manifest[rel]):
                fail(f"m/v{i}/{rel} has the wrong content")

try:
    run()
except Exception as e:
    fail(f"{e!r}")

report()
"#;

/// `gc` in a loop, with a `verify` every third time: argv BIN STORE STOP MIN_ITERS. A failed
/// run is reported and the loop goes on (so that one failure does not end the contention);
/// the process then exits 1.
const PY_GC: &str = r#"
BIN, STORE, STOP, min_iters = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
counts = dict(gc_runs=0, gc_failed=0, blobs_removed=0, nodes_removed=0, verify_runs=0,
              verify_failed=0, slowest_gc=0.0)
failures = []
def failed(text):
    if len(failures) < 10:
        failures.append(text)
    sys.stderr.write(f"FAILED: {text}\n")
    sys.stderr.flush()
i = 0
while i < min_iters or not os.path.exists(STOP):
    i += 1
    t = time.monotonic()
    p = subprocess.run([BIN, "--store", STORE, "--json", "gc"], capture_output=True, text=True)
    counts["slowest_gc"] = max(counts["slowest_gc"], time.monotonic() - t)
    counts["gc_runs"] += 1
    if p.returncode != 0:
        counts["gc_failed"] += 1
        failed(f"artifactfs gc (run {i}) exited {p.returncode}: {p.stderr.strip()}")
    else:
        if p.stderr.strip():
            sys.stderr.write(f"[gc] stderr: {p.stderr}")
        out = json.loads(p.stdout)
        counts["blobs_removed"] += out["blobs_removed"]
        counts["nodes_removed"] += out["nodes_removed"]
    if i % 3 == 0:
        p = subprocess.run([BIN, "--store", STORE, "--json", "verify"], capture_output=True, text=True)
        counts["verify_runs"] += 1
        if p.returncode != 0:
            counts["verify_failed"] += 1
            failed(f"artifactfs verify exited {p.returncode} during the run: {p.stdout.strip()} {p.stderr.strip()}")
        elif p.stderr.strip():
            sys.stderr.write(f"[verify] stderr: {p.stderr}")
    time.sleep(0.1)
print(json.dumps({"counts": counts, "failures": failures}))
sys.exit(1 if failures else 0)
"#;

/// Commits the writers' draft with one write to its control file; prints "ok" or the errno.
const PY_COMMIT: &str = r#"
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
try:
    os.write(fd, b"commit\n")
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
finally:
    os.close(fd)
"#;

// ----- processes -----

/// A process of the test, its output collected as it runs.
struct Proc {
    group: &'static str,
    name: String,
    child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
    started: Instant,
}

/// What a process did.
struct Done {
    name: String,
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

/// Every process the test started; all are killed (each in its own process group, so with the
/// `artifactfs` commands they run) if the test ends early.
struct Crowd {
    procs: Vec<Proc>,
    server_pid: i32,
}

impl Crowd {
    fn spawn(&mut self, group: &'static str, name: String, mut cmd: Command) {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        self.procs.push(Proc {
            group,
            name,
            child,
            out,
            err,
            started: Instant::now(),
        });
    }

    /// Waits for every process of `group`; one still running after `limit` is a deadlock:
    /// everything is killed and the test fails naming what hung and where it waited.
    fn wait(&mut self, group: &str, limit: Duration) -> Vec<Done> {
        let start = Instant::now();
        let mut done = Vec::new();
        loop {
            let mut i = 0;
            while i < self.procs.len() {
                if self.procs[i].group == group
                    && let Some(status) = self.procs[i].child.try_wait().unwrap()
                {
                    let mut p = self.procs.remove(i);
                    let text = |h: Option<JoinHandle<Vec<u8>>>| {
                        String::from_utf8_lossy(&h.map(|h| h.join().unwrap()).unwrap_or_default())
                            .into_owned()
                    };
                    done.push(Done {
                        name: p.name.clone(),
                        status,
                        stdout: text(p.out.take()),
                        stderr: text(p.err.take()),
                        took: p.started.elapsed(),
                    });
                } else {
                    i += 1;
                }
            }
            let hung: Vec<&Proc> = self.procs.iter().filter(|p| p.group == group).collect();
            if hung.is_empty() {
                return done;
            }
            if start.elapsed() > limit {
                let mut text = format!(
                    "DEADLOCK: {} process(es) of the {group} still running {limit:?} after being \
                     waited for: {:?}\n",
                    hung.len(),
                    hung.iter().map(|p| p.name.as_str()).collect::<Vec<_>>()
                );
                for p in &hung {
                    text.push_str(&format!(
                        "--- {} (pid {}):\n{}",
                        p.name,
                        p.child.id(),
                        describe_tree(p.child.id() as i32)
                    ));
                }
                text.push_str(&format!(
                    "--- the mount server (pid {}):\n{}",
                    self.server_pid,
                    describe_threads(self.server_pid)
                ));
                text.push_str(&format!(
                    "--- finished so far: {:?}\n",
                    done.iter().map(|d| d.name.as_str()).collect::<Vec<_>>()
                ));
                // A process waiting on a stuck server cannot even exit (it flushes its files
                // to the server on the way out): the server goes first, which fails every
                // request in flight, then everyone else.
                // SAFETY: kill(2) of the mount server this test started, by its pid.
                unsafe {
                    libc::kill(self.server_pid, libc::SIGKILL);
                }
                self.kill_all();
                panic!("{text}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills every process left (with what it started) and reaps them, giving up after 10 s
    /// on any that cannot die.
    fn kill_all(&mut self) {
        for p in &mut self.procs {
            // SAFETY: kill(2) on the process group this test created for the child.
            unsafe {
                libc::kill(-(p.child.id() as i32), libc::SIGKILL);
            }
            let _ = p.child.kill();
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10)
            && self
                .procs
                .iter_mut()
                .any(|p| matches!(p.child.try_wait(), Ok(None)))
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.procs.clear();
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn proc_file(pid: i32, file: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Parent pid and state from /proc/PID/stat.
fn stat_of(pid: i32) -> Option<(i32, String)> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &s[s.rfind(')')? + 2..];
    let mut f = after.split(' ');
    let state = f.next()?.to_string();
    let ppid = f.next()?.parse().ok()?;
    Some((ppid, state))
}

/// A process and its descendants: command line, state, wait channel, kernel stack.
fn describe_tree(pid: i32) -> String {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                if let Ok(p) = e.file_name().to_string_lossy().parse::<i32>()
                    && stat_of(p).is_some_and(|(pp, _)| pp == parent)
                {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    let mut text = String::new();
    for p in all {
        // A Python script is shown by its arguments, not its text.
        let mut args: Vec<String> = proc_file(p, "cmdline")
            .split('\0')
            .map(str::to_string)
            .collect();
        if args.get(1).is_some_and(|a| a == "-c") && args.len() > 2 {
            args[2] = "<script>".into();
        }
        let cmdline: String = args.join(" ").chars().take(300).collect();
        let state = stat_of(p).map(|(_, s)| s).unwrap_or_default();
        text.push_str(&format!(
            "  pid {p} [{state}] wchan {} : {cmdline}\n",
            proc_file(p, "wchan")
        ));
        for line in proc_file(p, "stack").lines().take(8) {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text
}

/// Every thread of a process: name, state, wait channel, kernel stack.
fn describe_threads(pid: i32) -> String {
    let mut text = String::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("  (no /proc/{pid}/task: the server is gone)\n");
    };
    for e in rd.flatten() {
        let tid = e.file_name().to_string_lossy().into_owned();
        let base = format!("/proc/{pid}/task/{tid}");
        let read = |f: &str| {
            fs::read_to_string(format!("{base}/{f}"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let stat = read("stat");
        let state = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..i + 3))
            .unwrap_or("?")
            .to_string();
        text.push_str(&format!(
            "  tid {tid} {} [{state}] wchan {}\n",
            read("comm"),
            read("wchan")
        ));
        for line in read("stack").lines().take(6) {
            text.push_str(&format!("      {line}\n"));
        }
    }
    text
}

fn python(script: &str, args: &[&OsStr]) -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(format!("{PY_COMMON}\n{script}"))
        .args(args);
    cmd
}

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

// ----- contents -----

/// The content of a file named `KEY.txt`: the same as PY_COMMON's `content`.
fn content(key: &str) -> Vec<u8> {
    format!("{key}\n")
        .repeat(1 + (key.len() * 37) % 101)
        .into_bytes()
}

type Files = BTreeMap<String, Vec<u8>>;
/// Relative path → SHA-256 of the content.
type Manifest = BTreeMap<String, String>;

fn manifest_of(files: &Files) -> Manifest {
    files
        .iter()
        .map(|(p, c)| (p.clone(), sha256_hex(c)))
        .collect()
}

fn keyed(files: &[(&str, &str)]) -> Files {
    files
        .iter()
        .map(|(path, key)| (path.to_string(), content(key)))
        .collect()
}

/// Logs `files` as the whole new version of `name`; returns the version number.
fn log_files(s: &TestStore, name: &str, files: &Files) -> u64 {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = s.path(&format!(
        "src/{name}-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    for (rel, data) in files {
        write_file(&dir.join(rel), data);
    }
    let printed = log(s, name, &dir);
    printed
        .strip_prefix(&format!("{name}:v"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("log {name} printed {printed:?}"))
}

/// Every file under `dir` through the mount, with the SHA-256 of what reading it gives; the
/// first error (with its path) otherwise.
fn files_in_mount(dir: &Path) -> Result<Manifest, String> {
    fn walk(base: &Path, dir: &Path, out: &mut Manifest) -> Result<(), String> {
        let entries = fs::read_dir(dir).map_err(|e| format!("read_dir {}: {e}", dir.display()))?;
        for e in entries {
            let p = e
                .map_err(|e| format!("read_dir {}: {e}", dir.display()))?
                .path();
            let m = fs::symlink_metadata(&p).map_err(|e| format!("lstat {}: {e}", p.display()))?;
            if m.is_dir() {
                walk(base, &p, out)?;
            } else {
                let data = fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, sha256_hex(&data));
            }
        }
        Ok(())
    }
    let mut out = Manifest::new();
    walk(dir, dir, &mut out)?;
    Ok(out)
}

fn manifest_diff(expected: &Manifest, actual: &Manifest) -> Vec<String> {
    let mut d = Vec::new();
    for (p, sha) in expected {
        match actual.get(p) {
            None => d.push(format!("missing {p}")),
            Some(a) if a != sha => d.push(format!("{p}: wrong content")),
            _ => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            d.push(format!("unexpected {p}"));
        }
    }
    d
}

/// Mounts the store, logging failed requests (see [`Mounted::logging_requests`]).
fn mount(s: &TestStore) -> Mounted<'_> {
    Mounted::logging_requests(s, &s.path("mnt"))
}

fn forbidden_in(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| {
            let l = l.to_lowercase();
            FORBIDDEN.iter().any(|w| l.contains(w))
        })
        .take(10)
        .map(str::to_string)
        .collect()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn parse_report(d: &Done) -> Value {
    let last = d.stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or(Value::Null)
}

fn count(reports: &[&Value], key: &str) -> u64 {
    reports
        .iter()
        .map(|r| r["counts"][key].as_u64().unwrap_or(0))
        .sum()
}

// ----- the test -----

#[test]
fn writers_readers_commits_aliases_deletes_and_gc_at_once() {
    let python3 = Command::new("python3").arg("--version").output();
    assert!(
        python3.is_ok_and(|o| o.status.success()),
        "python3 not found: this test drives the mount with it and does not skip; \
         scripts/setup.sh installs it"
    );
    let started = Instant::now();
    let s = TestStore::new();
    let mut problems: Vec<String> = Vec::new();

    // --- the store before the run ---
    // `ro`: three versions the readers read over and over; never changed.
    let mut ro: Files = BTreeMap::new();
    ro.insert("data/big.bin".into(), pseudo_random((1 << 20) + 7, 1));
    ro.insert("data/b.bin".into(), pseudo_random(300_000, 2));
    ro.insert("README.txt".into(), b"read only\n".to_vec());
    for i in 0..6 {
        ro.insert(
            format!("nested/deep/{i}.txt"),
            format!("nested {i}\n").repeat(i + 1).into_bytes(),
        );
    }
    let mut expected: BTreeMap<(String, u64), Manifest> = BTreeMap::new();
    for v in 0..3u64 {
        if v == 1 {
            ro.insert("data/b.bin".into(), pseudo_random(310_000, 3));
            ro.insert("data/d.bin".into(), pseudo_random(600_000, 4));
            ro.remove("README.txt");
        }
        if v == 2 {
            for i in 0..10 {
                ro.insert(
                    format!("many/f{i}.txt"),
                    pseudo_random(100 + 37 * i, 10 + i as u64),
                );
            }
        }
        assert_eq!(log_files(&s, "ro", &ro), v);
        expected.insert(("ro".into(), v), manifest_of(&ro));
    }
    // `target`: the base of the draft the 8 writers fill.
    let mut target: Files = BTreeMap::new();
    target.insert("common.txt".into(), b"shared by every version\n".to_vec());
    for k in 0..WRITERS {
        target.insert(
            format!("w{k}/base.txt"),
            format!("writer {k} base\n").into_bytes(),
        );
    }
    for i in 0..5 {
        target.insert(
            format!("keep/k{i}.bin"),
            pseudo_random(5000 + i, 50 + i as u64),
        );
    }
    assert_eq!(log_files(&s, "target", &target), 0);
    expected.insert(("target".into(), 0), manifest_of(&target));
    // The artifacts the CLI and the mount commit to; every file is KEY.txt holding content(KEY).
    let c0_v0 = [("items/c0-seed-0.txt", "c0-seed-0")];
    let c0_v1 = [
        ("items/c0-seed-0.txt", "c0-seed-0"),
        ("items/c0-seed-1.txt", "c0-seed-1"),
        ("cur/c0-cur-0.txt", "c0-cur-0"),
    ];
    let c1_v0 = [
        ("items/c1-seed-0.txt", "c1-seed-0"),
        ("cur/c1-cur-0.txt", "c1-cur-0"),
    ];
    assert_eq!(log_files(&s, "c0", &keyed(&c0_v0)), 0);
    assert_eq!(log_files(&s, "c0", &keyed(&c0_v1)), 1);
    assert_eq!(log_files(&s, "c1", &keyed(&c1_v0)), 0);
    assert_eq!(
        log_files(
            &s,
            "shared",
            &keyed(&[("shared-seed-0.txt", "shared-seed-0")])
        ),
        0
    );
    assert_eq!(log_files(&s, "m", &keyed(&[("m-cur-0.txt", "m-cur-0")])), 0);
    let mut commits: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (name, n) in [
        ("ro", 3),
        ("target", 1),
        ("c0", 2),
        ("c1", 1),
        ("shared", 1),
        ("m", 1),
    ] {
        commits.insert(name.into(), (0..n).collect());
    }
    // Drafts that stay: one based on c0:v1, which c0's committer deletes first thing, and one
    // holding the content of shared's first version from c0, which is deleted later.
    s.ok(&["draft", "new", "c0@pinned", "--from", "c0:v1"]);
    let extra = s.file(
        "pinned-extra.txt",
        std::str::from_utf8(&content("pinned-extra")).unwrap(),
    );
    s.ok(&[os("draft"), os("add"), os("c0@pinned"), os(&extra)]);
    let mut pinned = keyed(&c0_v1);
    pinned.insert("pinned-extra.txt".into(), content("pinned-extra"));
    s.ok(&["draft", "new", "ro@hold"]);
    let held = s.file(
        "shared-c0-1.txt",
        std::str::from_utf8(&content("shared-c0-1")).unwrap(),
    );
    s.ok(&[os("draft"), os("add"), os("ro@hold"), os(&held)]);
    let hold = keyed(&[("shared-c0-1.txt", "shared-c0-1")]);

    let m = mount(&s);
    let mnt = m.path("");
    fs::create_dir(m.path("drafts/target")).unwrap();
    let stop = s.path("STOP");
    let fixed: BTreeMap<String, &Manifest> = expected
        .iter()
        .map(|((a, v), man)| (format!("{a}/v{v}"), man))
        .collect();
    let fixed_json = s.path("fixed.json");
    fs::write(&fixed_json, serde_json::to_vec(&fixed).unwrap()).unwrap();
    let work = s.path("work");
    let setup_took = started.elapsed();

    let mut crowd = Crowd {
        procs: Vec::new(),
        server_pid: m.server_pid(),
    };
    let bin = os(BIN);
    let store = os(&s.root);

    // --- the background: readers, committers, gc ---
    let dynamic = json!(["c0", "c1", "shared", "m"]).to_string();
    for r in 0..READERS {
        crowd.spawn(
            "background",
            format!("reader {r}"),
            python(
                PY_READER,
                &[os(&mnt), os(&stop), os("3"), os(&fixed_json), os(&dynamic)],
            ),
        );
    }
    let c0_live: Value = json!({
        "0": c0_v0.iter().map(|(p, k)| (p.to_string(), json!(k))).collect::<serde_json::Map<_, _>>(),
        "1": c0_v1.iter().map(|(p, k)| (p.to_string(), json!(k))).collect::<serde_json::Map<_, _>>(),
    });
    let c1_live: Value = json!({
        "0": c1_v0.iter().map(|(p, k)| (p.to_string(), json!(k))).collect::<serde_json::Map<_, _>>(),
    });
    for (art, live, cur, manages_shared, delete_first) in [
        ("c0", c0_live, "c0-cur-0", true, Some(1)),
        ("c1", c1_live, "c1-cur-0", false, None),
    ] {
        let dir = work.join(art);
        fs::create_dir_all(&dir).unwrap();
        let state = json!({
            "art": art, "live": live, "cur": cur, "manages_shared": manages_shared,
            "delete_first": delete_first, "min_iters": 4,
        })
        .to_string();
        crowd.spawn(
            "background",
            format!("CLI committer of {art}"),
            python(
                PY_COMMITTER,
                &[bin, store, os(&mnt), os(&stop), os(&dir), os(&state)],
            ),
        );
    }
    crowd.spawn(
        "background",
        "mount committer of m".into(),
        python(PY_MOUNT_COMMITTER, &[os(&mnt), os(&stop), os("3")]),
    );
    crowd.spawn(
        "background",
        "gc loop".into(),
        python(PY_GC, &[bin, store, os(&stop), os("3")]),
    );

    // --- the 8 writers, into one draft ---
    let draft = m.path("drafts/target");
    for k in 0..WRITERS {
        // Contents of versions the committers make and then delete (and gc collects).
        let dups: Vec<String> = (1..=6)
            .map(|i| {
                if (k + i) % 2 == 0 {
                    format!("c0-cur-{}", i + k % 3)
                } else {
                    format!("shared-c{}-{}", k % 2, i + k % 4)
                }
            })
            .collect();
        crowd.spawn(
            "writers",
            format!("writer {k}"),
            python(
                PY_WRITER,
                &[
                    os(&draft),
                    os(&k.to_string()),
                    os(&FILES_PER_WRITER.to_string()),
                    os(&serde_json::to_string(&dups).unwrap()),
                ],
            ),
        );
    }
    let writers_started = Instant::now();
    let writers = crowd.wait("writers", WRITERS_LIMIT);
    let writers_took = writers_started.elapsed();

    // --- commit the draft through .commit while the background goes on ---
    let commit_started = Instant::now();
    crowd.spawn(
        "commit",
        "commit of drafts/target".into(),
        python(PY_COMMIT, &[os(&draft.join(".commit"))]),
    );
    let commit = crowd.wait("commit", WRITERS_LIMIT).pop().unwrap();
    let commit_took = commit_started.elapsed();
    fs::write(&stop, "stop").unwrap();
    let background = crowd.wait("background", STOP_LIMIT);
    let run_took = writers_started.elapsed();

    // --- every process: exit 0, nothing forbidden said ---
    let everyone: Vec<&Done> = writers
        .iter()
        .chain(std::iter::once(&commit))
        .chain(background.iter())
        .collect();
    for d in &everyone {
        if !d.status.success() {
            problems.push(format!(
                "{} exited {} after {:?}; stderr:\n{}\nstdout: {}",
                d.name,
                d.status,
                d.took,
                tail(&d.stderr, 15),
                tail(&d.stdout, 3).chars().take(300).collect::<String>()
            ));
        }
        let bad = forbidden_in(&d.stderr);
        if !bad.is_empty() {
            problems.push(format!("{} said:\n  {}", d.name, bad.join("\n  ")));
        }
    }
    let target_committed = commit.stdout.trim() == "ok";
    if target_committed {
        commits.get_mut("target").unwrap().push(1);
    } else {
        problems.push(format!(
            "writing `commit` to drafts/target/.commit gave {:?} (stderr {}): the writers' \
             draft stays uncommitted and is not compared",
            commit.stdout.trim(),
            commit.stderr.trim()
        ));
    }

    // --- what each process reported ---
    let writer_reports: Vec<Value> = writers.iter().map(parse_report).collect();
    let background_reports: Vec<(String, Value)> = background
        .iter()
        .map(|d| (d.name.clone(), parse_report(d)))
        .collect();
    let mut deleted: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut best: BTreeMap<String, u64> = BTreeMap::new();
    let mut vanished: BTreeSet<String> = BTreeSet::new();
    let mut read_errors: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut failed_committers: BTreeSet<String> = BTreeSet::new();
    let mut keyed_versions: BTreeMap<(String, u64), Manifest> = BTreeMap::new();
    for (name, r) in &background_reports {
        if r.is_null() {
            problems.push(format!("{name} printed no report"));
            continue;
        }
        if let Some(c) = r["commits"].as_object() {
            for (art, ns) in c {
                for n in ns.as_array().unwrap() {
                    commits
                        .entry(art.clone())
                        .or_default()
                        .push(n.as_u64().unwrap());
                }
            }
            for (art, ns) in r["deleted"].as_object().unwrap() {
                for n in ns.as_array().unwrap() {
                    deleted
                        .entry(art.clone())
                        .or_default()
                        .insert(n.as_u64().unwrap());
                }
            }
            for (art, vs) in r["versions"].as_object().unwrap() {
                for (n, man) in vs.as_object().unwrap() {
                    let man: Manifest = man
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(p, k)| (p.clone(), sha256_hex(&content(k.as_str().unwrap()))))
                        .collect();
                    keyed_versions.insert((art.clone(), n.parse().unwrap()), man);
                }
            }
            for (art, n) in r["best"].as_object().unwrap() {
                best.insert(art.clone(), n.as_u64().unwrap());
            }
        }
        if r["failed"].is_string() {
            failed_committers.extend(r["commits"].as_object().unwrap().keys().cloned());
        }
        for v in r["vanished"].as_array().into_iter().flatten() {
            vanished.insert(v.as_str().unwrap().to_string());
        }
        for e in r["errors"].as_array().into_iter().flatten() {
            let field = |i: usize| e[i].as_str().unwrap().to_string();
            read_errors.insert((field(0), field(1)), field(2));
        }
    }
    keyed_versions.insert(
        ("shared".into(), 0),
        manifest_of(&keyed(&[("shared-seed-0.txt", "shared-seed-0")])),
    );
    keyed_versions.insert(("c1".into(), 0), manifest_of(&keyed(&c1_v0)));
    expected.extend(keyed_versions);

    // The writers' draft, as it must have become target:v1.
    let mut v1 = manifest_of(&target);
    let mut all_lines: Vec<String> = Vec::new();
    let mut all_writers_reported = true;
    for (d, r) in writers.iter().zip(&writer_reports) {
        match r["files"].as_object() {
            Some(files) => {
                for (p, sha) in files {
                    v1.insert(p.clone(), sha.as_str().unwrap().to_string());
                }
                all_lines.extend(
                    r["all_lines"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|l| l.as_str().unwrap().to_string()),
                );
            }
            None => {
                problems.push(format!(
                    "{} printed no report: target:v1 is not compared with what the writers wrote",
                    d.name
                ));
                all_writers_reported = false;
            }
        }
    }
    all_lines.sort();
    if all_writers_reported && target_committed {
        expected.insert(("target".into(), 1), v1);
    }

    // --- version numbers: each handed out once, none skipped; deleted ones gone ---
    let next_numbers: BTreeMap<String, u64> = s
        .sql("SELECT name, next_number FROM artifacts")
        .into_iter()
        .map(|r| (r[0].trim_matches('"').to_string(), r[1].parse().unwrap()))
        .collect();
    for (art, ns) in &commits {
        let mut sorted = ns.clone();
        sorted.sort();
        let unique: BTreeSet<u64> = sorted.iter().copied().collect();
        if unique.len() != sorted.len() {
            problems.push(format!(
                "{art}: a version number was handed out twice: {sorted:?}"
            ));
        }
        let want: Vec<u64> = (0..unique.len() as u64).collect();
        if unique.iter().copied().collect::<Vec<_>>() != want {
            problems.push(format!(
                "{art}: version numbers handed out are not v0..vN: {unique:?}"
            ));
        }
        if next_numbers.get(art) != Some(&(unique.len() as u64)) {
            problems.push(format!(
                "{art}: next_number is {:?} after {} commits",
                next_numbers.get(art),
                unique.len()
            ));
        }
        let gone = deleted.get(art).cloned().unwrap_or_default();
        let remaining: Vec<String> = unique
            .iter()
            .filter(|n| !gone.contains(n))
            .map(|n| format!("v{n}"))
            .collect();
        let listed = versions(&s, art);
        if listed != remaining {
            problems.push(format!(
                "{art}: `list` shows {listed:?}; expected {remaining:?} (deleted {gone:?})"
            ));
        }
    }
    for v in &vanished {
        let (art, n) = v.split_once("/v").unwrap();
        if !deleted
            .get(art)
            .is_some_and(|d| d.contains(&n.parse().unwrap()))
        {
            problems.push(format!(
                "a reader found {v} gone (ENOENT) although it was never deleted"
            ));
        }
    }
    for ((at, errno), text) in &read_errors {
        let (art, n) = at.split_once("/v").unwrap_or((at, ""));
        let was_deleted = n
            .parse::<u64>()
            .is_ok_and(|n| deleted.get(art).is_some_and(|d| d.contains(&n)));
        problems.push(if was_deleted {
            format!(
                "a reader reading {at}, deleted meanwhile (and maybe collected), got {errno} \
                 ({text}) rather than ENOENT: to the user a deleted version looks damaged"
            )
        } else {
            format!("a reader reading {at}, never deleted, got {errno} ({text})")
        });
    }
    for (art, n) in &best {
        let listed = s.json(&["list", art]);
        let on: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["aliases"].as_array().unwrap().iter().any(|a| a == "best"))
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        if on != [format!("v{n}")] {
            problems.push(format!("{art}: best is on {on:?}, last set on v{n}"));
        }
    }

    // --- drafts: only the two kept ones remain ---
    let drafts: BTreeSet<String> = drafts_listed(&s).into_iter().collect();
    let mut want_drafts: BTreeSet<String> = ["c0@pinned", "ro@hold"].map(String::from).into();
    // A committer that failed (reported above) may have left its draft.
    want_drafts.extend(drafts.intersection(&failed_committers).cloned());
    if !target_committed {
        want_drafts.insert("target".into());
    }
    if drafts != want_drafts {
        problems.push(format!("drafts left: {drafts:?}, expected {want_drafts:?}"));
    }

    // --- a last gc, then everything still listed or drafted reads back exactly ---
    let gc = s.run(&["--json", "gc"]);
    if !gc.status.success() {
        problems.push(format!(
            "a last gc, with nothing else running, exited {}: {}",
            gc.status,
            stderr(&gc)
        ));
    }
    let gc: Value = serde_json::from_str(&stdout(&gc)).unwrap_or(Value::Null);
    let verify = s.run(&["--json", "verify"]);
    if !verify.status.success() {
        problems.push(format!(
            "verify after the run exited {}: {}{}",
            verify.status,
            stdout(&verify),
            stderr(&verify)
        ));
    }
    let mut versions_read = 0;
    for ((art, n), man) in &expected {
        if deleted.get(art).is_some_and(|d| d.contains(n)) {
            continue;
        }
        let dir = m.path(&format!("{art}/v{n}"));
        let mut got = match files_in_mount(&dir) {
            Ok(got) => got,
            Err(e) => {
                problems.push(format!("{art}/v{n}, still listed, through the mount: {e}"));
                continue;
            }
        };
        let mut want = man.clone();
        if art == "target" && *n == 1 {
            want.remove("all.log");
            let log = fs::read_to_string(dir.join("all.log")).unwrap_or_default();
            got.remove("all.log");
            let mut lines: Vec<String> = log.lines().map(str::to_string).collect();
            lines.sort();
            if lines != all_lines {
                problems.push(format!(
                    "target/v1/all.log holds {} lines, the writers appended {} (each once)",
                    lines.len(),
                    all_lines.len()
                ));
            }
        }
        let d = manifest_diff(&want, &got);
        if !d.is_empty() {
            problems.push(format!(
                "{art}/v{n} through the mount: {} difference(s): {:?}",
                d.len(),
                &d[..d.len().min(10)]
            ));
        }
        versions_read += 1;
    }
    for (name, files) in [("c0@pinned", &pinned), ("ro@hold", &hold)] {
        match files_in_mount(&m.path(&format!("drafts/{name}"))) {
            Ok(got) => {
                let d = manifest_diff(&manifest_of(files), &got);
                if !d.is_empty() {
                    problems.push(format!("drafts/{name} through the mount: {d:?}"));
                }
            }
            Err(e) => problems.push(format!("drafts/{name} through the mount: {e}")),
        }
    }
    let target_files = if target_committed {
        ls(&s, "target:v1").len()
    } else {
        0
    };

    // --- the mount log ---
    let mount_log = m.log();
    let bad = forbidden_in(&mount_log);
    let (log_problems, ioctl_warnings) = mount_log_problems(&mount_log);
    if !bad.is_empty() {
        problems.push(format!("STORE/mount.log:\n  {}", bad.join("\n  ")));
    }

    // --- what ran ---
    let of = |prefix: &str| -> Vec<&Value> {
        background_reports
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, r)| r)
            .collect()
    };
    let (readers, cli, mounted, gcs) = (of("reader"), of("CLI"), of("mount"), of("gc"));
    let wr: Vec<&Value> = writer_reports.iter().collect();
    let slowest = |rs: &[&Value], key: &str| {
        rs.iter()
            .filter_map(|r| r["counts"][key].as_f64())
            .fold(0.0, f64::max)
    };
    let last_gc = gc["blobs_removed"].as_u64().unwrap_or(0);
    let gc_removed = count(&gcs, "blobs_removed") + last_gc;
    let summary = format!(
        "concurrency run: setup {setup_took:.1?}, writers {writers_took:.1?}, commit of their \
         draft {commit_took:.1?}, whole run {run_took:.1?}, test {:.1?}\n  \
         writers: {} files, {} write calls, {} bytes, {} fsyncs, {} appends, {} renames, {} \
         unlinks, {} in-place patches -> target:v1 with {target_files} files\n  \
         readers: {} passes, {} files read, {} bytes, {} version reads, {} alias reads, {} \
         vanished versions\n  \
         CLI: {} commands, {} draft commits, {} logs, {} alias moves, {} deletes (slowest \
         command {:.2}s); mount: {} commits through .commit, {} alias moves\n  \
         gc: {} runs ({} failed; slowest {:.2}s), {} blobs and {} nodes collected (+{last_gc} by a last \
         gc), {} verify runs ({} failed); {versions_read} versions read back at the end",
        started.elapsed(),
        count(&wr, "files"),
        count(&wr, "writes"),
        count(&wr, "bytes"),
        count(&wr, "fsyncs"),
        count(&wr, "appends"),
        count(&wr, "renames"),
        count(&wr, "unlinks"),
        count(&wr, "patches"),
        count(&readers, "passes"),
        count(&readers, "files"),
        count(&readers, "bytes"),
        count(&readers, "versions"),
        count(&readers, "alias_reads"),
        count(&readers, "vanished"),
        count(&cli, "cli_calls"),
        count(&cli, "commits"),
        count(&cli, "logs"),
        count(&cli, "alias_moves"),
        count(&cli, "deletes"),
        slowest(&cli, "slowest_cli"),
        count(&mounted, "commits"),
        count(&mounted, "alias_moves"),
        count(&gcs, "gc_runs"),
        count(&gcs, "gc_failed"),
        slowest(&gcs, "slowest_gc"),
        count(&gcs, "blobs_removed"),
        count(&gcs, "nodes_removed"),
        count(&gcs, "verify_runs"),
        count(&gcs, "verify_failed"),
    );
    eprintln!(
        "{summary}\n  mount.log ({ioctl_warnings} unimplemented ioctls besides):\n{log_problems}"
    );
    if gc_removed == 0 {
        problems.push(
            "gc collected nothing although versions were deleted: the run did not exercise \
             collection"
                .into(),
        );
    }
    drop(crowd);
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}\n\n{summary}\n\nfailed requests and warnings in STORE/mount.log \
         (besides {ioctl_warnings} unimplemented ioctls):\n{}",
        problems.len(),
        problems
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}. {p}", i + 1))
            .collect::<Vec<_>>()
            .join("\n"),
        log_problems
    );
}
