//! The writable part of the mount: `drafts/`. Starting a draft with `mkdir`, discarding an
//! empty one with `rmdir`; inside a draft, files, directories and symlinks as on a local
//! filesystem, with file contents written to staged files (see `staging.rs`); and committing
//! through the draft's control file `.commit`: write `commit` or a JSON object to it, read it
//! for the draft's status.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use serde_json::Value;

use super::*;
use crate::catalog::now_ns;
use crate::commit::{CommitOptions, parse_metadata};
use crate::names::{AliasName, DistributedId, TypeName};
use crate::query;
use crate::staging::{DraftLock, Fill};
use crate::store::{DraftBase, commit_draft, new_draft, require_draft};

/// What an open for writing holds: the draft's writing lock, so no commit hashes the file
/// while it may change, and the draft, to know what to sync.
pub(super) struct Writer {
    _lock: DraftLock,
    draft: DraftRow,
}

/// How to stage a path that may not exist yet.
#[derive(Clone, Copy)]
struct Create {
    mode: u32,
    exclusive: bool,
}

/// An open control file: what was written so far, or the status text to read.
pub(super) struct ControlHandle {
    draft: DraftName,
    written: Vec<u8>,
    status: Vec<u8>,
}

fn draft_name(artifact: &str, dist_id: &str) -> Result<DraftName> {
    Ok(DraftName {
        artifact: ArtifactName::new(artifact)?,
        id: (!dist_id.is_empty())
            .then(|| DistributedId::new(dist_id))
            .transpose()?,
    })
}

impl Fs {
    /// `mkdir drafts/NAME` starts a draft of NAME from its latest version (empty for a new
    /// artifact); `mkdir drafts/NAME@ID` an empty distributed draft.
    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32) -> Result<Entry> {
        if parent != DRAFTS {
            let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
            self.in_draft(&artifact, &dist_id, |tx, d| {
                let path = tree::join(&dir, name);
                if draft::find(tx, d, &path)?.is_some() {
                    return Err(Error::AlreadyExists(self.describe(parent, Some(name))));
                }
                draft::put_dir(tx, d, &path, mode & 0o7777, now_ns())
            })?;
            return self.lookup(parent, name);
        }
        let text = std::str::from_utf8(name)
            .map_err(|_| Error::invalid(self.describe(parent, Some(name)), "is not UTF-8"))?;
        let draft: DraftName = text.parse()?;
        let mut catalog = self.pool.get()?;
        catalog.write(|tx| new_draft(tx, &draft, None, DraftBase::Default))?;
        self.lookup(parent, name)
    }

    /// `rmdir drafts/NAME` discards a draft that shows no entries.
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        if parent != DRAFTS {
            return self.remove_in_draft(parent, name, true);
        }
        let what = || self.describe(parent, Some(name));
        let draft: DraftName = std::str::from_utf8(name)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| Error::not_found(what()))?;
        let mut catalog = self.pool.get()?;
        catalog
            .write(|tx| {
                let d = drafts::get(tx, draft.artifact.as_str(), draft.id_key())?
                    .ok_or_else(|| Error::not_found(what()))?;
                if !draft::list(tx, &d, b"")?.is_empty() {
                    return Err(Error::NotEmpty(what()));
                }
                drafts::delete(tx, d.id)?;
                Ok(d.id)
            })
            .map(|id| self.staging.remove_draft(id))
    }

    /// `unlink` of a file or symlink in a draft.
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove_in_draft(parent, name, false)
    }

    /// rmdir (`dir`) or unlink in a draft, with a local filesystem's errors: ENOTDIR, EISDIR,
    /// ENOTEMPTY.
    fn remove_in_draft(&self, parent: Ino, name: &[u8], dir: bool) -> Result<()> {
        let (artifact, dist_id, parent_path) = self.draft_dir(parent, name)?;
        let what = || self.describe(parent, Some(name));
        let path = tree::join(&parent_path, name);
        let remove = || {
            self.in_draft(&artifact, &dist_id, |tx, d| {
                self.remove_recorded(tx, d, &path, dir, what)
            })
        };
        let dropped = match remove() {
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
        self.drop_staged(dropped);
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
        let found = draft::find(conn.conn(), &d, path)?;
        Ok(staged_of(&d, found))
    }

    /// Records the removal of `path` after checking it as rmdir (`dir`) or unlink would;
    /// returns the staged file it drops, if any.
    fn remove_recorded(
        &self,
        tx: &Connection,
        d: &DraftRow,
        path: &[u8],
        dir: bool,
        what: impl Fn() -> String,
    ) -> Result<Option<(DraftRow, i64)>> {
        let found = draft::find(tx, d, path)?;
        match (&found, dir) {
            (None, _) => return Err(Error::not_found(what())),
            (Some(Found::Dir { .. }), false) => return Err(Error::IsADirectory(what())),
            (Some(Found::Dir { .. }), true) => {
                if !draft::list(tx, d, path)?.is_empty() {
                    return Err(Error::NotEmpty(what()));
                }
            }
            (Some(_), true) => return Err(Error::NotADirectory(what())),
            (Some(_), false) => {}
        }
        draft::remove(tx, d, path)?;
        Ok(staged_of(d, found))
    }

    /// Removes a staged file the draft no longer refers to.
    fn drop_staged(&self, dropped: Option<(DraftRow, i64)>) {
        if let Some((d, id)) = dropped {
            self.staging.remove(&d, &[id]);
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
    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8]) -> Result<Entry> {
        let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
        self.in_draft(&artifact, &dist_id, |tx, d| {
            let path = tree::join(&dir, name);
            if draft::find(tx, d, &path)?.is_some() {
                return Err(Error::AlreadyExists(self.describe(parent, Some(name))));
            }
            let change = drafts::Change::Symlink {
                target: target.to_vec(),
            };
            draft::put_leaf(tx, d, &path, change, 0o777, now_ns())
        })?;
        self.lookup(parent, name)
    }

    /// `rename` within one draft (to another draft is EXDEV; into or out of a version, EROFS).
    pub fn rename(
        &self,
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
        let to = tree::join(&to_dir, new_name);
        let (kind, replaced) = self.in_draft(&artifact, &dist_id, |tx, d| {
            let from = tree::join(&from_dir, name);
            let replaced = staged_of(d, draft::find(tx, d, &to)?);
            draft::rename(tx, d, &from, &to, no_replace)?;
            let kind = draft::find(tx, d, &to)?
                .as_ref()
                .map_or(Kind::File, kind_of_found);
            Ok((kind, replaced))
        })?;
        // (The kernel never asks to rename a name onto itself.)
        self.drop_staged(replaced);
        let node = Node::Draft {
            artifact,
            dist_id,
            path: to,
            kind,
        };
        self.inodes.moved(parent, name, new_parent, new_name, node);
        Ok(())
    }

    /// Fails with EROFS unless `ino` is in a draft.
    pub fn check_changeable(&self, ino: Ino) -> Result<()> {
        match self.node(ino)? {
            Node::Draft { .. } => Ok(()),
            _ => Err(self.refuse_change(ino, None)),
        }
    }

    /// chmod and utimens of something in a draft; other attribute changes are refused.
    pub fn set_attributes(
        &self,
        ino: Ino,
        mode: Option<u32>,
        mtime: Option<SystemTime>,
    ) -> Result<Entry> {
        let Node::Draft {
            artifact,
            dist_id,
            path,
            ..
        } = self.node(ino)?
        else {
            return Err(self.refuse_change(ino, None));
        };
        let current = self.getattr(ino)?.attr;
        let mode = mode.unwrap_or(current.perm as u32) & 0o7777;
        let mtime = mtime.unwrap_or(current.mtime);
        let mtime_ns = crate::catalog::ns_of(mtime);
        // A reference's mtime is what its file is checked against, so a new one makes it a
        // file of the draft first, as editing it would.
        if mtime != current.mtime && self.is_reference(&artifact, &dist_id, &path)? {
            let write = OpenMode {
                write: true,
                ..OpenMode::default()
            };
            drop(self.stage_and_open(&artifact, &dist_id, &path, write, None)?);
        }
        let staged = self.in_draft(&artifact, &dist_id, |tx, d| {
            draft::set_meta(tx, d, &path, mode, mtime_ns)?;
            Ok(staged_of(d, draft::find(tx, d, &path)?))
        })?;
        // A staged file's mtime is the file's own.
        if let Some((d, id)) = staged {
            let _lock = self.staging.lock_for_writing(&d)?;
            self.staging.set_mtime(&d, id, mtime_ns)?;
        }
        self.getattr(ino)
    }

    fn is_reference(&self, artifact: &str, dist_id: &str, path: &[u8]) -> Result<bool> {
        let name = draft_name(artifact, dist_id)?;
        let conn = self.pool.get()?;
        let d = require_draft(conn.conn(), &name)?;
        Ok(matches!(
            draft::find(conn.conn(), &d, path)?,
            Some(Found::File(TreeEntry {
                item: Item::Reference(_),
                ..
            }))
        ))
    }

    /// `create`: a new file in a draft (or, without O_EXCL, an existing one opened), open
    /// for writing.
    pub fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        open: OpenMode,
        exclusive: bool,
    ) -> Result<(Entry, Opened)> {
        let (artifact, dist_id, dir) = self.draft_dir(parent, name)?;
        let path = tree::join(&dir, name);
        let create = Create {
            mode: mode & 0o7777,
            exclusive,
        };
        let (file, writer) = self.stage_and_open(&artifact, &dist_id, &path, open, Some(create))?;
        let entry = self.lookup(parent, name)?;
        Ok((entry, self.opened(file, Some(writer), false)))
    }

    /// Opens a draft's file for writing, staging it first if it is still its base's.
    pub(super) fn open_for_write(&self, ino: Ino, open: OpenMode) -> Result<(File, Writer)> {
        let Node::Draft {
            artifact,
            dist_id,
            path,
            ..
        } = self.node(ino)?
        else {
            return Err(self.refuse_change(ino, None));
        };
        self.stage_and_open(&artifact, &dist_id, &path, open, None)
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
        let file = match self.stage(&name, &d, path, open.truncate, create)? {
            // A file just staged is open read-write already.
            (_, Some(file)) if !open.append => file,
            (id, _) => self.staging.open_file(&d, id, true, open.append)?,
        };
        if open.truncate {
            file.set_len(0)
                .map_err(|e| Error::io(self.draft_path(&d, path), e))?;
        }
        Ok((
            file,
            Writer {
                _lock: lock,
                draft: d,
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
            let found = draft::find(self.pool.get()?.conn(), d, path)?;
            let exists = || Error::AlreadyExists(what());
            let ((id, file), mode) = match &found {
                Some(_) if create.is_some_and(|c| c.exclusive) => return Err(exists()),
                Some(Found::Staged { id, .. }) => return Ok((*id, None)),
                Some(Found::File(TreeEntry {
                    item: Item::File { blob, .. },
                    mode,
                    mtime_ns,
                    ..
                })) => {
                    let from = self.blobs.path(blob);
                    let from = (!truncate).then_some((Fill::File(&from), *mtime_ns));
                    (self.staging.create(d, from)?, *mode)
                }
                // Editing a reference turns it into a file of the draft: its content, checked
                // as reading it would be, is copied into staging.
                Some(Found::File(TreeEntry {
                    item: Item::Reference(r),
                    mode,
                    mtime_ns,
                    ..
                })) => {
                    let from = (!truncate).then_some((Fill::Reference(r), *mtime_ns));
                    (self.staging.create(d, from)?, *mode)
                }
                Some(Found::Dir { .. }) => return Err(Error::IsADirectory(what())),
                Some(_) => return Err(exists()),
                None => match create {
                    Some(c) => (self.staging.create(d, None)?, c.mode),
                    None => return Err(Error::not_found(what())),
                },
            };
            let recorded = self.pool.get()?.write_relaxed(|tx| {
                let now = require_draft(tx, name)?;
                if now.id != d.id || draft::find(tx, d, path)? != found {
                    return Ok(false);
                }
                draft::put_leaf(tx, d, path, drafts::Change::Staged { id }, mode, 0)?;
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

    /// A write to an open file: a draft's file opened for writing, or a control file.
    pub fn write(&self, ino: Ino, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let Some(file) = self.writable(fh) else {
            if lock(&self.files).contains_key(&fh) {
                return Err(bad_handle(fh));
            }
            return self.write_control(ino, fh, data);
        };
        // An O_APPEND handle appends wherever the kernel thought the end was.
        file.write_all_at(data, offset)
            .map_err(|e| Error::io(self.describe(ino, None), e))?;
        Ok(data.len() as u32)
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
                open.writer.as_ref().map(|w| w.draft.clone()),
            )
        };
        let Some(d) = draft else {
            return Ok(());
        };
        let what = || self.describe(ino, None);
        if datasync {
            file.sync_data()
        } else {
            file.sync_all()
        }
        .map_err(|e| Error::io(what(), e))?;
        self.staging.sync_dir(&d)?;
        self.sync_catalog()
    }

    /// The file behind `fh` if it was opened for writing.
    fn writable(&self, fh: u64) -> Option<Arc<File>> {
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
            Ok(Node::Draft { .. }) => {
                Error::AttributeUnsupported(self.describe(ino, None), lossy(name))
            }
            _ => self.refuse_change(ino, None),
        }
    }

    pub fn sync_catalog(&self) -> Result<()> {
        self.pool.get()?.sync()
    }

    /// chown(2): in a draft, only to the owner every file already has (what `cp -a` and
    /// `rsync -a` do as root), since a version cannot record owners; elsewhere refused as on a
    /// read-only filesystem, even to that owner.
    pub fn check_owner(&self, ino: Ino, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        if uid.is_none() && gid.is_none() {
            return Ok(());
        }
        if !matches!(self.node(ino)?, Node::Draft { .. }) {
            return Err(self.refuse_change(ino, None));
        }
        if uid.is_some_and(|u| u != self.uid) || gid.is_some_and(|g| g != self.gid) {
            return Err(Error::refused(
                self.describe(ino, None),
                "a version cannot record owners; files belong to the mount's owner",
            ));
        }
        Ok(())
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

    /// Runs `f` on a draft in one (relaxed) write transaction; a draft gone meanwhile
    /// (committed or discarded) is ENOENT.
    fn in_draft<T>(
        &self,
        artifact: &str,
        dist_id: &str,
        f: impl FnOnce(&Connection, &DraftRow) -> Result<T>,
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
            _ => Err(self.refuse_change(parent, Some(name))),
        }
    }

    /// Opens a draft's control file: for writing a commit request, or for reading the
    /// draft's status (computed now).
    pub(super) fn open_control(&self, artifact: &str, dist_id: &str, write: bool) -> Result<u64> {
        let draft = draft_name(artifact, dist_id)?;
        let status = if write {
            Vec::new()
        } else {
            let mut catalog = self.pool.get()?;
            let mut text = query::draft_status(&mut catalog, &self.staging, &draft)?.text();
            text.push('\n');
            text.into_bytes()
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.controls).insert(
            fh,
            ControlHandle {
                draft,
                written: Vec::new(),
                status,
            },
        );
        Ok(fh)
    }

    /// The status text of an open control file, if `fh` is one.
    pub(super) fn read_control(&self, fh: u64, offset: u64, size: u32) -> Option<Vec<u8>> {
        let controls = lock(&self.controls);
        let h = controls.get(&fh)?;
        let start = (offset as usize).min(h.status.len());
        let end = start.saturating_add(size as usize).min(h.status.len());
        Some(h.status[start..end].to_vec())
    }

    /// A write to a control file. Once what was written is a whole request, the draft is
    /// committed before the write returns; a request still being written is kept.
    fn write_control(&self, ino: Ino, fh: u64, data: &[u8]) -> Result<u32> {
        let (draft, request) = {
            let mut controls = lock(&self.controls);
            let Some(h) = controls.get_mut(&fh) else {
                return Err(self.refuse_change(ino, None));
            };
            if h.written.len() + data.len() > MAX_REQUEST {
                h.written.clear();
                return Err(Error::TooLarge {
                    what: format!("the commit request in {}", self.describe(ino, None)),
                    limit: MAX_REQUEST,
                });
            }
            h.written.extend_from_slice(data);
            let parsed = parse_request(&h.written, &self.describe(ino, None));
            if !matches!(parsed, Ok(None)) {
                // A refused request is forgotten: close(2) must not report it again.
                h.written.clear();
            }
            let Some(request) = parsed? else {
                return Ok(data.len() as u32);
            };
            (h.draft.clone(), request)
        };
        let mut catalog = self.pool.get()?;
        let outcome = commit_draft(
            &mut catalog,
            &self.blobs,
            &self.staging,
            &self.store_root,
            &draft,
            &request,
        )?;
        lock(&self.stale).push((DRAFTS, draft.to_string().into_bytes()));
        log::info!(
            "committed draft {draft} as {}{}",
            outcome.version().reference(),
            if outcome.is_unchanged() {
                " (unchanged)"
            } else {
                ""
            }
        );
        Ok(data.len() as u32)
    }

    /// close(2) of a control file: an incomplete request is an error then.
    pub fn flush(&self, ino: Ino, fh: u64) -> Result<()> {
        match lock(&self.controls).get(&fh) {
            Some(h) if !h.written.iter().all(u8::is_ascii_whitespace) => Err(Error::invalid(
                self.describe(ino, None),
                "an incomplete commit request was written (expected `commit` or a JSON object)",
            )),
            _ => Ok(()),
        }
    }

    /// truncate(2) and ftruncate(2) of a draft's file; a control file only to empty (what
    /// `echo commit > .commit` does first).
    pub fn truncate(&self, ino: Ino, size: u64, fh: Option<u64>) -> Result<Entry> {
        match self.node(ino)? {
            Node::Control { .. } if size == 0 => return self.getattr(ino),
            Node::Draft { .. } => {}
            _ => return Err(self.refuse_change(ino, None)),
        }
        let open = fh.and_then(|fh| self.writable(fh));
        let resize = |file: &File| {
            file.set_len(size)
                .map_err(|e| Error::io(self.describe(ino, None), e))
        };
        match open {
            Some(file) => resize(&file)?,
            None => {
                let mode = OpenMode {
                    write: true,
                    truncate: size == 0,
                    append: false,
                };
                resize(&self.open_for_write(ino, mode)?.0)?;
            }
        }
        self.getattr(ino)
    }

    pub(super) fn release_control(&self, fh: u64) {
        lock(&self.controls).remove(&fh);
    }
}

/// The draft and number of a staged file, if that is what `found` is.
fn staged_of(d: &DraftRow, found: Option<Found>) -> Option<(DraftRow, i64)> {
    match found {
        Some(Found::Staged { id, .. }) => Some((d.clone(), id)),
        _ => None,
    }
}

/// The largest commit request: metadata at its limit, with room for the other fields.
const MAX_REQUEST: usize = crate::commit::MAX_METADATA_BYTES + (64 << 10);

/// A commit request: `commit`, or a JSON object with `type`, `aliases`, `description` and
/// `metadata`. `None` while it may still be incomplete.
fn parse_request(written: &[u8], what: &str) -> Result<Option<CommitOptions>> {
    let bad = |why: String| Error::invalid(what.to_string(), why);
    let text = String::from_utf8_lossy(written);
    let text = text.trim();
    if text == "commit" {
        return Ok(Some(CommitOptions::default()));
    }
    if text.is_empty() || (!text.starts_with('{') && "commit".starts_with(text)) {
        return Ok(None);
    }
    if !text.starts_with('{') {
        return Err(bad(
            "write `commit` or a JSON object such as {\"aliases\": [\"best\"]}".into(),
        ));
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) if e.is_eof() => return Ok(None),
        Err(e) => return Err(bad(format!("not valid JSON: {e}"))),
    };
    let Value::Object(fields) = value else {
        return Err(bad("expected a JSON object".into()));
    };
    let mut opts = CommitOptions::default();
    for (key, v) in fields {
        match (key.as_str(), v) {
            ("type", Value::String(t)) => opts.type_name = Some(TypeName::new(&t)?),
            ("description", Value::String(d)) => opts.description = Some(d),
            ("metadata", m @ Value::Object(_)) => {
                opts.metadata = Some(parse_metadata(&m.to_string())?)
            }
            ("aliases", Value::Array(list)) => {
                for a in list {
                    let Value::String(a) = a else {
                        return Err(bad("aliases must be strings".into()));
                    };
                    opts.aliases.push(AliasName::new(&a)?);
                }
            }
            (k @ ("type" | "description" | "metadata" | "aliases"), _) => {
                return Err(bad(format!("{k} has the wrong JSON type")));
            }
            (k, _) => return Err(bad(format!("unknown field {k:?}"))),
        }
    }
    Ok(Some(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_incomplete_ones_wait() {
        assert!(parse_request(b"commit\n", "x").unwrap().is_some());
        assert!(parse_request(b"comm", "x").unwrap().is_none());
        assert!(
            parse_request(b"{\"aliases\": [\"be", "x")
                .unwrap()
                .is_none()
        );
        let o = parse_request(
            br#"{"type": "model", "aliases": ["best"], "metadata": {"a": 1}}"#,
            "x",
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.type_name.unwrap().as_str(), "model");
        assert_eq!(o.aliases.len(), 1);
        assert_eq!(o.metadata.as_deref(), Some(r#"{"a":1}"#));
        for bad in [
            &b"nope"[..],
            b"[1]",
            br#"{"aliases": ["v3"]}"#,
            br#"{"colour": 1}"#,
            b"{]",
        ] {
            assert_eq!(
                parse_request(bad, "x").unwrap_err().errno(),
                libc::EINVAL,
                "{bad:?}"
            );
        }
    }
}
