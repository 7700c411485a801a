//! Turning local paths into draft changes: scan what the user named, then store the file
//! contents as blobs on all cores.

use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use rayon::prelude::*;

use crate::blobs::Batch;
use crate::catalog::Db;
use crate::catalog::drafts::Change;
use crate::catalog::nodes::NodeId;
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;
use crate::reference::{OffLimits, Reference, mtime_of as mtime_ns};
use crate::tree::{self, Item, TreeEntry};

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
    File {
        path: PathBuf,
        size: u64,
        /// The blob it likely holds: that of a file at the same path, of the same size and
        /// mtime, in the version it replaces (see [`hint`]).
        likely: Option<Digest>,
    },
    Symlink {
        target: Vec<u8>,
    },
    Dir,
    /// A file recorded by reference: hashed where it is (with `checksum`), never copied.
    Reference {
        uri: String,
        size: u64,
        checksum: bool,
    },
}

/// What a command was asked to add: local paths, whose content is copied into the store,
/// and references (`file://` URIs already checked by [`references`]), whose content is not.
#[derive(Default)]
pub struct Inputs {
    pub paths: Vec<PathBuf>,
    /// Each reference's URI and the local path it names.
    pub references: Vec<(String, PathBuf)>,
    /// Whether references are hashed (`--no-checksum` turns it off).
    pub checksum: bool,
    /// How many files one directory reference may add (`--max-objects`).
    pub max_objects: u64,
    /// Where references must not lead.
    pub off_limits: Option<OffLimits>,
    /// When two inputs give the same path, keep the one named last instead of refusing.
    pub overwrite: bool,
}

impl Inputs {
    pub fn paths(paths: &[PathBuf]) -> Self {
        Inputs {
            paths: paths.to_vec(),
            ..Inputs::default()
        }
    }

    fn len(&self) -> usize {
        self.paths.len() + self.references.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Checks reference URIs: `file://` with an absolute path that does not lead anywhere
/// `off_limits`. Returns each with its local path.
pub fn references(uris: &[String], off_limits: &OffLimits) -> Result<Vec<(String, PathBuf)>> {
    uris.iter()
        .map(|uri| {
            let path = crate::reference::parse_uri(uri)?;
            off_limits.check(&path, &format!("reference {uri}"))?;
            Ok((uri.clone(), path))
        })
        .collect()
}

/// Finds paths that two inputs of one command both give (W&B refuses to add a name twice
/// unless asked to overwrite). Directories that several inputs fill are merged, not a
/// collision. The paths seen wait in a temporary database on disk, not in memory.
pub struct Collisions {
    seen: rusqlite::Connection,
}

impl Collisions {
    /// A checker for `inputs`, or None when no two of them can collide: a single input
    /// (names in one directory are unique), or `--overwrite`.
    pub fn of(inputs: &Inputs) -> Result<Option<Self>> {
        if inputs.len() < 2 || inputs.overwrite {
            return Ok(None);
        }
        let fail = |e: rusqlite::Error| Error::Catalog {
            context: "open a temporary table of the paths added".into(),
            source: e.into(),
        };
        let seen = rusqlite::Connection::open("").map_err(fail)?;
        seen.execute_batch(
            "CREATE TABLE seen (path BLOB PRIMARY KEY, origin TEXT NOT NULL) WITHOUT ROWID",
        )
        .map_err(fail)?;
        Ok(Some(Collisions { seen }))
    }

    /// Refuses the first file, symlink or reference of `chunk` whose path an earlier one gave.
    pub fn check(&mut self, chunk: &[Source]) -> Result<()> {
        let fail = |e: rusqlite::Error| Error::Catalog {
            context: "record the paths added".into(),
            source: e.into(),
        };
        let tx = self.seen.transaction().map_err(fail)?;
        for s in chunk.iter().filter(|s| !matches!(s.kind, SourceKind::Dir)) {
            let origin = s.origin();
            let added = tx
                .prepare_cached("INSERT OR IGNORE INTO seen (path, origin) VALUES (?1, ?2)")
                .and_then(|mut st| st.execute(rusqlite::params![&s.dest, &origin]))
                .map_err(fail)?;
            if added == 0 {
                let first: String = tx
                    .query_row("SELECT origin FROM seen WHERE path = ?1", [&s.dest], |r| {
                        r.get(0)
                    })
                    .map_err(fail)?;
                return Err(Error::invalid(
                    String::from_utf8_lossy(&s.dest),
                    format!(
                        "two inputs give this path, {first} and {origin}; give one of them \
                         another name, or add --overwrite to keep the one named last"
                    ),
                ));
            }
        }
        tx.commit().map_err(fail)
    }
}

impl Source {
    /// Where it comes from, for messages: the local path, or the reference's URI.
    fn origin(&self) -> String {
        match &self.kind {
            SourceKind::File { path, .. } => path.display().to_string(),
            SourceKind::Reference { uri, .. } => uri.clone(),
            SourceKind::Symlink { target } => {
                format!("a symlink to {}", String::from_utf8_lossy(target))
            }
            SourceKind::Dir => "a directory".into(),
        }
    }
}

/// A source whose content is in the blob store: ready to be recorded.
pub struct Stored {
    pub dest: Vec<u8>,
    pub change: Change,
    pub mode: u32,
    pub mtime_ns: i64,
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
///
/// Sources are handed to `each` in chunks of about `chunk`, in the order they are found (a
/// directory before what is in it), so that memory does not grow with the number of files.
pub fn scan(
    inputs: &Inputs,
    dest: Option<&[u8]>,
    chunk: usize,
    each: &mut dyn FnMut(Vec<Source>) -> Result<()>,
) -> Result<()> {
    let mut out = Chunks {
        buf: Vec::new(),
        chunk,
        each,
    };
    let single = inputs.len() == 1;
    for (uri, path) in &inputs.references {
        scan_reference(inputs, uri, path, dest, single, &mut out)?;
    }
    for path in &inputs.paths {
        let meta = fs::metadata(path).at(path)?;
        if meta.is_dir() {
            let prefix = dir_prefix(path, &meta, dest, &mut out)?;
            scan_dir(path, &prefix, &mut out)?;
        } else {
            out.push(source_of(file_dest(path, dest, single)?, path, &meta)?)?;
        }
    }
    let rest = std::mem::take(&mut out.buf);
    if rest.is_empty() {
        return Ok(());
    }
    (out.each)(rest)
}

/// Sources gathered until a chunk is full.
struct Chunks<'a> {
    buf: Vec<Source>,
    chunk: usize,
    each: &'a mut dyn FnMut(Vec<Source>) -> Result<()>,
}

impl Chunks<'_> {
    fn push(&mut self, s: Source) -> Result<()> {
        self.buf.push(s);
        if self.buf.len() >= self.chunk {
            (self.each)(std::mem::take(&mut self.buf))?;
        }
        Ok(())
    }
}

fn scan_dir(dir: &Path, prefix: &[u8], out: &mut Chunks) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .at(dir)?
        .collect::<std::io::Result<Vec<_>>>()
        .at(dir)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).at(&path)?;
        let dest = tree::join(prefix, entry.file_name().as_bytes());
        out.push(source_of(dest.clone(), &path, &meta)?)?;
        if meta.is_dir() {
            scan_dir(&path, &dest, out)?;
        }
    }
    Ok(())
}

/// Where a file named on the command line lands: at `dest` when it is the only input, under
/// `dest` with its file name when there are several, else at its file name.
fn file_dest(path: &Path, dest: Option<&[u8]>, single: bool) -> Result<Vec<u8>> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::invalid(path.display().to_string(), "has no file name"))?
        .as_bytes();
    Ok(match dest {
        Some(d) if single => d.to_vec(),
        Some(d) => tree::join(d, name),
        None => name.to_vec(),
    })
}

/// Where a directory named on the command line puts its contents: under `dest`, which then
/// becomes a directory of the draft with the named directory's mode and time, or at the top.
fn dir_prefix(
    path: &Path,
    meta: &fs::Metadata,
    dest: Option<&[u8]>,
    out: &mut Chunks,
) -> Result<Vec<u8>> {
    let prefix = dest.unwrap_or(b"").to_vec();
    if !prefix.is_empty() {
        out.push(source_of(prefix.clone(), path, meta)?)?;
    }
    Ok(prefix)
}

/// A referenced file becomes one entry (at `dest` or its file name), a directory one entry
/// per file below it, with its subdirectories; symlinks below it are followed to files.
fn scan_reference(
    inputs: &Inputs,
    uri: &str,
    path: &Path,
    dest: Option<&[u8]>,
    single: bool,
    out: &mut Chunks,
) -> Result<()> {
    let unreadable = |e: std::io::Error| {
        Error::invalid(format!("reference {uri}"), format!("cannot be read: {e}"))
    };
    let meta = fs::metadata(path).map_err(unreadable)?;
    let source = |dest: Vec<u8>, path: &Path, meta: &fs::Metadata| -> Result<Source> {
        let Some(text) = path.to_str() else {
            return Err(Error::invalid(
                path.display().to_string(),
                "is not valid UTF-8, which a reference URI needs",
            ));
        };
        Ok(Source {
            dest,
            kind: SourceKind::Reference {
                uri: format!("file://{text}"),
                size: meta.len(),
                checksum: inputs.checksum,
            },
            mode: meta.mode() & 0o7777,
            mtime_ns: mtime_ns(meta),
        })
    };
    if meta.is_file() {
        return out.push(source(file_dest(path, dest, single)?, path, &meta)?);
    }
    if !meta.is_dir() {
        return Err(Error::invalid(
            format!("reference {uri}"),
            "is neither a regular file nor a directory",
        ));
    }
    let prefix = dir_prefix(path, &meta, dest, out)?;
    let mut files = 0u64;
    let mut stack = vec![(path.to_path_buf(), prefix)];
    while let Some((dir, prefix)) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .at(&dir)?
            .collect::<std::io::Result<Vec<_>>>()
            .at(&dir)?;
        entries.sort_by_key(|e| e.file_name());
        let mut subdirs = Vec::new();
        for entry in entries {
            let p = entry.path();
            let meta = fs::metadata(&p).at(&p)?;
            let d = tree::join(&prefix, entry.file_name().as_bytes());
            if meta.is_dir() {
                if entry.file_type().at(&p)?.is_symlink() {
                    return Err(Error::invalid(
                        format!("{} in reference {uri}", p.display()),
                        "is a symlink to a directory; reference its target instead",
                    ));
                }
                out.push(source_of(d.clone(), &p, &meta)?)?;
                subdirs.push((p, d));
            } else if meta.is_file() {
                if let Some(off) = &inputs.off_limits
                    && entry.file_type().at(&p)?.is_symlink()
                {
                    off.check(&p, &format!("{} in reference {uri}", p.display()))?;
                }
                files += 1;
                if files > inputs.max_objects {
                    return Err(Error::invalid(
                        format!("reference {uri}"),
                        format!(
                            "holds more than {} files (--max-objects); reference a smaller directory or raise the limit",
                            inputs.max_objects
                        ),
                    ));
                }
                out.push(source(d, &p, &meta)?)?;
            } else {
                return Err(Error::invalid(
                    format!("{} in reference {uri}", p.display()),
                    "is not a regular file or directory (devices, FIFOs and sockets cannot be referenced)",
                ));
            }
        }
        // Depth first in name order, as a plain scan adds them.
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn source_of(dest: Vec<u8>, path: &Path, meta: &fs::Metadata) -> Result<Source> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        SourceKind::File {
            path: path.to_path_buf(),
            size: meta.len(),
            likely: None,
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
        SourceKind::Reference {
            uri,
            size,
            checksum,
            ..
        } => Change::Reference(Reference {
            uri: uri.clone(),
            digest: Digest([0; 32]),
            size: *size,
            checksum: *checksum,
        }),
    };
    Stored {
        dest: s.dest.clone(),
        change,
        mode: s.mode,
        mtime_ns: s.mtime_ns,
    }
}

/// The bytes of file content among `sources`.
pub fn bytes_of(sources: &[Source]) -> u64 {
    sources
        .iter()
        .map(|s| match s.kind {
            SourceKind::File { size, .. } => size,
            SourceKind::Reference {
                size,
                checksum: true,
                ..
            } => size,
            _ => 0,
        })
        .sum()
}

/// Notes, for each large file among `sources`, the blob it likely holds: that of the file
/// at the same path in the version `previous` (the one the new version replaces or starts
/// from), if it has the same size and mtime. Storing such a file then hashes it first and
/// writes nothing when it is unchanged (logging a dataset again is common); any other large
/// file is copied and hashed in one pass. One index probe per large file.
pub fn hint(conn: &Db, previous: Option<NodeId>, sources: &mut [Source]) -> Result<()> {
    let Some(root) = previous else {
        return Ok(());
    };
    for s in sources.iter_mut() {
        let SourceKind::File { size, likely, .. } = &mut s.kind else {
            continue;
        };
        if *size <= crate::blobs::SMALL_FILE {
            continue;
        }
        if let Some(TreeEntry {
            item: Item::File { blob, size: was },
            mtime_ns,
            ..
        }) = tree::lookup(conn, root, &s.dest)?
            && was == *size
            && mtime_ns == s.mtime_ns
        {
            *likely = Some(blob);
        }
    }
    Ok(())
}

/// Stores every file's content in `batch`, hashing on all cores, counting bytes on `bar`.
pub fn store(batch: &Batch, sources: Vec<Source>, bar: &ProgressBar) -> Result<Vec<Stored>> {
    sources
        .into_par_iter()
        .map(|s| {
            let change = match s.kind {
                SourceKind::File {
                    ref path,
                    size,
                    likely,
                } => {
                    let (blob, size) = batch.add_file_likely(path, size, likely)?;
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
                SourceKind::Reference {
                    ref uri,
                    size,
                    checksum,
                    ..
                } => {
                    let r = reference_of(uri, size, s.mtime_ns, checksum)?;
                    bar.inc(if checksum { size } else { 0 });
                    Change::Reference(r)
                }
            };
            Ok(Stored {
                dest: s.dest,
                change,
                mode: s.mode,
                mtime_ns: s.mtime_ns,
            })
        })
        .collect::<Result<Vec<_>>>()
}

/// Hashes a referenced file where it is, refusing it if it changed since it was scanned (or
/// while it was hashed), so the recorded size and mtime describe the content hashed.
fn reference_of(uri: &str, size: u64, mtime: i64, checksum: bool) -> Result<Reference> {
    let mut r = Reference {
        uri: uri.to_string(),
        digest: crate::reference::digest_of_uri(uri),
        size,
        checksum,
    };
    // Even unhashed, a reference must be readable when it is recorded.
    let file = r.open(mtime)?;
    if !checksum {
        return Ok(r);
    }
    let (digest, n) =
        Digest::of_reader(&file).map_err(|e| r.drift(format!("cannot be read: {e}")))?;
    let after = file
        .metadata()
        .map_err(|e| r.drift(format!("cannot be examined: {e}")))?;
    if n != size || r.changed(&after, mtime).is_some() {
        return Err(r.drift("changed while it was being hashed; try again once it is still"));
    }
    r.digest = digest;
    Ok(r)
}

/// Stored sources kept in an unnamed file rather than in memory until they are recorded, so
/// that logging a million files takes the memory of one chunk.
pub struct Spool {
    out: std::io::BufWriter<fs::File>,
    dir: PathBuf,
}

impl Spool {
    pub fn new(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).at(dir)?;
        Ok(Spool {
            out: std::io::BufWriter::new(file),
            dir: dir.to_path_buf(),
        })
    }

    pub fn push(&mut self, s: &Stored) -> Result<()> {
        let mut rec = Vec::with_capacity(64 + s.dest.len());
        put_bytes(&mut rec, &s.dest);
        rec.extend_from_slice(&s.mode.to_le_bytes());
        rec.extend_from_slice(&s.mtime_ns.to_le_bytes());
        match &s.change {
            Change::File { blob, size } => {
                rec.push(0);
                rec.extend_from_slice(&blob.0);
                rec.extend_from_slice(&size.to_le_bytes());
            }
            Change::Symlink { target } => {
                rec.push(1);
                put_bytes(&mut rec, target);
            }
            Change::Dir { .. } => rec.push(2),
            Change::Reference(r) => {
                rec.push(3);
                put_bytes(&mut rec, r.uri.as_bytes());
                rec.extend_from_slice(&r.digest.0);
                rec.extend_from_slice(&r.size.to_le_bytes());
                rec.push(r.checksum as u8);
            }
            other => unreachable!("ingest stores files, symlinks and directories, not {other:?}"),
        }
        self.out.write_all(&rec).at(&self.dir)
    }

    /// Hands the stored sources back, in the order they were pushed, in chunks of `chunk`.
    pub fn replay(
        self,
        chunk: usize,
        each: &mut dyn FnMut(Vec<Stored>) -> Result<()>,
    ) -> Result<()> {
        let dir = self.dir;
        let mut file = self
            .out
            .into_inner()
            .map_err(|e| Error::io(&dir, e.into_error()))?;
        file.seek(std::io::SeekFrom::Start(0)).at(&dir)?;
        let mut input = std::io::BufReader::new(file);
        let mut buf = Vec::with_capacity(chunk);
        while let Some(s) = read_stored(&mut input).at(&dir)? {
            buf.push(s);
            if buf.len() >= chunk {
                each(std::mem::take(&mut buf))?;
            }
        }
        if !buf.is_empty() {
            each(buf)?;
        }
        Ok(())
    }
}

/// The blobs a command added to the store, kept in an unnamed file rather than in memory, so
/// that a command failing at its last step can remove them.
pub struct Added {
    out: std::io::BufWriter<fs::File>,
    dir: PathBuf,
    count: usize,
}

impl Added {
    pub fn new(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).at(dir)?;
        Ok(Added {
            out: std::io::BufWriter::new(file),
            dir: dir.to_path_buf(),
            count: 0,
        })
    }

    pub fn push(&mut self, digests: &[Digest]) -> Result<()> {
        self.count += digests.len();
        digests
            .iter()
            .try_for_each(|d| self.out.write_all(&d.0))
            .at(&self.dir)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Hands the digests back in chunks of up to `chunk`.
    pub fn replay(
        &mut self,
        chunk: usize,
        each: &mut dyn FnMut(&[Digest]) -> Result<()>,
    ) -> Result<()> {
        let dir = &self.dir;
        self.out.flush().at(dir)?;
        let file = self.out.get_mut();
        file.seek(std::io::SeekFrom::Start(0)).at(dir)?;
        let mut input = std::io::BufReader::new(file);
        let mut buf = Vec::with_capacity(chunk);
        let mut digest = [0u8; 32];
        for _ in 0..self.count {
            input.read_exact(&mut digest).at(dir)?;
            buf.push(Digest(digest));
            if buf.len() == chunk {
                each(&buf)?;
                buf.clear();
            }
        }
        each(&buf)
    }
}

fn put_bytes(rec: &mut Vec<u8>, bytes: &[u8]) {
    rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    rec.extend_from_slice(bytes);
}

fn read_stored(input: &mut impl Read) -> std::io::Result<Option<Stored>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let mut dest = vec![0u8; u32::from_le_bytes(len) as usize];
    input.read_exact(&mut dest)?;
    let mut word = [0u8; 4];
    input.read_exact(&mut word)?;
    let mode = u32::from_le_bytes(word);
    let mut long = [0u8; 8];
    input.read_exact(&mut long)?;
    let mtime_ns = i64::from_le_bytes(long);
    let mut tag = [0u8; 1];
    input.read_exact(&mut tag)?;
    let change = match tag[0] {
        0 => {
            let mut blob = [0u8; 32];
            input.read_exact(&mut blob)?;
            input.read_exact(&mut long)?;
            Change::File {
                blob: Digest(blob),
                size: u64::from_le_bytes(long),
            }
        }
        1 => {
            input.read_exact(&mut word)?;
            let mut target = vec![0u8; u32::from_le_bytes(word) as usize];
            input.read_exact(&mut target)?;
            Change::Symlink { target }
        }
        3 => {
            input.read_exact(&mut word)?;
            let mut uri = vec![0u8; u32::from_le_bytes(word) as usize];
            input.read_exact(&mut uri)?;
            let mut digest = [0u8; 32];
            input.read_exact(&mut digest)?;
            input.read_exact(&mut long)?;
            input.read_exact(&mut tag)?;
            Change::Reference(Reference {
                uri: String::from_utf8(uri).map_err(std::io::Error::other)?,
                digest: Digest(digest),
                size: u64::from_le_bytes(long),
                checksum: tag[0] != 0,
            })
        }
        _ => Change::Dir {
            opaque: false,
            moved: None,
        },
    };
    Ok(Some(Stored {
        dest,
        change,
        mode,
        mtime_ns,
    }))
}
