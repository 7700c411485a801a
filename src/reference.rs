//! References: version entries whose content lives outside the store, named by a URI and
//! versioned by what was recorded about it (W&B's `add_reference`). Only `file://` URIs are
//! readable so far; the entry keeps the URI as text so other schemes can follow.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::hash::{Digest, HashingWriter};

/// The default of `--max-objects`: how many files one directory reference may add.
pub const DEFAULT_MAX_OBJECTS: u64 = 10_000_000;

/// What an entry records about the content it points at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub uri: String,
    /// The SHA-256 of the content, or with `checksum` off of the URI itself.
    pub digest: Digest,
    /// The size seen when it was recorded; with `checksum` off only shown, never checked.
    pub size: u64,
    /// Whether the content was hashed: then size and mtime are checked before every use.
    pub checksum: bool,
}

impl Reference {
    /// The local path behind the URI.
    pub fn path(&self) -> Result<PathBuf> {
        parse_uri(&self.uri)
    }

    /// Opens the referenced file for reading, refusing it (`EIO`) when it is gone or, for a
    /// checksummed reference, when its size or mtime differ from what was recorded with
    /// `mtime_ns`: content that may have changed is never passed off as the version's.
    pub fn open(&self, mtime_ns: i64) -> Result<File> {
        let path = self.path()?;
        let file = File::open(&path).map_err(|e| self.drift(format!("cannot be opened: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| self.drift(format!("cannot be examined: {e}")))?;
        if let Some(why) = self.changed(&meta, mtime_ns) {
            return Err(self.drift(why));
        }
        Ok(file)
    }

    /// Copies the referenced content to `out`; a checksummed reference is hashed on the way
    /// and refused (after the copy, which the caller discards) if it no longer matches.
    pub fn copy_to(&self, mtime_ns: i64, out: &mut dyn Write) -> Result<u64> {
        let mut file = self.open(mtime_ns)?;
        let mut hashing = HashingWriter::new(out);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let got = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.drift(format!("cannot be read: {e}"))),
            };
            hashing
                .write_all(&buf[..got])
                .map_err(|e| Error::io("the output", e))?;
            n += got as u64;
        }
        let actual = hashing.digest();
        if self.checksum && actual != self.digest {
            return Err(self.drift(format!(
                "no longer has the content recorded: it hashes to {actual}, not {}",
                self.digest
            )));
        }
        Ok(n)
    }

    /// What differs between the file's metadata and the record, if anything that is checked.
    pub fn changed(&self, meta: &fs::Metadata, mtime_ns: i64) -> Option<String> {
        if !meta.is_file() {
            return Some("is no longer a regular file".into());
        }
        if !self.checksum {
            return None;
        }
        if meta.len() != self.size {
            return Some(format!(
                "size changed from {} to {} bytes",
                self.size,
                meta.len()
            ));
        }
        let now = mtime_of(meta);
        (now != mtime_ns).then(|| {
            format!(
                "modification time changed from {} to {}",
                show_ns(mtime_ns),
                show_ns(now)
            )
        })
    }

    pub fn drift(&self, why: impl Into<String>) -> Error {
        Error::ReferenceDrift {
            uri: self.uri.clone(),
            why: why.into(),
        }
    }
}

pub fn mtime_of(meta: &fs::Metadata) -> i64 {
    meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
}

fn show_ns(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

/// The digest of a reference recorded without a checksum: that of its URI, as W&B does.
pub fn digest_of_uri(uri: &str) -> Digest {
    Digest::of(uri.as_bytes())
}

/// The local path a `file:///abs/path` URI names. The path is taken as written (no percent
/// decoding) and must be absolute and free of `.` and `..`.
pub fn parse_uri(uri: &str) -> Result<PathBuf> {
    let invalid = |why: &str| Error::invalid(format!("reference {uri}"), why.to_string());
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(if uri.starts_with('/') {
            invalid("is a path, not a URI: write file:// before it")
        } else {
            invalid("must be a URI such as file:///abs/path")
        });
    };
    if scheme != "file" {
        return Err(Error::invalid(
            format!("reference {uri}"),
            format!("{scheme}:// references are not supported yet; only file:// is"),
        ));
    }
    if !rest.starts_with('/') {
        return Err(invalid(
            "must name an absolute local path: file:///abs/path (three slashes, no host)",
        ));
    }
    // Checked on the text, since Path would quietly drop `.` and `//` and the URI recorded
    // must be the one way to write the path.
    let trimmed = rest.trim_end_matches('/');
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    if trimmed
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
        && trimmed != "/"
    {
        return Err(invalid("'.', '..' and empty components are not allowed"));
    }
    Ok(PathBuf::from(trimmed))
}

/// Places a reference must stay out of, with what they are: the store, whose files are its
/// own and change under gc and commits, and artifactfs mounts, whose server would have to read
/// through itself.
pub struct OffLimits(Vec<(PathBuf, String)>);

impl OffLimits {
    /// The store at `store` and every artifactfs mount on this machine (a FUSE mount of a
    /// directory holding a catalog).
    pub fn of(store: &Path) -> Result<Self> {
        let real = fs::canonicalize(store).map_err(|e| Error::io(store, e))?;
        let mut places = vec![(real.clone(), format!("the store {}", real.display()))];
        for m in crate::mounts::mounts()? {
            let ours = m.is_fuse() && Path::new(&m.source).join("catalog.db").is_file();
            if ours {
                let at = PathBuf::from(&m.mountpoint);
                places.push((at.clone(), format!("the artifactfs mount {}", at.display())));
            }
        }
        Ok(OffLimits(places))
    }

    /// Refuses a path inside one of the places (symlinks resolved) or a directory holding
    /// one; `what` names the path in the error.
    pub fn check(&self, path: &Path, what: &str) -> Result<()> {
        let real = fs::canonicalize(path)
            .map_err(|e| Error::invalid(what.to_string(), format!("cannot be read: {e}")))?;
        for (place, name) in &self.0 {
            let why = if real.starts_with(place) {
                "is inside"
            } else if place.starts_with(&real) {
                "holds"
            } else {
                continue;
            };
            return Err(Error::invalid(
                what.to_string(),
                format!(
                    "{why} {name}: a reference must point elsewhere (add the files themselves instead)"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_to_absolute_paths_or_say_why_not() {
        assert_eq!(
            parse_uri("file:///data/x.bin").unwrap(),
            Path::new("/data/x.bin")
        );
        for (uri, why) in [
            ("data/x", "must be a URI"),
            ("/data/x", "write file://"),
            ("s3://bucket/x", "s3:// references are not supported yet"),
            ("ftp://host/x", "ftp:// references are not supported yet"),
            ("file://host/x", "absolute local path"),
            ("file:///data/../etc", "'..'"),
            ("file:///data/./x", "'.'"),
            ("file:///data//x", "empty components"),
        ] {
            let e = parse_uri(uri).unwrap_err().to_string();
            assert!(e.contains(uri) && e.contains(why), "{uri}: {e}");
        }
    }
}
