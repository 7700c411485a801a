//! Runs and the versions they read and made (lineage). Versions are named by artifact and
//! number, which are never reused, so the records outlive a deleted version.

use super::sql::{Db, DbResult, Row};
use crate::error::{CatalogContext, Result};
use crate::params;

/// A run as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRow {
    pub id: String,
    pub name: String,
    /// `""` for none.
    pub group: String,
    /// `""` for none.
    pub job_type: String,
    /// A JSON object, compacted.
    pub config: String,
    /// The command line, as a JSON array of strings.
    pub command: String,
    pub host: String,
    pub user: String,
    /// Where `pid` is meaningful: boot id and PID namespace (see `runs::machine`).
    pub machine: String,
    /// The process whose life is the run's, if it has one, and its start time.
    pub pid: Option<i64>,
    pub pid_start: Option<i64>,
    pub state: String,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub started_ns: i64,
    pub heartbeat_ns: Option<i64>,
    pub ended_ns: Option<i64>,
}

pub const RUNNING: &str = "running";
pub const FINISHED: &str = "finished";
pub const FAILED: &str = "failed";
pub const KILLED: &str = "killed";
pub const CRASHED: &str = "crashed";

impl RunRow {
    pub fn is_running(&self) -> bool {
        self.state == RUNNING
    }
}

/// A version a run read or made, and whether it still exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub run: String,
    pub artifact: String,
    pub number: u64,
    /// For outputs: the run's commit created the version (not found it unchanged).
    pub made: bool,
    /// How it was seen: `mount`, `get`, `cat` for inputs; `log`, `commit`, `finish`,
    /// `.commit` for outputs.
    pub via: String,
    pub recorded_ns: i64,
    /// The artifact's type, if the artifact exists.
    pub type_name: Option<String>,
    pub deleted: bool,
}

impl Link {
    pub fn reference(&self) -> String {
        format!("{}:v{}", self.artifact, self.number)
    }
}

const RUN_COLUMNS: &str = "id, name, run_group, job_type, config, command, host, user_name,
    machine, pid, pid_start, state, exit_code, exit_signal, started_ns, heartbeat_ns, ended_ns";

fn run_from_row(r: &Row) -> DbResult<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        name: r.get(1)?,
        group: r.get(2)?,
        job_type: r.get(3)?,
        config: r.get(4)?,
        command: r.get(5)?,
        host: r.get(6)?,
        user: r.get(7)?,
        machine: r.get(8)?,
        pid: r.get(9)?,
        pid_start: r.get(10)?,
        state: r.get(11)?,
        exit_code: r.get(12)?,
        exit_signal: r.get(13)?,
        started_ns: r.get(14)?,
        heartbeat_ns: r.get(15)?,
        ended_ns: r.get(16)?,
    })
}

/// Records a new run. An id that is taken fails with the engine's uniqueness error, which
/// the caller turns into "already exists".
pub fn insert(conn: &Db, run: &RunRow) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO runs ({RUN_COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            &run.id,
            &run.name,
            &run.group,
            &run.job_type,
            &run.config,
            &run.command,
            &run.host,
            &run.user,
            &run.machine,
            run.pid,
            run.pid_start,
            &run.state,
            run.exit_code,
            run.exit_signal,
            run.started_ns,
            run.heartbeat_ns,
            run.ended_ns
        ],
    )
    .ctx(|| format!("record run {}", run.id))?;
    Ok(())
}

pub fn get(conn: &Db, id: &str) -> Result<Option<RunRow>> {
    conn.query_opt(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
        params![id],
        run_from_row,
    )
    .ctx(|| format!("look up run {id}"))
}

/// Every run, oldest first.
pub fn list(conn: &Db) -> Result<Vec<RunRow>> {
    conn.query(
        &format!("SELECT {RUN_COLUMNS} FROM runs ORDER BY started_ns, id"),
        params![],
        run_from_row,
    )
    .ctx(|| "list runs".into())
}

/// Runs not ended yet.
pub fn running(conn: &Db) -> Result<Vec<RunRow>> {
    conn.query(
        &format!("SELECT {RUN_COLUMNS} FROM runs WHERE state = ?1 ORDER BY started_ns, id"),
        params![RUNNING],
        run_from_row,
    )
    .ctx(|| "list running runs".into())
}

/// How a run ended.
#[derive(Clone, Debug, Default)]
pub struct Ending<'a> {
    pub state: &'a str,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub ended_ns: i64,
}

/// Records the end of run `id`; with `only_running`, only if nothing ended it meanwhile.
/// Returns whether the run was changed.
pub fn end(conn: &Db, id: &str, ending: &Ending, only_running: bool) -> Result<bool> {
    let set = "UPDATE runs SET state = ?2, exit_code = ?3, exit_signal = ?4, ended_ns = ?5
                WHERE id = ?1";
    let (code, signal) = (ending.exit_code, ending.exit_signal);
    let n = if only_running {
        conn.execute(
            &format!("{set} AND state = ?6"),
            params![id, ending.state, code, signal, ending.ended_ns, RUNNING],
        )
    } else {
        conn.execute(
            set,
            params![id, ending.state, code, signal, ending.ended_ns],
        )
    }
    .ctx(|| format!("record the end of run {id}"))?;
    Ok(n > 0)
}

/// Notes that the process of run `id` is alive at `now_ns`.
pub fn heartbeat(conn: &Db, id: &str, now_ns: i64) -> Result<()> {
    conn.execute(
        "UPDATE runs SET heartbeat_ns = ?2 WHERE id = ?1 AND state = ?3",
        params![id, now_ns, RUNNING],
    )
    .ctx(|| format!("record that run {id} is alive"))?;
    Ok(())
}

fn exists(conn: &Db, id: &str) -> Result<bool> {
    Ok(conn
        .query_opt("SELECT 1 FROM runs WHERE id = ?1", params![id], |_| Ok(()))
        .ctx(|| format!("look up run {id}"))?
        .is_some())
}

/// Records that run `run` read version `artifact:vNUMBER`, once per run and version (the
/// first way it was seen is kept). Returns false, recording nothing, when there is no such
/// run.
pub fn record_input(
    conn: &Db,
    run: &str,
    artifact: &str,
    number: u64,
    via: &str,
    now_ns: i64,
) -> Result<bool> {
    if !exists(conn, run)? {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO run_inputs (run, artifact, number, via, recorded_ns)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (run, artifact, number) DO NOTHING",
        params![run, artifact, number as i64, via, now_ns],
    )
    .ctx(|| format!("record {artifact}:v{number} as an input of run {run}"))?;
    Ok(true)
}

/// Records that run `run` committed version `artifact:vNUMBER` (`made`: created it). Returns
/// false, recording nothing, when there is no such run.
pub fn record_output(
    conn: &Db,
    run: &str,
    artifact: &str,
    number: u64,
    made: bool,
    via: &str,
    now_ns: i64,
) -> Result<bool> {
    if !exists(conn, run)? {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO run_outputs (run, artifact, number, made, via, recorded_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (run, artifact, number) DO NOTHING",
        params![run, artifact, number as i64, made as i64, via, now_ns],
    )
    .ctx(|| format!("record {artifact}:v{number} as an output of run {run}"))?;
    Ok(true)
}

/// Links joined with what exists of their versions now.
fn links(conn: &Db, table: &str, filter: &str, params: &[super::sql::Param]) -> Result<Vec<Link>> {
    let made = if table == "run_outputs" {
        "l.made"
    } else {
        "0"
    };
    conn.query(
        &format!(
            "SELECT l.run, l.artifact, l.number, {made}, l.via, l.recorded_ns, a.type, v.id
               FROM {table} l
               LEFT JOIN artifacts a ON a.name = l.artifact
               LEFT JOIN versions v ON v.artifact = a.id AND v.number = l.number
              WHERE {filter}
              ORDER BY l.artifact, l.number, l.run"
        ),
        params,
        |r| {
            Ok(Link {
                run: r.get(0)?,
                artifact: r.get(1)?,
                number: r.get::<i64>(2)? as u64,
                made: r.get(3)?,
                via: r.get(4)?,
                recorded_ns: r.get(5)?,
                type_name: r.get(6)?,
                deleted: r.get::<Option<i64>>(7)?.is_none(),
            })
        },
    )
    .ctx(|| format!("read {table}"))
}

/// The versions run `run` read.
pub fn inputs_of(conn: &Db, run: &str) -> Result<Vec<Link>> {
    links(conn, "run_inputs", "l.run = ?1", params![run])
}

/// The versions run `run` committed.
pub fn outputs_of(conn: &Db, run: &str) -> Result<Vec<Link>> {
    links(conn, "run_outputs", "l.run = ?1", params![run])
}

/// The runs that committed a version (its maker first).
pub fn producers_of(conn: &Db, artifact: &str, number: u64) -> Result<Vec<Link>> {
    let mut all = links(
        conn,
        "run_outputs",
        "l.artifact = ?1 AND l.number = ?2",
        params![artifact, number as i64],
    )?;
    all.sort_by_key(|l| (!l.made, l.recorded_ns));
    Ok(all)
}

/// The runs that read a version.
pub fn consumers_of(conn: &Db, artifact: &str, number: u64) -> Result<Vec<Link>> {
    links(
        conn,
        "run_inputs",
        "l.artifact = ?1 AND l.number = ?2",
        params![artifact, number as i64],
    )
}

/// The run whose commit created a version, if one did.
pub fn maker_of(conn: &Db, artifact: &str, number: u64) -> Result<Option<String>> {
    conn.query_opt(
        "SELECT run FROM run_outputs WHERE artifact = ?1 AND number = ?2 AND made = 1",
        params![artifact, number as i64],
        |r| r.get(0),
    )
    .ctx(|| format!("find the run that made {artifact}:v{number}"))
}

/// How many versions a run read and committed.
pub fn counts(conn: &Db, run: &str) -> Result<(u64, u64)> {
    let count = |table: &str| -> Result<u64> {
        conn.query_one(
            &format!("SELECT count(*) FROM {table} WHERE run = ?1"),
            params![run],
            |r| r.get::<i64>(0),
        )
        .map(|n| n as u64)
        .ctx(|| format!("count {table} of run {run}"))
    };
    Ok((count("run_inputs")?, count("run_outputs")?))
}
