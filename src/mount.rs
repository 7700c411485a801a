//! `mount` and `umount`: checking the mount point, serving in a background process, and
//! unmounting cleanly.
//!
//! `mount` without `--foreground` starts itself again with `--foreground` in a new session and
//! waits on a pipe until that process reports the filesystem ready (or why it failed), so the
//! command returns only once the mount answers.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use crate::error::{Error, IoContext, Result};
use crate::fs::{AliasWatch, Fs, Inodes};
use crate::fuse::Adapter;
use crate::mounts::{FS_TYPE, mount_type, server_pid};

/// The environment variable naming the descriptor a background mount reports readiness on.
const READY_FD_ENV: &str = "ARTIFACTFS_READY_FD";
const READY_FD: i32 = 3;
/// Where the mount process logs, inside the store.
pub const LOG_FILE: &str = "mount.log";
/// Inodes of version entries the server keeps before asking the kernel to drop some: about
/// 40 MB of its memory.
const MAX_CACHED_ENTRIES: usize = 100_000;
const MAX_CACHED_ENV: &str = "ARTIFACTFS_MAX_CACHED_ENTRIES";
/// How often the catalog is checked for alias moves made outside this mount.
const ALIAS_POLL: Duration = Duration::from_millis(200);

/// Request-loop threads: enough to overlap catalog lookups with reads on a small machine.
/// On a shared store a request may wait for a download or the database, so there are
/// enough for as many readers as loaders usually start to wait at once.
fn worker_threads(shared: bool) -> usize {
    let local = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        * 2;
    match shared {
        true => local.max(16),
        false => local,
    }
}

/// How to mount.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Stay attached and serve until unmounted.
    pub foreground: bool,
    /// Mount over a directory that holds files (hiding them until unmounted).
    pub nonempty: bool,
    /// Versions only, no drafts/; files open without asking the server.
    pub read_only: bool,
}

/// Refuses mount points that do not exist, are not directories, are already mounts, or hold
/// files (unless `nonempty`): a mount hides what is below it.
fn check_mountpoint(mountpoint: &Path, nonempty: bool) -> Result<PathBuf> {
    let stale = fs::metadata(mountpoint)
        .err()
        .is_some_and(|e| e.raw_os_error() == Some(libc::ENOTCONN));
    if stale {
        // The server of an earlier mount died: detach its dead mount and mount afresh.
        eprintln!(
            "artifactfs: replacing a stale mount at {} (its server is gone)",
            mountpoint.display()
        );
        detach(mountpoint)?;
    }
    let meta = fs::metadata(mountpoint).map_err(|e| {
        Error::invalid(
            format!("mount point {}", mountpoint.display()),
            match e.kind() {
                std::io::ErrorKind::NotFound => "does not exist".to_string(),
                _ => e.to_string(),
            },
        )
    })?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(format!(
            "mount point {}",
            mountpoint.display()
        )));
    }
    let abs = fs::canonicalize(mountpoint).at(mountpoint)?;
    if mount_type(&abs)?.is_some() {
        return Err(Error::invalid(
            format!("mount point {}", abs.display()),
            format!(
                "something is mounted there already; unmount it first with `artifactfs umount {}`",
                abs.display()
            ),
        ));
    }
    if !nonempty {
        let mut names: Vec<String> = fs::read_dir(&abs)
            .at(&abs)?
            .take(4)
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()
            .at(&abs)?;
        if !names.is_empty() {
            names.sort();
            if names.len() > 3 {
                names[3] = "…".into();
            }
            return Err(Error::invalid(
                format!("mount point {}", abs.display()),
                format!(
                    "the directory is not empty ({}): the mount would hide its files until unmounted; use an \
                     empty directory, or --nonempty (-o nonempty with mount -t) to mount over them",
                    names.join(", ")
                ),
            ));
        }
    }
    Ok(abs)
}

/// Lazily unmounts a dead mount (the kernel drops it once nothing uses it).
fn detach(mountpoint: &Path) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    let ok = if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid(mountpoint.display().to_string(), "contains a NUL byte"))?;
        // SAFETY: `c` is a valid path for the duration of the call.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) == 0 }
    } else {
        Command::new("fusermount3")
            .args(["-u", "-z", "--"])
            .arg(mountpoint)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok {
        return Err(Error::invalid(
            format!("mount point {}", mountpoint.display()),
            "holds a stale mount whose server is gone, and it could not be detached",
        ));
    }
    Ok(())
}

/// `artifactfs mount`: serves the store at `mountpoint`, in the background unless
/// `opts.foreground`. `ready` is told the mount point once the mount answers.
pub fn mount(
    store_root: &Path,
    mountpoint: &Path,
    opts: Options,
    ready: &mut dyn FnMut(&Path),
) -> Result<()> {
    // Two mounts on one mount point at once must not both pass the checks and stack: the
    // second waits here, then finds the first mounted. A server started by `mount` below
    // runs under its parent's lock.
    let launched = std::env::var_os(READY_FD_ENV).is_some();
    let lock = if launched {
        None
    } else {
        Some(lock_parent_of(mountpoint)?)
    };
    let mountpoint = check_mountpoint(mountpoint, opts.nonempty)?;
    let store_root = &std::path::absolute(store_root).at(store_root)?;
    // A shared store's object store must answer, and take the credentials, before anything
    // is mounted: a mount that cannot reach it would fail every read with EIO. (A server
    // started below was checked by the `mount` that started it.)
    if !launched && let Some(sh) = crate::store_config::read(store_root)? {
        crate::objects::S3Client::connect(&crate::objects::S3Config::from_env(&sh.objects)?)?;
    }
    if opts.foreground {
        return serve(store_root, &mountpoint, lock, ready, opts.read_only);
    }
    // Open the store here too, so its errors reach the user directly.
    drop(crate::store::Store::open(store_root)?);
    let (mut ready_r, ready_w) = std::io::pipe().at(Path::new("pipe"))?;
    let exe = std::env::current_exe().at(Path::new("/proc/self/exe"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--store")
        .arg(store_root)
        .arg("mount")
        .arg(&mountpoint)
        .arg("--foreground")
        .args(opts.nonempty.then_some("--nonempty"))
        .args(opts.read_only.then_some("--read-only"))
        .env(READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let w = ready_w.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself keeps close-on-exec; clear it explicitly in that case.
            let ok = if w == READY_FD {
                libc::fcntl(w, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(w, READY_FD) >= 0
            };
            if !ok {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().at(Path::new("artifactfs mount --foreground"))?;
    drop(ready_w);
    let Some(report) = read_report(&mut ready_r, READY_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::invalid(
            format!("mount at {}", mountpoint.display()),
            format!(
                "the mount process did not become ready within {} s; see {}",
                READY_TIMEOUT.as_secs(),
                store_root.join(LOG_FILE).display()
            ),
        ));
    };
    if report.trim() == "ready" {
        ready(&mountpoint);
        return Ok(());
    }
    let _ = child.wait();
    let log = store_root.join(LOG_FILE);
    Err(match report.trim() {
        "" => Error::invalid(
            format!("mount at {}", mountpoint.display()),
            format!(
                "the mount process exited before the filesystem was ready; see {}",
                log.display()
            ),
        ),
        msg => Error::invalid(
            format!("mount at {}", mountpoint.display()),
            msg.to_string(),
        ),
    })
}

/// How long `mount` waits for its server to report.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads what the server reports until it closes the pipe; None if that takes too long.
fn read_report(pipe: &mut std::io::PipeReader, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n == 0 {
            return None;
        }
        match pipe.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Some(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

/// Locks the directory that holds `mountpoint` (not the mount point itself, which may be a
/// dead mount) for the duration of one mount's checks and setup.
fn lock_parent_of(mountpoint: &Path) -> Result<fs::File> {
    let abs = std::path::absolute(mountpoint).at(mountpoint)?;
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let f = fs::File::open(parent).at(parent)?;
    f.lock().at(parent)?;
    Ok(f)
}

/// Tells the process that started us (if any) how the mount went.
/// The pipe to the process that started us, if any. Taken before any thread exists (the
/// environment is not thread-safe to change), and kept from processes we start.
fn take_ready_pipe() -> Option<fs::File> {
    let fd = std::env::var(READY_FD_ENV).ok()?.parse::<i32>().ok()?;
    // SAFETY: still single-threaded; the descriptor was set up for us by `mount` and is
    // owned here from now on.
    unsafe {
        std::env::remove_var(READY_FD_ENV);
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Some(fs::File::from(OwnedFd::from_raw_fd(fd)))
    }
}

/// Tells the starting process how the mount went, once; closing the pipe ends its wait.
fn report(pipe: &mut Option<fs::File>, msg: &str) {
    if let Some(mut f) = pipe.take() {
        let _ = f.write_all(msg.as_bytes());
    }
}

fn serve(
    store_root: &Path,
    mountpoint: &Path,
    lock: Option<fs::File>,
    ready: &mut dyn FnMut(&Path),
    read_only: bool,
) -> Result<()> {
    let mut pipe = take_ready_pipe();
    // Started by `mount`, which tells the user; else this process is the one to.
    let mut told: &mut dyn FnMut(&Path) = &mut |_: &Path| {};
    if pipe.is_none() {
        told = ready;
    }
    let result = serve_inner(store_root, mountpoint, &mut pipe, lock, told, read_only);
    if let Err(e) = &result {
        log::error!("{e}");
        report(&mut pipe, &format!("{e}\n"));
    }
    result
}

fn serve_inner(
    store_root: &Path,
    mountpoint: &Path,
    pipe: &mut Option<fs::File>,
    lock: Option<fs::File>,
    ready: &mut dyn FnMut(&Path),
    read_only: bool,
) -> Result<()> {
    // Request threads allocate and free inode data in turns; with an arena per thread, glibc
    // keeps memory freed in one from serving another, and the server grows for nothing.
    // SAFETY: mallopt only tunes the allocator; it is called before any thread is started.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    let limit = max_cached_entries()?;
    raise_open_files_limit();
    let fs = Fs::new(store_root)?.with_read_only(read_only);
    let mut aliases = fs.alias_watch()?;
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let mut config = Config::default();
    // The type shows as fuse.artifactfs in /proc/mounts, so `findmnt -t fuse.artifactfs` and
    // `df -t fuse.artifactfs` find the mount. fusermount3 is given the subtype as such; a
    // mount made directly, as root, passes it to the kernel as an option.
    let subtype = match root {
        true => MountOption::CUSTOM("subtype=artifactfs".into()),
        false => MountOption::Subtype("artifactfs".into()),
    };
    config.mount_options = vec![
        MountOption::FSName(store_root.display().to_string()),
        subtype,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if read_only {
        // The kernel refuses every change itself (EROFS), and keeps the atime it caches.
        config.mount_options.push(MountOption::RO);
    }
    // Root mounts are for everyone on the machine; a user's mount stays the user's.
    config.acl = if root {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(worker_threads(fs.is_shared()));
    config.clone_fd = true;
    let notifier = Arc::new(OnceLock::new());
    let inodes = fs.inodes();
    let adapter = Adapter::new(fs, notifier.clone());
    let session = fuser::Session::new(adapter, mountpoint, &config).map_err(|e| {
        if !root && e.kind() == std::io::ErrorKind::PermissionDenied {
            // A regular user's mount goes through the setuid fusermount3, which still opens
            // /dev/fuse as that user.
            Error::invalid(
                format!("mount at {}", mountpoint.display()),
                format!("{e}: /dev/fuse must be readable and writable by every user (mode 0666, as Debian's udev rule sets it) for regular users to mount"),
            )
        } else {
            Error::io(mountpoint, e)
        }
    })?;
    log::info!(
        "serving {} at {}",
        store_root.display(),
        mountpoint.display()
    );
    let _ = notifier.set(session.notifier());
    let evictor = session.notifier();
    std::thread::Builder::new()
        .name("evict".into())
        .spawn(move || evict_entries(&inodes, &evictor, limit))
        .at(Path::new("evict thread"))?;
    let watcher = session.notifier();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let watching = std::thread::Builder::new()
        .name("aliases".into())
        .spawn(move || watch_aliases(&mut aliases, &watcher, &stopped))
        .at(Path::new("alias thread"))?;
    drop(lock);
    report(pipe, "ready\n");
    ready(mountpoint);
    let served = session.run().map_err(|e| Error::io(mountpoint, e));
    // Its catalog connection must close before the process exits: the last connection to
    // close folds the write-ahead log into the catalog, which the next user then finds whole
    // even without the -wal file.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = watching.join();
    served?;
    log::info!("unmounted {}", mountpoint.display());
    Ok(())
}

/// `MAX_CACHED_ENTRIES`, or `ARTIFACTFS_MAX_CACHED_ENTRIES` when set: a machine with memory
/// to spare may keep more, so that walking a huge version again finds it all cached.
fn max_cached_entries() -> Result<usize> {
    match std::env::var(MAX_CACHED_ENV) {
        Err(_) => Ok(MAX_CACHED_ENTRIES),
        Ok(v) => v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::invalid(
                format!("{MAX_CACHED_ENV}={v}"),
                "expected a number of inodes, at least 1",
            )
        }),
    }
}

/// Keeps the server's memory bounded however many files are looked up: past `limit`
/// inodes of version entries, asks the kernel to drop the oldest names.
/// The kernel forgets those no process is using, and looks them up again when they are next
/// used. Runs in its own thread: the kernel locks the parent directory to drop a name, which
/// a request thread may be serving.
fn evict_entries(inodes: &Inodes, notifier: &fuser::Notifier, limit: usize) {
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let victims = inodes.eviction_candidates(limit);
        if !victims.is_empty() {
            log::debug!("asking the kernel to drop {} names", victims.len());
        }
        let evicted = !victims.is_empty();
        for (parent, name) in victims {
            match notifier.inval_entry(fuser::INodeNo(parent), std::ffi::OsStr::from_bytes(&name)) {
                Ok(()) => {}
                // Unmounted: the server is finishing.
                Err(e) => {
                    log::debug!("inode eviction stops: {e}");
                    return;
                }
            }
        }
        if evicted {
            // SAFETY: malloc_trim only returns free heap memory to the system.
            unsafe { libc::malloc_trim(0) };
        }
    }
}

/// Shows alias moves made outside this mount (by the CLI, another mount) within a second:
/// the kernel keeps alias targets, so it must be told when one moves.
fn watch_aliases(
    watch: &mut AliasWatch,
    notifier: &fuser::Notifier,
    stop: &std::sync::atomic::AtomicBool,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(ALIAS_POLL);
        match watch.moved() {
            Ok(moved) if !moved.is_empty() => {
                log::debug!("{} aliases moved", moved.len());
                crate::fuse::invalidate_aliases(notifier, &moved);
            }
            Ok(_) => {}
            Err(e) => log::warn!("could not check the catalog for alias moves: {e}"),
        }
    }
}

/// Lets the server keep as many files open as the system allows it (blobs of version files
/// being read, and every open draft file), not the 1,024 a login shell starts with.
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the given struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// `artifactfs umount`: unmounts and waits for the serving process to finish.
pub fn umount(mountpoint: &Path) -> Result<()> {
    let abs = fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.to_path_buf());
    match mount_type(&abs)? {
        // Mounts made by older versions directly as root have the plain type "fuse".
        Some(t) if t == FS_TYPE || t == "fuse" => {}
        _ => {
            return Err(Error::invalid(
                format!("{}", mountpoint.display()),
                "is not an artifactfs mount point",
            ));
        }
    }
    let pid = server_pid(&abs);
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let c = std::ffi::CString::new(abs.as_os_str().as_encoded_bytes())
            .map_err(|_| Error::invalid(abs.display().to_string(), "contains a NUL byte"))?;
        // SAFETY: `c` is a valid path for the duration of the call.
        if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            return Err(umount_error(&abs, std::io::Error::last_os_error()));
        }
    } else {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&abs)
            .output()
            .at(Path::new("fusermount3"))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            let busy = msg.contains("busy");
            return Err(if busy {
                umount_error(&abs, std::io::Error::from_raw_os_error(libc::EBUSY))
            } else {
                Error::invalid(
                    abs.display().to_string(),
                    format!("fusermount3 -u failed: {msg}"),
                )
            });
        }
    }
    if let Some(pid) = pid {
        wait_for_exit(pid, Duration::from_secs(30));
    }
    Ok(())
}

fn umount_error(path: &Path, e: std::io::Error) -> Error {
    if e.raw_os_error() == Some(libc::EBUSY) {
        Error::refused(
            path.display().to_string(),
            "is busy: a process has a file or directory open there (see `fuser -vm`)",
        )
    } else {
        Error::io(path, e)
    }
}

fn wait_for_exit(pid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        // A zombie still "exists" for kill(0); it is done serving once it is one.
        if fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
