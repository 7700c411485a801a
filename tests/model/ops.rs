//! The operations of the model test: pools they index into, the `Op` enum proptest generates,
//! its strategies, and `Step`, an op resolved against the current state.

use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// Pools. Ops index into these (modulo their length).

pub const ARTS: &[&str] = &["ds", "m"];
/// Destinations of `AddFile`: plain files (`d-1` sorts before `d/` byte-wise but after `d` as a
/// name, which tests listing and diff order), two paths that are directories once `d/x` or
/// `d/e/z` exist (EISDIR), two under a path that may be a file (ENOTDIR).
pub const FILE_POOL: &[&str] = &[
    "a", "b", "d/x", "d/y", "d/e/z", "d-1", "d", "d/e", "a/q", "d/x/q",
];
/// Paths `Remove` may name besides the draft's own. `d/` checks the trailing slash, `/` the
/// root (EINVAL); `k`, `n`, `a/q` usually match nothing (ENOENT).
pub const REMOVE_POOL: &[&str] = &[
    "a", "b", "d", "d/", "d/x", "d/y", "d/e", "d/e/z", "d-1", "k", "n", "a/q", "/",
];
/// Where `AddDir` puts a scratch directory: the root, existing or new directories, a path that
/// may be a file (EEXIST) and one under a possible file (ENOTDIR).
pub const PREFIX_POOL: &[&str] = &["", "d", "d/e", "n", "a", "d/x/q"];
/// Files and empty directories a scratch tree (for `AddDir` and `Log`) is made of.
pub const TREE_FILES: &[&str] = &["a", "b", "d/x", "d/y", "d/e/z", "d-1"];
pub const TREE_DIRS: &[&str] = &["k", "d/e", "n/m"];
/// Symlinks a scratch tree may hold (path, target); `d-1` may replace a file of the same name.
pub const TREE_LINKS: &[(&str, &str)] = &[("l", "a"), ("d/l", "../b"), ("d-1", "d")];
pub const ALIASES: &[&str] = &["best", "prod", "latest"];
pub const TYPES: &[&str] = &["dataset", "model"];
/// File modes: only the executable bit may matter to a version.
pub const MODES: &[u32] = &[0o644, 0o755, 0o600, 0o744, 0o700];
pub const N_CONTENTS: usize = 5;

pub fn content(i: usize) -> Vec<u8> {
    match i % N_CONTENTS {
        0 => Vec::new(),
        1 => b"alpha".to_vec(),
        2 => b"beta".to_vec(),
        3 => b"alpha\n".to_vec(),
        _ => (0..5000u32).map(|n| (n * 7 % 251) as u8).collect(),
    }
}

/// The pool index of some bytes, so trees read back from the store compare with the model.
pub fn content_index(bytes: &[u8]) -> usize {
    (0..N_CONTENTS)
        .find(|i| content(*i) == bytes)
        .unwrap_or(usize::MAX)
}

pub fn is_exec(mode: u32) -> bool {
    mode & 0o111 != 0
}

// ---------------------------------------------------------------------------------------------
// Operations, as generated.

/// Which version an op names.
#[derive(Clone, Debug)]
pub enum Pick {
    /// One of the versions that exist (index modulo their count); v0 if there are none.
    Existing(usize),
    /// Any number up to one past the next one, so deleted and unborn versions come up too.
    Number(usize),
    /// `NAME:best`, `NAME:prod` or `NAME:latest`.
    Alias(usize),
}

#[derive(Clone, Debug)]
pub enum Base {
    Latest,
    Empty,
    From(Pick),
}

/// Which path `Remove` names.
#[derive(Clone, Debug)]
pub enum PathPick {
    /// One of the paths (files or directories) the draft holds, by index modulo their count;
    /// a pool path if the draft holds none.
    Existing(usize),
    /// A path from [`REMOVE_POOL`], which often matches nothing.
    Pool(usize),
}

/// A small directory tree written to a scratch directory: files (`TREE_FILES` index, content,
/// `MODES` index), empty directories (`TREE_DIRS` index) and symlinks (`TREE_LINKS` index),
/// which replace a file at the same path.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    pub files: Vec<(usize, usize, usize)>,
    pub dirs: Vec<usize>,
    pub links: Vec<usize>,
}

#[derive(Clone, Debug)]
pub enum Op {
    NewDraft {
        art: usize,
        base: Base,
        ty: Option<usize>,
    },
    AddFile {
        art: usize,
        path: usize,
        content: usize,
        mode: usize,
    },
    /// Adds one of the draft's files again (index modulo their count) with the same content
    /// and exec bit but another mode and mtime: on its own it changes nothing.
    Readd {
        art: usize,
        file: usize,
    },
    AddDir {
        art: usize,
        prefix: usize,
        tree: Scratch,
    },
    /// One `draft rm` of one or more paths: all removed, or (one failing) none.
    Remove {
        art: usize,
        paths: Vec<PathPick>,
    },
    Commit {
        art: usize,
        alias: Option<usize>,
        ty: Option<usize>,
    },
    Discard {
        art: usize,
    },
    Log {
        art: usize,
        tree: Scratch,
        alias: Option<usize>,
        ty: Option<usize>,
    },
    Delete {
        art: usize,
        version: Pick,
    },
    SetAlias {
        art: usize,
        version: Pick,
        alias: usize,
    },
    RemoveAlias {
        art: usize,
        alias: usize,
    },
    /// Drops the store and opens it again: everything must have been persisted.
    Reopen,
    /// A draft's life in one op, so that most edits land in a draft: `NewDraft`, the edits,
    /// then a commit, a discard or nothing. Expanded into the plain ops above, each checked.
    Session {
        art: usize,
        base: Base,
        edits: Vec<Edit>,
        end: End,
    },
}

#[derive(Clone, Debug)]
pub enum Edit {
    File {
        path: usize,
        content: usize,
        mode: usize,
    },
    Readd(usize),
    Dir {
        prefix: usize,
        tree: Scratch,
    },
    Remove(Vec<PathPick>),
}

#[derive(Clone, Debug)]
pub enum End {
    Commit {
        alias: Option<usize>,
        ty: Option<usize>,
    },
    Discard,
    Leave,
}

impl Op {
    /// The plain ops a `Session` stands for; any other op is itself.
    pub fn expand(&self) -> Vec<Op> {
        let Op::Session {
            art,
            base,
            edits,
            end,
        } = self
        else {
            return vec![self.clone()];
        };
        let art = *art;
        let mut out = vec![Op::NewDraft {
            art,
            base: base.clone(),
            ty: None,
        }];
        for e in edits.iter().cloned() {
            out.push(match e {
                Edit::File {
                    path,
                    content,
                    mode,
                } => Op::AddFile {
                    art,
                    path,
                    content,
                    mode,
                },
                Edit::Readd(file) => Op::Readd { art, file },
                Edit::Dir { prefix, tree } => Op::AddDir { art, prefix, tree },
                Edit::Remove(paths) => Op::Remove { art, paths },
            });
        }
        match end {
            End::Commit { alias, ty } => out.push(Op::Commit {
                art,
                alias: *alias,
                ty: *ty,
            }),
            End::Discard => out.push(Op::Discard { art }),
            End::Leave => {}
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies.

fn art() -> impl Strategy<Value = usize> {
    prop_oneof![5 => Just(0usize), 1 => Just(1usize)]
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        4 => any::<usize>().prop_map(Pick::Existing),
        1 => (0usize..8).prop_map(Pick::Number),
        1 => (0..ALIASES.len()).prop_map(Pick::Alias),
    ]
}

fn base() -> impl Strategy<Value = Base> {
    prop_oneof![
        3 => Just(Base::Latest),
        1 => Just(Base::Empty),
        2 => pick().prop_map(Base::From),
    ]
}

fn scratch() -> impl Strategy<Value = Scratch> {
    (
        prop::collection::vec((0..TREE_FILES.len(), 0..N_CONTENTS, 0..MODES.len()), 0..4),
        prop::collection::vec(0..TREE_DIRS.len(), 0..2),
        prop_oneof![
            3 => Just(Vec::new()),
            1 => prop::collection::vec(0..TREE_LINKS.len(), 1..3),
        ],
    )
        .prop_map(|(files, dirs, links)| Scratch { files, dirs, links })
}

fn ty() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 1 => (0..TYPES.len()).prop_map(Some)]
}

fn alias() -> impl Strategy<Value = Option<usize>> {
    prop::option::of(0..ALIASES.len())
}

fn paths() -> impl Strategy<Value = Vec<PathPick>> {
    let one = prop_oneof![
        3 => any::<usize>().prop_map(PathPick::Existing),
        1 => (0..REMOVE_POOL.len()).prop_map(PathPick::Pool),
    ];
    prop_oneof![
        4 => one.clone().prop_map(|p| vec![p]),
        1 => prop::collection::vec(one, 2..4),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..FILE_POOL.len(), 0..N_CONTENTS, 0..MODES.len())
            .prop_map(|(path, content, mode)| Edit::File { path, content, mode }),
        1 => any::<usize>().prop_map(Edit::Readd),
        1 => (0..PREFIX_POOL.len(), scratch()).prop_map(|(prefix, tree)| Edit::Dir { prefix, tree }),
        2 => paths().prop_map(Edit::Remove),
    ]
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![
        4 => (alias(), ty()).prop_map(|(alias, ty)| End::Commit { alias, ty }),
        1 => Just(End::Discard),
        1 => Just(End::Leave),
    ]
}

pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            art(),
            prop_oneof![
                4 => Just(Base::Latest),
                1 => Just(Base::Empty),
                2 => any::<usize>().prop_map(|i| Base::From(Pick::Existing(i))),
            ],
            prop_oneof![
                1 => Just(Vec::new()),
                4 => prop::collection::vec(edit(), 1..6),
            ],
            end(),
        )
            .prop_map(|(art, base, edits, end)| Op::Session { art, base, edits, end }),
        2 => (art(), base(), ty()).prop_map(|(art, base, ty)| Op::NewDraft { art, base, ty }),
        1 => (art(), 0..FILE_POOL.len(), 0..N_CONTENTS, 0..MODES.len())
            .prop_map(|(art, path, content, mode)| Op::AddFile { art, path, content, mode }),
        1 => (art(), 0..PREFIX_POOL.len(), scratch())
            .prop_map(|(art, prefix, tree)| Op::AddDir { art, prefix, tree }),
        1 => (art(), paths()).prop_map(|(art, paths)| Op::Remove { art, paths }),
        2 => (art(), alias(), ty()).prop_map(|(art, alias, ty)| Op::Commit { art, alias, ty }),
        1 => art().prop_map(|art| Op::Discard { art }),
        2 => (art(), scratch(), alias(), ty())
            .prop_map(|(art, tree, alias, ty)| Op::Log { art, tree, alias, ty }),
        2 => (art(), pick()).prop_map(|(art, version)| Op::Delete { art, version }),
        2 => (art(), pick(), 0..ALIASES.len())
            .prop_map(|(art, version, alias)| Op::SetAlias { art, version, alias }),
        1 => (art(), 0..ALIASES.len()).prop_map(|(art, alias)| Op::RemoveAlias { art, alias }),
        1 => Just(Op::Reopen),
    ]
}

// ---------------------------------------------------------------------------------------------
// Resolved operations: an `Op` with its indices turned into names, paths and version refs.

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ref {
    Number(u64),
    Alias(&'static str),
}

#[derive(Clone, Debug)]
pub enum StepBase {
    Default,
    Empty,
    From(Ref),
}

#[derive(Clone, Debug)]
pub enum Step {
    NewDraft {
        art: usize,
        base: StepBase,
        ty: Option<&'static str>,
    },
    AddFile {
        art: usize,
        dest: String,
        content: usize,
        mode: u32,
    },
    AddDir {
        art: usize,
        prefix: &'static str,
        tree: Scratch,
    },
    Remove {
        art: usize,
        paths: Vec<String>,
    },
    Commit {
        art: usize,
        alias: Option<&'static str>,
        ty: Option<&'static str>,
    },
    Discard {
        art: usize,
    },
    Log {
        art: usize,
        tree: Scratch,
        alias: Option<&'static str>,
        ty: Option<&'static str>,
    },
    Delete {
        art: usize,
        r: Ref,
    },
    SetAlias {
        art: usize,
        r: Ref,
        alias: &'static str,
    },
    RemoveAlias {
        art: usize,
        alias: &'static str,
    },
    Reopen,
}

impl Step {
    pub fn art(&self) -> Option<usize> {
        match self {
            Step::NewDraft { art, .. }
            | Step::AddFile { art, .. }
            | Step::AddDir { art, .. }
            | Step::Remove { art, .. }
            | Step::Commit { art, .. }
            | Step::Discard { art }
            | Step::Log { art, .. }
            | Step::Delete { art, .. }
            | Step::SetAlias { art, .. }
            | Step::RemoveAlias { art, .. } => Some(*art),
            Step::Reopen => None,
        }
    }
}

/// What a successful step returns, in terms both sides can produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Res {
    Unit,
    /// `draft new`: the base version number.
    Base(Option<u64>),
    /// `draft add`: how many files were recorded.
    Files(usize),
    Created(u64),
    Unchanged(u64),
    /// `delete`, `alias set`: the version acted on.
    Version(u64),
}
