//! Storage of tree nodes: one `nodes` row per distinct directory listing. A listing is cut
//! into chunks, runs of consecutive entries, each stored once in `chunk_entries` however many
//! nodes share it; `node_chunks` lists a node's chunks by their first name. Listing a node is
//! one range scan of `node_chunks` joined to range scans of `chunk_entries`, in name order;
//! a lookup is a probe of each.
//!
//! Where a listing is cut depends on the names alone (see [`chunk_starts`]), so a commit that
//! changes one entry of a large directory changes one chunk and shares all the others with the
//! node it replaces. The cuts only decide how much is shared: any cut reads back the same.

use super::sql::{Db, DbError, DbResult, Dialect, Row};
use crate::params;
use sha2::{Digest as _, Sha256};

use crate::error::{CatalogContext, Error, Result};
use crate::hash::Digest;
use crate::reference::Reference;
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
    /// Reference entries in the whole subtree.
    pub references: u64,
}

/// One name in this many starts a chunk, on average...
const CHUNK_AVERAGE: u64 = 64;
/// ...and no chunk is longer than this, whatever the names.
const CHUNK_MAX: usize = 256;

/// The statements that read listings, in one place so that a test can check their plans.
#[derive(Clone, Copy, Debug)]
enum Read {
    /// Node ?1's whole listing.
    All,
    /// Up to ?3 entries of node ?1 after the name ?2: from the chunk that holds ?2 (or would),
    /// never from the start of the listing.
    After,
    /// Up to ?2 entries of node ?1 after skipping ?3.
    Skip,
    /// Name ?2 in node ?1.
    Lookup,
}

impl Read {
    fn sql(self) -> String {
        const COLUMNS: &str =
            "e.name, e.kind, e.blob, e.size, e.mode, e.mtime_ns, e.child, e.target";
        const JOIN: &str = "node_chunks c JOIN chunk_entries e ON e.chunk = c.chunk";
        const ORDER: &str = "ORDER BY c.first_name, e.name";
        const CHUNK_OF_NAME: &str = "SELECT first_name FROM node_chunks
             WHERE node = ?1 AND first_name <= ?2 ORDER BY first_name DESC LIMIT 1";
        match self {
            Read::All => format!("SELECT {COLUMNS} FROM {JOIN} WHERE c.node = ?1 {ORDER}"),
            Read::After => format!(
                "SELECT {COLUMNS} FROM {JOIN}
                  WHERE c.node = ?1 AND c.first_name >= coalesce(({CHUNK_OF_NAME}), X'')
                    AND e.name > ?2
                  {ORDER} LIMIT ?3"
            ),
            Read::Skip => {
                format!("SELECT {COLUMNS} FROM {JOIN} WHERE c.node = ?1 {ORDER} LIMIT ?2 OFFSET ?3")
            }
            Read::Lookup => format!(
                "SELECT {COLUMNS} FROM {JOIN}
                  WHERE c.node = ?1 AND c.first_name = ({CHUNK_OF_NAME}) AND e.name = ?2"
            ),
        }
    }
}

/// Where a sorted listing is cut into chunks: before each name whose hash is a multiple of
/// [`CHUNK_AVERAGE`], so that a cut stays with its name when entries are added or removed
/// before it, and after [`CHUNK_MAX`] entries without such a name. The hash must be the
/// same on every build and platform, or chunks would stop being shared across releases.
fn chunk_starts(entries: &[TreeEntry]) -> Vec<usize> {
    let mut starts = Vec::with_capacity(entries.len() / CHUNK_AVERAGE as usize + 1);
    for (i, e) in entries.iter().enumerate() {
        let h = Sha256::digest(&e.name);
        let h = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let run = i - starts.last().copied().unwrap_or(0);
        if starts.is_empty() || h % CHUNK_AVERAGE == 0 || run >= CHUNK_MAX {
            starts.push(i);
        }
    }
    starts
}

fn digest_col(row: &Row, idx: usize) -> DbResult<Digest> {
    let bytes: Vec<u8> = row.get(idx)?;
    Digest::from_slice(&bytes)
        .ok_or_else(|| DbError::Decode(format!("column {idx}: a digest is not 32 bytes")))
}

fn entry_from_row(row: &Row) -> DbResult<TreeEntry> {
    let kind: i64 = row.get(1)?;
    if let Some(r) = super::reference_of_row(row, kind, (2, 3, 7))? {
        return Ok(TreeEntry {
            name: row.get(0)?,
            item: Item::Reference(r),
            mode: row.get::<i64>(4)? as u32,
            mtime_ns: row.get(5)?,
        });
    }
    let item = match kind {
        KIND_FILE => Item::File {
            blob: digest_col(row, 2)?,
            size: row.get::<i64>(3)? as u64,
        },
        KIND_DIR => Item::Dir { node: row.get(6)? },
        _ => Item::Symlink {
            target: row.get(7)?,
        },
    };
    Ok(TreeEntry {
        name: row.get(0)?,
        item,
        mode: row.get::<i64>(4)? as u32,
        mtime_ns: row.get(5)?,
    })
}

/// A node's info from `hash, digest, files, bytes, subdirs` (no references counted).
fn info_from_row(r: &Row, id: NodeId) -> DbResult<NodeInfo> {
    Ok(NodeInfo {
        id,
        hash: digest_col(r, 0)?,
        digest: digest_col(r, 1)?,
        files: r.get::<i64>(2)? as u64,
        bytes: r.get::<i64>(3)? as u64,
        subdirs: r.get::<i64>(4)? as u64,
        references: 0,
    })
}

pub fn info(conn: &Db, id: NodeId) -> Result<NodeInfo> {
    conn.query_opt(
        "SELECT hash, digest, files, bytes, subdirs, refs FROM nodes WHERE id = ?1",
        params![id],
        |r| {
            Ok(NodeInfo {
                references: r.get::<i64>(5)? as u64,
                ..info_from_row(r, id)?
            })
        },
    )
    .ctx(|| format!("read tree node {id}"))?
    .ok_or_else(|| Error::Corrupt {
        what: "catalog".into(),
        why: format!("tree node {id} is missing"),
    })
}

/// The listing of one directory node, sorted by name. A node that no longer exists (collected
/// by `gc` under a reader that did not hold the store lock) is an error, never an empty list.
pub fn list(conn: &Db, node: NodeId) -> Result<Vec<TreeEntry>> {
    info(conn, node)?;
    conn.query(&Read::All.sql(), params![node], entry_from_row)
        .ctx(|| format!("list tree node {node}"))
}

/// Up to `limit` entries of a node's listing, in name order, after the name `after` (or from
/// the start), or skipping the first `skip` entries: listings are read a page at a time.
pub fn list_page(conn: &Db, node: NodeId, from: Page<'_>, limit: usize) -> Result<Vec<TreeEntry>> {
    let ctx = || format!("list tree node {node}");
    let rows = match from {
        Page::After(name) => conn.query(
            &Read::After.sql(),
            params![node, name, limit],
            entry_from_row,
        ),
        Page::Skip(skip) => conn.query(
            &Read::Skip.sql(),
            params![node, limit, skip],
            entry_from_row,
        ),
    };
    rows.ctx(ctx)
}

/// Where a page of a listing starts.
#[derive(Clone, Copy, Debug)]
pub enum Page<'a> {
    After(&'a [u8]),
    Skip(u64),
}

pub fn lookup(conn: &Db, node: NodeId, name: &[u8]) -> Result<Option<TreeEntry>> {
    conn.query_opt(&Read::Lookup.sql(), params![node, name], entry_from_row)
        .ctx(|| {
            format!(
                "look up {} in tree node {node}",
                String::from_utf8_lossy(name)
            )
        })
}

/// Stores a directory listing (sorted by name, names unique) and returns its node, reusing an
/// identical node if one exists, and each chunk of it that some other node already has.
pub fn insert(conn: &Db, entries: &[TreeEntry]) -> Result<NodeInfo> {
    let starts = chunk_starts(entries);
    let enc = tree::encode(entries, &starts, |child| info(conn, child))?;
    let subdirs = entries.iter().filter(|e| e.is_dir()).count() as u64;
    let node = |id| NodeInfo {
        id,
        hash: enc.hash,
        digest: enc.digest,
        files: enc.files,
        bytes: enc.bytes,
        subdirs,
        references: enc.references,
    };
    let existing: Option<NodeId> = conn
        .query_opt(
            "SELECT id FROM nodes WHERE hash = ?1",
            params![&enc.hash.0[..]],
            |r| r.get(0),
        )
        .ctx(|| "find tree node".into())?;
    if let Some(id) = existing {
        return Ok(node(id));
    }
    let id: NodeId = conn
        .query_one(
            "INSERT INTO nodes (hash, digest, files, bytes, subdirs, refs)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
            params![
                &enc.hash.0[..],
                &enc.digest.0[..],
                enc.files,
                enc.bytes,
                subdirs,
                enc.references
            ],
            |r| r.get(0),
        )
        .ctx(|| "insert tree node".into())?;
    for (i, (&start, hash)) in starts.iter().zip(&enc.chunks).enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(entries.len());
        let chunk = insert_chunk(conn, hash, &entries[start..end])?;
        conn.execute(
            "INSERT INTO node_chunks (node, first_name, chunk) VALUES (?1, ?2, ?3)",
            params![id, &entries[start].name, chunk],
        )
        .ctx(|| format!("insert chunk {i} of tree node {id}"))?;
    }
    Ok(node(id))
}

/// Stores a chunk unless one with the same hash exists; returns its id.
fn insert_chunk(conn: &Db, hash: &Digest, entries: &[TreeEntry]) -> Result<i64> {
    let existing: Option<i64> = conn
        .query_opt(
            "SELECT id FROM chunks WHERE hash = ?1",
            params![&hash.0[..]],
            |r| r.get(0),
        )
        .ctx(|| "find tree chunk".into())?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id: i64 = conn
        .query_one(
            "INSERT INTO chunks (hash) VALUES (?1) RETURNING id",
            params![&hash.0[..]],
            |r| r.get(0),
        )
        .ctx(|| "insert tree chunk".into())?;
    for e in entries {
        let (kind, blob, size, child, target) = match &e.item {
            Item::File { blob, size } => (KIND_FILE, Some(&blob.0[..]), *size as i64, None, None),
            Item::Dir { node } => (KIND_DIR, None, 0, Some(*node), None),
            Item::Symlink { target } => (KIND_SYMLINK, None, 0, None, Some(&target[..])),
            Item::Reference(r) => {
                let (kind, blob, size, uri) = super::reference_columns(r);
                (kind, Some(blob), size, None, Some(uri))
            }
        };
        conn.execute(
            "INSERT INTO chunk_entries (chunk, name, kind, blob, size, mode, mtime_ns, child, target)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![id, &e.name, kind, blob, size, e.mode, e.mtime_ns, child, target],
        )
        .ctx(|| format!("insert tree entry {}", String::from_utf8_lossy(&e.name)))?;
    }
    Ok(id)
}

/// Deletes nodes that no version and no draft can reach, then the chunks no remaining node
/// uses. Returns how many nodes were removed.
pub fn remove_unreachable(conn: &Db) -> Result<usize> {
    let nodes = conn
        .execute(
            "WITH RECURSIVE live(id) AS (
                 SELECT root FROM versions
                 UNION SELECT base_root FROM drafts WHERE base_root IS NOT NULL
                 UNION SELECT moved FROM draft_entries WHERE moved IS NOT NULL
                 UNION SELECT e.child FROM live
                         JOIN node_chunks c ON c.node = live.id
                         JOIN chunk_entries e ON e.chunk = c.chunk
                        WHERE e.child IS NOT NULL
             )
             DELETE FROM nodes WHERE id NOT IN (SELECT id FROM live)",
            params![],
        )
        .ctx(|| "remove unreachable tree nodes".into())?;
    conn.execute(
        "DELETE FROM chunks WHERE id NOT IN (SELECT chunk FROM node_chunks)",
        params![],
    )
    .ctx(|| "remove unused tree chunks".into())?;
    Ok(nodes)
}

/// Collects every blob that a tree node or draft references into the temporary table
/// `live_blobs`, in one scan, so that [`blob_in_use`] is an index probe.
pub fn collect_live_blobs(conn: &Db) -> Result<()> {
    conn.execute_batch(&format!(
        "{}
         INSERT INTO {} (key)
             SELECT blob FROM chunk_entries WHERE blob IS NOT NULL AND kind < 5
             UNION SELECT blob FROM draft_entries WHERE blob IS NOT NULL AND kind < 5
         ON CONFLICT DO NOTHING;",
        temp_keys(conn, "live_blobs"),
        temp_name(conn, "live_blobs")
    ))
    .ctx(|| "collect referenced blobs".into())
}

/// Whether `blob` is in the set built by [`collect_live_blobs`].
pub fn blob_in_use(conn: &Db, blob: &Digest) -> Result<bool> {
    conn.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE key = ?1)",
            temp_name(conn, "live_blobs")
        ),
        params![&blob.0[..]],
        |r| r.get(0),
    )
    .ctx(|| format!("check references to blob {blob}"))
}

/// A temporary table of this connection holding a set of keys, made empty.
fn temp_keys(conn: &Db, name: &str) -> String {
    match conn.dialect() {
        Dialect::Sqlite => format!(
            "DROP TABLE IF EXISTS temp.{name};
             CREATE TEMP TABLE {name} (key BLOB PRIMARY KEY) WITHOUT ROWID;"
        ),
        Dialect::Postgres => format!(
            "CREATE TEMP TABLE IF NOT EXISTS {name} (key BYTEA PRIMARY KEY);
             TRUNCATE pg_temp.{name};"
        ),
    }
}

/// How queries name temporary table `name`.
fn temp_name(conn: &Db, name: &str) -> String {
    match conn.dialect() {
        Dialect::Sqlite => format!("temp.{name}"),
        Dialect::Postgres => format!("pg_temp.{name}"),
    }
}

/// `sub`: node ?1 and every node below it; `IN_SUBTREE` keeps the chunk entries of those.
/// (The cast gives the parameter its type: PostgreSQL would take it for text.)
const SUBTREE: &str = "WITH RECURSIVE sub(id) AS (
         SELECT CAST(?1 AS BIGINT)
         UNION SELECT e.child FROM sub
                 JOIN node_chunks c ON c.node = sub.id
                 JOIN chunk_entries e ON e.chunk = c.chunk
                WHERE e.child IS NOT NULL)";
const IN_SUBTREE: &str =
    "chunk IN (SELECT chunk FROM node_chunks WHERE node IN (SELECT id FROM sub))";

/// Every blob referenced by the trees under `roots` (or by every node when `roots` is None),
/// plus those referenced by drafts when `roots` is None.
pub fn referenced_blobs(conn: &Db, roots: Option<&[NodeId]>) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    let mut collect = |sql: &str, params: &[super::sql::Param]| -> Result<()> {
        conn.query_each(sql, params, &mut |r| {
            out.push(digest_col(r, 0)?);
            Ok(())
        })
        .ctx(|| "list referenced blobs".into())
    };
    match roots {
        None => collect(
            "SELECT blob FROM chunk_entries WHERE blob IS NOT NULL AND kind < 5
             UNION SELECT blob FROM draft_entries WHERE blob IS NOT NULL AND kind < 5",
            params![],
        )?,
        Some(roots) => {
            for root in roots {
                collect(
                    &format!(
                        "{SUBTREE} SELECT DISTINCT blob FROM chunk_entries
                          WHERE blob IS NOT NULL AND kind < 5 AND {IN_SUBTREE}"
                    ),
                    params![*root],
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

pub fn blob_users(conn: &Db, blobs: &[Digest]) -> Result<Vec<BlobUse>> {
    let keys: Vec<&[u8]> = blobs.iter().map(|b| &b.0[..]).collect();
    let rows = users(conn, "e.blob", "e.kind < 5", &keys)?;
    rows.into_iter()
        .map(|(k, r, p)| {
            let d = Digest::from_slice(&k).ok_or_else(|| Error::Corrupt {
                what: "catalog".into(),
                why: "a blob digest is not 32 bytes".into(),
            })?;
            Ok((d, r, p))
        })
        .collect()
}

/// A use of a recorded reference: its [`reference_key`], a version reference or draft name,
/// and the path in the version (`None` for a draft).
pub type ReferenceUse = (Vec<u8>, String, Option<Vec<u8>>);

/// What tells recorded references apart: URI, digest and mtime (as `reference_key_sql`).
pub fn reference_key(r: &Reference, mtime_ns: i64) -> Vec<u8> {
    format!("{} {}:{mtime_ns}", r.uri, r.digest.to_hex().to_uppercase()).into_bytes()
}

/// [`reference_key`] of an entry `e`, in SQL.
fn reference_key_sql(conn: &Db) -> &'static str {
    match conn.dialect() {
        Dialect::Sqlite => "CAST(e.target || ' ' || hex(e.blob) || ':' || e.mtime_ns AS BLOB)",
        Dialect::Postgres => {
            "e.target || convert_to(' ' || upper(encode(e.blob, 'hex')) || ':' || e.mtime_ns, 'UTF8')"
        }
    }
}

/// Where the references recorded as `keys` ([`reference_key`]) are used, as [`blob_users`]
/// says for blobs: a file changed since one version recorded it is not blamed on another
/// version that recorded it as it is now.
pub fn reference_users(conn: &Db, keys: &[Vec<u8>]) -> Result<Vec<ReferenceUse>> {
    let keys: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
    users(conn, reference_key_sql(conn), "e.kind IN (5, 6)", &keys)
}

/// A use of an entry found by key: the key, then as in [`BlobUse`].
type KeyUse = (Vec<u8>, String, Option<Vec<u8>>);

/// The versions (with paths) and drafts whose entries have `key` (a column of the entry
/// `e`, among entries matching `filter`) equal to one of `keys`, ordered by key.
fn users(conn: &Db, key: &str, filter: &str, keys: &[&[u8]]) -> Result<Vec<KeyUse>> {
    let ctx = || "find where damaged content is used".to_string();
    conn.execute_batch(&temp_keys(conn, "wanted_keys"))
        .ctx(ctx)?;
    let wanted = temp_name(conn, "wanted_keys");
    for k in keys {
        conn.execute(
            &format!("INSERT INTO {wanted} (key) VALUES (?1) ON CONFLICT DO NOTHING"),
            params![*k],
        )
        .ctx(ctx)?;
    }
    // A path is built as bytes: names joined by '/'.
    let (name, joined) = match conn.dialect() {
        Dialect::Sqlite => (
            "CAST(e.name AS BLOB)",
            "CAST(e.name || X'2F' || up.path AS BLOB)",
        ),
        Dialect::Postgres => ("e.name", "e.name || '\\x2f'::bytea || up.path"),
    };
    conn.query(&format!(
            "WITH RECURSIVE up(key, node, path) AS (
                 SELECT {key}, c.node, {name}
                   FROM chunk_entries e JOIN node_chunks c ON c.chunk = e.chunk
                  WHERE {filter} AND {key} IN (SELECT key FROM {wanted})
                 UNION
                 SELECT up.key, c.node, {joined}
                   FROM up
                   JOIN chunk_entries e ON e.child = up.node
                   JOIN node_chunks c ON c.chunk = e.chunk
             )
             SELECT up.key, a.name || ':v' || v.number, up.path FROM up
               JOIN versions v ON v.root = up.node
               JOIN artifacts a ON a.id = v.artifact
             UNION
             SELECT {key},
                    CASE d.dist_id WHEN '' THEN d.artifact ELSE d.artifact || '@' || d.dist_id END, NULL
               FROM draft_entries e JOIN drafts d ON d.id = e.draft
              WHERE {filter} AND {key} IN (SELECT key FROM {wanted})
             UNION
             SELECT up.key,
                    CASE d.dist_id WHEN '' THEN d.artifact ELSE d.artifact || '@' || d.dist_id END, NULL
               FROM up JOIN drafts d ON d.base_root = up.node
             ORDER BY 1, 2, 3"
        ), params![], |r| Ok((r.get::<Vec<u8>>(0)?, r.get(1)?, r.get(2)?))).ctx(ctx)
}

/// Every distinct reference (with the mtime recorded for it) in the trees under `roots`, or
/// in every node and draft when `roots` is None.
pub fn references(conn: &Db, roots: Option<&[NodeId]>) -> Result<Vec<(Reference, i64)>> {
    const COLUMNS: &str = "kind, blob, size, target, mtime_ns";
    let sql = match roots {
        None => format!(
            "SELECT DISTINCT {COLUMNS} FROM chunk_entries WHERE kind IN (5, 6)
             UNION SELECT {COLUMNS} FROM draft_entries WHERE kind IN (5, 6)"
        ),
        Some(_) => format!(
            "{SUBTREE} SELECT DISTINCT {COLUMNS} FROM chunk_entries
              WHERE kind IN (5, 6) AND {IN_SUBTREE}"
        ),
    };
    let ctx = || "list references".to_string();
    let mut out = Vec::new();
    let mut each = |params: &[super::sql::Param]| -> Result<()> {
        conn.query_each(&sql, params, &mut |r| {
            let kind: i64 = r.get(0)?;
            let reference = super::reference_of_row(r, kind, (1, 2, 3))?
                .expect("the query selects references only");
            out.push((reference, r.get::<i64>(4)?));
            Ok(())
        })
        .ctx(ctx)
    };
    match roots {
        None => each(params![])?,
        Some(roots) => {
            for root in roots {
                each(params![*root])?;
            }
        }
    }
    out.sort_by(|a, b| (&a.0.uri, a.1).cmp(&(&b.0.uri, b.1)));
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, MIGRATIONS};

    fn catalog() -> (tempfile::TempDir, Catalog) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        (dir, catalog)
    }

    fn file(name: &str, content: &str) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            item: Item::File {
                blob: Digest::of(content.as_bytes()),
                size: content.len() as u64,
            },
            mode: 0o644,
            mtime_ns: 1,
        }
    }

    /// `n` entries named f00000, f00001, …: mostly files, some symlinks and directories
    /// (empty ones, stored first).
    fn listing(c: &mut Catalog, n: usize) -> Vec<TreeEntry> {
        let empty = c.write(|tx| insert(tx, &[])).unwrap().id;
        (0..n)
            .map(|i| {
                let name = format!("f{i:05}");
                match i % 500 {
                    7 => TreeEntry {
                        item: Item::Dir { node: empty },
                        mode: 0o755,
                        ..file(&name, "")
                    },
                    11 => TreeEntry {
                        item: Item::Symlink {
                            target: b"../x".to_vec(),
                        },
                        mode: 0o777,
                        ..file(&name, "")
                    },
                    _ => file(&name, &name),
                }
            })
            .collect()
    }

    fn count(conn: &Db, table: &str) -> i64 {
        conn.query_one(&format!("SELECT count(*) FROM {table}"), params![], |r| {
            r.get(0)
        })
        .unwrap()
    }

    fn chunks_of(conn: &Db, node: NodeId) -> Vec<i64> {
        conn.query(
            "SELECT chunk FROM node_chunks WHERE node = ?1 ORDER BY first_name",
            params![node],
            |r| r.get(0),
        )
        .unwrap()
    }

    fn store(c: &mut Catalog, entries: &[TreeEntry]) -> NodeInfo {
        c.write(|tx| insert(tx, entries)).unwrap()
    }

    fn with_suffix(name: &[u8], suffix: &str) -> Vec<u8> {
        [name, suffix.as_bytes()].concat()
    }

    #[test]
    fn listings_read_back_whatever_the_chunks() {
        let (_dir, mut c) = catalog();
        let entries = listing(&mut c, 5000);
        let node = store(&mut c, &entries).id;
        let conn = c.conn();
        let starts = chunk_starts(&entries);
        assert!(starts.len() > 20, "{} chunks", starts.len());
        let ends = starts.iter().skip(1).copied().chain([entries.len()]);
        assert!(starts.iter().zip(ends).all(|(s, e)| e - s <= CHUNK_MAX));
        assert_eq!(chunks_of(conn, node).len(), starts.len());

        assert_eq!(list(conn, node).unwrap(), entries);
        let limit = 50;
        let mut places: Vec<usize> = starts
            .iter()
            .flat_map(|&s| [s.saturating_sub(1), s, s + 1])
            .collect();
        places.extend([entries.len() - 1, entries.len(), entries.len() + 10]);
        for &k in &places {
            let want = &entries[k.min(entries.len())..(k + limit).min(entries.len())];
            let page = list_page(conn, node, Page::Skip(k as u64), limit).unwrap();
            assert_eq!(page, want, "skip {k}");
            if let Some(e) = entries.get(k) {
                let want = &entries[k + 1..(k + 1 + limit).min(entries.len())];
                let page = list_page(conn, node, Page::After(&e.name), limit).unwrap();
                assert_eq!(page, want, "after {k}");
                // A name that is not there, just after this one.
                let absent = with_suffix(&e.name, "~");
                let page = list_page(conn, node, Page::After(&absent), limit).unwrap();
                assert_eq!(page, want, "after {k}~");
                assert_eq!(lookup(conn, node, &absent).unwrap(), None);
            }
        }
        for before in [&b""[..], b"a", b"f"] {
            let page = list_page(conn, node, Page::After(before), limit).unwrap();
            assert_eq!(page, &entries[..limit], "after {before:?}");
            assert_eq!(lookup(conn, node, before).unwrap(), None);
        }
        for beyond in [&b"f04999"[..], b"f9", b"g"] {
            assert!(
                list_page(conn, node, Page::After(beyond), limit)
                    .unwrap()
                    .is_empty()
            );
        }
        assert_eq!(lookup(conn, node, b"g").unwrap(), None);

        // Paging by name through the whole listing reads every entry once.
        let mut paged = Vec::new();
        loop {
            let from = paged.last().map(|e: &TreeEntry| Page::After(&e.name));
            let page = list_page(conn, node, from.unwrap_or(Page::Skip(0)), 97).unwrap();
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(paged, entries);

        for e in &entries {
            assert_eq!(lookup(conn, node, &e.name).unwrap().as_ref(), Some(e));
        }

        // Empty directories have no chunks and list as empty.
        let empty = store(&mut c, &[]).id;
        assert!(list(c.conn(), empty).unwrap().is_empty());
        assert!(chunks_of(c.conn(), empty).is_empty());
        assert_eq!(lookup(c.conn(), empty, b"f00000").unwrap(), None);
    }

    #[test]
    fn a_changed_entry_makes_one_new_chunk() {
        let (_dir, mut c) = catalog();
        let entries = listing(&mut c, 5000);
        let a = store(&mut c, &entries);
        let rows = count(c.conn(), "chunk_entries");
        assert_eq!(rows, 5000);

        let mut changed = entries.clone();
        changed[2500] = file("f02500", "new content");
        let b = store(&mut c, &changed);
        assert_ne!(a.id, b.id);
        let added = count(c.conn(), "chunk_entries") - rows;
        assert!((1..=CHUNK_MAX as i64).contains(&added), "{added} new rows");
        let (ca, cb) = (chunks_of(c.conn(), a.id), chunks_of(c.conn(), b.id));
        assert_eq!(ca.len(), cb.len());
        let differ = ca.iter().zip(&cb).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 1);
        assert_eq!(list(c.conn(), b.id).unwrap(), changed);

        // An added or removed entry may move a cut: at most two chunks change.
        let rows = count(c.conn(), "chunk_entries");
        let mut grown = entries.clone();
        grown.insert(1235, file("f01234x", "x"));
        let g = store(&mut c, &grown);
        let mut shrunk = entries.clone();
        shrunk.remove(3000);
        let s = store(&mut c, &shrunk);
        let added = count(c.conn(), "chunk_entries") - rows;
        assert!(added <= 4 * CHUNK_MAX as i64, "{added} new rows");
        assert_eq!(list(c.conn(), g.id).unwrap(), grown);
        assert_eq!(list(c.conn(), s.id).unwrap(), shrunk);

        // The same listing again is the same node, and stores nothing.
        let rows = count(c.conn(), "chunk_entries");
        assert_eq!(store(&mut c, &entries), a);
        assert_eq!(count(c.conn(), "chunk_entries"), rows);
    }

    #[test]
    fn gc_removes_the_chunks_no_node_uses() {
        let (_dir, mut c) = catalog();
        let entries = listing(&mut c, 3000);
        let a = store(&mut c, &entries);
        let sub = store(&mut c, &[file("only-in-b", "b")]);
        let mut changed = entries.clone();
        changed[10] = TreeEntry {
            item: Item::Dir { node: sub.id },
            ..entries[10].clone()
        };
        let b = store(&mut c, &changed);
        let a_chunks = chunks_of(c.conn(), a.id);
        let b_only: Vec<i64> = chunks_of(c.conn(), b.id)
            .into_iter()
            .filter(|x| !a_chunks.contains(x))
            .collect();
        assert_eq!(b_only.len(), 1);

        // A draft based on `a` keeps it (and its empty subdirectories) alive.
        c.conn()
            .execute(
                "INSERT INTO drafts (artifact, created_ns, base_root) VALUES ('x', 0, ?1)",
                params![a.id],
            )
            .unwrap();
        assert_eq!(c.write(remove_unreachable).unwrap(), 2);
        let conn = c.conn();
        assert_eq!(list(conn, a.id).unwrap(), entries);
        assert!(list(conn, b.id).is_err());
        assert_eq!(count(conn, "chunks"), a_chunks.len() as i64);
        assert_eq!(count(conn, "chunk_entries"), 3000);
        let gone: i64 = conn
            .query_one(
                &format!("SELECT count(*) FROM chunks WHERE id = {}", b_only[0]),
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(gone, 0);
        let mut check = c
            .sqlite()
            .unwrap()
            .prepare("PRAGMA foreign_key_check")
            .unwrap();
        assert!(!check.exists([]).unwrap(), "dangling references after gc");
        drop(check);

        c.conn().execute("DELETE FROM drafts", params![]).unwrap();
        // `a` and the empty directory its entries point at.
        assert_eq!(c.write(remove_unreachable).unwrap(), 2);
        for table in ["nodes", "chunks", "chunk_entries", "node_chunks"] {
            assert_eq!(count(c.conn(), table), 0, "{table}");
        }
    }

    #[test]
    fn reads_are_index_searches_without_sorting() {
        let (_dir, c) = catalog();
        for read in [Read::All, Read::After, Read::Skip, Read::Lookup] {
            let mut s = c
                .sqlite()
                .unwrap()
                .prepare(&format!("EXPLAIN QUERY PLAN {}", read.sql()))
                .unwrap();
            let nulls = vec![rusqlite::types::Null; s.parameter_count()];
            let plan: Vec<String> = s
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get(3))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            for step in &plan {
                assert!(
                    !step.contains("TEMP B-TREE") && !step.starts_with("SCAN"),
                    "{read:?}: {plan:#?}"
                );
            }
            let searches = plan
                .iter()
                .filter(|p| p.starts_with("SEARCH") && p.contains("USING PRIMARY KEY"))
                .count();
            assert!(searches >= 2, "{read:?}: {plan:#?}");
            // A page after a name starts at that name's chunk, however far into the listing.
            if matches!(read, Read::After | Read::Lookup) {
                assert!(
                    plan.iter()
                        .any(|p| p.starts_with("SEARCH c") && p.contains("(node=? AND first_name")),
                    "{read:?}: {plan:#?}"
                );
            }
        }
    }

    /// Stores a node as schema 2 did: all its entries in `node_entries`.
    fn insert_v2(conn: &Db, entries: &[TreeEntry]) -> NodeInfo {
        let e = tree::encode(entries, &[0], |child| Ok(info_v2(conn, child))).unwrap();
        let subdirs = entries.iter().filter(|e| e.is_dir()).count() as i64;
        let id: NodeId = conn
            .query_one(
                "INSERT INTO nodes (hash, digest, files, bytes, subdirs) VALUES (?1, ?2, ?3, ?4, ?5)
                 RETURNING id",
                params![&e.hash.0[..], &e.digest.0[..], e.files, e.bytes, subdirs],
                |r| r.get(0),
            )
            .unwrap();
        for e in entries {
            let (kind, blob, size, child, target) = match &e.item {
                Item::File { blob, size } => (0, Some(&blob.0[..]), *size as i64, None, None),
                Item::Dir { node } => (1, None, 0, Some(*node), None),
                Item::Symlink { target } => (2, None, 0, None, Some(&target[..])),
                Item::Reference(_) => unreachable!("schema 2 had no references"),
            };
            conn.execute(
                "INSERT INTO node_entries (node, name, kind, blob, size, mode, mtime_ns, child, target)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![id, &e.name, kind, blob, size, e.mode as i64, e.mtime_ns, child, target],
            )
            .unwrap();
        }
        info_v2(conn, id)
    }

    /// A node's info as schema 2 kept it (no reference count: there were no references).
    fn info_v2(conn: &Db, id: NodeId) -> NodeInfo {
        conn.query_one(
            "SELECT hash, digest, files, bytes, subdirs FROM nodes WHERE id = ?1",
            params![id],
            |r| info_from_row(r, id),
        )
        .unwrap()
    }

    #[test]
    fn schema_2_listings_become_one_chunk_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        let empty = insert_v2(&conn, &[]);
        let sub = vec![
            TreeEntry {
                item: Item::Dir { node: empty.id },
                ..file("empty", "")
            },
            file("x", "x"),
        ];
        let sub_node = insert_v2(&conn, &sub);
        let mut root: Vec<TreeEntry> = (0..600).map(|i| file(&format!("r{i:03}"), "r")).collect();
        root.push(TreeEntry {
            item: Item::Dir { node: sub_node.id },
            ..file("sub", "")
        });
        let root_node = insert_v2(&conn, &root);
        drop(conn);

        let mut c = Catalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let conn = c.conn();
        for (node, entries) in [(&root_node, &root), (&sub_node, &sub)] {
            assert_eq!(info(conn, node.id).unwrap(), *node);
            assert_eq!(list(conn, node.id).unwrap(), *entries);
            assert_eq!(chunks_of(conn, node.id).len(), 1);
            for e in entries.iter() {
                assert_eq!(lookup(conn, node.id, &e.name).unwrap().as_ref(), Some(e));
            }
            assert_eq!(lookup(conn, node.id, b"a").unwrap(), None);
            assert_eq!(lookup(conn, node.id, b"zz").unwrap(), None);
            let page = list_page(conn, node.id, Page::After(&entries[0].name), 10).unwrap();
            assert_eq!(page, &entries[1..entries.len().min(11)]);
            let hash: Vec<u8> = conn
                .query_one(
                    "SELECT h.hash FROM node_chunks c JOIN chunks h ON h.id = c.chunk
                      WHERE c.node = ?1",
                    params![node.id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(hash, [&[0][..], &node.hash.0].concat());
        }
        assert!(list(conn, empty.id).unwrap().is_empty());
        assert_eq!(count(conn, "chunk_entries"), 603);
        let tables: i64 = conn
            .query_one(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'node_entries%'",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);

        // The same listing stored again is the migrated node; a changed one is new nodes
        // made of new chunks, and gc then drops the migrated ones.
        assert_eq!(store(&mut c, &root), root_node);
        let mut changed = root.clone();
        changed[300] = file("r300", "changed");
        let new_root = store(&mut c, &changed);
        assert_eq!(list(c.conn(), new_root.id).unwrap(), changed);
        c.conn()
            .execute(
                "INSERT INTO drafts (artifact, created_ns, base_root) VALUES ('x', 0, ?1)",
                params![new_root.id],
            )
            .unwrap();
        assert_eq!(c.write(remove_unreachable).unwrap(), 1);
        assert_eq!(list(c.conn(), sub_node.id).unwrap(), sub);
        assert_eq!(count(c.conn(), "chunk_entries"), 601 + 2);
    }
}
