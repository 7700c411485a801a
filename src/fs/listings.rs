//! Listings of version directories held in memory. They let the files of a version go without
//! an inode slot: a file's inode number is its directory's number and its place in the
//! listing (`inode::derived`), and the listing turns that number back into the entry. Walking
//! a version of a million files then costs the server the listings it is reading now, not a
//! slot for every file the kernel remembers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::catalog::Db;

use crate::catalog::nodes::{self, NodeId, Page};
use crate::error::Result;
use crate::tree::TreeEntry;

/// Directories with more entries than this are not held: their files get inode slots (which
/// the eviction thread keeps bounded) and are looked up in the catalog one by one.
pub const MAX_HELD: usize = 16_384;
/// How many entries all held listings may have together: about 2 MB. A walk needs only the
/// directories it is in; more would make the server grow with the version it walks.
const BUDGET: usize = 16_384;

/// One directory's entries, in the catalog's name order.
pub struct Listing {
    entries: Vec<TreeEntry>,
    /// Whether the names are in byte order, so a name can be found by bisection.
    bisectable: bool,
}

impl Listing {
    fn new(entries: Vec<TreeEntry>) -> Self {
        let bisectable = entries.windows(2).all(|w| w[0].name < w[1].name);
        Listing {
            entries,
            bisectable,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn at(&self, index: usize) -> Option<&TreeEntry> {
        self.entries.get(index)
    }

    /// The entry called `name` and its place in the listing.
    pub fn find(&self, name: &[u8]) -> Option<(usize, &TreeEntry)> {
        let index = if self.bisectable {
            self.entries
                .binary_search_by(|e| e.name.as_slice().cmp(name))
                .ok()?
        } else {
            self.entries.iter().position(|e| e.name == name)?
        };
        Some((index, &self.entries[index]))
    }
}

/// What is known of a directory node: its listing, or that it is too big to hold.
#[derive(Clone)]
enum Known {
    Held(Arc<Listing>),
    TooBig,
}

#[derive(Default)]
struct Cache {
    known: HashMap<NodeId, (Known, u64)>,
    /// Entries in all held listings (a directory known to be too big counts as one).
    held: usize,
    tick: u64,
}

#[derive(Default)]
pub struct Listings {
    cache: Mutex<Cache>,
}

impl Listings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The listing of directory node `node` if it is small enough to hold, read from the
    /// catalog unless it is held already.
    pub fn get(&self, conn: &Db, node: NodeId) -> Result<Option<Arc<Listing>>> {
        if let Some(known) = self.cached(node) {
            return Ok(known);
        }
        let mut entries = nodes::list_page(conn, node, Page::Skip(0), MAX_HELD + 1)?;
        let known = if entries.len() > MAX_HELD {
            Known::TooBig
        } else if entries.is_empty() {
            // An empty page may mean a collected node: `list` tells the two apart.
            entries = nodes::list(conn, node)?;
            Known::Held(Arc::new(Listing::new(entries)))
        } else {
            Known::Held(Arc::new(Listing::new(entries)))
        };
        self.insert(node, known.clone());
        Ok(match known {
            Known::Held(l) => Some(l),
            Known::TooBig => None,
        })
    }

    /// What is held for `node`, without asking the catalog: None if nothing is known,
    /// Some(None) if it is too big to hold.
    pub fn cached(&self, node: NodeId) -> Option<Option<Arc<Listing>>> {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        let (known, used) = c.known.get_mut(&node)?;
        *used = tick;
        Some(match known {
            Known::Held(l) => Some(l.clone()),
            Known::TooBig => None,
        })
    }

    fn insert(&self, node: NodeId, known: Known) {
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        let size = weight(&known);
        if let Some((old, _)) = c.known.insert(node, (known, tick)) {
            c.held -= weight(&old);
        }
        c.held += size;
        if c.held > BUDGET {
            // Drop the least recently used half at once: one sort per many insertions.
            let mut by_age: Vec<(u64, NodeId)> =
                c.known.iter().map(|(id, (_, used))| (*used, *id)).collect();
            by_age.sort_unstable();
            for (_, id) in by_age {
                if c.held <= BUDGET / 2 || id == node {
                    break;
                }
                if let Some((old, _)) = c.known.remove(&id) {
                    c.held -= weight(&old);
                }
            }
        }
    }
}

fn weight(known: &Known) -> usize {
    match known {
        Known::Held(l) => l.len().max(1),
        Known::TooBig => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Item;

    fn entry(name: &str) -> TreeEntry {
        TreeEntry {
            name: name.as_bytes().to_vec(),
            item: Item::Symlink {
                target: b"t".to_vec(),
            },
            mode: 0o777,
            mtime_ns: 0,
        }
    }

    #[test]
    fn finds_names_and_places() {
        let l = Listing::new(vec![entry("a"), entry("b"), entry("c")]);
        assert_eq!(l.find(b"b").map(|(i, _)| i), Some(1));
        assert!(l.find(b"bb").is_none());
        assert_eq!(l.at(2).unwrap().name, b"c");
        // Out of byte order (never written so, but read defensively): found by scanning.
        let l = Listing::new(vec![entry("b"), entry("a")]);
        assert_eq!(l.find(b"a").map(|(i, _)| i), Some(1));
    }

    #[test]
    fn stays_within_budget() {
        let ls = Listings::default();
        let big: Vec<TreeEntry> = (0..BUDGET / 4).map(|i| entry(&format!("{i:08}"))).collect();
        for node in 0..10 {
            ls.insert(node, Known::Held(Arc::new(Listing::new(big.clone()))));
            assert!(ls.lock().held <= BUDGET);
            assert!(ls.cached(node).is_some(), "the newest is kept");
        }
        assert!(ls.cached(0).is_none(), "the oldest went");
    }
}
