//! Digests of staged files, worked out on a background thread as soon as the last writer
//! through this mount closes a big one, so that a commit through the mount links
//! just-written files into `blobs/` without reading them again. The same thread starts
//! writing each file back to disk, so the commit's fsync finds most of it done.
//!
//! A digest is only as good as the file it was taken of. Each is kept with the file's inode
//! number, size and mtime as they were for the whole time it was hashed, and a commit uses
//! it only while the file still shows them ([`crate::staging::Stamp`]). Opening the file
//! for writing through this mount forgets it at once; a change made in any other way moves
//! the mtime. Digests live in this process only: a commit from the command line, or after
//! the mount restarted, hashes the files itself, as every commit did before.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, mpsc};

use crate::blobs::SMALL_FILE;
use crate::hash::Digest;
use crate::staging::{StagedDigest, Stamp};

/// A staged file: (draft id, staged file number).
type Key = (i64, i64);

enum State {
    /// Queued or being hashed (`started`). `retimed` is the mtime set through this mount
    /// meanwhile, which changes the times but not the bytes.
    Hashing {
        generation: u64,
        started: bool,
        retimed: Option<i64>,
    },
    Known(StagedDigest),
}

#[derive(Default)]
struct Table {
    next_generation: u64,
    states: HashMap<Key, State>,
}

#[derive(Default)]
struct Inner {
    table: Mutex<Table>,
    /// Signalled whenever a hash ends, for commits waiting on one.
    settled: Condvar,
}

struct Job {
    key: Key,
    path: PathBuf,
    generation: u64,
}

#[derive(Default)]
pub(super) struct Digests {
    inner: Arc<Inner>,
    /// The background thread's queue, started with the first job.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
}

impl Digests {
    /// Staged file `key` is being opened for writing: what was known of it no longer holds.
    pub fn forget(&self, key: Key) {
        lock(&self.inner.table).states.remove(&key);
    }

    /// The last writer of staged file `key` (at `path`, open as `file`) closed it: a big
    /// one is queued for hashing.
    pub fn closed(&self, key: Key, path: PathBuf, file: &File) {
        if file.metadata().map_or(true, |m| m.len() <= SMALL_FILE) {
            return;
        }
        let generation = {
            let mut t = lock(&self.inner.table);
            t.next_generation += 1;
            let generation = t.next_generation;
            t.states.insert(
                key,
                State::Hashing {
                    generation,
                    started: false,
                    retimed: None,
                },
            );
            generation
        };
        let job = Job {
            key,
            path,
            generation,
        };
        let mut jobs = lock(&self.jobs);
        let sender = jobs.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            let inner = self.inner.clone();
            let spawned = std::thread::Builder::new()
                .name("staged-digests".into())
                .spawn(move || work(&inner, rx));
            if let Err(e) = spawned {
                log::warn!("cannot start hashing staged files in the background: {e}");
            }
            tx
        });
        if sender.send(job).is_err() {
            // No thread to do it: the commit hashes the file.
            *jobs = None;
            self.forget(key);
        }
    }

    /// Staged file `key`'s mtime was set through this mount (to `mtime_ns`, as the file
    /// shows it now): its bytes are what they were.
    pub fn retimed(&self, key: Key, mtime_ns: i64) {
        let mut t = lock(&self.inner.table);
        match t.states.get_mut(&key) {
            Some(State::Known(k)) => k.stamp.mtime_ns = mtime_ns,
            Some(State::Hashing { retimed, .. }) => *retimed = Some(mtime_ns),
            None => {}
        }
    }

    /// What staged file `key` was found to hold, for a commit, which stores it: waits for a
    /// hash under way to end. A file still queued is left to the commit, which hashes it on
    /// all cores with others.
    pub fn take(&self, key: Key) -> Option<StagedDigest> {
        let mut t = lock(&self.inner.table);
        loop {
            match t.states.get(&key) {
                Some(State::Known(_)) => match t.states.remove(&key) {
                    Some(State::Known(k)) => return Some(k),
                    _ => return None,
                },
                Some(State::Hashing { started: true, .. }) => {
                    t = self
                        .inner
                        .settled
                        .wait(t)
                        .unwrap_or_else(|e| e.into_inner());
                }
                Some(State::Hashing { started: false, .. }) => {
                    t.states.remove(&key);
                    return None;
                }
                None => return None,
            }
        }
    }
}

/// The background thread: hashes each queued file that is still wanted.
fn work(inner: &Inner, jobs: mpsc::Receiver<Job>) {
    for job in jobs {
        {
            let mut t = lock(&inner.table);
            match t.states.get_mut(&job.key) {
                Some(State::Hashing {
                    generation,
                    started,
                    ..
                }) if *generation == job.generation => *started = true,
                _ => continue,
            }
        }
        let hashed = hash(&job);
        let mut t = lock(&inner.table);
        let retimed = match t.states.get(&job.key) {
            Some(State::Hashing {
                generation,
                retimed,
                ..
            }) if *generation == job.generation => *retimed,
            // Opened for writing, or taken by a commit, meanwhile.
            _ => {
                inner.settled.notify_all();
                continue;
            }
        };
        let found = match hashed {
            Ok((before, digest, size, after))
                if size == before.size
                    && after.ino == before.ino
                    && after.size == before.size
                    && (after.mtime_ns == before.mtime_ns || Some(after.mtime_ns) == retimed) =>
            {
                Some(StagedDigest {
                    digest,
                    size,
                    stamp: after,
                })
            }
            Ok(_) => None,
            Err(e) => {
                log::debug!("{}: not hashed in the background: {e}", job.path.display());
                None
            }
        };
        match found {
            Some(k) => t.states.insert(job.key, State::Known(k)),
            None => t.states.remove(&job.key),
        };
        inner.settled.notify_all();
    }
}

/// The file's stamp before and after hashing it, its digest and the bytes hashed.
fn hash(job: &Job) -> std::io::Result<(Stamp, Digest, u64, Stamp)> {
    let file = File::open(&job.path)?;
    let before = Stamp::of(&file.metadata()?);
    // The commit will flush it: most of that is done by then if it starts now.
    crate::blobs::start_writeback(&file, 0, 0);
    let (digest, size) = Digest::of_reader(&file)?;
    let after = Stamp::of(&file.metadata()?);
    Ok((before, digest, size, after))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
