//! Crash trials (issue "Reliability"): SIGKILL the mount server, and separately the CLI, at a
//! random moment of a long operation, then check that nothing was lost or left half-done.
//!
//! Each trial is a fresh store with a committed base version (a few hundred small files and
//! some multi-MiB ones, contents known to the test) and one scenario:
//!
//! | scenario                 | what runs                                      | what is killed |
//! |--------------------------|------------------------------------------------|----------------|
//! | `daemon-copy`            | `cp -r` of a big tree into a draft, while a    | mount server   |
//! |                          | writer creates/rewrites files and fsyncs them  |                |
//! | `daemon-commit`          | `.commit` of a draft filled through the mount  | mount server   |
//! | `cli-commit-cli-draft`   | `draft commit` of a draft filled by `draft add`| CLI            |
//! | `cli-commit-mount-draft` | `draft commit` of a draft filled in the mount  | CLI            |
//! | `cli-gc`                 | `gc` after two versions were deleted           | CLI            |
//! | `cli-delete`             | `delete` of one version                        | CLI            |
//! | `cli-log`                | `log` of a big directory                       | CLI            |
//! | `cli-draft-add`          | `draft add` of a big directory                 | CLI            |
//!
//! The kill comes after a random delay spread over 0–110 % of the operation's duration,
//! measured per scenario by a calibration run that is not killed (the median of three in
//! runs of at least three trials per scenario); a kill after the end of the operation is
//! one of the outcomes, so the trials also cover "crash right after". After
//! the kill: mounting again works (over a dead mount, with a message about the stale mount);
//! `verify` passes; every version is exactly what was committed, and the version being made
//! is either wholly there or absent — then its draft is intact and committing it again gives
//! exactly the expected content; every draft file whose `close` or `fsync` returned is
//! intact; what the crash left over is gone after the mount starts (`staged/`) and after `gc`
//! (`staging/`, `blobs/` holds exactly the referenced blobs); the server never panicked.
//!
//! Environment: `CRASH_TRIALS` (default 8: one per scenario), `CRASH_SEED` (printed; reuse
//! it to replay the contents and the kill points, as fractions of the measured duration),
//! `CRASH_SCENARIOS` (comma-separated names to run only those), `CRASH_KEEP=1` (keep the
//! store of a failed trial and print where), `CRASH_TRACE=1` (time each step of a trial).
//! `scripts/crash_test.sh N` runs N trials in release mode and prints a summary.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::mount::*;
use common::*;

/// Relative path → bytes, as the test wrote them.
type Contents = BTreeMap<String, Vec<u8>>;
/// Relative path → SHA-256 (hex) of the content, as read back.
type Files = BTreeMap<String, String>;

const MIB: u64 = 1024 * 1024;
/// The longest any single operation of a trial may take before the trial fails as hung.
const OP_LIMIT: Duration = Duration::from_secs(120);

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

// ----- scenarios -----

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    DaemonCopy,
    DaemonCommit,
    CliCommitCliDraft,
    CliCommitMountDraft,
    CliGc,
    CliDelete,
    CliLog,
    CliDraftAdd,
}

const ALL: [Scenario; 8] = [
    Scenario::DaemonCopy,
    Scenario::DaemonCommit,
    Scenario::CliCommitCliDraft,
    Scenario::CliCommitMountDraft,
    Scenario::CliGc,
    Scenario::CliDelete,
    Scenario::CliLog,
    Scenario::CliDraftAdd,
];

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::DaemonCopy => "daemon-copy",
            Scenario::DaemonCommit => "daemon-commit",
            Scenario::CliCommitCliDraft => "cli-commit-cli-draft",
            Scenario::CliCommitMountDraft => "cli-commit-mount-draft",
            Scenario::CliGc => "cli-gc",
            Scenario::CliDelete => "cli-delete",
            Scenario::CliLog => "cli-log",
            Scenario::CliDraftAdd => "cli-draft-add",
        }
    }

    fn run(self, s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
        match self {
            Scenario::DaemonCopy => daemon_copy(s, rng, delay),
            Scenario::DaemonCommit => daemon_commit(s, rng, delay),
            Scenario::CliCommitCliDraft => cli_commit(s, rng, delay, false),
            Scenario::CliCommitMountDraft => cli_commit(s, rng, delay, true),
            Scenario::CliGc => cli_gc(s, rng, delay),
            Scenario::CliDelete => cli_delete(s, rng, delay),
            Scenario::CliLog => cli_log(s, rng, delay),
            Scenario::CliDraftAdd => cli_draft_add(s, rng, delay),
        }
    }
}

/// What one trial did.
struct Report {
    /// How long the operation ran: to its end, or to the kill.
    op: Duration,
    /// Whether the kill interrupted the operation (false: it had finished first).
    interrupted: bool,
    /// What the crash left, e.g. "version present" or "version absent".
    outcome: String,
    /// Draft files whose fsync or close had returned before the kill, found intact.
    checked: usize,
}

impl Report {
    /// A calibration run: the operation ran to its end and nothing was killed; the store is
    /// not checked further (the trials do that).
    fn calibrated(op: &Proc) -> Report {
        op.assert_clean_exit();
        Report {
            op: op.ended.unwrap(),
            interrupted: false,
            outcome: "calibration".into(),
            checked: 0,
        }
    }
}

// ----- the test -----

#[test]
fn crash_trials() {
    require_fuse();
    for tool in ["python3", "cp"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is not on PATH: the crash trials drive it and do not skip (scripts/setup.sh \
             installs python3)"
        );
    }
    let trials: usize = env_parse("CRASH_TRIALS").unwrap_or(8);
    let seed: u64 = env_parse("CRASH_SEED").unwrap_or_else(|| {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        splitmix(t.as_nanos() as u64 ^ u64::from(std::process::id()))
    });
    let scenarios: Vec<Scenario> = match std::env::var("CRASH_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|n| {
                let n = n.trim();
                *ALL.iter().find(|s| s.name() == n).unwrap_or_else(|| {
                    panic!(
                        "CRASH_SCENARIOS: unknown scenario {n:?}; known: {}",
                        ALL.map(|s| s.name()).join(", ")
                    )
                })
            })
            .collect(),
        _ => ALL.to_vec(),
    };
    println!(
        "crash: seed {seed} ({trials} trials over {}); replay with CRASH_SEED={seed}",
        scenarios
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let calibrations = if trials >= 3 * scenarios.len() { 3 } else { 1 };
    let started = Instant::now();
    let mut durations: BTreeMap<Scenario, Duration> = BTreeMap::new();
    let mut stats: BTreeMap<Scenario, Stats> = BTreeMap::new();
    let mut failures: Vec<String> = Vec::new();
    for i in 0..trials {
        let sc = scenarios[i % scenarios.len()];
        let st = stats.entry(sc).or_default();
        if let std::collections::btree_map::Entry::Vacant(slot) = durations.entry(sc) {
            // Calibration: the operation runs to its end and is timed; nothing is killed.
            // Long runs time it three times and take the median, so that one run slowed
            // down by a busy machine does not put most kills after the end.
            let mut times = Vec::new();
            for k in 0..calibrations {
                let tseed = splitmix(seed ^ 0xCA11_B4A7 ^ ((sc as u64) << 40) ^ ((k as u64) << 48));
                let label = format!("calibrate {} ({}/{calibrations})", sc.name(), k + 1);
                match one_trial(sc, tseed, None, &label) {
                    Ok(r) => {
                        times.push(r.op);
                        st.calibrations += 1;
                    }
                    Err(msg) => {
                        st.failures += 1;
                        failures.push(msg);
                    }
                }
            }
            times.sort();
            // Trials of a scenario whose calibration failed still run, with a nominal duration.
            let d = times
                .get(times.len() / 2)
                .copied()
                .unwrap_or(Duration::from_millis(200));
            slot.insert(d);
        }
        let tseed = splitmix(seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut rng = Rng::new(tseed);
        let frac = rng.unit() * 1.1;
        let delay = durations[&sc].mul_f64(frac);
        let label = format!(
            "trial {}/{trials} {} kill at {:.1} ms ({frac:.2} of {:.1} ms)",
            i + 1,
            sc.name(),
            delay.as_secs_f64() * 1e3,
            durations[&sc].as_secs_f64() * 1e3
        );
        let st = stats.entry(sc).or_default();
        st.trials += 1;
        match one_trial(sc, tseed, Some(delay), &label) {
            Ok(r) => {
                if r.interrupted {
                    st.interrupted += 1;
                } else {
                    st.finished_first += 1;
                }
                *st.outcomes.entry(r.outcome).or_default() += 1;
                st.checked += r.checked;
            }
            Err(msg) => {
                st.failures += 1;
                failures.push(msg);
            }
        }
    }

    println!(
        "CRASH SUMMARY seed={seed} trials={trials} calibration-runs={} failures={} time={:.1}s",
        stats.values().map(|s| s.calibrations).sum::<usize>(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "  {:<24} {:>6} {:>11} {:>14} {:>8} {:>10}  outcomes",
        "scenario", "trials", "interrupted", "finished-first", "failures", "op-ms"
    );
    for (sc, st) in &stats {
        println!(
            "  {:<24} {:>6} {:>11} {:>14} {:>8} {:>10.1}  {}",
            sc.name(),
            st.trials,
            st.interrupted,
            st.finished_first,
            st.failures,
            durations
                .get(sc)
                .map(|d| d.as_secs_f64() * 1e3)
                .unwrap_or(0.0),
            st.outcomes
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .chain((st.checked > 0).then(|| format!(
                    "draft files intact after their fsync/close returned: {}",
                    st.checked
                )))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    assert!(
        failures.is_empty(),
        "{} of {trials} crash trials (and calibrations) failed (seed {seed}; replay with \
         CRASH_SEED={seed}):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[derive(Default)]
struct Stats {
    trials: usize,
    calibrations: usize,
    interrupted: usize,
    finished_first: usize,
    failures: usize,
    checked: usize,
    outcomes: BTreeMap<String, usize>,
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    if v.is_empty() {
        return None;
    }
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number")),
    )
}

/// Runs one trial in a fresh store; Err describes a failure (with the server's log).
fn one_trial(
    sc: Scenario,
    seed: u64,
    delay: Option<Duration>,
    label: &str,
) -> Result<Report, String> {
    trace("(previous trial and cleanup)");
    let s = TestStore::new();
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut rng = Rng::new(seed);
        sc.run(&s, &mut rng, delay)
    }));
    match result {
        Ok(r) => {
            println!(
                "crash: {label}: {} after {:.1} ms, {} [seed {seed}, {:.1} s]",
                if delay.is_none() {
                    "ran to the end"
                } else if r.interrupted {
                    "killed"
                } else {
                    "finished before the kill"
                },
                r.op.as_secs_f64() * 1e3,
                r.outcome,
                start.elapsed().as_secs_f64()
            );
            Ok(r)
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(a panic without a message)".into());
            let log = tail(
                &fs::read_to_string(s.root.join("mount.log")).unwrap_or_default(),
                3000,
            );
            let kept = if std::env::var_os("CRASH_KEEP").is_some() {
                let TestStore { tmp, .. } = s;
                format!("\nstore kept at {}", tmp.keep().display())
            } else {
                String::new()
            };
            let text = format!(
                "FAILED {label} [trial seed {seed}]: {msg}{kept}\n--- mount.log (tail) ---\n{log}"
            );
            println!("crash: {text}");
            Err(text)
        }
    }
}

// ----- deterministic randomness and contents -----

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// `n` distinct items of `items`, in random order.
    fn pick(&mut self, items: &[String], n: usize) -> Vec<String> {
        let mut v = items.to_vec();
        for i in 0..n.min(v.len()) {
            let j = i + (self.next() % (v.len() - i) as u64) as usize;
            v.swap(i, j);
        }
        v.truncate(n);
        v
    }
}

fn mib(rng: &mut Rng, lo: u64, hi: u64) -> usize {
    rng.range(lo * MIB, hi * MIB) as usize
}

/// `n_small` files of up to 4 KiB spread over ten directories, plus one file per size in
/// `big` at the top.
fn gen_tree(rng: &mut Rng, n_small: usize, big: &[usize]) -> Contents {
    let mut c = Contents::new();
    for i in 0..n_small {
        let size = rng.range(1, 4096) as usize;
        c.insert(
            format!("d{:02}/f{i:04}.txt", i % 10),
            noise(rng.next(), size),
        );
    }
    for (j, size) in big.iter().enumerate() {
        c.insert(format!("big{j}.bin"), noise(rng.next(), *size));
    }
    c
}

fn write_contents(dir: &Path, c: &Contents) {
    fs::create_dir_all(dir).unwrap();
    for (rel, data) in c {
        write_file(&dir.join(rel), data);
    }
}

fn hashes(c: &Contents) -> Files {
    c.iter().map(|(p, d)| (p.clone(), sha256_hex(d))).collect()
}

fn prefixed(c: &Contents, prefix: &str) -> Contents {
    c.iter()
        .map(|(p, d)| (format!("{prefix}{p}"), d.clone()))
        .collect()
}

/// Every file (and symlink) under `dir` with its content's hash, read through whatever
/// filesystem holds it.
fn files_of(dir: &Path) -> Files {
    snapshot(dir)
        .into_iter()
        .filter(|(_, n)| n.kind != 'd')
        .map(|(p, n)| {
            let c = if n.kind == 'l' {
                format!("-> {}", n.content)
            } else {
                n.content
            };
            (p, c)
        })
        .collect()
}

/// Lists every difference between what was expected and what is there.
fn assert_files(what: &str, expected: &Files, actual: &Files) {
    let mut diffs = Vec::new();
    for (p, h) in expected {
        match actual.get(p) {
            None => diffs.push(format!("missing {p}")),
            Some(a) if a != h => {
                diffs.push(format!("{p}: content differs (sha256 {a}, expected {h})"))
            }
            Some(_) => {}
        }
    }
    for p in actual.keys() {
        if !expected.contains_key(p) {
            diffs.push(format!("unexpected {p}"));
        }
    }
    let heading = format!(
        "{what}: {} differences (of {} files expected, {} there)",
        diffs.len(),
        expected.len(),
        actual.len()
    );
    assert_no_problems(&heading, &diffs, 25);
}

/// Fails with `heading` and the first `show` of `problems` if there are any: the checks
/// that collect problems report them all at once, not just the first.
fn assert_no_problems(heading: &str, problems: &[String], show: usize) {
    assert!(
        problems.is_empty(),
        "{heading}:\n{}",
        problems[..problems.len().min(show)].join("\n")
    );
}

// ----- processes -----

/// A spawned process whose output goes to files; killed if still running when dropped.
struct Proc {
    child: Child,
    what: String,
    started: Instant,
    ended: Option<Duration>,
    status: Option<ExitStatus>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    fn spawn(mut cmd: Command, s: &TestStore, tag: &str) -> Proc {
        let out = s.path(&format!("{tag}.stdout"));
        let err = s.path(&format!("{tag}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        let what = format!("{cmd:?}");
        let started = Instant::now();
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        Proc {
            child,
            what,
            started,
            ended: None,
            status: None,
            out,
            err,
        }
    }

    fn poll(&mut self) -> bool {
        if self.status.is_some() {
            return true;
        }
        match self.child.try_wait().unwrap() {
            Some(st) => {
                self.status = Some(st);
                self.ended = Some(self.started.elapsed());
                true
            }
            None => false,
        }
    }

    /// Lets it run until `at` after its start; true if it exited by then.
    fn run_until(&mut self, at: Duration) -> bool {
        loop {
            if self.poll() {
                return true;
            }
            let el = self.started.elapsed();
            if el >= at {
                return false;
            }
            std::thread::sleep((at - el).min(Duration::from_micros(200)));
        }
    }

    /// SIGKILL; true if it was still running.
    fn sigkill(&mut self) -> bool {
        if self.poll() {
            return false;
        }
        self.child.kill().unwrap();
        let st = self.child.wait().unwrap();
        self.ended = Some(self.started.elapsed());
        self.status = Some(st);
        true
    }

    /// Waits for it to exit; a hang fails the trial.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = self.started.elapsed() + limit;
        if !self.run_until(deadline) {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
            panic!(
                "{} did not exit within {limit:?}\nstderr: {}",
                self.what,
                tail(&self.stderr(), 2000)
            );
        }
        self.status.unwrap()
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    fn assert_clean_exit(&self) {
        let st = self.status.expect("the process has exited");
        assert!(
            st.success(),
            "{} failed ({st}) though it was not killed:\nstdout: {}\nstderr: {}",
            self.what,
            tail(&self.stdout(), 2000),
            tail(&self.stderr(), 2000)
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lets `op` run until `delay`, then SIGKILLs the mount server `pid`
/// and waits until the mount is dead and `op` has exited (it must not go on into the next
/// mount). Returns how long `op` ran (to its end, or to the kill) and whether the kill
/// interrupted it.
fn kill_server_during(m: &Mounted, pid: i32, op: &mut Proc, delay: Duration) -> (Duration, bool) {
    let finished = op.run_until(delay);
    m.kill_server(pid, Duration::from_secs(20));
    op.wait(Duration::from_secs(60));
    if finished {
        (op.ended.unwrap(), false)
    } else {
        (delay, true)
    }
}

/// With CRASH_TRACE set, prints how long each step of a trial took.
fn trace(what: &str) {
    thread_local!(static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) });
    if std::env::var_os("CRASH_TRACE").is_none() {
        return;
    }
    let now = Instant::now();
    let last = LAST.with(|l| l.replace(Some(now)));
    let ms = last.map_or(0.0, |t| (now - t).as_secs_f64() * 1e3);
    println!("    trace {ms:8.1} ms  {what}");
}

// ----- mounting -----

fn mount_fresh(s: &TestStore) -> Mounted<'_> {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(s, &mp);
    trace("mount");
    m
}

/// `artifactfs mount` over the dead mount of a killed server: must succeed and say it
/// replaced a stale mount. (This and `remount_clean` are the step after the kill, so they
/// close the trace step of the operation and the kill.)
fn remount_after_kill<'a>(s: &'a TestStore, old: Mounted<'a>) -> Mounted<'a> {
    trace("op and kill");
    let out = s.run(&[os("mount"), old.mp.as_os_str()]);
    assert!(
        out.status.success(),
        "mounting again over the mount of the killed server failed ({}):\nstderr: {}",
        out.status,
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("stale"),
        "mounting over a dead mount should say it replaced a stale mount; stderr: {:?}",
        stderr(&out)
    );
    let m = Mounted::adopt(s, &old.mp);
    // The old guard would unmount the new mount when dropped.
    std::mem::forget(old);
    trace("remount");
    m
}

/// Unmounts cleanly and mounts again, so the server starts afresh after the crash.
fn remount_clean<'a>(s: &'a TestStore, old: Mounted<'a>) -> Mounted<'a> {
    trace("op and kill");
    let out = old.umount();
    assert!(
        out.status.success(),
        "artifactfs umount after the CLI was killed failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let mp = old.mp.clone();
    drop(old);
    let m = Mounted::new(s, &mp);
    trace("remount");
    m
}

/// Writes `request` to a draft's `.commit` in a separate process; it prints "ok" or the
/// errno name.
fn spawn_control_commit(s: &TestStore, control: &Path, request: &str) -> Proc {
    let script = "import errno, os, sys\n\
                  try:\n    fd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n    \
                  try:\n        os.write(fd, sys.argv[2].encode())\n    finally:\n        os.close(fd)\n    \
                  print('ok')\n\
                  except OSError as e:\n    print(errno.errorcode.get(e.errno, str(e.errno)))\n";
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(script).arg(control).arg(request);
    Proc::spawn(cmd, s, "control-commit")
}

// ----- checks -----

fn verify_ok(s: &TestStore, when: &str) {
    trace("(before verify)");
    let out = s.run(&["verify"]);
    assert!(
        out.status.success(),
        "artifactfs verify {when} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        tail(&stdout(&out), 3000),
        tail(&stderr(&out), 3000)
    );
    trace("verify");
}

static GETS: AtomicUsize = AtomicUsize::new(0);

/// A version's files, as `artifactfs get` writes them out.
fn version_files(s: &TestStore, reference: &str) -> Files {
    let dest = s.path(&format!("get-{}", GETS.fetch_add(1, Ordering::Relaxed)));
    s.ok(&[os("get"), os(reference), dest.as_os_str()]);
    let f = files_of(&dest);
    let _ = fs::remove_dir_all(&dest);
    f
}

/// What the versions must be: `certain` ones must be there, `optional` ones (a version
/// being made, or deleted, at the kill) may be; any that is there holds exactly its files.
#[derive(Default)]
struct Expect {
    certain: BTreeMap<String, Files>,
    optional: BTreeMap<String, Files>,
    /// Versions whose every byte was already compared; later checks compare their paths
    /// (`ls`), and `verify` their blobs.
    read: std::cell::RefCell<BTreeSet<String>>,
}

impl Expect {
    /// base:v0, which every trial commits before its operation, must be there as it was.
    fn base_v0(files: Files) -> Expect {
        let mut exp = Expect::default();
        exp.certain.insert("base:v0".into(), files);
        exp
    }
}

/// Checks every listed version against `exp` and `latest` against the newest; returns the
/// optional versions that are there.
fn check_versions(s: &TestStore, exp: &Expect, when: &str) -> BTreeSet<String> {
    let mut listed = BTreeSet::new();
    for a in s.json(&["list"]).as_array().unwrap() {
        let name = a["artifact"].as_str().unwrap().to_string();
        let vs = versions(s, &name);
        if let Some(newest) = vs
            .iter()
            .max_by_key(|v| v.trim_start_matches('v').parse::<u64>().unwrap())
        {
            let latest = s.json(&["show", &format!("{name}:latest")]);
            assert_eq!(
                latest["version"].as_str(),
                Some(newest.as_str()),
                "{when}: {name}:latest should name the newest version"
            );
        }
        for v in vs {
            listed.insert(format!("{name}:{v}"));
        }
    }
    for r in exp.certain.keys() {
        assert!(
            listed.contains(r),
            "{when}: committed version {r} is gone; versions listed: {listed:?}"
        );
    }
    for r in &listed {
        let want = exp
            .certain
            .get(r)
            .or_else(|| exp.optional.get(r))
            .unwrap_or_else(|| {
                panic!(
                    "{when}: version {r} should not exist (expected {:?}, maybe {:?})",
                    exp.certain.keys().collect::<Vec<_>>(),
                    exp.optional.keys().collect::<Vec<_>>()
                )
            });
        if exp.read.borrow().contains(r) {
            let paths: Files = ls(s, r).into_iter().map(|p| (p, String::new())).collect();
            let want_paths: Files = want.keys().map(|p| (p.clone(), String::new())).collect();
            assert_files(
                &format!("{when}: the paths of version {r}"),
                &want_paths,
                &paths,
            );
        } else {
            assert_files(&format!("{when}: version {r}"), want, &version_files(s, r));
            exp.read.borrow_mut().insert(r.clone());
        }
    }
    trace("check versions");
    exp.optional
        .keys()
        .filter(|r| listed.contains(*r))
        .cloned()
        .collect()
}

fn sql_strings(s: &TestStore, q: &str) -> Vec<Vec<String>> {
    s.sql(q)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| v.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// `staged/` holds a directory only for drafts that exist, and in it only the draft's lock
/// and the staged files the catalog names.
fn check_staged(s: &TestStore, when: &str) {
    let drafts: BTreeSet<String> = sql_strings(s, "SELECT id FROM drafts")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    let named: BTreeSet<(String, String)> = sql_strings(
        s,
        "SELECT draft, staged FROM draft_entries WHERE staged IS NOT NULL",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    let staged = s.root.join("staged");
    let mut extra = Vec::new();
    if staged.exists() {
        for e in fs::read_dir(&staged).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !e.file_type().unwrap().is_dir() || !drafts.contains(&name) {
                extra.push(format!("staged/{name} (no such draft)"));
                continue;
            }
            for f in fs::read_dir(e.path()).unwrap() {
                let f = f.unwrap().file_name().to_string_lossy().into_owned();
                if f != "lock" && !named.contains(&(name.clone(), f.clone())) {
                    extra.push(format!("staged/{name}/{f} (not a file of the draft)"));
                }
            }
        }
    }
    let heading = format!(
        "{when}: leftovers of the crash were not reclaimed: {} entries",
        extra.len()
    );
    assert_no_problems(&heading, &extra, 20);
}

/// Runs `gc` to its end, then: `staging/` is empty, `blobs/` holds exactly the blobs the
/// catalog references, `staged/` only what drafts use; `verify` passes.
fn gc_and_check(s: &TestStore, when: &str) {
    trace("(before gc)");
    let out = s.run(&["gc"]);
    trace("gc");
    assert!(
        out.status.success(),
        "artifactfs gc {when} failed ({}):\n{}",
        out.status,
        stderr(&out)
    );
    let leftovers: Vec<String> = fs::read_dir(s.root.join("staging"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "{when}: staging/ still holds {} entries after gc: {:?}",
        leftovers.len(),
        &leftovers[..leftovers.len().min(10)]
    );
    let referenced: BTreeSet<String> = sql_strings(
        s,
        "SELECT lower(hex(blob)) FROM chunk_entries WHERE blob IS NOT NULL \
         UNION SELECT lower(hex(blob)) FROM draft_entries WHERE blob IS NOT NULL",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let mut stored = BTreeSet::new();
    let mut misplaced = Vec::new();
    for f in s.blob_files() {
        match f.split_once('/') {
            Some((fan, name)) if name.len() == 64 && name.starts_with(fan) => {
                stored.insert(name.to_string());
            }
            _ => misplaced.push(f),
        }
    }
    let missing: Vec<&String> = referenced.difference(&stored).collect();
    let unused: Vec<&String> = stored.difference(&referenced).collect();
    assert!(
        misplaced.is_empty() && missing.is_empty() && unused.is_empty(),
        "{when}: after gc blobs/ should hold exactly the {} referenced blobs: {} missing {:?}, \
         {} unreferenced {:?}, {} not blob names {:?}",
        referenced.len(),
        missing.len(),
        &missing[..missing.len().min(5)],
        unused.len(),
        &unused[..unused.len().min(5)],
        misplaced.len(),
        &misplaced[..misplaced.len().min(5)]
    );
    let known = [
        "catalog.db",
        "catalog.db-wal",
        "catalog.db-shm",
        "blobs",
        "staging",
        "staged",
        "lock",
        "mount.log",
    ];
    let strays: Vec<String> = fs::read_dir(&s.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(&n.as_str()))
        .collect();
    assert!(
        strays.is_empty(),
        "{when}: the store holds entries it does not know after gc: {strays:?}"
    );
    check_staged(s, &format!("{when}, after gc"));
    verify_ok(s, &format!("{when}, after gc"));
}

/// The end of every trial: gc, exact store contents, no panic in the server's log, and a
/// clean unmount.
fn finish_trial(s: &TestStore, m: Mounted, exp: &Expect) {
    gc_and_check(s, "at the end");
    let present = check_versions(s, exp, "at the end");
    assert_eq!(
        present.len(),
        exp.optional.len(),
        "at the end every expected version is there"
    );
    let log = m.log();
    assert!(
        !log.contains("panicked"),
        "the mount server panicked:\n{}",
        tail(&log, 3000)
    );
    let out = m.umount();
    trace("umount");
    assert!(
        out.status.success(),
        "artifactfs umount at the end failed ({}): {}",
        out.status,
        stderr(&out)
    );
}

fn draft_files(m: &Mounted, draft: &str) -> Files {
    let dir = m.path(&format!("drafts/{draft}"));
    assert!(
        dir.is_dir(),
        "draft {draft} is not in the mount ({} missing)",
        dir.display()
    );
    files_of(&dir)
}

// ----- setup shared by the scenarios -----

/// Logs `base:v0`: 300 small files and two multi-MiB ones.
fn setup_base(s: &TestStore, rng: &mut Rng) -> Contents {
    let big = [mib(rng, 1, 3), mib(rng, 2, 4)];
    let (base, dir) = written_tree(s, rng, "base-src", 300, &big);
    assert_eq!(log(s, "base", &dir), "base:v0");
    trace("setup base");
    base
}

/// A tree from `gen_tree`, written to `dir` of the test's directory for the CLI to read.
fn written_tree(
    s: &TestStore,
    rng: &mut Rng,
    dir: &str,
    n_small: usize,
    big: &[usize],
) -> (Contents, PathBuf) {
    let c = gen_tree(rng, n_small, big);
    let path = s.path(dir);
    write_contents(&path, &c);
    (c, path)
}

/// The arguments of `draft add base SRC --as AS`.
fn draft_add_args<'a>(src: &'a Path, as_: &'a str) -> [&'a OsStr; 6] {
    [
        os("draft"),
        os("add"),
        os("base"),
        src.as_os_str(),
        os("--as"),
        os(as_),
    ]
}

fn small_paths(c: &Contents) -> Vec<String> {
    c.keys().filter(|k| k.ends_with(".txt")).cloned().collect()
}

/// Fills the draft `base` through the mount: 300 new files and two big ones under new/,
/// ten base files rewritten, five appended to, one big base file patched in place, ten
/// removed and one directory renamed. Returns what the draft holds.
fn fill_through_mount(m: &Mounted, rng: &mut Rng, base: &Contents) -> Contents {
    let draft = m.path("drafts/base");
    fs::create_dir(&draft).unwrap_or_else(|e| panic!("mkdir {}: {e}", draft.display()));
    let mut exp = base.clone();
    let big = [mib(rng, 2, 5), mib(rng, 1, 2)];
    for (rel, data) in prefixed(&gen_tree(rng, 300, &big), "new/") {
        write_file(&draft.join(&rel), &data);
        exp.insert(rel, data);
    }
    let picks = rng.pick(&small_paths(base), 25);
    for rel in &picks[..10] {
        let data = noise(rng.next(), rng.range(1, 8000) as usize);
        fs::write(draft.join(rel), &data).unwrap();
        exp.insert(rel.clone(), data);
    }
    for rel in &picks[10..15] {
        let extra = noise(rng.next(), 100);
        let mut f = OpenOptions::new()
            .append(true)
            .open(draft.join(rel))
            .unwrap();
        f.write_all(&extra).unwrap();
        exp.get_mut(rel).unwrap().extend_from_slice(&extra);
    }
    for rel in &picks[15..25] {
        fs::remove_file(draft.join(rel)).unwrap();
        exp.remove(rel);
    }
    {
        let f = OpenOptions::new()
            .write(true)
            .open(draft.join("big0.bin"))
            .unwrap();
        f.write_all_at(b"patched in place", 4096).unwrap();
        exp.get_mut("big0.bin").unwrap()[4096..4096 + 16].copy_from_slice(b"patched in place");
    }
    fs::rename(draft.join("d09"), draft.join("renamed09")).unwrap();
    exp = exp
        .into_iter()
        .map(|(p, d)| match p.strip_prefix("d09/") {
            Some(rest) => (format!("renamed09/{rest}"), d),
            None => (p, d),
        })
        .collect();
    assert_files(
        "the draft filled through the mount",
        &hashes(&exp),
        &draft_files(m, "base"),
    );
    exp
}

/// Fills a new draft `base` with the CLI: `draft add` of 300 new files and two big ones under
/// new/ and of five rewritten base files, `draft rm` of one directory. Returns what the draft
/// holds.
fn fill_with_cli(s: &TestStore, rng: &mut Rng, base: &Contents) -> Contents {
    s.ok(&["draft", "new", "base"]);
    let big = [mib(rng, 2, 5), mib(rng, 1, 2)];
    let (added, src) = written_tree(s, rng, "add-src", 300, &big);
    s.ok(&draft_add_args(&src, "new"));
    let mut want = base.clone();
    want.extend(prefixed(&added, "new/"));
    for (i, rel) in rng.pick(&small_paths(base), 5).iter().enumerate() {
        let data = noise(rng.next(), rng.range(1, 8000) as usize);
        let f = s.path(&format!("mod-{i}"));
        write_file(&f, &data);
        s.ok(&draft_add_args(&f, rel));
        want.insert(rel.clone(), data);
    }
    s.ok(&["draft", "rm", "base", "d03"]);
    want.retain(|k, _| !k.starts_with("d03/"));
    want
}

/// After a commit that did not happen: go on using the draft through the mount (before any
/// gc) — append to files it staged and add copies of their former content — so that a blob
/// the killed commit placed but did not record cannot be confused with the files' new
/// content.
fn edit_after_crash(m: &Mounted, exp: &mut Contents) {
    let draft = m.path("drafts/base");
    let mut targets: Vec<String> = exp
        .keys()
        .filter(|k| k.starts_with("new/d0"))
        .take(3)
        .cloned()
        .collect();
    targets.push("new/big0.bin".into());
    for (i, rel) in targets.iter().enumerate() {
        let before = exp[rel].clone();
        let mut f = OpenOptions::new()
            .append(true)
            .open(draft.join(rel))
            .unwrap_or_else(|e| panic!("open {rel} of the draft for appending: {e}"));
        f.write_all(b" -- written after the crash").unwrap();
        drop(f);
        exp.get_mut(rel)
            .unwrap()
            .extend_from_slice(b" -- written after the crash");
        let copy = format!("again/{i}.bin");
        write_file(&draft.join(&copy), &before);
        exp.insert(copy, before);
    }
}

/// A commit request through `.commit` that also sets an alias and a description.
const ALIAS_REQUEST: &str = r#"{"aliases": ["best"], "description": "crash trial"}"#;

/// The alias `best` of base names `version`, or (None) does not exist.
fn check_best(s: &TestStore, version: Option<&str>) {
    let out = s.run(&["--json", "show", "base:best"]);
    match version {
        Some(v) => {
            assert_success(&out, &["show", "base:best"]);
            let shown: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
            assert_eq!(shown["version"].as_str(), Some(v), "base:best: {shown}");
        }
        None => assert!(
            !out.status.success(),
            "the alias best exists though the commit that sets it is not there: {}",
            stdout(&out)
        ),
    }
}

/// Makes versions v1..=n of base, each the base plus its own new files (x<k>/); returns
/// their contents.
fn more_versions(s: &TestStore, rng: &mut Rng, base: &Contents, n: usize) -> Vec<Contents> {
    let mut out = Vec::new();
    for k in 1..=n {
        s.ok(&["draft", "new", "base"]);
        if k > 1 {
            s.ok(&["draft", "rm", "base", &format!("x{}", k - 1)]);
        }
        let big = [mib(rng, 1, 2)];
        let (extra, src) = written_tree(s, rng, &format!("extra-{k}"), 150, &big);
        let prefix = format!("x{k}");
        s.ok(&draft_add_args(&src, &prefix));
        let out_line = s.ok(&["draft", "commit", "base"]);
        assert!(out_line.contains(&format!("base:v{k}")), "{out_line}");
        let mut c = base.clone();
        c.extend(prefixed(&extra, &format!("{prefix}/")));
        out.push(c);
    }
    out
}

// ----- after the kill -----

/// A trial after its kill, on the store mounted again: what every scenario checks from
/// there on and how it ends, so that each scenario states only what is its own.
struct Crash<'a> {
    /// The mount made after the kill.
    m: Mounted<'a>,
    /// How long the operation ran: to its end, or to the kill.
    op: Duration,
    /// Whether the kill interrupted the operation (false: it had finished first).
    interrupted: bool,
    /// Whether the operation reported success before the kill.
    succeeded: bool,
    /// "after … was killed", for the messages of the checks.
    when: &'static str,
}

impl Crash<'_> {
    /// The checks of every trial once the store is mounted again: the new mount reclaimed
    /// what the crash left in `staged/`, and `verify` passes.
    fn first_checks(self, s: &TestStore) -> Self {
        check_staged(s, "after the mount started again");
        verify_ok(s, self.when);
        self
    }

    /// For an operation that makes base:v1 (with the files of `new`): base:v0 is as
    /// committed, base:v1 wholly there or absent, and there if the operation succeeded
    /// (`success` says how it told so). Returns what is expected and whether base:v1 is there.
    fn check_new_version(
        &self,
        s: &TestStore,
        base: &Contents,
        new: &Contents,
        success: &str,
    ) -> (Expect, bool) {
        let mut exp = Expect::base_v0(hashes(base));
        exp.optional.insert("base:v1".into(), hashes(new));
        let present = !check_versions(s, &exp, self.when).is_empty();
        if self.succeeded {
            assert!(present, "{success}, yet base:v1 is not there");
        }
        (exp, present)
    }

    /// Ends the trial (`finish_trial`) and reports it, with `outcome` for the summary.
    fn finish(self, s: &TestStore, exp: &Expect, outcome: &str) -> Report {
        finish_trial(s, self.m, exp);
        Report {
            op: self.op,
            interrupted: self.interrupted,
            outcome: outcome.into(),
            checked: 0,
        }
    }
}

/// Runs a CLI command while the store is mounted and SIGKILLs it `delay` after its start;
/// then mounts afresh and makes the first checks. Err: the report of a calibration (no
/// delay), which lets the command run to its end and checks nothing further.
fn kill_cli<'a>(
    s: &'a TestStore,
    m: Mounted<'a>,
    args: &[&OsStr],
    tag: &str,
    delay: Option<Duration>,
    when: &'static str,
) -> Result<Crash<'a>, Report> {
    let mut p = Proc::spawn(s.command(args), s, tag);
    let Some(delay) = delay else {
        p.wait(OP_LIMIT);
        return Err(Report::calibrated(&p));
    };
    let interrupted = !p.run_until(delay) && p.sigkill();
    if !interrupted {
        p.assert_clean_exit();
    }
    let op = if interrupted { delay } else { p.ended.unwrap() };
    let m = remount_clean(s, m);
    let c = Crash {
        m,
        op,
        interrupted,
        succeeded: p.succeeded(),
        when,
    };
    Ok(c.first_checks(s))
}

/// The rest of a trial whose commit of the draft base was killed: base:v1 is there and the
/// draft gone, or base:v1 is absent and the draft intact; then the draft, edited further
/// (before any gc), commits again with `commit_again`. The alias `best` comes with base:v1.
fn end_commit_trial(
    s: &TestStore,
    c: Crash,
    base: &Contents,
    mut want: Contents,
    success: &str,
    with_alias: bool,
    commit_again: impl FnOnce(&Mounted),
) -> Report {
    let (mut exp, present) = c.check_new_version(s, base, &want, success);
    let drafts = drafts_listed(s);
    let outcome = if present {
        assert!(
            !drafts.contains(&"base".to_string()),
            "base:v1 was committed, yet its draft is still there: {drafts:?}"
        );
        gc_and_check(s, c.when);
        "version present"
    } else {
        assert_files(
            &format!("the draft whose commit was interrupted ({})", c.when),
            &hashes(&want),
            &draft_files(&c.m, "base"),
        );
        // No gc before going on: a user goes on with the draft as the crash left it.
        check_best(s, None);
        edit_after_crash(&c.m, &mut want);
        commit_again(&c.m);
        "version absent"
    };
    check_best(s, with_alias.then_some("v1"));
    exp.certain.insert("base:v1".into(), hashes(&want));
    exp.optional.clear();
    c.finish(s, &exp, outcome)
}

// ----- scenarios -----

/// Kills the server while `cp -r` copies a big tree into a draft and a writer creates and
/// rewrites files, each recorded only once its fsync (or close) returned.
fn daemon_copy(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    let big = [mib(rng, 2, 5), mib(rng, 1, 3)];
    let (copy, copy_src) = written_tree(s, rng, "copy-src", 400, &big);
    let m = mount_fresh(s);
    let pid = m.server_pid();
    let draft = m.path("drafts/base");
    fs::create_dir(&draft).unwrap();

    let log_path = s.path("writer.log");
    let stop = s.path("writer.stop");
    let mods = rng.pick(&small_paths(&base), 10);
    let mut writer_cmd = Command::new("python3");
    writer_cmd
        .arg("-c")
        .arg(WRITER)
        .arg(&draft)
        .arg(&log_path)
        .arg(&stop)
        .arg(rng.next().to_string())
        .arg(s.path("base-src"))
        .args(&mods);
    let mut writer = Proc::spawn(writer_cmd, s, "writer");
    // The copy starts once the writer is at work, so that the kill finds both busy.
    wait_until(
        "the writer started",
        Duration::from_secs(20),
        || match fs::metadata(&log_path) {
            Ok(m) if m.len() > 0 => Ok(()),
            _ if writer.poll() => panic!("the writer exited early: {}", writer.stderr()),
            _ => Err("no line in its log yet".into()),
        },
    );
    let mut cp_cmd = Command::new("cp");
    cp_cmd.arg("-r").arg(&copy_src).arg(draft.join("copied"));
    let mut cp = Proc::spawn(cp_cmd, s, "cp");
    let Some(delay) = delay else {
        cp.wait(OP_LIMIT);
        fs::write(&stop, "").unwrap();
        writer.wait(OP_LIMIT);
        return Report::calibrated(&cp);
    };
    let (op, interrupted) = kill_server_during(&m, pid, &mut cp, delay);
    // The writer fails on the dead mount; it must be gone before the next mount.
    writer.wait(Duration::from_secs(60));
    if !interrupted {
        cp.assert_clean_exit();
    }
    let m = remount_after_kill(s, m);
    let c = Crash {
        m,
        op,
        interrupted,
        succeeded: cp.succeeded(),
        when: "after the server was killed",
    }
    .first_checks(s);

    // Every file the writer finished is intact; the one it was writing may be anything.
    let log = fs::read_to_string(&log_path).unwrap_or_default();
    let mut state: BTreeMap<String, Option<(String, String)>> = BTreeMap::new();
    for line in log.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "B" => {
                state.insert(f[1].to_string(), None);
            }
            "F" => {
                state.insert(f[1].to_string(), Some((f[2].to_string(), f[3].to_string())));
            }
            "E" | "S" => {}
            other => panic!("writer log: unexpected line {other:?}"),
        }
    }
    let written = state.values().filter(|v| v.is_some()).count();
    let d = draft_files(&c.m, "base");
    let base_h = hashes(&base);
    let copy_h = hashes(&copy);
    let mut problems = Vec::new();
    let mut partial = Vec::new();
    for (p, h) in &d {
        if let Some(rel) = p.strip_prefix("copied/") {
            match copy_h.get(rel) {
                None => problems.push(format!("unexpected {p}")),
                Some(want) if want != h => partial.push(p.clone()),
                Some(_) => {}
            }
        } else if let Some(st) = state.get(p) {
            if let Some((want, how)) = st
                && want != h
            {
                problems.push(format!(
                    "{p}: its {how} returned before the kill, yet it holds other content"
                ));
            }
        } else if let Some(want) = base_h.get(p) {
            if want != h {
                problems.push(format!("{p}: a base file nobody wrote changed"));
            }
        } else {
            problems.push(format!("unexpected {p}"));
        }
    }
    for (p, st) in &state {
        if let Some((_, how)) = st
            && !d.contains_key(p)
        {
            problems.push(format!(
                "{p}: its {how} returned before the kill, yet it is gone"
            ));
        }
    }
    for p in base.keys() {
        if !state.contains_key(p) && !d.contains_key(p) {
            problems.push(format!("{p}: a base file nobody touched is gone"));
        }
    }
    // cp writes one file at a time: all but the one it was writing were closed.
    if partial.len() > 1 || (!interrupted && !partial.is_empty()) {
        problems.push(format!(
            "{} copied files differ from their source (cp {}): {:?}",
            partial.len(),
            if interrupted {
                "was interrupted, so at most one may"
            } else {
                "had finished"
            },
            &partial[..partial.len().min(10)]
        ));
    }
    if !interrupted && copy.keys().any(|k| !d.contains_key(&format!("copied/{k}"))) {
        problems.push("cp finished before the kill, yet copied files are missing".into());
    }
    let heading = format!(
        "the draft after the server was killed ({written} files written by the writer, {} \
         entries in the draft)",
        d.len()
    );
    assert_no_problems(&heading, &problems, 25);

    let mut exp = Expect::base_v0(base_h);
    check_versions(s, &exp, c.when);
    gc_and_check(s, c.when);
    assert_files("the draft after gc", &d, &draft_files(&c.m, "base"));
    let r = write_control(&c.m.path("drafts/base/.commit"), "commit");
    assert_eq!(r, "ok", "committing the draft after the crash");
    exp.certain.insert("base:v1".into(), d);
    let outcome = if partial.is_empty() {
        "copied files all whole"
    } else {
        "one copied file cut short"
    };
    Report {
        checked: written,
        ..c.finish(s, &exp, outcome)
    }
}

/// The writer of `daemon-copy`: argv = draft, log, stop file, seed, directory holding the
/// base version's files, base files to rewrite. In turn it creates new files, rewrites base
/// files (O_TRUNC) and patches the big base files in place (the first write copies them
/// into the draft). Logs "B path" before opening and "F path sha256 fsync|close" once the
/// fsync (or the close) returned; stops at the first error or when the stop file appears.
const WRITER: &str = r#"
import hashlib, os, random, sys
draft, logp, stop, seed, base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
mods = sys.argv[6:]
bigs = {}
for name in ("big0.bin", "big1.bin"):
    with open(os.path.join(base, name), "rb") as f:
        bigs[name] = bytearray(f.read())
rnd = random.Random(seed)
log = os.open(logp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def note(s):
    os.write(log, (s + "\n").encode())
try:
    os.mkdir(os.path.join(draft, "w"))
    i = 0
    while not os.path.exists(stop) and i < 100000:
        if i % 7 == 3:
            # Patch a big base file in place: its first write copies it into the draft.
            rel = "big%d.bin" % ((i // 7) % 2)
            content = bigs[rel]
            at = rnd.randrange(0, len(content) - 64)
            patch = rnd.randbytes(64)
            note("B " + rel)
            fd = os.open(os.path.join(draft, rel), os.O_WRONLY)
            if os.pwrite(fd, patch, at) != len(patch):
                raise OSError(0, "short pwrite")
            content[at:at + 64] = patch
            sha = hashlib.sha256(content).hexdigest()
        else:
            rel = mods[(i // 5) % len(mods)] if i % 5 == 4 else "w/%05d.bin" % i
            data = rnd.randbytes(rnd.randint(1, 200000))
            note("B " + rel)
            fd = os.open(os.path.join(draft, rel), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            sha = hashlib.sha256(data).hexdigest()
        if i % 2 == 0:
            os.fsync(fd)
            note("F %s %s fsync" % (rel, sha))
            os.close(fd)
        else:
            os.close(fd)
            note("F %s %s close" % (rel, sha))
        i += 1
    note("S stopped")
except OSError as e:
    note("E %s" % str(e).replace("\n", " "))
"#;

/// Kills the server while it commits a draft through `.commit`.
fn daemon_commit(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    let m = mount_fresh(s);
    let pid = m.server_pid();
    let want = fill_through_mount(&m, rng, &base);
    trace("fill through the mount");
    let with_alias = rng.next().is_multiple_of(2);
    let request = if with_alias { ALIAS_REQUEST } else { "commit" };
    let mut commit = spawn_control_commit(s, &m.path("drafts/base/.commit"), request);
    let Some(delay) = delay else {
        commit.wait(OP_LIMIT);
        assert_eq!(commit.stdout().trim(), "ok", "commit through .commit");
        return Report::calibrated(&commit);
    };
    let (op, interrupted) = kill_server_during(&m, pid, &mut commit, delay);
    let said = commit.stdout().trim().to_string();
    if !interrupted {
        assert_eq!(said, "ok", "the .commit write finished before the kill");
    }
    let m = remount_after_kill(s, m);
    let c = Crash {
        m,
        op,
        interrupted,
        succeeded: said == "ok",
        when: "after the server was killed during a commit",
    }
    .first_checks(s);
    end_commit_trial(
        s,
        c,
        &base,
        want,
        "the .commit write returned ok",
        with_alias,
        |m| {
            let r = write_control(&m.path("drafts/base/.commit"), request);
            assert_eq!(r, "ok", "committing again after the crash");
        },
    )
}

/// Kills `artifactfs draft commit` of a draft filled by `draft add`/`draft rm` (or, with
/// `through_mount`, filled through the mount).
fn cli_commit(
    s: &TestStore,
    rng: &mut Rng,
    delay: Option<Duration>,
    through_mount: bool,
) -> Report {
    let base = setup_base(s, rng);
    let m = mount_fresh(s);
    let want = if through_mount {
        fill_through_mount(&m, rng, &base)
    } else {
        fill_with_cli(s, rng, &base)
    };
    let with_alias = rng.next().is_multiple_of(2);
    let mut commit_args = vec![os("draft"), os("commit"), os("base")];
    if with_alias {
        commit_args.extend([os("--alias"), os("best")]);
    }
    let when = "after draft commit was killed";
    let c = match kill_cli(s, m, &commit_args, "commit", delay, when) {
        Ok(c) => c,
        Err(calibration) => return calibration,
    };
    end_commit_trial(
        s,
        c,
        &base,
        want,
        "draft commit succeeded",
        with_alias,
        |_| {
            let out = s.ok(&commit_args);
            assert!(
                out.contains("base:v1"),
                "committing again gives base:v1: {out}"
            );
        },
    )
}

/// Kills `artifactfs gc` after two versions were deleted, while a CLI draft and a draft
/// written through the mount hold blobs and staged files.
fn cli_gc(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    let vs = more_versions(s, rng, &base, 3);
    s.ok(&["delete", "base:v1"]);
    s.ok(&["delete", "base:v2"]);
    s.ok(&["draft", "new", "other", "--type", "dataset"]);
    let big = [mib(rng, 1, 2)];
    let (other, other_src) = written_tree(s, rng, "other-src", 100, &big);
    s.ok(&[os("draft"), os("add"), os("other"), other_src.as_os_str()]);
    let m = mount_fresh(s);
    // A draft of base (from v3) with files written through the mount.
    let draft = m.path("drafts/base");
    fs::create_dir(&draft).unwrap();
    let mut in_mount = vs[2].clone();
    let big = [mib(rng, 1, 2)];
    for (rel, data) in prefixed(&gen_tree(rng, 40, &big), "m/") {
        write_file(&draft.join(&rel), &data);
        in_mount.insert(rel, data);
    }
    for rel in rng.pick(&small_paths(&base), 3) {
        let data = noise(rng.next(), 500);
        fs::write(draft.join(&rel), &data).unwrap();
        in_mount.insert(rel, data);
    }

    let c = match kill_cli(s, m, &[os("gc")], "gc", delay, "after gc was killed") {
        Ok(c) => c,
        Err(calibration) => return calibration,
    };
    let mut exp = Expect::base_v0(hashes(&base));
    exp.certain.insert("base:v3".into(), hashes(&vs[2]));
    check_versions(s, &exp, c.when);
    assert_files(
        "draft other after gc was killed",
        &hashes(&other),
        &draft_files(&c.m, "other"),
    );
    assert_files(
        "draft base (written in the mount) after gc was killed",
        &hashes(&in_mount),
        &draft_files(&c.m, "base"),
    );
    gc_and_check(s, c.when);
    // The drafts' blobs and staged files survived both gc runs: they commit exactly.
    s.ok(&["draft", "commit", "other"]);
    assert_eq!(
        write_control(&c.m.path("drafts/base/.commit"), "commit"),
        "ok"
    );
    exp.certain.insert("other:v0".into(), hashes(&other));
    exp.certain.insert("base:v4".into(), hashes(&in_mount));
    let outcome = if c.succeeded {
        "gc done"
    } else {
        "gc cut short"
    };
    c.finish(s, &exp, outcome)
}

/// Kills `artifactfs delete` of one of three versions (another carries an alias).
fn cli_delete(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    let vs = more_versions(s, rng, &base, 2);
    let target = rng.range(0, 2) as usize;
    let aliased = (target + 1 + rng.range(0, 1) as usize) % 3;
    s.ok(&["alias", "set", &format!("base:v{aliased}"), "best"]);
    let m = mount_fresh(s);
    let contents = [&base, &vs[0], &vs[1]];
    let target_ref = format!("base:v{target}");
    let args = [os("delete"), os(&target_ref)];
    let c = match kill_cli(s, m, &args, "delete", delay, "after delete was killed") {
        Ok(c) => c,
        Err(calibration) => return calibration,
    };
    let mut exp = Expect::default();
    for (k, files) in contents.iter().enumerate() {
        let r = format!("base:v{k}");
        if k == target {
            exp.optional.insert(r, hashes(files));
        } else {
            exp.certain.insert(r, hashes(files));
        }
    }
    let still = !check_versions(s, &exp, c.when).is_empty();
    if c.succeeded {
        assert!(!still, "delete succeeded, yet {target_ref} is still there");
    }
    assert_eq!(
        s.json(&["show", "base:best"])["version"].as_str(),
        Some(format!("v{aliased}").as_str()),
        "the alias best still names v{aliased}"
    );
    // The mount shows the same.
    let listed: BTreeSet<String> = fs::read_dir(c.m.path("base"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        listed.contains(&format!("v{target}")),
        still,
        "the mount lists {listed:?}"
    );
    gc_and_check(s, c.when);
    if still {
        s.ok(&["delete", &target_ref]);
    }
    exp.optional.clear();
    let outcome = if still {
        "version kept"
    } else {
        "version deleted"
    };
    c.finish(s, &exp, outcome)
}

/// Kills `artifactfs log` of a big directory as the next version of base.
fn cli_log(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    let big = [mib(rng, 1, 4), mib(rng, 1, 4), mib(rng, 2, 4)];
    let (new, src) = written_tree(s, rng, "log-src", 800, &big);
    let m = mount_fresh(s);
    let args = [
        os("log"),
        os("base"),
        src.as_os_str(),
        os("--type"),
        os("dataset"),
    ];
    let c = match kill_cli(s, m, &args, "log", delay, "after log was killed") {
        Ok(c) => c,
        Err(calibration) => return calibration,
    };
    let (mut exp, present) = c.check_new_version(s, &base, &new, "log succeeded");
    let drafts = drafts_listed(s);
    assert!(
        drafts.is_empty(),
        "a killed log left drafts behind: {drafts:?}"
    );
    gc_and_check(s, c.when);
    if !present {
        assert_eq!(
            log(s, "base", &src),
            "base:v1",
            "logging again after the crash"
        );
    }
    exp.certain.insert("base:v1".into(), hashes(&new));
    exp.optional.clear();
    let outcome = if present {
        "version present"
    } else {
        "version absent"
    };
    c.finish(s, &exp, outcome)
}

/// Kills `artifactfs draft add` of a big directory: the draft has all of it or none.
fn cli_draft_add(s: &TestStore, rng: &mut Rng, delay: Option<Duration>) -> Report {
    let base = setup_base(s, rng);
    s.ok(&["draft", "new", "base"]);
    let big = [mib(rng, 1, 4), mib(rng, 2, 4)];
    let (added, src) = written_tree(s, rng, "add-src", 500, &big);
    let m = mount_fresh(s);
    let args = draft_add_args(&src, "added");
    let c = match kill_cli(s, m, &args, "add", delay, "after draft add was killed") {
        Ok(c) => c,
        Err(calibration) => return calibration,
    };
    let mut full = base.clone();
    full.extend(prefixed(&added, "added/"));
    let (none_h, full_h) = (hashes(&base), hashes(&full));
    let d = draft_files(&c.m, "base");
    let all = d == full_h;
    if c.succeeded {
        assert_files("the draft after draft add succeeded", &full_h, &d);
    } else if !all {
        assert_files(
            "the draft after draft add was killed (it must hold all of the add or none)",
            &none_h,
            &d,
        );
    }
    let mut exp = Expect::base_v0(none_h);
    check_versions(s, &exp, c.when);
    gc_and_check(s, c.when);
    if !all {
        s.ok(&args);
    }
    assert_files("the draft, complete", &full_h, &draft_files(&c.m, "base"));
    let out = s.ok(&["draft", "commit", "base"]);
    assert!(out.contains("base:v1"), "{out}");
    exp.certain.insert("base:v1".into(), full_h);
    let outcome = if all { "all added" } else { "nothing added" };
    c.finish(s, &exp, outcome)
}
