//! The content-addressed blob store: `blobs/ab/abcd…` holds the bytes whose SHA-256 is
//! `abcd…`, written once and never modified.
//!
//! New content is written under `staging/`, hashed as it is written, and only enters `blobs/`
//! through [`Batch::finish`], which makes the data durable before renaming it into place and
//! syncing the directories. Callers commit catalog rows that reference a blob only after that.
//!
//! A shared store's blobs live in its object store; `blobs/` is then this host's verified,
//! bounded cache of them ([`BlobCache`]). Reading fetches what the cache lacks, and a batch
//! uploads every blob it refers to before it finishes, so no catalog row ever names content
//! the object store does not hold.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;

use sha2::{Digest as _, Sha256};
use tempfile::{NamedTempFile, TempPath};

use crate::error::{Error, IoContext, Result};
use crate::faults;
use crate::hash::Digest;
use crate::objects::{BlobCache, RemoteBlobs};

/// Files up to this size are read whole, so content already in the store is never rewritten.
pub const SMALL_FILE: u64 = 1 << 20;
/// Above this many new blobs one `syncfs` is cheaper than an `fsync` per file.
const SYNCFS_THRESHOLD: usize = 64;
const COPY_BUF: usize = 1 << 20;
/// How much one `copy_file_range` call copies: the hashing thread follows in steps this big.
const COPY_STEP: usize = 8 << 20;
/// How often a copy starts the write-back of what it copied since the last time.
const WRITEBACK_STEP: u64 = 64 << 20;
/// Files from this size on are flushed as soon as they are copied, while other workers go on
/// copying; smaller ones are left to the batch's one `syncfs` (or its fsyncs) at the end.
const FLUSH_EARLY: u64 = 16 << 20;

pub struct BlobStore {
    blobs: PathBuf,
    staging: PathBuf,
    shared: Option<Box<Shared>>,
}

/// A shared store's object store, and this host's cache of it (`blobs/` itself).
struct Shared {
    objects: RemoteBlobs,
    cache: BlobCache,
    /// Uploads and existence checks wait on the network, not the CPU: more of them at once
    /// than there are cores.
    transfers: rayon::ThreadPool,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("blobs", &self.blobs)
            .field("shared", &self.shared.as_ref().map(|s| s.objects.store()))
            .finish()
    }
}

/// What `verify` found for one blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobHealth {
    Intact,
    Missing,
    Mismatch {
        actual: Digest,
    },
    /// A shared store's object that is not the content its name promises.
    Damaged {
        why: String,
    },
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self> {
        let blobs = root.join("blobs");
        let staging = root.join("staging");
        let fresh = !blobs.exists();
        for dir in [&blobs, &staging] {
            fs::create_dir_all(dir).at(dir)?;
        }
        if fresh {
            // All 256 fan-out directories up front, durable once: writers then only ever
            // add names to existing directories.
            for b in 0..=255u8 {
                let dir = blobs.join(format!("{b:02x}"));
                fs::create_dir_all(&dir).at(&dir)?;
            }
            sync_dir(&blobs)?;
        }
        Ok(BlobStore {
            blobs,
            staging,
            shared: None,
        })
    }

    /// A shared store's blobs: those of `objects`, read through a cache in `root/blobs` of
    /// about `cache_size` bytes.
    pub fn open_shared(root: &Path, objects: RemoteBlobs, cache_size: u64) -> Result<Self> {
        let mut store = Self::open(root)?;
        let transfers = rayon::ThreadPoolBuilder::new()
            .num_threads(objects.transfer().concurrency.max(2) * 2)
            .thread_name(|i| format!("transfer-{i}"))
            .build()
            .map_err(|e| Error::io(root, std::io::Error::other(e)))?;
        store.shared = Some(Box::new(Shared {
            cache: BlobCache::open(root, cache_size)?,
            objects,
            transfers,
        }));
        Ok(store)
    }

    /// The object store of a shared store.
    pub fn objects(&self) -> Option<&RemoteBlobs> {
        self.shared.as_ref().map(|s| &s.objects)
    }

    /// This host's cache of a shared store's blobs.
    pub fn cache(&self) -> Option<&BlobCache> {
        self.shared.as_ref().map(|s| &s.cache)
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.blobs.join(&hex[..2]).join(hex)
    }

    /// Whether the blob is on this host (for a shared store: in the cache).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).exists()
    }

    /// Opens the content of `what` (a file of a version or draft), `size` bytes long. A
    /// missing blob, or one of another size, is damage to the store, reported as such with
    /// the file it belongs to rather than served as its content.
    pub fn open_content(
        &self,
        digest: &Digest,
        size: u64,
        what: impl Fn() -> String,
    ) -> Result<File> {
        if let Some(shared) = &self.shared {
            return shared.open(digest, size, &what);
        }
        let path = self.path(digest);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::Corrupt {
                what: what(),
                why: format!(
                    "its content (blob {digest}) is missing from the store; see artifactfs verify"
                ),
            },
            _ => Error::io(&path, e),
        })?;
        let actual = file.metadata().at(&path)?.len();
        if actual != size {
            return Err(Error::Corrupt {
                what: what(),
                why: format!(
                    "its content (blob {digest}) is {actual} bytes, not the {size} recorded; \
                     see artifactfs verify"
                ),
            });
        }
        Ok(file)
    }

    /// Copies the content of `what` to `out`, checking it against its digest as it goes: an
    /// error names the damage once the copy is complete.
    pub fn copy_content(
        &self,
        digest: &Digest,
        size: u64,
        what: impl Fn() -> String,
        out: &mut dyn Write,
    ) -> Result<u64> {
        let mut file = self.open_content(digest, size, &what)?;
        let mut hashing = crate::hash::HashingWriter::new(out);
        let n = std::io::copy(&mut file, &mut hashing).at(&self.path(digest))?;
        let actual = hashing.digest();
        if actual != *digest {
            return Err(Error::Corrupt {
                what: what(),
                why: format!(
                    "its content (blob {digest}) was altered: it now hashes to {actual}; see \
                     artifactfs verify"
                ),
            });
        }
        Ok(n)
    }

    /// Stores the content of `path`, which may still change afterwards: on a shared store,
    /// uploaded (not cached); locally, copied into `blobs/`.
    pub fn publish(&self, path: &Path) -> Result<(Digest, u64)> {
        match &self.shared {
            Some(shared) => {
                let up = shared.objects.put_file(path, None)?;
                Ok((up.digest, up.size))
            }
            None => {
                let batch = self.batch();
                let len = fs::metadata(path).at(path)?.len();
                let stored = batch.add_file(path, len)?;
                batch.finish()?;
                Ok(stored)
            }
        }
    }

    /// Starts a group of writes that become durable together.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            referenced: Mutex::new(Vec::new()),
            pending: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
            fans: Mutex::new(std::collections::BTreeSet::new()),
            new_fan_dir: AtomicBool::new(false),
        }
    }

    /// Re-hashes one blob: for a shared store, the object itself, downloaded.
    pub fn check(&self, digest: &Digest) -> Result<BlobHealth> {
        if let Some(shared) = &self.shared {
            return match shared.objects.download(digest, None, &mut std::io::sink()) {
                Ok(_) => Ok(BlobHealth::Intact),
                Err(Error::ObjectMissing { .. }) => Ok(BlobHealth::Missing),
                Err(Error::ObjectDamaged { why, .. }) => Ok(BlobHealth::Damaged { why }),
                Err(e) => Err(e),
            };
        }
        let path = self.path(digest);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BlobHealth::Missing),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let len = file.metadata().at(&path)?.len();
        let (actual, _) = hash_file(&file, len, &path)?;
        Ok(if actual == *digest {
            BlobHealth::Intact
        } else {
            BlobHealth::Mismatch { actual }
        })
    }

    /// Every blob on disk, for garbage collection. Names that are not digests are skipped.
    pub fn for_each_stored(&self, mut f: impl FnMut(Digest) -> Result<()>) -> Result<()> {
        for fan in fs::read_dir(&self.blobs).at(&self.blobs)? {
            let fan = fan.at(&self.blobs)?.path();
            if !fan.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&fan).at(&fan)? {
                let entry = entry.at(&fan)?;
                if let Some(d) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| Digest::from_hex(n).ok())
                {
                    f(d)?;
                }
            }
        }
        Ok(())
    }

    /// Where blobs are written before they get their names: on the same filesystem.
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }

    /// Removes a blob that nothing references any more.
    pub fn remove(&self, digest: &Digest) -> Result<u64> {
        let path = self.path(digest);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    /// Leftover staging files of writers that died; only call while no writer can be active.
    pub fn clear_staging(&self) -> Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.staging).at(&self.staging)? {
            let path = entry.at(&self.staging)?.path();
            if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(INGEST_PREFIX))
            {
                fs::remove_file(&path).at(&path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

const INGEST_PREFIX: &str = "ingest-";

/// A blob written to staging, waiting for its name.
struct Pending {
    tmp: TempPath,
    digest: Digest,
    /// Already flushed to disk (large files are, as soon as they are written).
    synced: bool,
}

/// Blobs written to staging and waiting to be made durable and moved into `blobs/`.
/// Dropping a batch without finishing it removes its staging files.
pub struct Batch<'a> {
    store: &'a BlobStore,
    /// Every blob the batch refers to, for a shared store to make sure its object store
    /// holds them all.
    referenced: Mutex<Vec<Digest>>,
    /// Staged files are closed once written, so a batch of any size holds no descriptors.
    pending: Mutex<Vec<Pending>>,
    /// Files of the caller's that become blobs by a second name (staged draft files).
    links: Mutex<Vec<(PathBuf, Digest, bool)>>,
    /// Fan-out directories (first digest byte) of every blob the batch refers to, including
    /// blobs another writer placed: their names must be durable before we reference them.
    fans: Mutex<std::collections::BTreeSet<u8>>,
    new_fan_dir: AtomicBool,
}

impl Batch<'_> {
    /// Stores the contents of `src`; safe to call from several threads at once.
    /// `len` is the size the caller saw; it only chooses between reading whole and streaming.
    pub fn add_file(&self, src: &Path, len: u64) -> Result<(Digest, u64)> {
        self.add_file_likely(src, len, None)
    }

    /// The same, for a file `likely` to hold content already stored (a file of the previous
    /// version with the same path, size and mtime): it is then hashed first and nothing is
    /// written if it does. Any other large file is read once: copied into staging (cloned
    /// where the filesystem can) while another thread hashes the copy, and, if big, made
    /// durable before this returns, so its flush overlaps the work on other files.
    pub fn add_file_likely(
        &self,
        src: &Path,
        len: u64,
        likely: Option<Digest>,
    ) -> Result<(Digest, u64)> {
        let mut file = File::open(src).at(src)?;
        if len <= SMALL_FILE {
            let mut data = Vec::with_capacity(len as usize);
            file.read_to_end(&mut data).at(src)?;
            return self.add_bytes(&data);
        }
        if let Some(likely) = likely.filter(|d| self.store.contains(d)) {
            let (digest, size) = Digest::of_reader(&file).at(src)?;
            if digest == likely {
                self.note(&digest);
                return Ok((digest, size));
            }
            // Changed after all: stored like any new content.
            file.seek(std::io::SeekFrom::Start(0)).at(src)?;
        }
        let tmp = self.temp()?;
        let (digest, size) = match clone(&file, tmp.as_file(), tmp.path())? {
            true => {
                let (digest, size) = Digest::of_reader(tmp.as_file()).at(tmp.path())?;
                (digest, size)
            }
            false => copy_hashing(&file, src, tmp.as_file(), tmp.path())?,
        };
        self.note(&digest);
        if self.store.contains(&digest) {
            // Identical content is stored already; the copy is dropped.
            return Ok((digest, size));
        }
        let synced = size >= FLUSH_EARLY;
        if synced {
            fsync(tmp.as_file(), tmp.path())?;
        }
        lock(&self.pending).push(Pending {
            tmp: tmp.into_temp_path(),
            digest,
            synced,
        });
        Ok((digest, size))
    }

    /// Stores the contents of `path` by linking it into `blobs/` when the batch finishes,
    /// without copying. The caller must keep the file unchanged from now on: once linked,
    /// it is the blob. `known` is its digest and size when the caller has them already (and
    /// knows the file has not changed since): it is then not read at all. Safe to call from
    /// several threads at once.
    pub fn add_by_link(
        &self,
        path: &Path,
        len: u64,
        known: Option<(Digest, u64)>,
    ) -> Result<(Digest, u64)> {
        let file = File::open(path).at(path)?;
        let (digest, size) = match known {
            Some(known) => known,
            None => hash_file(&file, len, path)?,
        };
        self.note(&digest);
        if !self.store.contains(&digest) {
            // A large file is flushed here, while other threads still hash, rather than all
            // together at the end.
            let synced = len > SMALL_FILE;
            if synced {
                fsync(&file, path)?;
            }
            lock(&self.links).push((path.to_path_buf(), digest, synced));
        }
        Ok((digest, size))
    }

    fn note(&self, digest: &Digest) {
        lock(&self.fans).insert(digest.0[0]);
        if self.store.shared.is_some() {
            lock(&self.referenced).push(*digest);
        }
    }

    /// Renames a staged file to its blob name; false if that blob already existed.
    fn place(&self, tmp: TempPath, digest: &Digest) -> Result<bool> {
        let dest = self.store.path(digest);
        faults::check(faults::Op::Rename).at(&dest)?;
        let result = match tmp.persist_noclobber(&dest) {
            Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
                let dir = dest.parent().expect("blob paths have a fan-out directory");
                fs::create_dir_all(dir).at(dir)?;
                self.new_fan_dir
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                e.path.persist_noclobber(&dest)
            }
            other => other,
        };
        match result {
            Ok(()) => Ok(true),
            // Identical content arrived meanwhile; the staged copy is dropped.
            Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(&dest, e.error)),
        }
    }

    /// Gives `path` its blob name as a second link, read-only like every blob; false if
    /// that blob already existed.
    fn link(&self, path: &Path, digest: &Digest) -> Result<bool> {
        let dest = self.store.path(digest);
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)).at(path)?;
        faults::check(faults::Op::Rename).at(&dest)?;
        match fs::hard_link(path, &dest) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(&dest, e)),
        }
    }

    pub fn add_bytes(&self, data: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(data);
        self.note(&digest);
        if !self.store.contains(&digest) {
            let mut tmp = self.temp()?;
            write_blob(&mut tmp, data)?;
            self.stage(tmp, digest);
        }
        Ok((digest, data.len() as u64))
    }

    fn temp(&self) -> Result<NamedTempFile> {
        // Read-only from creation: the descriptor stays writable, and no chmod is needed later.
        tempfile::Builder::new()
            .prefix(INGEST_PREFIX)
            .permissions(fs::Permissions::from_mode(0o444))
            .tempfile_in(&self.store.staging)
            .at(&self.store.staging)
    }

    fn stage(&self, tmp: NamedTempFile, digest: Digest) {
        lock(&self.pending).push(Pending {
            tmp: tmp.into_temp_path(),
            digest,
            synced: false,
        });
    }

    /// Makes every staged blob durable and moves it into `blobs/`. When this returns, catalog
    /// rows may reference the blobs. Returns the blobs this batch added to the store (not
    /// those that were already there), so a caller whose transaction fails can remove them.
    pub fn finish(self) -> Result<Vec<Digest>> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        let links = std::mem::take(&mut *lock(&self.links));
        let unsynced =
            pending.iter().filter(|p| !p.synced).count() + links.iter().filter(|l| !l.2).count();
        if unsynced > SYNCFS_THRESHOLD {
            syncfs(&self.store.staging)?;
        } else {
            let paths = pending
                .iter()
                .filter(|p| !p.synced)
                .map(|p| p.tmp.as_ref())
                .chain(links.iter().filter(|l| !l.2).map(|(p, ..)| p.as_path()));
            for path in paths {
                fsync(&File::open(path).at(path)?, path)?;
            }
        }
        let placed = pending
            .into_par_iter()
            .map(|p| {
                self.place(p.tmp, &p.digest)
                    .map(|new| new.then_some(p.digest))
            })
            .collect::<Result<Vec<_>>>()?;
        let linked = links
            .into_par_iter()
            .map(|(path, digest, _)| self.link(&path, &digest).map(|new| new.then_some(digest)))
            .collect::<Result<Vec<_>>>()?;
        let added: Vec<Digest> = placed.into_iter().chain(linked).flatten().collect();
        let mut dirs: Vec<PathBuf> = lock(&self.fans)
            .iter()
            .map(|b| self.store.blobs.join(format!("{b:02x}")))
            .collect();
        // A fan-out directory recreated after going missing must itself be durable.
        if self.new_fan_dir.load(std::sync::atomic::Ordering::Relaxed) {
            dirs.push(self.store.blobs.clone());
        }
        dirs.par_iter().try_for_each(|dir| sync_dir(dir))?;
        if let Some(shared) = &self.store.shared {
            let mut referenced = std::mem::take(&mut *lock(&self.referenced));
            referenced.sort_unstable();
            referenced.dedup();
            shared.upload(self.store, &referenced)?;
            let bytes = added
                .iter()
                .map(|d| fs::metadata(self.store.path(d)).map_or(0, |m| m.len()))
                .sum();
            shared.cache.added(bytes)?;
        }
        Ok(added)
    }
}

impl Shared {
    /// The cached blob, fetched and checked if the cache lacks it. A missing or damaged
    /// object is damage to the store, named with the file it belongs to.
    fn open(&self, digest: &Digest, size: u64, what: &dyn Fn() -> String) -> Result<File> {
        let cached = if size == 0 && *digest == Digest::of(b"") {
            // Nothing to download, and a file written elsewhere shows empty until it is
            // first closed there: its blob may not be stored yet.
            self.cache.insert_file(Path::new("/dev/null"), digest)
        } else {
            self.cache.fetch(&self.objects, digest, Some(size))
        };
        let cached = cached.map_err(|e| match e {
            Error::ObjectMissing { .. } | Error::ObjectDamaged { .. } => Error::Corrupt {
                what: what(),
                why: format!("its content cannot be read: {e}; see artifactfs verify"),
            },
            e => e,
        })?;
        if cached.size() != size {
            return Err(Error::Corrupt {
                what: what(),
                why: format!(
                    "its content (blob {digest}) is {} bytes in the cache of {}, not the {size} \
                     recorded; see artifactfs verify",
                    cached.size(),
                    self.objects.store()
                ),
            });
        }
        Ok(cached.into_file())
    }

    /// Makes sure the object store holds every one of `blobs`, uploading from `blobs/` what
    /// it lacks; only then may catalog rows refer to them.
    fn upload(&self, store: &BlobStore, blobs: &[Digest]) -> Result<()> {
        self.transfers.install(|| {
            blobs.par_iter().try_for_each(|digest| {
                let path = store.path(digest);
                match self.objects.put_file(&path, Some(*digest)) {
                    Ok(_) => Ok(()),
                    // Evicted from the cache since the batch saw it: it came from the object
                    // store, unless gc took it meanwhile.
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        match self.objects.exists(digest)? {
                            true => Ok(()),
                            false => Err(Error::io(
                                &path,
                                std::io::Error::other(
                                    "left the cache before it was uploaded; try again",
                                ),
                            )),
                        }
                    }
                    Err(e) => Err(e),
                }
            })
        })
    }
}

/// The digest and size of an open file of about `len` bytes: read whole when small (one read,
/// hashed on the fly), streamed otherwise.
fn hash_file(file: &File, len: u64, path: &Path) -> Result<(Digest, u64)> {
    if len <= SMALL_FILE {
        let mut data = Vec::with_capacity(len as usize);
        (&*file).read_to_end(&mut data).at(path)?;
        Ok((Digest::of(&data), data.len() as u64))
    } else {
        Digest::of_reader(file).at(path)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)
        .at(dir)?;
    faults::check(faults::Op::Fsync).at(dir)?;
    f.sync_all().at(dir)
}

fn fsync(file: &File, path: &Path) -> Result<()> {
    faults::check(faults::Op::Fsync).at(path)?;
    file.sync_data().at(path)
}

fn write_blob(tmp: &mut NamedTempFile, data: &[u8]) -> Result<()> {
    faults::check(faults::Op::Write).at(tmp.path())?;
    tmp.write_all(data).at(tmp.path())
}

/// Flushes the whole filesystem that holds `dir`: one call instead of thousands of fsyncs.
fn syncfs(dir: &Path) -> Result<()> {
    let f = File::open(dir).at(dir)?;
    faults::check(faults::Op::Fsync).at(dir)?;
    // SAFETY: the descriptor is valid for the duration of the call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Whether the blob directory `blobs` (missing or not) holds any blob.
pub fn holds_blobs(blobs: &Path) -> Result<bool> {
    let fans = match fs::read_dir(blobs) {
        Ok(fans) => fans,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(blobs, e)),
    };
    for fan in fans {
        let fan = fan.at(blobs)?.path();
        if fan.is_dir() && fs::read_dir(&fan).at(&fan)?.next().is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes `dst` (empty, at `to`) a clone of `src` sharing its blocks, where the filesystem
/// can (btrfs, XFS, on one filesystem); false if it cannot, leaving `dst` empty.
fn clone(src: &File, dst: &File, to: &Path) -> Result<bool> {
    // A clone writes the blob as much as a copy does.
    faults::check(faults::Op::Write).at(to)?;
    // SAFETY: both descriptors are valid for the duration of the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(true);
    }
    dst.set_len(0).at(to)?;
    Ok(false)
}

/// How far a copy into staging has got, for the thread hashing behind it.
struct Copied {
    state: Mutex<(u64, bool)>,
    moved: std::sync::Condvar,
}

impl Copied {
    fn advance(&self, to: u64, done: bool) {
        let mut s = lock(&self.state);
        *s = (to, done);
        self.moved.notify_all();
    }

    /// Waits until more than `at` bytes are copied or the copy ended; returns how many are.
    fn wait_past(&self, at: u64) -> (u64, bool) {
        let mut s = lock(&self.state);
        while s.0 <= at && !s.1 {
            s = self.moved.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        *s
    }
}

/// Copies `src` (at path `from`) into the empty staging file `dst` (at `to`) on one thread,
/// starting its write-back as it goes, while this thread hashes what was copied: reading the
/// copy rather than the source, the digest is that of the blob whatever happens to the
/// source meanwhile. Returns the digest and size of the copy.
fn copy_hashing(src: &File, from: &Path, dst: &File, to: &Path) -> Result<(Digest, u64)> {
    let copied = Copied {
        state: Mutex::new((0, false)),
        moved: std::sync::Condvar::new(),
    };
    std::thread::scope(|s| {
        let copier = s.spawn(|| {
            let result = copy_into(src, from, dst, to, &copied);
            let at = lock(&copied.state).0;
            copied.advance(at, true);
            result
        });
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_BUF];
        let mut at = 0u64;
        let hashed = loop {
            let (end, done) = copied.wait_past(at);
            while at < end {
                let want = ((end - at) as usize).min(buf.len());
                match dst.read_at(&mut buf[..want], at) {
                    Ok(0) => break,
                    Ok(n) => {
                        hasher.update(&buf[..n]);
                        at += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io(to, e)),
                }
            }
            if done {
                break at;
            }
        };
        let size = copier.join().expect("the copying thread does not panic")?;
        if hashed != size {
            return Err(Error::io(
                to,
                std::io::Error::other(format!("read {hashed} bytes of a {size}-byte copy")),
            ));
        }
        Ok((Digest(hasher.finalize().into()), size))
    })
}

/// The copying half of [`copy_hashing`]: in the kernel where it can (`copy_file_range`),
/// through a buffer otherwise. Returns the bytes copied.
fn copy_into(src: &File, from: &Path, dst: &File, to: &Path, copied: &Copied) -> Result<u64> {
    let mut at = 0u64;
    let mut flushed = 0u64;
    let mut in_kernel = true;
    let mut buf = Vec::new();
    loop {
        faults::check(faults::Op::Write).at(to)?;
        let n = if in_kernel {
            let (mut off_in, mut off_out) = (at as libc::loff_t, at as libc::loff_t);
            // SAFETY: both descriptors are valid; the offsets are ours.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    COPY_STEP,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Not between these two files (another filesystem, an old kernel).
                    Some(libc::EXDEV | libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                        if at == 0 =>
                    {
                        in_kernel = false;
                        buf = vec![0u8; COPY_BUF];
                        continue;
                    }
                    _ => return Err(Error::io(from, e)),
                }
            }
            n as usize
        } else {
            let n = match src.read_at(&mut buf, at) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(from, e)),
            };
            dst.write_all_at(&buf[..n], at).at(to)?;
            n
        };
        if n == 0 {
            return Ok(at);
        }
        at += n as u64;
        copied.advance(at, false);
        if at - flushed >= WRITEBACK_STEP {
            start_writeback(dst, flushed, at - flushed);
            flushed = at;
        }
    }
}

/// Asks the kernel to start writing a range of `file` to disk, without waiting: a later
/// fsync then finds most of it done.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    // SAFETY: the descriptor is valid for the duration of the call. A failure only means
    // the later fsync does all the work.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_content_is_stored_once_and_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let batch = store.batch();
        let (a, _) = batch.add_bytes(b"hello").unwrap();
        let (b, _) = batch.add_bytes(b"hello").unwrap();
        batch.finish().unwrap();
        assert_eq!(a, b);
        let meta = fs::metadata(store.path(&a)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o444);
        assert_eq!(fs::read_dir(&store.staging).unwrap().count(), 0);
        assert_eq!(store.check(&a).unwrap(), BlobHealth::Intact);
    }

    #[test]
    fn unfinished_batch_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let batch = store.batch();
        let (d, _) = batch.add_bytes(b"never committed").unwrap();
        drop(batch);
        assert!(!store.contains(&d));
        assert_eq!(fs::read_dir(&store.staging).unwrap().count(), 0);
    }
}
