//! Lineage capture in the mount: the versions whose files the processes of a run open are
//! recorded as the run's inputs, and a commit through `.commit` as its output.
//!
//! The run comes from the process that made the request: `ARTIFACTFS_RUN` in the
//! environment it was started with (/proc/PID/environ), which its children and worker
//! processes inherit. Reading another process's environment needs the same user or root
//! (ptrace's read access); when it cannot be read, or names no run, nothing is recorded and
//! the request goes on as ever.
//!
//! The cost per open stays a hash lookup: what each pid was found to belong to is kept with
//! the process's start time (so a reused pid is not taken for the process that had it
//! before) and looked at again in /proc at most once a second per pid; the version of a
//! directory is kept per inode (numbers are never reused within a mount); and each run and
//! version pair is recorded once, by a thread of its own, with the open waiting for it
//! only briefly.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Fs, Ino, Node, inode, lock};
use crate::catalog::Backend;
use crate::catalog::runs;
use crate::catalog::{Catalog, now_ns};

/// How long what a pid was found to belong to is used before /proc is looked at again.
const RECHECK: Duration = Duration::from_secs(1);
/// How long an open waits for its input to be recorded before going on without.
const RECORD_WAIT: Duration = Duration::from_millis(100);
/// Bounds of the caches: past them, the oldest half goes (pids) or all (the rest).
const MAX_PIDS: usize = 8192;
const MAX_DIRS: usize = 65536;
const MAX_RECORDED: usize = 1 << 20;

/// A version: artifact and number.
type Version = (Arc<str>, u64);

struct Pid {
    start: u64,
    run: Option<Arc<str>>,
    checked: Instant,
}

#[derive(Default)]
struct State {
    pids: HashMap<u32, Pid>,
    /// The version each directory inode lies in (None: not in a version).
    dirs: HashMap<Ino, Option<Version>>,
    /// Run and version pairs recorded (or being recorded) by this mount.
    recorded: HashSet<(Arc<str>, Version)>,
}

/// Something to record, and where to say it is done.
struct Job {
    run: Arc<str>,
    version: Version,
    done: mpsc::Sender<()>,
}

pub(super) struct Capture {
    state: Mutex<State>,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    recorder: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Capture {
    pub(super) fn new(catalog: Backend) -> Capture {
        let (send, receive) = mpsc::channel();
        let recorder = std::thread::Builder::new()
            .name("lineage".into())
            .spawn(move || record_all(catalog, receive))
            .ok();
        Capture {
            state: Mutex::default(),
            jobs: Mutex::new(recorder.is_some().then_some(send)),
            recorder: Mutex::new(recorder),
        }
    }

    /// The run process `pid` belongs to, if it can be told.
    pub(super) fn run_of(&self, pid: u32) -> Option<Arc<str>> {
        if pid == 0 {
            return None;
        }
        let now = Instant::now();
        if let Some(p) = lock(&self.state).pids.get(&pid)
            && now.duration_since(p.checked) < RECHECK
        {
            return p.run.clone();
        }
        self.look_up(pid, now)
    }

    /// Looks process `pid` up in /proc: its start time, and its run if it is not the process
    /// this pid was before.
    fn look_up(&self, pid: u32, now: Instant) -> Option<Arc<str>> {
        let start = crate::runs::start_time(pid)?;
        if let Some(p) = lock(&self.state).pids.get_mut(&pid)
            && p.start == start
        {
            p.checked = now;
            return p.run.clone();
        }
        let run = crate::runs::run_in_environ(pid).map(Arc::from);
        let mut state = lock(&self.state);
        if state.pids.len() >= MAX_PIDS {
            let mut ages: Vec<Instant> = state.pids.values().map(|p| p.checked).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            state.pids.retain(|_, p| p.checked > cut);
        }
        state.pids.insert(
            pid,
            Pid {
                start,
                run: run.clone(),
                checked: now,
            },
        );
        run
    }

    /// Hands a run and version pair to the recorder, once, and waits briefly for it.
    fn record(&self, pid: u32, run: Arc<str>, version: Version) {
        {
            let mut state = lock(&self.state);
            if state.recorded.contains(&(run.clone(), version.clone())) {
                return;
            }
            // Once per pair, the pid is looked at again: what is recorded is exact even
            // when the process changed within the last second.
            state.pids.remove(&pid);
        }
        let Some(run) = self.look_up(pid, Instant::now()).filter(|r| *r == run) else {
            return;
        };
        {
            let mut state = lock(&self.state);
            if state.recorded.len() >= MAX_RECORDED {
                state.recorded.clear();
            }
            if !state.recorded.insert((run.clone(), version.clone())) {
                return;
            }
        }
        let (done, finished) = mpsc::channel();
        let sent = lock(&self.jobs)
            .as_ref()
            .map(|jobs| jobs.send(Job { run, version, done }));
        if let Some(Ok(())) = sent {
            let _ = finished.recv_timeout(RECORD_WAIT);
        }
    }
}

impl Drop for Capture {
    /// Records what is still queued before the mount goes.
    fn drop(&mut self) {
        lock(&self.jobs).take();
        if let Some(t) = lock(&self.recorder).take() {
            let _ = t.join();
        }
    }
}

/// The recorder: writes inputs as they come, several to a transaction when they queue up.
fn record_all(backend: Backend, jobs: mpsc::Receiver<Job>) {
    let mut catalog: Option<Catalog> = None;
    let mut unknown: HashSet<Arc<str>> = HashSet::new();
    let mut warned = false;
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        batch.extend(jobs.try_iter());
        if catalog.is_none() {
            catalog = Catalog::open_backend(&backend)
                .inspect_err(|e| log::warn!("lineage: cannot open the catalog: {e}"))
                .ok();
        }
        let Some(c) = catalog.as_mut() else {
            continue;
        };
        let now = now_ns();
        let written = c.write_relaxed(|tx| {
            let mut missing = Vec::new();
            for j in &batch {
                let (artifact, number) = &j.version;
                if !runs::record_input(tx, &j.run, artifact, *number, "mount", now)? {
                    missing.push(j.run.clone());
                }
            }
            Ok(missing)
        });
        match written {
            Ok(missing) => {
                for run in missing {
                    if unknown.insert(run.clone()) {
                        log::info!(
                            "lineage: a process's ARTIFACTFS_RUN={run:?} names no run of this \
                             store; nothing is recorded for it"
                        );
                    }
                }
            }
            Err(e) if !warned => {
                warned = true;
                log::warn!("lineage: could not record the inputs of runs: {e}");
            }
            Err(_) => {}
        }
        for j in batch {
            let _ = j.done.send(());
        }
    }
}

impl Fs {
    /// A file of a version was opened for reading by process `pid`: an input of its run.
    pub fn note_open(&self, pid: u32, ino: Ino) {
        let Some(run) = self.lineage.run_of(pid) else {
            return;
        };
        let Some(version) = self.version_of_file(ino) else {
            return;
        };
        self.lineage.record(pid, run, version);
    }

    /// The version a file of a version lies in.
    fn version_of_file(&self, ino: Ino) -> Option<Version> {
        let dir = match inode::split_derived(ino) {
            Some((dir, _)) => dir,
            None => self.name_of(ino)?.0,
        };
        if let Some(v) = lock(&self.lineage.state).dirs.get(&dir) {
            return v.clone();
        }
        let mut cur = dir;
        let mut found = None;
        for _ in 0..4096 {
            match self.node(cur).ok()? {
                Node::Version {
                    artifact, number, ..
                } => {
                    found = Some((Arc::from(artifact.as_str()), number));
                    break;
                }
                Node::Entry(_) => cur = self.name_of(cur)?.0,
                _ => break,
            }
        }
        let mut state = lock(&self.lineage.state);
        if state.dirs.len() >= MAX_DIRS {
            state.dirs.clear();
        }
        state.dirs.insert(dir, found.clone());
        found
    }
}
