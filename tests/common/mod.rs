//! Helpers shared by the integration tests: a store in a temporary directory, a way to run the
//! real `artifactfs` binary against it, small trees of real files, and a fingerprint of
//! everything the store holds, used to prove that a refused command changed nothing.
//!
//! A store is embedded (SQLite and a local `blobs/`) unless made shared: [`TestStore::sharing`]
//! makes one host's side of a shared store (a PostgreSQL database and an S3 bucket that several
//! such stores may use at once). Test files compiled into the `on_postgres` target, and any
//! test run with `ARTIFACTFS_TEST_SHARED=1`, get a shared store from [`TestStore::new`], each
//! with its own database and bucket on servers the test process starts once; tests about the
//! embedded store's own files ask for [`TestStore::embedded`].

#![allow(dead_code)]

pub mod mount;
pub mod services;

use std::ffi::OsStr;
use std::fs::{self, File, FileTimes};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_artifactfs");

/// The binary at a path every user can reach: the build directory may sit inside a checkout
/// that only its owner can enter (a fresh `mktemp -d` clone is 0700), and some tests run the
/// binary as an unprivileged user. Copied once per build, named by the build's size and mtime.
pub fn bin_for_others() -> &'static Path {
    static COPY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        let meta = fs::metadata(BIN).unwrap();
        let stamp = meta
            .modified()
            .unwrap()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "artifactfs-test-bin-{}-{}",
            meta.len(),
            stamp.as_nanos()
        ));
        let dest = dir.join("artifactfs");
        if !dest.exists() {
            fs::create_dir_all(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
            // Copy then rename, so parallel test processes never run a half-written file.
            let tmp = dir.join(format!("artifactfs.{}", std::process::id()));
            fs::copy(BIN, &tmp).unwrap();
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
            fs::rename(&tmp, &dest).unwrap();
        }
        dest
    })
}

/// The unprivileged user that permission tests run the binary as.
pub const NOBODY: u32 = 65534;

/// No single command of these small tests should take this long; a hang fails the test.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);

/// Every table of the catalog, as SPEC §2 lists its contents (manifests as shared trees:
/// nodes, the chunks of their listings, and the chunks' entries).
pub const TABLES: &[&str] = &[
    "artifacts",
    "versions",
    "aliases",
    "nodes",
    "node_chunks",
    "chunks",
    "chunk_entries",
    "drafts",
    "draft_entries",
    "seals",
    "runs",
    "run_inputs",
    "run_outputs",
];

/// Whether [`TestStore::new`] makes shared stores: in the `on_postgres` test target (which
/// compiles other test files into itself), or when `ARTIFACTFS_TEST_SHARED=1`.
pub fn shared_by_default() -> bool {
    module_path!().starts_with("on_postgres::")
        || std::env::var("ARTIFACTFS_TEST_SHARED").is_ok_and(|v| v == "1")
}

/// Where a shared store lives: its catalog's database, its bucket, and what a process needs
/// to reach them. Several [`TestStore`]s (hosts) may share one.
#[derive(Clone)]
pub struct SharedSide {
    /// `postgres://…` of the store's database.
    pub catalog: String,
    /// `s3://BUCKET/store`.
    pub objects: String,
    pub bucket: String,
    /// The directory in which the S3 server keeps the bucket's objects, as files.
    pub bucket_dir: PathBuf,
    /// The AWS variables that reach the S3 server.
    pub env: Vec<(&'static str, String)>,
    /// `--cache-size` given to `init`, if any.
    pub cache_size: Option<String>,
    /// Keeps servers of the test process's own alive while a store uses them.
    _servers: Option<Arc<services::ProcessServices>>,
}

impl SharedSide {
    /// A new database and a new bucket, both called `name`, on these servers.
    pub fn new(pg: &services::Postgres, s3: &services::S3Server, name: &str) -> Self {
        let catalog = pg.create_database(name);
        let objects = s3.bucket_url(name);
        SharedSide {
            catalog,
            objects,
            bucket: name.to_string(),
            bucket_dir: s3.data_dir().join(name),
            env: s3.env(),
            cache_size: None,
            _servers: None,
        }
    }

    /// The same store with another `--cache-size` for the hosts made from it.
    pub fn with_cache_size(&self, size: &str) -> Self {
        SharedSide {
            cache_size: Some(size.to_string()),
            ..self.clone()
        }
    }

    fn keep_alive(&mut self, servers: Arc<services::ProcessServices>) {
        self._servers = Some(servers);
    }

    /// A connection to the store's database.
    pub fn db(&self) -> postgres::Client {
        postgres::Client::connect(&self.catalog, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.catalog))
    }

    /// Every object in the bucket, as (key, size), sorted; the server's own bookkeeping
    /// (unfinished multipart uploads) is left out.
    pub fn objects(&self) -> Vec<(String, u64)> {
        let mut files = Vec::new();
        if self.bucket_dir.exists() {
            walk_files(&self.bucket_dir, &self.bucket_dir, &mut files);
        }
        files.sort();
        files
            .into_iter()
            .filter(|f| !f.rsplit('/').next().unwrap_or("").starts_with('.'))
            .map(|f| {
                let len = fs::metadata(self.bucket_dir.join(&f)).unwrap().len();
                (f, len)
            })
            .collect()
    }
}

/// A store in its own temporary directory, plus a scratch area for source files.
pub struct TestStore {
    pub tmp: tempfile::TempDir,
    /// The store directory passed with `--store` (created by `init` or by the first command
    /// that adds a version).
    pub root: PathBuf,
    /// For one host's side of a shared store: where the rest of it is.
    pub shared: Option<SharedSide>,
}

impl TestStore {
    /// An embedded store, not yet made; or, where [`shared_by_default`], a shared store of its
    /// own, made already.
    pub fn new() -> Self {
        if shared_by_default() {
            let s = Self::sharing(services::ProcessServices::new_side());
            s.init();
            return s;
        }
        Self::embedded()
    }

    /// An embedded store, whatever [`shared_by_default`] says: for tests about its own files.
    pub fn embedded() -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("artifactfs-test-")
            .tempdir()
            .expect("create temp dir");
        let root = tmp.path().join("store");
        TestStore {
            tmp,
            root,
            shared: None,
        }
    }

    /// One host's side of the shared store `side`, not yet made (see [`TestStore::init`]):
    /// a store directory of its own (its cache, its drafts' files, its mounts), the catalog
    /// and the bucket shared with every other host made from `side`.
    pub fn sharing(side: SharedSide) -> Self {
        let mut s = Self::embedded();
        s.shared = Some(side);
        s
    }

    /// `artifactfs init`: makes the (empty) store, as a user does before reading from or
    /// mounting a store nothing was logged into yet. For a shared store, `init DIR --catalog
    /// … --objects … [--cache-size …]`.
    pub fn init(&self) {
        match &self.shared {
            None => {
                self.ok(&["init"]);
            }
            Some(side) => {
                let mut args = vec![
                    "init",
                    p(&self.root),
                    "--catalog",
                    &side.catalog,
                    "--objects",
                    &side.objects,
                ];
                if let Some(size) = &side.cache_size {
                    args.extend(["--cache-size", size]);
                }
                self.ok(&args);
            }
        }
    }

    /// Makes the store with `init` unless it exists already.
    pub fn ensure_store(&self) {
        let made = match self.shared {
            None => self.root.join("catalog.db").exists(),
            Some(_) => self.root.join("config").exists(),
        };
        if !made {
            self.init();
        }
    }

    /// The shared store this host is a side of; fails for an embedded store.
    pub fn side(&self) -> &SharedSide {
        self.shared.as_ref().expect("a shared store")
    }

    /// A path in the scratch area (outside the store).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `artifactfs --store ROOT ARGS...`, ready to spawn, isolated from the environment.
    pub fn command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        self.command_of(Path::new(BIN), args)
    }

    fn command_of<S: AsRef<OsStr>>(&self, bin: &Path, args: &[S]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.arg("--store").arg(&self.root);
        cmd.args(args);
        cmd.env_remove("ARTIFACTFS_STORE")
            .env_remove("XDG_DATA_HOME")
            .env_remove("RUST_LOG")
            .env("HOME", self.tmp.path())
            .current_dir(self.tmp.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Only what the store says reaches a server: no settings of the test's environment.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("AWS_") || k.starts_with("PG") {
                cmd.env_remove(&*k);
            }
        }
        if let Some(side) = &self.shared {
            cmd.envs(side.env.iter().map(|(k, v)| (k, v)));
        }
        cmd
    }

    /// Runs the binary and returns what it did.
    pub fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        run_command(self.command(args))
    }

    /// Runs the binary as another user (and that user's group).
    pub fn run_as<S: AsRef<OsStr>>(&self, uid: u32, args: &[S]) -> Output {
        // The command runs in the scratch directory, which must be reachable for that user.
        self.open_scratch_to_others();
        let mut cmd = self.command_of(bin_for_others(), args);
        cmd.uid(uid).gid(uid);
        run_command(cmd)
    }

    /// Runs a command that must succeed; returns its standard output.
    pub fn ok<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert_success(&out, args);
        stdout(&out)
    }

    /// Runs a command with `--json` that must succeed; returns its parsed output.
    pub fn json<S: AsRef<OsStr>>(&self, args: &[S]) -> Value {
        let mut all: Vec<&OsStr> = vec![OsStr::new("--json")];
        all.extend(args.iter().map(|a| a.as_ref()));
        let out = self.ok(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{:?} printed invalid JSON ({e}):\n{out}", show_args(args)))
    }

    /// Runs a command that must fail with exit status 1 or 2 (never a crash); returns its
    /// standard error.
    pub fn fail<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        assert_failure(&out, args)
    }

    /// Writes `files` (relative path, content) under scratch directory `dir`; returns it.
    pub fn tree(&self, dir: &str, files: &[(&str, &str)]) -> PathBuf {
        let d = self.path(dir);
        write_tree(&d, files);
        d
    }

    /// Writes one scratch file; returns its path.
    pub fn file(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.path(rel);
        write_file(&p, content.as_bytes());
        p
    }

    /// Every regular file under `blobs/`, as paths relative to it, sorted.
    pub fn blob_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        let blobs = self.root.join("blobs");
        if blobs.exists() {
            walk_files(&blobs, &blobs, &mut out);
        }
        out.sort();
        out
    }

    /// The on-disk path of the blob with content `content`.
    pub fn blob_path_of(&self, content: &[u8]) -> PathBuf {
        let hex = sha256_hex(content);
        self.root.join("blobs").join(&hex[..2]).join(hex)
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(self)
    }

    /// Rows of a query on (a snapshot copy of) the catalog, each rendered as strings; on a
    /// shared store, on its database.
    pub fn sql(&self, query: &str) -> Vec<Vec<String>> {
        if let Some(side) = &self.shared {
            return pg_rows(&mut side.db(), query);
        }
        let (_dir, conn) = open_catalog_snapshot(&self.root);
        let mut stmt = conn
            .prepare(query)
            .unwrap_or_else(|e| panic!("prepare {query}: {e}"));
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, SqlValue>(i).map(|v| render(&v)))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap_or_else(|e| panic!("run {query}: {e}"));
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .unwrap_or_else(|e| panic!("read {query}: {e}"))
    }

    /// Makes the store usable by `uid`: the scratch root becomes traversable and the whole
    /// store is owned by `uid`.
    pub fn hand_store_to(&self, uid: u32) {
        fs::set_permissions(self.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
        chown_tree(&self.root, uid);
    }

    /// Makes the scratch root traversable by other users (tempdirs are 0700).
    pub fn open_scratch_to_others(&self) {
        fs::set_permissions(self.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

impl Default for TestStore {
    fn default() -> Self {
        Self::new()
    }
}

fn show_args<S: AsRef<OsStr>>(args: &[S]) -> Vec<String> {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn assert_success<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    assert!(
        out.status.success(),
        "artifactfs {:?} failed ({}):\nstdout: {}\nstderr: {}",
        show_args(args),
        out.status,
        stdout(out),
        stderr(out)
    );
}

/// Asserts a clean refusal: exit status 1 (error) or 2 (bad command line), an `error:` line;
/// returns standard error.
pub fn assert_failure<S: AsRef<OsStr>>(out: &Output, args: &[S]) -> String {
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "artifactfs {:?} should have failed with status 1 or 2, got {}:\nstdout: {}\nstderr: {}",
        show_args(args),
        out.status,
        stdout(out),
        stderr(out)
    );
    let err = stderr(out);
    assert!(
        err.contains("error"),
        "artifactfs {:?}: no error message on stderr: {err:?}",
        show_args(args)
    );
    assert!(
        !err.contains("panicked"),
        "artifactfs {:?} panicked: {err}",
        show_args(args)
    );
    err
}

/// Spawns a command and waits for it, failing the test if it hangs.
pub fn run_command(mut cmd: Command) -> Output {
    let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    wait_with_timeout(child, COMMAND_TIMEOUT)
}

/// Waits for a spawned child (with piped stdout/stderr), killing it after `timeout`.
pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(p) = err_pipe.as_mut() {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for artifactfs") {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "artifactfs (pid {}) did not finish within {timeout:?}",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

pub fn write_file(path: &Path, content: &[u8]) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes each (relative path, content) under `dir`, creating directories as needed.
pub fn write_tree(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (rel, content) in files {
        write_file(&dir.join(rel), content.as_bytes());
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn time_at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

pub fn set_mtime(path: &Path, t: SystemTime) {
    let f = File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
        .unwrap();
    f.set_times(FileTimes::new().set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

pub fn mtime_of(path: &Path) -> SystemTime {
    fs::symlink_metadata(path).unwrap().modified().unwrap()
}

pub fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for e in fs::read_dir(path).unwrap() {
            chown_tree(&e.unwrap().path(), uid);
        }
    }
}

/// Sets `mode` on `dir` and every directory below it.
pub fn chmod_dirs(dir: &Path, mode: u32) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if fs::symlink_metadata(&p).unwrap().is_dir() {
            chmod_dirs(&p, mode);
        }
    }
    set_mode(dir, mode);
}

/// Permission tests switch to another uid, which only root can do. They fail loudly rather
/// than pass vacuously when not run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test changes to uid {NOBODY} to provoke permission errors, which needs root \
         (the test suite is meant to run as root, e.g. in .ci/run)"
    );
}

fn walk_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let meta = fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            walk_files(base, &p, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn render(v: &SqlValue) -> String {
    match v {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(r) => format!("{r:?}"),
        SqlValue::Text(t) => format!("{t:?}"),
        SqlValue::Blob(b) => format!(
            "x'{}'",
            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// Opens a copy of the store's catalog (with its WAL, if any) read-only. Reading a copy
/// leaves the store itself untouched: opening a WAL database in place, even read-only, may
/// create `-wal`/`-shm` files there, owned by the test's user, which would change the very
/// thing being observed and can break a later command run as another user.
fn open_catalog_snapshot(store: &Path) -> (tempfile::TempDir, Connection) {
    let db = store.join("catalog.db");
    assert!(db.exists(), "{} does not exist", db.display());
    let dir = tempfile::tempdir().unwrap();
    fs::copy(&db, dir.path().join("catalog.db")).unwrap();
    let wal = store.join("catalog.db-wal");
    if wal.exists() {
        fs::copy(&wal, dir.path().join("catalog.db-wal")).unwrap();
    }
    let conn = Connection::open_with_flags(
        dir.path().join("catalog.db"),
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("open catalog snapshot read-only");
    (dir, conn)
}

/// Rows of `query` on a PostgreSQL database, each value rendered as [`render`] renders
/// SQLite's: numbers as digits, text quoted, bytes as `x'…'`.
pub fn pg_rows(db: &mut postgres::Client, query: &str) -> Vec<Vec<String>> {
    use postgres::types::Type;
    let rows = db
        .query(query, &[])
        .unwrap_or_else(|e| panic!("run {query}: {e}"));
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| {
                    let ty = r.columns()[i].type_().clone();
                    let shown = match ty {
                        Type::INT8 => r.get::<_, Option<i64>>(i).map(|v| v.to_string()),
                        Type::INT4 => r.get::<_, Option<i32>>(i).map(|v| v.to_string()),
                        Type::INT2 => r.get::<_, Option<i16>>(i).map(|v| v.to_string()),
                        Type::BOOL => r.get::<_, Option<bool>>(i).map(|v| (v as i64).to_string()),
                        Type::FLOAT8 => r.get::<_, Option<f64>>(i).map(|v| format!("{v:?}")),
                        Type::BYTEA => r.get::<_, Option<Vec<u8>>>(i).map(|b| {
                            format!(
                                "x'{}'",
                                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                            )
                        }),
                        _ => r.get::<_, Option<String>>(i).map(|t| format!("{t:?}")),
                    };
                    shown.unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

/// What a shared store holds: the catalog database's schema version, tables and columns,
/// every row of every catalog table, and every object in the bucket that the catalog refers
/// to, with its size. (To see every object, look at [`SharedSide::objects`].)
pub fn shared_fingerprint(side: &SharedSide) -> String {
    let mut db = side.db();
    let mut s = String::new();
    let schema = "SELECT table_name::text, column_name::text, data_type::text
                    FROM information_schema.columns WHERE table_schema = 'public'
                   ORDER BY 1, ordinal_position";
    for row in pg_rows(&mut db, schema) {
        s.push_str(&format!("column {}\n", row.join(" ")));
    }
    let has_schema = pg_rows(
        &mut db,
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'artifactfs_schema'",
    );
    if has_schema[0][0] != "0" {
        for row in pg_rows(&mut db, "SELECT version FROM artifactfs_schema") {
            s.push_str(&format!("schema version {}\n", row.join(" ")));
        }
        for table in TABLES {
            s.push_str(&format!("table {table}\n"));
            for row in pg_rows(
                &mut db,
                &format!("SELECT t::text FROM {table} t ORDER BY 1"),
            ) {
                s.push_str(&format!("  {}\n", row.join(" | ")));
            }
        }
    }
    // What a failed or discarded operation uploaded is left for gc, which keeps it for its
    // grace period: only the objects that the catalog refers to are the store's content.
    let referenced: std::collections::BTreeSet<String> = if has_schema[0][0] != "0" {
        pg_rows(
            &mut db,
            "SELECT encode(blob, 'hex') FROM chunk_entries WHERE blob IS NOT NULL
             UNION SELECT encode(blob, 'hex') FROM draft_entries WHERE blob IS NOT NULL",
        )
        .into_iter()
        .map(|r| r[0].trim_matches('"').to_string())
        .collect()
    } else {
        Default::default()
    };
    s.push_str("objects referred to\n");
    for (key, size) in side.objects() {
        if referenced.contains(key.rsplit('/').next().unwrap_or("")) {
            s.push_str(&format!("  {key} {size}\n"));
        }
    }
    s
}

/// Everything a command could change in the store: the schema and its version, every row of
/// every catalog table (ordered by all columns), and every file under `blobs/` and `staging/`
/// with its size and mode. For a shared store, its database and bucket instead of
/// `catalog.db` (see [`shared_fingerprint`]).
pub fn fingerprint(store: &TestStore) -> String {
    let mut s = String::new();
    if let Some(side) = &store.shared {
        s.push_str(&shared_fingerprint(side));
        local_files_fingerprint(store, &mut s);
        return s;
    }
    let (_dir, conn) = open_catalog_snapshot(&store.root);
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    s.push_str(&format!("user_version {user_version}\n"));
    let mut schema = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let rows = schema
        .query_map([], |r| {
            Ok(format!(
                "{} {} {}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?.unwrap_or_default()
            ))
        })
        .unwrap();
    for r in rows {
        s.push_str(&format!("schema {}\n", r.unwrap()));
    }
    for table in TABLES {
        let probe = conn
            .prepare(&format!("SELECT * FROM {table}"))
            .unwrap_or_else(|e| panic!("catalog has no table {table}: {e}"));
        let n = probe.column_count();
        drop(probe);
        let order: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT * FROM {table} ORDER BY {}",
                order.join(", ")
            ))
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, SqlValue>(i).map(|v| render(&v)))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        s.push_str(&format!("table {table}\n"));
        for row in rows {
            s.push_str(&format!("  {}\n", row.unwrap().join(" | ")));
        }
    }
    local_files_fingerprint(store, &mut s);
    s
}

/// Every file under the store's `blobs/` and `staging/`, with its size and mode.
fn local_files_fingerprint(store: &TestStore, s: &mut String) {
    for sub in ["blobs", "staging"] {
        let dir = store.root.join(sub);
        let mut files = Vec::new();
        if dir.exists() {
            walk_files(&dir, &dir, &mut files);
        }
        files.sort();
        s.push_str(&format!("{sub}/\n"));
        for f in files {
            let meta = fs::symlink_metadata(dir.join(&f)).unwrap();
            s.push_str(&format!(
                "  {f} {} {:o}\n",
                meta.len(),
                meta.permissions().mode() & 0o7777
            ));
        }
    }
}

/// Asserts that two fingerprints are equal, showing the first differing line.
pub fn assert_unchanged(before: &str, after: &str, what: &str) {
    if before != after {
        let b: Vec<&str> = before.lines().collect();
        let a: Vec<&str> = after.lines().collect();
        let i = b
            .iter()
            .zip(a.iter())
            .position(|(x, y)| x != y)
            .unwrap_or(b.len().min(a.len()));
        panic!(
            "{what} changed the store; first difference at line {i}:\n before: {:?}\n after:  {:?}\n\nfull before:\n{before}\nfull after:\n{after}",
            b.get(i),
            a.get(i)
        );
    }
}

/// Runs a command that must be refused, checks that its message contains every string of
/// `needles` (case-sensitive), and that the store is exactly as it was. Returns stderr.
pub fn refused<S: AsRef<OsStr>>(store: &TestStore, args: &[S], needles: &[&str]) -> String {
    let before = fingerprint(store);
    let err = store.fail(args);
    for n in needles {
        assert!(
            err.contains(n),
            "artifactfs {:?}: error message should mention {n:?}, got: {err}",
            show_args(args)
        );
    }
    assert_unchanged(
        &before,
        &fingerprint(store),
        &format!("{:?}", show_args(args)),
    );
    err
}

/// Paths listed by `ls REF`, one per line.
pub fn ls(store: &TestStore, reference: &str) -> Vec<String> {
    store
        .ok(&["ls", reference])
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn cat(store: &TestStore, reference: &str, path: &str) -> String {
    store.ok(&["cat", reference, path])
}

/// `log NAME DIR --type dataset`, returning the printed line.
pub fn log(store: &TestStore, name: &str, dir: &Path) -> String {
    store
        .ok(&["log", name, dir.to_str().unwrap(), "--type", "dataset"])
        .trim()
        .to_string()
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Deterministic bytes that do not compress or repeat.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bytes that do not repeat or compress (a xorshift stream), different for each `seed`, so
/// no two files share a blob by accident.
#[allow(dead_code)]
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
