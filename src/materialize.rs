//! `get`: writing a version out as an ordinary directory tree.

use crate::catalog::time_of;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::catalog::Db;

use crate::blobs::BlobStore;
use crate::catalog::nodes::{self, NodeId};
use crate::catalog::versions::{self, VersionRow};
use crate::error::{Error, IoContext, Result};
use crate::names::VersionRef;
use crate::progress;
use crate::reference::Reference;
use crate::store::Store;
use crate::tree::{self, Item};

pub struct GetReport {
    pub version: VersionRow,
    pub files: u64,
    pub reflinked: u64,
    /// Files and symlinks in the destination that the version does not have, removed
    /// ([`Existing::Delete`]) or kept ([`Existing::Merge`]).
    pub extra: u64,
}

/// What `get` does with a destination that already holds something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Refuse it: an empty or new directory only.
    Refuse,
    /// Write the version over it and keep what the version does not have (`--merge`).
    Merge,
    /// Make it exactly the version, removing what the version does not have (`--delete`).
    Delete,
}

/// Writes version `r` into `dest` (created if missing), keeping each file's permission bits
/// and modification time. A destination that holds something is refused unless `existing`
/// says to merge into it or to make it exact. Every blob is checked to be present before
/// anything is written, and nothing is written through a symlink found in `dest`: a link
/// where the version has a directory is replaced by the directory.
pub fn get(store: &Store, r: &VersionRef, dest: &Path, existing: Existing) -> Result<GetReport> {
    let conn = store.conn();
    let version = versions::resolve(conn, r)?;
    let occupied = first_names(dest)?;
    if existing == Existing::Refuse && !occupied.is_empty() {
        return Err(Error::refused(
            format!("get into {}", dest.display()),
            format!(
                "the directory is not empty ({}); add --delete to make it exactly {}, removing \
                 what the version does not have, or --merge to write the version over it and \
                 keep the rest",
                occupied.join(", "),
                version.reference()
            ),
        ));
    }
    // Everything that would stop the copy halfway is found before anything is written.
    let base_len = std::path::absolute(dest).at(dest)?.as_os_str().len();
    tree::walk(conn, version.root, b"", &mut |path, e| {
        let what = || format!("{} {}", version.reference(), String::from_utf8_lossy(path));
        if base_len + 1 + path.len() >= libc::PATH_MAX as usize {
            return Err(Error::invalid(
                what(),
                format!(
                    "under {} its path would be too long: over the system's limit of {} bytes",
                    dest.display(),
                    libc::PATH_MAX - 1
                ),
            ));
        }
        match &e.item {
            // A shared store's blobs are fetched as they are copied, and checked then.
            Item::File { blob, .. }
                if store.blobs.objects().is_none() && !store.blobs.contains(blob) =>
            {
                Err(Error::Corrupt {
                    what: what(),
                    why: format!(
                        "its content (blob {blob}) is missing from the store; see artifactfs verify"
                    ),
                })
            }
            Item::Reference(r) => r.open(e.mtime_ns).map(drop),
            _ => Ok(()),
        }
    })?;
    fs::create_dir_all(dest).at(dest)?;
    let extra = match (occupied.is_empty(), existing) {
        (true, _) | (_, Existing::Refuse) => 0,
        (false, mode) => sweep(conn, version.root, dest, mode == Existing::Delete)?,
    };
    let info = crate::catalog::nodes::info(conn, version.root)?;
    let bar = progress::bytes(info.bytes);
    let mut report = GetReport {
        version: version.clone(),
        files: 0,
        reflinked: 0,
        extra,
    };
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    tree::walk_all(conn, version.root, b"", &mut |path, e| {
        let target = dest.join(std::ffi::OsStr::from_bytes(path));
        match &e.item {
            Item::Dir { .. } => {
                make_real_dir(&target)?;
                dirs.push((target, e.mode, e.mtime_ns));
            }
            Item::File { blob, size } => {
                remove_existing(&target)?;
                let what = || format!("{} {}", version.reference(), String::from_utf8_lossy(path));
                if place_file(&store.blobs, blob, *size, what, &target)? {
                    report.reflinked += 1;
                }
                set_file_meta(&target, e.mode, e.mtime_ns)?;
                report.files += 1;
                bar.inc(*size);
            }
            Item::Reference(r) => {
                place_reference(r, e.mode, e.mtime_ns, &target)?;
                report.files += 1;
                bar.inc(r.size);
            }
            Item::Symlink { target: link } => {
                remove_existing(&target)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(link), &target)
                    .at(&target)?;
                set_link_mtime(&target, e.mtime_ns)?;
                report.files += 1;
            }
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    // Directory times last, deepest first, since filling a directory changes its mtime.
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(&dir)
            .at(&dir)?;
        f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
            .at(&dir)?;
        f.set_times(FileTimes::new().set_modified(time_of(mtime)))
            .at(&dir)?;
    }
    Ok(report)
}

/// The first few names in `dir` (and `…` when there are more); empty when it is missing or
/// empty.
fn first_names(dir: &Path) -> Result<Vec<String>> {
    const SHOWN: usize = 3;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        // Not a directory: creating it fails below, naming it.
        Err(_) => return Ok(Vec::new()),
    };
    let mut names = Vec::new();
    for e in entries {
        names.push(e.at(dir)?.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    if names.len() > SHOWN {
        names.truncate(SHOWN);
        names.push("…".into());
    }
    Ok(names)
}

/// Counts the files and symlinks under `dir` that the version's directory `node` does not
/// have at the same path (or has as a directory), and with `remove` removes them, along with
/// directories the version does not have. Symlinks are never followed.
fn sweep(conn: &Db, node: NodeId, dir: &Path, remove: bool) -> Result<u64> {
    let mut extra = 0;
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let path = entry.path();
        let is_dir = entry.file_type().at(&path)?.is_dir();
        let wanted = nodes::lookup(conn, node, entry.file_name().as_bytes())?.map(|e| e.item);
        match (wanted, is_dir) {
            (Some(Item::Dir { node }), true) => extra += sweep(conn, node, &path, remove)?,
            // A link or file where the version has a directory is replaced by it; a file
            // where it has a file, by the version's.
            (Some(Item::Dir { .. }), false) => {}
            (Some(_), false) => {}
            // A directory where the version has a file: only --delete replaces it.
            (Some(_), true) if !remove => {
                return Err(Error::IsADirectory(format!(
                    "{}, where the version has a file,",
                    path.display()
                )));
            }
            (_, _) => {
                extra += files_in(&path)?;
                if remove {
                    match is_dir {
                        true => fs::remove_dir_all(&path).at(&path)?,
                        false => fs::remove_file(&path).at(&path)?,
                    }
                }
            }
        }
    }
    Ok(extra)
}

/// How many files and symlinks `path` is or holds.
fn files_in(path: &Path) -> Result<u64> {
    if !fs::symlink_metadata(path).at(path)?.is_dir() {
        return Ok(1);
    }
    let mut n = 0;
    for e in fs::read_dir(path).at(path)? {
        n += files_in(&e.at(path)?.path())?;
    }
    Ok(n)
}

/// Ensures `path` is a directory of its own: a symlink or file there is replaced, so
/// nothing is written outside the destination through a link.
fn make_real_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => fs::remove_file(path).at(path)?,
        Err(_) => {}
    }
    fs::create_dir(path).at(path)
}

/// Sets a symlink's own modification time (not its target's).
fn set_link_mtime(path: &Path, mtime_ns: i64) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(path.display().to_string(), "contains a NUL byte"))?;
    let t = libc::timespec {
        tv_sec: mtime_ns.div_euclid(1_000_000_000),
        tv_nsec: mtime_ns.rem_euclid(1_000_000_000),
    };
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        t,
    ];
    // SAFETY: valid path and two timespecs, as utimensat requires.
    if unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } != 0
    {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn remove_existing(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::IsADirectory(format!(
            "{}, where the version has a file,",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

/// Clones the blob into `target` where the filesystem can share extents, else copies it,
/// checking the copy against the digest (a damaged blob leaves no file behind). Returns
/// whether it was a reflink.
fn place_file(
    blobs: &BlobStore,
    blob: &crate::hash::Digest,
    size: u64,
    what: impl Fn() -> String,
    target: &Path,
) -> Result<bool> {
    let src = blobs.open_content(blob, size, &what)?;
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .at(target)?;
    // SAFETY: both descriptors are open for the duration of the call.
    if unsafe { libc::ioctl(out.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(true);
    }
    if let Err(e) = blobs.copy_content(blob, size, what, &mut out) {
        let _ = fs::remove_file(target);
        return Err(e);
    }
    Ok(false)
}

fn set_file_meta(target: &Path, mode: u32, mtime_ns: i64) -> Result<()> {
    let f = File::options().write(true).open(target).at(target)?;
    f.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
        .at(target)?;
    f.set_times(FileTimes::new().set_modified(time_of(mtime_ns)))
        .at(target)
}

/// Copies a reference's content into `target`, checking it against its digest. The copy is
/// made beside `target` and renamed over it once complete, so a file that changed leaves no
/// copy behind, and a `get` into the referenced directory itself reads each file before
/// replacing it.
fn place_reference(r: &Reference, mode: u32, mtime_ns: i64, target: &Path) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".artifactfs-get-")
        .tempfile_in(dir)
        .at(dir)?;
    r.copy_to(mtime_ns, temp.as_file_mut())?;
    set_file_meta(temp.path(), mode, mtime_ns)?;
    remove_existing(target)?;
    temp.persist(target)
        .map_err(|e| Error::io(target, e.error))?;
    Ok(())
}
