//! The inode table: which object of the namespace each inode number the kernel holds stands
//! for. An inode is identified by its parent and name, so every path has its own inode even
//! where versions share a subtree (tools like `find` and `du` rely on that). Numbers are
//! never reused within a mount; slots go away when the kernel forgets them.
//!
//! Files written into a draft are identified by their staged file instead, as a local
//! filesystem identifies files by inode: a rename keeps the inode, hard links share it, and a
//! name that comes to stand for another file gets another inode. What the kernel still holds
//! after its last name went away (an open file that was removed or renamed over) is
//! [`Node::Detached`], and keeps its content and attributes until forgotten.
//!
//! Files and symlinks of versions mostly have no slot: their number is derived from their
//! directory's and their place in its listing (see [`derived`]), which never changes.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::catalog::nodes::NodeId;
use crate::tree::TreeEntry;

pub use super::orphan::{Detached, Orphan};

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
    /// `drafts/NAME/` or `drafts/NAME@ID/`, or a path inside one: a directory, a symlink, or
    /// a file that still has its base's content (or one `draft add` recorded).
    Draft {
        artifact: String,
        dist_id: String,
        path: Vec<u8>,
        kind: Kind,
    },
    /// A file of a draft written through the mount: staged file `id` of draft `draft`, under
    /// whatever names the draft gives it now.
    Staged {
        artifact: String,
        dist_id: String,
        draft: i64,
        id: i64,
    },
    /// Something of a draft whose last name went away while the kernel held it.
    Detached(Detached),
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
            Node::Staged { .. } | Node::Control { .. } => Kind::File,
            Node::Detached(d) => d.0.kind,
            Node::Root | Node::Drafts | Node::Artifact { .. } | Node::Version { .. } => Kind::Dir,
        }
    }

    /// Whether the kernel may cache this node's entry and attributes indefinitely: what is
    /// inside a version. The version directory itself is not: deleting the version must make
    /// its name disappear.
    pub fn is_immutable(&self) -> bool {
        matches!(self, Node::Entry(_))
    }

    /// Whether this is part of a draft (its control file included), where changes are made.
    pub fn in_draft(&self) -> bool {
        matches!(
            self,
            Node::Draft { .. } | Node::Staged { .. } | Node::Detached(_) | Node::Control { .. }
        )
    }
}

struct Slot {
    node: Node,
    parent: Ino,
    name: Vec<u8>,
    /// The other names of a staged file with hard links, as the kernel looked them up.
    links: Vec<(Ino, Vec<u8>)>,
    lookups: u64,
    /// In the eviction queue (files and symlinks of versions only).
    queued: bool,
    /// A draft directory some users may not search, as last seen.
    closed: bool,
}

impl Slot {
    fn names(&self) -> impl Iterator<Item = (Ino, &Vec<u8>)> {
        std::iter::once((self.parent, &self.name)).chain(self.links.iter().map(|(p, n)| (*p, n)))
    }
}

struct Table {
    slots: HashMap<Ino, Slot>,
    by_name: HashMap<(Ino, Vec<u8>), Ino>,
    /// Inodes of staged files, by draft and staged file number.
    by_file: HashMap<(i64, i64), Ino>,
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
                    links: Vec::new(),
                    lookups: 1,
                    queued: false,
                    closed: false,
                },
            );
        }
        let mut by_name = HashMap::new();
        by_name.insert((ROOT, b"drafts".to_vec()), DRAFTS);
        Inodes {
            table: Mutex::new(Table {
                slots,
                by_name,
                by_file: HashMap::new(),
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
    /// stands for the same object (its data refreshed): a staged file's, whatever name it is
    /// reached by, or else the one of this name if it is the same kind of object; anything
    /// else gets a new number, since the kernel takes an inode's type to be fixed. `count`
    /// records one kernel reference (a lookup reply), to be released by `forget`.
    pub fn intern(&self, parent: Ino, name: &[u8], mut node: Node, count: bool) -> Ino {
        // The slot has the name; a copy in every entry would cost memory per inode.
        if let Node::Entry(e) = &mut node {
            e.name = Vec::new();
        }
        let mut t = self.lock();
        let key = (parent, name.to_vec());
        let found = match file_key(&node).and_then(|f| t.by_file.get(&f).copied()) {
            Some(ino) if t.slots.contains_key(&ino) => Some(ino),
            _ => t
                .by_name
                .get(&key)
                .copied()
                .filter(|ino| t.slots.get(ino).is_some_and(|s| same_kind(&s.node, &node))),
        };
        if let Some(ino) = found {
            t.set_node(ino, node);
            let slot = t.slots.get_mut(&ino).expect("found above");
            slot.lookups += count as u64;
            if !slot.names().any(|(p, n)| p == parent && *n == key.1) {
                slot.links.push(key.clone());
            }
            // Asked to be dropped while in use, and now looked up again: it may go next time.
            if evictable(&slot.node) && !slot.queued {
                slot.queued = true;
                t.entries.push_back(ino);
            }
            t.by_name.insert(key, ino);
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
        if let Some(f) = file_key(&node) {
            t.by_file.insert(f, ino);
        }
        t.slots.insert(
            ino,
            Slot {
                node,
                parent,
                name: name.to_vec(),
                links: Vec::new(),
                lookups: count as u64,
                queued,
                closed: false,
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
            for (parent, name) in slot.names() {
                let key = (parent, name.clone());
                if t.by_name.get(&key) == Some(&ino) {
                    t.by_name.remove(&key);
                }
            }
            if let Some(f) = file_key(&slot.node)
                && t.by_file.get(&f) == Some(&ino)
            {
                t.by_file.remove(&f);
            }
        }
    }

    /// Records whether draft directory `ino` lets only some users search it, as its mode
    /// shows now.
    pub fn set_closed(&self, ino: Ino, closed: bool) {
        if let Some(slot) = self.lock().slots.get_mut(&ino) {
            slot.closed = closed;
        }
    }

    /// Whether `ino` is a draft directory that only some users may search: the kernel must
    /// then ask again for each name in it, so that each user's search permission is checked.
    pub fn is_closed(&self, ino: Ino) -> bool {
        self.lock().slots.get(&ino).is_some_and(|s| s.closed)
    }

    /// The inode of staged file `id` of draft `draft`, if the kernel holds one.
    pub fn of_staged(&self, draft: i64, id: i64) -> Option<Ino> {
        self.lock().by_file.get(&(draft, id)).copied()
    }

    /// Makes `ino` stand for `node` from now on, under the names it has: a file of a draft
    /// staged for writing, which is the same file.
    pub fn set_node(&self, ino: Ino, node: Node) {
        self.lock().set_node(ino, node);
    }

    /// `name` in `parent` no longer names the inode the kernel holds for it, if any (it was
    /// removed, or another file renamed over it): later lookups of the name get a new inode.
    /// Returns the inode and whether it is left without any name it was looked up by.
    pub fn unname(&self, parent: Ino, name: &[u8]) -> Option<(Ino, bool)> {
        let mut t = self.lock();
        let ino = t.by_name.remove(&(parent, name.to_vec()))?;
        let slot = t.slots.get_mut(&ino)?;
        if let Some(i) = slot
            .links
            .iter()
            .position(|(p, n)| *p == parent && n == name)
        {
            slot.links.remove(i);
        } else if slot.parent == parent
            && slot.name == name
            && let Some((p, n)) = slot.links.pop()
        {
            (slot.parent, slot.name) = (p, n);
        }
        let names: Vec<(Ino, Vec<u8>)> = slot.names().map(|(p, n)| (p, n.clone())).collect();
        let named = names
            .into_iter()
            .any(|key| t.by_name.get(&key) == Some(&ino));
        Some((ino, !named))
    }

    /// After a rename: the inode the kernel holds for `name` in `parent` now stands at
    /// `new_name` in `new_parent` as `node` (the kernel moves its dentry, keeping the inode).
    pub fn moved(&self, parent: Ino, name: &[u8], new_parent: Ino, new_name: &[u8], node: Node) {
        let mut t = self.lock();
        let Some(ino) = t.by_name.remove(&(parent, name.to_vec())) else {
            return;
        };
        let old = t.slots.get_mut(&ino).map(|slot| {
            match slot
                .links
                .iter_mut()
                .find(|(p, n)| *p == parent && n == name)
            {
                Some(link) => *link = (new_parent, new_name.to_vec()),
                None => (slot.parent, slot.name) = (new_parent, new_name.to_vec()),
            }
            slot.node.clone()
        });
        t.set_node(ino, node.clone());
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

impl Table {
    fn set_node(&mut self, ino: Ino, node: Node) {
        let Some(slot) = self.slots.get_mut(&ino) else {
            return;
        };
        let (old, new) = (file_key(&slot.node), file_key(&node));
        slot.node = node;
        if old != new {
            if let Some(f) = old
                && self.by_file.get(&f) == Some(&ino)
            {
                self.by_file.remove(&f);
            }
            if let Some(f) = new {
                self.by_file.insert(f, ino);
            }
        }
    }
}

/// What identifies a staged file's inode, whatever its names.
fn file_key(node: &Node) -> Option<(i64, i64)> {
    match node {
        Node::Staged { draft, id, .. } => Some((*draft, *id)),
        _ => None,
    }
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
        // A file of the base staged for writing, or a staged file stored as a blob by a
        // commit that was then refused: the same file.
        (Node::Draft { kind, .. }, Node::Staged { .. })
        | (Node::Staged { .. }, Node::Draft { kind, .. }) => *kind == Kind::File,
        (a @ Node::Staged { .. }, b @ Node::Staged { .. }) => file_key(a) == file_key(b),
        (Node::Detached(a), Node::Detached(b)) => a == b,
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
