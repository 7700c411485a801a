//! Manifests as shared directory trees (SPEC §5). A node is one directory's listing, identified
//! by the SHA-256 of its canonical encoding, so versions share every unchanged subtree and a
//! commit only writes the nodes on changed paths.

use crate::catalog::Db;
use crate::catalog::nodes::{self, NodeId, NodeInfo};
use crate::error::Result;
use crate::hash::{Digest, Encoding, Hasher};
use crate::reference::Reference;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    File {
        blob: Digest,
        size: u64,
    },
    Dir {
        node: NodeId,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Content outside the store; the entry's mtime is the referenced file's when recorded.
    Reference(Reference),
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

/// What a listing encodes to.
#[derive(Debug)]
pub struct Encoded {
    /// The node's identity: the canonical listing, modes and mtimes included.
    pub hash: Digest,
    /// What version digests are made of: no mtimes, no permission bits but the executable one.
    pub digest: Digest,
    pub files: u64,
    pub bytes: u64,
    pub references: u64,
    /// The identity of each chunk (the run of entries from each of `chunk_starts` to the
    /// next), so that equal runs in different nodes are stored once.
    pub chunks: Vec<Digest>,
}

/// Encodes a sorted listing, cut into chunks at `chunk_starts` (ascending indices, the first
/// 0). `child` gives the stored info of each subdirectory.
pub fn encode(
    entries: &[TreeEntry],
    chunk_starts: &[usize],
    mut child: impl FnMut(NodeId) -> Result<NodeInfo>,
) -> Result<Encoded> {
    let mut hash = Hasher::default();
    let mut digest = Hasher::default();
    hash.field(b"artifactfs node v1");
    digest.field(b"artifactfs tree v1");
    let (mut files, mut bytes, mut references) = (0u64, 0u64, 0u64);
    let mut chunks = Vec::with_capacity(chunk_starts.len());
    let mut chunk: Option<Hasher> = None;
    let mut starts = chunk_starts.iter().peekable();
    // One entry's identity encoding, fed to both the node's and its chunk's hash.
    let mut id = Encoding::default();
    for (i, e) in entries.iter().enumerate() {
        if starts.next_if_eq(&&i).is_some() {
            chunks.extend(chunk.take().map(Hasher::finish));
            let mut h = Hasher::default();
            h.field(b"artifactfs chunk v1");
            chunk = Some(h);
        }
        id.clear();
        id.field(&e.name);
        digest.field(&e.name);
        match &e.item {
            Item::File { blob, size } => {
                id.update(b"f");
                id.update(&blob.0);
                id.update(&size.to_le_bytes());
                digest.update(b"f");
                digest.update(&blob.0);
                digest.update(&[is_executable(e.mode) as u8]);
                files += 1;
                bytes += size;
            }
            Item::Dir { node } => {
                let info = child(*node)?;
                id.update(b"d");
                id.update(&info.hash.0);
                digest.update(b"d");
                digest.update(&info.digest.0);
                files += info.files;
                bytes += info.bytes;
                references += info.references;
            }
            Item::Symlink { target } => {
                id.update(b"l");
                id.field(target);
                digest.update(b"l");
                digest.field(target);
                files += 1;
            }
            Item::Reference(r) => {
                id.update(if r.checksum { b"r" } else { b"u" });
                id.field(r.uri.as_bytes());
                id.update(&r.digest.0);
                id.update(&r.size.to_le_bytes());
                // A checksummed reference is its content as of its size and mtime (the mount
                // refuses it once they change), so re-recording a touched file makes a new
                // version; one without a checksum is its URI alone.
                if r.checksum {
                    digest.update(b"r");
                    digest.field(r.uri.as_bytes());
                    digest.update(&r.digest.0);
                    digest.update(&r.size.to_le_bytes());
                    digest.update(&e.mtime_ns.to_le_bytes());
                } else {
                    digest.update(b"u");
                    digest.field(r.uri.as_bytes());
                }
                digest.update(&[is_executable(e.mode) as u8]);
                files += 1;
                bytes += r.size;
                references += 1;
            }
        }
        id.update(&e.mode.to_le_bytes());
        id.update(&e.mtime_ns.to_le_bytes());
        hash.update(id.bytes());
        chunk
            .as_mut()
            .expect("the first entry starts a chunk")
            .update(id.bytes());
    }
    chunks.extend(chunk.map(Hasher::finish));
    Ok(Encoded {
        hash: hash.finish(),
        digest: digest.finish(),
        files,
        bytes,
        references,
        chunks,
    })
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
pub fn lookup(conn: &Db, root: NodeId, path: &[u8]) -> Result<Option<TreeEntry>> {
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
    conn: &Db,
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
    conn: &Db,
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
    conn: &Db,
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
                            // As in the digest: an unhashed reference is its URI alone.
                            (Item::Reference(x), Item::Reference(y)) if !x.checksum => {
                                !y.checksum && x.uri == y.uri
                            }
                            (Item::Reference(x), Item::Reference(y)) => {
                                x == y && o.mtime_ns == n.mtime_ns
                            }
                            _ => false,
                        };
                        if !same || (exec_changed && !matches!(a, Item::Symlink { .. })) {
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
    conn: &Db,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Vec<TreeEntry> {
        vec![
            TreeEntry {
                name: b"a.bin".to_vec(),
                item: Item::File {
                    blob: Digest::of(b"a"),
                    size: 1,
                },
                mode: 0o755,
                mtime_ns: 1_700_000_000_000_000_000,
            },
            TreeEntry {
                name: b"link".to_vec(),
                item: Item::Symlink {
                    target: b"a.bin".to_vec(),
                },
                mode: 0o777,
                mtime_ns: -5,
            },
            TreeEntry {
                name: b"sub".to_vec(),
                item: Item::Dir { node: 7 },
                mode: 0o700,
                mtime_ns: 3,
            },
        ]
    }

    fn child(id: NodeId) -> Result<NodeInfo> {
        Ok(NodeInfo {
            id,
            hash: Digest::of(b"child hash"),
            digest: Digest::of(b"child digest"),
            files: 2,
            bytes: 10,
            subdirs: 0,
            references: 0,
        })
    }

    #[test]
    fn node_hashes_are_stable() {
        // Version digests and node identities must never change: pinned as first released.
        let e = encode(&listing(), &[0], child).unwrap();
        assert_eq!(
            e.hash.to_hex(),
            "d12303ec99fba18ff297d83e0cf14963352e5f3147998817cf21cf83c818f9c2"
        );
        assert_eq!(
            e.digest.to_hex(),
            "0e8f1288c30f36a844049eae77408e15dea013c9f6c2e782a04f9e642851bd44"
        );
        assert_eq!((e.files, e.bytes), (4, 11));
        // Chunking changes neither.
        let split = encode(&listing(), &[0, 1, 2], child).unwrap();
        assert_eq!((split.hash, split.digest), (e.hash, e.digest));
    }

    #[test]
    fn references_digest_as_docs_semantics_says() {
        let r = |name: &str, checksum: bool| TreeEntry {
            name: name.as_bytes().to_vec(),
            item: Item::Reference(Reference {
                uri: format!("file:///data/{name}"),
                digest: Digest::of(name.as_bytes()),
                size: 5,
                checksum,
            }),
            mode: 0o644,
            mtime_ns: 42,
        };
        let listing = [r("a", true), r("b", false)];
        let mut want = Hasher::default();
        want.field(b"artifactfs tree v1");
        want.field(b"a");
        want.update(b"r");
        want.field(b"file:///data/a");
        want.update(&Digest::of(b"a").0);
        want.update(&5u64.to_le_bytes());
        want.update(&42i64.to_le_bytes());
        want.update(&[0]);
        want.field(b"b");
        want.update(b"u");
        want.field(b"file:///data/b");
        want.update(&[0]);
        let e = encode(&listing, &[0], child).unwrap();
        assert_eq!(e.digest, want.finish());
        assert_eq!((e.files, e.bytes, e.references), (2, 10, 2));
        // A touched file is another version; a reference without checksum is its URI alone.
        let mut touched = listing.clone();
        touched[0].mtime_ns += 1;
        touched[1].mtime_ns += 1;
        if let Item::Reference(x) = &mut touched[1].item {
            x.size = 6;
        }
        let t = encode(&touched, &[0], child).unwrap();
        assert_ne!(t.digest, e.digest);
        touched[0].mtime_ns -= 1;
        assert_eq!(encode(&touched, &[0], child).unwrap().digest, e.digest);
    }

    #[test]
    fn chunk_hashes_depend_on_their_entries_only() {
        let all = listing();
        let whole = encode(&all, &[0, 2], child).unwrap();
        assert_eq!(whole.chunks.len(), 2);
        // The same run of entries hashes the same in another listing...
        let tail = encode(&all[2..], &[0], child).unwrap();
        assert_eq!(tail.chunks, [whole.chunks[1]]);
        // ...and a chunk never hashes like a node.
        assert_ne!(tail.chunks[0], tail.hash);
        let mut changed = all.clone();
        changed[0].mtime_ns += 1;
        let c = encode(&changed, &[0, 2], child).unwrap();
        assert_ne!(c.chunks[0], whole.chunks[0]);
        assert_eq!(c.chunks[1], whole.chunks[1]);
        assert!(encode(&[], &[], child).unwrap().chunks.is_empty());
    }
}
