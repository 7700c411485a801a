//! Version files and aliases as the kernel caches them.
//!
//! A file of a version never changes, so the kernel keeps it: its pages across opens, or its
//! blob as the passthrough backing file for as long as it holds the inode. What the server
//! keeps for that is per inode, not per open: a version file is opened without a handle of
//! its own, and read (when the kernel reads through the server at all) by inode, from its blob,
//! which stays open while it is read.
//!
//! An alias is a symlink whose target the kernel keeps (`FUSE_CACHE_SYMLINKS`) until it is
//! told that the alias moved. Every target handed to the kernel is remembered, and
//! [`Fs::moved_aliases`] (after a commit through the mount) and [`AliasWatch`] (for changes
//! made by the CLI or another mount, polling the catalog) say which ones are stale.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::catalog::Db;

use super::{Fs, Ino, Inodes, Node, alias_target, lock};
use crate::catalog::Pool;
use crate::error::{Error, Result};
use crate::tree::{Item, TreeEntry};

/// Blobs kept open for version files read through the server; past this, the oldest are
/// closed (and opened again if read again).
const OPEN_BLOBS: usize = 1024;

/// How often [`AliasWatch`] looks at every alias the kernel holds, even when the catalog
/// seems unchanged (a target served while a move was being committed).
const FULL_CHECK: Duration = Duration::from_secs(1);

/// What the server keeps per inode for the kernel's caches.
#[derive(Default)]
pub(super) struct Cached {
    blobs: Mutex<OpenBlobs>,
    /// Alias inode -> the version number its target named when the kernel read it.
    aliases: Arc<Mutex<HashMap<Ino, u64>>>,
}

impl Cached {
    pub(super) fn served_alias(&self, ino: Ino, number: u64) {
        lock(&self.aliases).insert(ino, number);
    }
}

#[derive(Default)]
struct OpenBlobs {
    /// Each blob with its size.
    files: HashMap<Ino, (Arc<File>, u64)>,
    /// In the order they were opened (some already removed).
    order: VecDeque<Ino>,
    /// The bytes of the blobs in `files`.
    bytes: u64,
}

impl OpenBlobs {
    /// Keeps `file` (`size` bytes) for `ino`; past [`OPEN_BLOBS`] files, or past `budget`
    /// bytes, the oldest are closed.
    fn insert(&mut self, ino: Ino, file: Arc<File>, size: u64, budget: Option<u64>) {
        match self.files.insert(ino, (file, size)) {
            None => self.order.push_back(ino),
            Some((_, old)) => self.bytes -= old,
        }
        self.bytes += size;
        while self.files.len() > OPEN_BLOBS
            || (self.files.len() > 1 && budget.is_some_and(|b| self.bytes > b))
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.remove(old);
        }
        if self.order.len() > 2 * OPEN_BLOBS {
            let files = &self.files;
            self.order.retain(|i| files.contains_key(i));
        }
    }

    fn remove(&mut self, ino: Ino) {
        if let Some((_, size)) = self.files.remove(&ino) {
            self.bytes -= size;
        }
    }
}

impl Fs {
    /// The read-only mount: versions only, no `drafts/`.
    pub fn with_read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// Whether the store is shared between hosts (see [`Fs::publish_written`]).
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The size of `ino` if it is a file of a committed version whose content is a blob of
    /// the store; None for anything else (a reference, which is checked at every open, a
    /// draft's file, a directory, a control file).
    pub fn version_file(&self, ino: Ino) -> Result<Option<u64>> {
        Ok(match self.node(ino)? {
            Node::Entry(TreeEntry {
                item: Item::File { size, .. },
                ..
            }) => Some(size),
            _ => None,
        })
    }

    /// The content of version file `ino`: its blob, opened once and kept while it is in use
    /// (at most [`OPEN_BLOBS`]); a reference's file is checked and opened each time.
    pub fn version_content(&self, ino: Ino) -> Result<Arc<File>> {
        if let Some((f, _)) = lock(&self.cached.blobs).files.get(&ino) {
            return Ok(f.clone());
        }
        let (file, size) = match self.node(ino)? {
            Node::Entry(TreeEntry {
                item: Item::File { blob, size },
                ..
            }) => (
                self.blobs
                    .open_content(&blob, size, || self.describe(ino, None))?,
                size,
            ),
            Node::Entry(TreeEntry {
                item: Item::Reference(r),
                mtime_ns,
                ..
            }) => return Ok(Arc::new(r.open(mtime_ns)?)),
            _ => return Err(Error::IsADirectory(self.describe(ino, None))),
        };
        let file = Arc::new(file);
        lock(&self.cached.blobs).insert(ino, file.clone(), size, self.kept_blobs_budget());
        Ok(file)
    }

    /// On a shared store, how many bytes of blobs no one has open the mount may keep open
    /// for the kernel (a quarter of the cache's size, for the blobs read through the server
    /// and as much for passthrough backing files): an open blob cannot be evicted, and a
    /// mount keeping every blob it served would hold the cache past its size. None for a
    /// local store, whose blobs are never evicted.
    pub fn kept_blobs_budget(&self) -> Option<u64> {
        self.blobs.cache().map(|c| c.limit() / 4)
    }

    /// Reads version file `ino` by inode, for a kernel that opened it without asking the
    /// server (the read-only mount) or with no handle of its own. The blob's own pages are
    /// dropped once copied: the kernel keeps them in the mount's page cache, and keeping both
    /// would cost the memory twice.
    pub fn read_version(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        let file = self.version_content(ino)?;
        let data =
            read_full(&file, offset, size).map_err(|e| Error::io(self.describe(ino, None), e))?;
        drop_pages_read(&file, offset, data.len() as u64);
        Ok(data)
    }

    /// The kernel forgot `ino`: its blob need not stay open.
    pub fn forget_version(&self, ino: Ino) {
        lock(&self.cached.blobs).remove(ino);
    }

    /// Aliases the kernel holds whose target moved (or that are gone) since it read them:
    /// (inode, parent, name) of each, for the adapter to invalidate.
    pub fn moved_aliases(&self) -> Vec<(Ino, Ino, Vec<u8>)> {
        match self.pool.get() {
            Ok(conn) => moved(&self.inodes, &self.cached.aliases, conn.conn()),
            Err(e) => {
                log::warn!("could not check aliases: {e}");
                Vec::new()
            }
        }
    }

    /// A watcher of the catalog, for a thread that shows alias moves made outside this mount.
    pub fn alias_watch(&self) -> Result<AliasWatch> {
        Ok(AliasWatch {
            inodes: self.inodes.clone(),
            served: self.cached.aliases.clone(),
            pool: Pool::new(&self.backend)?,
            seen: None,
            checked: Instant::now(),
        })
    }
}

/// Looks at the catalog for alias moves made by anyone: cheaply (SQLite's `data_version`)
/// until something was committed, then at every alias the kernel holds.
pub struct AliasWatch {
    inodes: Arc<Inodes>,
    served: Arc<Mutex<HashMap<Ino, u64>>>,
    pool: Pool,
    seen: Option<i64>,
    checked: Instant,
}

impl AliasWatch {
    /// The aliases that moved since the last call: (inode, parent, name) of each.
    pub fn moved(&mut self) -> Result<Vec<(Ino, Ino, Vec<u8>)>> {
        let conn = self.pool.get()?;
        // SQLite counts commits by others; PostgreSQL's write-ahead log moves on with every
        // write to the database (by anyone, so at worst an alias is looked at for nothing).
        let version: i64 = match conn.sqlite() {
            Some(sqlite) => sqlite
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .map_err(|e| Error::io(Path::new("catalog.db"), std::io::Error::other(e)))?,
            None => conn
                .conn()
                .query_one(
                    "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
                    crate::params![],
                    |r| r.get(0),
                )
                .map_err(|e| Error::io(Path::new("catalog"), std::io::Error::other(e)))?,
        };
        if self.seen == Some(version) && self.checked.elapsed() < FULL_CHECK {
            return Ok(Vec::new());
        }
        self.seen = Some(version);
        self.checked = Instant::now();
        Ok(moved(&self.inodes, &self.served, conn.conn()))
    }
}

fn moved(
    inodes: &Inodes,
    served: &Mutex<HashMap<Ino, u64>>,
    conn: &Db,
) -> Vec<(Ino, Ino, Vec<u8>)> {
    let told: Vec<(Ino, u64)> = lock(served).iter().map(|(i, n)| (*i, *n)).collect();
    let mut out = Vec::new();
    for (ino, number) in told {
        let Some(Node::Alias { artifact, alias }) = inodes.get(ino) else {
            // Forgotten by the kernel.
            lock(served).remove(&ino);
            continue;
        };
        let now = match alias_target(conn, &artifact, &alias) {
            Ok(n) => n,
            Err(e) => {
                log::warn!("could not check alias {artifact}:{alias}: {e}");
                continue;
            }
        };
        if now == Some(number) {
            continue;
        }
        {
            // Unless a newer target was handed out meanwhile, the next read records it.
            let mut s = lock(served);
            if s.get(&ino) == Some(&number) {
                s.remove(&ino);
            }
        }
        if let Some((parent, name)) = inodes.name(ino) {
            out.push((ino, parent, name));
        }
    }
    out
}

/// The largest folio the page cache makes of a file's pages (a huge page): folios are aligned
/// to their size, so none crosses a multiple of this.
const FOLIO_MAX: u64 = 2 << 20;

/// Drops the pages of `file` that a reader at `offset..offset + len` has passed: the whole
/// file once it reached the end, else the folios wholly behind it. The range just read alone
/// would keep most pages: a large folio can be dropped only whole.
fn drop_pages_read(file: &File, offset: u64, len: u64) {
    let end = offset + len;
    let at_end = file.metadata().map(|m| end >= m.len()).unwrap_or(false);
    let (from, to) = if at_end {
        (0, 0) // to the end of the file
    } else {
        let to = end / FOLIO_MAX * FOLIO_MAX;
        let from = (offset / FOLIO_MAX * FOLIO_MAX).saturating_sub(FOLIO_MAX);
        if to <= from {
            return;
        }
        (from, to - from)
    };
    // SAFETY: posix_fadvise only advises the kernel about the descriptor's pages.
    unsafe {
        libc::posix_fadvise(
            file.as_raw_fd(),
            from as libc::off_t,
            to as libc::off_t,
            libc::POSIX_FADV_DONTNEED,
        )
    };
}

/// Up to `size` bytes at `offset`, fewer only at the end of the file.
pub(super) fn read_full(file: &File, offset: u64, size: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; size as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}
