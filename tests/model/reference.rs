//! The reference model: what SPEC §1 and the adding rules of `src/draft.rs` say should happen,
//! in plain `BTreeMap`s. Every step either succeeds and changes the model, or returns the errno
//! the store must fail with and changes nothing.

use std::collections::BTreeMap;

use artifactfs::tree::Change;

use crate::ops::{Ref, Res, Scratch, Step, StepBase, TREE_DIRS, TREE_FILES, TREE_LINKS, is_exec};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Content pool index and executable bit.
    File(usize, bool),
    /// A symlink and its target (its mode is not part of a version).
    Link(String),
    Dir,
}

/// Path → node. Every proper ancestor of a key is a `Dir` key; the root is implicit.
/// Directories are kept even when empty, as versions keep them.
pub type Tree = BTreeMap<String, Node>;

fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// A file at `path`: replaces a file, refuses a directory (EISDIR) or a file where a parent
/// directory should be (ENOTDIR).
pub fn add_leaf(tree: &mut Tree, path: &str, node: Node) -> Result<(), i32> {
    if tree.get(path) == Some(&Node::Dir) {
        return Err(libc::EISDIR);
    }
    add_parents(tree, path)?;
    tree.insert(path.to_string(), node);
    Ok(())
}

/// A directory at `path`: an existing one is kept, a file there is EEXIST.
pub fn add_dir(tree: &mut Tree, path: &str) -> Result<(), i32> {
    match tree.get(path) {
        Some(Node::Dir) => Ok(()),
        Some(Node::File(..) | Node::Link(_)) => Err(libc::EEXIST),
        None => {
            add_parents(tree, path)?;
            tree.insert(path.to_string(), Node::Dir);
            Ok(())
        }
    }
}

fn add_parents(tree: &mut Tree, path: &str) -> Result<(), i32> {
    for a in ancestors(path) {
        match tree.get(a) {
            Some(Node::File(..) | Node::Link(_)) => return Err(libc::ENOTDIR),
            Some(Node::Dir) => {}
            None => {
                tree.insert(a.to_string(), Node::Dir);
            }
        }
    }
    Ok(())
}

/// `draft rm PATH`: a file, or a directory with everything under it. Trailing slashes are
/// ignored; the root is EINVAL, a path that matches nothing ENOENT.
pub fn remove(tree: &mut Tree, path: &str) -> Result<(), i32> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(libc::EINVAL);
    }
    if tree.remove(path).is_none() {
        return Err(libc::ENOENT);
    }
    let below = format!("{path}/");
    tree.retain(|k, _| !k.starts_with(&below));
    Ok(())
}

/// Directory-tree order (component by component): how `ingest::scan` walks a directory.
fn tree_order(path: &str) -> Vec<&str> {
    path.split('/').collect()
}

/// The files and symlinks of a tree: what `ls` lists, in the order it lists them (byte order
/// of the full path, docs/SEMANTICS.md: `d-1` before `d/x`).
pub fn leaves(tree: &Tree) -> Vec<(String, Node)> {
    tree.iter()
        .filter(|(_, n)| **n != Node::Dir)
        .map(|(p, n)| (p.clone(), n.clone()))
        .collect()
}

/// The regular files of a tree, in `ls` order: (path, content, exec).
pub fn files_of(tree: &Tree) -> Vec<(String, usize, bool)> {
    leaves(tree)
        .into_iter()
        .filter_map(|(p, n)| match n {
            Node::File(c, x) => Some((p, c, x)),
            _ => None,
        })
        .collect()
}

/// The files and symlinks added, removed and modified (content, exec bit, target, kind) from
/// `old` to `new`, and directories without files added or removed (as `dir/`), sorted by
/// [`sort_changes`].
pub fn changes(old_tree: &Tree, new_tree: &Tree) -> Vec<(String, Change)> {
    let leaves = |t: &Tree| -> BTreeMap<String, Node> { leaves(t).into_iter().collect() };
    let (old, new) = (leaves(old_tree), leaves(new_tree));
    let mut out = Vec::new();
    for (p, o) in &old {
        match new.get(p) {
            None => out.push((p.clone(), Change::Removed)),
            Some(n) if n != o => out.push((p.clone(), Change::Modified)),
            Some(_) => {}
        }
    }
    for p in new.keys() {
        if !old.contains_key(p) {
            out.push((p.clone(), Change::Added));
        }
    }
    out.extend(empty_dirs(old_tree, new_tree, Change::Removed));
    out.extend(empty_dirs(new_tree, old_tree, Change::Added));
    sort_changes(&mut out);
    out
}

/// Directories with no files under them that exist only in `side`, reported as `dir/` — the
/// topmost of them only, as the store's diff stops descending at such a directory.
fn empty_dirs(side: &Tree, other: &Tree, change: Change) -> Vec<(String, Change)> {
    let is_dir = |t: &Tree, p: &str| t.get(p) == Some(&Node::Dir);
    let has_leaves = |p: &str| {
        let below = format!("{p}/");
        side.iter()
            .any(|(k, n)| k.starts_with(&below) && *n != Node::Dir)
    };
    side.iter()
        .filter(|(p, n)| **n == Node::Dir && !is_dir(other, p) && !has_leaves(p))
        .filter(|(p, _)| {
            // Reached only through directories present on both sides or holding files.
            p.match_indices('/')
                .map(|(i, _)| &p[..i])
                .all(|a| is_dir(other, a) || has_leaves(a))
        })
        .map(|(p, _)| (format!("{p}/"), change))
        .collect()
}

/// Changes sorted by path. (The store reports a directory replaced by a file as the
/// directory's files removed, then the file added, so both sides sort before comparing.)
pub fn sort_changes(v: &mut [(String, Change)]) {
    v.sort();
}

/// The scratch tree as `ingest::scan` reports it: the prefix itself first (if any), then every
/// entry, directories included, depth first with each directory's entries in name order.
pub fn scan_order(s: &Scratch, prefix: &str) -> Vec<(String, Node)> {
    let mut fs_tree = Tree::new();
    for &(f, c, m) in &s.files {
        // A later duplicate of a path overwrites an earlier one, as when writing the files.
        add_leaf(
            &mut fs_tree,
            TREE_FILES[f],
            Node::File(c, is_exec(crate::ops::MODES[m])),
        )
        .expect("the scratch pools form a tree");
    }
    for &d in &s.dirs {
        add_dir(&mut fs_tree, TREE_DIRS[d]).expect("the scratch pools form a tree");
    }
    for &l in &s.links {
        let (path, target) = TREE_LINKS[l];
        add_leaf(&mut fs_tree, path, Node::Link(target.to_string()))
            .expect("the scratch pools form a tree");
    }
    let mut entries: Vec<_> = fs_tree.into_iter().collect();
    entries.sort_by(|a, b| tree_order(&a.0).cmp(&tree_order(&b.0)));
    let mut out = Vec::new();
    if !prefix.is_empty() {
        out.push((prefix.to_string(), Node::Dir));
    }
    for (p, n) in entries {
        let p = if prefix.is_empty() {
            p
        } else {
            format!("{prefix}/{p}")
        };
        out.push((p, n));
    }
    out
}

/// Records scanned sources one by one; returns how many files were recorded.
fn apply_sources(tree: &mut Tree, sources: &[(String, Node)]) -> Result<usize, i32> {
    let mut files = 0;
    for (p, n) in sources {
        match n {
            Node::Dir => add_dir(tree, p)?,
            Node::File(..) | Node::Link(_) => {
                add_leaf(tree, p, n.clone())?;
                files += 1;
            }
        }
    }
    Ok(files)
}

#[derive(Clone, Debug)]
pub struct Draft {
    /// The base version's number and tree (kept here: the version may be deleted meanwhile).
    pub base: Option<(u64, Tree)>,
    pub tree: Tree,
    pub ty: Option<&'static str>,
}

#[derive(Clone, Debug, Default)]
pub struct Artifact {
    /// Set by the first commit; fixed from then on, even if every version is deleted.
    pub ty: Option<String>,
    pub versions: BTreeMap<u64, Tree>,
    /// The next version number: only ever grows.
    pub next: u64,
    /// Aliases other than `latest`, which is always the newest version.
    pub aliases: BTreeMap<&'static str, u64>,
    pub draft: Option<Draft>,
}

impl Artifact {
    pub fn latest(&self) -> Option<u64> {
        self.versions.keys().next_back().copied()
    }

    pub fn resolve(&self, r: &Ref) -> Result<u64, i32> {
        if self.ty.is_none() {
            return Err(libc::ENOENT);
        }
        match r {
            Ref::Number(n) if self.versions.contains_key(n) => Ok(*n),
            Ref::Number(_) => Err(libc::ENOENT),
            Ref::Alias("latest") => self.latest().ok_or(libc::ENOENT),
            Ref::Alias(a) => self.aliases.get(a).copied().ok_or(libc::ENOENT),
        }
    }

    fn check_type(&self, ty: Option<&str>) -> Result<(), i32> {
        match (&self.ty, ty) {
            (Some(have), Some(want)) if have != want => Err(libc::EEXIST),
            _ => Ok(()),
        }
    }

    /// Commits `d` (a user's draft or the hidden one of `log`).
    fn commit(
        &mut self,
        d: &Draft,
        alias: Option<&'static str>,
        ty: Option<&'static str>,
    ) -> Result<Res, i32> {
        // A type given to the commit must agree with the draft's own and the artifact's.
        if let (Some(t), Some(dt)) = (ty, d.ty)
            && t != dt
        {
            return Err(libc::EEXIST);
        }
        let wanted = ty.or(d.ty);
        self.check_type(wanted)?;
        if self.ty.is_none() {
            self.ty = Some(wanted.unwrap_or("dataset").to_string());
        }
        // Unchanged means equal to the base (if it still exists) or, from scratch, to latest.
        let same_as = match &d.base {
            Some((n, _)) => self.versions.get(n).map(|_| *n),
            None => self.latest(),
        };
        let (res, number) = match same_as {
            Some(n) if self.versions[&n] == d.tree => (Res::Unchanged(n), n),
            _ => {
                let n = self.next;
                self.next += 1;
                self.versions.insert(n, d.tree.clone());
                (Res::Created(n), n)
            }
        };
        if let Some(a) = alias.filter(|a| *a != "latest") {
            self.aliases.insert(a, number);
        }
        Ok(res)
    }

    /// Applies `step` if it succeeds; otherwise returns its errno and changes nothing.
    pub fn step(&mut self, step: &Step) -> Result<Res, i32> {
        let mut next = self.clone();
        let res = next.apply(step)?;
        *self = next;
        Ok(res)
    }

    fn draft(&mut self) -> Result<&mut Draft, i32> {
        self.draft.as_mut().ok_or(libc::ENOENT)
    }

    fn apply(&mut self, step: &Step) -> Result<Res, i32> {
        match step {
            Step::NewDraft { base, ty, .. } => {
                self.check_type(*ty)?;
                if self.draft.is_some() {
                    return Err(libc::EEXIST);
                }
                let base = match base {
                    StepBase::Default => self.latest(),
                    StepBase::Empty => None,
                    StepBase::From(r) => Some(self.resolve(r)?),
                };
                let base = base.map(|n| (n, self.versions[&n].clone()));
                self.draft = Some(Draft {
                    tree: base.as_ref().map(|b| b.1.clone()).unwrap_or_default(),
                    base,
                    ty: *ty,
                });
                Ok(Res::Base(
                    self.draft.as_ref().unwrap().base.as_ref().map(|b| b.0),
                ))
            }
            Step::AddFile {
                dest,
                content,
                mode,
                ..
            } => {
                add_leaf(
                    &mut self.draft()?.tree,
                    dest,
                    Node::File(*content, is_exec(*mode)),
                )?;
                Ok(Res::Files(1))
            }
            Step::AddDir { prefix, tree, .. } => {
                let n = apply_sources(&mut self.draft()?.tree, &scan_order(tree, prefix))?;
                Ok(Res::Files(n))
            }
            Step::Remove { paths, .. } => {
                let d = self.draft()?;
                for p in paths {
                    remove(&mut d.tree, p)?;
                }
                Ok(Res::Unit)
            }
            Step::Commit { alias, ty, .. } => {
                let d = self.draft.take().ok_or(libc::ENOENT)?;
                self.commit(&d, *alias, *ty)
            }
            Step::Discard { .. } => {
                self.draft.take().ok_or(libc::ENOENT)?;
                Ok(Res::Unit)
            }
            Step::Log {
                tree, alias, ty, ..
            } => {
                self.check_type(*ty)?;
                let mut t = Tree::new();
                apply_sources(&mut t, &scan_order(tree, "")).expect("a scratch tree always fits");
                let d = Draft {
                    base: None,
                    tree: t,
                    ty: None,
                };
                self.commit(&d, *alias, *ty)
            }
            Step::Delete { r, .. } => {
                let n = self.resolve(r)?;
                if self.aliases.values().any(|v| *v == n) {
                    return Err(libc::EPERM);
                }
                self.versions.remove(&n);
                Ok(Res::Version(n))
            }
            Step::SetAlias { r, alias, .. } => {
                if *alias == "latest" {
                    return Err(libc::EPERM);
                }
                let n = self.resolve(r)?;
                self.aliases.insert(alias, n);
                Ok(Res::Version(n))
            }
            Step::RemoveAlias { alias, .. } => {
                if *alias == "latest" {
                    return Err(libc::EPERM);
                }
                if self.ty.is_none() {
                    return Err(libc::ENOENT);
                }
                self.aliases.remove(alias).ok_or(libc::ENOENT)?;
                Ok(Res::Unit)
            }
            Step::Reopen => Ok(Res::Unit),
        }
    }
}
