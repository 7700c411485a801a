//! The catalog: the single source of truth for artifacts, versions, aliases, manifest trees
//! and drafts. The queries (`drafts`, `nodes`, `versions`) are written once over the seam in
//! `sql`; below it, SQLite keeps an embedded store's catalog in one file, and PostgreSQL a
//! shared store's. Every change is one transaction that writers take one at a time: SQLite's
//! IMMEDIATE transactions, PostgreSQL's store-wide lock; concurrent writers queue (bounded by
//! `BUSY_TIMEOUT`) instead of failing.

pub mod postgres;
mod schema;
pub mod sql;
mod sqlite;

pub mod drafts;
pub mod nodes;
pub mod runs;
pub mod versions;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use sql::{Db, DbError, DbResult, Dialect};

use crate::error::{Error, Result};
use crate::hash::Digest;
use crate::reference::Reference;

pub use schema::{MIGRATIONS, PG_MIGRATIONS};

/// Entry kinds that mean the same in tree and draft entries (the others differ). SQL that
/// must tell references from blobs spells them out: `kind < 5` for blobs, `IN (5, 6)`.
const KIND_REFERENCE: i64 = 5;
const KIND_UNCHECKED_REFERENCE: i64 = 6;

/// A reference entry's kind and the values of its `blob`, `size` and `target` columns.
fn reference_columns(r: &Reference) -> (i64, &[u8], i64, &[u8]) {
    let kind = if r.checksum {
        KIND_REFERENCE
    } else {
        KIND_UNCHECKED_REFERENCE
    };
    (kind, &r.digest.0[..], r.size as i64, r.uri.as_bytes())
}

/// The reference in a row of kind `kind`, if it is one; `cols` are the indices of the
/// `blob`, `size` and `target` columns.
fn reference_of_row(
    row: &sql::Row,
    kind: i64,
    cols: (usize, usize, usize),
) -> DbResult<Option<Reference>> {
    if kind != KIND_REFERENCE && kind != KIND_UNCHECKED_REFERENCE {
        return Ok(None);
    }
    let bad = |idx, why: &str| DbError::Decode(format!("column {idx}: {why}"));
    let blob: Vec<u8> = row.get(cols.0)?;
    let uri: Vec<u8> = row.get(cols.2)?;
    Ok(Some(Reference {
        digest: Digest::from_slice(&blob).ok_or_else(|| bad(cols.0, "digest is not 32 bytes"))?,
        size: row.get::<i64>(cols.1)? as u64,
        uri: String::from_utf8(uri).map_err(|_| bad(cols.2, "reference URI is not UTF-8"))?,
        checksum: kind == KIND_REFERENCE,
    }))
}

/// The store a catalog connection belongs to, for naming it in errors.
pub fn store_of(conn: &Db) -> String {
    conn.store()
}

/// Something of the store `conn` belongs to that is not there, with a hint.
pub fn absent(conn: &Db, what: String, hint: Option<String>) -> Error {
    Error::Absent {
        what,
        store: store_of(conn),
        hint,
    }
}

/// How long a writer waits for another one before the operation fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// The engine below a catalog.
enum Engine {
    Sqlite(Connection),
    Postgres(Box<postgres::PgConn>),
}

/// Where a catalog lives: an embedded store's SQLite file, or a shared store's PostgreSQL
/// database (with the store directory on this host, which errors name).
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite(PathBuf),
    Postgres { url: String, store: PathBuf },
}

pub struct Catalog {
    engine: Engine,
    /// The database file (SQLite), or the store directory (PostgreSQL): what errors name.
    path: PathBuf,
    /// Why this process cannot write the store, when it cannot.
    read_only: Option<String>,
    /// A shared store's database, for the connection that holds its blobs.
    url: Option<String>,
}

/// A hold on a shared store's blobs: see [`Catalog::hold_blobs`].
pub type BlobsHold = postgres::BlobsHold;

impl Catalog {
    pub fn open_backend(backend: &Backend) -> Result<Self> {
        match backend {
            Backend::Sqlite(path) => Self::open(path),
            Backend::Postgres { url, store } => Self::open_postgres(url, store),
        }
    }

    /// Connects to a shared store's catalog and brings its schema up to date (creating it
    /// in an empty database). A database that holds other tables is refused, untouched.
    pub fn open_postgres(url: &str, store: &Path) -> Result<Self> {
        let conn = postgres::PgConn::connect(url, &store.display().to_string())?;
        let mut catalog = Catalog {
            path: PathBuf::from(conn.shown()),
            engine: Engine::Postgres(Box::new(conn)),
            read_only: None,
            url: Some(url.to_string()),
        };
        catalog.migrate_postgres()?;
        Ok(catalog)
    }

    pub fn open(path: &Path) -> Result<Self> {
        let dir = path.parent().unwrap_or(Path::new("."));
        if let Some(why) = read_only_cause(dir) {
            return Self::open_read_only(path, why);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| classify(path, "open", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| classify(path, "set busy_timeout", e))?;
        conn.set_prepared_statement_cache_capacity(sqlite::STATEMENT_CACHE);
        enable_wal(&conn).map_err(|e| classify(path, "enable WAL", e))?;
        // FULL makes each commit durable when it returns.
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(|e| classify(path, "set pragmas", e))?;
        let mut catalog = Catalog {
            engine: Engine::Sqlite(conn),
            path: path.to_path_buf(),
            read_only: None,
            url: None,
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    /// Opens the catalog of a store this process may only read. SQLite needs to create the
    /// shared-memory file of a WAL database even to read it, which a read-only filesystem
    /// forbids; there nothing can change the file either, so it is opened as immutable,
    /// provided no write-ahead log holds transactions the file lacks.
    fn open_read_only(path: &Path, why: String) -> Result<Self> {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_len = std::fs::metadata(&wal).map_or(0, |m| m.len());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let read_only_fs = why == READ_ONLY_FS;
        let immutable_uri = immutable_uri(path)?;
        let open = |immutable: bool| {
            let conn = if immutable {
                Connection::open_with_flags(&immutable_uri, flags | OpenFlags::SQLITE_OPEN_URI)?
            } else {
                Connection::open_with_flags(path, flags)?
            };
            // SQLite opens lazily: the first read is where a missing shared-memory file,
            // which only a writer can create, shows.
            conn.pragma_query_value(None, "user_version", |r| r.get::<_, i64>(0))?;
            Ok::<_, rusqlite::Error>(conn)
        };
        // A store we may not write (someone else's) has no shared-memory file once its last
        // writer closed, and then reads only as immutable; a write-ahead log would show a
        // writer is about.
        let conn = if read_only_fs && wal_len == 0 {
            open(true)
        } else {
            open(false).or_else(|e| if wal_len == 0 { open(true) } else { Err(e) })
        };
        let conn = conn.map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::CannotOpen) if !path.exists() => {
                Error::not_found(format!("catalog {}", path.display()))
            }
            _ if read_only_fs && wal_len > 0 => Error::invalid(
                format!("catalog {}", path.display()),
                "is on a read-only filesystem with changes still in its write-ahead log; \
                 run any artifactfs command on the store once while it is writable",
            ),
            _ => classify(path, "open read-only", e),
        })?;
        let catalog = Catalog {
            engine: Engine::Sqlite(conn),
            path: path.to_path_buf(),
            read_only: Some(why),
            url: None,
        };
        let (found, supported) = (catalog.schema_version()?, MIGRATIONS.len() as i64);
        if found > supported {
            return Err(Error::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported,
            });
        }
        if found < supported {
            return Err(catalog.refuse_write());
        }
        Ok(catalog)
    }

    /// SQLite's own check of the file: every page and, when `thorough`, every index
    /// against its table. Damage is reported with SQLite's first findings.
    pub fn check_integrity(&self, thorough: bool) -> Result<()> {
        let pragma = if thorough {
            "PRAGMA integrity_check(20)"
        } else {
            "PRAGMA quick_check(20)"
        };
        let damaged = |why: String| Error::Corrupt {
            what: format!("catalog {}", self.path.display()),
            why,
        };
        let Some(conn) = self.sqlite() else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare(pragma)
            .map_err(|e| classify(&self.path, "check integrity", e))?;
        let findings = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| match classify(&self.path, "check integrity", e) {
                Error::Catalog { source, .. } => damaged(source.to_string()),
                other => other,
            })?;
        if findings.len() == 1 && findings[0] == "ok" {
            return Ok(());
        }
        Err(damaged(format!(
            "SQLite's integrity check found: {}; restore it from a backup",
            findings.join("; ")
        )))
    }

    /// Fails when this process may only read the store.
    /// Another connection to the same catalog, for a thread of its own.
    pub fn open_again(&self) -> Result<Catalog> {
        match &self.url {
            Some(url) => Self::open_postgres(url, &self.path),
            None => Self::open(&self.path),
        }
    }

    /// On a shared store, a hold on its blobs across every host: shared while blobs are
    /// uploaded until the catalog refers to them, exclusive for `gc`. None for an embedded
    /// store, whose lock file does the same.
    pub fn hold_blobs(&self, exclusive: bool) -> Result<Option<BlobsHold>> {
        match &self.url {
            Some(url) => {
                postgres::PgConn::hold_blobs(url, &self.path.display().to_string(), exclusive)
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn check_writable(&self) -> Result<()> {
        match self.read_only {
            Some(_) => Err(self.refuse_write()),
            None => Ok(()),
        }
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only.is_some()
    }

    fn refuse_write(&self) -> Error {
        Error::StoreReadOnly {
            path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
            why: self.read_only.clone().unwrap_or_default(),
        }
    }

    /// The PostgreSQL schema's version lives in a table of its own, `artifactfs_schema`.
    fn migrate_postgres(&mut self) -> Result<()> {
        let supported = PG_MIGRATIONS.len() as i64;
        let path = self.path.clone();
        let Engine::Postgres(pg) = &self.engine else {
            unreachable!("a PostgreSQL catalog")
        };
        let ctx = |what: &str| format!("{} ({what})", path.display());
        let current = pg_schema_version(&**pg, &path)?;
        if current == Some(supported) {
            return Ok(());
        }
        pg.transaction(true, |tx| {
            let tx: &Db = tx;
            let current = pg_schema_version(tx, &path)?;
            let current = match current {
                Some(v) => v,
                None => {
                    let others: Vec<String> = tx
                        .query(
                            "SELECT table_name::text FROM information_schema.tables
                              WHERE table_schema = current_schema() ORDER BY 1 LIMIT 4",
                            crate::params![],
                            |r| r.get(0),
                        )
                        .map_err(|source| Error::Catalog {
                            context: ctx("look for tables"),
                            source,
                        })?;
                    if !others.is_empty() {
                        return Err(Error::invalid(
                            format!("catalog {}", path.display()),
                            format!(
                                "the database holds other tables ({}) and no artifactfs \
                                 catalog; point --catalog at an empty database, or at one \
                                 artifactfs made (nothing was changed)",
                                others.join(", ")
                            ),
                        ));
                    }
                    tx.execute_batch(
                        "CREATE TABLE artifactfs_schema (version BIGINT NOT NULL);
                         INSERT INTO artifactfs_schema VALUES (0);",
                    )
                    .map_err(|source| Error::Catalog {
                        context: ctx("create the schema table"),
                        source,
                    })?;
                    0
                }
            };
            if current > supported {
                return Err(Error::NewerSchema {
                    path: path.clone(),
                    found: current,
                    supported,
                });
            }
            for (n, sql) in PG_MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.execute_batch(sql).map_err(|source| Error::Catalog {
                    context: ctx(&format!("migrate to schema {}", n + 1)),
                    source,
                })?;
            }
            tx.execute(
                "UPDATE artifactfs_schema SET version = ?1",
                crate::params![supported],
            )
            .map_err(|source| Error::Catalog {
                context: ctx("record schema version"),
                source,
            })?;
            Ok(())
        })
    }

    fn migrate(&mut self) -> Result<()> {
        let supported = MIGRATIONS.len() as i64;
        let path = self.path.clone();
        let current = self.schema_version()?;
        if current > supported {
            return Err(Error::NewerSchema {
                path,
                found: current,
                supported,
            });
        }
        if current == supported {
            return Ok(());
        }
        let Engine::Sqlite(conn) = &mut self.engine else {
            unreachable!("migrate runs on SQLite catalogs")
        };
        let tx = begin_immediate(conn, &path)?;
        // Re-read inside the lock: another process may have migrated meanwhile.
        let current: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| classify(&path, "read schema version", e))?;
        if current > supported {
            return Err(Error::NewerSchema {
                path: path.clone(),
                found: current,
                supported,
            });
        }
        for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.execute_batch(sql)
                .map_err(|e| classify(&path, &format!("migrate to schema {}", n + 1), e))?;
        }
        tx.pragma_update(None, "user_version", supported)
            .map_err(|e| classify(&path, "record schema version", e))?;
        tx.commit().map_err(|e| classify(&path, "commit", e))
    }

    pub fn schema_version(&self) -> Result<i64> {
        match &self.engine {
            Engine::Sqlite(conn) => conn
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .map_err(|e| classify(&self.path, "read schema version", e)),
            Engine::Postgres(pg) => pg_schema_version(&**pg, &self.path).map(|v| v.unwrap_or(0)),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read access outside a transaction (each statement sees a consistent snapshot).
    pub fn conn(&self) -> &Db {
        match &self.engine {
            Engine::Sqlite(conn) => conn,
            Engine::Postgres(pg) => &**pg,
        }
    }

    /// The SQLite connection of an embedded store's catalog, for what only SQLite has.
    pub fn sqlite(&self) -> Option<&Connection> {
        match &self.engine {
            Engine::Sqlite(conn) => Some(conn),
            Engine::Postgres(_) => None,
        }
    }

    /// Runs `f` in one write transaction: all of it is committed, or none of it.
    pub fn write<T>(&mut self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let path = self.path.clone();
        match &mut self.engine {
            Engine::Sqlite(conn) => {
                let tx = begin_immediate(conn, &path)?;
                let value = f(&*tx).map_err(|e| name_damage(&path, e))?;
                crate::faults::check(crate::faults::Op::Commit).map_err(|e| Error::io(&path, e))?;
                tx.commit().map_err(|e| classify(&path, "commit", e))?;
                Ok(value)
            }
            Engine::Postgres(pg) => pg.transaction(true, |tx| f(tx)),
        }
    }

    /// Like [`Catalog::write`], but without waiting for the disk: the change survives this
    /// process being killed, not a power cut, until [`Catalog::sync`] or any later durable
    /// write. For draft edits through the mount, where every `create` and `rename` is a
    /// transaction and `fsync` is the user's way to ask for durability.
    pub fn write_relaxed<T>(&mut self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let set = |conn: &Connection, mode: &str| {
            conn.execute_batch(&format!("PRAGMA synchronous = {mode}"))
                .map_err(|e| classify(&path, "set synchronous", e))
        };
        let Some(conn) = self.sqlite() else {
            return self.write(f);
        };
        set(conn, "NORMAL")?;
        let result = self.write(f);
        if let Some(conn) = self.sqlite() {
            set(conn, "FULL")?;
        }
        result
    }

    /// Makes every committed transaction durable, including relaxed ones: they are all in
    /// the write-ahead log until a checkpoint, which syncs them itself.
    pub fn sync(&self) -> Result<()> {
        // A PostgreSQL commit is durable when it returns.
        if self.sqlite().is_none() {
            return Ok(());
        }
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        match std::fs::File::open(&wal) {
            Ok(f) => crate::faults::check(crate::faults::Op::Fsync)
                .and_then(|()| f.sync_data())
                .map_err(|e| Error::io(&wal, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&wal, e)),
        }
    }

    /// Runs `f` in a transaction that is always rolled back: for computing what a commit would
    /// produce without keeping it. A write transaction like [`Catalog::write`]'s: one that
    /// started reading and then wrote after another process committed would fail instead of
    /// waiting.
    pub fn dry_run<T>(&mut self, f: impl FnOnce(&Db) -> Result<T>) -> Result<T> {
        self.check_writable()?;
        let path = self.path.clone();
        match &mut self.engine {
            Engine::Sqlite(conn) => {
                let tx = begin_immediate(conn, &path)?;
                f(&*tx)
            }
            Engine::Postgres(pg) => pg.transaction(false, |tx| f(tx)),
        }
    }

    /// Whether the connection broke (a shared store's database restarted), so the catalog
    /// must be opened again.
    pub fn is_broken(&self) -> bool {
        match &self.engine {
            Engine::Sqlite(_) => false,
            Engine::Postgres(pg) => pg.is_broken(),
        }
    }
}

/// The version recorded in `artifactfs_schema`, or None if the table does not exist. A table
/// that records no version, or several, is a damaged catalog (`path` names it).
fn pg_schema_version(conn: &Db, path: &Path) -> Result<Option<i64>> {
    let read = || -> DbResult<Option<Vec<i64>>> {
        let exists: bool = conn.query_one(
            "SELECT to_regclass('artifactfs_schema') IS NOT NULL",
            crate::params![],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        conn.query(
            "SELECT version FROM artifactfs_schema ORDER BY 1",
            crate::params![],
            |r| r.get(0),
        )
        .map(Some)
    };
    let versions = read().map_err(|source| Error::Catalog {
        context: format!("{} (read schema version)", path.display()),
        source,
    })?;
    match versions.as_deref() {
        None => Ok(None),
        Some([v]) => Ok(Some(*v)),
        Some(other) => Err(Error::Corrupt {
            what: format!("catalog {}", path.display()),
            why: format!(
                "its table artifactfs_schema records {} schema versions ({other:?}) where it \
                 should record one; restore the database from a backup (nothing was changed)",
                other.len()
            ),
        }),
    }
}

/// Starts an IMMEDIATE transaction, waiting up to `BUSY_TIMEOUT` for other writers; the error
/// after that names the catalog and how long it waited.
fn begin_immediate<'c>(conn: &'c mut Connection, path: &Path) -> Result<rusqlite::Transaction<'c>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| {
            let action = format!(
                "start a write; another process held it for {} s",
                BUSY_TIMEOUT.as_secs()
            );
            classify(path, &action, e)
        })
}

/// Catalog connections for a multi-threaded server: each request borrows one (a connection
/// must not be used by two threads at once) and gives it back when done. WAL lets them all
/// read at the same time.
pub struct Pool {
    backend: Backend,
    idle: std::sync::Mutex<Vec<Catalog>>,
}

/// Page cache of each pooled connection. The kernel caches the catalog file already; SQLite's
/// own cache, 2 MiB per connection by default, would make the server's memory grow with the
/// catalog's size and with the number of request threads.
const POOLED_CACHE_KIB: i64 = 128;

impl Pool {
    pub fn new(backend: &Backend) -> Result<Self> {
        let first = Self::open(backend)?;
        Ok(Pool {
            backend: backend.clone(),
            idle: std::sync::Mutex::new(vec![first]),
        })
    }

    fn open(backend: &Backend) -> Result<Catalog> {
        let catalog = Catalog::open_backend(backend)?;
        if let Some(conn) = catalog.sqlite() {
            conn.pragma_update(None, "cache_size", -POOLED_CACHE_KIB)
                .map_err(|e| classify(catalog.path(), "set cache_size", e))?;
        }
        Ok(catalog)
    }

    pub fn get(&self) -> Result<Pooled<'_>> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        // A connection to a database that restarted is replaced.
        let catalog = match idle.filter(|c| !c.is_broken()) {
            Some(c) => c,
            None => Self::open(&self.backend)?,
        };
        Ok(Pooled {
            pool: self,
            catalog: Some(catalog),
        })
    }
}

pub struct Pooled<'a> {
    pool: &'a Pool,
    catalog: Option<Catalog>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Catalog;
    fn deref(&self) -> &Catalog {
        self.catalog.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Catalog {
        self.catalog.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        // A request that panicked may have left the connection mid-change (relaxed
        // durability, say): it is closed rather than handed to the next request.
        if std::thread::panicking() {
            return;
        }
        if let Some(c) = self.catalog.take() {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(c);
        }
    }
}

const READ_ONLY_FS: &str = "its filesystem is mounted read-only";

/// Why this process cannot change files in `dir`, if it cannot.
pub fn read_only_cause(dir: &Path) -> Option<String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if rc == 0 {
        return None;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EROFS) => Some(READ_ONLY_FS.to_string()),
        Some(libc::EACCES | libc::EPERM) => Some("you may not write to it".to_string()),
        _ => None,
    }
}

/// `file:` URI opening `path` as immutable; `?`, `#` and `%` in the path are escaped.
fn immutable_uri(path: &Path) -> Result<String> {
    let abs = std::path::absolute(path).map_err(|e| Error::io(path, e))?;
    let s = abs.to_str().ok_or_else(|| {
        Error::invalid(
            format!("catalog {}", path.display()),
            "a read-only store needs a UTF-8 path",
        )
    })?;
    let escaped = s
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    Ok(format!("file:{escaped}?immutable=1"))
}

/// Switches a catalog to WAL mode. The switch takes an exclusive lock without consulting the
/// busy handler, so when several processes open a brand-new store at once the losers retry
/// until the first one has made the switch (it is recorded in the file, once).
fn enable_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        let mode: rusqlite::Result<String> =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0));
        match mode {
            Ok(m) if m.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(m) => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!(
                        "the filesystem does not support WAL mode (journal mode stays {m})"
                    )),
                ));
            }
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A query that met a damaged page says so naming the file, as opening one does: the
/// queries themselves only know what they were doing.
fn name_damage(path: &Path, e: Error) -> Error {
    match e {
        Error::Catalog { context, source } if source.failure() == sql::Failure::Corrupt => {
            Error::Corrupt {
                what: format!("catalog {}", path.display()),
                why: format!("{context}: {source}"),
            }
        }
        other => other,
    }
}

/// Turns the errors of opening a catalog into ones that say what is wrong with which file.
fn classify(path: &Path, action: &str, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            Error::Corrupt {
                what: format!("catalog {}", path.display()),
                why: e.to_string(),
            }
        }
        _ => Error::Catalog {
            context: format!("{} ({action})", path.display()),
            source: e.into(),
        },
    }
}

/// The time `ns` nanoseconds from the Unix epoch (before it, for negative values): how the
/// catalog stores mtimes and creation times.
pub fn time_of(ns: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    if ns >= 0 {
        epoch + Duration::from_nanos(ns as u64)
    } else {
        epoch - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// The inverse of [`time_of`].
pub fn ns_of(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    }
}

/// A catalog time as RFC 3339 to the second. Times before 1970 show as the epoch (the
/// formatter takes none earlier).
pub fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_seconds(time_of(ns.max(0))).to_string()
}

/// Nanoseconds since the Unix epoch, for creation times.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(Catalog::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        let err = Catalog::open(&path).err().unwrap();
        assert!(matches!(err, Error::NewerSchema { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("catalog.db"), "{err}");
    }

    #[test]
    fn reopening_keeps_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(Catalog::open(&path).unwrap());
        let c = Catalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), MIGRATIONS.len() as i64);
    }
}
