//! The mounted namespace as plain operations on inode numbers, independent of FUSE: the
//! adapter in `fuse.rs` turns kernel requests into these calls and their errors into errnos.
//!
//! ```text
//! /                  artifacts and drafts/
//! /NAME/             vN/ directories and ALIAS -> vN symlinks
//! /NAME/vN/...       a committed version: read-only, immutable
//! /drafts/NAME[@ID]/ the current contents of each draft
//! ```
//!
//! Versions never change, so their entries are cached by the kernel for a long time; the
//! rest (which artifacts, versions, aliases and drafts exist) is read from the catalog on each
//! lookup and cached briefly, so changes made by the CLI show within a second.

pub mod access;
mod control;
mod digests;
pub mod inode;
mod lineage;
mod listings;
mod orphan;
mod version_files;
mod writes;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::catalog::Db;

use crate::blobs::BlobStore;
use crate::catalog::drafts::{self, DraftRow, Local, Meta};
use crate::catalog::nodes::{self, NodeId, Page};
use crate::catalog::versions;
use crate::catalog::{Pool, rfc3339, time_of};
use crate::draft::{self, Found};
use crate::error::{Error, Result};
use crate::names::{ArtifactName, DraftName};
use crate::reference::Reference;
use crate::staging::Staging;
use crate::tree::{self, Item, TreeEntry};

pub use access::Caller;
pub use inode::{DRAFTS, Ino, Inodes, Kind, Node, ROOT};
pub use version_files::AliasWatch;
pub use writes::{SetAttr, SetTime};

/// How long the kernel may cache what never changes.
pub const IMMUTABLE_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long the kernel may cache what the CLI can change, so changes show within a second.
pub const MUTABLE_TTL: Duration = Duration::from_millis(500);
/// Entries read from the catalog per page when listing a version directory.
const PAGE: usize = 1024;

/// The control file in each draft's root: write `commit` (or a JSON object) to commit.
pub const CONTROL_FILE: &str = ".commit";

const XATTR_SHA256: &str = "user.artifactfs.sha256";
const XATTR_DIGEST: &str = "user.artifactfs.digest";
const XATTR_REF: &str = "user.artifactfs.ref";
const XATTR_CREATED: &str = "user.artifactfs.created";
const XATTR_TYPE: &str = "user.artifactfs.type";
/// On a version directory: the id of the run that made the version, if a run did.
const XATTR_RUN: &str = "user.artifactfs.run";
pub use crate::mounts::{XATTR_PASSTHROUGH, XATTR_PID};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: Kind,
    pub size: u64,
    pub perm: u16,
    pub nlink: u32,
    pub mtime: SystemTime,
    pub atime: SystemTime,
    pub ctime: SystemTime,
    pub uid: u32,
    pub gid: u32,
}

impl Attr {
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(512)
    }
}

/// An inode's attributes and how long the kernel may keep them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub attr: Attr,
    pub ttl: Duration,
}

/// Receives directory entries; returns true when it is full and the listing must pause.
pub trait DirSink {
    fn add(&mut self, offset: u64, name: &[u8], entry: &Entry) -> bool;
}

pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// An open directory: a snapshot of a small mutable listing, a version's held listing, or a
/// cursor into a version's listing too big to hold.
enum DirHandle {
    /// A version's directory not read yet: often never, since the kernel keeps what it read
    /// through an earlier handle.
    Unread(NodeId),
    /// A small mutable listing taken when first read; `read` marks that it was, so that a
    /// rewind takes it again.
    Snapshot {
        list: Vec<(Vec<u8>, Node)>,
        read: bool,
    },
    Held(Arc<listings::Listing>),
    Paged {
        node: NodeId,
        cursor: Cursor,
    },
}

/// How far a listing of a version directory has got: a page read ahead from the catalog
/// (the kernel takes a few dozen entries per call), the index of its first entry, and the last
/// name read, so the next page continues after it instead of counting from the start.
#[derive(Default)]
struct Cursor {
    start: u64,
    ahead: std::collections::VecDeque<TreeEntry>,
    last: Option<Vec<u8>>,
    exhausted: bool,
}

pub struct Fs {
    inodes: Arc<inode::Inodes>,
    /// Where the catalog lives, for more connections to it.
    backend: crate::catalog::Backend,
    listings: listings::Listings,
    pool: Pool,
    blobs: BlobStore,
    store_root: PathBuf,
    uid: u32,
    gid: u32,
    mounted: SystemTime,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    staging: Staging,
    files: Mutex<HashMap<u64, OpenFile>>,
    /// Digests of staged files taken after their last writer closed them.
    digests: digests::Digests,
    controls: Mutex<HashMap<u64, control::ControlHandle>>,
    /// Why the last commit request written to each draft's control file was refused, by
    /// draft name, until the next request.
    refusals: Mutex<HashMap<String, String>>,
    /// Names the kernel must forget now rather than when their cache time runs out: a draft
    /// committed through its control file is gone at once.
    stale: Mutex<Vec<(Ino, Vec<u8>)>>,
    next_fh: AtomicU64,
    /// When this mount last made or removed a draft (ns), for the mtime of `drafts/`.
    drafts_changed: std::sync::atomic::AtomicI64,
    /// Whether version files are read through kernel passthrough: set by the FUSE layer,
    /// which negotiates it, and shown on the root for `artifactfs doctor`.
    pub passthrough: AtomicBool,
    /// The read-only mount: versions only, no `drafts/`.
    read_only: bool,
    /// A shared store: files written here are published when closed, and other hosts'
    /// files being written show as they were last closed (see [`Fs::here`]).
    shared: bool,
    /// Version files and aliases as the kernel caches them (see `version_files.rs`).
    cached: version_files::Cached,
    /// Which run each request comes from, and the inputs recorded for runs.
    lineage: lineage::Capture,
}

/// An open file's content: a blob, or a staged file, which `writer` may change.
struct OpenFile {
    file: Arc<File>,
    writer: Option<writes::Writer>,
}

/// How a file is opened, from the open(2) flags.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
}

/// What `open` gave: a file's content to read (with whether it can never change, so the
/// kernel may keep its pages), or a draft's control file.
pub enum Opened {
    Content {
        fh: u64,
        file: Arc<File>,
        immutable: bool,
    },
    Control {
        fh: u64,
    },
}

/// A file's own attributes: its content digest, and for a reference the URI (and the digest
/// only if it is the content's).
fn file_xattrs(item: &Item) -> Vec<(&'static str, String)> {
    match item {
        Item::File { blob, .. } => vec![(XATTR_SHA256, blob.to_hex())],
        Item::Reference(r) if r.checksum => vec![
            (XATTR_SHA256, r.digest.to_hex()),
            (XATTR_REF, r.uri.clone()),
        ],
        Item::Reference(r) => vec![(XATTR_REF, r.uri.clone())],
        _ => Vec::new(),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fs {
    pub fn new(store_root: &Path) -> Result<Self> {
        let mut store = crate::store::Store::open(store_root)?;
        let root = store.root().to_path_buf();
        let backend = store.backend().clone();
        let shared = store.shared().is_some();
        // Staged files left by drafts that were committed or discarded while no mount ran.
        let swept = match store.catalog.is_read_only() {
            true => 0,
            false => store.staging.sweep(store.conn())?,
        };
        if swept > 0 {
            log::info!("removed {swept} staged files no draft refers to");
        }
        // Files written through a mount of this host that stopped before they were closed:
        // the other hosts see them as they are now.
        if shared && !store.catalog.is_read_only() {
            let published = crate::store::publish_staged_here(&mut store)?;
            if published > 0 {
                log::info!("published {published} files written before the last unmount");
            }
        }
        let blobs = store.blobs;
        crate::clock::use_file_clock(&root.join("staged"));
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let lineage = lineage::Capture::new(backend.clone());
        Ok(Fs {
            inodes: Arc::new(inode::Inodes::default()),
            listings: listings::Listings::default(),
            pool: Pool::new(&backend)?,
            backend,
            blobs,
            staging: Staging::open(&root)?,
            store_root: root.clone(),
            uid,
            gid,
            mounted: SystemTime::now(),
            dirs: Mutex::new(HashMap::new()),
            files: Mutex::new(HashMap::new()),
            controls: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            stale: Mutex::new(Vec::new()),
            next_fh: AtomicU64::new(1),
            drafts_changed: std::sync::atomic::AtomicI64::new(0),
            passthrough: AtomicBool::new(false),
            read_only: false,
            shared,
            cached: version_files::Cached::default(),
            digests: digests::Digests::default(),
            lineage,
        })
    }

    fn node(&self, ino: Ino) -> Result<Node> {
        let gone = || Error::not_found(format!("inode {ino}"));
        let Some((dir, index)) = inode::split_derived(ino) else {
            return self.inodes.get(ino).ok_or_else(gone);
        };
        let node = self.dir_node(dir)?.ok_or_else(gone)?;
        let listing = match self.listings.cached(node) {
            Some(held) => held,
            None => self.listings.get(self.pool.get()?.conn(), node)?,
        };
        listing
            .and_then(|l| l.at(index).cloned())
            .map(Node::Entry)
            .ok_or_else(gone)
    }

    /// The tree node listed by directory `ino`, if it is a version's directory.
    fn dir_node(&self, ino: Ino) -> Result<Option<NodeId>> {
        Ok(match self.node(ino)? {
            Node::Version { root, .. } => Some(root),
            Node::Entry(TreeEntry {
                item: Item::Dir { node },
                ..
            }) => Some(node),
            _ => None,
        })
    }

    /// The parent and name of `ino`, for messages and the walk up to its version.
    fn name_of(&self, ino: Ino) -> Option<(Ino, Vec<u8>)> {
        match inode::split_derived(ino) {
            Some((dir, _)) => match self.node(ino) {
                Ok(Node::Entry(e)) => Some((dir, e.name)),
                _ => None,
            },
            None => self.inodes.name(ino),
        }
    }

    /// A readable name for an inode, for errors and logs: its path from the mount root.
    pub fn describe(&self, ino: Ino, child: Option<&[u8]>) -> String {
        let mut parts = Vec::new();
        if let Some(c) = child {
            parts.push(lossy(c));
        }
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == ROOT {
                break;
            }
            match self.name_of(cur) {
                Some((parent, name)) => {
                    parts.push(lossy(&name));
                    cur = parent;
                }
                None => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Damage found under a version that has since been deleted is no damage: the version is
    /// gone (and `gc` may have collected its tree and blobs), like a removed directory that a
    /// process still stands in. Any other error is returned as it is.
    pub fn explain(&self, ino: Ino, e: Error) -> Error {
        if !matches!(e, Error::Corrupt { .. }) {
            return e;
        }
        let mut cur = ino;
        for _ in 0..4096 {
            match self.node(cur).ok() {
                Some(Node::Entry(_)) => match self.name_of(cur) {
                    Some((parent, _)) => cur = parent,
                    None => return e,
                },
                Some(Node::Version {
                    artifact, number, ..
                }) => {
                    let exists = self.pool.get().and_then(|c| {
                        Ok(match versions::artifact(c.conn(), &artifact)? {
                            Some(a) => versions::by_number(c.conn(), a.id, number)?.is_some(),
                            None => false,
                        })
                    });
                    return match exists {
                        Ok(false) => Error::not_found(format!(
                            "{} ({artifact}:v{number} was deleted)",
                            self.describe(ino, None)
                        )),
                        _ => e,
                    };
                }
                _ => return e,
            }
        }
        e
    }

    /// The error for any attempt to change something outside `drafts/` (EROFS), or a draft's
    /// control file other than by writing a request to it (EPERM: it lives in a writable draft
    /// but is no file).
    pub fn refuse_change(&self, ino: Ino, child: Option<&[u8]>) -> Error {
        if child.is_none() && matches!(self.node(ino), Ok(Node::Control { .. })) {
            return Error::refused(
                self.describe(ino, None),
                "the control file cannot be changed this way; write a commit request to it",
            );
        }
        Error::ReadOnly(self.describe(ino, child))
    }

    // ----- lookups and attributes -----

    pub fn lookup(&self, caller: &Caller, parent: Ino, name: &[u8]) -> Result<Entry> {
        if name.len() > crate::error::NAME_MAX {
            return Err(Error::NameTooLong(self.describe(parent, Some(name))));
        }
        self.check_draft_dir(caller, parent, access::SEARCH)?;
        let conn = self.pool.get()?;
        let (node, derived) = self
            .child(conn.conn(), parent, name)?
            .ok_or_else(|| Error::not_found(self.describe(parent, Some(name))))?;
        let Some(ino) = derived else {
            let ino = self.inodes.intern(parent, name, node.clone(), true);
            // The kernel only counts a lookup that succeeds.
            let mut entry = self
                .entry_of(conn.conn(), ino, &node)
                .inspect_err(|_| self.inodes.forget(ino, 1))?;
            // A name the kernel kept would let the next user past without a lookup.
            if self.inodes.is_closed(parent) {
                entry.ttl = Duration::ZERO;
            }
            return Ok(entry);
        };
        self.entry_of(conn.conn(), ino, &node)
    }

    pub fn forget(&self, ino: Ino, n: u64) {
        // A derived number has nothing to release.
        if inode::split_derived(ino).is_none() {
            self.inodes.forget(ino, n);
        }
    }

    pub fn getattr(&self, ino: Ino) -> Result<Entry> {
        let node = self.node(ino)?;
        let conn = self.pool.get()?;
        self.entry_of(conn.conn(), ino, &node)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let conn = self.pool.get()?;
        match self.node(ino)? {
            Node::Alias { artifact, alias } => {
                let n = alias_target(conn.conn(), &artifact, &alias)?
                    .ok_or_else(|| Error::not_found(self.describe(ino, None)))?;
                // The kernel keeps the target until told that the alias moved.
                self.cached.served_alias(ino, n);
                Ok(format!("v{n}").into_bytes())
            }
            Node::Entry(TreeEntry {
                item: Item::Symlink { target },
                ..
            }) => Ok(target),
            Node::Draft { .. } => match self.find_in_draft(conn.conn(), ino)? {
                Some(Found::Symlink(
                    TreeEntry {
                        item: Item::Symlink { target },
                        ..
                    },
                    _,
                )) => Ok(target),
                _ => Err(Error::invalid(self.describe(ino, None), "is not a symlink")),
            },
            Node::Detached(d) => match &d.0.entry {
                Some(TreeEntry {
                    item: Item::Symlink { target },
                    ..
                }) => Ok(target.clone()),
                _ => Err(Error::invalid(self.describe(ino, None), "is not a symlink")),
            },
            _ => Err(Error::invalid(self.describe(ino, None), "is not a symlink")),
        }
    }

    /// What `name` in directory `parent` stands for, from the catalog, with its derived inode
    /// number if it has one.
    fn child(&self, conn: &Db, parent: Ino, name: &[u8]) -> Result<Option<(Node, Option<Ino>)>> {
        let text = std::str::from_utf8(name).ok();
        let dir = self.node(parent)?;
        if let Some(node) = self.dir_node(parent)? {
            return self.version_child(conn, parent, node, name);
        }
        let child = match dir {
            Node::Root => match text {
                Some("drafts") if !self.read_only => Some(Node::Drafts),
                Some(t) if ArtifactName::new(t).is_ok() => {
                    versions::artifact(conn, t)?.map(|a| Node::Artifact { name: a.name })
                }
                _ => None,
            },
            Node::Drafts => match text.and_then(|t| t.parse::<DraftName>().ok()) {
                Some(d) => {
                    drafts::get(conn, d.artifact.as_str(), d.id_key())?.map(|row| Node::Draft {
                        artifact: row.artifact,
                        dist_id: row.dist_id,
                        path: Vec::new(),
                        kind: Kind::Dir,
                    })
                }
                None => None,
            },
            Node::Artifact { name: artifact } => {
                let Some(t) = text else { return Ok(None) };
                let Some(art) = versions::artifact(conn, &artifact)? else {
                    return Ok(None);
                };
                if let Some(n) = t.strip_prefix('v').and_then(|n| n.parse::<u64>().ok())
                    && format!("v{n}") == t
                {
                    versions::by_number(conn, art.id, n)?.map(|v| Node::Version {
                        artifact,
                        number: v.number,
                        root: v.root,
                    })
                } else {
                    versions::by_alias(conn, art.id, t)?.map(|_| Node::Alias {
                        artifact,
                        alias: t.to_string(),
                    })
                }
            }
            Node::Draft {
                artifact,
                dist_id,
                path,
                kind: Kind::Dir,
            } => {
                let Some(d) = drafts::get(conn, &artifact, &dist_id)? else {
                    return Ok(None);
                };
                if path.is_empty() && name == CONTROL_FILE.as_bytes() {
                    return Ok(Some((Node::Control { artifact, dist_id }, None)));
                }
                let path = tree::join(&path, name);
                self.find(conn, &d, &path)?
                    .map(|f| draft_node(&d, path, &f))
            }
            Node::Version { .. }
            | Node::Alias { .. }
            | Node::Entry(_)
            | Node::Draft { .. }
            | Node::Staged { .. }
            | Node::Detached(_)
            | Node::Control { .. } => {
                return Err(Error::NotADirectory(self.describe(parent, None)));
            }
        };
        Ok(child.map(|node| (node, None)))
    }

    /// `name` in the version directory `dir`, which lists tree node `node`. Files and symlinks
    /// in a listing small enough to hold get derived numbers; directories get slots.
    fn version_child(
        &self,
        conn: &Db,
        dir: Ino,
        node: NodeId,
        name: &[u8],
    ) -> Result<Option<(Node, Option<Ino>)>> {
        let Some(listing) = self.listings.get(conn, node)? else {
            return Ok(nodes::lookup(conn, node, name)?.map(|e| (Node::Entry(e), None)));
        };
        Ok(listing.find(name).map(|(index, e)| {
            let ino = derivable(e).then(|| inode::derived(dir, index)).flatten();
            (Node::Entry(e.clone()), ino)
        }))
    }

    fn find_in_draft(&self, conn: &Db, ino: Ino) -> Result<Option<Found>> {
        Ok(self.find_with_draft(conn, ino)?.map(|(_, f)| f))
    }

    /// What a draft inode holds now, with its draft; None if either is gone.
    fn find_with_draft(&self, conn: &Db, ino: Ino) -> Result<Option<(DraftRow, Found)>> {
        let Node::Draft {
            artifact,
            dist_id,
            path,
            ..
        } = self.node(ino)?
        else {
            return Ok(None);
        };
        let Some(d) = drafts::get(conn, &artifact, &dist_id)? else {
            return Ok(None);
        };
        Ok(self.find(conn, &d, &path)?.map(|f| (d, f)))
    }

    /// What `path` holds in draft `d`, as this host sees it (see [`Fs::here`]).
    fn find(&self, conn: &Db, d: &DraftRow, path: &[u8]) -> Result<Option<Found>> {
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or_default();
        Ok(draft::find(conn, d, path)?.map(|f| self.here(d, name, f)))
    }

    /// What directory `path` of draft `d` holds, as this host sees it.
    fn list(&self, conn: &Db, d: &DraftRow, path: &[u8]) -> Result<Vec<(Vec<u8>, Found)>> {
        Ok(draft::list(conn, d, path)?
            .into_iter()
            .map(|(name, f)| {
                let f = self.here(d, &name, f);
                (name, f)
            })
            .collect())
    }

    /// On a shared store, a file being written through another host's mount has no staged
    /// file here to read or change: it shows as the plain file it was when last closed
    /// there (empty before), and writing to it here replaces it.
    fn here(&self, d: &DraftRow, name: &[u8], found: Found) -> Found {
        match found {
            Found::Staged {
                id,
                mode,
                owner,
                published,
                mtime_ns,
            } if self.shared && !self.staging.path(d.id, id).exists() => {
                let (blob, size) = published.unwrap_or((crate::hash::Digest::of(b""), 0));
                // Never closed there: no time of its own yet.
                let mtime_ns = if published.is_some() {
                    mtime_ns
                } else {
                    d.created_ns
                };
                let entry = TreeEntry {
                    name: name.to_vec(),
                    item: Item::File { blob, size },
                    mode,
                    mtime_ns,
                };
                let mut local = Local::recorded(mtime_ns);
                local.owner = owner;
                Found::File(entry, local)
            }
            found => found,
        }
    }

    /// Attributes shown for an object of the mount: `meta` holds its permission bits (all
    /// twelve: a draft keeps set-ID and sticky bits) and times.
    fn attr(&self, ino: Ino, kind: Kind, size: u64, nlink: u64, meta: Meta) -> Attr {
        Attr {
            ino,
            kind,
            size,
            perm: (meta.mode & 0o7777) as u16,
            nlink: nlink.min(u32::MAX as u64) as u32,
            mtime: time_of(meta.mtime_ns),
            atime: time_of(meta.atime_ns),
            ctime: time_of(meta.ctime_ns),
            uid: meta.owner.map_or(self.uid, |o| o.0),
            gid: meta.owner.map_or(self.gid, |o| o.1),
        }
    }

    /// Who a draft belongs to, with everything in it that nobody else made.
    fn owner_of(&self, d: &DraftRow) -> (u32, u32) {
        d.owner.unwrap_or((self.uid, self.gid))
    }

    /// Attributes of something in draft `d`: owned by whoever made it, else by the draft's
    /// owner.
    fn in_draft_attr(&self, attr: Attr, made_by: Option<(u32, u32)>, d: &DraftRow) -> Attr {
        self.owned(attr, made_by.unwrap_or_else(|| self.owner_of(d)))
    }

    fn owned(&self, mut attr: Attr, owner: (u32, u32)) -> Attr {
        (attr.uid, attr.gid) = owner;
        attr
    }

    fn entry_of(&self, conn: &Db, ino: Ino, node: &Node) -> Result<Entry> {
        let gone = || Error::not_found(self.describe(ino, None));
        let mounted = crate::catalog::ns_of(self.mounted);
        let attr = match node {
            Node::Root => {
                // ".", "..", drafts/ (not on the read-only mount) and one per artifact.
                let n = versions::artifacts(conn)?.len() as u64 + !self.read_only as u64;
                self.attr(ino, Kind::Dir, 0, 2 + n, Meta::recorded(0o755, mounted))
            }
            Node::Drafts => {
                let all = drafts::list(conn)?;
                // Open to every user's new drafts, each kept to its owner, when others can
                // reach the mount (a mount made by root).
                let mode = if self.uid == 0 { 0o1777 } else { 0o755 };
                let changed = all
                    .iter()
                    .map(|d| d.created_ns)
                    .chain([mounted, self.drafts_changed.load(Ordering::Relaxed)])
                    .max()
                    .unwrap_or(mounted);
                self.attr(
                    ino,
                    Kind::Dir,
                    0,
                    2 + all.len() as u64,
                    Meta::recorded(mode, changed),
                )
            }
            Node::Artifact { name } => {
                let art = versions::artifact(conn, name)?.ok_or_else(gone)?;
                let all = versions::versions(conn, art.id)?;
                let newest = all
                    .iter()
                    .map(|v| v.created_ns)
                    .max()
                    .unwrap_or(art.created_ns);
                let meta = Meta::recorded(0o555, newest);
                self.attr(ino, Kind::Dir, 0, 2 + all.len() as u64, meta)
            }
            Node::Version {
                artifact,
                number,
                root,
            } => {
                let art = versions::artifact(conn, artifact)?.ok_or_else(gone)?;
                // A deleted version stays readable through inodes the kernel still holds.
                let created = versions::by_number(conn, art.id, *number)?
                    .map_or(art.created_ns, |v| v.created_ns);
                let info = nodes::info(conn, *root)?;
                let meta = Meta::recorded(0o555, created);
                self.attr(ino, Kind::Dir, 0, 2 + info.subdirs, meta)
            }
            Node::Alias { artifact, alias } => {
                let n = alias_target(conn, artifact, alias)?.ok_or_else(gone)?;
                let len = format!("v{n}").len() as u64;
                self.attr(ino, Kind::Symlink, len, 1, Meta::recorded(0o777, mounted))
            }
            Node::Entry(e) => self.tree_attr(conn, ino, e, None)?,
            Node::Control { artifact, dist_id } => match drafts::get(conn, artifact, dist_id)? {
                // Its content is generated on open and read without the page cache.
                Some(d) => {
                    let meta = Meta::recorded(0o644, d.created_ns);
                    let attr = self.attr(ino, Kind::File, 0, 1, meta);
                    self.owned(attr, self.owner_of(&d))
                }
                // Committed through it: whoever still holds it open reads the answer.
                None => self.attr(ino, Kind::File, 0, 0, Meta::recorded(0o644, mounted)),
            },
            Node::Draft { .. } => {
                let (d, found) = self.find_with_draft(conn, ino)?.ok_or_else(gone)?;
                match found {
                    Found::File(e, local) | Found::Symlink(e, local) => {
                        let attr = self.tree_attr(conn, ino, &e, Some(local))?;
                        self.in_draft_attr(attr, local.owner, &d)
                    }
                    Found::Staged { id, .. } => self.staged_attr(conn, ino, &d, id)?,
                    Found::Dir { base, meta } => {
                        let Node::Draft { path, .. } = node else {
                            unreachable!("matched above")
                        };
                        let base = match base {
                            Some(b) => Some((b, nodes::info(conn, b)?.subdirs)),
                            None => None,
                        };
                        let key = draft::parse_path(path)?.join(&b'/');
                        let subdirs = drafts::subdirs(conn, d.id, &key, base)?;
                        let attr = self.attr(ino, Kind::Dir, 0, 2 + subdirs, meta);
                        self.inodes.set_closed(ino, attr.perm & 0o111 != 0o111);
                        self.in_draft_attr(attr, meta.owner, &d)
                    }
                }
            }
            Node::Staged { draft, id, .. } => {
                let d = drafts::by_id(conn, *draft)?.ok_or_else(gone)?;
                self.staged_attr(conn, ino, &d, *id)?
            }
            Node::Detached(o) => self.orphan_attr(ino, &o.0)?,
        };
        let ttl = if node.is_immutable() {
            IMMUTABLE_TTL
        } else {
            MUTABLE_TTL
        };
        Ok(Entry { attr, ttl })
    }

    /// A staged file's attributes: its size and times are the file's own, its mode and link
    /// count the catalog's.
    fn staged_attr(&self, conn: &Db, ino: Ino, d: &DraftRow, id: i64) -> Result<Attr> {
        let info = drafts::staged_info(conn, d.id, id)?;
        if info.links == 0 {
            return Err(Error::not_found(self.describe(ino, None)));
        }
        let st = self.staging.meta(d, id)?;
        let ctime_ns = match info.copied {
            Some((copied, shown)) if copied == st.ctime_ns => shown,
            _ => st.ctime_ns,
        };
        let meta = Meta {
            mode: info.mode,
            mtime_ns: st.mtime_ns,
            atime_ns: st.atime_ns,
            ctime_ns,
            owner: None,
        };
        let attr = self.attr(ino, Kind::File, st.size, info.links, meta);
        Ok(self.in_draft_attr(attr, info.owner, d))
    }

    /// What the kernel still holds of something removed from a draft: no links, its last
    /// mode, and (for a staged file) its bytes and times as they are now.
    fn orphan_attr(&self, ino: Ino, o: &inode::Orphan) -> Result<Attr> {
        let mut meta = o.meta();
        let size = match (&o.file, &o.entry) {
            (Some(f), _) => {
                let st = crate::staging::meta_of(
                    &f.metadata()
                        .map_err(|e| Error::io(self.describe(ino, None), e))?,
                );
                (meta.mtime_ns, meta.atime_ns, meta.ctime_ns) =
                    (st.mtime_ns, st.atime_ns, st.ctime_ns);
                st.size
            }
            (None, Some(e)) => match &e.item {
                Item::File { size, .. } | Item::Reference(Reference { size, .. }) => *size,
                Item::Symlink { target } => target.len() as u64,
                Item::Dir { .. } => 0,
            },
            (None, None) => 0,
        };
        Ok(self.owned(self.attr(ino, o.kind, size, 0, meta), o.owner))
    }

    /// Attributes of a manifest entry: of a committed version (no `times`), where only the
    /// executable bit of the recorded mode shows, on read-only permissions, and the recorded
    /// mtime stands for every time; or of a draft, with its own mode and times.
    fn tree_attr(&self, conn: &Db, ino: Ino, e: &TreeEntry, times: Option<Local>) -> Result<Attr> {
        let meta = |committed_mode: u32| match times {
            Some(t) => Meta::with_local(e.mode, e.mtime_ns, t),
            None => Meta::recorded(committed_mode, e.mtime_ns),
        };
        let file_mode = if tree::is_executable(e.mode) {
            0o555
        } else {
            0o444
        };
        Ok(match &e.item {
            Item::File { size, .. } | Item::Reference(Reference { size, .. }) => {
                self.attr(ino, Kind::File, *size, 1, meta(file_mode))
            }
            Item::Dir { node } => {
                let info = nodes::info(conn, *node)?;
                self.attr(ino, Kind::Dir, 0, 2 + info.subdirs, meta(0o555))
            }
            Item::Symlink { target } => {
                let mut m = meta(0o777);
                m.mode = 0o777;
                self.attr(ino, Kind::Symlink, target.len() as u64, 1, m)
            }
        })
    }

    /// access(2): writing outside drafts is refused as on a read-only filesystem (whoever
    /// asks); everything else follows the permission bits and owner shown.
    pub fn access(&self, ino: Ino, caller: &Caller, mask: i32) -> Result<()> {
        let attr = self.getattr(ino)?.attr;
        if mask & libc::W_OK != 0 && !self.node(ino)?.in_draft() {
            return Err(self.refuse_change(ino, None));
        }
        let want = (if mask & libc::R_OK != 0 {
            access::READ
        } else {
            0
        }) | (if mask & libc::W_OK != 0 {
            access::WRITE
        } else {
            0
        }) | (if mask & libc::X_OK != 0 {
            access::SEARCH
        } else {
            0
        });
        caller.check(&attr, want, || self.describe(ino, None))
    }

    // ----- directories -----

    /// Opens a directory for listing. The flag says whether its listing never changes (a
    /// version's), so the kernel may keep it cached.
    pub fn opendir(&self, caller: &Caller, ino: Ino) -> Result<(u64, bool)> {
        self.check_draft_dir(caller, ino, access::READ)?;
        let conn = self.pool.get()?;
        let handle = self.dir_handle(conn.conn(), ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let immutable = !matches!(handle, DirHandle::Snapshot { .. });
        lock(&self.dirs).insert(fh, handle);
        Ok((fh, immutable))
    }

    /// A fresh listing state for directory `ino`.
    fn dir_handle(&self, conn: &Db, ino: Ino) -> Result<DirHandle> {
        if let Some(node) = self.dir_node(ino)? {
            return Ok(DirHandle::Unread(node));
        }
        Ok(match self.node(ino)? {
            Node::Root => {
                let mut list = Vec::new();
                if !self.read_only {
                    list.push((b"drafts".to_vec(), Node::Drafts));
                }
                for a in versions::artifacts(conn)? {
                    list.push((a.name.clone().into_bytes(), Node::Artifact { name: a.name }));
                }
                snapshot(list)
            }
            Node::Drafts => snapshot(
                drafts::list(conn)?
                    .into_iter()
                    .map(|d| {
                        let name = d.display_name().into_bytes();
                        (
                            name,
                            Node::Draft {
                                artifact: d.artifact,
                                dist_id: d.dist_id,
                                path: Vec::new(),
                                kind: Kind::Dir,
                            },
                        )
                    })
                    .collect(),
            ),
            Node::Artifact { name } => {
                let art = versions::artifact(conn, &name)?
                    .ok_or_else(|| Error::not_found(self.describe(ino, None)))?;
                let mut list: Vec<(Vec<u8>, Node)> = versions::versions(conn, art.id)?
                    .into_iter()
                    .map(|v| {
                        (
                            format!("v{}", v.number).into_bytes(),
                            Node::Version {
                                artifact: name.clone(),
                                number: v.number,
                                root: v.root,
                            },
                        )
                    })
                    .collect();
                for (alias, _) in versions::aliases_of_artifact(conn, art.id)? {
                    let node = Node::Alias {
                        artifact: name.clone(),
                        alias: alias.clone(),
                    };
                    list.push((alias.into_bytes(), node));
                }
                snapshot(list)
            }
            Node::Draft {
                artifact,
                dist_id,
                path,
                kind: Kind::Dir,
            } => {
                let d = drafts::get(conn, &artifact, &dist_id)?
                    .ok_or_else(|| Error::not_found(self.describe(ino, None)))?;
                snapshot(draft_listing(self, conn, &d, &path)?)
            }
            // A removed directory lists nothing.
            Node::Detached(d) if d.0.kind == Kind::Dir => snapshot(Vec::new()),
            Node::Version { .. }
            | Node::Alias { .. }
            | Node::Entry(_)
            | Node::Draft { .. }
            | Node::Staged { .. }
            | Node::Detached(_)
            | Node::Control { .. } => {
                return Err(Error::NotADirectory(self.describe(ino, None)));
            }
        })
    }

    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs).remove(&fh);
    }

    /// Lists directory `ino` from `offset` (the offset of the last entry already returned,
    /// or 0) into `sink`. With `plus`, every entry handed over counts as a kernel lookup.
    pub fn readdir(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> Result<()> {
        let conn = self.pool.get()?;
        let conn = conn.conn();
        let parent = self.inodes.parent(ino);
        // "." and ".." occupy offsets 1 and 2.
        let dots: [(&[u8], Ino); 2] = [(b".", ino), (b"..", parent)];
        for (i, (name, target)) in dots.iter().enumerate().skip(offset as usize) {
            let entry = self.entry_of(conn, *target, &self.node(*target)?)?;
            if sink.add(i as u64 + 1, name, &entry) {
                return Ok(());
            }
        }
        let skip = offset.saturating_sub(2);
        let mut handle = lock(&self.dirs).remove(&fh).ok_or_else(|| {
            Error::invalid(self.describe(ino, None), "directory handle is not open")
        })?;
        if let DirHandle::Unread(node) = handle {
            handle = match self.listings.get(conn, node) {
                Ok(Some(listing)) => DirHandle::Held(listing),
                Ok(None) => DirHandle::Paged {
                    node,
                    cursor: Cursor::default(),
                },
                Err(e) => {
                    lock(&self.dirs).insert(fh, handle);
                    return Err(e);
                }
            };
        }
        if offset == 0 && matches!(handle, DirHandle::Snapshot { read: true, .. }) {
            // A rewind shows the directory as it is now, as rewinddir(3) requires.
            match self.dir_handle(conn, ino) {
                Ok(fresh) => handle = fresh,
                Err(e) => {
                    lock(&self.dirs).insert(fh, handle);
                    return Err(e);
                }
            }
        }
        let result = match &mut handle {
            DirHandle::Snapshot { list, read } => {
                *read = true;
                let mut r = Ok(());
                for (i, (name, node)) in list.iter().enumerate().skip(skip as usize) {
                    let (node, offset) = (node.clone(), 3 + i as u64);
                    match self.emit(conn, ino, name, node, None, offset, plus, sink) {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            DirHandle::Held(listing) => {
                let mut r = Ok(());
                for index in skip as usize..listing.len() {
                    let e = listing.at(index).expect("within the listing");
                    let derived = derivable(e).then(|| inode::derived(ino, index)).flatten();
                    let node = Node::Entry(e.clone());
                    let offset = 3 + index as u64;
                    match self.emit(conn, ino, &e.name, node, derived, offset, plus, sink) {
                        Ok(true) => break,
                        Ok(false) => {}
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r
            }
            DirHandle::Paged { node, cursor } => {
                self.emit_paged(conn, ino, *node, cursor, skip, plus, sink)
            }
            DirHandle::Unread(_) => unreachable!("read above"),
        };
        lock(&self.dirs).insert(fh, handle);
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_paged(
        &self,
        conn: &Db,
        ino: Ino,
        node: NodeId,
        cursor: &mut Cursor,
        skip: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> Result<()> {
        if cursor.start != skip {
            // The kernel asked for another place (a rewind or seek): read from there.
            *cursor = Cursor {
                start: skip,
                ..Cursor::default()
            };
        }
        loop {
            if cursor.ahead.is_empty() {
                if cursor.exhausted {
                    return Ok(());
                }
                let from = match &cursor.last {
                    Some(name) => Page::After(name),
                    None => Page::Skip(cursor.start),
                };
                let page = nodes::list_page(conn, node, from, PAGE)?;
                cursor.exhausted = page.len() < PAGE;
                cursor.ahead.extend(page);
                if cursor.ahead.is_empty() {
                    return Ok(());
                }
            }
            let e = cursor.ahead.front().expect("refilled above").clone();
            let name = e.name.clone();
            if self.emit(
                conn,
                ino,
                &name,
                Node::Entry(e),
                None,
                3 + cursor.start,
                plus,
                sink,
            )? {
                return Ok(());
            }
            cursor.ahead.pop_front();
            cursor.last = Some(name);
            cursor.start += 1;
        }
    }

    /// Hands one entry, with its derived inode number if it has one, to the sink; true if the
    /// sink was full and the entry not taken.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        conn: &Db,
        parent: Ino,
        name: &[u8],
        node: Node,
        derived: Option<Ino>,
        offset: u64,
        plus: bool,
        sink: &mut dyn DirSink,
    ) -> Result<bool> {
        if let (Some(ino), true) = (derived, plus) {
            let entry = self.entry_of(conn, ino, &node)?;
            return Ok(sink.add(offset, name, &entry));
        }
        if !plus {
            // A plain listing carries only names, types and inode numbers: no catalog work,
            // and no inode is created for an entry nobody looked up.
            let ino = derived
                .or_else(|| self.inodes.existing(parent, name))
                .unwrap_or_else(|| unlisted_ino(parent, name));
            let entry = Entry {
                attr: self.attr(ino, node.kind(), 0, 1, Meta::recorded(0, 0)),
                ttl: Duration::ZERO,
            };
            return Ok(sink.add(offset, name, &entry));
        }
        let ino = self.inodes.intern(parent, name, node.clone(), true);
        let entry = match self.entry_of(conn, ino, &node) {
            Ok(e) => e,
            // Gone between the snapshot and now (a draft changed, a version was deleted).
            Err(Error::NotFound(_)) => {
                self.inodes.forget(ino, 1);
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let full = sink.add(offset, name, &entry);
        if full {
            self.inodes.forget(ino, 1);
        }
        Ok(full)
    }

    // ----- files -----

    /// Opens a file: for reading anywhere, for writing in a draft only (versions are
    /// read-only). Returns the handle, the file to read, which the adapter may hand to the
    /// kernel for passthrough reads, and whether the content can never change (a version's
    /// file, not a draft's), so the kernel may keep its pages.
    pub fn open(&self, caller: &Caller, ino: Ino, mode: OpenMode) -> Result<Opened> {
        let node = self.node(ino)?;
        if node.in_draft() && !caller.is_root() {
            let want = if mode.write {
                access::WRITE
            } else {
                access::READ
            };
            let attr = self.getattr(ino)?.attr;
            caller.check(&attr, want, || self.describe(ino, None))?;
        }
        if let Node::Control { artifact, dist_id } = node {
            let run = mode
                .write
                .then(|| self.lineage.run_of(caller.pid))
                .flatten();
            return Ok(Opened::Control {
                fh: self.open_control(&artifact, &dist_id, mode.write, run)?,
            });
        }
        if mode.write {
            if !node.in_draft() {
                return Err(self.refuse_change(ino, None));
            }
            let (file, writer) = self.open_for_write(caller, ino, mode)?;
            return Ok(self.opened(file, Some(writer), false));
        }
        let file = {
            let conn = self.pool.get()?;
            match node {
                Node::Entry(e) => self.open_entry(ino, &e)?,
                Node::Draft { .. } => match self.find_with_draft(conn.conn(), ino)? {
                    Some((_, Found::File(e, _))) => self.open_entry(ino, &e)?,
                    Some((d, Found::Staged { id, .. })) => {
                        self.staging.open_file(&d, id, false, false)?
                    }
                    Some(_) => return Err(Error::IsADirectory(self.describe(ino, None))),
                    None => return Err(Error::not_found(self.describe(ino, None))),
                },
                Node::Staged { draft, id, .. } => {
                    let d = drafts::by_id(conn.conn(), draft)?
                        .ok_or_else(|| Error::not_found(self.describe(ino, None)))?;
                    self.staging.open_file(&d, id, false, false)?
                }
                Node::Detached(o) => match (&o.0.file, &o.0.entry) {
                    (Some(f), _) => f
                        .try_clone()
                        .map_err(|e| Error::io(self.describe(ino, None), e))?,
                    (None, Some(e)) if o.0.kind == Kind::File => self.open_entry(ino, e)?,
                    _ => return Err(Error::IsADirectory(self.describe(ino, None))),
                },
                _ => return Err(Error::IsADirectory(self.describe(ino, None))),
            }
        };
        let immutable = self.node(ino)?.is_immutable();
        if immutable {
            self.note_open(caller.pid, ino);
        }
        Ok(self.opened(file, None, immutable))
    }

    /// The content of a file a tree records: its blob, or the referenced file.
    fn open_entry(&self, ino: Ino, e: &TreeEntry) -> Result<File> {
        match &e.item {
            Item::File { blob, size } => self
                .blobs
                .open_content(blob, *size, || self.describe(ino, None)),
            Item::Reference(r) => r.open(e.mtime_ns),
            _ => Err(Error::IsADirectory(self.describe(ino, None))),
        }
    }

    /// EACCES when `ino` is a directory of a draft that the mode bits close to `caller` for
    /// `want` (search for a lookup, read for a listing).
    fn check_draft_dir(&self, caller: &Caller, ino: Ino, want: u32) -> Result<()> {
        if caller.is_root()
            || !matches!(
                self.node(ino)?,
                Node::Draft {
                    kind: Kind::Dir,
                    ..
                }
            )
        {
            return Ok(());
        }
        let attr = self.getattr(ino)?.attr;
        caller.check(&attr, want, || self.describe(ino, None))
    }

    /// Registers an open file under a new handle.
    fn opened(&self, file: File, writer: Option<writes::Writer>, immutable: bool) -> Opened {
        let file = Arc::new(file);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.files).insert(
            fh,
            OpenFile {
                file: file.clone(),
                writer,
            },
        );
        Opened::Content {
            fh,
            file,
            immutable,
        }
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        if let Some(status) = self.read_control(fh, offset, size) {
            return Ok(status);
        }
        let file = self.handle(fh)?;
        version_files::read_full(&file, offset, size)
            .map_err(|e| Error::io(format!("file handle {fh}"), e))
    }

    /// The inode table, for the thread that keeps it small.
    pub fn inodes(&self) -> Arc<inode::Inodes> {
        self.inodes.clone()
    }

    /// Names to invalidate in the kernel's cache, once the current reply has been sent.
    pub fn take_stale(&self) -> Vec<(Ino, Vec<u8>)> {
        std::mem::take(&mut *lock(&self.stale))
    }

    /// The file behind an open handle.
    fn handle(&self, fh: u64) -> Result<Arc<File>> {
        lock(&self.files)
            .get(&fh)
            .map(|f| f.file.clone())
            .ok_or_else(|| bad_handle(fh))
    }

    pub fn release(&self, fh: u64) {
        let last_writer = {
            let mut files = lock(&self.files);
            files.remove(&fh).and_then(|open| {
                let key = open.writer.as_ref()?.staged_key()?;
                let others = files
                    .values()
                    .any(|o| o.writer.as_ref().and_then(|w| w.staged_key()) == Some(key));
                (!others).then_some((key, open.file))
            })
        };
        if let Some((key, file)) = last_writer {
            let path = self.staging.path(key.0, key.1);
            self.digests.closed(key, path, &file);
        }
        self.release_control(fh);
    }

    // ----- extended attributes -----

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        // ACLs and security labels are not supported at all. Saying so (EOPNOTSUPP rather than
        // ENODATA) lets tools such as `ls -l` stop asking for every file of the mount.
        if !name.starts_with(b"user.") {
            return Err(Error::AttributeUnsupported(
                self.describe(ino, None),
                lossy(name),
            ));
        }
        let attrs = self.xattrs(ino)?;
        attrs
            .into_iter()
            .find(|(n, _)| n.as_bytes() == name)
            .map(|(_, v)| v.into_bytes())
            .ok_or_else(|| Error::NoAttribute(self.describe(ino, None), lossy(name)))
    }

    /// Attribute names, each followed by a NUL byte, as listxattr returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (name, _) in self.xattrs(ino)? {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    fn xattrs(&self, ino: Ino) -> Result<Vec<(&'static str, String)>> {
        let conn = self.pool.get()?;
        let conn = conn.conn();
        Ok(match self.node(ino)? {
            Node::Root => vec![
                (XATTR_PID, std::process::id().to_string()),
                (
                    XATTR_PASSTHROUGH,
                    if self.passthrough.load(Ordering::Relaxed) {
                        "on"
                    } else {
                        "off"
                    }
                    .into(),
                ),
            ],
            Node::Artifact { name } => match versions::artifact(conn, &name)? {
                Some(a) => vec![(XATTR_TYPE, a.type_name)],
                None => Vec::new(),
            },
            Node::Version {
                artifact, number, ..
            } => {
                let art = versions::require_artifact(conn, &artifact)?;
                match versions::by_number(conn, art.id, number)? {
                    Some(v) => {
                        let mut attrs = vec![
                            (XATTR_DIGEST, v.digest.to_hex()),
                            (XATTR_REF, v.reference()),
                            (XATTR_CREATED, rfc3339(v.created_ns)),
                        ];
                        let run = crate::catalog::runs::maker_of(conn, &artifact, number)?;
                        attrs.extend(run.map(|r| (XATTR_RUN, r)));
                        attrs
                    }
                    None => Vec::new(),
                }
            }
            Node::Entry(e) => file_xattrs(&e.item),
            Node::Draft { .. } => match self.find_in_draft(conn, ino)? {
                Some(Found::File(e, _)) => file_xattrs(&e.item),
                _ => Vec::new(),
            },
            _ => Vec::new(),
        })
    }

    pub fn statfs(&self) -> Result<Statfs> {
        let st = crate::store::filesystem_of(&self.store_root)?;
        Ok(Statfs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: 255,
            frsize: st.f_frsize as u32,
        })
    }
}

/// Whether a version entry may have a derived inode number: not a directory, whose number
/// its own entries' numbers are derived from.
fn derivable(e: &TreeEntry) -> bool {
    !e.is_dir()
}

/// The inode number a plain listing reports for an entry the kernel holds no inode for: a
/// hash of its place, in a range the inode table never hands out.
fn unlisted_ino(parent: Ino, name: &[u8]) -> Ino {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parent.hash(&mut h);
    name.hash(&mut h);
    h.finish() | (1 << 63)
}

fn bad_handle(fh: u64) -> Error {
    Error::io(
        format!("file handle {fh}"),
        std::io::Error::from_raw_os_error(libc::EBADF),
    )
}

fn snapshot(list: Vec<(Vec<u8>, Node)>) -> DirHandle {
    DirHandle::Snapshot { list, read: false }
}

fn kind_of_found(f: &Found) -> Kind {
    match f {
        Found::File(..) | Found::Staged { .. } => Kind::File,
        Found::Symlink(..) => Kind::Symlink,
        Found::Dir { .. } => Kind::Dir,
    }
}

/// The node for what `path` holds in draft `d`: a staged file is known by its staged file,
/// anything else by its path.
fn draft_node(d: &DraftRow, path: Vec<u8>, found: &Found) -> Node {
    match found {
        Found::Staged { id, .. } => Node::Staged {
            artifact: d.artifact.clone(),
            dist_id: d.dist_id.clone(),
            draft: d.id,
            id: *id,
        },
        _ => Node::Draft {
            artifact: d.artifact.clone(),
            dist_id: d.dist_id.clone(),
            path,
            kind: kind_of_found(found),
        },
    }
}

fn draft_listing(fs: &Fs, conn: &Db, d: &DraftRow, path: &[u8]) -> Result<Vec<(Vec<u8>, Node)>> {
    Ok(fs
        .list(conn, d, path)?
        .into_iter()
        .map(|(name, found)| {
            let node = draft_node(d, tree::join(path, &name), &found);
            (name, node)
        })
        .collect())
}

/// The number of the version an alias names now.
fn alias_target(conn: &Db, artifact: &str, alias: &str) -> Result<Option<u64>> {
    let Some(art) = versions::artifact(conn, artifact)? else {
        return Ok(None);
    };
    Ok(versions::by_alias(conn, art.id, alias)?.map(|v| v.number))
}
