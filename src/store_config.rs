//! A store directory's `config`: there only in the directory of a shared store, where it
//! says where the catalog (a PostgreSQL database) and the blobs (an S3-compatible bucket)
//! live and how much of this host's disk the cache of blobs may take. Without it, the store
//! is embedded: catalog.db and blobs/ in the directory itself.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};

pub const FILE: &str = "config";

/// The cache's size when `init` is given none.
pub const DEFAULT_CACHE: u64 = 10 << 30;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shared {
    /// `postgres://…`
    pub catalog: String,
    /// `s3://BUCKET/PREFIX`
    pub objects: String,
    /// Bytes of blobs this host keeps cached.
    pub cache_size: u64,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The shared store `dir` is the local side of, or None for an embedded store.
pub fn read(dir: &Path) -> Result<Option<Shared>> {
    let p = path(dir);
    let text = match fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let damaged = |why: String| Error::Corrupt {
        what: format!("store config {}", p.display()),
        why: format!("{why}; write it again with `artifactfs init --catalog … --objects … DIR`"),
    };
    let v: Value = serde_json::from_slice(&text)
        .map_err(|e| damaged(format!("it is not valid JSON ({e})")))?;
    let text_field = |k: &str| -> Result<String> {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| damaged(format!("it has no {k:?} (a string)")))
    };
    let shared = Shared {
        catalog: text_field("catalog")?,
        objects: text_field("objects")?,
        cache_size: v
            .get("cache_size")
            .and_then(Value::as_u64)
            .ok_or_else(|| damaged("it has no \"cache_size\" (a number of bytes)".into()))?,
    };
    check_catalog_url(&shared.catalog).map_err(|e| damaged(e.to_string()))?;
    check_objects_url(&shared.objects).map_err(|e| damaged(e.to_string()))?;
    Ok(Some(shared))
}

/// Writes `dir/config` whole or not at all.
pub fn write(dir: &Path, shared: &Shared) -> Result<()> {
    let p = path(dir);
    let text = serde_json::to_vec_pretty(&json!({
        "catalog": shared.catalog,
        "objects": shared.objects,
        "cache_size": shared.cache_size,
    }))
    .expect("plain JSON");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    tmp.write_all(&text).at(tmp.path())?;
    tmp.write_all(b"\n").at(tmp.path())?;
    tmp.as_file().sync_all().at(tmp.path())?;
    tmp.persist(&p).map_err(|e| Error::io(&p, e.error))?;
    crate::blobs::sync_dir(dir)
}

pub fn check_catalog_url(url: &str) -> Result<()> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(());
    }
    Err(Error::invalid(
        format!("--catalog {}", crate::catalog::postgres::redact(url)),
        "a shared store's catalog is a PostgreSQL database: postgres://USER@HOST:PORT/DB",
    ))
}

pub fn check_objects_url(url: &str) -> Result<()> {
    let bucket = url
        .strip_prefix("s3://")
        .map(|rest| rest.split('/').next().unwrap_or(""));
    match bucket {
        Some(b) if !b.is_empty() => Ok(()),
        _ => Err(Error::invalid(
            format!("--objects {url}"),
            "a shared store's blobs live in an S3-compatible bucket: s3://BUCKET/PREFIX",
        )),
    }
}

/// A size such as `10G`, `512M`, `1T` or a plain number of bytes.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size such as 10G or 512M"))?;
    let shift = match unit
        .trim()
        .trim_end_matches(['B', 'b', 'i'])
        .to_ascii_uppercase()
        .as_str()
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: the unit must be K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("3X").is_err());
    }

    #[test]
    fn a_damaged_config_says_so_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "{\"catalog\": 3}").unwrap();
        let e = read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("store config") && e.contains("config"), "{e}");
        let shared = Shared {
            catalog: "postgres://u@h/db".into(),
            objects: "s3://b/p".into(),
            cache_size: 1 << 30,
        };
        write(dir.path(), &shared).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(shared));
    }
}
