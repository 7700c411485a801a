//! Runs (SPEC §8): `artifactfs run -- CMD` records a run around a command it runs, `run begin`
//! and `run end` record one for schedulers that start processes themselves, and every command
//! run with `ARTIFACTFS_RUN` set records the versions it reads and makes as the run's inputs
//! and outputs. A run whose process vanished without recording its end is found out when runs
//! are next read (see [`settle`]), by whether that process (its pid and start time) still
//! lives, or, from another machine, by its heartbeat.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use crate::catalog::runs::{self, CRASHED, Ending, FAILED, FINISHED, KILLED, RUNNING, RunRow};
use crate::catalog::sql::Failure;
use crate::catalog::{Catalog, Db, now_ns};
use crate::error::{Error, Result};
use crate::names::{DistributedId, RunId, TypeName};

/// The environment variable naming the run a process belongs to.
pub const ENV_RUN: &str = "ARTIFACTFS_RUN";
/// The run's group, set for the command `run` starts (W&B's `run.group`).
pub const ENV_GROUP: &str = "ARTIFACTFS_RUN_GROUP";

/// How often `run` tells the catalog its run is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(30);
/// A run on another machine whose heartbeat is older than this is taken for crashed.
pub const LOST_AFTER: Duration = Duration::from_secs(300);

/// The longest run name.
pub const MAX_NAME_CHARS: usize = 128;
/// The largest config, as for metadata.
pub const MAX_CONFIG_BYTES: usize = crate::commit::MAX_METADATA_BYTES;

/// What a new run records besides what is found out about the machine.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub id: Option<RunId>,
    pub name: Option<RunName>,
    pub group: Option<DistributedId>,
    pub job_type: Option<TypeName>,
    /// A JSON object, checked by [`parse_config`].
    pub config: Option<String>,
    pub command: Vec<OsString>,
}

/// A run's display name: any text of 1–128 characters without control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunName(String);

impl RunName {
    pub fn new(value: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidName {
            kind: "run name",
            value: value.to_string(),
            reason,
        };
        let n = value.chars().count();
        if value.trim().is_empty() {
            return Err(bad("must not be empty or only white space".into()));
        }
        if n > MAX_NAME_CHARS {
            return Err(bad(format!(
                "is {n} characters long; the limit is {MAX_NAME_CHARS}"
            )));
        }
        if let Some(c) = value.chars().find(|c| c.is_control()) {
            return Err(bad(format!("contains the control character {c:?}")));
        }
        Ok(RunName(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for RunName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        RunName::new(s)
    }
}

/// Checks that a run's config is a JSON object of reasonable size; returns it compacted.
pub fn parse_config(text: &str) -> Result<String> {
    if text.len() > MAX_CONFIG_BYTES {
        return Err(Error::invalid(
            "--config",
            format!("is {} bytes; the limit is {MAX_CONFIG_BYTES}", text.len()),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid("--config", format!("is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(
            "--config",
            "must be a JSON object, like {\"lr\": 0.01}",
        ));
    }
    Ok(value.to_string())
}

/// A new run id: 8 characters from `0-9 a-z`, random.
pub fn new_id() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `len` bytes into the buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        // No entropy to be had: the clock and the pid, which are unique enough here.
        let seed = now_ns() as u64 ^ ((std::process::id() as u64) << 40);
        bytes = seed.to_le_bytes();
    }
    bytes
        .iter()
        .map(|b| DIGITS[*b as usize % DIGITS.len()] as char)
        .collect()
}

/// The host name of this machine.
pub fn host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes, NUL-terminated when it fits.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match rc {
        0 => String::from_utf8_lossy(&buf[..end]).into_owned(),
        _ => "unknown".into(),
    }
}

/// The name of the user running this process (else its uid).
pub fn user() -> String {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0u8; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: the buffers outlive the call; `found` is set to `&pwd` or null.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc == 0 && !found.is_null() {
        // SAFETY: pw_name points into `buf`, NUL-terminated.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    std::env::var("USER").unwrap_or_else(|_| uid.to_string())
}

/// Where a process id means one process: this boot of this machine, in this PID namespace.
pub fn machine() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("{} {ns}", boot.trim())
}

/// When process (or thread) `pid` started, in clock ticks after boot (field 22 of
/// /proc/PID/stat); None if there is no such process. With the pid it names one process
/// for as long as the machine runs: a pid is reused only by a process started later.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a /proc/PID/stat line. The command name (field 2) is in parentheses and may
/// hold spaces and parentheses itself, so the fields are counted from the last `)`.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    // After the name come field 3 (state) onwards: field 22 is the 20th of them.
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// The run a process's environment names (`ARTIFACTFS_RUN`), read from /proc/PID/environ:
/// None when it names none, or when the environment cannot be read (another user's process,
/// without root; a process that is gone). This is the environment the process was started
/// with: a change it makes to its own environment later shows only in the processes it
/// starts.
pub fn run_in_environ(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    run_in(&environ)
}

fn run_in(environ: &[u8]) -> Option<String> {
    let key = format!("{ENV_RUN}=");
    environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(key.as_bytes()))
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The default name of a run: its program's file name, and its first argument's when that
/// is a file (`python train.py`); the id when it has no command.
fn default_name(command: &[OsString], id: &str) -> String {
    let base = |a: &OsString| {
        Path::new(a)
            .file_name()
            .map_or_else(|| a.to_string_lossy(), |f| f.to_string_lossy())
            .into_owned()
    };
    let Some(program) = command.first() else {
        return id.to_string();
    };
    let mut name = base(program);
    if let Some(arg) = command.get(1).filter(|a| Path::new(a).is_file()) {
        name = format!("{name} {}", base(arg));
    }
    RunName::new(&name)
        .map(|n| n.0)
        .unwrap_or_else(|_| id.to_string())
}

/// The row of a run starting now, in this process's machine, for `spec`.
fn new_row(spec: &Spec, watch: Option<(u32, u64)>) -> RunRow {
    let id = spec
        .id
        .as_ref()
        .map_or_else(new_id, |i| i.as_str().to_string());
    let command: Vec<String> = spec
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let now = now_ns();
    RunRow {
        name: spec
            .name
            .as_ref()
            .map_or_else(|| default_name(&spec.command, &id), |n| n.0.clone()),
        id,
        group: spec.group.as_ref().map_or(String::new(), |g| g.to_string()),
        job_type: spec
            .job_type
            .as_ref()
            .map_or(String::new(), |t| t.to_string()),
        config: spec.config.clone().unwrap_or_else(|| "{}".into()),
        command: serde_json::Value::from(command).to_string(),
        host: host(),
        user: user(),
        machine: machine(),
        pid: watch.map(|(p, _)| p as i64),
        pid_start: watch.map(|(_, s)| s as i64),
        state: RUNNING.into(),
        exit_code: None,
        exit_signal: None,
        started_ns: now,
        heartbeat_ns: None,
        ended_ns: None,
    }
}

/// Records a new run (in its own transaction).
fn record(catalog: &mut Catalog, row: &RunRow) -> Result<()> {
    catalog.write(|tx| {
        runs::insert(tx, row).map_err(|e| match e {
            Error::Catalog { source, .. } if source.failure() == Failure::Duplicate => {
                Error::AlreadyExists(format!("run {}", row.id))
            }
            other => other,
        })
    })
}

/// `run begin`: records a run that other processes belong to by `ARTIFACTFS_RUN`. With
/// `watch`, the run lives as long as that process (of this machine); without, until `run
/// end`.
pub fn begin(catalog: &mut Catalog, spec: &Spec, watch: Option<u32>) -> Result<RunRow> {
    let watch = match watch {
        Some(pid) => {
            let start = start_time(pid).ok_or_else(|| {
                Error::invalid(format!("--pid {pid}"), "no such process on this machine")
            })?;
            Some((pid, start))
        }
        None => None,
    };
    let row = new_row(spec, watch);
    record(catalog, &row)?;
    Ok(row)
}

/// How `run end` ends a run.
#[derive(Clone, Copy, Debug)]
pub enum EndAs {
    Exit(i32),
    Crashed,
}

/// `run end`: records how a run begun by `run begin` ended. Refused for a run that ended
/// already, unless it was only taken for crashed.
pub fn end(catalog: &mut Catalog, id: &str, how: EndAs) -> Result<RunRow> {
    catalog.write(|tx| {
        let run = require(tx, id)?;
        if !run.is_running() && run.state != CRASHED {
            return Err(Error::refused(
                format!("run end {id}"),
                format!("the run ended already ({})", describe_end(&run)),
            ));
        }
        let ending = match how {
            EndAs::Exit(code) => Ending {
                state: if code == 0 { FINISHED } else { FAILED },
                exit_code: Some(code as i64),
                exit_signal: None,
                ended_ns: now_ns(),
            },
            EndAs::Crashed => Ending {
                state: CRASHED,
                exit_code: None,
                exit_signal: None,
                ended_ns: now_ns(),
            },
        };
        runs::end(tx, id, &ending, false)?;
        require(tx, id)
    })
}

/// A run that must exist, with a hint for a mistyped id.
pub fn require(conn: &Db, id: &str) -> Result<RunRow> {
    if let Some(r) = runs::get(conn, id)? {
        return Ok(r);
    }
    let all = runs::list(conn)?;
    let hint = crate::names::closest(id, all.iter().map(|r| r.id.as_str()))
        .map(|c| format!("did you mean {c}?"))
        .unwrap_or_else(|| "`artifactfs runs` lists them".into());
    Err(crate::catalog::absent(
        conn,
        format!("run {id}"),
        Some(hint),
    ))
}

/// How a run that is over ended, in words: `exit status 0`, `killed by signal 9`, `crashed`.
pub fn describe_end(run: &RunRow) -> String {
    match (run.state.as_str(), run.exit_code, run.exit_signal) {
        (_, Some(code), _) => format!("{}, exit status {code}", run.state),
        (_, None, Some(sig)) => format!("{} by signal {sig}", run.state),
        (state, None, None) => state.to_string(),
    }
}

/// Whether a running run's process is gone: then when it was last known alive. A run with
/// no process of its own (begun with `run begin` and no `--pid`) is alive until ended; one
/// of another machine is judged by its heartbeat, if it keeps one.
fn vanished(run: &RunRow, here: &str, now: i64) -> Option<i64> {
    let pid = run.pid?;
    let last_seen = run.heartbeat_ns.unwrap_or(run.started_ns);
    if run.machine == here {
        let alive = u32::try_from(pid)
            .ok()
            .and_then(start_time)
            .is_some_and(|t| Some(t as i64) == run.pid_start);
        return (!alive).then_some(last_seen);
    }
    let beat = run.heartbeat_ns?;
    (now.saturating_sub(beat) > LOST_AFTER.as_nanos() as i64).then_some(last_seen)
}

/// Marks running runs whose process vanished as crashed, ended when they were last known
/// alive. Runs are read through this, so a run killed with SIGKILL (whose `run` could
/// record nothing) shows as crashed. A store this process may not write is left as it is;
/// then the runs read are marked in memory only (see [`settled`]).
pub fn settle(catalog: &mut Catalog) -> Result<Vec<(String, i64)>> {
    let (here, now) = (machine(), now_ns());
    let dead: Vec<(String, i64)> = runs::running(catalog.conn())?
        .iter()
        .filter_map(|r| vanished(r, &here, now).map(|t| (r.id.clone(), t)))
        .collect();
    if dead.is_empty() || catalog.is_read_only() {
        return Ok(dead);
    }
    catalog.write(|tx| {
        for (id, last_seen) in &dead {
            let ending = Ending {
                state: CRASHED,
                exit_code: None,
                exit_signal: None,
                ended_ns: *last_seen,
            };
            // Only if still running: a run that ended between the look and now did end.
            runs::end(tx, id, &ending, true)?;
        }
        Ok(())
    })?;
    Ok(dead)
}

/// `run` after [`settle`]: as found in the catalog, or as settled when it could not be
/// written.
pub fn settled(mut run: RunRow, dead: &[(String, i64)]) -> RunRow {
    if let Some((_, t)) = dead.iter().find(|(id, _)| *id == run.id)
        && run.is_running()
    {
        run.state = CRASHED.into();
        run.ended_ns = Some(*t);
    }
    run
}

/// The run this process belongs to, from `ARTIFACTFS_RUN`, if it names one of this store.
/// One that names none is ignored with a warning (unless `quiet`): nothing is recorded for
/// it, and the command goes on.
pub fn current(conn: &Db, quiet: bool) -> Result<Option<RunRow>> {
    let Some(value) = std::env::var_os(ENV_RUN).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let id = value.to_string_lossy();
    let found = if id.len() <= 1024 {
        runs::get(conn, &id)?
    } else {
        None
    };
    if found.is_none() && !quiet {
        let shown: String = id.chars().take(128).collect();
        eprintln!(
            "warning: {ENV_RUN}={shown:?} names no run in store {}; nothing is recorded for it",
            crate::catalog::store_of(conn)
        );
    }
    Ok(found)
}

/// Records that the current run read version `artifact:vNUMBER` (by `via`: `get`, `cat`).
/// A failure to record is a warning: the version was read all the same.
pub fn note_input(catalog: &mut Catalog, run: &RunRow, artifact: &str, number: u64, via: &str) {
    let recorded =
        catalog.write(|tx| runs::record_input(tx, &run.id, artifact, number, via, now_ns()));
    if let Err(e) = recorded {
        eprintln!(
            "warning: could not record {artifact}:v{number} as an input of run {}: {e}",
            run.id
        );
    }
}

/// The command's process, for the signal handler to pass signals on to.
static CHILD: AtomicI32 = AtomicI32::new(0);

extern "C" fn pass_on(sig: libc::c_int) {
    let child = CHILD.load(Ordering::Relaxed);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

extern "C" fn ignore(_: libc::c_int) {}

/// While `run` waits: SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 (a scheduler's, or `kill`) are
/// passed on to the command; SIGINT and SIGQUIT (a terminal's, which the command receives
/// itself) are left to it. Handlers, not "ignore": the command must not inherit them.
fn handle_signals() {
    let set = |sig: libc::c_int, handler: extern "C" fn(libc::c_int)| {
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    };
    for sig in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        set(sig, pass_on);
    }
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        set(sig, ignore);
    }
}

/// Keeps the run's heartbeat until told to stop (or the sender goes away).
fn keep_heartbeat(mut catalog: Catalog, id: String, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(HEARTBEAT) {
        if let Err(e) = catalog.write(|tx| runs::heartbeat(tx, &id, now_ns())) {
            log::warn!("run {id}: could not record a heartbeat: {e}");
        }
    }
}

/// The exit status `run` gives for a command that could not be started, as shells do: 127
/// when it was not found, 126 when it could not be executed.
fn spawn_status(e: &std::io::Error) -> i32 {
    match e.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

/// `artifactfs run -- CMD`: records a run, runs CMD in it, records how it ended and exits
/// with CMD's status (128 + N for a command killed by signal N).
pub fn execute(catalog: &mut Catalog, store_root: &Path, spec: &Spec) -> Result<ExitCode> {
    let me = std::process::id();
    let watch = start_time(me).map(|s| (me, s));
    let mut row = new_row(spec, watch);
    row.heartbeat_ns = Some(row.started_ns);
    record(catalog, &row)?;
    let program = &spec.command[0];
    let mut cmd = Command::new(program);
    cmd.args(&spec.command[1..])
        .env(ENV_RUN, &row.id)
        .env("ARTIFACTFS_STORE", store_root);
    match &spec.group {
        Some(g) => cmd.env(ENV_GROUP, g.as_str()),
        None => cmd.env_remove(ENV_GROUP),
    };
    handle_signals();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = spawn_status(&e);
            finish(catalog, &row.id, FAILED, Some(code as i64), None);
            eprintln!(
                "error: cannot run {}: {e} (run {} recorded as failed)",
                program.to_string_lossy(),
                row.id
            );
            return Ok(ExitCode::from(code as u8));
        }
    };
    CHILD.store(child.id() as i32, Ordering::Relaxed);
    let (stop, stopped) = mpsc::channel();
    let beat = {
        let again = catalog.open_again();
        let id = row.id.clone();
        std::thread::spawn(move || match again {
            Ok(c) => keep_heartbeat(c, id, stopped),
            Err(e) => log::warn!("run {id}: no heartbeat will be recorded: {e}"),
        })
    };
    let status = child.wait();
    CHILD.store(0, Ordering::Relaxed);
    drop(stop);
    let _ = beat.join();
    let status = status.map_err(|e| Error::io(program.to_string_lossy().into_owned(), e))?;
    let (state, code, signal, exit) = match (status.code(), status.signal()) {
        (Some(0), _) => (FINISHED, Some(0), None, 0),
        (Some(c), _) => (FAILED, Some(c as i64), None, c),
        (None, Some(s)) => (KILLED, None, Some(s as i64), 128 + s),
        (None, None) => (FAILED, None, None, 1),
    };
    finish(catalog, &row.id, state, code, signal);
    Ok(ExitCode::from(exit.clamp(0, 255) as u8))
}

/// Records the end of the run `run` itself ran; a failure to is a warning, since the
/// command's own status is what `run` must give.
fn finish(catalog: &mut Catalog, id: &str, state: &str, code: Option<i64>, signal: Option<i64>) {
    let ending = Ending {
        state,
        exit_code: code,
        exit_signal: signal,
        ended_ns: now_ns(),
    };
    if let Err(e) = catalog.write(|tx| runs::end(tx, id, &ending, false)) {
        eprintln!("warning: could not record the end of run {id}: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_whatever_the_name() {
        let line =
            b"4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        assert!(start_time(std::process::id()).is_some());
    }

    #[test]
    fn the_run_is_read_from_the_environment_block() {
        assert_eq!(
            run_in(b"A=1\0ARTIFACTFS_RUN=abc\0B=2\0"),
            Some("abc".into())
        );
        assert_eq!(run_in(b"ARTIFACTFS_RUN_GROUP=g\0"), None);
        assert_eq!(run_in(b"ARTIFACTFS_RUN=\0"), None);
        assert_eq!(run_in(b""), None);
    }

    #[test]
    fn names_and_configs_are_checked() {
        assert!(RunName::new("train: lr=0.1 ✓").is_ok());
        for bad in ["", "  ", "a\nb", "\u{1b}[31mred", &"x".repeat(129)] {
            assert!(RunName::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_config(r#"{"lr": 0.1}"#).unwrap(), r#"{"lr":0.1}"#);
        for bad in ["[1]", "{", "3", "\"x\""] {
            assert!(parse_config(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_are_eight_lowercase_characters() {
        let id = new_id();
        assert_eq!(id.len(), 8);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        );
        assert!(RunId::new(&id).is_ok());
    }
}
