//! Staged files: the bytes of draft files written through the mount. Each lives in
//! `STORE/staged/<draft id>/<number>` from the moment it is created (or first opened for
//! writing, as a copy of its base blob) until a commit stores it as a blob.
//!
//! The catalog row of a staged file holds its number and mode; its size and mtime are the
//! staged file's own, so writing needs no catalog change. A file written and closed is in
//! the page cache of the store's filesystem, so it survives the mount process being killed;
//! `fsync` makes it survive a power cut too.
//!
//! `staged/<draft id>/lock` keeps commits and writers apart: everyone with a file of the
//! draft open for writing holds it shared, a commit holds it exclusively. Neither waits long:
//! a commit while files are open for writing, or an open for writing while a commit runs, is
//! refused as busy after half a second (long enough to outwait a sweep's brief hold).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::catalog::Db;

use crate::catalog::drafts::{self, DraftRow};
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;
use crate::reference::Reference;

const LOCK_FILE: &str = "lock";
/// How long taking a draft's lock waits before the draft counts as busy.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);
/// Copies being made by [`Staging::unshare`]; a crash can leave one behind for the sweep.
const UNSHARE_PREFIX: &str = ".unshare";

#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
    /// One unshare at a time: two writers copying the same file would each rename their copy
    /// over the other's, losing what the first wrote.
    unsharing: std::sync::Mutex<()>,
}

/// A staged file's size and times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedMeta {
    pub size: u64,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub ctime_ns: i64,
}

/// Which file a staged file is, and how big and how recently written: what a digest taken of
/// it earlier must still match to be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

impl Stamp {
    pub fn of(m: &fs::Metadata) -> Stamp {
        Stamp {
            ino: m.ino(),
            size: m.len(),
            mtime_ns: meta_of(m).mtime_ns,
        }
    }
}

/// What a staged file was found to hold, and the file it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedDigest {
    pub digest: Digest,
    pub size: u64,
    pub stamp: Stamp,
}

/// A hold on a draft's staging lock; released when dropped.
#[derive(Debug)]
pub struct DraftLock(#[allow(dead_code)] File);

impl Staging {
    pub fn open(store_root: &Path) -> Result<Self> {
        let root = store_root.join("staged");
        fs::create_dir_all(&root).at(&root)?;
        Ok(Staging {
            root,
            unsharing: std::sync::Mutex::new(()),
        })
    }

    fn dir(&self, draft: i64) -> PathBuf {
        self.root.join(draft.to_string())
    }

    pub fn path(&self, draft: i64, id: i64) -> PathBuf {
        self.dir(draft).join(id.to_string())
    }

    /// Taken by each writer of the draft's files; refused while the draft is being committed.
    pub fn lock_for_writing(&self, d: &DraftRow) -> Result<DraftLock> {
        self.lock(
            d,
            libc::LOCK_SH,
            "it is being committed; try again once the commit is done",
        )
    }

    /// Taken by a commit; refused while any file of the draft is open for writing, naming
    /// the files that are.
    pub fn lock_for_commit(&self, conn: &Db, d: &DraftRow) -> Result<DraftLock> {
        match self.lock(
            d,
            libc::LOCK_EX,
            "files of it are open for writing; close them before committing",
        ) {
            Err(Error::Busy(generic)) => Err(match self.open_for_writing(conn, d)?.as_slice() {
                [] => Error::Busy(generic),
                [one] => Error::Busy(format!(
                    "{}: {} is open for writing; close it before committing",
                    d.label(),
                    lossy_path(one)
                )),
                [first, rest @ ..] => Error::Busy(format!(
                    "{}: {} and {} more file{} are open for writing; close them before committing",
                    d.label(),
                    lossy_path(first),
                    rest.len(),
                    if rest.len() == 1 { "" } else { "s" }
                )),
            }),
            other => other,
        }
    }

    /// The paths of the draft's staged files that a writer holds open: each writer holds
    /// its staged file's lock shared (see [`hold_for_writing`]).
    fn open_for_writing(&self, conn: &Db, d: &DraftRow) -> Result<Vec<Vec<u8>>> {
        let mut busy = Vec::new();
        for s in drafts::staged(conn, d.id)? {
            let Ok(f) = File::open(self.path(d.id, s.id)) else {
                continue;
            };
            // SAFETY: the descriptor is valid for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                busy.push(crate::tree::join(&s.parent, &s.name));
            }
        }
        busy.sort();
        Ok(busy)
    }

    /// Taken by a sweep, which passes over a draft in use rather than wait.
    fn try_lock_for_sweep(&self, d: &DraftRow) -> Result<Option<DraftLock>> {
        let path = self.dir(d.id).join(LOCK_FILE);
        let f = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            // No lock file: no writer ever staged a file here, or the draft's directory is
            // being removed by its commit.
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&path, e)),
        };
        // SAFETY: the descriptor is valid for the duration of the call.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Ok(None);
        }
        Ok(Some(DraftLock(f)))
    }

    fn lock(&self, d: &DraftRow, how: i32, busy: &str) -> Result<DraftLock> {
        let dir = self.dir(d.id);
        let path = dir.join(LOCK_FILE);
        let open = || {
            OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        };
        let f = match open() {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(&dir).at(&dir)?;
                open()
            }
            other => other,
        }
        .at(&path)?;
        // A sweep holds the lock exclusively for a moment: wait that out, but not a commit
        // or a writer, which may hold it for long.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            // SAFETY: the descriptor is valid for the duration of the call.
            if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
                return Ok(DraftLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::WouldBlock {
                return Err(Error::io(&path, e));
            }
            if std::time::Instant::now() >= deadline {
                return Err(Error::Busy(format!("{}: {busy}", d.label())));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// Creates a new staged file for draft `d`: empty, or a copy of `from` (shared with it
    /// where the filesystem can clone) carrying mtime `mtime_ns`. Returns its number and an
    /// open read-write handle. The caller must hold the draft's writing lock.
    pub fn create(&self, d: &DraftRow, from: Option<(Fill, i64)>) -> Result<(i64, File)> {
        let dir = self.dir(d.id);
        loop {
            let id = fresh_number();
            let path = dir.join(id.to_string());
            let mut file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(&path, e)),
            };
            if let Some((fill, mtime_ns)) = &from {
                let copied = match fill {
                    Fill::File(src) => copy_into(src, &mut file, &path),
                    Fill::Reference(r) => r.copy_to(*mtime_ns, &mut file).map(drop),
                };
                // The copy shows the base file's times, which a version records as one.
                let filled = copied.and_then(|()| {
                    let t = Some(SetTime::At(*mtime_ns));
                    set_file_times(&file, t, t).map_err(|e| Error::io(&path, e))
                });
                if let Err(e) = filled {
                    let _ = fs::remove_file(&path);
                    return Err(e);
                }
            }
            hold_for_writing(&file);
            return Ok((id, file));
        }
    }

    /// Opens staged file `id` of draft `d` for reading, or for reading and writing.
    pub fn open_file(&self, d: &DraftRow, id: i64, write: bool, append: bool) -> Result<File> {
        let path = self.path(d.id, id);
        if write {
            self.unshare(d, &path)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(write && !append)
            .append(write && append)
            .open(&path)
            .map_err(|e| missing(d, &path, e))?;
        if write {
            hold_for_writing(&file);
        }
        Ok(file)
    }

    /// A commit that failed after linking a staged file into `blobs/` leaves the draft
    /// naming a file that is also a blob. Writing it in place would change the blob, so it
    /// is first replaced by a copy of its own.
    fn unshare(&self, d: &DraftRow, path: &Path) -> Result<()> {
        let _one = self.unsharing.lock().unwrap_or_else(|e| e.into_inner());
        let m = fs::metadata(path).map_err(|e| missing(d, path, e))?;
        if m.nlink() <= 1 {
            // Linking made it read-only; a blob no longer, it is the draft's to write again.
            if m.mode() & 0o200 == 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600)).at(path)?;
            }
            return Ok(());
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(UNSHARE_PREFIX)
            .tempfile_in(self.dir(d.id))
            .at(path)?;
        let from = File::open(path).at(path)?;
        copy_into(&from, tmp.as_file_mut(), path)?;
        tmp.as_file()
            .set_modified(m.modified().at(path)?)
            .at(tmp.path())?;
        tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
        Ok(())
    }

    pub fn meta(&self, d: &DraftRow, id: i64) -> Result<StagedMeta> {
        Ok(self.meta_and_stamp(d, id)?.0)
    }

    /// The same, with what a digest taken earlier must match.
    pub fn meta_and_stamp(&self, d: &DraftRow, id: i64) -> Result<(StagedMeta, Stamp)> {
        let path = self.path(d.id, id);
        let m = fs::metadata(&path).map_err(|e| missing(d, &path, e))?;
        Ok((meta_of(&m), Stamp::of(&m)))
    }

    /// The blob digest, size and mtime staged file `id` would be stored with, read now.
    pub fn content(&self, d: &DraftRow, id: i64) -> Result<(Digest, u64, i64)> {
        let path = self.path(d.id, id);
        let file = File::open(&path).map_err(|e| missing(d, &path, e))?;
        let meta = meta_of(&file.metadata().at(&path)?);
        let (digest, size) = Digest::of_reader(file).at(&path)?;
        Ok((digest, size, meta.mtime_ns))
    }

    /// Makes the names of the draft's staged files durable.
    pub fn sync_dir(&self, d: &DraftRow) -> Result<()> {
        crate::blobs::sync_dir(&self.dir(d.id))
    }

    /// Sets the access and modification times of staged file `id` (None keeps one); its
    /// change time becomes now, as utimensat(2) makes it.
    pub fn set_times(
        &self,
        d: &DraftRow,
        id: i64,
        atime: Option<SetTime>,
        mtime: Option<SetTime>,
    ) -> Result<()> {
        let path = self.path(d.id, id);
        let f = File::open(&path).map_err(|e| missing(d, &path, e))?;
        set_file_times(&f, atime, mtime).at(&path)
    }

    /// Makes staged file `id`'s change time now: it got another name, lost one, or another
    /// mode, which the catalog records.
    pub fn touch(&self, d: &DraftRow, id: i64) -> Result<()> {
        let path = self.path(d.id, id);
        let f = File::open(&path).map_err(|e| missing(d, &path, e))?;
        touch_file(&f).at(&path)
    }

    /// Removes staged files nothing refers to any more; an open handle keeps reading its
    /// file, as on any filesystem.
    pub fn remove(&self, d: &DraftRow, ids: &[i64]) {
        for id in ids {
            let path = self.path(d.id, *id);
            if let Err(e) = fs::remove_file(&path)
                && e.kind() != ErrorKind::NotFound
            {
                log::warn!("could not remove {} ({e}); gc will", path.display());
            }
        }
    }

    /// Removes everything staged for a draft that was committed or discarded.
    pub fn remove_draft(&self, draft: i64) {
        let dir = self.dir(draft);
        if let Err(e) = fs::remove_dir_all(&dir)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!("could not remove {} ({e}); gc will", dir.display());
        }
    }

    /// Removes staged files no draft refers to: those of drafts that are gone, and files a
    /// draft replaced or removed. Drafts being written are left alone. Returns how many
    /// files were removed.
    pub fn sweep(&self, conn: &Db) -> Result<usize> {
        let mut removed = 0;
        for (draft, dir) in numbered(&self.root)? {
            let Some(d) = drafts::by_id(conn, draft)? else {
                removed += numbered(&dir).map_or(0, |files| files.len());
                self.remove_draft(draft);
                continue;
            };
            let Ok(Some(_lock)) = self.try_lock_for_sweep(&d) else {
                continue;
            };
            let wanted: HashSet<i64> = drafts::staged(conn, draft)?
                .into_iter()
                .map(|s| s.id)
                .collect();
            // A commit may remove the whole directory meanwhile: what is gone is fine.
            for entry in fs::read_dir(&dir).into_iter().flatten() {
                let path = entry.at(&dir)?.path();
                let name = path.file_name().unwrap_or_default().as_encoded_bytes();
                let unwanted = match std::str::from_utf8(name).ok().and_then(|n| n.parse().ok()) {
                    Some(id) => !wanted.contains(&id),
                    None => name.starts_with(UNSHARE_PREFIX.as_bytes()),
                };
                if unwanted {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == ErrorKind::NotFound => {}
                        Err(e) => return Err(Error::io(&path, e)),
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// Marks `file` as open for writing for as long as it is open, so a refused commit can name
/// it: a shared lock on the staged file, which a commit probes for.
fn hold_for_writing(file: &File) {
    // SAFETY: the descriptor is valid for the duration of the call. Failing to lock only
    // makes a refused commit's message less precise.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
}

fn lossy_path(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// A time to set: now, by the clock that stamps files, or a given one (ns since the epoch).
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    Now,
    At(i64),
}

/// Sets a file's access and modification times (None keeps one); its change time becomes now.
pub fn set_file_times(
    f: &File,
    atime: Option<SetTime>,
    mtime: Option<SetTime>,
) -> std::io::Result<()> {
    let spec = |t: Option<SetTime>| match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(ns)) => libc::timespec {
            tv_sec: ns.div_euclid(1_000_000_000),
            tv_nsec: ns.rem_euclid(1_000_000_000),
        },
    };
    let times = [spec(atime), spec(mtime)];
    // SAFETY: the descriptor is valid while `f` lives; `times` holds two timespecs.
    if unsafe { libc::futimens(f.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Makes a file's change time now without changing anything else: a chmod to the mode it
/// has. (A file shared with a blob after an interrupted commit only gets a new ctime.)
pub fn touch_file(f: &File) -> std::io::Result<()> {
    let mode = f.metadata()?.permissions();
    f.set_permissions(mode)
}

/// The entries of `dir` named by a number (draft directories, staged files), with their paths.
fn numbered(dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let path = entry.at(dir)?.path();
        if let Some(n) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<i64>().ok())
        {
            out.push((n, path));
        }
    }
    Ok(out)
}

pub fn meta_of(m: &fs::Metadata) -> StagedMeta {
    StagedMeta {
        size: m.len(),
        mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
        atime_ns: m.atime() * 1_000_000_000 + m.atime_nsec(),
        ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
    }
}

/// A staged file the catalog names but the disk lacks is damage, reported as such.
fn missing(d: &DraftRow, path: &Path, e: std::io::Error) -> Error {
    if e.kind() == ErrorKind::NotFound {
        Error::Corrupt {
            what: d.label(),
            why: format!("staged file {} is missing", path.display()),
        }
    } else {
        Error::io(path, e)
    }
}

/// A staged file number no other writer (in any process) picks: random, and created with
/// O_EXCL by the caller, which retries on a clash.
fn fresh_number() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    (h.finish() >> 1) as i64
}

/// Where a staged file's first bytes come from.
pub enum Fill<'a> {
    /// A blob, open (cloned where the filesystem can).
    File(&'a File),
    /// A referenced file, checked against its record as it is copied.
    Reference(&'a Reference),
}

/// Copies `from` into the empty `dst` (at `path`): a clone sharing the blocks where the
/// filesystem can (btrfs, XFS), else an in-kernel copy.
fn copy_into(mut from: &File, dst: &mut File, path: &Path) -> Result<()> {
    // SAFETY: both descriptors are valid for the duration of the call.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, from.as_raw_fd()) } == 0 {
        return Ok(());
    }
    std::io::copy(&mut from, dst).at(path)?;
    Ok(())
}
