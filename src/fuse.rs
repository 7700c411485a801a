//! The FUSE adapter: each kernel request becomes one call into [`crate::fs::Fs`], and its
//! result a reply or an errno from the one table in `error.rs`. Only what needs fuser's types
//! lives here: attribute conversion and the passthrough backing files.

use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{self, Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, Notifier, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::fs::{Attr, Caller, DirSink, Entry, Fs, Kind, OpenMode, Opened, SetAttr, SetTime};

/// How draft files are opened: a close needs no round trip to the server (there is nothing to
/// flush; what was written is in the staged file already). Control files keep their flush,
/// which is where an unfinished request is refused, and so do a shared store's draft files,
/// which are published when closed.
const DRAFT_FILE: FopenFlags = FopenFlags::FOPEN_NOFLUSH;
const SHARED_DRAFT_FILE: FopenFlags = FopenFlags::empty();

/// How a version file read through the page cache is opened: its pages are kept across
/// opens (it never changes) and a close costs nothing (there is nothing to flush).
const CACHED_VERSION_FILE: FopenFlags =
    FopenFlags::FOPEN_KEEP_CACHE.union(FopenFlags::FOPEN_NOFLUSH);

/// Version files up to this size are read through the page cache rather than passthrough:
/// once cached, opening one costs one request fewer (a passthrough read makes the kernel
/// drop the file's cached atime, so the next `fstat` asks the server again), and a cold read
/// is one request of at most this size.
const CACHED_MAX: u64 = 1 << 20;

/// The handle of a version file: none, since it is read by inode.
const NO_HANDLE: FileHandle = FileHandle(0);

/// Largest read the kernel sends us (and the readahead it may do).
const MAX_READAHEAD: u32 = 1 << 20;

pub struct Adapter {
    fs: Fs,
    /// Set once the session exists; tells the kernel to drop names that went away.
    notifier: Arc<OnceLock<Notifier>>,
    backing: Mutex<Backing>,
    draft_io: Mutex<DraftIo>,
    plus: PlusPolicy,
}

/// How many entries the first READDIRPLUS reply of a directory carries. The kernel asks for
/// attributes with the first read of every directory (and later only while the reader looks
/// names up); with a 1 MiB request a whole directory arrives with attributes, and making a
/// kernel inode for each costs a reader that never stats (`find`) four times its listing. So
/// the first reply is short unless files of this mount were looked up lately: a reader that
/// stats after listing (`find -printf`, `os.walk` + `stat`) would otherwise pay a round trip
/// per name.
struct PlusPolicy {
    start: Instant,
    /// Milliseconds from `start` to the latest lookup that found a file; `u64::MAX` for never.
    file_lookup_ms: AtomicU64,
}

impl Default for PlusPolicy {
    fn default() -> Self {
        PlusPolicy {
            start: Instant::now(),
            file_lookup_ms: AtomicU64::new(u64::MAX),
        }
    }
}

impl PlusPolicy {
    const FIRST_REPLY: usize = 64;
    const LATELY_MS: u64 = 1000;

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn looked_up(&self, kind: Kind) {
        if kind != Kind::Dir {
            self.file_lookup_ms.store(self.now_ms(), Relaxed);
        }
    }

    fn limit(&self, offset: u64) -> usize {
        let last = self.file_lookup_ms.load(Relaxed);
        let lately = last != u64::MAX && self.now_ms().saturating_sub(last) < Self::LATELY_MS;
        if offset == 0 && !lately {
            Self::FIRST_REPLY
        } else {
            usize::MAX
        }
    }
}

/// Backing files registered with the kernel: one per inode, shared by its open handles as the
/// kernel requires, and kept while the kernel holds the inode (until FORGET) so that opening a
/// file again registers nothing. At most [`Backing::KEPT`] are kept for inodes with no open
/// handle; past that the oldest go (and are registered again if opened again).
#[derive(Default)]
struct Backing {
    by_ino: HashMap<u64, Held>,
    /// Inodes in the order their backing file was registered (some already gone).
    order: VecDeque<u64>,
}

struct Held {
    id: Arc<BackingId>,
    /// Handles open through it.
    open: u32,
    /// The size of its blob.
    size: u64,
}

impl Backing {
    const KEPT: usize = 8192;

    fn opened(&mut self, ino: u64) -> Option<Arc<BackingId>> {
        let held = self.by_ino.get_mut(&ino)?;
        held.open += 1;
        Some(held.id.clone())
    }

    /// Registers `id` (of a `size`-byte blob) for `ino`, open once; past [`Backing::KEPT`]
    /// backing files, or past `budget` bytes of them with no handle open (a shared store's
    /// cache cannot evict a blob the kernel holds), the oldest unused go.
    fn insert(&mut self, ino: u64, id: Arc<BackingId>, size: u64, budget: Option<u64>) {
        self.by_ino.insert(ino, Held { id, open: 1, size });
        self.order.push_back(ino);
        let mut tries = self.order.len();
        while self.by_ino.len() > Self::KEPT && tries > 0 {
            tries -= 1;
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.by_ino.get(&old) {
                // In use: it must stay, the kernel takes only one backing file per inode.
                Some(h) if h.open > 0 => self.order.push_back(old),
                Some(_) => {
                    self.by_ino.remove(&old);
                }
                None => {}
            }
        }
        if self.order.len() > 2 * Self::KEPT {
            let by_ino = &self.by_ino;
            self.order.retain(|i| by_ino.contains_key(i));
        }
        if let Some(budget) = budget {
            self.trim(budget);
        }
    }

    fn released(&mut self, ino: u64, budget: Option<u64>) {
        if let Some(h) = self.by_ino.get_mut(&ino) {
            h.open = h.open.saturating_sub(1);
        }
        if let Some(budget) = budget {
            self.trim(budget);
        }
    }

    /// Drops the oldest backing files with no handle open until those left hold at most
    /// `budget` bytes.
    fn trim(&mut self, budget: u64) {
        let mut unused: u64 = self
            .by_ino
            .values()
            .filter(|h| h.open == 0)
            .map(|h| h.size)
            .sum();
        let mut tries = self.order.len();
        while unused > budget && tries > 0 {
            tries -= 1;
            let Some(old) = self.order.pop_front() else {
                break;
            };
            match self.by_ino.get(&old) {
                Some(h) if h.open > 0 => self.order.push_back(old),
                Some(h) => {
                    unused -= h.size;
                    self.by_ino.remove(&old);
                }
                None => {}
            }
        }
    }

    fn forgotten(&mut self, ino: u64) {
        self.by_ino.remove(&ino);
    }

    fn any_open(&self) -> bool {
        self.by_ino.values().any(|h| h.open > 0)
    }
}

/// How the open handles of a draft's file reach its staged file: all through one backing
/// file (kernel passthrough: reads and writes go to the staged file without the server), or
/// all through the server. The kernel takes one backing file per inode and refuses to mix
/// passthrough opens with cached ones, so the first open of an inode decides for every open
/// that overlaps it. The choice ends with the inode's last handle: the inode may stand for
/// another file afterwards (a commit, a copy replacing a staged file shared with a blob).
#[derive(Default)]
struct DraftIo {
    by_ino: HashMap<u64, DraftOpens>,
    /// The inode of each handle counted there.
    handles: HashMap<u64, u64>,
}

struct DraftOpens {
    /// The backing file and which file it is (device, inode number); None: the server.
    backing: Option<(Arc<BackingId>, (u64, u64))>,
    open: u32,
}

/// How one open of a draft's file is served.
enum DraftOpen {
    Passthrough(Arc<BackingId>),
    Server,
    /// Not at all: the inode's other handles pass through to a file this one is not (a
    /// staged file copied since, because a failed commit shared it with a blob), and the
    /// kernel serves every open of an inode through one backing file.
    Busy,
}

impl DraftIo {
    fn count(&mut self, ino: u64, fh: u64) {
        if let Some(o) = self.by_ino.get_mut(&ino) {
            o.open += 1;
            self.handles.insert(fh, ino);
        }
    }

    fn released(&mut self, fh: u64) {
        let Some(ino) = self.handles.remove(&fh) else {
            return;
        };
        if let Some(o) = self.by_ino.get_mut(&ino) {
            o.open = o.open.saturating_sub(1);
            if o.open == 0 {
                self.by_ino.remove(&ino);
            }
        }
    }
}

fn file_id(file: &std::fs::File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

impl Adapter {
    pub fn new(fs: Fs, notifier: Arc<OnceLock<Notifier>>) -> Self {
        Adapter {
            fs,
            notifier,
            backing: Mutex::new(Backing::default()),
            draft_io: Mutex::new(DraftIo::default()),
            plus: PlusPolicy::default(),
        }
    }

    /// Makes the kernel forget names that are gone, and after a commit the targets of the
    /// aliases it moved.
    fn invalidate_stale(&self) {
        let stale = self.fs.take_stale();
        let Some(n) = self.notifier.get() else { return };
        if !stale.is_empty() {
            invalidate_aliases(n, &self.fs.moved_aliases());
        }
        for (parent, name) in stale {
            // ENOENT: the kernel held no such entry.
            if let Err(e) = n.inval_entry(INodeNo(parent), OsStr::from_bytes(&name))
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                log::warn!(
                    "could not invalidate {}: {e}",
                    self.fs.describe(parent, Some(&name))
                );
            }
        }
    }

    fn draft_file(&self) -> FopenFlags {
        match self.fs.is_shared() {
            true => SHARED_DRAFT_FILE,
            false => DRAFT_FILE,
        }
    }

    fn backing(&self) -> std::sync::MutexGuard<'_, Backing> {
        self.backing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn draft_io(&self) -> std::sync::MutexGuard<'_, DraftIo> {
        self.draft_io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides how handle `fh` of draft file `ino` (open as `file`; its permission bits
    /// `perm` when the caller has them) is served. A file opened for writing (not appending)
    /// by the first handle of its inode gets a backing file, registered by `register`, if
    /// passthrough is on, the store is local, and the file has no set-ID bit (a write
    /// through the kernel alone could not clear it).
    fn draft_open(
        &self,
        ino: u64,
        fh: u64,
        file: &std::fs::File,
        mode: OpenMode,
        perm: Option<u16>,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<BackingId>,
    ) -> DraftOpen {
        let mut io = self.draft_io();
        if let Some(o) = io.by_ino.get(&ino) {
            let opened = match &o.backing {
                Some((id, which)) if file_id(file) == Some(*which) => {
                    DraftOpen::Passthrough(id.clone())
                }
                Some(_) => return DraftOpen::Busy,
                None => DraftOpen::Server,
            };
            io.count(ino, fh);
            return opened;
        }
        let eligible = mode.write
            && !mode.append
            && self.fs.passthrough.load(Relaxed)
            && !self.fs.is_shared()
            && perm
                .or_else(|| self.fs.getattr(ino).ok().map(|e| e.attr.perm))
                .is_some_and(|perm| u32::from(perm) & 0o6000 == 0);
        let backing = match eligible {
            true => match register(file) {
                Ok(id) => file_id(file).map(|which| (Arc::new(id), which)),
                Err(e) => {
                    log::debug!("{}: no passthrough ({e})", self.fs.describe(ino, None));
                    None
                }
            },
            false => None,
        };
        let opened = match &backing {
            Some((id, _)) => {
                log::debug!(
                    "{}: written through to its staged file (passthrough)",
                    self.fs.describe(ino, None)
                );
                DraftOpen::Passthrough(id.clone())
            }
            None => DraftOpen::Server,
        };
        io.by_ino.insert(ino, DraftOpens { backing, open: 0 });
        io.count(ino, fh);
        opened
    }

    fn busy_backing(&self, ino: u64) -> Error {
        Error::Busy(format!(
            "{} is open elsewhere through the file it was before a failed commit; close it \
             everywhere and open it again",
            self.fs.describe(ino, None)
        ))
    }

    /// The backing file of `ino` for one more open handle: the one registered already, or
    /// `file` registered now. None if the kernel refuses passthrough altogether.
    fn backing_for(
        &self,
        reply: &ReplyOpen,
        ino: u64,
        file: &std::fs::File,
        size: u64,
    ) -> std::io::Result<Option<Arc<BackingId>>> {
        let mut b = self.backing();
        if let Some(id) = b.opened(ino) {
            return Ok(Some(id));
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                b.insert(ino, id.clone(), size, self.fs.kept_blobs_budget());
                Ok(Some(id))
            }
            // The kernel refuses passthrough itself (not permitted, not supported): serve
            // every read from now on, before any file was opened with a backing file.
            Err(e)
                if !b.any_open()
                    && matches!(
                        e.raw_os_error(),
                        Some(libc::EPERM | libc::EACCES | libc::EOPNOTSUPP | libc::ENOTTY)
                    ) =>
            {
                log::info!("passthrough unavailable ({e}); serving reads from the page cache");
                self.fs.passthrough.store(false, Ordering::Relaxed);
                Ok(None)
            }
            // Anything else fails this open only: a cached open of an inode that others
            // read through a backing file would be refused by the kernel anyway.
            Err(e) => Err(e),
        }
    }

    /// Opens a file of a version (its content a blob of the store, of `size` bytes) without a
    /// handle: through its backing file if it is big and passthrough is on, else through the
    /// page cache, which keeps it.
    fn open_version(&self, ino: u64, size: u64, reply: ReplyOpen) {
        if size > CACHED_MAX && self.fs.passthrough.load(Ordering::Relaxed) {
            let backing = self
                .fs
                .version_content(ino)
                .and_then(|file| {
                    self.backing_for(&reply, ino, &file, size)
                        .map_err(|e| Error::io(self.fs.describe(ino, None), e))
                })
                .map_err(|e| self.fs.explain(ino, e));
            match backing {
                Ok(Some(id)) => {
                    return reply.opened_passthrough(NO_HANDLE, FopenFlags::FOPEN_NOFLUSH, &id);
                }
                Ok(None) => {}
                Err(e) => return reply.error(fail("open", &e)),
            }
        }
        reply.opened(NO_HANDLE, CACHED_VERSION_FILE)
    }
}

/// Tells the kernel that these aliases moved: it drops the cached target and the name, and
/// reads both again when next used.
pub fn invalidate_aliases(notifier: &Notifier, moved: &[(u64, u64, Vec<u8>)]) {
    for (ino, parent, name) in moved {
        // ENOENT: the kernel held no such inode or entry any more.
        for result in [
            notifier.inval_inode(INodeNo(*ino), 0, 0),
            notifier.inval_entry(INodeNo(*parent), OsStr::from_bytes(name)),
        ] {
            if let Err(e) = result
                && e.raw_os_error() != Some(libc::ENOENT)
            {
                log::warn!("could not invalidate alias inode {ino}: {e}");
            }
        }
    }
}

/// The process a request comes from, for permission checks.
fn caller(req: &Request) -> Caller {
    Caller::new(req.uid(), req.gid(), req.pid())
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => SetTime::At(crate::catalog::ns_of(t)),
        TimeOrNow::Now => SetTime::Now,
    }
}

fn errno(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Logs a failed request; expected outcomes (a missing name) only at debug level.
fn fail(op: &str, e: &Error) -> Errno {
    match e {
        Error::NotFound(_)
        | Error::NoAttribute(..)
        | Error::AttributeUnsupported(..)
        | Error::PermissionDenied(_)
        | Error::ReadOnly(_) => {
            log::debug!("{op}: {e}")
        }
        _ => log::warn!("{op}: {e}"),
    }
    errno(e)
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Dir => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks(),
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        // Tools size their reads and writes by it (cp, dd with no bs): one request each.
        blksize: MAX_READAHEAD,
        flags: 0,
    }
}

struct PlainSink<'a>(&'a mut ReplyDirectory);

impl DirSink for PlainSink<'_> {
    fn add(&mut self, offset: u64, name: &[u8], entry: &Entry) -> bool {
        self.0.add(
            INodeNo(entry.attr.ino),
            offset,
            file_type(entry.attr.kind),
            OsStr::from_bytes(name),
        )
    }
}

/// A reply with attributes and how many more entries it may take.
struct PlusSink<'a>(&'a mut ReplyDirectoryPlus, usize);

impl DirSink for PlusSink<'_> {
    fn add(&mut self, offset: u64, name: &[u8], entry: &Entry) -> bool {
        let Some(left) = self.1.checked_sub(1) else {
            return true;
        };
        self.1 = left;
        let attr = file_attr(&entry.attr);
        self.0.add(
            INodeNo(entry.attr.ino),
            offset,
            OsStr::from_bytes(name),
            &entry.ttl,
            &attr,
            Generation(0),
        )
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // The server drops set-ID bits when the kernel says a writer may not keep them (and
        // files carry no capabilities), so the kernel need not ask for security.capability
        // before every write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        let _ = config.set_max_readahead(MAX_READAHEAD);
        // Alias targets stay in the kernel until an alias moves (see `invalidate_aliases`).
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // SAFETY: geteuid cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        // The read-only mount opens no file through the server (see `open`), so it has no
        // open to pass a backing file with.
        if root
            && !self.fs.is_read_only()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
        {
            // Our backing files are plain files on a local filesystem: one level of stacking.
            if config.set_max_stack_depth(1).is_ok() {
                self.fs.passthrough.store(true, Ordering::Relaxed);
            }
        }
        log::info!(
            "mounted; kernel passthrough {}",
            if self.fs.passthrough.load(Ordering::Relaxed) {
                "on"
            } else {
                "off"
            }
        );
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        guarded("lookup", || {
            match self.fs.lookup(&caller(req), parent.0, name.as_bytes()) {
                Ok(e) => {
                    self.plus.looked_up(e.attr.kind);
                    reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0))
                }
                Err(e) => reply.error(fail("lookup", &self.fs.explain(parent.0, e))),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        guarded("forget", || {
            self.fs.forget(ino.0, nlookup);
            // The kernel forgets an inode only once it is unused: no file of it is open.
            self.fs.forget_version(ino.0);
            self.backing().forgotten(ino.0);
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        guarded("getattr", || match self.fs.getattr(ino.0) {
            Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
            Err(e) => reply.error(fail("getattr", &self.fs.explain(ino.0, e))),
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        guarded("setattr", || {
            let set = SetAttr {
                mode,
                uid,
                gid,
                size,
                atime: atime.map(set_time),
                mtime: mtime.map(set_time),
                fh: fh.map(|f| f.0),
            };
            match self.fs.setattr(&caller(req), ino.0, &set) {
                Ok(e) => reply.attr(&e.ttl, &file_attr(&e.attr)),
                Err(e) => reply.error(fail("setattr", &e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        guarded("readlink", || match self.fs.readlink(ino.0) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(fail("readlink", &self.fs.explain(ino.0, e))),
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        guarded("mknod", || {
            // A regular file is what create(2) makes, without keeping it open.
            if mode & libc::S_IFMT == libc::S_IFREG {
                let write = OpenMode {
                    write: true,
                    truncate: false,
                    append: false,
                };
                let created = self.fs.create(
                    &caller(req),
                    parent.0,
                    name.as_bytes(),
                    mode & !umask,
                    write,
                    true,
                );
                return match created {
                    Ok((e, Opened::Content { fh, .. } | Opened::Control { fh })) => {
                        self.fs.release(fh);
                        reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0))
                    }
                    Err(e) => reply.error(fail("mknod", &e)),
                };
            }
            let e = self.fs.refuse_special(
                parent.0,
                name.as_bytes(),
                "device nodes, FIFOs and sockets",
            );
            reply.error(fail("mknod", &e));
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        guarded("mkdir", || {
            match self
                .fs
                .mkdir(&caller(req), parent.0, name.as_bytes(), mode & !umask)
            {
                Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
                Err(e) => reply.error(fail("mkdir", &e)),
            }
        });
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("unlink", || {
            match self.fs.unlink(&caller(req), parent.0, name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("unlink", &e)),
            }
        });
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("rmdir", || {
            match self.fs.rmdir(&caller(req), parent.0, name.as_bytes()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rmdir", &e)),
            }
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        guarded("symlink", || {
            let target = target.as_os_str().as_bytes();
            match self
                .fs
                .symlink(&caller(req), parent.0, name.as_bytes(), target)
            {
                Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
                Err(e) => reply.error(fail("symlink", &e)),
            }
        });
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        guarded("rename", || {
            let result = if flags.bits() & libc::RENAME_EXCHANGE != 0 {
                Err(Error::invalid(
                    self.fs.describe(parent.0, Some(name.as_bytes())),
                    "RENAME_EXCHANGE is not supported",
                ))
            } else {
                let no_replace = flags.bits() & libc::RENAME_NOREPLACE != 0;
                self.fs.rename(
                    &caller(req),
                    parent.0,
                    name.as_bytes(),
                    newparent.0,
                    newname.as_bytes(),
                    no_replace,
                )
            };
            match result {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("rename", &e)),
            }
        });
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        guarded("link", || {
            match self
                .fs
                .link(&caller(req), ino.0, newparent.0, newname.as_bytes())
            {
                Ok(e) => reply.entry(&e.ttl, &file_attr(&e.attr), Generation(0)),
                Err(e) => reply.error(fail("link", &e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        guarded("create", || {
            let exclusive = flags & libc::O_EXCL != 0;
            let opened = self.fs.create(
                &caller(req),
                parent.0,
                name.as_bytes(),
                mode & !umask,
                open_mode(flags),
                exclusive,
            );
            match opened {
                Ok((e, Opened::Content { fh, file, .. })) => {
                    let mode = open_mode(flags);
                    let how =
                        self.draft_open(e.attr.ino, fh, &file, mode, Some(e.attr.perm), |f| {
                            reply.open_backing(f)
                        });
                    let (ttl, attr, fh) = (&e.ttl, &file_attr(&e.attr), FileHandle(fh));
                    match how {
                        DraftOpen::Passthrough(id) => reply.created_passthrough(
                            ttl,
                            attr,
                            Generation(0),
                            fh,
                            self.draft_file(),
                            &id,
                        ),
                        DraftOpen::Server => {
                            reply.created(ttl, attr, Generation(0), fh, self.draft_file())
                        }
                        DraftOpen::Busy => {
                            self.fs.release(fh.0);
                            reply.error(fail("create", &self.busy_backing(e.attr.ino)))
                        }
                    }
                }
                Ok((e, Opened::Control { fh })) => reply.created(
                    &e.ttl,
                    &file_attr(&e.attr),
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(fail("create", &e)),
            }
        });
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        guarded("open", || {
            let mode = open_mode(flags.0);
            if !mode.write {
                match self.fs.version_file(ino.0) {
                    // The read-only mount asks the kernel to open files without the server
                    // (ENOSYS, once): they are read by inode, and their pages are kept.
                    Ok(Some(_)) if self.fs.is_read_only() => {
                        return reply.error(Errno::from_i32(libc::ENOSYS));
                    }
                    Ok(Some(size)) => {
                        self.fs.note_open(req.pid(), ino.0);
                        return self.open_version(ino.0, size, reply);
                    }
                    Ok(None) => {}
                    Err(e) => return reply.error(fail("open", &self.fs.explain(ino.0, e))),
                }
            }
            let (fh, file, immutable) = match self.fs.open(&caller(req), ino.0, mode) {
                Ok(Opened::Content {
                    fh,
                    file,
                    immutable,
                }) => (fh, file, immutable),
                // Generated content: read through the server every time.
                Ok(Opened::Control { fh }) => {
                    return reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
                }
                Err(e) => return reply.error(fail("open", &self.fs.explain(ino.0, e))),
            };
            // A draft's file may get other content under the same inode: it is read through the
            // server with its pages dropped at each open, never through a backing file.
            if !immutable {
                let how = self.draft_open(ino.0, fh, &file, mode, None, |f| reply.open_backing(f));
                return match how {
                    DraftOpen::Passthrough(id) => {
                        reply.opened_passthrough(FileHandle(fh), self.draft_file(), &id)
                    }
                    DraftOpen::Server => reply.opened(FileHandle(fh), self.draft_file()),
                    DraftOpen::Busy => {
                        self.fs.release(fh);
                        reply.error(fail("open", &self.busy_backing(ino.0)))
                    }
                };
            }
            // A reference of a version: checked at this open (above), then read like a blob.
            if self.fs.passthrough.load(Ordering::Relaxed) {
                // (Not a blob of the cache: it counts for nothing against its size.)
                match self.backing_for(&reply, ino.0, &file, 0) {
                    // The kernel takes passthrough opens only without caching flags: it reads the
                    // backing file itself, through that file's own page cache.
                    Ok(Some(id)) => {
                        return reply.opened_passthrough(
                            FileHandle(fh),
                            FopenFlags::FOPEN_NOFLUSH,
                            &id,
                        );
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.fs.release(fh);
                        let e = Error::io(self.fs.describe(ino.0, None), e);
                        return reply.error(fail("open", &e));
                    }
                }
            }
            reply.opened(FileHandle(fh), CACHED_VERSION_FILE);
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        guarded("read", || {
            let data = match fh {
                NO_HANDLE => self.fs.read_version(ino.0, offset, size),
                _ => self.fs.read(fh.0, offset, size),
            };
            match data {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(fail("read", &self.fs.explain(ino.0, e))),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        guarded("write", || {
            let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
            let result = self.fs.write(ino.0, fh.0, offset, data, kill);
            // Before the reply, so whoever committed never sees the draft again. (A write is not
            // among the requests an invalidation may deadlock with.)
            self.invalidate_stale();
            match result {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(fail("write", &e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Files the read-only mount opened without the server have nothing to flush, and no
        // way to say so at open: ENOSYS tells the kernel, once, to send no more flushes.
        if fh == NO_HANDLE && self.fs.is_read_only() {
            return reply.error(Errno::from_i32(libc::ENOSYS));
        }
        guarded("flush", || match self.fs.flush(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("flush", &e)),
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        guarded("release", || {
            let budget = self.fs.kept_blobs_budget();
            self.backing().released(ino.0, budget);
            if fh != NO_HANDLE {
                self.draft_io().released(fh.0);
                self.fs.release(fh.0);
            }
            reply.ok();
        });
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        guarded("opendir", || match self.fs.opendir(&caller(req), ino.0) {
            Ok((fh, true)) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Ok((fh, false)) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(fail("opendir", &self.fs.explain(ino.0, e))),
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        guarded("readdir", || {
            match self
                .fs
                .readdir(ino.0, fh.0, offset, false, &mut PlainSink(&mut reply))
            {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("readdir", &self.fs.explain(ino.0, e))),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        guarded("readdirplus", || {
            let mut sink = PlusSink(&mut reply, self.plus.limit(offset));
            match self.fs.readdir(ino.0, fh.0, offset, true, &mut sink) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("readdirplus", &self.fs.explain(ino.0, e))),
            }
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        guarded("releasedir", || {
            self.fs.releasedir(fh.0);
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        guarded("statfs", || match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(fail("statfs", &e)),
        });
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        guarded("setxattr", || {
            reply.error(fail(
                "setxattr",
                &self.fs.refuse_xattr_change(ino.0, name.as_bytes()),
            ));
        });
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        guarded("getxattr", || {
            match self.fs.getxattr(ino.0, name.as_bytes()) {
                Ok(v) => reply_xattr(reply, size, &v),
                Err(e) => reply.error(fail("getxattr", &self.fs.explain(ino.0, e))),
            }
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        guarded("listxattr", || match self.fs.listxattr(ino.0) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(fail("listxattr", &self.fs.explain(ino.0, e))),
        });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        guarded("removexattr", || {
            let e = self.fs.refuse_xattr_change(ino.0, name.as_bytes());
            reply.error(fail("removexattr", &e));
        });
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: fuser::AccessFlags, reply: ReplyEmpty) {
        guarded("access", || {
            match self.fs.access(ino.0, &caller(req), mask.bits()) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("access", &e)),
            }
        });
    }

    /// No ioctls: ENOTTY, as for a file that is no terminal (Python asks on every open).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        guarded("fallocate", || {
            match self.fs.fallocate(ino.0, fh.0, offset, length, mode) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(fail("fallocate", &e)),
            }
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsync", || match self.fs.fsync(ino.0, fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("fsync", &e)),
        });
    }

    /// Directory entries of drafts are catalog rows; syncing them syncs the catalog.
    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        guarded("fsyncdir", || match self.fs.sync_catalog() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(fail("fsyncdir", &e)),
        });
    }
}

/// What open(2) flags ask for. O_TRUNC arrives here because the kernel is told it may
/// pass it (FUSE_ATOMIC_O_TRUNC): a file about to be emptied is then never copied first.
fn open_mode(flags: i32) -> OpenMode {
    OpenMode {
        write: flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
    }
}

/// A size query (size 0) gets the length; a buffer too small gets ERANGE, as xattr(7) says.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

/// Serves one request. A panic (a bug) must not take the mount down with it: it is logged,
/// and the reply it left unsent answers EIO when dropped.
fn guarded(op: &str, serve: impl FnOnce()) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if crate::faults::check(crate::faults::Op::Request).is_err() {
            panic!("injected fault in {op}");
        }
        serve()
    }));
    if let Err(panic) = result {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("unknown cause");
        log::error!("{op}: internal error, answered EIO: {why}");
    }
}
