//! A draft is its base tree plus the changes recorded in `draft_entries`. This module answers
//! "what is at this path in the draft", records changes while keeping the invariant that every
//! ancestor of a recorded change is a recorded directory, and builds the draft's final tree.
//! All functions run inside the caller's transaction.

use crate::catalog::Db;

use crate::catalog::drafts::{self, Change, DraftEntry, DraftRow, Local, Meta};
use crate::catalog::nodes::{self, NodeId, NodeInfo};
use crate::error::{Error, Result};
use crate::hash::Digest;
use crate::tree::{self, Item, TreeEntry};

/// What a path holds in a draft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    File(TreeEntry, Local),
    Symlink(TreeEntry, Local),
    /// A file written through the mount: staged file `id` holds its bytes, size and times.
    Staged {
        id: i64,
        mode: u32,
        /// Who made it, when not the draft's owner.
        owner: Option<(u32, u32)>,
        /// Its content when last closed, and then its mtime (shared stores; see
        /// [`Change::Staged`]).
        published: Option<(Digest, u64)>,
        mtime_ns: i64,
    },
    /// A directory, with the base directory it shows through (if any).
    Dir {
        base: Option<NodeId>,
        meta: Meta,
    },
}

/// Names a path of a draft in errors: `a/b in draft mnist`.
fn at(draft: &DraftRow, path: &[u8]) -> String {
    format!("{} in {}", lossy(path), draft.label())
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Splits a draft path into components, refusing `.`/`..` and absolute forms.
pub fn parse_path(path: &[u8]) -> Result<Vec<&[u8]>> {
    let parts = tree::components(path).ok_or_else(|| {
        Error::invalid(
            format!("path {}", lossy(path)),
            "'.' and '..' components are not allowed in a draft path",
        )
    })?;
    if parts.iter().any(|p| p.len() > crate::error::NAME_MAX) {
        return Err(Error::NameTooLong(format!("path {}", lossy(path))));
    }
    Ok(parts)
}

fn entry_of(e: &DraftEntry, item: Item) -> TreeEntry {
    TreeEntry {
        name: e.name.clone(),
        item,
        mode: e.meta.mode,
        mtime_ns: e.meta.mtime_ns,
    }
}

/// The base directory under `base` called `name`, if it is one.
fn base_dir(conn: &Db, base: Option<NodeId>, name: &[u8]) -> Result<Option<NodeId>> {
    let Some(b) = base else { return Ok(None) };
    Ok(match nodes::lookup(conn, b, name)? {
        Some(TreeEntry {
            item: Item::Dir { node },
            ..
        }) => Some(node),
        _ => None,
    })
}

/// The base directory a recorded directory shows through: the one it was moved from, none
/// if it hides the base, else the base's directory at the same path.
fn shown_base(
    conn: &Db,
    opaque: bool,
    moved: Option<NodeId>,
    parent_base: Option<NodeId>,
    name: &[u8],
) -> Result<Option<NodeId>> {
    match (moved, opaque) {
        (Some(node), _) => Ok(Some(node)),
        (None, true) => Ok(None),
        (None, false) => base_dir(conn, parent_base, name),
    }
}

/// Resolves `path` in the draft; `None` if nothing is there.
pub fn find(conn: &Db, draft: &DraftRow, path: &[u8]) -> Result<Option<Found>> {
    let parts = parse_path(path)?;
    let mut base = draft.base_root;
    let mut meta = draft.root;
    let mut parent: Vec<u8> = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match drafts::entry(conn, draft.id, &parent, part)? {
            Some(e) => match e.change {
                Change::Removed => return Ok(None),
                Change::Dir { opaque, moved } => {
                    base = shown_base(conn, opaque, moved, base, part)?;
                    meta = e.meta;
                }
                _ if last => return Ok(Some(found_in_changes(&e))),
                _ => return Ok(None),
            },
            None => {
                // Nothing recorded here, so nothing recorded below: the rest is the base's.
                let Some(b) = base else { return Ok(None) };
                let rest = parts[i..].join(&b'/');
                return Ok(tree::lookup(conn, b, &rest)?.map(found_in_base));
            }
        }
        parent = tree::join(&parent, part);
    }
    Ok(Some(Found::Dir { base, meta }))
}

/// What a recorded file, symlink or staged file is (not a directory or removal, whose
/// meaning depends on the base).
fn found_in_changes(e: &DraftEntry) -> Found {
    let times = e.meta.local();
    match &e.change {
        Change::File { blob, size } => Found::File(
            entry_of(
                e,
                Item::File {
                    blob: *blob,
                    size: *size,
                },
            ),
            times,
        ),
        Change::Symlink { target } => Found::Symlink(
            entry_of(
                e,
                Item::Symlink {
                    target: target.clone(),
                },
            ),
            times,
        ),
        Change::Staged { id, published } => Found::Staged {
            id: *id,
            mode: e.meta.mode,
            owner: e.meta.owner,
            published: *published,
            mtime_ns: e.meta.mtime_ns,
        },
        Change::Reference(r) => Found::File(entry_of(e, Item::Reference(r.clone())), times),
        Change::Dir { .. } | Change::Removed => unreachable!("not a leaf"),
    }
}

fn found_in_base(e: TreeEntry) -> Found {
    let times = Local::recorded(e.mtime_ns);
    match e.item {
        Item::Dir { node } => Found::Dir {
            base: Some(node),
            meta: Meta::recorded(e.mode, e.mtime_ns),
        },
        Item::File { .. } | Item::Reference(_) => Found::File(e, times),
        Item::Symlink { .. } => Found::Symlink(e, times),
    }
}

/// Records directory rows for every ancestor of `parts` (all but the last component), so a
/// change can be recorded at the full path. Fails if an ancestor is a file or symlink.
fn ensure_parents(conn: &Db, draft: &DraftRow, parts: &[&[u8]]) -> Result<Vec<u8>> {
    let mut base = draft.base_root;
    let mut parent: Vec<u8> = Vec::new();
    for part in &parts[..parts.len().saturating_sub(1)] {
        let here = tree::join(&parent, part);
        match drafts::entry(conn, draft.id, &parent, part)? {
            Some(DraftEntry {
                change: Change::Dir { opaque, moved },
                ..
            }) => {
                base = shown_base(conn, opaque, moved, base, part)?;
            }
            Some(DraftEntry {
                change: Change::Removed,
                ..
            }) => {
                put(
                    conn,
                    draft,
                    &parent,
                    part,
                    Change::Dir {
                        opaque: true,
                        moved: None,
                    },
                    Meta::now(0o755),
                )?;
                base = None;
            }
            Some(_) => {
                return Err(Error::NotADirectory(at(draft, &here)));
            }
            None => {
                let in_base = match base {
                    Some(b) => nodes::lookup(conn, b, part)?,
                    None => None,
                };
                match in_base {
                    Some(TreeEntry {
                        item: Item::Dir { node },
                        mode,
                        mtime_ns,
                        ..
                    }) => {
                        put(
                            conn,
                            draft,
                            &parent,
                            part,
                            Change::Dir {
                                opaque: false,
                                moved: None,
                            },
                            Meta::recorded(mode, mtime_ns),
                        )?;
                        base = Some(node);
                    }
                    Some(_) => {
                        return Err(Error::NotADirectory(at(draft, &here)));
                    }
                    None => {
                        put(
                            conn,
                            draft,
                            &parent,
                            part,
                            Change::Dir {
                                opaque: false,
                                moved: None,
                            },
                            Meta::now(0o755),
                        )?;
                        base = None;
                    }
                }
            }
        }
        parent = here;
    }
    Ok(parent)
}

fn put(
    conn: &Db,
    draft: &DraftRow,
    parent: &[u8],
    name: &[u8],
    change: Change,
    meta: Meta,
) -> Result<()> {
    drafts::put(
        conn,
        draft.id,
        parent,
        &DraftEntry {
            name: name.to_vec(),
            change,
            meta,
        },
    )
}

/// Records a file or symlink at `path`, replacing a file or symlink already there. A directory
/// at `path`, or a file where a parent directory should be, is an error.
pub fn put_leaf(
    conn: &Db,
    draft: &DraftRow,
    path: &[u8],
    change: Change,
    meta: Meta,
) -> Result<()> {
    let parts = parse_path(path)?;
    let Some(name) = parts.last() else {
        return Err(Error::IsADirectory(format!(
            "the root of {}",
            draft.label()
        )));
    };
    if let Some(Found::Dir { .. }) = find(conn, draft, path)? {
        return Err(Error::IsADirectory(at(draft, path)));
    }
    let parent = ensure_parents(conn, draft, &parts)?;
    put(conn, draft, &parent, name, change, meta)
}

/// Records a directory at `path` (and its parents); an existing directory is kept as it is.
pub fn put_dir(conn: &Db, draft: &DraftRow, path: &[u8], meta: Meta) -> Result<()> {
    let parts = parse_path(path)?;
    let Some(name) = parts.last() else {
        return Ok(());
    };
    match find(conn, draft, path)? {
        Some(Found::Dir { .. }) => Ok(()),
        Some(_) => Err(Error::AlreadyExists(format!(
            "{} (as a file)",
            at(draft, path)
        ))),
        None => {
            let parent = ensure_parents(conn, draft, &parts)?;
            // A fresh directory: whatever the base had at this path was removed earlier.
            put(
                conn,
                draft,
                &parent,
                name,
                Change::Dir {
                    opaque: true,
                    moved: None,
                },
                meta,
            )
        }
    }
}

/// Removes the file, symlink or whole directory at `path`.
pub fn remove(conn: &Db, draft: &DraftRow, path: &[u8]) -> Result<()> {
    let parts = parse_path(path)?;
    let Some(name) = parts.last() else {
        return Err(Error::invalid(
            draft.label(),
            "cannot remove the root; use `draft discard`",
        ));
    };
    if find(conn, draft, path)?.is_none() {
        return Err(Error::not_found(at(draft, path)));
    }
    let parent = ensure_parents(conn, draft, &parts)?;
    let full = tree::join(&parent, name);
    drafts::clear_below(conn, draft.id, &full)?;
    put(
        conn,
        draft,
        &parent,
        name,
        Change::Removed,
        Meta::recorded(0, 0),
    )
}

/// Records that directory `dir` of the draft changed now (an entry was made, removed or
/// renamed in it): its mtime and ctime, as a local filesystem keeps them.
pub fn touch_dir(conn: &Db, draft: &DraftRow, dir: &[u8]) -> Result<()> {
    let now = crate::clock::now_ns();
    let changed = |meta: Meta| Meta {
        mtime_ns: now,
        ctime_ns: now,
        ..meta
    };
    if parse_path(dir)?.is_empty() {
        return drafts::set_root_meta(conn, draft.id, &changed(draft.root));
    }
    match find(conn, draft, dir)? {
        Some(Found::Dir { meta, .. }) => set_meta(conn, draft, dir, changed(meta)),
        _ => Ok(()),
    }
}

/// The directory part of a draft path (empty for a name at the top).
pub fn parent_of(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

/// The blob, size and mtime a staged file would be recorded with.
pub type StagedContent<'a> = &'a dyn Fn(i64) -> Result<(Digest, u64, i64)>;

/// Builds and stores the draft's complete tree, touching only directories with changes.
/// `staged` gives the content of staged files (a commit stores them first and has none).
pub fn build_tree(conn: &Db, draft: &DraftRow, staged: StagedContent) -> Result<NodeInfo> {
    build_dir(conn, draft.id, b"", draft.base_root, staged)
}

fn build_dir(
    conn: &Db,
    draft: i64,
    path: &[u8],
    base: Option<NodeId>,
    staged: StagedContent,
) -> Result<NodeInfo> {
    let base_entries = match base {
        Some(b) => nodes::list(conn, b)?,
        None => Vec::new(),
    };
    let changes = drafts::entries(conn, draft, path)?;
    let mut out = Vec::with_capacity(base_entries.len() + changes.len());
    let mut base_iter = base_entries.into_iter().peekable();
    for change in changes {
        while let Some(b) = base_iter.next_if(|b| b.name < change.name) {
            out.push(b);
        }
        let same = base_iter.next_if(|b| b.name == change.name);
        let mut mtime_ns = change.meta.mtime_ns;
        let item = match change.change {
            Change::Removed => continue,
            Change::File { blob, size } => Item::File { blob, size },
            Change::Staged { id, .. } => {
                let (blob, size, mtime) = staged(id)?;
                mtime_ns = mtime;
                Item::File { blob, size }
            }
            Change::Symlink { ref target } => Item::Symlink {
                target: target.clone(),
            },
            Change::Reference(ref r) => Item::Reference(r.clone()),
            Change::Dir { opaque, moved } => {
                let child_base = moved.or(match same {
                    Some(TreeEntry {
                        item: Item::Dir { node },
                        ..
                    }) if !opaque => Some(node),
                    _ => None,
                });
                let child_path = tree::join(path, &change.name);
                let child = build_dir(conn, draft, &child_path, child_base, staged)?;
                Item::Dir { node: child.id }
            }
        };
        out.push(TreeEntry {
            mtime_ns,
            ..entry_of(&change, item)
        });
    }
    out.extend(base_iter);
    nodes::insert(conn, &out)
}

/// The entries of directory `path` in the draft, sorted by name: the base directory's
/// entries with the draft's changes applied.
pub fn list(conn: &Db, draft: &DraftRow, path: &[u8]) -> Result<Vec<(Vec<u8>, Found)>> {
    let base = match find(conn, draft, path)? {
        Some(Found::Dir { base, .. }) => base,
        Some(_) => {
            return Err(Error::NotADirectory(at(draft, path)));
        }
        None => {
            return Err(Error::not_found(at(draft, path)));
        }
    };
    let parts = parse_path(path)?;
    let key = parts.join(&b'/');
    let mut base_iter = match base {
        Some(b) => nodes::list(conn, b)?,
        None => Vec::new(),
    }
    .into_iter()
    .peekable();
    let mut out = Vec::new();
    for change in drafts::entries(conn, draft.id, &key)? {
        while let Some(b) = base_iter.next_if(|b| b.name < change.name) {
            out.push((b.name.clone(), found_in_base(b)));
        }
        let same = base_iter.next_if(|b| b.name == change.name);
        let found = match change.change {
            Change::Removed => continue,
            Change::Dir { opaque, moved } => Found::Dir {
                base: moved.or(match same {
                    Some(TreeEntry {
                        item: Item::Dir { node },
                        ..
                    }) if !opaque => Some(node),
                    _ => None,
                }),
                meta: change.meta,
            },
            _ => found_in_changes(&change),
        };
        out.push((change.name, found));
    }
    out.extend(base_iter.map(|b| (b.name.clone(), found_in_base(b))));
    Ok(out)
}

/// Records new permission bits and times for whatever is at `path` (a file keeps its content,
/// a directory its contents).
pub fn set_meta(conn: &Db, draft: &DraftRow, path: &[u8], meta: Meta) -> Result<()> {
    let parts = parse_path(path)?;
    let Some(name) = parts.last() else {
        return drafts::set_root_meta(conn, draft.id, &meta);
    };
    let found = find(conn, draft, path)?.ok_or_else(|| Error::not_found(at(draft, path)))?;
    let change = match leaf_change(&found) {
        Some((change, _)) => change,
        None => {
            // Keep which base directory it shows.
            let parent = parts[..parts.len() - 1].join(&b'/');
            match drafts::entry(conn, draft.id, &parent, name)? {
                Some(DraftEntry {
                    change: dir @ Change::Dir { .. },
                    ..
                }) => dir,
                _ => Change::Dir {
                    opaque: false,
                    moved: None,
                },
            }
        }
    };
    let parent = ensure_parents(conn, draft, &parts)?;
    put(conn, draft, &parent, name, change, meta)
}

/// The change that records a file or symlink again as it is, with its mode and times; None
/// for a directory.
fn leaf_change(found: &Found) -> Option<(Change, Meta)> {
    let (e, times) = match found {
        Found::File(e, t) | Found::Symlink(e, t) => (e, t),
        // A staged file's times are its own; the catalog keeps none.
        Found::Staged {
            id,
            mode,
            owner,
            published,
            mtime_ns,
        } => {
            return Some((
                Change::Staged {
                    id: *id,
                    published: *published,
                },
                Meta::recorded(*mode, *mtime_ns).by(*owner),
            ));
        }
        Found::Dir { .. } => return None,
    };
    let change = match &e.item {
        Item::File { blob, size } => Change::File {
            blob: *blob,
            size: *size,
        },
        Item::Symlink { target } => Change::Symlink {
            target: target.clone(),
        },
        Item::Reference(r) => Change::Reference(r.clone()),
        Item::Dir { .. } => return None,
    };
    Some((change, Meta::with_local(e.mode, e.mtime_ns, *times)))
}

/// Moves what is at `from` to `to` within the draft, as rename(2) does: a file or symlink
/// replaces a file or symlink, a directory replaces an empty directory, unless `no_replace`.
/// A directory moves with everything recorded below it and keeps showing its base directory.
pub fn rename(conn: &Db, draft: &DraftRow, from: &[u8], to: &[u8], no_replace: bool) -> Result<()> {
    let source = find(conn, draft, from)?.ok_or_else(|| Error::not_found(at(draft, from)))?;
    let target = find(conn, draft, to)?;
    if no_replace && target.is_some() {
        return Err(Error::AlreadyExists(at(draft, to)));
    }
    // rename(2) changes the moved entry's ctime, not its other times.
    let Found::Dir { base, meta } = source else {
        if let Some(Found::Dir { .. }) = target {
            return Err(Error::IsADirectory(at(draft, to)));
        }
        let (change, meta) = leaf_change(&source).expect("a file or symlink");
        put_leaf(conn, draft, to, change, meta.changed())?;
        return remove(conn, draft, from);
    };
    let (from_parts, to_parts) = (parse_path(from)?, parse_path(to)?);
    if to_parts.len() > from_parts.len() && to_parts.starts_with(&from_parts) {
        return Err(Error::invalid(
            at(draft, to),
            format!("a directory cannot move into itself ({})", lossy(from)),
        ));
    }
    let (Some(name), false) = (to_parts.last(), from_parts.is_empty()) else {
        return Err(Error::Busy(format!(
            "the root of {} cannot be renamed",
            draft.label()
        )));
    };
    match target {
        Some(Found::Dir { .. }) if !list(conn, draft, to)?.is_empty() => {
            return Err(Error::NotEmpty(at(draft, to)));
        }
        Some(Found::Dir { .. }) | None => {}
        Some(_) => return Err(Error::NotADirectory(at(draft, to))),
    }
    let parent = ensure_parents(conn, draft, &to_parts)?;
    let (old, new) = (from_parts.join(&b'/'), tree::join(&parent, name));
    drafts::clear_below(conn, draft.id, &new)?;
    drafts::move_below(conn, draft.id, &old, &new)?;
    let moved = Change::Dir {
        opaque: true,
        moved: base,
    };
    put(conn, draft, &parent, name, moved, meta.changed())?;
    remove(conn, draft, from)
}
