//! What the kernel still holds of a draft after the last name went away: a file removed or
//! renamed over while open, a directory removed while a process stands in it. As on a local
//! filesystem, it keeps its content and attributes (with no links) and stays readable,
//! writable and `fstat`-able through every open descriptor until the kernel forgets it.

use std::fs::File;
use std::sync::{Arc, Mutex};

use crate::catalog::drafts::Meta;
use crate::tree::TreeEntry;

use super::Kind;

#[derive(Debug)]
pub struct Orphan {
    pub kind: Kind,
    /// A staged file's bytes, kept open: its name in the store is removed already.
    pub file: Option<Arc<File>>,
    /// What a file still holding its base's content (or a symlink) was.
    pub entry: Option<TreeEntry>,
    /// Its permission bits and times; a staged file's times are the file's own.
    pub meta: Mutex<Meta>,
    pub owner: (u32, u32),
}

/// A shared orphan; two are the same object only if they are the same allocation.
#[derive(Clone, Debug)]
pub struct Detached(pub Arc<Orphan>);

impl PartialEq for Detached {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Detached {}

impl Orphan {
    pub fn meta(&self) -> Meta {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_meta(&self, meta: Meta) {
        *self.meta.lock().unwrap_or_else(|e| e.into_inner()) = meta;
    }
}
