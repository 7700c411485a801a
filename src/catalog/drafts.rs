//! Drafts and their recorded changes, and the seals of finished distributed drafts.

use super::sql::{Db, DbResult, Row};
use crate::params;

use crate::catalog::nodes::NodeId;
use crate::catalog::now_ns;
use crate::error::{CatalogContext, Result};
use crate::hash::Digest;
use crate::reference::Reference;

#[derive(Clone, Debug)]
pub struct DraftRow {
    pub id: i64,
    pub artifact: String,
    pub dist_id: String,
    pub type_name: Option<String>,
    pub base_number: Option<u64>,
    pub base_root: Option<NodeId>,
    pub created_ns: i64,
    /// The draft directory's own mode and times (its creation time until set).
    pub root: Meta,
    /// Who the draft and everything in it belongs to, when not whoever mounted the store:
    /// the user who made it through a mount.
    pub owner: Option<(u32, u32)>,
}

/// An entry's permission bits, times and owner, as a local filesystem keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub mtime_ns: i64,
    pub atime_ns: i64,
    pub ctime_ns: i64,
    /// Who made it, when not the draft's owner (see [`DraftRow::owner`]).
    pub owner: Option<(u32, u32)>,
}

/// What a draft keeps of an entry that a version does not: its access and change times, and
/// who made it when not the draft's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    pub atime_ns: i64,
    pub ctime_ns: i64,
    pub owner: Option<(u32, u32)>,
}

impl Local {
    /// That of an entry a version records: its mtime stands for both times.
    pub fn recorded(mtime_ns: i64) -> Local {
        Local {
            atime_ns: mtime_ns,
            ctime_ns: mtime_ns,
            owner: None,
        }
    }
}

impl Meta {
    pub fn with_local(mode: u32, mtime_ns: i64, local: Local) -> Meta {
        Meta {
            mode,
            mtime_ns,
            atime_ns: local.atime_ns,
            ctime_ns: local.ctime_ns,
            owner: local.owner,
        }
    }

    pub fn local(&self) -> Local {
        Local {
            atime_ns: self.atime_ns,
            ctime_ns: self.ctime_ns,
            owner: self.owner,
        }
    }

    /// What a version records: a mode and an mtime, which also stands for the other times.
    pub fn recorded(mode: u32, mtime_ns: i64) -> Meta {
        Meta {
            mode,
            mtime_ns,
            atime_ns: mtime_ns,
            ctime_ns: mtime_ns,
            owner: None,
        }
    }

    /// The same, made by `owner` (None: the draft's owner).
    pub fn by(self, owner: Option<(u32, u32)>) -> Meta {
        Meta { owner, ..self }
    }

    /// Something made now.
    pub fn now(mode: u32) -> Meta {
        Meta::recorded(mode, crate::clock::now_ns())
    }

    /// The same, changed now (its ctime).
    pub fn changed(self) -> Meta {
        Meta {
            ctime_ns: crate::clock::now_ns(),
            ..self
        }
    }
}

/// The id of the hidden draft that `log` fills and commits in one transaction. It cannot
/// clash with a user's id, which may not contain `#`.
pub const LOG_DRAFT_ID: &str = "#log";

impl DraftRow {
    /// Whether this is a user's `NAME@ID` draft, whose id is sealed when committed.
    pub fn is_distributed(&self) -> bool {
        !self.dist_id.is_empty() && self.dist_id != LOG_DRAFT_ID
    }

    /// How errors name this draft: `draft NAME[@ID]`, or `log of NAME` for the draft a
    /// `log` fills internally.
    pub fn label(&self) -> String {
        if self.dist_id == LOG_DRAFT_ID {
            format!("log of {}", self.artifact)
        } else {
            format!("draft {}", self.display_name())
        }
    }

    pub fn display_name(&self) -> String {
        if self.dist_id.is_empty() {
            self.artifact.clone()
        } else {
            format!("{}@{}", self.artifact, self.dist_id)
        }
    }
}

/// What a draft records at one path, over its base tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    File {
        blob: Digest,
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// A file written through the mount, whose bytes are staged file number `id` of the
    /// draft until the commit stores them. On a shared store the content it had when last
    /// closed is `published` too (its mtime is the entry's), for the other hosts to read.
    Staged {
        id: i64,
        published: Option<(Digest, u64)>,
    },
    /// Content outside the store (see [`Reference`]).
    Reference(Reference),
    /// A directory; `opaque` hides the base directory at the same path, and `moved` is the
    /// base directory it shows instead (one renamed here within the draft).
    Dir {
        opaque: bool,
        moved: Option<NodeId>,
    },
    Removed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DraftEntry {
    pub name: Vec<u8>,
    pub change: Change,
    pub meta: Meta,
}

const KIND_FILE: i64 = 0;
const KIND_DIR: i64 = 1;
const KIND_SYMLINK: i64 = 2;
const KIND_REMOVED: i64 = 3;
const KIND_STAGED: i64 = 4;

const DRAFT_COLUMNS: &str = "id, artifact, dist_id, type, base_number, base_root, created_ns, \
     root_mode, coalesce(root_mtime_ns, created_ns), \
     coalesce(root_atime_ns, root_mtime_ns, created_ns), \
     coalesce(root_ctime_ns, root_mtime_ns, created_ns), owner_uid, owner_gid";

fn draft_from_row(r: &Row) -> DbResult<DraftRow> {
    Ok(DraftRow {
        id: r.get(0)?,
        artifact: r.get(1)?,
        dist_id: r.get(2)?,
        type_name: r.get(3)?,
        base_number: r.get::<Option<i64>>(4)?.map(|n| n as u64),
        base_root: r.get(5)?,
        created_ns: r.get(6)?,
        root: Meta {
            mode: r.get::<i64>(7)? as u32,
            mtime_ns: r.get(8)?,
            atime_ns: r.get(9)?,
            ctime_ns: r.get(10)?,
            owner: None,
        },
        owner: owner_of_row(r, 11)?,
    })
}

fn entry_from_row(r: &Row) -> DbResult<DraftEntry> {
    let kind: i64 = r.get(1)?;
    let change = if let Some(reference) = super::reference_of_row(r, kind, (2, 3, 6))? {
        Change::Reference(reference)
    } else {
        match kind {
            KIND_FILE => {
                let blob: Vec<u8> = r.get(2)?;
                Change::File {
                    blob: Digest::from_slice(&blob).unwrap_or(Digest([0; 32])),
                    size: r.get::<i64>(3)? as u64,
                }
            }
            KIND_DIR => Change::Dir {
                opaque: r.get(7)?,
                moved: r.get(9)?,
            },
            KIND_SYMLINK => Change::Symlink { target: r.get(6)? },
            KIND_STAGED => Change::Staged {
                id: r.get(8)?,
                published: published_of_row(r, 2)?,
            },
            _ => Change::Removed,
        }
    };
    Ok(DraftEntry {
        name: r.get(0)?,
        change,
        meta: Meta {
            mode: r.get::<i64>(4)? as u32,
            mtime_ns: r.get(5)?,
            atime_ns: r.get(10)?,
            ctime_ns: r.get(11)?,
            owner: owner_of_row(r, 12)?,
        },
    })
}

/// The published content of a staged file: blob and size in columns `first` and `first + 1`.
fn published_of_row(r: &Row, first: usize) -> DbResult<Option<(Digest, u64)>> {
    Ok(r.get::<Option<Vec<u8>>>(first)?
        .and_then(|b| Digest::from_slice(&b))
        .map(|d| {
            (
                d,
                r.get::<Option<i64>>(first + 1).ok().flatten().unwrap_or(0) as u64,
            )
        }))
}

const ENTRY_COLUMNS: &str = "name, kind, blob, size, mode, mtime_ns, target, opaque, staged, moved, \
     coalesce(atime_ns, mtime_ns), coalesce(ctime_ns, mtime_ns), owner_uid, owner_gid";

/// An owner stored in columns `first` and `first + 1`, if one is.
fn owner_of_row(r: &Row, first: usize) -> DbResult<Option<(u32, u32)>> {
    Ok(
        match (
            r.get::<Option<i64>>(first)?,
            r.get::<Option<i64>>(first + 1)?,
        ) {
            (Some(u), Some(g)) => Some((u as u32, g as u32)),
            _ => None,
        },
    )
}

pub fn get(conn: &Db, artifact: &str, dist_id: &str) -> Result<Option<DraftRow>> {
    conn.query_opt(
        &format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE artifact = ?1 AND dist_id = ?2"),
        params![artifact, dist_id],
        draft_from_row,
    )
    .ctx(|| format!("look up draft {artifact}"))
}

pub fn by_id(conn: &Db, id: i64) -> Result<Option<DraftRow>> {
    conn.query_opt(
        &format!("SELECT {DRAFT_COLUMNS} FROM drafts WHERE id = ?1"),
        params![id],
        draft_from_row,
    )
    .ctx(|| format!("look up draft {id}"))
}

pub fn list(conn: &Db) -> Result<Vec<DraftRow>> {
    conn.query(
        &format!(
            "SELECT {DRAFT_COLUMNS} FROM drafts WHERE dist_id != '{LOG_DRAFT_ID}' ORDER BY artifact, dist_id"
        ),
        params![],
        draft_from_row,
    )
    .ctx(|| "list drafts".into())
}

pub fn create(
    conn: &Db,
    artifact: &str,
    dist_id: &str,
    type_name: Option<&str>,
    base: Option<(u64, NodeId)>,
) -> Result<DraftRow> {
    let created_ns = now_ns();
    let id = conn
        .query_one(
            "INSERT INTO drafts (artifact, dist_id, type, base_number, base_root, created_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            params![
                artifact,
                dist_id,
                type_name,
                base.map(|b| b.0),
                base.map(|b| b.1),
                created_ns
            ],
            |r| r.get(0),
        )
        .ctx(|| format!("create draft {artifact}"))?;
    Ok(DraftRow {
        id,
        artifact: artifact.to_string(),
        dist_id: dist_id.to_string(),
        type_name: type_name.map(str::to_string),
        base_number: base.map(|b| b.0),
        base_root: base.map(|b| b.1),
        created_ns,
        root: Meta::recorded(0o755, created_ns),
        owner: None,
    })
}

pub fn set_root_meta(conn: &Db, draft: i64, meta: &Meta) -> Result<()> {
    conn.execute(
        "UPDATE drafts SET root_mode = ?2, root_mtime_ns = ?3, root_atime_ns = ?4,
                root_ctime_ns = ?5
          WHERE id = ?1",
        params![
            draft,
            meta.mode,
            meta.mtime_ns,
            meta.atime_ns,
            meta.ctime_ns
        ],
    )
    .ctx(|| "record the draft directory's attributes".into())?;
    Ok(())
}

/// Records who a draft belongs to (see [`DraftRow::owner`]).
pub fn set_owner(conn: &Db, draft: i64, uid: u32, gid: u32) -> Result<()> {
    conn.execute(
        "UPDATE drafts SET owner_uid = ?2, owner_gid = ?3 WHERE id = ?1",
        params![draft, uid as i64, gid as i64],
    )
    .ctx(|| "record the draft's owner".into())?;
    Ok(())
}

pub fn set_type(conn: &Db, draft: i64, type_name: &str) -> Result<()> {
    conn.execute(
        "UPDATE drafts SET type = ?2 WHERE id = ?1",
        params![draft, type_name],
    )
    .ctx(|| "record the draft's type".into())?;
    Ok(())
}

pub fn delete(conn: &Db, draft: i64) -> Result<()> {
    conn.execute("DELETE FROM drafts WHERE id = ?1", params![draft])
        .ctx(|| "delete draft".into())?;
    Ok(())
}

pub fn entry(conn: &Db, draft: i64, parent: &[u8], name: &[u8]) -> Result<Option<DraftEntry>> {
    conn.query_opt(
        &format!(
            "SELECT {ENTRY_COLUMNS} FROM draft_entries WHERE draft = ?1 AND parent = ?2 AND name = ?3"
        ),
        params![draft, parent, name],
        entry_from_row,
    )
    .ctx(|| format!("look up {} in draft", String::from_utf8_lossy(name)))
}

/// The changes recorded directly in directory `parent`, sorted by name.
pub fn entries(conn: &Db, draft: i64, parent: &[u8]) -> Result<Vec<DraftEntry>> {
    conn.query(
        &format!(
            "SELECT {ENTRY_COLUMNS} FROM draft_entries WHERE draft = ?1 AND parent = ?2 ORDER BY name"
        ),
        params![draft, parent],
        entry_from_row,
    )
    .ctx(|| "list draft changes".into())
}

pub fn put(conn: &Db, draft: i64, parent: &[u8], e: &DraftEntry) -> Result<()> {
    let (mut staged, mut blob, mut size, mut target) = (None, None, 0, None);
    let (mut opaque, mut moved) = (false, None);
    let kind = match &e.change {
        Change::File { blob: b, size: s } => {
            (blob, size) = (Some(&b.0[..]), *s as i64);
            KIND_FILE
        }
        Change::Staged { id, published } => {
            staged = Some(*id);
            if let Some((b, s)) = published {
                (blob, size) = (Some(&b.0[..]), *s as i64);
            }
            KIND_STAGED
        }
        Change::Dir {
            opaque: o,
            moved: m,
        } => {
            (opaque, moved) = (*o, *m);
            KIND_DIR
        }
        Change::Symlink { target: t } => {
            target = Some(&t[..]);
            KIND_SYMLINK
        }
        Change::Reference(r) => {
            let (kind, b, s, uri) = super::reference_columns(r);
            (blob, size, target) = (Some(b), s, Some(uri));
            kind
        }
        Change::Removed => KIND_REMOVED,
    };
    // Every column is set, as replacing the row would: what the new one does not have
    // (`copied_ctime_ns`) is cleared.
    conn.execute(
        "INSERT INTO draft_entries
            (draft, parent, name, kind, blob, size, mode, mtime_ns, target, opaque, staged, moved,
             atime_ns, ctime_ns, owner_uid, owner_gid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
         ON CONFLICT (draft, parent, name) DO UPDATE SET
            kind = excluded.kind, blob = excluded.blob, size = excluded.size,
            mode = excluded.mode, mtime_ns = excluded.mtime_ns, target = excluded.target,
            opaque = excluded.opaque, staged = excluded.staged, moved = excluded.moved,
            atime_ns = excluded.atime_ns, ctime_ns = excluded.ctime_ns,
            owner_uid = excluded.owner_uid, owner_gid = excluded.owner_gid,
            copied_ctime_ns = NULL",
        params![
            draft,
            parent,
            &e.name,
            kind,
            blob,
            size,
            e.meta.mode,
            e.meta.mtime_ns,
            target,
            opaque,
            staged,
            moved,
            e.meta.atime_ns,
            e.meta.ctime_ns,
            e.meta.owner.map(|o| o.0),
            e.meta.owner.map(|o| o.1)
        ],
    )
    .ctx(|| format!("record {} in draft", String::from_utf8_lossy(&e.name)))?;
    Ok(())
}

/// Forgets every change recorded strictly below directory `path`.
pub fn clear_below(conn: &Db, draft: i64, path: &[u8]) -> Result<usize> {
    let mut lo = path.to_vec();
    lo.push(b'/');
    let mut hi = path.to_vec();
    hi.push(b'/' + 1);
    // Two statements: with the two conditions joined by OR, SQLite scans every change of the
    // draft instead of two ranges of the primary key.
    let what = || {
        format!(
            "clear draft changes under {}",
            String::from_utf8_lossy(path)
        )
    };
    let direct = conn
        .execute(
            "DELETE FROM draft_entries WHERE draft = ?1 AND parent = ?2",
            params![draft, path],
        )
        .ctx(what)?;
    let deeper = conn
        .execute(
            "DELETE FROM draft_entries WHERE draft = ?1 AND parent >= ?2 AND parent < ?3",
            params![draft, &lo, &hi],
        )
        .ctx(what)?;
    Ok(direct + deeper)
}

/// Moves every change recorded strictly below directory `from` to below `to`, which has
/// none.
pub fn move_below(conn: &Db, draft: i64, from: &[u8], to: &[u8]) -> Result<()> {
    let what = || format!("move draft changes under {}", String::from_utf8_lossy(from));
    let mut lo = from.to_vec();
    lo.push(b'/');
    let mut hi = from.to_vec();
    hi.push(b'/' + 1);
    let parents: Vec<Vec<u8>> = conn
        .query(
            "SELECT parent FROM draft_entries WHERE draft = ?1 AND parent = ?2
             UNION
             SELECT parent FROM draft_entries WHERE draft = ?1 AND parent >= ?3 AND parent < ?4",
            params![draft, from, &lo, &hi],
            |r| r.get(0),
        )
        .ctx(what)?;
    for old in parents {
        let mut new = to.to_vec();
        new.extend_from_slice(&old[from.len()..]);
        conn.execute(
            "UPDATE draft_entries SET parent = ?3 WHERE draft = ?1 AND parent = ?2",
            params![draft, &old, &new],
        )
        .ctx(what)?;
    }
    Ok(())
}

pub fn count(conn: &Db, draft: i64) -> Result<u64> {
    conn.query_one(
        "SELECT count(*) FROM draft_entries WHERE draft = ?1 AND kind != ?2",
        params![draft, KIND_DIR],
        |r| r.get::<i64>(0),
    )
    .map(|n| n as u64)
    .ctx(|| "count draft changes".into())
}

/// Every staged file the draft records, with its path in the draft.
pub fn staged(conn: &Db, draft: i64) -> Result<Vec<StagedRow>> {
    conn.query(
        "SELECT parent, name, staged, blob, size, mtime_ns
           FROM draft_entries WHERE draft = ?1 AND kind = ?2",
        params![draft, KIND_STAGED],
        |r| {
            Ok(StagedRow {
                parent: r.get(0)?,
                name: r.get(1)?,
                id: r.get(2)?,
                published: published_of_row(r, 3)?,
                mtime_ns: r.get(5)?,
            })
        },
    )
    .ctx(|| "list staged files".into())
}

/// Where a draft records a staged file.
#[derive(Clone, Debug)]
pub struct StagedRow {
    pub parent: Vec<u8>,
    pub name: Vec<u8>,
    pub id: i64,
    /// The content as last closed on the host writing it (shared stores), and its mtime.
    pub published: Option<(Digest, u64)>,
    pub mtime_ns: i64,
}

/// The names of staged file `id` of the draft, as (parent, name): one, or more for hard links.
/// Changes to a staged file's rows find them by name: planners would rather scan the draft
/// than use an index whose columns the change sets.
fn names_of_staged(conn: &Db, draft: i64, id: i64) -> DbResult<Vec<(Vec<u8>, Vec<u8>)>> {
    conn.query(
        "SELECT parent, name FROM draft_entries
          WHERE draft = ?1 AND staged = ?2 AND staged IS NOT NULL",
        params![draft, id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Replaces staged file `id` of the draft, wherever it is named (hard links share it), by the
/// blob its bytes were stored as.
pub fn store_staged(
    conn: &Db,
    draft: i64,
    id: i64,
    blob: &Digest,
    size: u64,
    mtime_ns: i64,
) -> Result<()> {
    let what = || format!("record staged file {id} as blob {blob}");
    for (parent, name) in names_of_staged(conn, draft, id).ctx(what)? {
        conn.execute(
            "UPDATE draft_entries SET kind = ?4, blob = ?5, size = ?6, mtime_ns = ?7,
                    staged = NULL, copied_ctime_ns = NULL
              WHERE draft = ?1 AND parent = ?2 AND name = ?3",
            params![
                draft,
                &parent,
                &name,
                KIND_FILE,
                &blob.0[..],
                size,
                mtime_ns
            ],
        )
        .ctx(what)?;
    }
    Ok(())
}

/// Records that staged file `id` of the draft, wherever it is named, was uploaded as `blob`
/// when last closed, `size` bytes and modified at `mtime_ns`: what other hosts show of it.
pub fn publish_staged(
    conn: &Db,
    draft: i64,
    id: i64,
    blob: &Digest,
    size: u64,
    mtime_ns: i64,
) -> Result<()> {
    let what = || format!("record staged file {id} as published in blob {blob}");
    for (parent, name) in names_of_staged(conn, draft, id).ctx(what)? {
        conn.execute(
            "UPDATE draft_entries SET blob = ?4, size = ?5, mtime_ns = ?6
              WHERE draft = ?1 AND parent = ?2 AND name = ?3",
            params![draft, &parent, &name, &blob.0[..], size, mtime_ns],
        )
        .ctx(what)?;
    }
    Ok(())
}

/// What the catalog keeps of staged file `id` of the draft, the same on every name it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StagedInfo {
    /// How many names it has.
    pub links: u64,
    pub mode: u32,
    pub owner: Option<(u32, u32)>,
    /// For a copy of a base file: its own ctime right after the copy, and the base's ctime,
    /// which it shows until its own moves on.
    pub copied: Option<(i64, i64)>,
}

pub fn staged_info(conn: &Db, draft: i64, id: i64) -> Result<StagedInfo> {
    conn.query_one(
        "SELECT count(*), coalesce(max(mode), 0), max(owner_uid), max(owner_gid),
                max(copied_ctime_ns), max(CASE WHEN copied_ctime_ns IS NOT NULL THEN ctime_ns END)
           FROM draft_entries WHERE draft = ?1 AND staged = ?2 AND staged IS NOT NULL",
        params![draft, id],
        |r| {
            let copied = match (r.get::<Option<i64>>(4)?, r.get::<Option<i64>>(5)?) {
                (Some(c), Some(shown)) => Some((c, shown)),
                _ => None,
            };
            Ok(StagedInfo {
                links: r.get::<i64>(0)? as u64,
                mode: r.get::<i64>(1)? as u32,
                owner: owner_of_row(r, 2)?,
                copied,
            })
        },
    )
    .ctx(|| format!("count the names of staged file {id}"))
}

/// Records that staged file `id` is a copy of a base file whose ctime was `shown`, and that
/// the copy's own ctime was `copied` when it was made (see [`StagedInfo::copied`]).
pub fn set_copied(conn: &Db, draft: i64, id: i64, copied: i64, shown: i64) -> Result<()> {
    let what = || format!("record where staged file {id} was copied from");
    for (parent, name) in names_of_staged(conn, draft, id).ctx(what)? {
        conn.execute(
            "UPDATE draft_entries SET copied_ctime_ns = ?4, ctime_ns = ?5
              WHERE draft = ?1 AND parent = ?2 AND name = ?3",
            params![draft, &parent, &name, copied, shown],
        )
        .ctx(what)?;
    }
    Ok(())
}

/// Sets the mode of staged file `id` on every name it has (they are one file).
pub fn set_staged_mode(conn: &Db, draft: i64, id: i64, mode: u32) -> Result<()> {
    let what = || format!("record the mode of staged file {id}");
    for (parent, name) in names_of_staged(conn, draft, id).ctx(what)? {
        conn.execute(
            "UPDATE draft_entries SET mode = ?4 WHERE draft = ?1 AND parent = ?2 AND name = ?3",
            params![draft, &parent, &name, mode],
        )
        .ctx(what)?;
    }
    Ok(())
}

/// How many subdirectories directory `parent` of the draft has, given that `base` (the base
/// directory it shows, if any) has `base_subdirs`: those of the base that no change replaced,
/// plus the directories recorded in it.
pub fn subdirs(conn: &Db, draft: i64, parent: &[u8], base: Option<(NodeId, u64)>) -> Result<u64> {
    let what = || "count subdirectories".to_string();
    let recorded: i64 = conn
        // The kind spelled out, so that the partial index on directory rows serves it.
        .query_one(&format!(
            "SELECT count(*) FROM draft_entries WHERE draft = ?1 AND parent = ?2 AND kind = {KIND_DIR}"
        ), params![draft, parent], |r| r.get(0))
        .ctx(what)?;
    let Some((node, base_subdirs)) = base.filter(|b| b.1 > 0) else {
        return Ok(recorded as u64);
    };
    let replaced: i64 = conn
        .query_one(
            "SELECT count(*) FROM node_chunks nc JOIN chunk_entries ce ON ce.chunk = nc.chunk
              WHERE nc.node = ?1 AND ce.kind = 1
                AND EXISTS (SELECT 1 FROM draft_entries d
                             WHERE d.draft = ?2 AND d.parent = ?3 AND d.name = ce.name)",
            params![node, draft, parent],
            |r| r.get(0),
        )
        .ctx(what)?;
    Ok((base_subdirs as i64 - replaced + recorded).max(0) as u64)
}

pub fn seal(conn: &Db, artifact: &str, dist_id: &str, number: u64) -> Result<()> {
    conn.execute(
        "INSERT INTO seals (artifact, dist_id, number) VALUES (?1, ?2, ?3)",
        params![artifact, dist_id, number as i64],
    )
    .ctx(|| format!("seal {artifact}@{dist_id}"))?;
    Ok(())
}

pub fn sealed(conn: &Db, artifact: &str, dist_id: &str) -> Result<Option<u64>> {
    conn.query_opt(
        "SELECT number FROM seals WHERE artifact = ?1 AND dist_id = ?2",
        params![artifact, dist_id],
        |r| r.get::<i64>(0),
    )
    .map(|n| n.map(|n| n as u64))
    .ctx(|| format!("look up seal of {artifact}@{dist_id}"))
}
