//! `artifactfs copy-store SRC DEST`: moving an embedded store into a shared one (or a shared
//! store's content into a new embedded one). Every blob is stored in DEST first (uploaded, for
//! a shared store; downloaded from a shared SRC), then the whole catalog is copied in one
//! transaction, row by row with the same ids, so version numbers, aliases, metadata, trees,
//! drafts and seals are as they were; drafts' files written through a mount come along to
//! DEST's staging directory on this host. DEST's catalog must be empty: nothing is merged.

use std::fs;
use std::path::Path;

use crate::catalog::sql::Param;
use crate::catalog::{Db, Dialect};
use crate::error::{CatalogContext, Error, IoContext, Result};
use crate::params;
use crate::store::Store;

/// Every catalog table with its columns, parents before children so that every reference
/// points at a row already copied.
const TABLES: &[(&str, &str)] = &[
    ("nodes", "id, hash, digest, files, bytes, subdirs, refs"),
    ("chunks", "id, hash"),
    (
        "chunk_entries",
        "chunk, name, kind, blob, size, mode, mtime_ns, child, target",
    ),
    ("node_chunks", "node, first_name, chunk"),
    ("artifacts", "id, name, type, created_ns, next_number"),
    (
        "versions",
        "id, artifact, number, root, digest, base_number, description, metadata, created_ns",
    ),
    ("aliases", "artifact, name, version"),
    (
        "drafts",
        "id, artifact, dist_id, type, base_number, base_root, created_ns, root_mode, \
         root_mtime_ns, root_atime_ns, root_ctime_ns, owner_uid, owner_gid",
    ),
    (
        "draft_entries",
        "draft, parent, name, kind, blob, size, mode, mtime_ns, target, opaque, staged, moved, \
         atime_ns, ctime_ns, owner_uid, owner_gid, copied_ctime_ns",
    ),
    ("seals", "artifact, dist_id, number"),
];

const BLOBS_PER_BATCH: u64 = 1000;

/// Tables whose ids a sequence hands out (PostgreSQL): it must continue after the copied ones.
const SERIAL: &[&str] = &["nodes", "chunks", "artifacts", "versions", "drafts"];

/// What was copied.
#[derive(Debug, Default)]
pub struct Copied {
    pub blobs: u64,
    pub rows: u64,
    pub staged: u64,
    pub artifacts: u64,
    pub versions: u64,
    pub drafts: u64,
}

pub fn copy_store(src: &mut Store, dest: &mut Store) -> Result<Copied> {
    dest.catalog.check_writable()?;
    let what = || {
        format!(
            "copy {} into {}",
            src.root().display(),
            dest.root().display()
        )
    };
    let empty: i64 = dest
        .conn()
        .query_one(
            "SELECT (SELECT count(*) FROM artifacts) + (SELECT count(*) FROM drafts)",
            params![],
            |r| r.get(0),
        )
        .ctx(what)?;
    if empty != 0 {
        return Err(Error::refused(
            what(),
            format!(
                "store {} already holds artifacts or drafts; copy into a new store",
                dest.root().display()
            ),
        ));
    }
    let mut copied = Copied::default();
    // The content first: no row may refer to a blob DEST does not have.
    let lock = src.shared_lock()?;
    let mut batch = dest.blobs.batch();
    let mut add = |path: &Path, len: u64| -> Result<()> {
        batch.add_file(path, len)?;
        copied.blobs += 1;
        // Stored (and uploaded) a part at a time, so a big store needs no room for all of
        // it at once on this host.
        if copied.blobs % BLOBS_PER_BATCH == 0 {
            std::mem::replace(&mut batch, dest.blobs.batch()).finish()?;
        }
        Ok(())
    };
    match (src.blobs.objects(), src.blobs.cache()) {
        // A shared store's side holds only what this host happened to cache: every blob its
        // catalog refers to is downloaded (and checked) instead, one at a time.
        (Some(objects), Some(cache)) => {
            for digest in crate::catalog::nodes::referenced_blobs(src.conn(), None)? {
                let cached = cache.fetch(objects, &digest, None)?;
                add(cached.path(), cached.size())?;
            }
        }
        _ => src.blobs.for_each_stored(|digest| {
            let path = src.blobs.path(&digest);
            let len = fs::metadata(&path).at(&path)?.len();
            add(&path, len)
        })?,
    }
    batch.finish()?;
    let source = src.conn();
    dest.catalog.write(|tx| {
        for (table, columns) in TABLES {
            copied.rows += copy_table(source, tx, table, columns)?;
        }
        if tx.dialect() == Dialect::Postgres {
            for table in SERIAL {
                tx.execute_batch(&format!(
                    "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                                   coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                ))
                .ctx(|| format!("continue the ids of {table}"))?;
            }
        }
        let count = |table: &str| -> Result<u64> {
            tx.query_one(&format!("SELECT count(*) FROM {table}"), params![], |r| {
                r.get::<i64>(0)
            })
            .map(|n| n as u64)
            .ctx(|| format!("count {table}"))
        };
        copied.artifacts = count("artifacts")?;
        copied.versions = count("versions")?;
        copied.drafts = count("drafts")?;
        Ok(())
    })?;
    drop(lock);
    copied.staged = copy_staged(src.root(), dest.root())?;
    Ok(copied)
}

/// Copies every row of `table` from `from` to `to`; returns how many.
fn copy_table(from: &Db, to: &Db, table: &str, columns: &str) -> Result<u64> {
    let n = columns.split(',').count();
    let placeholders: Vec<String> = (1..=n).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({columns}) VALUES ({})",
        placeholders.join(", ")
    );
    let mut rows = 0;
    let mut failed = None;
    from.query_each(
        &format!("SELECT {columns} FROM {table}"),
        params![],
        &mut |row| {
            let params: Vec<Param> = row.values().iter().map(|v| v.as_param()).collect();
            if let Err(e) = to.execute(&insert, &params) {
                failed = Some(e);
                return Err(crate::catalog::DbError::Decode("stopped".into()));
            }
            rows += 1;
            Ok(())
        },
    )
    .map_err(|e| failed.take().unwrap_or(e))
    .ctx(|| format!("copy table {table}"))?;
    Ok(rows)
}

/// Drafts' files written through a mount: they live on the host that wrote them.
fn copy_staged(src: &Path, dest: &Path) -> Result<u64> {
    let (from, to) = (src.join("staged"), dest.join("staged"));
    let mut n = 0;
    let Ok(drafts) = fs::read_dir(&from) else {
        return Ok(0);
    };
    for draft in drafts {
        let draft = draft.at(&from)?.path();
        if !draft.is_dir() {
            continue;
        }
        let into = to.join(draft.file_name().expect("a directory entry has a name"));
        fs::create_dir_all(&into).at(&into)?;
        for file in fs::read_dir(&draft).at(&draft)? {
            let file = file.at(&draft)?.path();
            let name = file.file_name().expect("a directory entry has a name");
            // Only staged files (numbers): not the lock file or leftovers.
            if name.to_str().is_some_and(|n| n.parse::<i64>().is_ok()) {
                let target = into.join(name);
                fs::copy(&file, &target).at(&target)?;
                let m = fs::metadata(&file).at(&file)?;
                let f = fs::File::options().write(true).open(&target).at(&target)?;
                f.set_modified(m.modified().at(&file)?).at(&target)?;
                n += 1;
            }
        }
        crate::blobs::sync_dir(&into)?;
    }
    Ok(n)
}
