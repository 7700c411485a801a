//! Real servers for the shared-store tests, started by the tests themselves on 127.0.0.1 and
//! removed when dropped:
//! - [`S3Server`]: `s3s-fs`, an S3-compatible server that keeps objects as plain files in a
//!   temporary directory, with credentials; it can be killed and started again on the same
//!   port and data, for fault tests.
//! - [`Postgres`]: a throwaway PostgreSQL cluster (`initdb` and `pg_ctl` from Debian's
//!   packages) in a temporary directory, run as a user other than root, with one database.
//!
//! A server that is not installed, or does not start, fails the test with what is missing
//! and how to get it: `scripts/setup.sh` installs both.
//!
//! [`ProcessServices`] is one of each for a whole test process, started on first use and
//! stopped when the process exits, for test files that make many small shared stores.

use std::ffi::CString;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use artifactfs::objects::S3Config;

const SETUP: &str = "run scripts/setup.sh, which installs it";

/// A port on 127.0.0.1 that nothing listened on a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// Whether something accepts connections on 127.0.0.1:`port`.
fn answers(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The s3s-fs program: on PATH, else where `cargo install` puts it.
fn s3s_fs_program() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(home).join("bin/s3s-fs"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/s3s-fs"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs, the S3-compatible server these tests run, is not installed: {SETUP} \
                 (cargo install s3s-fs --version 0.14.1 --locked --features binary)"
            )
        })
}

/// An S3-compatible server (s3s-fs) on 127.0.0.1, its data in a temporary directory.
pub struct S3Server {
    child: Option<Child>,
    port: u16,
    program: PathBuf,
    /// Holds `data/` (what s3s-fs serves: one directory per bucket) and the server's log.
    dir: tempfile::TempDir,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "artifactfs-test";
    pub const SECRET_KEY: &'static str = "artifactfs-test-secret";
    pub const REGION: &'static str = "us-east-1";

    /// Starts a server with no buckets, and waits until it answers.
    pub fn start() -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix("artifactfs-s3-")
            .tempdir()
            .expect("create a temporary directory for s3s-fs");
        fs::create_dir(dir.path().join("data")).unwrap();
        let mut server = S3Server {
            child: None,
            port: 0,
            program: s3s_fs_program(),
            dir,
        };
        // Another process may take the free port before the server binds it: try another.
        for _ in 0..5 {
            server.port = free_port();
            if server.launch() {
                return server;
            }
        }
        panic!(
            "s3s-fs ({}) did not start on 127.0.0.1; its log:\n{}",
            server.program.display(),
            tail(&server.log())
        );
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("s3s-fs.log")
    }

    /// Starts the program on `self.port`; true once it answers there.
    fn launch(&mut self) -> bool {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut child = Command::new(&self.program)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY])
            .args(["--secret-key", Self::SECRET_KEY])
            .arg(self.data_dir())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SETUP}", self.program.display()));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if answers(self.port) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn access_key(&self) -> &'static str {
        Self::ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        Self::SECRET_KEY
    }

    /// The directory the server keeps its buckets in (one directory each, objects as files
    /// at their keys).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Makes bucket `bucket` if it is not there.
    pub fn create_bucket(&self, bucket: &str) {
        fs::create_dir_all(self.data_dir().join(bucket)).unwrap();
    }

    /// `s3://BUCKET/store`, the bucket made if needed: the URL a store on this server uses.
    pub fn bucket_url(&self, bucket: &str) -> String {
        self.create_bucket(bucket);
        format!("s3://{bucket}/store")
    }

    /// The file in which the server keeps the object at `key` of `bucket`.
    pub fn object_file(&self, bucket: &str, key: &str) -> PathBuf {
        self.data_dir().join(bucket).join(key)
    }

    /// The configuration that reaches `url` on this server, with its credentials.
    pub fn config(&self, url: &str) -> S3Config {
        let mut config = S3Config::new(url).unwrap();
        config.endpoint = Some(self.endpoint());
        config.region = Self::REGION.into();
        config.access_key_id = Some(Self::ACCESS_KEY.into());
        config.secret_access_key = Some(Self::SECRET_KEY.into());
        config
    }

    /// The AWS variables a program (the CLI, a mount) needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", Self::ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", Self::SECRET_KEY.into()),
            ("AWS_REGION", Self::REGION.into()),
        ]
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server at once (SIGKILL), as a crash would; its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data, and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "s3s-fs is still running");
        // The port was just freed; give the kernel a moment if it is not yet available.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.launch() {
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not start again on port {}; its log:\n{}",
                self.port,
                tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The directory of PostgreSQL's server programs (initdb, pg_ctl): Debian keeps one per
/// major version under /usr/lib/postgresql; the newest is used.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, pg_ctl in /usr/lib/postgresql/*/bin) are not \
             installed: {SETUP} (apt-get install postgresql)"
        )
    })
}

/// The user and group a server runs as: PostgreSQL refuses to run as root, so under root the
/// `postgres` user (made by Debian's package), else `nobody`; otherwise whoever runs the test.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's result is read before any other call to it.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        for name in ["postgres", "nobody"] {
            let cname = CString::new(name).unwrap();
            let pw = libc::getpwnam(cname.as_ptr());
            if !pw.is_null() {
                return Some(((*pw).pw_uid, (*pw).pw_gid));
            }
        }
    }
    panic!(
        "running as root, and neither the postgres nor the nobody user exists to run PostgreSQL as"
    )
}

/// A PostgreSQL cluster of its own in a temporary directory, listening on 127.0.0.1, with a
/// database `artifactfs` that the trust authentication lets user `postgres` into.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    user: Option<(u32, u32)>,
    running: bool,
}

impl Postgres {
    pub const DATABASE: &'static str = "artifactfs";
    pub const USER: &'static str = "postgres";

    /// Makes a cluster, starts it, and creates the database.
    pub fn start() -> Postgres {
        let bin = postgres_bin();
        let user = server_user();
        let dir = tempfile::Builder::new()
            .prefix("artifactfs-pg-")
            .tempdir()
            .expect("create a temporary directory for PostgreSQL");
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut pg = Postgres {
            dir,
            bin,
            port: 0,
            user,
            running: false,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data().to_string_lossy(),
                "-U",
                Self::USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        for _ in 0..5 {
            pg.port = free_port();
            if pg.pg_ctl_start() {
                pg.running = true;
                let mut admin = postgres::Client::connect(&pg.url_of("postgres"), postgres::NoTls)
                    .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
                admin
                    .batch_execute(&format!("CREATE DATABASE {}", Self::DATABASE))
                    .unwrap();
                return pg;
            }
        }
        panic!("PostgreSQL did not start; its log:\n{}", tail(&pg.log()));
    }

    /// The cluster's directory: its data in `data/`, its log in `postgres.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A server program, as the server's user, in the cluster's directory.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path())
            .env_remove("PGDATA")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {SETUP}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start`, waiting until the server accepts connections; false if it did not.
    fn pg_ctl_start(&self) -> bool {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        self.command("pg_ctl")
            .args(["-D", &self.data().to_string_lossy()])
            .args(["-l", &self.log().to_string_lossy()])
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// `postgres://postgres@127.0.0.1:PORT/artifactfs`.
    pub fn url(&self) -> String {
        self.url_of(Self::DATABASE)
    }

    /// The URL of another database of this cluster.
    pub fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            Self::USER,
            self.port
        )
    }

    /// Creates one more database (each test of a file may want its own); returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut admin = postgres::Client::connect(&self.url_of("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap();
        self.url_of(name)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server: `fast` ends sessions cleanly, otherwise it is killed as a crash
    /// would (`pg_ctl stop -m immediate`; the cluster recovers on the next start).
    pub fn stop(&mut self, fast: bool) {
        if !self.running {
            return;
        }
        let mode = if fast { "fast" } else { "immediate" };
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data().to_string_lossy(),
                "-m",
                mode,
                "-w",
                "stop",
            ],
        );
        self.running = false;
    }

    /// Starts the stopped server again on the same port and data.
    pub fn start_again(&mut self) {
        assert!(!self.running, "PostgreSQL is still running");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.pg_ctl_start() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start again on port {}; its log:\n{}",
                self.port,
                tail(&self.log())
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        self.running = true;
    }

    /// Stops the server as a crash would, and starts it again.
    pub fn restart(&mut self) {
        self.stop(false);
        self.start_again();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .command("pg_ctl")
                .args([
                    "-D",
                    &self.data().to_string_lossy(),
                    "-m",
                    "immediate",
                    "stop",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// One PostgreSQL cluster and one S3 server for every test of a process that wants them, each
/// test with a database and a bucket of its own. Started by the first test that asks, and
/// stopped (the cluster's directory removed) when the process exits.
pub struct ProcessServices {
    pub pg: Postgres,
    pub s3: S3Server,
}

static PROCESS_SERVICES: Mutex<Option<Arc<ProcessServices>>> = Mutex::new(None);
static SIDES: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_process_services() {
    let taken = match PROCESS_SERVICES.lock() {
        Ok(mut g) => g.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    drop(taken);
}

impl ProcessServices {
    /// The process's servers, started if this is the first call.
    pub fn get() -> Arc<ProcessServices> {
        let mut guard = PROCESS_SERVICES
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(s) = guard.as_ref() {
            return s.clone();
        }
        let services = Arc::new(ProcessServices {
            pg: Postgres::start(),
            s3: S3Server::start(),
        });
        // SAFETY: registers a plain function with no arguments, run once at exit.
        let registered = unsafe { libc::atexit(stop_process_services) };
        assert_eq!(registered, 0, "atexit");
        *guard = Some(services.clone());
        services
    }

    /// A database and a bucket of their own on the process's servers.
    pub fn new_side() -> super::SharedSide {
        let services = Self::get();
        let n = SIDES.fetch_add(1, Ordering::SeqCst);
        let mut side = super::SharedSide::new(&services.pg, &services.s3, &format!("store-{n}"));
        side.keep_alive(services);
        side
    }
}
