//! Read-only questions about the store: listings, details, file contents, differences.

use std::io::{self, Write};

use crate::catalog::Db;

use crate::blobs::BlobStore;
use crate::catalog::Catalog;
use crate::catalog::drafts::{self, DraftRow};
use crate::catalog::nodes;
use crate::catalog::versions::{self, VersionRow};
use crate::draft;
use crate::error::{Error, Result};
use crate::names::{ArtifactName, DraftName, VersionRef};
use crate::staging::Staging;
use crate::store::require_draft;
use crate::tree::{self, Change, Item, TreeEntry};

pub struct ArtifactSummary {
    pub name: String,
    pub type_name: String,
    pub versions: u64,
    pub latest: Option<u64>,
    pub created_ns: i64,
}

pub struct VersionSummary {
    pub version: VersionRow,
    pub aliases: Vec<String>,
    pub files: u64,
    pub bytes: u64,
    pub references: u64,
}

pub fn artifacts(conn: &Db) -> Result<Vec<ArtifactSummary>> {
    versions::artifacts(conn)?
        .into_iter()
        .map(|a| {
            let all = versions::versions(conn, a.id)?;
            Ok(ArtifactSummary {
                versions: all.len() as u64,
                latest: versions::latest(conn, a.id)?.map(|v| v.number),
                name: a.name,
                type_name: a.type_name,
                created_ns: a.created_ns,
            })
        })
        .collect()
}

fn summarize(conn: &Db, v: VersionRow) -> Result<VersionSummary> {
    let info = nodes::info(conn, v.root)?;
    Ok(VersionSummary {
        aliases: versions::aliases_of(conn, v.id)?,
        files: info.files,
        bytes: info.bytes,
        references: info.references,
        version: v,
    })
}

pub fn versions(conn: &Db, name: &ArtifactName) -> Result<(String, Vec<VersionSummary>)> {
    let art = versions::require_artifact(conn, name.as_str())?;
    let list = versions::versions(conn, art.id)?
        .into_iter()
        .map(|v| summarize(conn, v))
        .collect::<Result<_>>()?;
    Ok((art.type_name, list))
}

/// One version with everything `show` reports.
pub fn show(conn: &Db, r: &VersionRef) -> Result<(String, VersionSummary)> {
    let v = versions::resolve(conn, r)?;
    let art = versions::require_artifact(conn, &v.artifact)?;
    Ok((art.type_name, summarize(conn, v)?))
}

/// Calls `f` with every file path of version `r` under `prefix` (a directory or a file).
pub fn ls(
    conn: &Db,
    r: &VersionRef,
    prefix: Option<&[u8]>,
    f: &mut dyn FnMut(&[u8], &TreeEntry) -> Result<()>,
) -> Result<()> {
    let v = versions::resolve(conn, r)?;
    let prefix = trim_slashes(prefix.unwrap_or(b""));
    if prefix.is_empty() {
        return tree::walk(conn, v.root, b"", f);
    }
    let parts = draft::parse_path(prefix)?;
    let prefix = parts.join(&b'/');
    match tree::lookup(conn, v.root, &prefix)? {
        Some(e) => match e.item {
            Item::Dir { node } => tree::walk(conn, node, &prefix, f),
            _ => f(&prefix, &e),
        },
        None => Err(Error::not_found(format!(
            "{} in {}",
            String::from_utf8_lossy(&prefix),
            v.reference()
        ))),
    }
}

fn trim_slashes(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    let end = path
        .iter()
        .rposition(|b| *b != b'/')
        .map_or(start, |i| i + 1);
    &path[start..end]
}

/// Writes the contents of one file of a version to `out`.
pub fn cat(
    conn: &Db,
    blobs: &BlobStore,
    r: &VersionRef,
    path: &[u8],
    out: &mut dyn Write,
) -> Result<()> {
    let v = versions::resolve(conn, r)?;
    let what = || format!("{} in {}", String::from_utf8_lossy(path), v.reference());
    let rel = trim_slashes(path);
    if rel.is_empty() {
        return Err(Error::IsADirectory(what()));
    }
    let entry = tree::lookup(conn, v.root, rel)?.ok_or_else(|| Error::not_found(what()))?;
    match entry.item {
        Item::File { blob, size } => match blobs.copy_content(&blob, size, what, out) {
            Ok(_) => Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e),
        },
        Item::Reference(r) => match r.copy_to(entry.mtime_ns, out) {
            Ok(_) => Ok(()),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(e),
        },
        Item::Dir { .. } => Err(Error::IsADirectory(what())),
        Item::Symlink { target } => Err(Error::invalid(
            what(),
            format!("is a symlink to {}", String::from_utf8_lossy(&target)),
        )),
    }
}

/// The files added, removed and modified from `a` to `b`, in path order.
pub fn diff(conn: &Db, a: &VersionRef, b: &VersionRef) -> Result<Vec<(Change, Vec<u8>)>> {
    let va = versions::resolve(conn, a)?;
    let vb = versions::resolve(conn, b)?;
    let mut out = Vec::new();
    tree::diff(conn, Some(va.root), Some(vb.root), b"", &mut |c, p| {
        out.push((c, p.to_vec()));
        Ok(())
    })?;
    Ok(out)
}

pub struct DraftStatus {
    pub draft: DraftRow,
    /// The newest version of the artifact, if it is not the draft's base.
    pub latest: Option<u64>,
    pub changes: Vec<(Change, Vec<u8>)>,
}

/// The one-letter code of a change, as `diff` and `draft status` print it.
pub fn change_code(c: Change) -> char {
    match c {
        Change::Added => 'A',
        Change::Modified => 'M',
        Change::Removed => 'D',
    }
}

impl DraftStatus {
    /// The status as text: the draft and its base, counts, then one line per change.
    pub fn text(&self) -> String {
        let name = self.draft.display_name();
        let mut s = match self.draft.base_number {
            Some(n) => format!("draft {name}, based on {}:v{n}", self.draft.artifact),
            None => format!("draft {name}, from scratch"),
        };
        let count = |c: Change| self.changes.iter().filter(|(x, _)| *x == c).count();
        s.push_str(&format!(
            "\n{} added, {} modified, {} removed",
            count(Change::Added),
            count(Change::Modified),
            count(Change::Removed)
        ));
        for (c, p) in &self.changes {
            s.push_str(&format!(
                "\n{} {}",
                change_code(*c),
                String::from_utf8_lossy(p)
            ));
        }
        s
    }

    /// A draft based on a version that is no longer latest still commits; warn about it.
    pub fn stale(&self) -> bool {
        self.draft.base_number.is_some() && self.latest != self.draft.base_number
    }
}

/// What committing the draft now would change against its base, computed by building the
/// draft's tree in a transaction that is rolled back.
pub fn draft_status(
    catalog: &mut Catalog,
    staging: &Staging,
    name: &DraftName,
) -> Result<DraftStatus> {
    catalog.dry_run(|tx| {
        let d = require_draft(tx, name)?;
        // Staged files are hashed as they are now, to tell changed from unchanged.
        let root = draft::build_tree(tx, &d, &|id| staging.content(&d, id))?;
        let mut changes = Vec::new();
        tree::diff(tx, d.base_root, Some(root.id), b"", &mut |c, p| {
            changes.push((c, p.to_vec()));
            Ok(())
        })?;
        let latest = match versions::artifact(tx, &d.artifact)? {
            Some(a) => versions::latest(tx, a.id)?.map(|v| v.number),
            None => None,
        };
        Ok(DraftStatus {
            draft: d,
            latest,
            changes,
        })
    })
}

pub fn drafts(conn: &Db) -> Result<Vec<(DraftRow, u64)>> {
    drafts::list(conn)?
        .into_iter()
        .map(|d| {
            let n = drafts::count(conn, d.id)?;
            Ok((d, n))
        })
        .collect()
}
