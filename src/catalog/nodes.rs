//! Storage of tree nodes: one `nodes` row per distinct directory listing, its entries in
//! `node_entries` keyed by (node, name) so a listing is a range scan and a lookup one probe.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::error::{CatalogContext, Error, Result};
use crate::hash::Digest;
use crate::tree::{self, Item, TreeEntry};

pub type NodeId = i64;

const KIND_FILE: i64 = 0;
const KIND_DIR: i64 = 1;
const KIND_SYMLINK: i64 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: NodeId,
    pub hash: Digest,
    pub digest: Digest,
    pub files: u64,
    pub bytes: u64,
    /// Immediate subdirectories, for a directory's link count.
    pub subdirs: u64,
}

const ENTRY_COLUMNS: &str = "name, kind, blob, size, mode, mtime_ns, child, target";

fn digest_col(row: &Row, idx: usize) -> rusqlite::Result<Digest> {
    let bytes: Vec<u8> = row.get(idx)?;
    Digest::from_slice(&bytes).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Blob,
            "digest is not 32 bytes".into(),
        )
    })
}

fn entry_from_row(row: &Row) -> rusqlite::Result<TreeEntry> {
    let kind: i64 = row.get(1)?;
    let item = match kind {
        KIND_FILE => Item::File {
            blob: digest_col(row, 2)?,
            size: row.get::<_, i64>(3)? as u64,
        },
        KIND_DIR => Item::Dir { node: row.get(6)? },
        _ => Item::Symlink {
            target: row.get(7)?,
        },
    };
    Ok(TreeEntry {
        name: row.get(0)?,
        item,
        mode: row.get::<_, i64>(4)? as u32,
        mtime_ns: row.get(5)?,
    })
}

pub fn info(conn: &Connection, id: NodeId) -> Result<NodeInfo> {
    conn.prepare_cached("SELECT hash, digest, files, bytes, subdirs FROM nodes WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([id], |r| {
                Ok(NodeInfo {
                    id,
                    hash: digest_col(r, 0)?,
                    digest: digest_col(r, 1)?,
                    files: r.get::<_, i64>(2)? as u64,
                    bytes: r.get::<_, i64>(3)? as u64,
                    subdirs: r.get::<_, i64>(4)? as u64,
                })
            })
        })
        .optional()
        .ctx(|| format!("read tree node {id}"))?
        .ok_or_else(|| Error::Corrupt {
            what: "catalog".into(),
            why: format!("tree node {id} is missing"),
        })
}

/// The listing of one directory node, sorted by name. A node that no longer exists (collected
/// by `gc` under a reader that did not hold the store lock) is an error, never an empty list.
pub fn list(conn: &Connection, node: NodeId) -> Result<Vec<TreeEntry>> {
    info(conn, node)?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {ENTRY_COLUMNS} FROM node_entries WHERE node = ?1 ORDER BY name"
        ))
        .ctx(|| "prepare listing".into())?;
    let rows = stmt
        .query_map([node], entry_from_row)
        .ctx(|| format!("list tree node {node}"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .ctx(|| format!("list tree node {node}"))
}

/// Up to `limit` entries of a node's listing, in name order, after the name `after` (or from
/// the start), or skipping the first `skip` entries: listings are read a page at a time.
pub fn list_page(
    conn: &Connection,
    node: NodeId,
    from: Page<'_>,
    limit: usize,
) -> Result<Vec<TreeEntry>> {
    let ctx = || format!("list tree node {node}");
    let rows = match from {
        Page::After(name) => conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM node_entries WHERE node = ?1 AND name > ?2
                 ORDER BY name LIMIT ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![node, name, limit as i64], entry_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
        Page::Skip(skip) => conn
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM node_entries WHERE node = ?1
                 ORDER BY name LIMIT ?2 OFFSET ?3"
            ))
            .and_then(|mut s| {
                s.query_map(params![node, limit as i64, skip as i64], entry_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }),
    };
    rows.ctx(ctx)
}

/// Where a page of a listing starts.
#[derive(Clone, Copy, Debug)]
pub enum Page<'a> {
    After(&'a [u8]),
    Skip(u64),
}

pub fn lookup(conn: &Connection, node: NodeId, name: &[u8]) -> Result<Option<TreeEntry>> {
    conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM node_entries WHERE node = ?1 AND name = ?2"
    ))
    .and_then(|mut s| s.query_row(params![node, name], entry_from_row))
    .optional()
    .ctx(|| {
        format!(
            "look up {} in tree node {node}",
            String::from_utf8_lossy(name)
        )
    })
}

/// Stores a directory listing (sorted by name, names unique) and returns its node, reusing an
/// identical node if one exists.
pub fn insert(conn: &Connection, entries: &[TreeEntry]) -> Result<NodeInfo> {
    let (hash, digest, files, bytes) = tree::encode(entries, |child| info(conn, child))?;
    let subdirs = entries.iter().filter(|e| e.is_dir()).count() as u64;
    let existing: Option<NodeId> = conn
        .prepare_cached("SELECT id FROM nodes WHERE hash = ?1")
        .and_then(|mut s| s.query_row([&hash.0[..]], |r| r.get(0)))
        .optional()
        .ctx(|| "find tree node".into())?;
    if let Some(id) = existing {
        return Ok(NodeInfo {
            id,
            hash,
            digest,
            files,
            bytes,
            subdirs,
        });
    }
    conn.prepare_cached(
        "INSERT INTO nodes (hash, digest, files, bytes, subdirs) VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            &hash.0[..],
            &digest.0[..],
            files as i64,
            bytes as i64,
            subdirs as i64
        ])
    })
    .ctx(|| "insert tree node".into())?;
    let id = conn.last_insert_rowid();
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO node_entries (node, name, kind, blob, size, mode, mtime_ns, child, target)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .ctx(|| "prepare tree entry insert".into())?;
    for e in entries {
        let (kind, blob, size, child, target) = match &e.item {
            Item::File { blob, size } => (KIND_FILE, Some(&blob.0[..]), *size as i64, None, None),
            Item::Dir { node } => (KIND_DIR, None, 0, Some(*node), None),
            Item::Symlink { target } => (KIND_SYMLINK, None, 0, None, Some(&target[..])),
        };
        stmt.execute(params![
            id,
            &e.name,
            kind,
            blob,
            size,
            e.mode as i64,
            e.mtime_ns,
            child,
            target
        ])
        .ctx(|| format!("insert tree entry {}", String::from_utf8_lossy(&e.name)))?;
    }
    Ok(NodeInfo {
        id,
        hash,
        digest,
        files,
        bytes,
        subdirs,
    })
}

/// Deletes nodes that no version and no draft can reach. Returns how many were removed.
pub fn remove_unreachable(conn: &Connection) -> Result<usize> {
    conn.execute(
        "WITH RECURSIVE live(id) AS (
             SELECT root FROM versions
             UNION SELECT base_root FROM drafts WHERE base_root IS NOT NULL
             UNION SELECT moved FROM draft_entries WHERE moved IS NOT NULL
             UNION SELECT e.child FROM node_entries e JOIN live ON e.node = live.id
                   WHERE e.child IS NOT NULL
         )
         DELETE FROM nodes WHERE id NOT IN (SELECT id FROM live)",
        [],
    )
    .ctx(|| "remove unreachable tree nodes".into())
}

/// Collects every blob that a tree node or draft references into the temporary table
/// `live_blobs`, in one scan, so that [`blob_in_use`] is an index probe.
pub fn collect_live_blobs(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.live_blobs;
         CREATE TEMP TABLE live_blobs (blob BLOB PRIMARY KEY) WITHOUT ROWID;
         INSERT OR IGNORE INTO live_blobs
             SELECT blob FROM node_entries WHERE blob IS NOT NULL
             UNION ALL SELECT blob FROM draft_entries WHERE blob IS NOT NULL;",
    )
    .ctx(|| "collect referenced blobs".into())
}

/// Whether `blob` is in the set built by [`collect_live_blobs`].
pub fn blob_in_use(conn: &Connection, blob: &Digest) -> Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM temp.live_blobs WHERE blob = ?1)")
        .and_then(|mut s| s.query_row([&blob.0[..]], |r| r.get(0)))
        .ctx(|| format!("check references to blob {blob}"))
}

/// Every blob referenced by the trees under `roots` (or by every node when `roots` is None),
/// plus those referenced by drafts when `roots` is None.
pub fn referenced_blobs(conn: &Connection, roots: Option<&[NodeId]>) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let mut collect = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<()> {
        let mut stmt = conn.prepare(sql).ctx(|| "prepare blob listing".into())?;
        let rows = stmt
            .query_map(params, |r| digest_col(r, 0))
            .ctx(|| "list referenced blobs".into())?;
        for d in rows {
            out.push(d.ctx(|| "list referenced blobs".into())?);
        }
        Ok(())
    };
    match roots {
        None => collect(
            "SELECT blob FROM node_entries WHERE blob IS NOT NULL
             UNION SELECT blob FROM draft_entries WHERE blob IS NOT NULL",
            &[],
        )?,
        Some(roots) => {
            for root in roots {
                collect(
                    "WITH RECURSIVE sub(id) AS (
                         SELECT ?1 UNION SELECT e.child FROM node_entries e JOIN sub ON e.node = sub.id
                         WHERE e.child IS NOT NULL)
                     SELECT DISTINCT blob FROM node_entries WHERE blob IS NOT NULL
                         AND node IN (SELECT id FROM sub)",
                    &[root],
                )?;
            }
            out.sort();
            out.dedup();
        }
    }
    Ok(out)
}

/// Where damaged blobs are used: for each of `blobs`, the versions (as `NAME:vN`) with the
/// path that holds it, and the drafts (as `NAME` or `NAME@ID`) that reference it. One scan
/// of the tree entries however many blobs are asked about.
/// A use of a blob: the blob, a version reference or draft name, and the path in the version
/// (`None` for a draft).
pub type BlobUse = (Digest, String, Option<Vec<u8>>);

pub fn blob_users(conn: &Connection, blobs: &[Digest]) -> Result<Vec<BlobUse>> {
    let ctx = || "find where damaged blobs are used".to_string();
    conn.execute_batch(
        "DROP TABLE IF EXISTS temp.wanted_blobs;
         CREATE TEMP TABLE wanted_blobs (blob BLOB PRIMARY KEY) WITHOUT ROWID;",
    )
    .ctx(ctx)?;
    for b in blobs {
        conn.execute(
            "INSERT OR IGNORE INTO temp.wanted_blobs VALUES (?1)",
            [&b.0[..]],
        )
        .ctx(ctx)?;
    }
    let mut stmt = conn
        .prepare(
            "WITH RECURSIVE up(blob, node, path) AS (
                 SELECT blob, node, CAST(name AS BLOB) FROM node_entries
                  WHERE blob IN (SELECT blob FROM temp.wanted_blobs)
                 UNION
                 SELECT up.blob, e.node, CAST(e.name || X'2F' || up.path AS BLOB)
                   FROM node_entries e JOIN up ON e.child = up.node
             )
             SELECT up.blob, a.name || ':v' || v.number, up.path FROM up
               JOIN versions v ON v.root = up.node
               JOIN artifacts a ON a.id = v.artifact
             UNION
             SELECT e.blob,
                    CASE d.dist_id WHEN '' THEN d.artifact ELSE d.artifact || '@' || d.dist_id END, NULL
               FROM draft_entries e JOIN drafts d ON d.id = e.draft
              WHERE e.blob IN (SELECT blob FROM temp.wanted_blobs)
             UNION
             SELECT up.blob,
                    CASE d.dist_id WHEN '' THEN d.artifact ELSE d.artifact || '@' || d.dist_id END, NULL
               FROM up JOIN drafts d ON d.base_root = up.node
             ORDER BY 1, 2, 3",
        )
        .ctx(ctx)?;
    let rows = stmt
        .query_map([], |r| Ok((digest_col(r, 0)?, r.get(1)?, r.get(2)?)))
        .ctx(ctx)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().ctx(ctx)
}
