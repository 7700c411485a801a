//! Storing big files: `log` and `draft add` copy and hash each large file in one pass, many
//! at once, cloning it where the store's filesystem can (XFS, btrfs) and copying through a
//! buffer where the source is on another filesystem. Whatever the path, every stored blob
//! is exactly the content its name promises and every version reads back byte for byte.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;

const MIB: usize = 1 << 20;

/// Writes `files` under `dir`.
fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, data) in files {
        write_file(&dir.join(rel), data);
    }
}

/// Every file of version `reference`, got into a fresh directory, compared with `files`.
fn assert_version(s: &TestStore, reference: &str, files: &[(String, Vec<u8>)]) {
    let out = s.path(&format!("got-{}", reference.replace(':', "-")));
    s.ok(&["get", reference, out.to_str().unwrap()]);
    let mut listed = ls(s, reference);
    listed.sort();
    let mut want: Vec<String> = files.iter().map(|(p, _)| p.clone()).collect();
    want.sort();
    assert_eq!(listed, want, "the files of {reference}");
    for (rel, data) in files {
        let got = fs::read(out.join(rel)).unwrap();
        assert!(
            got == *data,
            "{rel} of {reference} differs from what was logged"
        );
    }
    fs::remove_dir_all(&out).unwrap();
}

/// Every blob on disk holds the content its name promises.
fn assert_blobs_intact(s: &TestStore) {
    let out = s.ok(&["verify"]);
    assert!(out.contains(": 0 damaged"), "verify: {out}");
    for rel in s.blob_files() {
        let name = Path::new(&rel).file_name().unwrap().to_str().unwrap();
        let data = fs::read(s.root.join("blobs").join(&rel)).unwrap();
        assert_eq!(sha256_hex(&data), name, "blob {rel}");
    }
    let staging = s.root.join("staging");
    let left: Vec<_> = fs::read_dir(&staging).unwrap().collect();
    assert!(left.is_empty(), "staging files left behind: {left:?}");
}

/// Many large files and small ones, two large ones alike, spread over the workers: each
/// version holds exactly what was logged, the duplicate is stored once, and logging the
/// same files again (the hint of the previous version) makes no new version.
#[test]
fn many_large_files_are_stored_exactly() {
    let s = TestStore::new();
    let mut files = Vec::new();
    for i in 0..24u64 {
        let len = MIB + 1 + (i as usize * 97_531) % (2 * MIB);
        files.push((format!("shards/{i:02}.bin"), noise(i, len)));
    }
    for i in 0..20u64 {
        files.push((
            format!("small/{i}.txt"),
            format!("small {i}\n").into_bytes(),
        ));
    }
    files.push(("copy-a.bin".into(), noise(99, 3 * MIB)));
    files.push(("copy-b.bin".into(), noise(99, 3 * MIB)));
    files.push(("empty".into(), Vec::new()));
    let data = s.path("data");
    write_all(&data, &files);
    let blobs_before = s.blob_files().len();
    assert_eq!(
        s.ok(&["log", "ckpt", data.to_str().unwrap(), "--type", "model"]),
        "ckpt:v0\n"
    );
    assert_version(&s, "ckpt:v0", &files);
    // 24 shards, 20 small files, one copy, one empty file.
    assert_eq!(s.blob_files().len() - blobs_before, 46);
    assert_blobs_intact(&s);
    assert_eq!(
        s.ok(&["log", "ckpt", data.to_str().unwrap()]),
        "ckpt:v0 (unchanged)\n"
    );
}

/// A large file rewritten in place with its size and mtime put back looks unchanged to the
/// hint, but is hashed all the same: its new content makes a new version.
#[test]
fn a_changed_file_with_the_old_mtime_is_stored_anew() {
    let s = TestStore::new();
    let data = s.path("data");
    let mut files = vec![("weights.bin".to_string(), noise(1, 5 * MIB))];
    write_all(&data, &files);
    let path = data.join("weights.bin");
    let when = time_at(1_700_000_000, 123);
    set_mtime(&path, when);
    s.ok(&["log", "ckpt", data.to_str().unwrap(), "--type", "model"]);
    files[0].1[3 * MIB] ^= 0xff;
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&files[0].1[3 * MIB..3 * MIB + 1], 3 * MIB as u64)
        .unwrap();
    set_mtime(&path, when);
    assert_eq!(s.ok(&["log", "ckpt", data.to_str().unwrap()]), "ckpt:v1\n");
    assert_version(&s, "ckpt:v1", &files);
    assert_blobs_intact(&s);
}

/// `draft add` of large files from another filesystem (tmpfs: no in-kernel copy into the
/// store) goes through a buffer, with the same result.
#[test]
fn large_files_from_another_filesystem_are_copied() {
    let s = TestStore::new();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let files: Vec<_> = (0..4u64)
        .map(|i| {
            (
                format!("part-{i}.bin"),
                noise(100 + i, 2 * MIB + i as usize),
            )
        })
        .collect();
    write_all(shm.path(), &files);
    s.ok(&["draft", "new", "ckpt", "--type", "model"]);
    s.ok(&["draft", "add", "ckpt", shm.path().to_str().unwrap()]);
    s.ok(&["draft", "commit", "ckpt"]);
    assert_version(&s, "ckpt:v0", &files);
    assert_blobs_intact(&s);
}

/// A file rewritten while it is being logged: whatever bytes the version got, the blob is
/// the content its digest names, and the version reads back as that blob.
#[test]
fn a_file_changing_while_logged_still_gives_an_intact_blob() {
    let s = TestStore::new();
    let data = s.path("data");
    let path = data.join("moving.bin");
    write_file(&path, &noise(7, 48 * MIB));
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let at = (round * 7919 % 48) as usize * MIB;
                f.write_all_at(&noise(1000 + round, MIB), at as u64)
                    .unwrap();
                round += 1;
            }
        });
        for _ in 0..3 {
            s.ok(&["log", "moving", data.to_str().unwrap(), "--type", "model"]);
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_blobs_intact(&s);
    let got = s.path("got");
    s.ok(&["get", "moving:latest", got.to_str().unwrap()]);
    let long = s.ok(&["ls", "--long", "moving:latest"]);
    let content = fs::read(got.join("moving.bin")).unwrap();
    assert!(
        long.contains(&sha256_hex(&content)),
        "the version's digest is that of its content: {long}"
    );
}

/// A loop-mounted filesystem image (XFS with reflink), removed when dropped.
struct Image {
    dir: tempfile::TempDir,
    mnt: PathBuf,
}

impl Image {
    /// A fresh XFS image with reflink, loop-mounted. A test that needs one fails, saying
    /// what is missing, where the tools or privileges are not there.
    fn xfs() -> Image {
        // SAFETY: geteuid has no preconditions.
        assert!(
            unsafe { libc::geteuid() } == 0,
            "this test loop-mounts an XFS image: run the tests as root"
        );
        assert!(
            Command::new("mkfs.xfs").arg("-V").output().is_ok(),
            "this test needs mkfs.xfs: run scripts/setup.sh (apt-get install xfsprogs)"
        );
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("xfs.img");
        fs::File::create(&img)
            .unwrap()
            .set_len(400 * MIB as u64)
            .unwrap();
        let mkfs = Command::new("mkfs.xfs")
            .args(["-q", "-m", "reflink=1"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(mkfs.status.success(), "mkfs.xfs: {mkfs:?}");
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let mount = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&mnt)
            .output()
            .unwrap();
        assert!(
            mount.status.success(),
            "this test loop-mounts an XFS image, which failed here: {mount:?}"
        );
        Image { dir, mnt }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = fs::remove_file(self.dir.path().join("xfs.img"));
    }
}

fn free_bytes(path: &Path) -> u64 {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: statvfs writes into the struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail * st.f_frsize
}

/// On XFS with reflink, a large file on the store's filesystem is cloned: logging 96 MiB
/// takes next to no space. From another filesystem the clone is refused and the file is
/// copied instead; both versions read back exactly.
#[test]
fn large_files_are_cloned_where_the_filesystem_can() {
    let img = Image::xfs();
    let store = img.mnt.join("store");
    let s = TestStore {
        tmp: tempfile::tempdir().unwrap(),
        root: store.clone(),
        shared: None,
    };
    let data = img.mnt.join("data");
    let files: Vec<_> = (0..3u64)
        .map(|i| (format!("w{i}.bin"), noise(200 + i, 32 * MIB)))
        .collect();
    write_all(&data, &files);
    s.init();
    let cmd = ["sync"];
    Command::new(cmd[0]).status().unwrap();
    let before = free_bytes(&img.mnt);
    s.ok(&["log", "ckpt", data.to_str().unwrap(), "--type", "model"]);
    let used = before.saturating_sub(free_bytes(&img.mnt));
    assert!(
        used < 24 * MIB as u64,
        "cloning 96 MiB used {used} bytes of the filesystem"
    );
    assert_version(&s, "ckpt:v0", &files);
    assert_blobs_intact(&s);

    // From the test's scratch directory (another filesystem): copied.
    let other: Vec<_> = (0..2u64)
        .map(|i| (format!("o{i}.bin"), noise(300 + i, 8 * MIB)))
        .collect();
    let src = s.path("other");
    write_all(&src, &other);
    s.ok(&["log", "other", src.to_str().unwrap(), "--type", "model"]);
    assert_version(&s, "other:v0", &other);
    assert_blobs_intact(&s);
    drop(s);
}

/// The mount's log lines saying how many staged files a commit stored by the digests taken
/// in the background after they were written.
fn reuse_lines(m: &common::mount::Mounted) -> Vec<String> {
    m.log()
        .lines()
        .filter(|l| l.contains("stored by the digests taken when they were written"))
        .map(str::to_string)
        .collect()
}

/// The one file staged for the store's only draft written through the mount.
fn staged_file(s: &TestStore) -> PathBuf {
    let mut found = Vec::new();
    for d in fs::read_dir(s.root.join("staged")).unwrap() {
        for f in fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.file_name().unwrap() != "lock" {
                found.push(p);
            }
        }
    }
    assert_eq!(found.len(), 1, "staged files: {found:?}");
    found.pop().unwrap()
}

/// Big files copied into a draft through the mount are hashed once they are closed; the
/// commit links them by those digests without reading them again, and the version holds
/// exactly what was written. Times set after closing (as `cp -p` and `rsync -a` do) keep
/// the digest good.
#[test]
fn files_written_through_the_mount_are_committed_by_their_digests() {
    use common::mount::Mounted;
    let s = TestStore::new();
    s.init();
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    fs::create_dir(m.path("drafts/ckpt")).unwrap();
    let files: Vec<_> = (0..3u64)
        .map(|i| (format!("w{i}.bin"), noise(400 + i, 3 * MIB + i as usize)))
        .collect();
    for (rel, data) in &files {
        fs::write(m.path(&format!("drafts/ckpt/{rel}")), data).unwrap();
    }
    set_mtime(&m.path("drafts/ckpt/w1.bin"), time_at(1_600_000_000, 5));
    std::thread::sleep(std::time::Duration::from_secs(2));
    fs::write(m.path("drafts/ckpt/.commit"), "commit").unwrap();
    let lines = reuse_lines(&m);
    assert!(
        lines.len() == 1 && lines[0].contains("3 of 3 staged files"),
        "{lines:?}"
    );
    assert_version(&s, "ckpt:v0", &files);
    assert_blobs_intact(&s);
}

/// A file rewritten in the middle after it was hashed, through the mount (hashed again when
/// closed) or behind its back (in the staging directory itself: hashed again by the commit),
/// is committed with its new bytes under their own digest.
#[test]
fn a_file_rewritten_after_it_was_hashed_is_hashed_again() {
    use common::mount::Mounted;
    let s = TestStore::new();
    s.init();
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    let pause = || std::thread::sleep(std::time::Duration::from_secs(1));

    // Through the mount: opened again without truncating, written at an offset.
    fs::create_dir(m.path("drafts/a")).unwrap();
    let mut data = noise(500, 4 * MIB);
    let path = m.path("drafts/a/model.bin");
    fs::write(&path, &data).unwrap();
    pause();
    data[MIB..MIB + 4096].copy_from_slice(&noise(501, 4096));
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&data[MIB..MIB + 4096], MIB as u64)
        .unwrap();
    fs::write(m.path("drafts/a/.commit"), "commit").unwrap();
    assert_version(&s, "a:v0", &[("model.bin".into(), data.clone())]);

    // Behind the mount's back: the staged file itself, same size.
    fs::create_dir(m.path("drafts/b")).unwrap();
    let path = m.path("drafts/b/model.bin");
    fs::write(&path, &data).unwrap();
    pause();
    data[2 * MIB] ^= 0x55;
    fs::OpenOptions::new()
        .write(true)
        .open(staged_file(&s))
        .unwrap()
        .write_all_at(&data[2 * MIB..2 * MIB + 1], 2 * MIB as u64)
        .unwrap();
    fs::write(m.path("drafts/b/.commit"), "commit").unwrap();
    assert_version(&s, "b:v0", &[("model.bin".into(), data)]);
    // Rewritten through the mount, the file was hashed again once closed; changed behind
    // its back, the commit could not trust the digest it had.
    let lines = reuse_lines(&m);
    assert!(!lines.iter().any(|l| l.contains("draft b")), "{lines:?}");
    assert_blobs_intact(&s);
}

/// Files written into a draft go straight to their staged files through the kernel
/// (passthrough) where it can: what is written reads back through another descriptor while
/// the writer still has it open, `cp` of big files commits exactly, and a file with a
/// set-ID bit keeps going through the server (which clears the bit for writers that may not
/// keep it).
#[test]
fn draft_files_are_written_through_to_their_staged_files() {
    use common::mount::Mounted;
    let s = TestStore::new();
    s.init();
    let mp = s.path("mnt");
    let m = Mounted::logging_requests(&s, &mp);
    fs::create_dir(m.path("drafts/ckpt")).unwrap();
    let src = s.path("src");
    let files: Vec<_> = (0..2u64)
        .map(|i| (format!("w{i}.bin"), noise(600 + i, 6 * MIB + 3)))
        .collect();
    write_all(&src, &files);
    let out = Command::new("cp")
        .arg("-r")
        .arg(src.join("w0.bin"))
        .arg(src.join("w1.bin"))
        .arg(m.path("drafts/ckpt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cp: {out:?}");

    // Written and read back through two descriptors open at once.
    let path = m.path("drafts/ckpt/live.bin");
    let writer = fs::File::create(&path).unwrap();
    let data = noise(700, 2 * MIB);
    writer.write_all_at(&data, 0).unwrap();
    assert!(fs::read(&path).unwrap() == data, "read back while open");
    writer.write_all_at(b"tail", data.len() as u64).unwrap();
    drop(writer);
    let mut live = data.clone();
    live.extend_from_slice(b"tail");

    // A set-ID file: through the server, which clears the bit when a writer may not keep it.
    let setid = m.path("drafts/ckpt/tool");
    fs::write(&setid, b"#!/bin/sh\n").unwrap();
    set_mode(&setid, 0o4755);
    fs::OpenOptions::new()
        .write(true)
        .open(&setid)
        .unwrap()
        .write_all_at(b"true\n", 10)
        .unwrap();

    let log = m.log();
    let through: Vec<_> = log
        .lines()
        .filter(|l| l.contains("written through to its staged file"))
        .collect();
    // The set-ID file's first open, when it had no such bit, and no other.
    let tool = through.iter().filter(|l| l.contains("/tool")).count();
    assert!(
        through.len() == 4 && tool == 1,
        "passthrough opens: {through:?}"
    );
    fs::write(m.path("drafts/ckpt/.commit"), "commit").unwrap();
    let mut want = files.clone();
    want.push(("live.bin".into(), live));
    want.push(("tool".into(), b"#!/bin/sh\ntrue\n".to_vec()));
    assert_version(&s, "ckpt:v0", &want);
    assert_blobs_intact(&s);
}

/// A draft file whose staged file a failed commit left shared with a blob is copied at the
/// next open for writing. While a descriptor opened before still passes through to the
/// old file (now the blob), that open is refused with EBUSY rather than let the kernel
/// write the blob; once it is closed, the file is written and committed as usual, and the
/// blob keeps its bytes.
#[test]
fn a_staged_file_shared_with_a_blob_is_never_written_through() {
    use common::mount::Mounted;
    let s = TestStore::new();
    s.init();
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    let m = Mounted::new(&s, &mp);
    fs::create_dir(m.path("drafts/d")).unwrap();
    let path = m.path("drafts/d/model.bin");
    let mut data = noise(800, 4 * MIB);
    let writer = fs::File::create(&path).unwrap();
    writer.write_all_at(&data, 0).unwrap();
    // Opened while the writer passes through: the reader shares its backing file.
    let reader = fs::File::open(&path).unwrap();
    drop(writer);

    // What a commit that failed after linking leaves: the staged file is also a blob.
    let hex = sha256_hex(&data);
    let blob = s.root.join("blobs").join(&hex[..2]).join(&hex);
    fs::hard_link(staged_file(&s), &blob).unwrap();

    let refused = fs::OpenOptions::new().write(true).open(&path).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EBUSY), "{refused}");
    assert!(
        m.log()
            .contains("model.bin is open elsewhere through the file it was"),
        "{}",
        m.log()
    );
    let mut got = vec![0u8; data.len()];
    reader.read_exact_at(&mut got, 0).unwrap();
    assert!(got == data, "the reader still reads the old bytes");
    drop(reader);

    data[..5].copy_from_slice(b"fresh");
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(b"fresh", 0)
        .unwrap();
    fs::write(m.path("drafts/d/.commit"), "commit").unwrap();
    assert_version(&s, "d:v0", &[("model.bin".into(), data)]);
    assert_blobs_intact(&s);
}
