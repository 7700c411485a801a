//! Turning local paths into draft changes: scan what the user named, then store the file
//! contents as blobs on all cores.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::blobs::Batch;
use crate::catalog::drafts::Change;
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;
use crate::tree;

/// One thing to record in a draft.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it lands in the draft.
    pub dest: Vec<u8>,
    pub kind: SourceKind,
    pub mode: u32,
    pub mtime_ns: i64,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    File { path: PathBuf, size: u64 },
    Symlink { target: Vec<u8> },
    Dir,
}

/// A source whose content is in the blob store: ready to be recorded.
pub struct Stored {
    pub dest: Vec<u8>,
    pub change: Change,
    pub mode: u32,
    pub mtime_ns: i64,
}

fn mtime_ns(meta: &fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

/// Checks a `--as` destination: relative, no `.`/`..`.
pub fn parse_dest(dest: &str) -> Result<Vec<u8>> {
    let bytes = dest.as_bytes();
    if bytes.starts_with(b"/") {
        return Err(Error::invalid(
            format!("--as {dest}"),
            "must be a path relative to the draft root",
        ));
    }
    let parts = tree::components(bytes).ok_or_else(|| {
        Error::invalid(
            format!("--as {dest}"),
            "'.' and '..' components are not allowed",
        )
    })?;
    if parts.is_empty() {
        return Err(Error::invalid(
            format!("--as {dest:?}"),
            "names no path; leave --as out to add at the top of the draft",
        ));
    }
    if parts.iter().any(|p| p.len() > crate::error::NAME_MAX) {
        return Err(Error::NameTooLong(format!("--as {dest}")));
    }
    Ok(parts.join(&b'/'))
}

/// Lists what `paths` contribute. A directory contributes its contents (under `dest` if
/// given); a single file lands at `dest` if given, else at its file name. Symlinks inside
/// directories are kept as links; a symlink named on the command line is followed.
pub fn scan(paths: &[PathBuf], dest: Option<&[u8]>) -> Result<Vec<Source>> {
    let mut out = Vec::new();
    let single = paths.len() == 1;
    for path in paths {
        let meta = fs::metadata(path).at(path)?;
        if meta.is_dir() {
            let prefix = dest.unwrap_or(b"").to_vec();
            if !prefix.is_empty() {
                out.push(source_of(prefix.clone(), path, &meta)?);
            }
            scan_dir(path, &prefix, &mut out)?;
        } else {
            let name = path
                .file_name()
                .ok_or_else(|| Error::invalid(path.display().to_string(), "has no file name"))?
                .as_bytes();
            let dest = match dest {
                Some(d) if single => d.to_vec(),
                Some(d) => tree::join(d, name),
                None => name.to_vec(),
            };
            out.push(source_of(dest, path, &meta)?);
        }
    }
    Ok(out)
}

fn scan_dir(dir: &Path, prefix: &[u8], out: &mut Vec<Source>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .at(dir)?
        .collect::<std::io::Result<Vec<_>>>()
        .at(dir)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).at(&path)?;
        let dest = tree::join(prefix, entry.file_name().as_bytes());
        out.push(source_of(dest.clone(), &path, &meta)?);
        if meta.is_dir() {
            scan_dir(&path, &dest, out)?;
        }
    }
    Ok(())
}

fn source_of(dest: Vec<u8>, path: &Path, meta: &fs::Metadata) -> Result<Source> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        SourceKind::File {
            path: path.to_path_buf(),
            size: meta.len(),
        }
    } else if ft.is_dir() {
        SourceKind::Dir
    } else if ft.is_symlink() {
        SourceKind::Symlink {
            target: fs::read_link(path)
                .at(path)?
                .as_os_str()
                .as_bytes()
                .to_vec(),
        }
    } else {
        return Err(Error::invalid(
            path.display().to_string(),
            "is not a regular file, directory or symlink (devices, FIFOs and sockets cannot be stored)",
        ));
    };
    Ok(Source {
        dest,
        kind,
        mode: meta.mode() & 0o7777,
        mtime_ns: mtime_ns(meta),
    })
}

/// The change `s` will become, with an all-zero digest standing in for the content: for
/// checking that a set of sources can be recorded before copying anything.
pub fn placeholder(s: &Source) -> Stored {
    let change = match &s.kind {
        SourceKind::File { size, .. } => Change::File {
            blob: Digest([0; 32]),
            size: *size,
        },
        SourceKind::Symlink { target } => Change::Symlink {
            target: target.clone(),
        },
        SourceKind::Dir => Change::Dir {
            opaque: false,
            moved: None,
        },
    };
    Stored {
        dest: s.dest.clone(),
        change,
        mode: s.mode,
        mtime_ns: s.mtime_ns,
    }
}

/// Stores every file's content in `batch`, hashing on all cores, with a progress bar on a
/// terminal.
pub fn store(batch: &Batch, sources: Vec<Source>) -> Result<Vec<Stored>> {
    let total: u64 = sources
        .iter()
        .map(|s| match s.kind {
            SourceKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    let bar = progress(total);
    let stored = sources
        .into_par_iter()
        .map(|s| {
            let change = match s.kind {
                SourceKind::File { ref path, size } => {
                    let (blob, size) = batch.add_file(path, size)?;
                    bar.inc(size);
                    Change::File { blob, size }
                }
                SourceKind::Symlink { ref target } => Change::Symlink {
                    target: target.clone(),
                },
                SourceKind::Dir => Change::Dir {
                    opaque: false,
                    moved: None,
                },
            };
            Ok(Stored {
                dest: s.dest,
                change,
                mode: s.mode,
                mtime_ns: s.mtime_ns,
            })
        })
        .collect::<Result<Vec<_>>>();
    bar.finish_and_clear();
    stored
}

/// A byte-count progress bar that only draws on a terminal.
pub fn progress(total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("progress template is valid"),
    );
    bar
}
