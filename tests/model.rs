//! Reference-model property tests (STYLE.md item 5, after mountpoint-s3's `tests/reftests/`).
//!
//! proptest generates a sequence of [`ops::Op`]s over two artifacts. An op carries plain
//! indices, resolved against the current state (modulo a pool, the existing versions or the
//! draft's paths), so every sequence means something and shrinks well. Each op is applied to a
//! real [`Store`] in a tempdir (through the library, no binary, no FUSE) and to the model in
//! [`reference`] (a few `BTreeMap`s); both must succeed with the same result or fail with the
//! same errno. After every op the whole store is compared with the model:
//!
//! - every committed version: its tree (files with content and executable bit, symlinks with
//!   their target, and directories, which a version keeps even when empty), `ls` (whole and
//!   under a prefix), `cat`, `diff` against latest, file count, aliases;
//! - version numbers, `latest` (the newest remaining version), the artifact's type;
//! - digests: two versions have the same digest exactly when their trees are equal;
//! - the draft: its base, the tree a commit would build, `draft::find` path by path, and
//!   `draft status` (added / modified / removed against the base, stale or not);
//! - a refused op leaves no new blob behind.
//!
//! Shrunk failures are kept at the bottom as named regression tests, with the sequences worth
//! keeping written out by hand. Run with `cargo test --test model`; `PROPTEST_CASES=N` runs
//! more cases.

#[path = "model/ops.rs"]
mod ops;
#[path = "model/reference.rs"]
mod reference;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use artifactfs::catalog::drafts;
use artifactfs::catalog::versions;
use artifactfs::commit::{CommitOptions, Outcome};
use artifactfs::draft::{self, Found};
use artifactfs::error::Error;
use artifactfs::ingest::Inputs;
use artifactfs::names::{AliasName, ArtifactName, DraftName, Selector, TypeName, VersionRef};
use artifactfs::query;
use artifactfs::store::{DraftBase, Store, require_draft};
use artifactfs::tree::{self, Change, Item, TreeEntry};
use proptest::prelude::*;

use ops::*;
use reference::{Artifact, Node, Tree, changes, files_of, leaves, sort_changes};

// ---------------------------------------------------------------------------------------------
// The harness: a real store, the model, and the comparison.

struct Harness {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    scratch: PathBuf,
    store: Store,
    model: Vec<Artifact>,
    ops: usize,
    /// Every (artifact, number) ever created, to prove numbers are never reused.
    ever: BTreeSet<(usize, u64)>,
}

fn art_name(art: usize) -> ArtifactName {
    ArtifactName::new(ARTS[art]).unwrap()
}

fn draft_name(art: usize) -> DraftName {
    DraftName {
        artifact: art_name(art),
        id: None,
    }
}

fn version_ref(art: usize, r: &Ref) -> VersionRef {
    match r {
        Ref::Number(n) => VersionRef::number(art_name(art), *n),
        Ref::Alias(a) => VersionRef {
            artifact: art_name(art),
            selector: Selector::Alias(AliasName::new(a).unwrap()),
        },
    }
}

fn commit_opts(alias: Option<&str>, ty: Option<&str>) -> CommitOptions {
    CommitOptions {
        type_name: ty.map(|t| TypeName::new(t).unwrap()),
        aliases: alias
            .map(|a| AliasName::new(a).unwrap())
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn outcome(o: Outcome) -> Res {
    match o {
        Outcome::Created(v) => Res::Created(v.number),
        Outcome::Unchanged(v) => Res::Unchanged(v.number),
    }
}

fn utf8(p: &[u8]) -> String {
    String::from_utf8(p.to_vec()).unwrap()
}

impl Harness {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("store");
        let scratch = tmp.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        let store = Store::open(&root).unwrap();
        Harness {
            _tmp: tmp,
            root,
            scratch,
            store,
            model: vec![Artifact::default(); ARTS.len()],
            ops: 0,
            ever: BTreeSet::new(),
        }
    }

    // --- resolving ops against the model's state ---------------------------------------------

    fn resolve_pick(&self, art: usize, p: &Pick) -> Ref {
        let m = &self.model[art];
        match p {
            Pick::Existing(i) => {
                let numbers: Vec<u64> = m.versions.keys().copied().collect();
                Ref::Number(if numbers.is_empty() {
                    0
                } else {
                    numbers[i % numbers.len()]
                })
            }
            Pick::Number(i) => Ref::Number(*i as u64 % (m.next + 2)),
            Pick::Alias(i) => Ref::Alias(ALIASES[i % ALIASES.len()]),
        }
    }

    fn resolve_path(&self, art: usize, p: &PathPick) -> String {
        let held: Vec<&String> = match &self.model[art].draft {
            Some(d) => d.tree.keys().collect(),
            None => Vec::new(),
        };
        match p {
            PathPick::Existing(i) if !held.is_empty() => held[i % held.len()].clone(),
            PathPick::Existing(i) | PathPick::Pool(i) => {
                REMOVE_POOL[i % REMOVE_POOL.len()].to_string()
            }
        }
    }

    fn resolve(&self, op: &Op) -> Step {
        let art = |a: &usize| a % ARTS.len();
        let ty = |t: &Option<usize>| t.map(|t| TYPES[t % TYPES.len()]);
        let alias = |a: &Option<usize>| a.map(|a| ALIASES[a % ALIASES.len()]);
        match op {
            Op::NewDraft {
                art: a,
                base,
                ty: t,
            } => Step::NewDraft {
                art: art(a),
                base: match base {
                    Base::Latest => StepBase::Default,
                    Base::Empty => StepBase::Empty,
                    Base::From(p) => StepBase::From(self.resolve_pick(art(a), p)),
                },
                ty: ty(t),
            },
            Op::AddFile {
                art: a,
                path,
                content,
                mode,
            } => Step::AddFile {
                art: art(a),
                dest: FILE_POOL[path % FILE_POOL.len()].to_string(),
                content: content % N_CONTENTS,
                mode: MODES[mode % MODES.len()],
            },
            Op::Readd { art: a, file } => {
                let files = match &self.model[art(a)].draft {
                    Some(d) => files_of(&d.tree),
                    None => Vec::new(),
                };
                // With no file to add again, add a pool file instead.
                let (dest, content, exec) = if files.is_empty() {
                    (FILE_POOL[file % FILE_POOL.len()].to_string(), 1, false)
                } else {
                    files[file % files.len()].clone()
                };
                Step::AddFile {
                    art: art(a),
                    dest,
                    content,
                    // Another mode with the same executable bit.
                    mode: if exec { 0o700 } else { 0o600 },
                }
            }
            Op::AddDir {
                art: a,
                prefix,
                tree,
            } => Step::AddDir {
                art: art(a),
                prefix: PREFIX_POOL[prefix % PREFIX_POOL.len()],
                tree: tree.clone(),
            },
            Op::Remove { art: a, paths } => Step::Remove {
                art: art(a),
                paths: paths.iter().map(|p| self.resolve_path(art(a), p)).collect(),
            },
            Op::Commit {
                art: a,
                alias: al,
                ty: t,
            } => Step::Commit {
                art: art(a),
                alias: alias(al),
                ty: ty(t),
            },
            Op::Discard { art: a } => Step::Discard { art: art(a) },
            Op::Log {
                art: a,
                tree,
                alias: al,
                ty: t,
            } => Step::Log {
                art: art(a),
                tree: tree.clone(),
                alias: alias(al),
                ty: ty(t),
            },
            Op::Delete { art: a, version } => Step::Delete {
                art: art(a),
                r: self.resolve_pick(art(a), version),
            },
            Op::SetAlias {
                art: a,
                version,
                alias: al,
            } => Step::SetAlias {
                art: art(a),
                r: self.resolve_pick(art(a), version),
                alias: ALIASES[al % ALIASES.len()],
            },
            Op::RemoveAlias { art: a, alias: al } => Step::RemoveAlias {
                art: art(a),
                alias: ALIASES[al % ALIASES.len()],
            },
            Op::Reopen => Step::Reopen,
            Op::Session { .. } => unreachable!("sessions are expanded first"),
        }
    }

    // --- the real store ------------------------------------------------------------------------

    /// A fresh scratch directory for one op.
    fn scratch_dir(&mut self) -> PathBuf {
        self.ops += 1;
        let dir = self.scratch.join(format!("op{}", self.ops));
        fs::create_dir(&dir).unwrap();
        dir
    }

    fn write_file(path: &Path, c: usize, mode: u32) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).unwrap();
        }
        fs::write(path, content(c)).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn write_scratch(&mut self, s: &Scratch) -> PathBuf {
        let dir = self.scratch_dir().join("tree");
        fs::create_dir(&dir).unwrap();
        for &(f, c, m) in &s.files {
            Self::write_file(&dir.join(TREE_FILES[f]), c, MODES[m]);
        }
        for &d in &s.dirs {
            fs::create_dir_all(dir.join(TREE_DIRS[d])).unwrap();
        }
        for &l in &s.links {
            let (path, target) = TREE_LINKS[l];
            let path = dir.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).unwrap();
            }
            std::os::unix::fs::symlink(target, &path).unwrap();
        }
        dir
    }

    fn real(&mut self, step: &Step) -> Result<Res, Error> {
        match step {
            Step::NewDraft { art, base, ty } => {
                let base = match base {
                    StepBase::Default => DraftBase::Default,
                    StepBase::Empty => DraftBase::Empty,
                    StepBase::From(r) => DraftBase::From(version_ref(*art, r)),
                };
                let ty = ty.map(|t| TypeName::new(t).unwrap());
                let d = self.store.draft_new(&draft_name(*art), ty.as_ref(), base)?;
                Ok(Res::Base(d.base_number))
            }
            Step::AddFile {
                art,
                dest,
                content,
                mode,
            } => {
                let file = self.scratch_dir().join("f");
                Self::write_file(&file, *content, *mode);
                let n = self.store.draft_add(
                    &draft_name(*art),
                    &Inputs::paths(&[file]),
                    Some(dest.as_str()),
                )?;
                Ok(Res::Files(n))
            }
            Step::AddDir { art, prefix, tree } => {
                let dir = self.write_scratch(tree);
                let dest = Some(*prefix).filter(|p| !p.is_empty());
                let n = self
                    .store
                    .draft_add(&draft_name(*art), &Inputs::paths(&[dir]), dest)?;
                Ok(Res::Files(n))
            }
            Step::Remove { art, paths } => {
                let paths: Vec<&[u8]> = paths.iter().map(|p| p.as_bytes()).collect();
                self.store.draft_rm(&draft_name(*art), &paths)?;
                Ok(Res::Unit)
            }
            Step::Commit { art, alias, ty } => self
                .store
                .draft_commit(&draft_name(*art), &commit_opts(*alias, *ty))
                .map(outcome),
            Step::Discard { art } => {
                self.store.draft_discard(&draft_name(*art))?;
                Ok(Res::Unit)
            }
            Step::Log {
                art,
                tree,
                alias,
                ty,
            } => {
                let dir = self.write_scratch(tree);
                self.store
                    .log(
                        &art_name(*art),
                        &Inputs::paths(&[dir]),
                        &commit_opts(*alias, *ty),
                    )
                    .map(outcome)
            }
            Step::Delete { art, r } => Ok(Res::Version(
                self.store.delete(&version_ref(*art, r))?.number,
            )),
            Step::SetAlias { art, r, alias } => Ok(Res::Version(
                self.store
                    .alias_set(&version_ref(*art, r), &AliasName::new(alias).unwrap())?
                    .number,
            )),
            Step::RemoveAlias { art, alias } => {
                self.store
                    .alias_rm(&art_name(*art), &AliasName::new(alias).unwrap(), None)?;
                Ok(Res::Unit)
            }
            Step::Reopen => {
                self.store = Store::open(&self.root)?;
                Ok(Res::Unit)
            }
        }
    }

    // --- one op, both sides, then the comparison ------------------------------------------------

    fn apply(&mut self, i: usize, op: &Op) {
        let step = self.resolve(op);
        let expected = match step.art() {
            Some(art) => self.model[art].step(&step),
            None => Ok(Res::Unit),
        };
        let blobs_before = self.blob_files();
        let actual = self.real(&step);
        let same = match (&expected, &actual) {
            (Ok(e), Ok(a)) => e == a,
            (Err(e), Err(a)) => *e == a.errno(),
            _ => false,
        };
        assert!(
            same,
            "op #{i} {op:?}\n  resolved as {step:?}\n  model expected {expected:?}\n  store returned {:?}",
            actual
                .as_ref()
                .map_err(|e| format!("errno {}: {e}", e.errno())),
        );
        // A refused op leaves the store as it was: no blob of its content stays behind.
        if expected.is_err() {
            assert_eq!(
                self.blob_files(),
                blobs_before,
                "op #{i} {step:?} failed but left blobs behind"
            );
        }
        if let (Ok(Res::Created(n)), Some(art)) = (&expected, step.art()) {
            assert!(
                self.ever.insert((art, *n)),
                "op #{i}: {}:v{n} was created twice",
                ARTS[art]
            );
        }
        self.check(&format!("after op #{i} {step:?}"));
    }

    /// The names of the files under `blobs/`.
    fn blob_files(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for fan in fs::read_dir(self.root.join("blobs")).unwrap() {
            let fan = fan.unwrap();
            if fan.file_type().unwrap().is_dir() {
                for b in fs::read_dir(fan.path()).unwrap() {
                    out.insert(b.unwrap().file_name().to_string_lossy().into_owned());
                }
            }
        }
        out
    }

    /// Compares the whole store with the model.
    fn check(&mut self, ctx: &str) {
        for art in 0..ARTS.len() {
            self.check_versions(art, ctx);
            self.check_draft(art, ctx);
        }
        self.check_digests(ctx);
    }

    fn node_of(&self, p: &str, e: &TreeEntry) -> Node {
        match &e.item {
            Item::Dir { .. } => Node::Dir,
            Item::File { blob, size } => {
                let bytes = fs::read(self.store.blobs.path(blob)).unwrap();
                assert_eq!(bytes.len() as u64, *size, "size of {p}");
                Node::File(content_index(&bytes), tree::is_executable(e.mode))
            }
            Item::Symlink { target } => Node::Link(utf8(target)),
            Item::Reference(r) => panic!("{p}: the model makes no references, found {}", r.uri),
        }
    }

    fn read_tree(&self, entries: Vec<(Vec<u8>, TreeEntry)>) -> Tree {
        entries
            .into_iter()
            .map(|(p, e)| {
                let p = utf8(&p);
                let n = self.node_of(&p, &e);
                (p, n)
            })
            .collect()
    }

    fn walk(conn: &artifactfs::catalog::Db, root: i64) -> Vec<(Vec<u8>, TreeEntry)> {
        let mut out = Vec::new();
        tree::walk_all(conn, root, b"", &mut |p, e| {
            out.push((p.to_vec(), e.clone()));
            Ok(())
        })
        .unwrap();
        out
    }

    fn check_versions(&self, art: usize, ctx: &str) {
        let conn = self.store.conn();
        let m = &self.model[art];
        let name = art_name(art);
        let (ty, list) = match query::versions(conn, &name) {
            Ok(x) => x,
            Err(e) => {
                assert!(m.ty.is_none(), "{ctx}: {name} should exist: {e}");
                assert_eq!(e.errno(), libc::ENOENT, "{ctx}: {e}");
                return;
            }
        };
        assert_eq!(Some(&ty), m.ty.as_ref(), "{ctx}: type of {name}");
        let numbers: Vec<u64> = list.iter().map(|v| v.version.number).collect();
        let want: Vec<u64> = m.versions.keys().copied().collect();
        assert_eq!(numbers, want, "{ctx}: versions of {name}");
        let latest = m.latest();
        for v in &list {
            let n = v.version.number;
            let tree = &m.versions[&n];
            let leaves = leaves(tree);
            let r = VersionRef::number(name.clone(), n);

            let mut aliases: Vec<String> = Vec::new();
            if latest == Some(n) {
                aliases.push("latest".into());
            }
            aliases.extend(
                m.aliases
                    .iter()
                    .filter(|(_, v)| **v == n)
                    .map(|(a, _)| a.to_string()),
            );
            assert_eq!(v.aliases, aliases, "{ctx}: aliases of {r}");
            assert_eq!(v.files, leaves.len() as u64, "{ctx}: file count of {r}");
            let got = self.read_tree(Self::walk(conn, v.version.root));
            assert_eq!(got, *tree, "{ctx}: tree of {r}");

            // `ls` and `cat`, as the CLI uses them.
            let mut listed = Vec::new();
            query::ls(conn, &r, None, &mut |p, _| {
                listed.push(utf8(p));
                Ok(())
            })
            .unwrap();
            let want: Vec<String> = leaves.iter().map(|f| f.0.clone()).collect();
            assert_eq!(listed, want, "{ctx}: ls {r}");
            for (p, n) in &leaves {
                let mut out = Vec::new();
                let res = query::cat(conn, &self.store.blobs, &r, p.as_bytes(), &mut out);
                match n {
                    Node::File(c, _) => {
                        res.unwrap();
                        assert_eq!(out, content(*c), "{ctx}: cat {r} {p}");
                    }
                    // A symlink has no content to print.
                    _ => assert_eq!(res.map_err(|e| e.errno()), Err(libc::EINVAL), "{ctx}"),
                }
            }
            // `ls` under a prefix: a directory lists its files, a file itself, else ENOENT.
            let mut under = Vec::new();
            let res = query::ls(conn, &r, Some(b"d/"), &mut |p, _| {
                under.push(utf8(p));
                Ok(())
            });
            match tree.get("d") {
                None => assert_eq!(res.map_err(|e| e.errno()), Err(libc::ENOENT), "{ctx}"),
                Some(_) => {
                    res.unwrap();
                    let want: Vec<String> = leaves
                        .iter()
                        .filter(|f| f.0 == "d" || f.0.starts_with("d/"))
                        .map(|f| f.0.clone())
                        .collect();
                    assert_eq!(under, want, "{ctx}: ls {r} d/");
                }
            }
            // `diff` against latest.
            if let Some(l) = latest {
                let lr = VersionRef::number(name.clone(), l);
                let mut got: Vec<(String, Change)> = query::diff(conn, &r, &lr)
                    .unwrap()
                    .into_iter()
                    .map(|(c, p)| (utf8(&p), c))
                    .collect();
                sort_changes(&mut got);
                assert_eq!(got, changes(tree, &m.versions[&l]), "{ctx}: diff {r} {lr}");
            }
        }
        // `latest` resolves to the newest remaining version.
        let r = VersionRef {
            artifact: name.clone(),
            selector: Selector::Alias(AliasName::new("latest").unwrap()),
        };
        let resolved = versions::resolve(conn, &r).ok().map(|v| v.number);
        assert_eq!(resolved, latest, "{ctx}: {name}:latest");
        let summary = query::artifacts(conn).unwrap();
        let s = summary.iter().find(|s| s.name == ARTS[art]).unwrap();
        assert_eq!(s.latest, latest, "{ctx}: list");
        assert_eq!(s.versions, m.versions.len() as u64, "{ctx}: list");
    }

    fn check_draft(&mut self, art: usize, ctx: &str) {
        let name = draft_name(art);
        let m = self.model[art].clone();
        let status = query::draft_status(&mut self.store.catalog, &self.store.staging, &name);
        let Some(d) = &m.draft else {
            let e = status
                .err()
                .unwrap_or_else(|| panic!("{ctx}: draft {name} exists"));
            assert_eq!(e.errno(), libc::ENOENT, "{ctx}: {e}");
            return;
        };
        let status = status.unwrap_or_else(|e| panic!("{ctx}: draft status {name}: {e}"));
        let base = d.base.as_ref().map(|b| b.0);
        assert_eq!(
            status.draft.base_number, base,
            "{ctx}: base of draft {name}"
        );
        assert_eq!(status.latest, m.latest(), "{ctx}: latest in status");
        assert_eq!(
            status.stale(),
            base.is_some() && base != m.latest(),
            "{ctx}: stale"
        );
        let mut got: Vec<(String, Change)> =
            status.changes.iter().map(|(c, p)| (utf8(p), *c)).collect();
        sort_changes(&mut got);
        let empty = Tree::new();
        let base_tree = d.base.as_ref().map(|b| &b.1).unwrap_or(&empty);
        assert_eq!(
            got,
            changes(base_tree, &d.tree),
            "{ctx}: status of draft {name}"
        );

        // The draft's whole tree, built as a commit would build it (then rolled back).
        let built = self
            .store
            .catalog
            .dry_run(|tx| {
                let row = require_draft(tx, &name)?;
                let staging = &self.store.staging;
                let root = draft::build_tree(tx, &row, &|id| staging.content(&row, id))?;
                Ok(Self::walk(tx, root.id))
            })
            .unwrap();
        assert_eq!(self.read_tree(built), d.tree, "{ctx}: tree of draft {name}");

        // `draft::find`, path by path, for the pools and every path the model holds.
        let conn = self.store.conn();
        let row = drafts::get(conn, ARTS[art], "").unwrap().unwrap();
        let mut paths: BTreeSet<String> = d.tree.keys().cloned().collect();
        paths.extend(FILE_POOL.iter().chain(REMOVE_POOL).map(|s| s.to_string()));
        for p in paths {
            let key = p.trim_end_matches('/');
            let got = match draft::find(conn, &row, p.as_bytes()).unwrap() {
                None => None,
                Some(Found::Dir { .. }) => Some(Node::Dir),
                Some(Found::File(e, _)) => Some(self.node_of(&p, &e)),
                Some(Found::Symlink(e, _)) => Some(self.node_of(&p, &e)),
                Some(Found::Staged { .. }) => panic!("{ctx}: {p} is staged, yet no mount ran"),
            };
            let want = if key.is_empty() {
                Some(Node::Dir)
            } else {
                d.tree.get(key).cloned()
            };
            assert_eq!(got, want, "{ctx}: find {p:?} in draft {name}");
        }
    }

    /// Two versions have the same digest exactly when the model says their trees are equal.
    fn check_digests(&self, ctx: &str) {
        let conn = self.store.conn();
        let mut all = Vec::new();
        for (art, name) in ARTS.iter().enumerate() {
            let Some(a) = versions::artifact(conn, name).unwrap() else {
                continue;
            };
            for v in versions::versions(conn, a.id).unwrap() {
                all.push((art, v.number, v.digest));
            }
        }
        for (i, (a1, n1, d1)) in all.iter().enumerate() {
            for (a2, n2, d2) in &all[i + 1..] {
                let t1 = &self.model[*a1].versions[n1];
                let t2 = &self.model[*a2].versions[n2];
                assert_eq!(
                    d1 == d2,
                    t1 == t2,
                    "{ctx}: digests of {}:v{n1} and {}:v{n2}",
                    ARTS[*a1],
                    ARTS[*a2]
                );
            }
        }
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    h.check("on an empty store");
    for (i, op) in ops.iter().flat_map(Op::expand).enumerate() {
        h.apply(i, &op);
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(128)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Shrunk failures are kept below as named tests rather than in a regressions file.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn store_matches_model(ops in prop::collection::vec(ops::op(), 1..16)) {
        run(&ops);
    }
}

// ---------------------------------------------------------------------------------------------
// Deterministic sequences: interesting cases written out, and shrunk failures.

fn idx(pool: &[&str], s: &str) -> usize {
    pool.iter()
        .position(|p| *p == s)
        .unwrap_or_else(|| panic!("{s} not in pool"))
}

fn new_draft(art: usize) -> Op {
    Op::NewDraft {
        art,
        base: Base::Latest,
        ty: None,
    }
}

fn new_draft_from(art: usize, n: usize) -> Op {
    Op::NewDraft {
        art,
        base: Base::From(Pick::Number(n)),
        ty: None,
    }
}

/// Adds a file; `mode` is an index into [`MODES`] (0: 644, 1: 755).
fn add(art: usize, path: &str, content: usize, mode: usize) -> Op {
    Op::AddFile {
        art,
        path: idx(FILE_POOL, path),
        content,
        mode,
    }
}

fn scratch(files: &[(&str, usize)], dirs: &[&str]) -> Scratch {
    Scratch {
        files: files
            .iter()
            .map(|(p, c)| (idx(TREE_FILES, p), *c, 0))
            .collect(),
        dirs: dirs.iter().map(|d| idx(TREE_DIRS, d)).collect(),
        links: Vec::new(),
    }
}

fn with_links(mut s: Scratch, links: &[&str]) -> Scratch {
    let paths: Vec<&str> = TREE_LINKS.iter().map(|l| l.0).collect();
    s.links = links.iter().map(|l| idx(&paths, l)).collect();
    s
}

fn add_dir(art: usize, prefix: &str, files: &[(&str, usize)], dirs: &[&str]) -> Op {
    Op::AddDir {
        art,
        prefix: idx(PREFIX_POOL, prefix),
        tree: scratch(files, dirs),
    }
}

fn rm(art: usize, paths: &[&str]) -> Op {
    Op::Remove {
        art,
        paths: paths
            .iter()
            .map(|p| PathPick::Pool(idx(REMOVE_POOL, p)))
            .collect(),
    }
}

fn commit(art: usize) -> Op {
    Op::Commit {
        art,
        alias: None,
        ty: None,
    }
}

fn commit_alias(art: usize, alias: &str) -> Op {
    Op::Commit {
        art,
        alias: Some(idx(ALIASES, alias)),
        ty: None,
    }
}

fn log(art: usize, files: &[(&str, usize)], dirs: &[&str]) -> Op {
    Op::Log {
        art,
        tree: scratch(files, dirs),
        alias: None,
        ty: None,
    }
}

fn delete(art: usize, n: usize) -> Op {
    Op::Delete {
        art,
        version: Pick::Number(n),
    }
}

fn set_alias(art: usize, n: usize, alias: &str) -> Op {
    Op::SetAlias {
        art,
        version: Pick::Number(n),
        alias: idx(ALIASES, alias),
    }
}

#[test]
fn readding_the_same_content_is_unchanged() {
    // New mtimes and another mode with the same executable bit: the base version is reported.
    run(&[
        log(0, &[("a", 1), ("d/x", 2)], &[]),
        new_draft(0),
        add(0, "a", 1, idx_mode(0o600)),
        Op::Readd { art: 0, file: 1 },
        commit(0),
    ]);
}

fn idx_mode(mode: u32) -> usize {
    MODES.iter().position(|m| *m == mode).unwrap()
}

#[test]
fn exec_bit_alone_makes_a_new_version() {
    run(&[
        log(0, &[("a", 1)], &[]),
        new_draft(0),
        add(0, "a", 1, idx_mode(0o744)),
        commit(0),
    ]);
}

#[test]
fn from_scratch_equal_to_latest_is_unchanged_equal_to_older_is_new() {
    run(&[
        log(0, &[("a", 1)], &[]),
        log(0, &[("a", 2)], &[]),
        log(0, &[("a", 2)], &[]), // equal to v1, latest: unchanged
        log(0, &[("a", 1)], &[]), // equal to v0, not latest: v2
        Op::NewDraft {
            art: 0,
            base: Base::Empty,
            ty: None,
        },
        add(0, "a", 1, 0),
        commit(0), // from scratch, equal to v2 (latest): unchanged
    ]);
}

#[test]
fn remove_then_readd_hides_the_rest_of_the_base_directory() {
    run(&[
        log(0, &[("d/x", 1), ("d/y", 2), ("d/e/z", 3)], &[]),
        new_draft(0),
        rm(0, &["d/"]),
        add(0, "d/x", 1, 0),
        commit(0),
        new_draft(0),
        rm(0, &["d"]),
        add_dir(0, "d", &[("b", 2)], &[]),
        commit(0),
    ]);
}

#[test]
fn adding_over_a_directory_or_under_a_file_changes_nothing() {
    run(&[
        new_draft(0),
        add(0, "a", 1, 0),
        add(0, "d/x", 1, 0),
        add(0, "d", 2, 0),                          // EISDIR
        add(0, "a/q", 2, 0),                        // ENOTDIR
        add(0, "d/x/q", 2, 0),                      // ENOTDIR
        add_dir(0, "a", &[("b", 1)], &[]),          // EEXIST: a is a file
        add_dir(0, "d/x/q", &[("b", 1)], &[]),      // ENOTDIR
        add_dir(0, "", &[("b", 1), ("a", 3)], &[]), // replaces a, adds b
        commit(0),
    ]);
}

#[test]
fn a_failed_directory_add_records_none_of_it() {
    run(&[
        log(0, &[("d/x", 1)], &[]),
        new_draft(0),
        rm(0, &["d"]),
        add(0, "d", 2, 0),
        // `b` is recorded first, then directory `d` meets the file d (EEXIST): nothing stays.
        add_dir(0, "", &[("b", 1), ("d/y", 2)], &[]),
        commit(0),
    ]);
}

#[test]
fn a_failed_remove_of_several_paths_removes_none() {
    run(&[
        log(0, &[("a", 1), ("d/x", 2), ("d/y", 3)], &[]),
        new_draft(0),
        rm(0, &["a", "d/x", "k"]), // k: ENOENT, a and d/x stay
        rm(0, &["d", "d/x"]),      // d/x went with d: ENOENT
        rm(0, &["d/x", "d/"]),
        commit(0),
    ]);
}

#[test]
fn empty_directories_are_kept_and_change_the_digest() {
    run(&[
        log(0, &[("a", 1)], &[]),
        log(0, &[("a", 1)], &["k"]),
        new_draft(0),
        rm(0, &["a"]),
        commit(0), // only k/
        new_draft(0),
        rm(0, &["k"]),
        commit(0), // empty
        new_draft(0),
        add_dir(0, "n", &[], &[]),
        commit(0), // n/
    ]);
}

#[test]
fn remove_of_nothing_fails_and_root_is_refused() {
    run(&[
        log(0, &[("a", 1)], &[]),
        new_draft(0),
        rm(0, &["b"]),
        rm(0, &["a/q"]),
        rm(0, &["/"]),
        commit(0),
    ]);
}

#[test]
fn listing_is_in_byte_order_of_the_full_path() {
    // `d-1` sorts before `d/x` byte-wise, though after `d` as a name: `ls` lists it first.
    run(&[
        log(0, &[("d-1", 1), ("d/x", 2), ("d/e/z", 3)], &[]),
        new_draft(0),
        rm(0, &["d"]),
        add(0, "d", 1, 0), // a directory replaced by a file
        add(0, "d-1", 2, 0),
    ]);
}

#[test]
fn numbers_are_never_reused_and_latest_falls_back() {
    run(&[
        log(0, &[("a", 1)], &[]),
        log(0, &[("a", 2)], &[]),
        delete(0, 1),
        log(0, &[("a", 3)], &[]), // latest was v0 again; this is v2
        delete(0, 2),
        delete(0, 0),
        // No versions left: from scratch makes v3, even with the content of a deleted one.
        log(0, &[("a", 1)], &[]),
    ]);
}

#[test]
fn delete_is_refused_while_another_alias_names_the_version() {
    run(&[
        log(0, &[("a", 1)], &[]),
        set_alias(0, 0, "best"),
        delete(0, 0), // EPERM
        Op::RemoveAlias {
            art: 0,
            alias: idx(ALIASES, "best"),
        },
        delete(0, 0),
        set_alias(0, 0, "best"), // ENOENT
    ]);
}

#[test]
fn stale_base_still_commits_and_a_deleted_base_is_never_unchanged() {
    run(&[
        log(0, &[("a", 1)], &[]),
        log(0, &[("a", 2)], &[]),
        new_draft_from(0, 0),
        add(0, "b", 1, 0),
        commit_alias(0, "best"), // v2, based on v0
        new_draft_from(0, 0),
        delete(0, 0),
        // The base v0 is gone: the same content makes a new version.
        commit(0),
    ]);
}

#[test]
fn unchanged_commit_moves_the_alias_but_not_latest() {
    run(&[
        log(0, &[("a", 1)], &[]),
        log(0, &[("a", 2)], &[]),
        new_draft_from(0, 0),
        commit_alias(0, "prod"),
    ]);
}

#[test]
fn type_is_fixed_by_the_first_commit() {
    let ty = |t| Some(idx(TYPES, t));
    run(&[
        Op::NewDraft {
            art: 1,
            base: Base::Latest,
            ty: ty("model"),
        },
        add(1, "a", 1, 0),
        commit(1), // m is a model
        Op::Log {
            art: 1,
            tree: Scratch::default(),
            alias: None,
            ty: ty("dataset"),
        }, // EEXIST
        Op::NewDraft {
            art: 1,
            base: Base::Empty,
            ty: ty("dataset"),
        }, // EEXIST
        new_draft(1),
        Op::Commit {
            art: 1,
            alias: None,
            ty: ty("dataset"),
        }, // EEXIST, the draft stays
        Op::Commit {
            art: 1,
            alias: None,
            ty: ty("model"),
        },
        Op::Reopen,
    ]);
}

#[test]
fn symlinks_are_kept_and_replacing_a_file_by_one_is_a_modification() {
    run(&[
        Op::Log {
            art: 0,
            tree: with_links(scratch(&[("a", 1), ("d/x", 2)], &[]), &["l", "d/l"]),
            alias: None,
            ty: None,
        },
        new_draft(0),
        add(0, "d-1", 1, 0),
        commit(0),
        new_draft(0),
        // The link d-1 replaces the file d-1; l is the same link again.
        Op::AddDir {
            art: 0,
            prefix: idx(PREFIX_POOL, ""),
            tree: with_links(scratch(&[], &[]), &["d-1", "l"]),
        },
        Op::AddFile {
            art: 0,
            path: idx(FILE_POOL, "d-1"),
            content: 1,
            mode: 0,
        }, // and back to the file: unchanged
        commit(0),
        new_draft(0),
        Op::AddDir {
            art: 0,
            prefix: idx(PREFIX_POOL, ""),
            tree: with_links(scratch(&[], &[]), &["d-1"]),
        },
        commit(0),
    ]);
}

#[test]
fn commit_type_must_agree_with_the_drafts_type() {
    // Shrunk from the property test: the draft of a new artifact was created as a dataset.
    let ty = |t| Some(idx(TYPES, t));
    run(&[
        Op::NewDraft {
            art: 0,
            base: Base::Latest,
            ty: ty("dataset"),
        },
        Op::Commit {
            art: 0,
            alias: None,
            ty: ty("model"),
        }, // EEXIST, the draft stays
        Op::Commit {
            art: 0,
            alias: None,
            ty: ty("dataset"),
        },
    ]);
}
