//! The inode table: which object of the namespace each inode number the kernel holds stands
//! for. An inode is identified by its parent and name, so every path has its own inode even
//! where versions share a subtree (tools like `find` and `du` rely on that). Numbers are
//! never reused within a mount; slots go away when the kernel forgets them.
//!
//! Files and symlinks of versions mostly have no slot: their number is derived from their
//! directory's and their place in its listing (see [`derived`]), which never changes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::catalog::nodes::NodeId;
use crate::tree::TreeEntry;

pub type Ino = u64;
pub const ROOT: Ino = 1;
pub const DRAFTS: Ino = 2;

/// Derived numbers have this bit set; slots are numbered below it, and the numbers a plain
/// listing makes up (`unlisted_ino` in the parent module) have the bit above it.
const DERIVED: Ino = 1 << 62;
/// Directories whose slot number fits in these bits can give their entries derived numbers.
const DIR_BITS: u32 = 30;

/// The number of the entry at `index` in the listing of directory `dir` (a slot), if it
/// fits: the same for as long as the mount runs, without a slot to hold it.
pub fn derived(dir: Ino, index: usize) -> Option<Ino> {
    let index = u32::try_from(index).ok()? as Ino;
    (dir < 1 << DIR_BITS).then_some(DERIVED | dir << 32 | index)
}

/// The directory and place a derived number stands for.
pub fn split_derived(ino: Ino) -> Option<(Ino, usize)> {
    (ino & (3 << 62) == DERIVED)
        .then_some(((ino >> 32) & ((1 << DIR_BITS) - 1), ino as u32 as usize))
}

/// What an inode stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Root,
    /// The `drafts/` directory.
    Drafts,
    /// `NAME/`: the versions and aliases of one artifact.
    Artifact {
        name: String,
    },
    /// `NAME/vN/`: a committed version.
    Version {
        artifact: String,
        number: u64,
        root: NodeId,
    },
    /// `NAME/ALIAS`: a symlink to the version the alias names now.
    Alias {
        artifact: String,
        alias: String,
    },
    /// A file, directory or symlink inside a committed version.
    Entry(TreeEntry),
    /// `drafts/NAME/` or `drafts/NAME@ID/`, or a path inside one.
    Draft {
        artifact: String,
        dist_id: String,
        path: Vec<u8>,
        kind: Kind,
    },
    /// `drafts/NAME/.commit`: the control file that commits the draft when written.
    Control {
        artifact: String,
        dist_id: String,
    },
}

/// The file type the kernel sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Node {
    /// The file type this node shows as.
    pub fn kind(&self) -> Kind {
        use crate::tree::Item;
        match self {
            Node::Alias { .. } => Kind::Symlink,
            Node::Entry(e) => match e.item {
                Item::File { .. } | Item::Reference(_) => Kind::File,
                Item::Dir { .. } => Kind::Dir,
                Item::Symlink { .. } => Kind::Symlink,
            },
            Node::Draft { kind, .. } => *kind,
            Node::Control { .. } => Kind::File,
            Node::Root | Node::Drafts | Node::Artifact { .. } | Node::Version { .. } => Kind::Dir,
        }
    }

    /// Whether the kernel may cache this node's entry and attributes indefinitely: what is
    /// inside a version. The version directory itself is not: deleting the version must make
    /// its name disappear.
    pub fn is_immutable(&self) -> bool {
        matches!(self, Node::Entry(_))
    }
}

struct Slot {
    node: Node,
    parent: Ino,
    name: Vec<u8>,
    lookups: u64,
    /// In the eviction queue (files and symlinks of versions only).
    queued: bool,
}

struct Table {
    slots: HashMap<Ino, Slot>,
    by_name: HashMap<(Ino, Vec<u8>), Ino>,
    next: Ino,
    /// Inodes of version entries in the order they were made (some already forgotten): the
    /// oldest are the first the kernel is asked to drop when there are too many.
    entries: VecDeque<Ino>,
    /// How many inodes of version files and symlinks the table holds.
    live_entries: usize,
}

pub struct Inodes {
    table: Mutex<Table>,
}

impl Default for Inodes {
    fn default() -> Self {
        let mut slots = HashMap::new();
        for (ino, node, name) in [(ROOT, Node::Root, ""), (DRAFTS, Node::Drafts, "drafts")] {
            slots.insert(
                ino,
                Slot {
                    node,
                    parent: ROOT,
                    name: name.as_bytes().to_vec(),
                    lookups: 1,
                    queued: false,
                },
            );
        }
        let mut by_name = HashMap::new();
        by_name.insert((ROOT, b"drafts".to_vec()), DRAFTS);
        Inodes {
            table: Mutex::new(Table {
                slots,
                by_name,
                next: DRAFTS + 1,
                entries: VecDeque::new(),
                live_entries: 0,
            }),
        }
    }
}

impl Inodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ino: Ino) -> Option<Node> {
        self.lock().slots.get(&ino).map(|s| s.node.clone())
    }

    /// The parent and name of `ino`.
    pub fn name(&self, ino: Ino) -> Option<(Ino, Vec<u8>)> {
        self.lock()
            .slots
            .get(&ino)
            .map(|s| (s.parent, s.name.clone()))
    }

    /// The parent of `ino` (the root is its own parent).
    pub fn parent(&self, ino: Ino) -> Ino {
        self.lock().slots.get(&ino).map_or(ROOT, |s| s.parent)
    }

    /// The inode for `name` in `parent` standing for `node`. An existing inode is kept when it
    /// stands for the same kind of object (its data refreshed); a different kind of object gets
    /// a new number, since the kernel takes an inode's type to be fixed. `count` records one
    /// kernel reference (a lookup reply), to be released by `forget`.
    pub fn intern(&self, parent: Ino, name: &[u8], mut node: Node, count: bool) -> Ino {
        // The slot has the name; a copy in every entry would cost memory per inode.
        if let Node::Entry(e) = &mut node {
            e.name = Vec::new();
        }
        let mut t = self.lock();
        let key = (parent, name.to_vec());
        if let Some(&ino) = t.by_name.get(&key)
            && let Some(slot) = t.slots.get_mut(&ino)
            && same_kind(&slot.node, &node)
        {
            slot.node = node;
            slot.lookups += count as u64;
            // Asked to be dropped while in use, and now looked up again: it may go next time.
            if evictable(&slot.node) && !slot.queued {
                slot.queued = true;
                t.entries.push_back(ino);
            }
            return ino;
        }
        let ino = t.next;
        t.next += 1;
        assert!(ino < DERIVED, "inode numbers exhausted");
        let queued = evictable(&node);
        if queued {
            t.entries.push_back(ino);
            t.live_entries += 1;
        }
        t.slots.insert(
            ino,
            Slot {
                node,
                parent,
                name: name.to_vec(),
                lookups: count as u64,
                queued,
            },
        );
        t.by_name.insert(key, ino);
        ino
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&self, ino: Ino, n: u64) {
        if ino == ROOT || ino == DRAFTS {
            return;
        }
        let mut t = self.lock();
        let Some(slot) = t.slots.get_mut(&ino) else {
            return;
        };
        slot.lookups = slot.lookups.saturating_sub(n);
        if slot.lookups == 0 {
            let slot = t.slots.remove(&ino).expect("slot was just found");
            if evictable(&slot.node) {
                t.live_entries -= 1;
            }
            let key = (slot.parent, slot.name);
            if t.by_name.get(&key) == Some(&ino) {
                t.by_name.remove(&key);
            }
        }
    }

    /// After a rename: the inode the kernel holds for `name` in `parent` now stands at
    /// `new_name` in `new_parent` as `node` (the kernel moves its dentry, keeping the inode).
    pub fn moved(&self, parent: Ino, name: &[u8], new_parent: Ino, new_name: &[u8], node: Node) {
        let mut t = self.lock();
        let Some(ino) = t.by_name.remove(&(parent, name.to_vec())) else {
            return;
        };
        let old = t.slots.get_mut(&ino).map(|slot| {
            slot.parent = new_parent;
            slot.name = new_name.to_vec();
            std::mem::replace(&mut slot.node, node.clone())
        });
        t.by_name.insert((new_parent, new_name.to_vec()), ino);
        // Inodes below a moved draft directory name their new paths too.
        if let (
            Some(Node::Draft {
                path: old_path,
                kind: Kind::Dir,
                ..
            }),
            Node::Draft {
                artifact,
                dist_id,
                path: new_path,
                ..
            },
        ) = (old, node)
        {
            for slot in t.slots.values_mut() {
                if let Node::Draft {
                    artifact: a,
                    dist_id: i,
                    path,
                    ..
                } = &mut slot.node
                    && *a == artifact
                    && *i == dist_id
                    && path.len() > old_path.len()
                    && path.starts_with(&old_path)
                    && path[old_path.len()] == b'/'
                {
                    let mut moved = new_path.clone();
                    moved.extend_from_slice(&path[old_path.len()..]);
                    *path = moved;
                }
            }
        }
    }

    /// When the table holds more than `limit` inodes of version entries: the names of the
    /// oldest, enough to come back to nine tenths of the limit once the kernel has dropped
    /// them (it does for those no process is using, and says so with `forget`).
    pub fn eviction_candidates(&self, limit: usize) -> Vec<(Ino, Vec<u8>)> {
        let mut t = self.lock();
        let mut want = t.live_entries.saturating_sub(limit * 9 / 10);
        if t.live_entries <= limit {
            want = 0;
        }
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            let Some(ino) = t.entries.pop_front() else {
                break;
            };
            if let Some(slot) = t.slots.get_mut(&ino) {
                slot.queued = false;
                out.push((slot.parent, slot.name.clone()));
            }
        }
        // Forgotten inodes pile up in the queue when nothing needs evicting.
        if t.entries.len() > 2 * t.live_entries + 4096 {
            let Table { entries, slots, .. } = &mut *t;
            entries.retain(|ino| slots.contains_key(ino));
        }
        out
    }

    /// The inode for `name` in `parent`, if the kernel holds one.
    pub fn existing(&self, parent: Ino, name: &[u8]) -> Option<Ino> {
        self.lock().by_name.get(&(parent, name.to_vec())).copied()
    }
}

/// Whether the kernel may be asked to drop `node`'s name to bound memory: files and symlinks
/// of versions. Never directories: dropping the name of one a process stands in would break
/// its getcwd, and detach whatever is mounted below it.
fn evictable(node: &Node) -> bool {
    matches!(node, Node::Entry(e) if !e.is_dir())
}

/// Whether two nodes are the same kind of object (same file type), so an inode may be reused.
fn same_kind(a: &Node, b: &Node) -> bool {
    use crate::tree::Item;
    match (a, b) {
        (Node::Entry(x), Node::Entry(y)) => {
            std::mem::discriminant(&x.item) == std::mem::discriminant(&y.item)
                && match (&x.item, &y.item) {
                    (Item::Dir { node: p }, Item::Dir { node: q }) => p == q,
                    (Item::File { blob: p, .. }, Item::File { blob: q, .. }) => p == q,
                    (Item::Symlink { target: p }, Item::Symlink { target: q }) => p == q,
                    (Item::Reference(p), Item::Reference(q)) => p == q && x.mtime_ns == y.mtime_ns,
                    _ => false,
                }
        }
        (Node::Version { root: a, .. }, Node::Version { root: b, .. }) => a == b,
        (Node::Draft { kind: a, .. }, Node::Draft { kind: b, .. }) => a == b,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_inode_until_forgotten() {
        let t = Inodes::default();
        let node = Node::Artifact { name: "a".into() };
        let a = t.intern(ROOT, b"a", node.clone(), true);
        assert_eq!(t.intern(ROOT, b"a", node.clone(), true), a);
        t.forget(a, 1);
        assert_eq!(t.get(a), Some(node.clone()));
        t.forget(a, 1);
        assert_eq!(t.get(a), None);
        assert_ne!(
            t.intern(ROOT, b"a", node, true),
            a,
            "numbers are not reused"
        );
    }

    #[test]
    fn derived_numbers_round_trip_and_stay_apart() {
        let ino = derived(7, 1234).unwrap();
        assert_eq!(split_derived(ino), Some((7, 1234)));
        assert_eq!(split_derived(7), None);
        assert_eq!(split_derived(1 << 63 | 5), None);
        assert_eq!(
            derived(1 << DIR_BITS, 0),
            None,
            "directory number too large"
        );
        assert_eq!(derived(7, 1 << 32), None, "place too large");
    }

    #[test]
    fn a_different_kind_gets_a_new_inode() {
        let t = Inodes::default();
        let draft = |kind| Node::Draft {
            artifact: "a".into(),
            dist_id: String::new(),
            path: b"x".to_vec(),
            kind,
        };
        let d = t.intern(DRAFTS, b"x", draft(Kind::Dir), true);
        assert_eq!(t.intern(DRAFTS, b"x", draft(Kind::Dir), true), d);
        assert_ne!(t.intern(DRAFTS, b"x", draft(Kind::File), true), d);
    }
}
