//! The writable part of the mount: `drafts/`. Starting a draft with `mkdir`, discarding an
//! empty one with `rmdir`; inside a draft, files, directories, symlinks and hard links as on a
//! local filesystem, with file contents written to staged files (see `staging.rs`), and the
//! permission checks, times and link counts a local filesystem keeps.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::access::{READ, SEARCH, WRITE, without_setid};
use super::inode::{Detached, Orphan};
use super::*;
use crate::catalog::now_ns;
use crate::names::DistributedId;
use crate::staging::{DraftLock, Fill};
use crate::store::{DraftBase, new_draft, require_draft};

/// What an open for writing holds: the draft's writing lock, so no commit hashes the file
/// while it may change, and the draft and staged file written, to know what to sync. Both go
/// once the file has no name in the draft: it is the draft's no more.
pub(super) struct Writer {
    _lock: Option<DraftLock>,
    staged: Option<(DraftRow, i64)>,
}

impl Writer {
    /// The staged file written (draft id, number), while it is the draft's.
    pub(super) fn staged_key(&self) -> Option<(i64, i64)> {
        self.staged.as_ref().map(|(d, id)| (d.id, *id))
    }
}

/// How to stage a path that may not exist yet.
#[derive(Clone, Copy)]
struct Create {
    mode: u32,
    exclusive: bool,
    /// The user and group making it.
    by: (u32, u32),
}

pub use crate::staging::SetTime;

/// A setattr(2) request: what to change, and the open file it came through, if any.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
}

impl SetAttr {
    fn changes_anything(&self) -> bool {
        self.mode.is_some()
            || self.uid.is_some()
            || self.gid.is_some()
            || self.size.is_some()
            || self.atime.is_some()
            || self.mtime.is_some()
    }
}

pub(super) fn draft_name(artifact: &str, dist_id: &str) -> Result<DraftName> {
    Ok(DraftName {
        artifact: ArtifactName::new(artifact)?,
        id: (!dist_id.is_empty())
            .then(|| DistributedId::new(dist_id))
            .transpose()?,
    })
}

impl Fs {
    /// `mkdir drafts/NAME` starts a draft of NAME from its latest version (empty for a new
    /// artifact); `mkdir drafts/NAME@ID` an empty distributed draft. The draft belongs to
    /// whoever made it.
    pub fn mkdir(&self, caller: &Caller, parent: Ino, name: &[u8], mode: u32) -> Result<Entry> {
        if parent != DRAFTS {
            let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
            self.check_dir(caller, parent, WRITE | SEARCH)?;
            self.in_draft(&artifact, &dist_id, |tx, d| {
                let path = tree::join(&dir, name);
                if self.find(tx, d, &path)?.is_some() {
                    return Err(Error::AlreadyExists(self.describe(parent, Some(name))));
                }
                let made_by = self.made_by(caller, d);
                draft::put_dir(tx, d, &path, Meta::now(mode & 0o7777).by(made_by))?;
                draft::touch_dir(tx, d, &dir)
            })?;
            return self.lookup(caller, parent, name);
        }
        let text = std::str::from_utf8(name)
            .map_err(|_| Error::invalid(self.describe(parent, Some(name)), "is not UTF-8"))?;
        let draft: DraftName = text.parse()?;
        self.check_dir(caller, parent, WRITE | SEARCH)?;
        let mut catalog = self.pool.get()?;
        catalog.write(|tx| {
            let d = new_draft(tx, &draft, None, DraftBase::Default)?;
            drafts::set_root_meta(tx, d.id, &Meta::now(mode & 0o7777))?;
            if caller.uid != self.uid {
                drafts::set_owner(tx, d.id, caller.uid, caller.gid)?;
            }
            Ok(())
        })?;
        self.drafts_changed.store(now_ns(), Ordering::Relaxed);
        self.lookup(caller, parent, name)
    }

    /// `rmdir drafts/NAME` discards a draft that shows no entries.
    pub fn rmdir(&self, caller: &Caller, parent: Ino, name: &[u8]) -> Result<()> {
        if parent != DRAFTS {
            return self.remove_in_draft(caller, parent, name, true);
        }
        let what = || self.describe(parent, Some(name));
        let draft: DraftName = std::str::from_utf8(name)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::not_found(what()))?;
        self.check_delete(caller, parent, name)?;
        let mut catalog = self.pool.get()?;
        let id = catalog.write(|tx| {
            let d = drafts::get(tx, draft.artifact.as_str(), draft.id_key())?
                .ok_or_else(|| Error::not_found(what()))?;
            if !self.list(tx, &d, b"")?.is_empty() {
                return Err(Error::NotEmpty(what()));
            }
            drafts::delete(tx, d.id)?;
            Ok(d.id)
        })?;
        self.staging.remove_draft(id);
        self.drafts_changed.store(now_ns(), Ordering::Relaxed);
        self.inodes.unname(parent, name);
        Ok(())
    }

    /// `unlink` of a file or symlink in a draft.
    pub fn unlink(&self, caller: &Caller, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove_in_draft(caller, parent, name, false)
    }

    /// rmdir (`dir`) or unlink in a draft, with a local filesystem's errors: ENOTDIR, EISDIR,
    /// ENOTEMPTY, and EACCES or EPERM for a caller the modes keep out.
    fn remove_in_draft(&self, caller: &Caller, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        let (artifact, dist_id, parent_path) = self.draft_dir(parent, name)?;
        self.check_delete(caller, parent, name)?;
        let what = || self.describe(parent, Some(name));
        let path = tree::join(&parent_path, name);
        let remove = || {
            self.in_draft(&artifact, &dist_id, |tx, d| {
                let found = self.remove_recorded(tx, d, &path, dir, what)?;
                draft::touch_dir(tx, d, &parent_path)?;
                Ok((d.clone(), found))
            })
        };
        let (d, found) = match remove() {
            // With the disk full, even recording a removal can fail. Removing a file is how a
            // user makes room, as on any filesystem: empty the staged file first, then retry.
            Err(e) if e.errno() == libc::ENOSPC && !dir => {
                if let Some((d, id)) = self.staged_at(&artifact, &dist_id, &path)? {
                    let _lock = self.staging.lock_for_writing(&d)?;
                    let file = self.staging.open_file(&d, id, true, false)?;
                    file.set_len(0).map_err(|e| Error::io(what(), e))?;
                }
                remove()?
            }
            other => other?,
        };
        self.unlinked(parent, name, &d, found);
        Ok(())
    }

    /// The staged file at `path` of a draft, if that is what is there.
    fn staged_at(
        &self,
        artifact: &str,
        dist_id: &str,
        path: &[u8],
    ) -> Result<Option<(DraftRow, i64)>> {
        let conn = self.pool.get()?;
        let Some(d) = drafts::get(conn.conn(), artifact, dist_id)? else {
            return Ok(None);
        };
        Ok(match self.find(conn.conn(), &d, path)? {
            Some(Found::Staged { id, .. }) => Some((d, id)),
            _ => None,
        })
    }

    /// Records the removal of `path` after checking it as rmdir (`dir`) or unlink would;
    /// returns what was there.
    fn remove_recorded(
        &self,
        tx: &Db,
        d: &DraftRow,
        path: &[u8],
        dir: bool,
        what: impl Fn() -> String,
    ) -> Result<Found> {
        let found = self.find(tx, d, path)?;
        match (&found, dir) {
            (None, _) => return Err(Error::not_found(what())),
            (Some(Found::Dir { .. }), false) => return Err(Error::IsADirectory(what())),
            (Some(Found::Dir { .. }), true) => {
                if !self.list(tx, d, path)?.is_empty() {
                    return Err(Error::NotEmpty(what()));
                }
            }
            (Some(_), true) => return Err(Error::NotADirectory(what())),
            (Some(_), false) => {}
        }
        draft::remove(tx, d, path)?;
        Ok(found.expect("checked above"))
    }

    /// After `name` in `parent` stopped naming `found` (removed, or renamed over): the inode
    /// the kernel holds for it keeps what it was, with one link fewer. A staged file left
    /// with no name is removed from the store, kept open for as long as that inode lives.
    fn unlinked(&self, parent: Ino, name: &[u8], d: &DraftRow, found: Found) {
        let held = self.inodes.unname(parent, name);
        let owner = self.owner_of(d);
        let kind = kind_of_found(&found);
        let (ino, entry, meta) = match found {
            Found::Staged {
                id,
                mode,
                owner: made_by,
                ..
            } => {
                let info = self
                    .pool
                    .get()
                    .and_then(|c| drafts::staged_info(c.conn(), d.id, id));
                let links = info.as_ref().map_or(0, |i| i.links);
                // Losing a name changes the file's ctime, as on a local filesystem.
                if let Err(e) = self.staging.touch(d, id) {
                    log::debug!("{}: {e}", self.describe(parent, Some(name)));
                }
                if links > 0 {
                    return;
                }
                if let Some(ino) = self.inodes.of_staged(d.id, id) {
                    match self.staging.open_file(d, id, true, false) {
                        Ok(file) => {
                            let orphan = Orphan {
                                kind: Kind::File,
                                file: Some(Arc::new(file)),
                                entry: None,
                                meta: Mutex::new(Meta::recorded(mode, 0)),
                                owner: made_by.unwrap_or(owner),
                            };
                            self.inodes
                                .set_node(ino, Node::Detached(Detached(Arc::new(orphan))));
                            self.release_writers(d.id, id);
                        }
                        Err(e) => log::warn!(
                            "{}: removed while open, and cannot be kept: {e}",
                            self.describe(parent, Some(name))
                        ),
                    }
                }
                self.staging.remove(d, &[id]);
                return;
            }
            Found::File(e, local) | Found::Symlink(e, local) => {
                let meta = Meta::with_local(e.mode, e.mtime_ns, local);
                (held, Some(e), meta)
            }
            Found::Dir { meta, .. } => (held, None, meta),
        };
        let Some((ino, true)) = ino else { return };
        if matches!(self.inodes.get(ino), Some(Node::Draft { .. })) {
            let orphan = Orphan {
                kind,
                file: None,
                entry,
                meta: Mutex::new(meta.changed()),
                owner: meta.owner.unwrap_or(owner),
            };
            self.inodes
                .set_node(ino, Node::Detached(Detached(Arc::new(orphan))));
        }
    }

    /// Who to record as the maker of an entry `caller` makes in draft `d`: nobody when it is
    /// the draft's owner, who owns what nobody else made.
    fn made_by(&self, caller: &Caller, d: &DraftRow) -> Option<(u32, u32)> {
        self.maker((caller.uid, caller.gid), d)
    }

    fn maker(&self, who: (u32, u32), d: &DraftRow) -> Option<(u32, u32)> {
        (who != self.owner_of(d)).then_some(who)
    }

    /// Files open for writing whose staged file has no name left are no longer the draft's:
    /// they no longer keep commits out.
    fn release_writers(&self, draft: i64, id: i64) {
        for open in lock(&self.files).values_mut() {
            if let Some(w) = &mut open.writer
                && w.staged
                    .as_ref()
                    .is_some_and(|(d, i)| d.id == draft && *i == id)
            {
                *w = Writer {
                    _lock: None,
                    staged: None,
                };
            }
        }
    }

    /// Hard links, device nodes and FIFOs: EPERM in a draft (a version cannot record them),
    /// EROFS elsewhere.
    pub fn refuse_special(&self, parent: Ino, name: &[u8], what: &str) -> Error {
        match self.draft_dir(parent, name) {
            Ok(_) => Error::refused(
                self.describe(parent, Some(name)),
                format!("{what} cannot be stored in a version"),
            ),
            Err(e) => e,
        }
    }

    /// `symlink` in a draft.
    pub fn symlink(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<Entry> {
        let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
        self.check_dir(caller, parent, WRITE | SEARCH)?;
        self.in_draft(&artifact, &dist_id, |tx, d| {
            let path = tree::join(&dir, name);
            if self.find(tx, d, &path)?.is_some() {
                return Err(Error::AlreadyExists(self.describe(parent, Some(name))));
            }
            let change = drafts::Change::Symlink {
                target: target.to_vec(),
            };
            let meta = Meta::now(0o777).by(self.made_by(caller, d));
            draft::put_leaf(tx, d, &path, change, meta)?;
            draft::touch_dir(tx, d, &dir)
        })?;
        self.lookup(caller, parent, name)
    }

    /// `link`: a second name for a file within one draft (EXDEV from another draft or a
    /// version). Both names share one staged file, so writes through either show through
    /// both; a file still holding its base's content is staged first. A symlink's new name
    /// is a copy of it (symlinks never change). After a commit the version holds two files
    /// with the same content.
    pub fn link(
        &self,
        caller: &Caller,
        ino: Ino,
        new_parent: Ino,
        new_name: &[u8],
    ) -> Result<Entry> {
        let (artifact, dist_id, dir) = self.draft_dir(new_parent, new_name)?;
        let what = || self.describe(new_parent, Some(new_name));
        let exdev = || Error::io(what(), std::io::Error::from_raw_os_error(libc::EXDEV));
        let node = self.node(ino)?;
        let (src_artifact, src_dist_id) = match &node {
            Node::Draft {
                artifact, dist_id, ..
            }
            | Node::Staged {
                artifact, dist_id, ..
            } => (artifact.clone(), dist_id.clone()),
            Node::Control { .. } => {
                return Err(Error::refused(
                    self.describe(ino, None),
                    "the control file cannot be linked",
                ));
            }
            Node::Detached(_) => return Err(Error::not_found(self.describe(ino, None))),
            _ => return Err(exdev()),
        };
        if (src_artifact.as_str(), src_dist_id.as_str()) != (artifact.as_str(), dist_id.as_str()) {
            return Err(exdev());
        }
        let attr = self.getattr(ino)?.attr;
        if attr.kind == Kind::Dir {
            return Err(Error::refused(
                self.describe(ino, None),
                "hard links to directories are not allowed",
            ));
        }
        self.check_dir(caller, new_parent, WRITE | SEARCH)?;
        // As with fs.protected_hardlinks: only a file's owner links to a file they could not
        // both read and write, or that is set-ID.
        let setid = attr.perm & 0o4000 != 0 || attr.perm & 0o2010 == 0o2010;
        if !caller.owns(&attr) && (setid || !caller.may(&attr, READ | WRITE)) {
            return Err(Error::refused(
                self.describe(ino, None),
                "only its owner may link to a file they cannot read and write, or a set-ID file",
            ));
        }
        let path = tree::join(&dir, new_name);
        // A file's names share its staged file; a symlink's new name is a copy of it.
        let (id, symlink) = match &node {
            Node::Draft {
                path: from,
                kind: Kind::Symlink,
                ..
            } => (None, Some(from.clone())),
            _ => (Some(self.staged_file_of(ino, &node)?), None),
        };
        let d = self.in_draft(&artifact, &dist_id, |tx, d| {
            if self.find(tx, d, &path)?.is_some() {
                return Err(Error::AlreadyExists(what()));
            }
            match (id, &symlink) {
                (Some(id), _) => {
                    // Another name of the same file, with its mode and owner.
                    let meta = Meta::now(attr.perm as u32).by(self.maker((attr.uid, attr.gid), d));
                    let change = drafts::Change::Staged {
                        id,
                        published: None,
                    };
                    draft::put_leaf(tx, d, &path, change, meta)?;
                }
                (None, Some(from)) => {
                    let Some(Found::Symlink(e, local)) = self.find(tx, d, from)? else {
                        return Err(Error::not_found(self.describe(ino, None)));
                    };
                    let Item::Symlink { target } = e.item else {
                        unreachable!("found a symlink")
                    };
                    // The link changes the original's ctime, as it would a shared inode's.
                    let meta = Meta::with_local(e.mode, e.mtime_ns, local).changed();
                    draft::set_meta(tx, d, from, meta)?;
                    draft::put_leaf(tx, d, &path, drafts::Change::Symlink { target }, meta)?;
                }
                (None, None) => unreachable!("a file or a symlink"),
            }
            draft::touch_dir(tx, d, &dir)?;
            Ok(d.clone())
        })?;
        if let Some(id) = id {
            self.staging.touch(&d, id)?;
        }
        self.lookup(caller, new_parent, new_name)
    }

    /// The staged file of draft file `ino`, staging it (a copy of its base content) if it has
    /// none yet; the inode stands for that staged file from then on.
    fn staged_file_of(&self, ino: Ino, node: &Node) -> Result<i64> {
        match node {
            Node::Staged { id, .. } => Ok(*id),
            Node::Draft {
                artifact,
                dist_id,
                path,
                ..
            } => {
                let name = draft_name(artifact, dist_id)?;
                let d = require_draft(self.pool.get()?.conn(), &name)?;
                let _lock = self.staging.lock_for_writing(&d)?;
                let (id, _) = self.stage(&name, &d, path, false, None)?;
                self.inodes.set_node(ino, staged_node(&d, id));
                Ok(id)
            }
            _ => Err(Error::not_found(self.describe(ino, None))),
        }
    }

    /// `rename` within one draft (to another draft is EXDEV; into or out of a version, EROFS).
    pub fn rename(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        no_replace: bool,
    ) -> Result<()> {
        let (artifact, dist_id, from_dir) = self.draft_dir(parent, name)?;
        let (to_artifact, to_dist_id, to_dir) = self.draft_dir(new_parent, new_name)?;
        if (&artifact, &dist_id) != (&to_artifact, &to_dist_id) {
            return Err(Error::io(
                self.describe(new_parent, Some(new_name)),
                std::io::Error::from_raw_os_error(libc::EXDEV),
            ));
        }
        if !caller.is_root() {
            let source = self.check_delete(caller, parent, name)?;
            self.check_dir(caller, new_parent, WRITE | SEARCH)?;
            if self.peek(new_parent, new_name).is_ok() {
                self.check_delete(caller, new_parent, new_name)?;
            }
            // A directory moving elsewhere has its `..` rewritten.
            if let Some(source) = source
                && source.kind == Kind::Dir
                && parent != new_parent
            {
                caller.check(&source, WRITE, || self.describe(parent, Some(name)))?;
            }
        }
        let to = tree::join(&to_dir, new_name);
        let from = tree::join(&from_dir, name);
        let outcome = self.in_draft(&artifact, &dist_id, |tx, d| {
            let source = self.find(tx, d, &from)?;
            let replaced = self.find(tx, d, &to)?;
            // Two names of one file: rename(2) leaves both as they are.
            if let (Some(Found::Staged { id: a, .. }), Some(Found::Staged { id: b, .. })) =
                (&source, &replaced)
                && a == b
            {
                return Ok(None);
            }
            draft::rename(tx, d, &from, &to, no_replace)?;
            draft::touch_dir(tx, d, &from_dir)?;
            if to_dir != from_dir {
                draft::touch_dir(tx, d, &to_dir)?;
            }
            let moved = self.find(tx, d, &to)?;
            Ok(Some((d.clone(), replaced, moved)))
        })?;
        // (The kernel never asks to rename a name onto itself.)
        let Some((d, replaced, moved)) = outcome else {
            return Ok(());
        };
        if let Some(replaced) = replaced {
            self.unlinked(new_parent, new_name, &d, replaced);
        }
        let node = match moved {
            Some(found) => {
                if let Found::Staged { id, .. } = found {
                    // A rename changes the file's ctime.
                    self.staging.touch(&d, id)?;
                }
                draft_node(&d, to, &found)
            }
            None => return Ok(()),
        };
        self.inodes.moved(parent, name, new_parent, new_name, node);
        Ok(())
    }

    /// Fails with EROFS unless `ino` is in a draft.
    pub fn check_changeable(&self, ino: Ino) -> Result<()> {
        match self.node(ino)? {
            Node::Draft { .. } | Node::Staged { .. } | Node::Detached(_) => Ok(()),
            _ => Err(self.refuse_change(ino, None)),
        }
    }

    /// setattr(2): chmod, chown (to the owner it has only), utimens and truncate of something
    /// in a draft, checked as a local filesystem checks them; the control file may only be
    /// emptied; anything else is read-only.
    pub fn setattr(&self, caller: &Caller, ino: Ino, set: &SetAttr) -> Result<Entry> {
        let node = self.node(ino)?;
        match &node {
            Node::Control { .. } => {
                let others = SetAttr {
                    size: None,
                    fh: None,
                    ..*set
                };
                if others.changes_anything() || set.size.is_some_and(|s| s != 0) {
                    return Err(self.refuse_change(ino, None));
                }
                let current = self.getattr(ino)?;
                if set.size.is_some() && set.fh.is_none() {
                    caller.check(&current.attr, WRITE, || self.describe(ino, None))?;
                }
                return Ok(current);
            }
            Node::Draft { .. } | Node::Staged { .. } | Node::Detached(_) => {}
            _ if set.changes_anything() => return Err(self.refuse_change(ino, None)),
            _ => return self.getattr(ino),
        }
        let current = self.getattr(ino)?.attr;
        let what = || self.describe(ino, None);
        if set.uid.is_some() || set.gid.is_some() {
            caller.check_owner(&current, what)?;
            if set.uid.is_some_and(|u| u != current.uid)
                || set.gid.is_some_and(|g| g != current.gid)
            {
                return Err(Error::refused(
                    what(),
                    "a version cannot record owners; files belong to their draft's owner",
                ));
            }
        }
        if set.mode.is_some() {
            caller.check_owner(&current, what)?;
        }
        let explicit = |t: Option<SetTime>| matches!(t, Some(SetTime::At(_)));
        if explicit(set.atime) || explicit(set.mtime) {
            caller.check_owner(&current, what)?;
        } else if (set.atime.is_some() || set.mtime.is_some())
            && !caller.owns(&current)
            && !caller.may(&current, WRITE)
        {
            return Err(Error::PermissionDenied(what()));
        }
        if set.size.is_some() && set.fh.is_none() {
            caller.check(&current, WRITE, what)?;
        }
        if let Some(size) = set.size {
            self.truncate(ino, size, set.fh, !caller.is_root())?;
        }
        let mode = set.mode.map(|m| caller.chmod_mode(&current, m) & 0o7777);
        let owner = set.uid.is_some() || set.gid.is_some();
        if mode.is_some() || set.atime.is_some() || set.mtime.is_some() || owner {
            self.set_meta(ino, mode, (set.atime, set.mtime))?;
        }
        self.getattr(ino)
    }

    /// Records a new mode and times (None keeps each; the ctime becomes now) of something in
    /// a draft.
    fn set_meta(
        &self,
        ino: Ino,
        mode: Option<u32>,
        times: (Option<SetTime>, Option<SetTime>),
    ) -> Result<()> {
        let (atime, mtime) = times;
        let what = || self.describe(ino, None);
        match self.node(ino)? {
            Node::Staged { draft, id, .. } => {
                let d = drafts::by_id(self.pool.get()?.conn(), draft)?
                    .ok_or_else(|| Error::not_found(what()))?;
                if let Some(mode) = mode {
                    self.pool
                        .get()?
                        .write_relaxed(|tx| drafts::set_staged_mode(tx, draft, id, mode))?;
                }
                if atime.is_some() || mtime.is_some() {
                    let _lock = self.staging.lock_for_writing(&d)?;
                    self.staging.set_times(&d, id, atime, mtime)?;
                    // New times, the same bytes: a digest taken of them still holds.
                    let now = self.staging.meta(&d, id)?;
                    self.digests.retimed((draft, id), now.mtime_ns);
                    Ok(())
                } else {
                    self.staging.touch(&d, id)
                }
            }
            Node::Detached(o) => {
                let mut meta = o.0.meta().changed();
                meta.mode = mode.unwrap_or(meta.mode);
                match &o.0.file {
                    Some(f) => {
                        let touched = if atime.is_some() || mtime.is_some() {
                            crate::staging::set_file_times(f, atime, mtime)
                        } else {
                            crate::staging::touch_file(f)
                        };
                        touched.map_err(|e| Error::io(what(), e))?;
                    }
                    None => {
                        meta.atime_ns = atime.map_or(meta.atime_ns, |t| stamp(t, meta.ctime_ns));
                        meta.mtime_ns = mtime.map_or(meta.mtime_ns, |t| stamp(t, meta.ctime_ns));
                    }
                }
                o.0.set_meta(meta);
                Ok(())
            }
            Node::Draft {
                artifact,
                dist_id,
                path,
                ..
            } => {
                // A reference's mtime is what its file is checked against, so a new one makes
                // it a file of the draft first, as editing it would.
                if mtime.is_some() && self.is_reference(&artifact, &dist_id, &path)? {
                    let node = self.node(ino)?;
                    self.staged_file_of(ino, &node)?;
                    return self.set_meta(ino, mode, times);
                }
                let staged = self.in_draft(&artifact, &dist_id, |tx, d| {
                    let found = self
                        .find(tx, d, &path)?
                        .ok_or_else(|| Error::not_found(what()))?;
                    let current = match &found {
                        Found::File(e, t) | Found::Symlink(e, t) => {
                            Meta::with_local(e.mode, e.mtime_ns, *t)
                        }
                        Found::Dir { meta, .. } => *meta,
                        Found::Staged { id, .. } => return Ok(Some((d.clone(), *id))),
                    };
                    let now = crate::clock::now_ns();
                    let meta = Meta {
                        mode: mode.unwrap_or(current.mode),
                        mtime_ns: mtime.map_or(current.mtime_ns, |t| stamp(t, now)),
                        atime_ns: atime.map_or(current.atime_ns, |t| stamp(t, now)),
                        ctime_ns: now,
                        owner: current.owner,
                    };
                    draft::set_meta(tx, d, &path, meta)?;
                    Ok(None)
                })?;
                match staged {
                    // Staged meanwhile (by another mount): it is that file's inode now.
                    Some((d, id)) => {
                        self.inodes.set_node(ino, staged_node(&d, id));
                        self.set_meta(ino, mode, times)
                    }
                    None => Ok(()),
                }
            }
            _ => Err(self.refuse_change(ino, None)),
        }
    }

    fn is_reference(&self, artifact: &str, dist_id: &str, path: &[u8]) -> Result<bool> {
        let name = draft_name(artifact, dist_id)?;
        let conn = self.pool.get()?;
        let d = require_draft(conn.conn(), &name)?;
        Ok(matches!(
            self.find(conn.conn(), &d, path)?,
            Some(Found::File(
                TreeEntry {
                    item: Item::Reference(_),
                    ..
                },
                _
            ))
        ))
    }

    /// `create`: a new file in a draft (or, without O_EXCL, an existing one opened), open
    /// for writing.
    pub fn create(
        &self,
        caller: &Caller,
        parent: Ino,
        name: &[u8],
        mode: u32,
        open: OpenMode,
        exclusive: bool,
    ) -> Result<(Entry, Opened)> {
        let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
        if !caller.is_root() {
            match self.peek(parent, name) {
                Ok(existing) if !exclusive => {
                    caller.check(&existing, WRITE, || self.describe(parent, Some(name)))?
                }
                _ => self.check_dir(caller, parent, WRITE | SEARCH)?,
            }
        }
        let path = tree::join(&dir, name);
        let create = Create {
            mode: mode & 0o7777,
            exclusive,
            by: (caller.uid, caller.gid),
        };
        let (file, writer) = self.stage_and_open(&artifact, &dist_id, &path, open, Some(create))?;
        if open.truncate && !caller.is_root() {
            self.kill_setid(&writer)?;
        }
        let entry = self.lookup(caller, parent, name)?;
        Ok((entry, self.opened(file, Some(writer), false)))
    }

    /// Opens a draft's file for writing, staging it first if it is still its base's; the
    /// inode stands for the staged file from then on.
    pub(super) fn open_for_write(
        &self,
        caller: &Caller,
        ino: Ino,
        open: OpenMode,
    ) -> Result<(File, Writer)> {
        let (file, writer) = match self.node(ino)? {
            Node::Draft {
                artifact,
                dist_id,
                path,
                ..
            } => {
                let opened = self.stage_and_open(&artifact, &dist_id, &path, open, None)?;
                if let Some((d, id)) = &opened.1.staged {
                    self.inodes.set_node(ino, staged_node(d, *id));
                }
                opened
            }
            Node::Staged { draft, id, .. } => {
                let conn = self.pool.get()?;
                let d = drafts::by_id(conn.conn(), draft)?
                    .ok_or_else(|| Error::not_found(self.describe(ino, None)))?;
                if drafts::staged_info(conn.conn(), draft, id)?.links == 0 {
                    return Err(Error::not_found(self.describe(ino, None)));
                }
                drop(conn);
                let lock = self.staging.lock_for_writing(&d)?;
                self.digests.forget((d.id, id));
                let file = self.staging.open_file(&d, id, true, open.append)?;
                if open.truncate {
                    file.set_len(0)
                        .map_err(|e| Error::io(self.describe(ino, None), e))?;
                }
                let writer = Writer {
                    _lock: Some(lock),
                    staged: Some((d, id)),
                };
                (file, writer)
            }
            Node::Detached(o) => match &o.0.file {
                // No longer the draft's: written without its lock.
                Some(f) => {
                    let file = f
                        .try_clone()
                        .map_err(|e| Error::io(self.describe(ino, None), e))?;
                    if open.truncate {
                        file.set_len(0)
                            .map_err(|e| Error::io(self.describe(ino, None), e))?;
                    }
                    let writer = Writer {
                        _lock: None,
                        staged: None,
                    };
                    (file, writer)
                }
                None => {
                    return Err(Error::refused(
                        self.describe(ino, None),
                        "was removed from its draft; it can only be read",
                    ));
                }
            },
            _ => return Err(self.refuse_change(ino, None)),
        };
        if open.truncate && !caller.is_root() {
            self.kill_setid(&writer)?;
        }
        Ok((file, writer))
    }

    fn stage_and_open(
        &self,
        artifact: &str,
        dist_id: &str,
        path: &[u8],
        open: OpenMode,
        create: Option<Create>,
    ) -> Result<(File, Writer)> {
        let name = draft_name(artifact, dist_id)?;
        let d = require_draft(self.pool.get()?.conn(), &name)?;
        let lock = self.staging.lock_for_writing(&d)?;
        let (id, staged) = self.stage(&name, &d, path, open.truncate, create)?;
        self.digests.forget((d.id, id));
        let file = match staged {
            // A file just staged is open read-write already.
            Some(file) if !open.append => file,
            _ => self.staging.open_file(&d, id, true, open.append)?,
        };
        if open.truncate {
            file.set_len(0)
                .map_err(|e| Error::io(self.draft_path(&d, path), e))?;
        }
        Ok((
            file,
            Writer {
                _lock: Some(lock),
                staged: Some((d, id)),
            },
        ))
    }

    /// The staged file holding `path`'s bytes: the one already there, or a new one, copied
    /// from the base file (unless it is about to be truncated) or, with `create`, empty. The
    /// copy is made before the catalog is locked, so a large one does not hold up other
    /// writers; if the path changed meanwhile, it is thrown away and staging starts over.
    fn stage(
        &self,
        name: &DraftName,
        d: &DraftRow,
        path: &[u8],
        truncate: bool,
        create: Option<Create>,
    ) -> Result<(i64, Option<File>)> {
        let what = || self.draft_path(d, path);
        loop {
            let found = self.find(self.pool.get()?.conn(), d, path)?;
            let exists = || Error::AlreadyExists(what());
            // A copy of a base file keeps showing the base's ctime until it changes.
            let mut shown_ctime = None;
            let ((id, file), meta) = match &found {
                Some(_) if create.is_some_and(|c| c.exclusive) => return Err(exists()),
                Some(Found::Staged { id, .. }) => return Ok((*id, None)),
                Some(Found::File(
                    TreeEntry {
                        item: Item::File { blob, size },
                        mode,
                        mtime_ns,
                        ..
                    },
                    local,
                )) => {
                    let from = match truncate {
                        true => None,
                        false => Some(self.blobs.open_content(blob, *size, what)?),
                    };
                    let from = from.as_ref().map(|f| (Fill::File(f), *mtime_ns));
                    let meta = Meta::recorded(*mode, 0).by(local.owner);
                    shown_ctime = from.is_some().then_some(local.ctime_ns);
                    (self.staging.create(d, from)?, meta)
                }
                // Editing a reference turns it into a file of the draft: its content, checked
                // as reading it would be, is copied into staging.
                Some(Found::File(
                    TreeEntry {
                        item: Item::Reference(r),
                        mode,
                        mtime_ns,
                        ..
                    },
                    local,
                )) => {
                    let from = (!truncate).then_some((Fill::Reference(r), *mtime_ns));
                    let meta = Meta::recorded(*mode, 0).by(local.owner);
                    shown_ctime = from.is_some().then_some(local.ctime_ns);
                    (self.staging.create(d, from)?, meta)
                }
                Some(Found::Dir { .. }) => return Err(Error::IsADirectory(what())),
                Some(_) => return Err(exists()),
                None => match create {
                    Some(c) => {
                        let made_by = self.maker(c.by, d);
                        (
                            self.staging.create(d, None)?,
                            Meta::recorded(c.mode, 0).by(made_by),
                        )
                    }
                    None => return Err(Error::not_found(what())),
                },
            };
            let recorded = self.pool.get()?.write_relaxed(|tx| {
                let now = require_draft(tx, name)?;
                if now.id != d.id || self.find(tx, d, path)? != found {
                    return Ok(false);
                }
                let change = drafts::Change::Staged {
                    id,
                    published: None,
                };
                draft::put_leaf(tx, d, path, change, meta)?;
                if let Some(shown) = shown_ctime {
                    let own = file.metadata().map_err(|e| Error::io(what(), e))?;
                    let copied = crate::staging::meta_of(&own).ctime_ns;
                    drafts::set_copied(tx, d.id, id, copied, shown)?;
                }
                // A new name in its directory, not a copy of what was there.
                if found.is_none() {
                    draft::touch_dir(tx, d, draft::parent_of(path))?;
                }
                Ok(true)
            });
            match recorded {
                Ok(true) => return Ok((id, Some(file))),
                Ok(false) => self.staging.remove(d, &[id]),
                Err(e) => {
                    self.staging.remove(d, &[id]);
                    return Err(e);
                }
            }
        }
    }

    /// How errors name a path of a draft: as the mount shows it.
    fn draft_path(&self, d: &DraftRow, path: &[u8]) -> String {
        format!(
            "/drafts/{}/{}",
            d.display_name(),
            String::from_utf8_lossy(path)
        )
    }

    /// A write to an open file: a draft's file opened for writing, or a control file. The
    /// kernel asks for `kill_setid` when the writer may not keep set-ID bits.
    pub fn write(
        &self,
        ino: Ino,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_setid: bool,
    ) -> Result<u32> {
        let Some(file) = self.writable(fh) else {
            if lock(&self.files).contains_key(&fh) {
                return Err(bad_handle(fh));
            }
            return self.write_control(ino, fh, data);
        };
        // An O_APPEND handle appends wherever the kernel thought the end was.
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(self.describe(ino, None), e))?;
        if kill_setid {
            self.kill_setid_of(ino)?;
        }
        Ok(data.len() as u32)
    }

    /// Drops the set-ID bits of the file an open for writing is on, if it has any.
    fn kill_setid(&self, writer: &Writer) -> Result<()> {
        let Some((d, id)) = &writer.staged else {
            return Ok(());
        };
        let conn = self.pool.get()?;
        let info = drafts::staged_info(conn.conn(), d.id, *id)?;
        let mode = info.mode;
        if info.links > 0 && without_setid(mode) != mode {
            drop(conn);
            self.pool
                .get()?
                .write_relaxed(|tx| drafts::set_staged_mode(tx, d.id, *id, without_setid(mode)))?;
        }
        Ok(())
    }

    /// The same for inode `ino`.
    fn kill_setid_of(&self, ino: Ino) -> Result<()> {
        let mode = self.getattr(ino)?.attr.perm as u32;
        if without_setid(mode) != mode {
            self.set_meta(ino, Some(without_setid(mode)), (None, None))?;
        }
        Ok(())
    }

    /// fsync(2): the file's bytes, its name in the staging directory and the catalog rows
    /// that refer to it all reach the disk.
    pub fn fsync(&self, ino: Ino, fh: u64, datasync: bool) -> Result<()> {
        let (file, draft) = {
            let files = lock(&self.files);
            let Some(open) = files.get(&fh) else {
                return Ok(());
            };
            (
                open.file.clone(),
                open.writer
                    .as_ref()
                    .and_then(|w| w.staged.as_ref())
                    .map(|(d, _)| d.clone()),
            )
        };
        let what = || self.describe(ino, None);
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
        .map_err(|e| Error::io(what(), e))?;
        let Some(d) = draft else {
            return Ok(());
        };
        self.staging.sync_dir(&d)?;
        self.sync_catalog()?;
        self.publish_written(ino, fh)
    }

    /// On a shared store, a file written through this mount is uploaded when it is closed or
    /// synced, and its catalog rows record the upload: from then on every host reads that
    /// content and a commit on any host takes it (see [`Fs::here`]). Elsewhere, nothing to do.
    pub(super) fn publish_written(&self, ino: Ino, fh: u64) -> Result<()> {
        if !self.shared {
            return Ok(());
        }
        let staged = lock(&self.files)
            .get(&fh)
            .and_then(|open| open.writer.as_ref())
            .and_then(|w| w.staged.clone());
        let Some((d, id)) = staged else {
            return Ok(());
        };
        let what = || self.describe(ino, None);
        let before = self.staging.meta(&d, id)?;
        let (blob, size) = self
            .blobs
            .publish(&self.staging.path(d.id, id))
            .inspect_err(|e| log::warn!("{}: could not publish it: {e}", what()))?;
        // Written meanwhile through another descriptor: that one's close publishes it.
        let mtime_ns = before.mtime_ns;
        self.pool
            .get()?
            .write_relaxed(|tx| drafts::publish_staged(tx, d.id, id, &blob, size, mtime_ns))?;
        log::debug!("{}: published as blob {blob}", what());
        Ok(())
    }

    /// The file behind `fh` if it was opened for writing.
    pub(super) fn writable(&self, fh: u64) -> Option<Arc<File>> {
        match lock(&self.files).get(&fh) {
            Some(OpenFile {
                file,
                writer: Some(_),
            }) => Some(file.clone()),
            _ => None,
        }
    }

    /// setxattr/removexattr: versions cannot record extended attributes, so in a draft they
    /// are unsupported, as on a filesystem without them (`cp -a` then keeps the mode with
    /// chmod); elsewhere the mount is read-only.
    pub fn refuse_xattr_change(&self, ino: Ino, name: &[u8]) -> Error {
        match self.node(ino) {
            Ok(Node::Draft { .. } | Node::Staged { .. } | Node::Detached(_)) => {
                Error::AttributeUnsupported(self.describe(ino, None), lossy(name))
            }
            _ => self.refuse_change(ino, None),
        }
    }

    pub fn sync_catalog(&self) -> Result<()> {
        self.pool.get()?.sync()
    }

    /// fallocate(2) on a draft's file open for writing.
    pub fn fallocate(&self, ino: Ino, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let file = self
            .writable(fh)
            .ok_or_else(|| self.refuse_change(ino, None))?;
        // SAFETY: the descriptor is valid while `file` is held.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        if rc != 0 {
            return Err(Error::io(
                self.describe(ino, None),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// truncate(2) and ftruncate(2) of a draft's file (through `fh` when it is open for
    /// writing); `kill_setid` when the caller may not keep set-ID bits.
    fn truncate(&self, ino: Ino, size: u64, fh: Option<u64>, kill_setid: bool) -> Result<()> {
        let resize = |file: &File| {
            file.set_len(size)
                .map_err(|e| Error::io(self.describe(ino, None), e))
        };
        match fh.and_then(|fh| self.writable(fh)) {
            Some(file) => resize(&file)?,
            None => {
                let mode = OpenMode {
                    write: true,
                    truncate: size == 0,
                    append: false,
                };
                let (file, _writer) = self.open_for_write(&Caller::root(), ino, mode)?;
                resize(&file)?;
            }
        }
        if kill_setid {
            self.kill_setid_of(ino)?;
        }
        Ok(())
    }

    /// Runs `f` on a draft in one (relaxed) write transaction; a draft gone meanwhile
    /// (committed or discarded) is ENOENT.
    fn in_draft<T>(
        &self,
        artifact: &str,
        dist_id: &str,
        f: impl FnOnce(&Db, &DraftRow) -> Result<T>,
    ) -> Result<T> {
        let name = draft_name(artifact, dist_id)?;
        let mut catalog = self.pool.get()?;
        catalog.write_relaxed(|tx| {
            let d = require_draft(tx, &name)?;
            f(tx, &d)
        })
    }

    /// The draft and path of directory `parent`, for a change to `name` in it; a change
    /// anywhere else is refused as read-only.
    fn draft_dir(&self, parent: Ino, name: &[u8]) -> Result<(String, String, Vec<u8>)> {
        if name.len() > crate::error::NAME_MAX {
            return Err(Error::NameTooLong(self.describe(parent, Some(name))));
        }
        match self.node(parent)? {
            Node::Draft {
                artifact,
                dist_id,
                path,
                kind: Kind::Dir,
            } => {
                if path.is_empty() && name == CONTROL_FILE.as_bytes() {
                    return Err(Error::refused(
                        self.describe(parent, Some(name)),
                        "the control file cannot be changed this way",
                    ));
                }
                Ok((artifact, dist_id, path))
            }
            // A directory removed while a process stands in it takes no new entries.
            Node::Detached(_) => Err(Error::not_found(self.describe(parent, Some(name)))),
            _ => Err(self.refuse_change(parent, Some(name))),
        }
    }

    /// EACCES unless `caller` may `want` (WRITE | SEARCH to add an entry) in directory `dir`.
    fn check_dir(&self, caller: &Caller, dir: Ino, want: u32) -> Result<()> {
        if caller.is_root() {
            return Ok(());
        }
        let attr = self.getattr(dir)?.attr;
        caller.check(&attr, want, || self.describe(dir, None))
    }

    /// Whether `caller` may remove or rename `name` out of `dir` (write and search permission,
    /// and the sticky bit's rule); returns the entry's attributes when it looked them up.
    fn check_delete(&self, caller: &Caller, dir: Ino, name: &[u8]) -> Result<Option<Attr>> {
        if caller.is_root() {
            return Ok(None);
        }
        let dir_attr = self.getattr(dir)?.attr;
        let victim = self.peek(dir, name)?;
        caller.may_delete(&dir_attr, &victim, || self.describe(dir, Some(name)))?;
        Ok(Some(victim))
    }

    /// The attributes of `name` in `dir`, without the kernel counting a lookup.
    fn peek(&self, dir: Ino, name: &[u8]) -> Result<Attr> {
        let conn = self.pool.get()?;
        let (node, derived) = self
            .child(conn.conn(), dir, name)?
            .ok_or_else(|| Error::not_found(self.describe(dir, Some(name))))?;
        let ino = derived
            .or_else(|| self.inodes.existing(dir, name))
            .unwrap_or(0);
        Ok(self.entry_of(conn.conn(), ino, &node)?.attr)
    }
}

/// The node of staged file `id` of draft `d`.
fn staged_node(d: &DraftRow, id: i64) -> Node {
    Node::Staged {
        artifact: d.artifact.clone(),
        dist_id: d.dist_id.clone(),
        draft: d.id,
        id,
    }
}

/// The time `t` stands for, `now` being now.
fn stamp(t: SetTime, now: i64) -> i64 {
    match t {
        SetTime::Now => now,
        SetTime::At(ns) => ns,
    }
}
