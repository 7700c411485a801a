//! Fault injection: fails the Nth write, fsync, rename or catalog commit of this process, so
//! tests can walk a failure over every step of a commit and check it is all or nothing.
//!
//! Off unless armed, by [`arm`] in a test or by `ARTIFACTFS_FAULT=OP:N` in the environment
//! of a CLI or mount process (`OP` is `write`, `fsync`, `rename`, `commit` or `request`; a
//! `request` fault panics inside the Nth FUSE request, to prove the server survives it).
//! When off, each check is one relaxed atomic load.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

pub const ENV: &str = "ARTIFACTFS_FAULT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Writing a blob's content.
    Write,
    /// Flushing a file, a directory or the filesystem to disk.
    Fsync,
    /// Renaming or linking a file into its final name.
    Rename,
    /// Committing a catalog transaction.
    Commit,
    /// Serving one FUSE request.
    Request,
}

const OPS: [Op; 5] = [Op::Write, Op::Fsync, Op::Rename, Op::Commit, Op::Request];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Write => "write",
            Op::Fsync => "fsync",
            Op::Rename => "rename",
            Op::Commit => "commit",
            Op::Request => "request",
        }
    }

    fn index(self) -> usize {
        OPS.iter().position(|o| *o == self).unwrap_or(0)
    }
}

static ARMED: AtomicBool = AtomicBool::new(false);
static PLAN: Mutex<Plan> = Mutex::new(Plan {
    op: Op::Write,
    nth: 0,
    seen: [0; 5],
    fired: false,
});

/// What an armed plan has seen: how many of each operation, and whether the fault fired.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub op: Op,
    pub nth: u64,
    pub seen: [u64; 5],
    pub fired: bool,
}

impl Plan {
    pub fn seen(&self, op: Op) -> u64 {
        self.seen[op.index()]
    }
}

fn plan() -> std::sync::MutexGuard<'static, Plan> {
    PLAN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails the `nth` (1-based) occurrence of `op` from now on; every other call passes.
pub fn arm(op: Op, nth: u64) {
    *plan() = Plan {
        op,
        nth,
        seen: [0; 5],
        fired: false,
    };
    ARMED.store(true, Ordering::SeqCst);
}

/// Turns injection off and returns what the plan saw.
pub fn disarm() -> Plan {
    ARMED.store(false, Ordering::SeqCst);
    *plan()
}

/// Arms from `ARTIFACTFS_FAULT=OP:N`; an unreadable value is an error, not silently ignored.
pub fn arm_from_env() -> Result<(), String> {
    let Some(value) = std::env::var_os(ENV) else {
        return Ok(());
    };
    let value = value.to_string_lossy();
    let parsed = value.split_once(':').and_then(|(op, n)| {
        let op = OPS.into_iter().find(|o| o.name() == op)?;
        Some((op, n.parse::<u64>().ok().filter(|n| *n > 0)?))
    });
    match parsed {
        Some((op, nth)) => {
            arm(op, nth);
            Ok(())
        }
        None => Err(format!(
            "{ENV}={value}: expected OP:N with OP one of write, fsync, rename, commit, request \
             and N a count from 1"
        )),
    }
}

/// Called just before `op` is done: an error if this is the occurrence to fail.
pub fn check(op: Op) -> std::io::Result<()> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut p = plan();
    p.seen[op.index()] += 1;
    if op == p.op && p.seen[op.index()] == p.nth {
        p.fired = true;
        return Err(std::io::Error::other(format!(
            "injected fault: {} #{}",
            op.name(),
            p.nth
        )));
    }
    Ok(())
}
