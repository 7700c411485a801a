//! Injected faults: every write, fsync, rename and catalog commit a commit makes is failed in
//! turn, one per trial, and each trial must leave the store as if the commit had not been
//! tried: no new version, `verify` clean, the draft whole, and the same draft committing
//! afterwards to exactly what was staged. Runs the core directly (no mount), with the fault
//! switch of `artifactfs::faults`, which is per process: the trials hold one lock.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use artifactfs::commit::{CommitOptions, Outcome};
use artifactfs::faults::{self, Op};
use artifactfs::fs::{Caller, DRAFTS, Fs, OpenMode, Opened};
use artifactfs::ingest::Inputs;
use artifactfs::maintenance;
use artifactfs::names::{ArtifactName, DraftName, TypeName, VersionRef};
use artifactfs::query;
use artifactfs::store::{DraftBase, Store};

static SERIAL: Mutex<()> = Mutex::new(());

const OPS: [Op; 4] = [Op::Write, Op::Fsync, Op::Rename, Op::Commit];

/// Path -> content of a version or of what a draft should commit to.
type Files = BTreeMap<String, Vec<u8>>;

/// A few small files, one file above the size that is streamed, and one shared with the base.
fn new_files(tag: &str) -> Files {
    let mut f = Files::new();
    for i in 0..5 {
        f.insert(
            format!("part/{i}.txt"),
            format!("{tag} small {i}\n").into_bytes(),
        );
    }
    let big: Vec<u8> = (0..(3 << 20) / 4)
        .flat_map(|i: u32| (i ^ tag.len() as u32).to_le_bytes())
        .collect();
    f.insert("big.bin".into(), big);
    f.insert("same.txt".into(), b"unchanged from the base\n".to_vec());
    f
}

fn base_files() -> Files {
    let mut f = Files::new();
    f.insert("same.txt".into(), b"unchanged from the base\n".to_vec());
    f.insert("old.txt".into(), b"only in the base\n".to_vec());
    f
}

fn write_dir(dir: &Path, files: &Files) {
    for (rel, data) in files {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    }
}

fn opts() -> CommitOptions {
    CommitOptions {
        type_name: Some("dataset".parse::<TypeName>().unwrap()),
        ..Default::default()
    }
}

fn version_files(store: &Store, r: &str) -> Files {
    let r: VersionRef = r.parse().unwrap();
    let mut paths = Vec::new();
    query::ls(store.conn(), &r, None, &mut |p, _| {
        paths.push(String::from_utf8(p.to_vec()).unwrap());
        Ok(())
    })
    .unwrap();
    paths
        .into_iter()
        .map(|p| {
            let mut out = Vec::new();
            query::cat(store.conn(), &store.blobs, &r, p.as_bytes(), &mut out).unwrap();
            (p, out)
        })
        .collect()
}

fn version_count(store: &Store, name: &str) -> usize {
    match query::versions(store.conn(), &name.parse::<ArtifactName>().unwrap()) {
        Ok((_, v)) => v.len(),
        Err(_) => 0,
    }
}

/// What `verify` finds wrong; empty when every referenced blob is there and intact.
fn damage(store: &Store) -> Vec<String> {
    maintenance::verify(store, None)
        .unwrap()
        .damaged
        .iter()
        .map(|d| format!("{} {:?}", d.blob.to_hex(), d.health))
        .collect()
}

/// Blob files whose content does not hash to their name, referenced or not: a later commit
/// of the named content would take such a file as already stored.
fn misnamed_blobs(root: &Path) -> Vec<PathBuf> {
    leftovers(&root.join("blobs"))
        .into_iter()
        .filter(|p| {
            let hex = artifactfs::hash::Digest::of(&fs::read(p).unwrap()).to_hex();
            p.file_name().unwrap().to_str() != Some(hex.as_str())
        })
        .collect()
}

/// Everything under `dir`, recursively, except the lock files.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(leftovers(&p));
        } else if p.file_name().unwrap() != "lock" {
            out.push(p);
        }
    }
    out
}

/// A store with `NAME:v0` holding the base files.
fn base_store(dir: &Path) -> Store {
    let mut store = Store::open(&dir.join("store")).unwrap();
    let src = dir.join("base");
    write_dir(&src, &base_files());
    store
        .log(&"data".parse().unwrap(), &Inputs::paths(&[src]), &opts())
        .unwrap();
    store
}

/// How a trial's draft is filled before the commit that faults are injected into.
#[derive(Clone, Copy, Debug)]
enum Filled {
    /// `draft add` from the command line: contents are blobs before the commit.
    Cli,
    /// Written through the filesystem layer: contents are staged files until the commit.
    Mount,
    /// `log`: storing the contents and committing are one command.
    Log,
}

/// Prepares a draft `data` holding the base with `old.txt` removed and `files` added.
fn fill(store: &mut Store, dir: &Path, how: Filled, files: &Files) {
    let name: DraftName = "data".parse().unwrap();
    match how {
        Filled::Log => {}
        Filled::Cli => {
            let src = dir.join("new");
            write_dir(&src, files);
            store.draft_new(&name, None, DraftBase::Default).unwrap();
            store
                .draft_add(&name, &Inputs::paths(&[src]), None)
                .unwrap();
            store.draft_rm(&name, &[b"old.txt"]).unwrap();
        }
        Filled::Mount => {
            let fs = Fs::new(store.root()).unwrap();
            let root = Caller::root();
            let draft = fs.mkdir(&root, DRAFTS, b"data", 0o755).unwrap().attr.ino;
            fs.unlink(&root, draft, b"old.txt").unwrap();
            let part = fs.mkdir(&root, draft, b"part", 0o755).unwrap().attr.ino;
            for (rel, data) in files {
                let (parent, leaf) = match rel.split_once('/') {
                    Some((_, leaf)) => (part, leaf),
                    None => (draft, rel.as_str()),
                };
                let mode = OpenMode {
                    write: true,
                    truncate: true,
                    append: false,
                };
                let (entry, opened) = fs
                    .create(&root, parent, leaf.as_bytes(), 0o644, mode, false)
                    .unwrap();
                let Opened::Content { fh, .. } = opened else {
                    panic!("{rel}: create opened a control file");
                };
                for (i, chunk) in data.chunks(1 << 20).enumerate() {
                    fs.write(entry.attr.ino, fh, (i << 20) as u64, chunk, false)
                        .unwrap();
                }
                fs.flush(entry.attr.ino, fh).unwrap();
                fs.release(fh);
            }
        }
    }
}

/// The commit faults are injected into.
fn commit(store: &mut Store, dir: &Path, how: Filled) -> artifactfs::error::Result<Outcome> {
    match how {
        Filled::Log => store.log(
            &"data".parse().unwrap(),
            &Inputs::paths(&[dir.join("new")]),
            &opts(),
        ),
        Filled::Cli | Filled::Mount => store.draft_commit(&"data".parse().unwrap(), &opts()),
    }
}

/// One trial: fail the `nth` `op` of the commit. Returns whether the fault fired (false once
/// `nth` is past the last such operation of the commit).
fn trial(how: Filled, op: Op, nth: u64) -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let files = new_files(&format!("{how:?}"));
    let mut store = base_store(dir);
    fill(&mut store, dir, how, &files);
    if let Filled::Log = how {
        write_dir(&dir.join("new"), &files);
    }
    let mut expected = files.clone();
    if let Filled::Log = how {
        // log replaces the whole version: the base's files are not carried over.
    } else {
        expected.remove("old.txt");
    }
    let before = version_files(&store, "data:v0");
    let what = format!("{how:?} commit, {} #{nth}", op.name());

    faults::arm(op, nth);
    let result = commit(&mut store, dir, how);
    let plan = faults::disarm();
    if !plan.fired {
        let outcome = result.unwrap_or_else(|e| panic!("{what}: no fault fired, yet: {e}"));
        assert!(
            matches!(outcome, Outcome::Created(_)),
            "{what}: {outcome:?}"
        );
        assert_eq!(version_files(&store, "data:v1"), expected, "{what}");
        return false;
    }
    let err = match result {
        Ok(o) => panic!("{what}: the fault fired but the commit reported success: {o:?}"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("injected fault"),
        "{what}: the error does not say why it failed: {err}"
    );
    // All or nothing: the store is as before the commit.
    assert_eq!(version_count(&store, "data"), 1, "{what}: {err}");
    assert_eq!(version_files(&store, "data:v0"), before, "{what}");
    assert_eq!(damage(&store), Vec::<String>::new(), "{what}: verify");
    assert_eq!(
        misnamed_blobs(store.root()),
        Vec::<PathBuf>::new(),
        "{what}"
    );
    if let (Filled::Log, Op::Commit) = (how, op) {
        // Every blob was in place when the transaction failed: the log removes them all.
        let left = leftovers(&store.root().join("blobs")).len();
        let base: std::collections::BTreeSet<&Vec<u8>> = before.values().collect();
        assert_eq!(
            left,
            base.len(),
            "{what}: blobs of the failed log were left"
        );
    }
    // The same draft (or the same log) commits afterwards to exactly what was staged.
    let outcome =
        commit(&mut store, dir, how).unwrap_or_else(|e| panic!("{what}: the retry failed: {e}"));
    assert!(
        matches!(outcome, Outcome::Created(_)),
        "{what}: retry {outcome:?}"
    );
    assert_eq!(version_files(&store, "data:v1"), expected, "{what}: retry");
    assert_eq!(
        damage(&store),
        Vec::<String>::new(),
        "{what}: verify after retry"
    );
    // What the failed attempt left over is reclaimed.
    maintenance::gc(&mut store, maintenance::DEFAULT_GRACE).unwrap();
    let root = store.root().to_path_buf();
    for sub in ["staging", "staged"] {
        let left = leftovers(&root.join(sub));
        assert!(left.is_empty(), "{what}: left after gc in {sub}/: {left:?}");
    }
    let blobs = leftovers(&root.join("blobs")).len();
    let distinct: std::collections::BTreeSet<&Vec<u8>> =
        expected.values().chain(before.values()).collect();
    assert_eq!(
        blobs,
        distinct.len(),
        "{what}: after gc blobs/ holds {blobs} files, the two versions need {}",
        distinct.len()
    );
    true
}

/// Walks a fault over every operation of each kind the commit makes.
fn walk(how: Filled) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut injected = BTreeMap::new();
    for op in OPS {
        let mut nth = 1;
        while trial(how, op, nth) {
            nth += 1;
            assert!(nth < 500, "{how:?}: {} faults never stop firing", op.name());
        }
        injected.insert(op.name(), nth - 1);
    }
    eprintln!("{how:?}: faults injected per operation: {injected:?}");
    // A commit writes, syncs and renames something, and commits the catalog, in every mode
    // except that a draft added from the CLI already holds its blobs.
    assert!(injected["commit"] >= 1, "{how:?}: no catalog commit seen");
    if !matches!(how, Filled::Cli) {
        assert!(injected["fsync"] >= 1, "{how:?}: no fsync seen");
        assert!(injected["rename"] >= 1, "{how:?}: no rename seen");
    }
}

#[test]
fn every_step_of_a_log_is_all_or_nothing() {
    walk(Filled::Log);
}

#[test]
fn every_step_of_a_cli_draft_commit_is_all_or_nothing() {
    walk(Filled::Cli);
}

#[test]
fn every_step_of_a_mount_draft_commit_is_all_or_nothing() {
    walk(Filled::Mount);
}

/// A commit that failed after linking staged files into `blobs/` leaves the draft naming
/// files that are now also blobs: writing one again must not change the blob in place.
#[test]
fn writing_a_draft_file_after_a_failed_commit_leaves_blobs_intact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut store = base_store(dir);
    let files = new_files("relink");
    fill(&mut store, dir, Filled::Mount, &files);
    // The first catalog commit is the one recording the linked blobs.
    faults::arm(Op::Commit, 1);
    let err = commit(&mut store, dir, Filled::Mount).unwrap_err();
    assert!(faults::disarm().fired, "{err}");
    let fs = Fs::new(store.root()).unwrap();
    let root = Caller::root();
    let draft = fs.lookup(&root, DRAFTS, b"data").unwrap().attr.ino;
    let part = fs.lookup(&root, draft, b"part").unwrap().attr.ino;
    let ino = fs.lookup(&root, part, b"0.txt").unwrap().attr.ino;
    let mode = OpenMode {
        write: true,
        truncate: false,
        append: false,
    };
    let Opened::Content { fh, .. } = fs.open(&root, ino, mode).unwrap() else {
        panic!("part/0.txt opened as a control file");
    };
    fs.write(ino, fh, 0, b"CHANGED", false).unwrap();
    fs.release(fh);
    drop(fs);
    assert_eq!(
        misnamed_blobs(store.root()),
        Vec::<PathBuf>::new(),
        "a blob changed in place"
    );
    assert_eq!(version_files(&store, "data:v0"), base_files());
    let mut expected = files;
    expected.remove("old.txt");
    expected.get_mut("part/0.txt").unwrap()[..7].copy_from_slice(b"CHANGED");
    commit(&mut store, dir, Filled::Mount).unwrap();
    assert_eq!(version_files(&store, "data:v1"), expected);
}

/// A panic inside one request (injected into the 40th the server serves) answers that
/// request with EIO and leaves a log line; the server keeps serving every later request.
#[test]
fn a_panicking_request_is_eio_and_the_mount_lives_on() {
    use common::mount::{Mounted, process_gone};
    let s = common::TestStore::new();
    let files: Vec<(String, String)> = (0..60)
        .map(|i| (format!("f{i:02}.txt"), format!("file {i}\n")))
        .collect();
    let pairs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    let src = s.tree("src", &pairs);
    common::log(&s, "m", &src);
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let mut cmd = s.command(&[std::ffi::OsStr::new("mount"), mp.as_os_str()]);
    cmd.env(faults::ENV, "request:40");
    let out = common::run_command(cmd);
    common::assert_success(&out, &["mount"]);
    let m = Mounted::adopt(&s, &mp);
    let pid = m.server_pid();

    let mut failures = Vec::new();
    for _ in 0..3 {
        for (rel, content) in &files {
            match fs::read_to_string(m.path("m/v0").join(rel)) {
                Ok(got) => assert_eq!(&got, content, "{rel} read wrong bytes"),
                Err(e) => failures.push((rel.clone(), e.raw_os_error())),
            }
        }
    }
    // The EIO reply goes out as the panic unwinds, just before the line is logged.
    common::mount::wait_until(
        "the panicking request is logged",
        std::time::Duration::from_secs(5),
        || {
            let log = m.log();
            match log.contains("internal error, answered EIO: injected fault") {
                true => Ok(()),
                false => Err(format!("no log line for the panicking request:\n{log}")),
            }
        },
    );
    assert!(
        failures.len() <= 1,
        "more than one request failed: {failures:?}"
    );
    assert!(
        failures.iter().all(|(_, e)| *e == Some(libc::EIO)),
        "the panicking request did not answer EIO: {failures:?}"
    );
    assert!(
        !process_gone(pid),
        "the server died of one panicking request"
    );
    // Every file reads right after the panic.
    for (rel, content) in &files {
        assert_eq!(
            &fs::read_to_string(m.path("m/v0").join(rel)).unwrap(),
            content
        );
    }
}
