//! `artifactfs doctor`: how a store and this machine look to artifactfs, and what is wrong
//! with each, with a fix. It reads; it never repairs (the fixes are for the user to run).

use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::catalog::{self, MIGRATIONS};
use crate::store::{self, Store};

/// Below this much free space on the store's filesystem, a large `log` or copy may fail.
const LOW_SPACE: u64 = 1 << 30;

/// Where mount(8) looks for the helper of type `fuse.artifactfs`.
pub const MOUNT_HELPER: &str = "/sbin/mount.fuse.artifactfs";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something artifactfs cannot do until it is fixed.
    Problem,
    /// Works, but not fully or not for long.
    Warning,
}

#[derive(Debug)]
pub struct Finding {
    pub severity: Severity,
    pub what: String,
    pub why: String,
    pub fix: String,
}

#[derive(Debug)]
pub struct MountState {
    pub mountpoint: String,
    /// False when the kernel still has the mount but its server is gone.
    pub answering: bool,
    pub server_pid: Option<i32>,
    /// "on" or "off", as the server reports it.
    pub passthrough: Option<String>,
}

#[derive(Debug)]
pub struct SharedState {
    pub catalog: String,
    pub objects: String,
    pub cache_size: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    pub store: PathBuf,
    pub exists: bool,
    pub schema: Option<i64>,
    pub supported_schema: i64,
    pub catalog_bytes: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub free_bytes: Option<u64>,
    pub artifacts: Option<usize>,
    pub drafts: Option<usize>,
    /// A shared store: its database (without a password), its objects, and the cache's size.
    pub shared: Option<SharedState>,
    pub mounts: Vec<MountState>,
    pub findings: Vec<Finding>,
}

impl Report {
    fn find(
        &mut self,
        severity: Severity,
        what: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            what: what.into(),
            why: why.into(),
            fix: fix.into(),
        });
    }

    pub fn has_problems(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Problem)
    }
}

pub fn examine(store_root: &Path) -> Report {
    let store_root = std::path::absolute(store_root).unwrap_or_else(|_| store_root.to_path_buf());
    let mut r = Report {
        exists: store_root.is_dir(),
        supported_schema: MIGRATIONS.len() as i64,
        store: store_root.clone(),
        ..Default::default()
    };
    if r.exists {
        examine_store(&mut r);
    } else if store_root.exists() {
        r.find(
            Severity::Problem,
            format!("store {}", store_root.display()),
            "it is not a directory",
            "pass another directory with --store or $ARTIFACTFS_STORE",
        );
    } else {
        r.find(
            Severity::Warning,
            format!("store {}", store_root.display()),
            "there is no store here yet",
            format!(
                "`artifactfs init {}` creates it (so does logging a first version into it); \
                 or point --store or $ARTIFACTFS_STORE at an existing one",
                store_root.display()
            ),
        );
    }
    examine_fuse(&mut r);
    examine_mounts(&mut r);
    r
}

fn examine_store(r: &mut Report) {
    let root = r.store.clone();
    let what = format!("store {}", root.display());
    if let Some(cause) = catalog::read_only_cause(&root) {
        r.find(
            Severity::Warning,
            &what,
            format!("it cannot be changed: {cause}; versions can be read, nothing can be logged"),
            "remount its filesystem read-write, or run as a user who may write to it",
        );
    }
    if let Ok(st) = store::filesystem_of(&root) {
        let free = st.f_bavail * st.f_frsize;
        r.free_bytes = Some(free);
        if free < LOW_SPACE {
            r.find(
                Severity::Warning,
                &what,
                format!(
                    "its filesystem has only {} free",
                    indicatif::HumanBytes(free)
                ),
                "free space there; `artifactfs gc` removes blobs that nothing references",
            );
        }
    }
    for name in ["catalog.db", "catalog.db-wal"] {
        r.catalog_bytes += fs::metadata(root.join(name)).map_or(0, |m| m.len());
    }
    let store = match Store::open(&root) {
        Ok(s) => s,
        Err(e) => {
            let fix = match e {
                crate::error::Error::NewerSchema { .. } => {
                    "use the artifactfs build that wrote it, or a newer one".to_string()
                }
                _ => "fix the cause named, then run `artifactfs doctor` again".to_string(),
            };
            r.find(
                Severity::Problem,
                &what,
                format!("it cannot be opened: {e}"),
                fix,
            );
            return;
        }
    };
    r.schema = store.catalog.schema_version().ok();
    if let Some(sh) = store.shared() {
        r.supported_schema = catalog::PG_MIGRATIONS.len() as i64;
        r.shared = Some(SharedState {
            catalog: catalog::postgres::redact(&sh.catalog),
            objects: sh.objects.clone(),
            cache_size: sh.cache_size,
        });
        if let Some(objects) = store.blobs.objects()
            && let Some(Err(e)) = objects.list().next()
        {
            r.find(
                Severity::Problem,
                format!("object store {}", objects.store()),
                e.to_string(),
                "check the endpoint, the bucket and the AWS_* credentials, then run \
                 `artifactfs doctor` again",
            );
        }
    }
    if let Err(e) = store.catalog.check_integrity(false) {
        r.find(
            Severity::Problem,
            format!("catalog {}", store.catalog.path().display()),
            e.to_string(),
            "restore catalog.db from a backup (blobs/ still holds every file's content); \
             `artifactfs verify` then tells which versions are whole",
        );
    }
    r.artifacts = crate::catalog::versions::artifacts(store.conn())
        .ok()
        .map(|a| a.len());
    r.drafts = crate::catalog::drafts::list(store.conn())
        .ok()
        .map(|d| d.len());
    let _ = store.blobs.for_each_stored(|d| {
        r.blobs += 1;
        r.blob_bytes += fs::metadata(store.blobs.path(&d)).map_or(0, |m| m.len());
        Ok(())
    });
    let leftovers = fs::read_dir(store.blobs.staging_dir()).map_or(0, |d| d.count());
    if leftovers > 0 {
        r.find(
            Severity::Warning,
            format!("{}", store.blobs.staging_dir().display()),
            format!(
                "{} being written, or left by writers that were interrupted",
                crate::app::plural(leftovers as u64, "file", "files")
            ),
            "`artifactfs gc` removes leftovers (it waits for writers that are still running)",
        );
    }
}

fn examine_fuse(r: &mut Report) {
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    match fs::metadata("/dev/fuse") {
        Ok(m) if m.file_type().is_char_device() => {
            if !root && m.permissions().mode() & 0o006 != 0o006 {
                r.find(
                    Severity::Warning,
                    "/dev/fuse",
                    "only root may open it, so other users cannot mount",
                    "chmod 0666 /dev/fuse (scripts/setup.sh does; Debian's udev rule does it at boot)",
                );
            }
        }
        Ok(_) => r.find(
            Severity::Problem,
            "/dev/fuse",
            "it is not a character device, so nothing can be mounted",
            "remove it and load the fuse module: modprobe fuse",
        ),
        Err(e) => r.find(
            Severity::Problem,
            "/dev/fuse",
            format!("{e}: nothing can be mounted"),
            "modprobe fuse; in a container, start it with --device /dev/fuse",
        ),
    }
    let fusermount = ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file());
    match fusermount {
        None => r.find(
            Severity::Warning,
            "fusermount3",
            "it is not installed: users other than root cannot mount or unmount",
            "apt-get install fuse3",
        ),
        Some(p) if fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o4000 == 0) => r.find(
            Severity::Warning,
            p.display().to_string(),
            "it is not set-user-ID root: users other than root cannot mount",
            format!("chmod u+s {}", p.display()),
        ),
        Some(_) => {}
    }
    if fs::metadata(MOUNT_HELPER).is_err() {
        r.find(
            Severity::Warning,
            MOUNT_HELPER,
            "it is missing: `mount -t fuse.artifactfs` and /etc/fstab lines will not work",
            "run scripts/install.sh, or: ln -s \"$(command -v artifactfs)\" /sbin/mount.fuse.artifactfs",
        );
    }
}

fn examine_mounts(r: &mut Report) {
    let Ok(all) = crate::mounts::mounts() else {
        return;
    };
    let want = r.store.to_string_lossy().into_owned();
    // Mounted through /dev/fuse the type is plain "fuse" (fusermount3 adds the subtype), so
    // a mount is ours if its source is the store and its root says who serves it.
    for m in all.into_iter().filter(|m| m.is_fuse() && m.source == want) {
        let path = Path::new(&m.mountpoint);
        let answering = !matches!(
            fs::metadata(path),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN)
        );
        let server_pid = crate::mounts::server_pid(path);
        if answering && server_pid.is_none() {
            continue; // another filesystem over the same directory (bindfs, say)
        }
        if !answering {
            r.find(
                Severity::Problem,
                format!("mount {}", m.mountpoint),
                "its server is gone: every access fails with ENOTCONN",
                format!(
                    "umount -l {0} (or fusermount3 -u -z {0}), then mount again",
                    m.mountpoint
                ),
            );
        }
        r.mounts.push(MountState {
            server_pid,
            passthrough: crate::mounts::root_xattr(path, crate::mounts::XATTR_PASSTHROUGH),
            answering,
            mountpoint: m.mountpoint,
        });
    }
}
