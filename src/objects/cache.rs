//! The verified local cache of a shared store's blobs.
//!
//! A directory laid out exactly as a local store's (`blobs/ab/abcd…`, read-only files, and
//! `staging/` beside it on the same filesystem), so the read path of a local store opens
//! cached blobs unchanged. A file enters `blobs/` only by a rename, after its content was
//! checked against its name: downloads are hashed as they arrive, local files as they are
//! copied in.
//!
//! The cache is bounded by a size. Each use of a blob stamps its access time; when the files
//! add up to more than the size, the least recently used are removed until they are back
//! under nine tenths of it. A file in use is never removed, whichever process uses it:
//! every [`CachedBlob`] holds a shared `flock` on its file, and the evictor removes only
//! files it can lock exclusively at once, checking that the name still refers to the file it
//! locked. An opener locks first and then checks the same, so a file it holds is one the
//! evictor cannot take.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::NamedTempFile;

use super::RemoteBlobs;
use crate::blobs::BlobStore;
use crate::error::{Error, IoContext, Result};
use crate::hash::{Digest, HashingWriter};

/// Staged files untouched for this long belong to a process that died.
const STALE_STAGING: Duration = Duration::from_secs(3600);
const STAGING_PREFIX: &str = "cache-";
const EVICT_LOCK: &str = "evict.lock";

/// A blob of the cache, open for reading. While it lives the file stays in the cache.
#[derive(Debug)]
pub struct CachedBlob {
    file: File,
    path: PathBuf,
    size: u64,
}

impl CachedBlob {
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The open file, which keeps the blob in the cache for as long as it is open (the lock
    /// belongs to the open file, not to this struct).
    pub fn into_file(self) -> File {
        self.file
    }

    /// Where the blob is in the cache.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}

/// What one round of eviction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Eviction {
    /// Files removed, and their bytes.
    pub removed: usize,
    pub freed: u64,
    /// Files that would have been removed but were open.
    pub kept_open: usize,
    /// The bytes left in the cache.
    pub usage: u64,
}

/// One cached file as the evictor sees it.
struct Entry {
    used: (i64, i64),
    size: u64,
    path: PathBuf,
}

pub struct BlobCache {
    layout: BlobStore,
    root: PathBuf,
    limit: u64,
    /// The bytes this process believes the cache holds (others add to it too): `None` until
    /// counted. Reaching the limit leads to a real count.
    usage: Mutex<Option<u64>>,
    /// One download per blob at a time in this process; the others wait for it.
    fetching: Mutex<HashMap<Digest, Arc<Mutex<()>>>>,
}

impl BlobCache {
    /// The cache in directory `root` (created if missing), holding at most about `limit`
    /// bytes.
    pub fn open(root: &Path, limit: u64) -> Result<Self> {
        let layout = BlobStore::open(root)?;
        Ok(BlobCache {
            layout,
            root: root.to_path_buf(),
            limit,
            usage: Mutex::new(None),
            fetching: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Where blob `digest` is when it is cached.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.layout.path(digest)
    }

    /// The cached blob, opened and marked as just used; `None` if it is not cached.
    pub fn open_blob(&self, digest: &Digest) -> Result<Option<CachedBlob>> {
        let path = self.path(digest);
        loop {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&path, e)),
            };
            flock(&file, libc::LOCK_SH).at(&path)?;
            // Locked: the evictor cannot remove it from now on, unless it already has.
            let meta = file.metadata().at(&path)?;
            match fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => {
                    touch(&file);
                    return Ok(Some(CachedBlob {
                        file,
                        path,
                        size: meta.len(),
                    }));
                }
                // Removed (and maybe fetched again) between the open and the lock.
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    /// The blob from the cache, or else downloaded from `remote`, checked, and added to the
    /// cache. `size` is the size the caller recorded for it, if known.
    pub fn fetch(
        &self,
        remote: &RemoteBlobs,
        digest: &Digest,
        size: Option<u64>,
    ) -> Result<CachedBlob> {
        self.fill(digest, |tmp| {
            remote.download(digest, size, tmp.as_file_mut())?;
            Ok(())
        })
    }

    /// Adds the local file `src`, whose content was uploaded as blob `digest`, by copying
    /// it; the copy is hashed and refused unless it matches.
    pub fn insert_file(&self, src: &Path, digest: &Digest) -> Result<CachedBlob> {
        self.fill(digest, |tmp| {
            let mut from = File::open(src).at(src)?;
            let mut hashing = HashingWriter::new(tmp.as_file_mut());
            std::io::copy(&mut from, &mut hashing).at(src)?;
            let actual = hashing.digest();
            if actual != *digest {
                return Err(Error::invalid(
                    src.display().to_string(),
                    format!("hashes to {actual}, not to blob {digest} it was to be cached as"),
                ));
            }
            Ok(())
        })
    }

    /// The cached blob, or else one written by `write` into a staged file, then placed.
    fn fill(
        &self,
        digest: &Digest,
        write: impl FnOnce(&mut NamedTempFile) -> Result<()>,
    ) -> Result<CachedBlob> {
        if let Some(blob) = self.open_blob(digest)? {
            return Ok(blob);
        }
        let gate = lock(&self.fetching).entry(*digest).or_default().clone();
        let placed = {
            let _turn = lock(&gate);
            match self.open_blob(digest)? {
                // Another thread of ours fetched it meanwhile.
                Some(blob) => return Ok(blob),
                None => {
                    let result = self.stage(digest, write);
                    lock(&self.fetching).remove(digest);
                    result?
                }
            }
        };
        self.added(placed.size)?;
        Ok(placed)
    }

    fn stage(
        &self,
        digest: &Digest,
        write: impl FnOnce(&mut NamedTempFile) -> Result<()>,
    ) -> Result<CachedBlob> {
        let staging = self.layout.staging_dir();
        let mut tmp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .permissions(fs::Permissions::from_mode(0o444))
            .tempfile_in(staging)
            .at(staging)?;
        write(&mut tmp)?;
        // Durable before it has its name: after a crash the name never holds less.
        tmp.as_file().sync_data().at(tmp.path())?;
        let file = File::open(tmp.path()).at(tmp.path())?;
        flock(&file, libc::LOCK_SH).at(tmp.path())?;
        let size = file.metadata().at(tmp.path())?.len();
        let path = self.path(digest);
        match tmp.persist_noclobber(&path) {
            Ok(_) => {
                touch(&file);
                Ok(CachedBlob { file, path, size })
            }
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
                // Another process placed the same content first; use that one.
                drop(e);
                drop(file);
                self.open_blob(digest)?.ok_or_else(|| {
                    Error::io(
                        &path,
                        std::io::Error::other("removed again as soon as it was placed"),
                    )
                })
            }
            Err(e) => Err(Error::io(&path, e.error)),
        }
    }

    /// Counts `size` more bytes, and evicts if the cache may now be over its size: for blobs
    /// placed in the cache's directory by others (a local store's batches).
    pub fn added(&self, size: u64) -> Result<()> {
        let over = {
            let mut usage = lock(&self.usage);
            match usage.as_mut() {
                Some(u) => {
                    *u += size;
                    *u > self.limit
                }
                None => true,
            }
        };
        if over {
            self.evict()?;
        }
        Ok(())
    }

    /// The bytes of every blob in the cache, counted now.
    pub fn usage(&self) -> Result<u64> {
        Ok(self.entries()?.iter().map(|e| e.size).sum())
    }

    /// When the cache holds more than its size, removes the least recently used files that
    /// no process has open until it holds at most nine tenths of it. One process evicts at
    /// a time; a call while another evicts returns at once, with nothing removed.
    pub fn evict(&self) -> Result<Eviction> {
        let lock_path = self.root.join(EVICT_LOCK);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        if flock(&lock_file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
            return Ok(Eviction {
                usage: lock(&self.usage).unwrap_or(0),
                ..Eviction::default()
            });
        }
        self.clear_stale_staging();
        let mut entries = self.entries()?;
        let mut report = Eviction {
            usage: entries.iter().map(|e| e.size).sum(),
            ..Eviction::default()
        };
        if report.usage > self.limit {
            let target = self.limit - self.limit / 10;
            entries.sort_by(|a, b| a.used.cmp(&b.used).then_with(|| a.path.cmp(&b.path)));
            for entry in entries {
                if report.usage <= target {
                    break;
                }
                match remove_unused(&entry.path)? {
                    Removal::Removed(size) => {
                        report.removed += 1;
                        report.freed += size;
                        report.usage = report.usage.saturating_sub(size);
                    }
                    Removal::Open => report.kept_open += 1,
                    Removal::Gone => report.usage = report.usage.saturating_sub(entry.size),
                }
            }
        }
        *lock(&self.usage) = Some(report.usage);
        Ok(report)
    }

    fn entries(&self) -> Result<Vec<Entry>> {
        let blobs = self.root.join("blobs");
        let mut entries = Vec::new();
        for fan in fs::read_dir(&blobs).at(&blobs)? {
            let fan = fan.at(&blobs)?.path();
            let names = match fs::read_dir(&fan) {
                Ok(names) => names,
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => continue,
                Err(e) => return Err(Error::io(&fan, e)),
            };
            for name in names {
                let name = name.at(&fan)?;
                if name
                    .file_name()
                    .to_str()
                    .is_none_or(|n| Digest::from_hex(n).is_err())
                {
                    continue;
                }
                let path = name.path();
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io(&path, e)),
                };
                entries.push(Entry {
                    used: (meta.atime(), meta.atime_nsec()),
                    size: meta.len(),
                    path,
                });
            }
        }
        Ok(entries)
    }

    /// Removes staged files that nobody has written to for an hour: left by a process that
    /// died while downloading.
    fn clear_stale_staging(&self) {
        let staging = self.layout.staging_dir();
        let Ok(names) = fs::read_dir(staging) else {
            return;
        };
        let now = SystemTime::now();
        for name in names.flatten() {
            let stale = name
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(STAGING_PREFIX))
                && name
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_STAGING);
            if stale {
                let _ = fs::remove_file(name.path());
            }
        }
    }
}

enum Removal {
    Removed(u64),
    Open,
    Gone,
}

/// Removes the cache file at `path` unless some process holds it open (a shared lock).
fn remove_unused(path: &Path) -> Result<Removal> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Removal::Gone),
        Err(e) => return Err(Error::io(path, e)),
    };
    if flock(&file, libc::LOCK_EX | libc::LOCK_NB).is_err() {
        return Ok(Removal::Open);
    }
    let meta = file.metadata().at(path)?;
    match fs::symlink_metadata(path) {
        Ok(now) if now.ino() == meta.ino() && now.dev() == meta.dev() => {
            match fs::remove_file(path) {
                Ok(()) => Ok(Removal::Removed(meta.len())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removal::Gone),
                Err(e) => Err(Error::io(path, e)),
            }
        }
        Ok(_) => Ok(Removal::Gone),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Removal::Gone),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Marks the file as used now: its access time, set from this process's clock (finer than
/// the kernel's timestamps), is what eviction orders by. Best effort: a file this process
/// does not own keeps its time.
fn touch(file: &File) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let times = [
        libc::timespec {
            tv_sec: now.as_secs() as libc::time_t,
            tv_nsec: now.subsec_nanos() as libc::c_long,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: the descriptor is valid and `times` holds the two entries futimens reads.
    unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn read_all(blob: &CachedBlob) -> Vec<u8> {
        let mut data = Vec::new();
        (&blob.file).read_to_end(&mut data).unwrap();
        data
    }

    fn put(cache: &BlobCache, data: &[u8]) -> (Digest, CachedBlob) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, data).unwrap();
        let digest = Digest::of(data);
        (digest, cache.insert_file(&src, &digest).unwrap())
    }

    #[test]
    fn a_local_file_enters_only_with_its_own_digest() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1 << 20).unwrap();
        let (digest, blob) = put(&cache, b"hello");
        assert_eq!(read_all(&blob), b"hello");
        assert_eq!(blob.path(), cache.path(&digest));
        assert_eq!(
            fs::metadata(blob.path()).unwrap().permissions().mode() & 0o777,
            0o444
        );
        let src = dir.path().join("other");
        fs::write(&src, b"not hello").unwrap();
        let e = cache
            .insert_file(&src, &Digest::of(b"something else"))
            .unwrap_err();
        assert!(e.to_string().contains("hashes to"), "{e}");
        assert_eq!(cache.usage().unwrap(), 5);
        assert_eq!(fs::read_dir(cache.layout.staging_dir()).unwrap().count(), 0);
    }

    #[test]
    fn the_least_recently_used_unopened_files_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BlobCache::open(dir.path(), 1000).unwrap();
        let pause = || std::thread::sleep(Duration::from_millis(5));
        let (d0, held) = put(&cache, &[0u8; 300]);
        pause();
        let (d1, _) = put(&cache, &[1u8; 300]);
        pause();
        let (d2, _) = put(&cache, &[2u8; 300]);
        pause();
        drop(cache.open_blob(&d1).unwrap().unwrap());
        pause();
        // 1200 bytes: 0 is the oldest but open, 1 was used again, so 2 goes.
        let (d3, _) = put(&cache, &[3u8; 300]);
        for (d, kept) in [(d0, true), (d1, true), (d2, false), (d3, true)] {
            assert_eq!(cache.path(&d).exists(), kept, "{d:?}");
        }
        assert_eq!(read_all(&held), [0u8; 300]);
        // Once closed, it takes its turn.
        drop(held);
        let (d4, _) = put(&cache, &[4u8; 300]);
        for (d, kept) in [(d0, false), (d1, true), (d3, true), (d4, true)] {
            assert_eq!(cache.path(&d).exists(), kept, "{d:?}");
        }
        assert_eq!(cache.usage().unwrap(), 900);
    }
}
