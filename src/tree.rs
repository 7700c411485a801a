//! Manifests as shared directory trees (SPEC §5). A node is one directory's listing, identified
//! by the SHA-256 of its canonical encoding, so versions share every unchanged subtree and a
//! commit only writes the nodes on changed paths.

use crate::catalog::nodes::{self, NodeId, NodeInfo};
use crate::error::Result;
use crate::hash::{Digest, Hasher};
use rusqlite::Connection;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    File { blob: Digest, size: u64 },
    Dir { node: NodeId },
    Symlink { target: Vec<u8> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub name: Vec<u8>,
    pub item: Item,
    pub mode: u32,
    pub mtime_ns: i64,
}

impl TreeEntry {
    pub fn is_dir(&self) -> bool {
        matches!(self.item, Item::Dir { .. })
    }
}

pub fn is_executable(mode: u32) -> bool {
    mode & 0o111 != 0
}

/// Computes a node's identity hash and content digest from its sorted listing. `child` gives
/// the stored info of each subdirectory.
pub fn encode(
    entries: &[TreeEntry],
    mut child: impl FnMut(NodeId) -> Result<NodeInfo>,
) -> Result<(Digest, Digest, u64, u64)> {
    let mut hash = Hasher::default();
    let mut digest = Hasher::default();
    hash.field(b"artifactfs node v1");
    digest.field(b"artifactfs tree v1");
    let (mut files, mut bytes) = (0u64, 0u64);
    for e in entries {
        hash.field(&e.name);
        digest.field(&e.name);
        match &e.item {
            Item::File { blob, size } => {
                hash.update(b"f");
                hash.update(&blob.0);
                hash.update(&size.to_le_bytes());
                digest.update(b"f");
                digest.update(&blob.0);
                digest.update(&[is_executable(e.mode) as u8]);
                files += 1;
                bytes += size;
            }
            Item::Dir { node } => {
                let info = child(*node)?;
                hash.update(b"d");
                hash.update(&info.hash.0);
                digest.update(b"d");
                digest.update(&info.digest.0);
                files += info.files;
                bytes += info.bytes;
            }
            Item::Symlink { target } => {
                hash.update(b"l");
                hash.field(target);
                digest.update(b"l");
                digest.field(target);
                files += 1;
            }
        }
        hash.update(&e.mode.to_le_bytes());
        hash.update(&e.mtime_ns.to_le_bytes());
    }
    Ok((hash.finish(), digest.finish(), files, bytes))
}

/// Splits a relative path into components, rejecting empty, `.` and `..` ones.
pub fn components(path: &[u8]) -> Option<Vec<&[u8]>> {
    let parts: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    if parts.iter().any(|c| *c == b"." || *c == b"..") {
        return None;
    }
    Some(parts)
}

pub fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
        p.extend_from_slice(parent);
        p.push(b'/');
        p.extend_from_slice(name);
        p
    }
}

/// Finds the entry at `path` under `root`: one index probe per component.
pub fn lookup(conn: &Connection, root: NodeId, path: &[u8]) -> Result<Option<TreeEntry>> {
    let Some(parts) = components(path) else {
        return Ok(None);
    };
    let mut node = root;
    let mut found = None;
    for (i, part) in parts.iter().enumerate() {
        let Some(entry) = nodes::lookup(conn, node, part)? else {
            return Ok(None);
        };
        match entry.item {
            Item::Dir { node: child } => node = child,
            _ if i + 1 < parts.len() => return Ok(None),
            _ => {}
        }
        found = Some(entry);
    }
    Ok(found)
}

/// Calls `f(path, entry)` for every file and symlink under `node`, depth first in name order.
/// Only one directory listing per level is held in memory.
pub fn walk(
    conn: &Connection,
    node: NodeId,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &TreeEntry) -> Result<()>,
) -> Result<()> {
    walk_all(conn, node, prefix, &mut |path, e| {
        if e.is_dir() { Ok(()) } else { f(path, e) }
    })
}

/// Like [`walk`], but also reports directories (before their contents).
pub fn walk_all(
    conn: &Connection,
    node: NodeId,
    prefix: &[u8],
    f: &mut dyn FnMut(&[u8], &TreeEntry) -> Result<()>,
) -> Result<()> {
    let mut entries = nodes::list(conn, node)?;
    // Full paths in byte order: `a/x` sorts after `a-b` and `a.c`, so a directory's place is
    // that of its name followed by '/'.
    entries.sort_by(|a, b| path_key(a).cmp(path_key(b)));
    for entry in entries {
        let path = join(prefix, &entry.name);
        f(&path, &entry)?;
        if let Item::Dir { node: child } = entry.item {
            walk_all(conn, child, &path, f)?;
        }
    }
    Ok(())
}

fn path_key(e: &TreeEntry) -> impl Iterator<Item = u8> + '_ {
    e.name.iter().copied().chain(e.is_dir().then_some(b'/'))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added,
    Removed,
    Modified,
}

/// Reports the files and symlinks that differ between two trees, skipping shared subtrees.
/// A change of kind (file to symlink) is `Modified`; mode changes count only for the
/// executable bit, and mtimes not at all, matching the version digest.
pub fn diff(
    conn: &Connection,
    old: Option<NodeId>,
    new: Option<NodeId>,
    prefix: &[u8],
    f: &mut dyn FnMut(Change, &[u8]) -> Result<()>,
) -> Result<()> {
    if old == new {
        return Ok(());
    }
    let old_entries = match old {
        Some(n) => nodes::list(conn, n)?,
        None => Vec::new(),
    };
    let new_entries = match new {
        Some(n) => nodes::list(conn, n)?,
        None => Vec::new(),
    };
    let (mut i, mut j) = (0, 0);
    while i < old_entries.len() || j < new_entries.len() {
        let o = old_entries.get(i);
        let n = new_entries.get(j);
        let order = match (o, n) {
            (Some(o), Some(n)) => o.name.cmp(&n.name),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match order {
            std::cmp::Ordering::Less => {
                let o = o.unwrap();
                side(conn, o, prefix, Change::Removed, f)?;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                let n = n.unwrap();
                side(conn, n, prefix, Change::Added, f)?;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let (o, n) = (o.unwrap(), n.unwrap());
                let path = join(prefix, &o.name);
                match (&o.item, &n.item) {
                    (Item::Dir { node: a }, Item::Dir { node: b }) => {
                        diff(conn, Some(*a), Some(*b), &path, f)?
                    }
                    (Item::Dir { .. }, _) => {
                        side(conn, o, prefix, Change::Removed, f)?;
                        f(Change::Added, &path)?;
                    }
                    (_, Item::Dir { .. }) => {
                        f(Change::Removed, &path)?;
                        side(conn, n, prefix, Change::Added, f)?;
                    }
                    (a, b) => {
                        let exec_changed = is_executable(o.mode) != is_executable(n.mode);
                        let same = match (a, b) {
                            (Item::File { blob: x, .. }, Item::File { blob: y, .. }) => x == y,
                            (Item::Symlink { target: x }, Item::Symlink { target: y }) => x == y,
                            _ => false,
                        };
                        if !same || (exec_changed && matches!(a, Item::File { .. })) {
                            f(Change::Modified, &path)?;
                        }
                    }
                }
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Reports an entry that exists on one side only: a file itself, every file under a
/// directory, and a directory with no files anywhere under it as `path/` (it is part of the
/// version and its digest, so a diff must show it).
fn side(
    conn: &Connection,
    entry: &TreeEntry,
    prefix: &[u8],
    change: Change,
    f: &mut dyn FnMut(Change, &[u8]) -> Result<()>,
) -> Result<()> {
    let path = join(prefix, &entry.name);
    match entry.item {
        Item::Dir { node } if nodes::info(conn, node)?.files == 0 => {
            let mut p = path;
            p.push(b'/');
            f(change, &p)
        }
        Item::Dir { node } => {
            for e in nodes::list(conn, node)? {
                side(conn, &e, &path, change, f)?;
            }
            Ok(())
        }
        _ => f(change, &path),
    }
}
