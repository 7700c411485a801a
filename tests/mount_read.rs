//! The read side of the mount (SPEC §3, issue 3), mounted for real over /dev/fuse and driven
//! with std::fs and the tools users point at it: `ls`, `find`, `du`, `stat`, `cp`, `rsync`,
//! `tar`, `sha256sum` and Python (`os`, `mmap`). These tests fail, never skip, when FUSE is
//! unusable.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::mount::*;
use common::*;
use serde_json::Value;

/// How soon a change made through the CLI must show in the mount (the spec says within a
/// second; this leaves room for a loaded machine).
const COHERENCE: Duration = Duration::from_millis(1500);

fn os<S: AsRef<OsStr> + ?Sized>(s: &S) -> &OsStr {
    s.as_ref()
}

fn uid_gid() -> (u32, u32) {
    // SAFETY: getuid/getgid have no preconditions.
    unsafe { (libc::getuid(), libc::getgid()) }
}

fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Source trees logged as `m:v0` and `m:v1` (plus `model-x:v0`, alias `best -> v0`, and two
/// drafts), with what each version must look like through the mount.
struct Sample {
    src: PathBuf,
    v0: BTreeMap<String, Node>,
    v1: BTreeMap<String, Node>,
    /// Raw content of every file of v0 (v0 is overwritten in `src` by v1).
    v0_files: BTreeMap<String, Vec<u8>>,
}

fn sample(s: &TestStore) -> Sample {
    let src = s.path("src");
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("a.txt", b"alpha\n".to_vec()),
        ("empty.bin", Vec::new()),
        ("data/big.bin", pseudo_random(3 * 1024 * 1024 + 123, 1)),
        ("data/nested/deep/x.json", br#"{"k": [1, 2, 3]}"#.to_vec()),
        ("bin/run.sh", b"#!/bin/sh\necho run\n".to_vec()),
        ("bin/tool", pseudo_random(5000, 2)),
        ("name with space.txt", b"spaced out\n".to_vec()),
        (
            "\u{fc}n\u{ef}c\u{f6}de.txt",
            "ünïcöde\n".as_bytes().to_vec(),
        ),
    ];
    for (i, (rel, content)) in files.iter().enumerate() {
        let p = src.join(rel);
        write_file(&p, content);
        // Distinct mtimes with nanoseconds, far from "now".
        set_mtime(
            &p,
            time_at(
                1_600_000_000 + 86_400 * i as u64,
                123_456_789 + 7 * i as u32,
            ),
        );
    }
    set_mode(&src.join("bin/run.sh"), 0o755);
    set_mode(&src.join("bin/tool"), 0o744);
    set_mode(&src.join("data/nested/deep/x.json"), 0o600);
    symlink("a.txt", src.join("link-to-a")).unwrap();
    symlink("../a.txt", src.join("data/up")).unwrap();
    // Symlinks carry their own mtime; far from "now" too (rsync compares a symlink's mtime
    // to the second, so one made in the same second as its copy would not be set on it).
    set_symlink_mtime(&src.join("link-to-a"), 1_500_000_000, 111);
    set_symlink_mtime(&src.join("data/up"), 1_500_000_001, 222_222_222);
    age_dirs(&src);
    assert_eq!(log(s, "m", &src), "m:v0");
    let v0 = expected_in_mount(&snapshot(&src));
    let mut v0_files = BTreeMap::new();
    for (rel, content) in &files {
        v0_files.insert(rel.to_string(), content.clone());
    }

    write_file(&src.join("a.txt"), b"alpha, second version\n");
    set_mtime(&src.join("a.txt"), time_at(1_700_000_000, 987_654_321));
    write_file(&src.join("data/new.txt"), b"new in v1\n");
    set_mtime(&src.join("data/new.txt"), time_at(1_700_000_100, 5));
    fs::remove_file(src.join("empty.bin")).unwrap();
    age_dirs(&src);
    assert_eq!(log(s, "m", &src), "m:v1");
    let v1 = expected_in_mount(&snapshot(&src));

    s.ok(&["alias", "set", "m:v0", "best"]);
    let model = s.tree("model", &[("weights.bin", "w")]);
    s.ok(&["log", "model-x", p(&model), "--type", "model"]);
    s.ok(&["draft", "new", "m"]);
    s.ok(&["draft", "new", "fresh@run1", "--type", "model"]);
    Sample {
        src,
        v0,
        v1,
        v0_files,
    }
}

/// Gives every directory of the sample an mtime far from "now", distinct per directory:
/// rsync compares directory times to the second and leaves a copy made within the same second
/// as its source with the time of its creation.
fn age_dirs(src: &Path) {
    for (i, dir) in ["", "bin", "data", "data/nested", "data/nested/deep"]
        .iter()
        .enumerate()
    {
        set_mtime(
            &src.join(dir),
            time_at(1_650_000_000 + 3_600 * i as u64, 42 + i as u32),
        );
    }
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

fn files_of(tree: &BTreeMap<String, Node>) -> impl Iterator<Item = (&String, &Node)> {
    tree.iter().filter(|(_, n)| n.kind == 'f')
}

// ----- read side -----

#[test]
fn listings_contents_and_stat_match_the_source() {
    let s = TestStore::new();
    let sample = sample(&s);
    let m = Mounted::new(&s, &mountpoint(&s));
    let (uid, gid) = uid_gid();

    // The root: every artifact and drafts/.
    assert_eq!(names(&m.mp), set(["drafts", "m", "model-x"]));
    assert_eq!(
        tool_ok("ls", &[os("-1A"), m.mp.as_os_str()], None),
        "drafts\nm\nmodel-x\n"
    );
    assert_eq!(names(&m.path("drafts")), set(["fresh@run1", "m"]));

    // An artifact: its versions as directories, its aliases as symlinks to them.
    let art = m.path("m");
    assert_eq!(names(&art), set(["best", "latest", "v0", "v1"]));
    for v in ["v0", "v1"] {
        let meta = fs::symlink_metadata(art.join(v)).unwrap();
        assert!(meta.is_dir(), "m/{v} should be a directory");
        assert_eq!(meta.mode() & 0o7777, 0o555, "m/{v} should be r-xr-xr-x");
    }
    for (alias, target) in [("latest", "v1"), ("best", "v0")] {
        let meta = fs::symlink_metadata(art.join(alias)).unwrap();
        assert!(
            meta.file_type().is_symlink(),
            "m/{alias} should be a symlink"
        );
        assert_eq!(meta.len(), target.len() as u64, "size of symlink m/{alias}");
        assert_eq!(fs::read_link(art.join(alias)).unwrap(), Path::new(target));
    }
    let ls_l = tool_ok("ls", &[os("-l"), art.as_os_str()], None);
    assert!(ls_l.contains("latest -> v1"), "ls -l m:\n{ls_l}");
    assert!(ls_l.contains("best -> v0"), "ls -l m:\n{ls_l}");

    // Every file, byte for byte, through the version and through its aliases; stat as the
    // manifest says (size, mode from the executable bit, mtime to the nanosecond).
    let v1 = snapshot(&m.path("m/v1"));
    assert_same_tree(
        "m/v1 vs its source",
        &sample.v1,
        &v1,
        ignore_dir_size_and_mtime,
    );
    assert_same_tree(
        "m/latest vs its source",
        &sample.v1,
        &snapshot(&m.path("m/latest")),
        ignore_dir_size_and_mtime,
    );
    let v0 = snapshot(&m.path("m/v0"));
    assert_same_tree(
        "m/v0 vs its source",
        &sample.v0,
        &v0,
        ignore_dir_size_and_mtime,
    );
    assert_same_tree(
        "m/best vs m/v0",
        &sample.v0,
        &snapshot(&m.path("m/best")),
        ignore_dir_size_and_mtime,
    );
    for (rel, _) in files_of(&sample.v1) {
        let want = fs::read(sample.src.join(rel)).unwrap();
        for via in ["m/v1", "m/latest"] {
            let got = fs::read(m.path(&format!("{via}/{rel}"))).unwrap();
            assert!(got == want, "{via}/{rel}: content differs from the source");
        }
    }
    for (rel, want) in &sample.v0_files {
        let got = fs::read(m.path(&format!("m/v0/{rel}"))).unwrap();
        assert!(
            &got == want,
            "m/v0/{rel}: content differs from what was logged"
        );
    }
    assert_eq!(
        fs::read_to_string(m.path("m/v1/data/up")).unwrap(),
        "alpha, second version\n",
        "a relative symlink inside a version resolves inside it"
    );

    // Ownership, link counts and blocks.
    let subdirs = |tree: &BTreeMap<String, Node>, dir: &str| {
        tree.iter()
            .filter(|(p, n)| {
                n.kind == 'd'
                    && match dir {
                        "" => !p.contains('/'),
                        d => p
                            .strip_prefix(&format!("{d}/"))
                            .is_some_and(|rest| !rest.contains('/')),
                    }
            })
            .count() as u64
    };
    for (rel, n) in &sample.v1 {
        let path = m.path(&format!("m/v1/{rel}"));
        let meta = fs::symlink_metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of m/v1/{rel}");
        let nlink = if n.kind == 'd' {
            2 + subdirs(&sample.v1, rel)
        } else {
            1
        };
        assert_eq!(meta.nlink(), nlink, "nlink of m/v1/{rel}");
        if n.kind == 'f' {
            let bytes = meta.blocks() * 512;
            assert!(
                bytes >= n.size && bytes <= n.size.next_multiple_of(4096),
                "m/v1/{rel}: {} blocks for {} bytes",
                meta.blocks(),
                n.size
            );
            assert!(meta.blksize() > 0, "m/v1/{rel}: st_blksize 0");
        }
    }
    for (path, nlink) in [
        ("m/v1", 2 + subdirs(&sample.v1, "")),
        ("m/v0", 2 + subdirs(&sample.v0, "")),
        ("m", 2 + 2),
        ("model-x", 2 + 1),
        ("", 2 + 3),
        ("drafts", 2 + 2),
    ] {
        let meta = fs::metadata(m.path(path)).unwrap();
        assert_eq!(meta.nlink(), nlink, "nlink of /{path}");
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "owner of /{path}");
    }

    // statfs.
    let st: Value = serde_json::from_str(&python_ok(
        "import os, sys, json\n\
         v = os.statvfs(sys.argv[1])\n\
         print(json.dumps({k: getattr(v, k) for k in dir(v) if k.startswith('f_')}))",
        &[m.mp.as_os_str()],
    ))
    .unwrap();
    let f = |k: &str| {
        st[k]
            .as_u64()
            .unwrap_or_else(|| panic!("statvfs {k}: {st}"))
    };
    assert!(f("f_bsize") > 0 && f("f_frsize") > 0, "statvfs: {st}");
    assert!(f("f_blocks") > 0, "statvfs: no blocks: {st}");
    assert!(
        f("f_bfree") <= f("f_blocks") && f("f_bavail") <= f("f_blocks"),
        "statvfs: {st}"
    );
    assert!(f("f_ffree") <= f("f_files"), "statvfs: {st}");
    assert!((1..=4096).contains(&f("f_namemax")), "statvfs: {st}");
    tool_ok("stat", &[os("-f"), m.mp.as_os_str()], None);

    // Extended attributes, as Python reads them.
    let mut paths: Vec<String> = vec![
        String::new(),
        "m".into(),
        "model-x".into(),
        "m/v0".into(),
        "m/v1".into(),
        "m/latest".into(),
        "m/v1/data".into(),
    ];
    paths.extend(files_of(&sample.v1).map(|(r, _)| format!("m/v1/{r}")));
    let args: Vec<PathBuf> = paths.iter().map(|r| m.path(r)).collect();
    let args: Vec<&OsStr> = args.iter().map(|p| p.as_os_str()).collect();
    let xattrs: Value = serde_json::from_str(&python_ok(
        "import os, sys, json\n\
         out = {}\n\
         for p in sys.argv[1:]:\n\
         \x20   d = {n: os.getxattr(p, n).decode() for n in os.listxattr(p)}\n\
         \x20   try:\n\
         \x20       os.getxattr(p, 'user.artifactfs.nope')\n\
         \x20       d['<missing>'] = 'found'\n\
         \x20   except OSError as e:\n\
         \x20       d['<missing>'] = e.errno\n\
         \x20   out[p] = d\n\
         print(json.dumps(out))",
        &args,
    ))
    .unwrap();
    let got = |rel: &str| xattrs[m.path(rel).to_str().unwrap()].clone();
    let expect = |pairs: &[(&str, Value)]| {
        let mut o = serde_json::Map::new();
        for (k, v) in pairs {
            o.insert(k.to_string(), v.clone());
        }
        o.insert("<missing>".into(), Value::from(libc::ENODATA));
        Value::Object(o)
    };
    for (rel, n) in files_of(&sample.v1) {
        assert_eq!(
            got(&format!("m/v1/{rel}")),
            expect(&[("user.artifactfs.sha256", Value::from(n.content.clone()))]),
            "xattrs of m/v1/{rel}"
        );
    }
    for v in ["m:v0", "m:v1"] {
        let show = s.json(&["show", v]);
        let want = expect(&[
            ("user.artifactfs.digest", show["digest"].clone()),
            ("user.artifactfs.ref", show["ref"].clone()),
            ("user.artifactfs.created", show["created"].clone()),
        ]);
        assert_eq!(got(&v.replace(':', "/")), want, "xattrs of {v}");
        if v == "m:v1" {
            assert_eq!(got("m/latest"), want, "xattrs through the alias m/latest");
        }
    }
    assert_eq!(
        got("m"),
        expect(&[("user.artifactfs.type", "dataset".into())])
    );
    assert_eq!(
        got("model-x"),
        expect(&[("user.artifactfs.type", "model".into())])
    );
    assert_eq!(
        got("m/v1/data"),
        expect(&[]),
        "a directory inside a version"
    );
    let pid = m.server_pid();
    let passthrough = getxattr(&m.mp, "user.artifactfs.passthrough").unwrap();
    assert!(
        [&b"on"[..], b"off"].contains(&passthrough.as_slice()),
        "user.artifactfs.passthrough: {passthrough:?}"
    );
    assert_eq!(
        got(""),
        expect(&[
            (
                "user.artifactfs.passthrough",
                String::from_utf8(passthrough).unwrap().into(),
            ),
            ("user.artifactfs.pid", pid.to_string().into())
        ])
    );
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("mount"),
        "user.artifactfs.pid {pid} is not the mount server: {cmdline:?}"
    );

    // Background mode: `umount` returns after a clean unmount, once the server is gone.
    let out = m.umount();
    assert_success(&out, &["umount", p(&m.mp)]);
    assert!(!is_mounted(&m.mp), "still mounted after umount returned");
    assert!(
        process_gone(pid),
        "umount returned while the server (pid {pid}) was still running"
    );
    assert!(
        m.log().contains("serving"),
        "mount.log says nothing about serving:\n{}",
        m.log()
    );
}

#[test]
fn mmap_and_positioned_reads_match_the_source() {
    let s = TestStore::new();
    let sample = sample(&s);
    let m = Mounted::new(&s, &mountpoint(&s));
    let want = fs::read(sample.src.join("data/big.bin")).unwrap();

    // Python's mmap, read-only: the whole file, a window at an offset, the tail.
    let out = python_ok(
        "import mmap, os, sys, hashlib\n\
         h = lambda b: hashlib.sha256(b).hexdigest()\n\
         for p in sys.argv[1:]:\n\
         \x20   fd = os.open(p, os.O_RDONLY)\n\
         \x20   mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)\n\
         \x20   part = '-'\n\
         \x20   if len(mm) >= 72 * mmap.PAGESIZE:\n\
         \x20       w = mmap.mmap(fd, 8 * mmap.PAGESIZE, access=mmap.ACCESS_READ, offset=64 * mmap.PAGESIZE)\n\
         \x20       part = h(w[:]); w.close()\n\
         \x20   print(len(mm), h(mm[:]), part, h(mm[len(mm) - 5000:]), mm[4095:4097].hex())\n\
         \x20   mm.close(); os.close(fd)",
        &[
            m.path("m/v1/data/big.bin").as_os_str(),
            m.path("m/latest/data/big.bin").as_os_str(),
            m.path("m/v0/bin/tool").as_os_str(),
        ],
    );
    let page = 4096usize;
    let line = |data: &[u8]| {
        let part = if data.len() >= 72 * page {
            sha256_hex(&data[64 * page..72 * page])
        } else {
            "-".to_string()
        };
        format!(
            "{} {} {} {} {}",
            data.len(),
            sha256_hex(data),
            part,
            sha256_hex(&data[data.len() - 5000..]),
            data[4095..4097]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    };
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "python printed:\n{out}");
    assert_eq!(lines[0], line(&want), "mmap of m/v1/data/big.bin");
    assert_eq!(lines[1], line(&want), "mmap of m/latest/data/big.bin");
    assert_eq!(
        lines[2],
        line(&sample.v0_files["bin/tool"]),
        "mmap of m/v0/bin/tool"
    );

    // Positioned reads across page and read-size boundaries, from several threads at once.
    let file = fs::File::open(m.path("m/v1/data/big.bin")).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let (file, want) = (&file, &want);
            scope.spawn(move || {
                for i in 0..64u64 {
                    let off = (i * 48_611 + t * 131_071) % (want.len() as u64 - 1);
                    let len = [1usize, 4095, 4097, 131_073][(i % 4) as usize];
                    let mut buf = vec![0u8; len];
                    let n = file.read_at(&mut buf, off).unwrap();
                    let end = (off as usize + len).min(want.len());
                    assert!(n > 0, "read_at({off}) returned 0 before the end");
                    assert_eq!(
                        &buf[..n],
                        &want[off as usize..off as usize + n],
                        "read_at({off}, {len}) through the mount"
                    );
                    assert!(off as usize + n <= end);
                }
            });
        }
    });
    let mut f = fs::File::open(m.path("m/v1/data/big.bin")).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert!(all == want, "sequential read of m/v1/data/big.bin differs");
}

#[test]
fn cp_rsync_tar_find_du_and_sha256sum_work_out_of_the_mount() {
    let s = TestStore::new();
    let sample = sample(&s);
    let m = Mounted::new(&s, &mountpoint(&s));
    let v1 = m.path("m/v1");
    let in_mount = snapshot(&v1);
    assert_same_tree("m/v1", &sample.v1, &in_mount, ignore_dir_size_and_mtime);
    let out = s.path("out");
    fs::create_dir_all(&out).unwrap();

    // cp -r: same files, content and modes (not times); cp -a: times too.
    tool_ok(
        "cp",
        &[os("-r"), v1.as_os_str(), out.join("cp").as_os_str()],
        None,
    );
    assert_same_tree(
        "cp -r of m/v1",
        &sample.v1,
        &snapshot(&out.join("cp")),
        |_, n| Ignore {
            mtime: true,
            size: n.kind == 'd',
            mode: false,
        },
    );
    tool_ok(
        "cp",
        &[os("-a"), v1.as_os_str(), out.join("cpa").as_os_str()],
        None,
    );
    assert_same_tree(
        "cp -a of m/v1",
        &in_mount,
        &snapshot(&out.join("cpa")),
        |_, n| Ignore {
            size: n.kind == 'd',
            ..Ignore::default()
        },
    );

    // rsync -a through the alias: content, modes, mtimes of files, symlinks and directories.
    let src_arg = format!("{}/", m.path("m/latest").display());
    let dst_arg = format!("{}/", out.join("rsync").display());
    tool_ok("rsync", &[os("-a"), os(&src_arg), os(&dst_arg)], None);
    let rsynced = snapshot(&out.join("rsync"));
    assert_same_tree("rsync -a of m/latest", &sample.v1, &rsynced, |_, n| {
        Ignore {
            size: n.kind == 'd',
            mtime: n.kind == 'd',
            mode: false,
        }
    });
    assert_same_tree(
        "rsync -a of m/latest vs the mount",
        &in_mount,
        &rsynced,
        |_, n| Ignore {
            size: n.kind == 'd',
            ..Ignore::default()
        },
    );
    // A second rsync finds nothing to transfer: the mount's attributes are stable.
    let again = tool_ok("rsync", &[os("-ai"), os(&src_arg), os(&dst_arg)], None);
    assert_eq!(
        again.trim(),
        "",
        "second rsync -ai transferred something:\n{again}"
    );

    // tar c out of the mount, extracted elsewhere.
    let tar_out = out.join("tar");
    fs::create_dir_all(&tar_out).unwrap();
    sh_ok(
        "tar --format=posix -C \"$1\" -cf - . | tar -C \"$2\" -xf -",
        &[v1.as_os_str(), tar_out.as_os_str()],
    );
    assert_same_tree(
        "tar c | tar x of m/v1",
        &in_mount,
        &snapshot(&tar_out),
        |_, n| Ignore {
            size: n.kind == 'd',
            ..Ignore::default()
        },
    );

    // find: every entry with its type, mode and size.
    let found: BTreeSet<String> = tool_ok(
        "find",
        &[os("."), os("-printf"), os("%y %m %s %P\\n")],
        Some(&v1),
    )
    .lines()
    .filter(|l| !l.ends_with(' ')) // "." itself
    .map(str::to_string)
    .collect();
    let want: BTreeSet<String> = in_mount
        .iter()
        .map(|(p, n)| format!("{} {:o} {} {p}", n.kind, n.mode, n.size))
        .collect();
    assert_eq!(found, want, "find -printf in m/v1");

    // du: apparent size is the sum of the entries; disk usage covers the data.
    let du_b = tool_ok("du", &[os("-sb"), v1.as_os_str()], None);
    let apparent: u64 = du_b.split_whitespace().next().unwrap().parse().unwrap();
    let sum: u64 =
        in_mount.values().map(|n| n.size).sum::<u64>() + fs::metadata(&v1).unwrap().len();
    assert_eq!(apparent, sum, "du -sb m/v1: {du_b}");
    let du_k = tool_ok("du", &[os("-sk"), v1.as_os_str()], None);
    let kib: u64 = du_k.split_whitespace().next().unwrap().parse().unwrap();
    let file_bytes: u64 = files_of(&in_mount).map(|(_, n)| n.size).sum();
    assert!(
        kib * 1024 >= file_bytes,
        "du -sk m/v1 = {kib} KiB for {file_bytes} bytes of files"
    );
    let du_dirs = tool_ok("du", &[v1.as_os_str()], None).lines().count();
    assert_eq!(
        du_dirs,
        1 + in_mount.values().filter(|n| n.kind == 'd').count(),
        "du lists every directory"
    );

    // sha256sum -c against a manifest from `artifactfs ls` and the hashes of the source.
    let listed = ls(&s, "m:v1");
    let expected_paths: BTreeSet<&String> = sample
        .v1
        .iter()
        .filter(|(_, n)| n.kind != 'd')
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        listed.iter().collect::<BTreeSet<_>>(),
        expected_paths,
        "artifactfs ls m:v1"
    );
    let manifest: String = listed
        .iter()
        .map(|p| {
            format!(
                "{}  {p}\n",
                sha256_hex(&fs::read(sample.src.join(p)).unwrap())
            )
        })
        .collect();
    let man = s.path("SHA256SUMS");
    fs::write(&man, &manifest).unwrap();
    let checked = tool_ok("sha256sum", &[os("-c"), man.as_os_str()], Some(&v1));
    let oks = checked.lines().filter(|l| l.ends_with(": OK")).count();
    assert_eq!(oks, listed.len(), "sha256sum -c:\n{checked}");
    // The check can fail: a wrong hash is caught.
    let bad = manifest.replacen(&manifest[..64], &"0".repeat(64), 1);
    fs::write(&man, bad).unwrap();
    let out = run_tool("sha256sum", &[os("-c"), man.as_os_str()], Some(&v1));
    assert!(
        !out.status.success() && stdout(&out).contains("FAILED"),
        "sha256sum -c accepted a wrong hash: {}",
        stdout(&out)
    );
}

// ----- 100,000 files -----

/// A store whose scratch area is on tmpfs (/dev/shm) when that has room: on a VM disk,
/// creating and then deleting the 300,000 small files of this test (source, store, copy) takes
/// longer than everything the test checks. Where the files live changes nothing it checks.
fn store_for_many_files() -> TestStore {
    let shm = Path::new("/dev/shm");
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let roomy = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) } == 0
        && st.f_bavail as u64 * st.f_frsize as u64 >= 3 << 30
        && st.f_favail >= 400_000;
    if roomy
        && let Ok(tmp) = tempfile::Builder::new()
            .prefix("artifactfs-test-")
            .tempdir_in(shm)
    {
        let root = tmp.path().join("store");
        return TestStore {
            tmp,
            root,
            shared: None,
        };
    }
    TestStore::embedded()
}

#[test]
fn a_hundred_thousand_file_version_works_with_every_tool() {
    const DIRS: usize = 100;
    const PER_DIR: usize = 1000;
    const N: usize = DIRS * PER_DIR;
    let start = Instant::now();
    let mut steps: Vec<String> = Vec::new();
    let mut step = |what: &str, t: &mut Instant| {
        steps.push(format!("{what}: {:.1}s", t.elapsed().as_secs_f64()));
        eprintln!("100k: {what}: {:.1}s", t.elapsed().as_secs_f64());
        *t = Instant::now();
    };
    let mut t = Instant::now();

    let s = store_for_many_files();
    let src = s.path("big");
    let content = |d: usize, f: usize| format!("{d}/{f}\n");
    let rel = |d: usize, f: usize| format!("d{d:03}/f{f:04}.txt");
    let exec = |d: usize, f: usize| (d + f).is_multiple_of(97);
    for d in 0..DIRS {
        fs::create_dir_all(src.join(format!("d{d:03}"))).unwrap();
        for f in 0..PER_DIR {
            let p = src.join(rel(d, f));
            fs::write(&p, content(d, f)).unwrap();
            if exec(d, f) {
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
    }
    let n_exec = (0..DIRS)
        .flat_map(|d| (0..PER_DIR).map(move |f| (d, f)))
        .filter(|&(d, f)| exec(d, f))
        .count();
    // The source as a local filesystem shows it: (size, mtime ns) per path.
    let mut source: BTreeMap<String, (u64, i128)> = BTreeMap::new();
    for d in 0..DIRS {
        for f in 0..PER_DIR {
            let r = rel(d, f);
            let meta = fs::symlink_metadata(src.join(&r)).unwrap();
            source.insert(
                r,
                (
                    meta.len(),
                    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                ),
            );
        }
    }
    let total: u64 = source.values().map(|v| v.0).sum();
    step("source tree", &mut t);
    assert_eq!(log(&s, "big", &src), "big:v0");
    step("log", &mut t);

    let m = Mounted::new(&s, &mountpoint(&s));
    let v0 = m.path("big/v0");

    // find without stat first: the first listing of each directory carries attributes for only
    // a few entries, so the tools below see a mix of entries the kernel already knows and
    // entries it must look up, and must get the same answers from both.
    let found = tool_ok("find", &[v0.as_os_str()], None);
    assert_eq!(found.lines().count(), N + DIRS + 1, "find of a fresh mount");
    step("find without stat", &mut t);

    // ls -lR: every file and directory, with sizes and read-only modes.
    let lslr = tool_ok("ls", &[os("-lR"), v0.as_os_str()], None);
    let (mut files, mut dirs, mut bytes, mut ro, mut rx) = (0, 0, 0u64, 0, 0);
    for line in lslr.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match line.chars().next() {
            Some('-') => {
                files += 1;
                bytes += fields[4].parse::<u64>().unwrap();
                match fields[0] {
                    "-r--r--r--" => ro += 1,
                    "-r-xr-xr-x" => rx += 1,
                    other => panic!("ls -lR: mode {other} in {line}"),
                }
            }
            Some('d') => dirs += 1,
            _ => {}
        }
    }
    assert_eq!(
        (files, dirs, bytes, ro, rx),
        (N, DIRS, total, N - n_exec, n_exec),
        "ls -lR: (files, dirs, bytes, r--r--r--, r-xr-xr-x)"
    );
    step("ls -lR", &mut t);

    // find: the same paths, sizes and mtimes as find on the source; modes read-only.
    let fmt = os("%P %s %T@\\n");
    let in_mount = tool_ok(
        "find",
        &[os("."), os("-type"), os("f"), os("-printf"), fmt],
        Some(&v0),
    );
    let in_source = tool_ok(
        "find",
        &[os("."), os("-type"), os("f"), os("-printf"), fmt],
        Some(&src),
    );
    let sort = |s: &str| {
        let mut v: Vec<&str> = s.lines().collect();
        v.sort_unstable();
        v.join("\n")
    };
    let (a, b) = (sort(&in_mount), sort(&in_source));
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(5)
            .map(|(x, y)| format!("mount {x:?} vs source {y:?}"))
            .collect();
        panic!(
            "find -printf '%P %s %T@' differs ({} vs {} lines): {diff:?}",
            a.lines().count(),
            b.lines().count()
        );
    }
    let kinds = tool_ok("find", &[os("."), os("-printf"), os("%y %m\\n")], Some(&v0));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in kinds.lines() {
        *counts.entry(l).or_default() += 1;
    }
    let want: BTreeMap<&str, usize> = [
        ("d 555", DIRS + 1),
        ("f 444", N - n_exec),
        ("f 555", n_exec),
    ]
    .into();
    assert_eq!(counts, want, "find -printf '%y %m'");
    step("find", &mut t);

    // stat of every file (Python: os.walk and os.lstat).
    let walked = python_ok(
        "import os, sys\n\
         root = sys.argv[1]\n\
         out = []\n\
         for d, dirs, files in os.walk(root):\n\
         \x20   for f in files:\n\
         \x20       p = os.path.join(d, f)\n\
         \x20       st = os.lstat(p)\n\
         \x20       out.append('%s %d %o %d %d %d %d %d' % (os.path.relpath(p, root), st.st_size, st.st_mode,\n\
         \x20           st.st_mtime_ns, st.st_nlink, st.st_uid, st.st_gid, st.st_blocks))\n\
         sys.stdout.write('\\n'.join(out) + '\\n')",
        &[v0.as_os_str()],
    );
    let (uid, gid) = uid_gid();
    let mut seen = 0;
    let mut bad = Vec::new();
    for line in walked.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (size, mtime) = source[f[0]];
        let d: usize = f[0][1..4].parse().unwrap();
        let n: usize = f[0][6..10].parse().unwrap();
        let mode = if exec(d, n) { "100555" } else { "100444" };
        let blocks: u64 = f[7].parse().unwrap();
        let want = format!("{} {size} {mode} {mtime} 1 {uid} {gid}", f[0]);
        if f[..7].join(" ") != want || blocks * 512 < size {
            bad.push(format!("{line} (want {want}, blocks*512 >= {size})"));
        }
        seen += 1;
    }
    assert!(
        bad.is_empty(),
        "stat of {} files wrong, e.g.: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(seen, N, "os.walk saw {seen} files");
    step("stat every file", &mut t);

    // du: apparent size equals the files' bytes (plus what the directories report).
    let dir_sizes: u64 = (0..DIRS)
        .map(|d| fs::metadata(v0.join(format!("d{d:03}"))).unwrap().len())
        .sum::<u64>()
        + fs::metadata(&v0).unwrap().len();
    let du = tool_ok("du", &[os("-sb"), v0.as_os_str()], None);
    assert_eq!(
        du.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap(),
        total + dir_sizes,
        "du -sb: {du}"
    );
    let du_k = tool_ok("du", &[os("-sk"), v0.as_os_str()], None);
    assert!(
        du_k.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
            >= total,
        "du -sk: {du_k}"
    );
    step("du", &mut t);

    // tar c: the whole version to /dev/null, and two directories through a pipe.
    tool_ok("tar", &[os("-cf"), os("/dev/null"), os(".")], Some(&v0));
    let listed = sh_ok(
        "cd \"$1\" && tar -cf - d000 d099 | tar -tf - | wc -l",
        &[v0.as_os_str()],
    );
    assert_eq!(
        listed.trim(),
        (2 + 2 * PER_DIR).to_string(),
        "tar c | tar t"
    );
    step("tar", &mut t);

    // rsync -a out of the mount: every file, its content, mode and mtime.
    let out = s.path("out");
    tool_ok(
        "rsync",
        &[
            os("-a"),
            os(&format!("{}/", v0.display())),
            os(&format!("{}/", out.display())),
        ],
        None,
    );
    let mut bad = Vec::new();
    let mut count = 0;
    for d in 0..DIRS {
        for e in fs::read_dir(out.join(format!("d{d:03}"))).unwrap() {
            let e = e.unwrap();
            let r = format!("d{d:03}/{}", e.file_name().to_string_lossy());
            let f: usize = r[6..10].parse().unwrap();
            let meta = e.metadata().unwrap();
            let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
            let mode = if exec(d, f) { 0o555 } else { 0o444 };
            let data = fs::read(e.path()).unwrap();
            if data != content(d, f).as_bytes()
                || meta.mode() & 0o7777 != mode
                || Some(&(meta.len(), mtime)) != source.get(&r)
            {
                bad.push(r);
            }
            count += 1;
        }
    }
    assert_eq!(count, N, "rsync -a copied {count} files");
    assert!(
        bad.is_empty(),
        "rsync -a: {} files differ, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    step("rsync -a", &mut t);

    // sha256sum -c against a manifest from `artifactfs ls` and the known contents.
    let listed = ls(&s, "big:v0");
    assert_eq!(listed.len(), N, "artifactfs ls big:v0");
    let mut manifest = String::with_capacity(N * 90);
    for r in &listed {
        let d: usize = r[1..4].parse().unwrap();
        let f: usize = r[6..10].parse().unwrap();
        manifest.push_str(&format!("{}  {r}\n", sha256_hex(content(d, f).as_bytes())));
    }
    let man = s.path("SHA256SUMS");
    fs::write(&man, manifest).unwrap();
    let checked = tool_ok("sha256sum", &[os("-c"), man.as_os_str()], Some(&v0));
    let oks = checked.lines().filter(|l| l.ends_with(": OK")).count();
    assert_eq!(oks, N, "sha256sum -c: {oks} OK of {N}");
    step("sha256sum -c", &mut t);

    drop(m);
    eprintln!(
        "100k: total {:.1}s: {}",
        start.elapsed().as_secs_f64(),
        steps.join(", ")
    );
}

// ----- read-only -----

/// Runs filesystem operations from Python; returns each label's errno (0 if it succeeded).
fn errnos(ops: &Value) -> BTreeMap<String, i64> {
    let out = python_ok(
        "import os, sys, json\n\
         flags = {'wronly': os.O_WRONLY, 'rdwr': os.O_RDWR, 'append': os.O_WRONLY | os.O_APPEND,\n\
         \x20        'trunc': os.O_RDONLY | os.O_TRUNC, 'creat': os.O_WRONLY | os.O_CREAT,\n\
         \x20        'excl': os.O_WRONLY | os.O_CREAT | os.O_EXCL}\n\
         def run(op, a):\n\
         \x20   if op == 'open': os.close(os.open(a[0], flags[a[1]], 0o644))\n\
         \x20   elif op == 'truncate': os.truncate(a[0], a[1])\n\
         \x20   elif op == 'unlink': os.unlink(a[0])\n\
         \x20   elif op == 'rename': os.rename(a[0], a[1])\n\
         \x20   elif op == 'mkdir': os.mkdir(a[0])\n\
         \x20   elif op == 'rmdir': os.rmdir(a[0])\n\
         \x20   elif op == 'chmod': os.chmod(a[0], 0o777)\n\
         \x20   elif op == 'chown': os.chown(a[0], 1, 1)\n\
         \x20   elif op == 'lchown': os.lchown(a[0], 1, 1)\n\
         \x20   elif op == 'chown_self': os.chown(a[0], os.getuid(), os.getgid())\n\
         \x20   elif op == 'lchown_self': os.lchown(a[0], os.getuid(), os.getgid())\n\
         \x20   elif op == 'utime': os.utime(a[0], ns=(1, 1))\n\
         \x20   elif op == 'utime_now': os.utime(a[0])\n\
         \x20   elif op == 'lutime': os.utime(a[0], ns=(1, 1), follow_symlinks=False)\n\
         \x20   elif op == 'setxattr': os.setxattr(a[0], 'user.test', b'1')\n\
         \x20   elif op == 'replacexattr': os.setxattr(a[0], a[1], b'0' * 64, os.XATTR_REPLACE)\n\
         \x20   elif op == 'removexattr': os.removexattr(a[0], a[1])\n\
         \x20   elif op == 'link': os.link(a[0], a[1])\n\
         \x20   elif op == 'symlink': os.symlink(a[0], a[1])\n\
         \x20   elif op == 'mkfifo': os.mkfifo(a[0])\n\
         \x20   else: raise Exception('unknown op ' + op)\n\
         res = {}\n\
         for label, op, args in json.loads(sys.argv[1]):\n\
         \x20   try:\n\
         \x20       run(op, args)\n\
         \x20       res[label] = 0\n\
         \x20   except OSError as e:\n\
         \x20       res[label] = e.errno\n\
         print(json.dumps(res))",
        &[os(&ops.to_string())],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn every_change_outside_drafts_fails_with_erofs() {
    let s = TestStore::new();
    let sample = sample(&s);
    let m = Mounted::new(&s, &mountpoint(&s));
    let before = s.fingerprint();
    let at = |r: &str| m.path(r).to_str().unwrap().to_string();
    let (root, art, ver, file, sub, alias, vlink) = (
        at(""),
        at("m"),
        at("m/v0"),
        at("m/v0/a.txt"),
        at("m/v0/data"),
        at("m/latest"),
        at("m/v0/link-to-a"),
    );
    let sha = "user.artifactfs.sha256";
    let mut ops: Vec<Value> = Vec::new();
    let mut add = |label: String, op: &str, args: Value| {
        ops.push(serde_json::json!([label, op, args]));
    };
    // Creating anything anywhere outside drafts/.
    for (what, dir) in [
        ("root", &root),
        ("artifact dir", &art),
        ("version dir", &ver),
        ("dir in version", &sub),
    ] {
        add(
            format!("create in {what}"),
            "open",
            serde_json::json!([format!("{dir}/new.txt"), "excl"]),
        );
        add(
            format!("mkdir in {what}"),
            "mkdir",
            serde_json::json!([format!("{dir}/newdir")]),
        );
        add(
            format!("symlink in {what}"),
            "symlink",
            serde_json::json!(["a.txt", format!("{dir}/newlink")]),
        );
        add(
            format!("link into {what}"),
            "link",
            serde_json::json!([&file, format!("{dir}/hard")]),
        );
        add(
            format!("mkfifo in {what}"),
            "mkfifo",
            serde_json::json!([format!("{dir}/fifo")]),
        );
    }
    // Writing, truncating, or opening for writing a file of a version (directly and through
    // an alias).
    for mode in ["wronly", "rdwr", "append", "trunc", "creat"] {
        add(
            format!("open {mode} file in version"),
            "open",
            serde_json::json!([&file, mode]),
        );
    }
    add(
        "open wronly through alias".into(),
        "open",
        serde_json::json!([at("m/latest/a.txt"), "wronly"]),
    );
    add(
        "truncate file to 0".into(),
        "truncate",
        serde_json::json!([&file, 0]),
    );
    add(
        "truncate file to 100".into(),
        "truncate",
        serde_json::json!([&file, 100]),
    );
    // Removing and renaming.
    add(
        "unlink file in version".into(),
        "unlink",
        serde_json::json!([&file]),
    );
    add(
        "unlink symlink in version".into(),
        "unlink",
        serde_json::json!([&vlink]),
    );
    add("unlink alias".into(), "unlink", serde_json::json!([&alias]));
    add(
        "rmdir dir in version".into(),
        "rmdir",
        serde_json::json!([&sub]),
    );
    add(
        "rmdir version dir".into(),
        "rmdir",
        serde_json::json!([&ver]),
    );
    add(
        "rmdir artifact dir".into(),
        "rmdir",
        serde_json::json!([&art]),
    );
    add(
        "rename file within version".into(),
        "rename",
        serde_json::json!([&file, format!("{ver}/b.txt")]),
    );
    add(
        "rename file to another version".into(),
        "rename",
        serde_json::json!([&file, at("m/v1/b.txt")]),
    );
    add(
        "rename file over another".into(),
        "rename",
        serde_json::json!([&file, at("m/v0/bin/run.sh")]),
    );
    add(
        "rename dir in version".into(),
        "rename",
        serde_json::json!([&sub, format!("{ver}/data2")]),
    );
    add(
        "rename version dir".into(),
        "rename",
        serde_json::json!([&ver, format!("{art}/v9")]),
    );
    add(
        "rename alias".into(),
        "rename",
        serde_json::json!([&alias, format!("{art}/newest")]),
    );
    add(
        "rename artifact dir".into(),
        "rename",
        serde_json::json!([&art, format!("{root}/m2")]),
    );
    // Changing attributes of each kind of object.
    for (what, path) in [
        ("root", &root),
        ("artifact dir", &art),
        ("version dir", &ver),
        ("file in version", &file),
        ("dir in version", &sub),
    ] {
        add(format!("chmod {what}"), "chmod", serde_json::json!([path]));
        add(format!("chown {what}"), "chown", serde_json::json!([path]));
        // To the owner it already has: still a change on a read-only filesystem.
        add(
            format!("chown {what} to its owner"),
            "chown_self",
            serde_json::json!([path]),
        );
        add(
            format!("utimens {what}"),
            "utime",
            serde_json::json!([path]),
        );
        add(
            format!("utimens now {what}"),
            "utime_now",
            serde_json::json!([path]),
        );
        add(
            format!("setxattr {what}"),
            "setxattr",
            serde_json::json!([path]),
        );
    }
    add("lchown alias".into(), "lchown", serde_json::json!([&alias]));
    add(
        "lchown alias to its owner".into(),
        "lchown_self",
        serde_json::json!([&alias]),
    );
    add(
        "lutimens alias".into(),
        "lutime",
        serde_json::json!([&alias]),
    );
    add(
        "lchown symlink in version".into(),
        "lchown",
        serde_json::json!([&vlink]),
    );
    add(
        "replace sha256 xattr".into(),
        "replacexattr",
        serde_json::json!([&file, sha]),
    );
    add(
        "remove sha256 xattr".into(),
        "removexattr",
        serde_json::json!([&file, sha]),
    );
    add(
        "remove digest xattr".into(),
        "removexattr",
        serde_json::json!([&ver, "user.artifactfs.digest"]),
    );

    let n = ops.len();
    let results = errnos(&Value::Array(ops));
    assert_eq!(
        results.len(),
        n,
        "python ran {} of {n} operations",
        results.len()
    );
    let wrong: Vec<String> = results
        .iter()
        .filter(|(_, e)| **e != libc::EROFS as i64)
        .map(|(l, e)| {
            let name = if *e == 0 {
                "succeeded".to_string()
            } else {
                std::io::Error::from_raw_os_error(*e as i32).to_string()
            };
            format!("{l}: {name}")
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {n} modifications did not fail with EROFS:\n{}",
        wrong.len(),
        wrong.join("\n")
    );

    // Nothing changed, in the store or in the mount.
    assert_unchanged(
        &before,
        &s.fingerprint(),
        "modification attempts through the mount",
    );
    assert_same_tree(
        "m/v0 after the attempts",
        &sample.v0,
        &snapshot(&m.path("m/v0")),
        ignore_dir_size_and_mtime,
    );
    assert_eq!(names(&m.path("m")), set(["best", "latest", "v0", "v1"]));
    assert_eq!(names(&m.mp), set(["drafts", "m", "model-x"]));
}

// ----- bad input -----

#[test]
fn names_that_do_not_exist_are_enoent() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "a"), ("d/b.txt", "b")]);
    log(&s, "m", &src);
    log(&s, "solo", &src);
    s.ok(&["delete", "solo:v0"]);
    let m = Mounted::new(&s, &mountpoint(&s));

    let missing = [
        "m/v999",
        "m/v1",
        "m/v01",
        "m/v-1",
        "m/nope",
        "m/v0/nope.txt",
        "m/latest/nope.txt",
        "m/v0/d/nope",
        "nope",
        "nope/latest",
        "solo/latest",
        "solo/v0",
        "drafts/nope",
    ];
    for rel in missing {
        let path = m.path(rel);
        assert_eq!(
            errno_of(fs::symlink_metadata(&path)),
            Some(libc::ENOENT),
            "lstat {rel}"
        );
        assert_eq!(
            errno_of(fs::metadata(&path)),
            Some(libc::ENOENT),
            "stat {rel}"
        );
        assert_eq!(
            errno_of(fs::File::open(&path)),
            Some(libc::ENOENT),
            "open {rel}"
        );
    }
    assert_eq!(
        errno_of(fs::read_link(m.path("solo/latest"))),
        Some(libc::ENOENT)
    );
    assert_eq!(errno_of(fs::read_dir(m.path("nope"))), Some(libc::ENOENT));
    // The artifact whose only version is gone is an empty directory.
    assert_eq!(names(&m.path("solo")), BTreeSet::new());
    assert_eq!(names(&m.mp), set(["drafts", "m", "solo"]));
    // A name inside a file is not a directory.
    assert_eq!(
        errno_of(fs::metadata(m.path("m/v0/a.txt/x"))),
        Some(libc::ENOTDIR)
    );

    // The same once the only version is deleted while mounted.
    log(&s, "later", &src);
    assert_eq!(
        fs::read_to_string(m.path("later/latest/a.txt")).unwrap(),
        "a"
    );
    s.ok(&["delete", "later:v0"]);
    wait_until(
        "later/latest is ENOENT after its only version was deleted",
        COHERENCE,
        || match errno_of(fs::metadata(m.path("later/latest"))) {
            Some(libc::ENOENT) => Ok(()),
            e => Err(format!("stat later/latest: {e:?}")),
        },
    );
    assert_eq!(names(&m.path("later")), BTreeSet::new());
}

#[test]
fn mount_refuses_bad_mount_points_and_stores_with_a_clear_error() {
    require_fuse();
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "a")]);
    log(&s, "m", &src);

    // A mount point that does not exist.
    let missing = s.path("no-such-dir");
    let err = s.fail(&[os("mount"), missing.as_os_str()]);
    assert!(
        err.contains(p(&missing)) && err.contains("does not exist"),
        "{err}"
    );
    assert!(!missing.exists(), "mount created the missing mount point");

    // A mount point that is a file.
    let file = s.file("plain-file", "x");
    let err = s.fail(&[os("mount"), file.as_os_str()]);
    assert!(
        err.contains(p(&file)) && err.contains("not a directory"),
        "{err}"
    );
    assert!(!is_mounted(&file));
    let err = s.fail(&[os("mount"), file.as_os_str(), os("--foreground")]);
    assert!(err.contains(p(&file)), "{err}");

    // Twice on the same path: refused, and the first mount keeps serving.
    let mp = fs::canonicalize(mountpoint(&s)).unwrap();
    let m = Mounted::new(&s, &mp);
    let err = s.fail(&[os("mount"), mp.as_os_str()]);
    assert!(err.contains(p(&mp)), "{err}");
    let err = s.fail(&[os("mount"), mp.as_os_str(), os("--foreground")]);
    assert!(err.contains(p(&mp)), "{err}");
    assert_eq!(
        mounts_at(&mp).len(),
        1,
        "a second mount was stacked on {}",
        mp.display()
    );
    assert_eq!(fs::read_to_string(m.path("m/latest/a.txt")).unwrap(), "a");

    // A directory that is not a mount.
    let plain = s.path("plain-dir");
    fs::create_dir_all(&plain).unwrap();
    let err = s.fail(&[os("umount"), plain.as_os_str()]);
    assert!(
        err.contains(p(&plain)) && err.contains("not") && err.contains("mount"),
        "{err}"
    );
    let err = s.fail(&[os("umount"), missing.as_os_str()]);
    assert!(err.contains(p(&missing)), "{err}");
    drop(m);

    // A store whose catalog is garbage.
    let bad = TestStore::new();
    fs::create_dir_all(&bad.root).unwrap();
    fs::write(bad.root.join("catalog.db"), pseudo_random(8192, 3)).unwrap();
    let bmp = mountpoint(&bad);
    for fg in [false, true] {
        let mut args = vec![os("mount"), bmp.as_os_str()];
        if fg {
            args.push(os("--foreground"));
        }
        let err = bad.fail(&args);
        assert!(
            err.contains("catalog.db"),
            "mount {args:?} with a garbage catalog: {err}"
        );
        assert!(
            !is_mounted(&fs::canonicalize(&bmp).unwrap()),
            "mounted a garbage store"
        );
    }

    // A store path that is a regular file.
    let filestore = TestStore::new();
    write_file(&filestore.root, b"not a store");
    let fmp = mountpoint(&filestore);
    let err = filestore.fail(&[os("mount"), fmp.as_os_str()]);
    assert!(
        err.contains(p(&filestore.root)),
        "mount with a store that is a file: {err}"
    );
    assert!(
        !is_mounted(&fs::canonicalize(&fmp).unwrap()),
        "mounted a store that is a file"
    );
}

#[test]
fn umount_while_busy_says_so_and_the_mount_keeps_serving() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "held open\n"), ("d/b.txt", "b")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let pid = m.server_pid();

    // A process holding a file open.
    let mut holder = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys\n\
             f = open(sys.argv[1], 'rb')\n\
             print('open', flush=True)\n\
             sys.stdin.readline()\n\
             sys.stdout.write(f.read().decode())",
        )
        .arg(m.path("m/v0/a.txt"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap());
    let mut first = String::new();
    lines.read_line(&mut first).unwrap();
    assert_eq!(first.trim(), "open", "the holder could not open the file");
    let check_busy = |why: &str| {
        let out = m.umount();
        let err = assert_failure(&out, &["umount", p(&m.mp)]);
        assert!(
            err.contains("busy") && err.contains(p(&m.mp)),
            "umount with {why}: {err}"
        );
        assert!(is_mounted(&m.mp), "umount with {why} unmounted anyway");
        assert_eq!(
            fs::read_to_string(m.path("m/v0/d/b.txt")).unwrap(),
            "b",
            "after a busy umount"
        );
        assert_eq!(names(&m.path("m")), set(["latest", "v0"]));
        assert_eq!(m.server_pid(), pid);
    };
    check_busy("a file open");
    holder.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    let mut rest = String::new();
    lines.read_to_string(&mut rest).unwrap();
    assert!(holder.wait().unwrap().success());
    assert_eq!(
        rest, "held open\n",
        "the file held open across the busy umount"
    );

    // A process whose working directory is inside.
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .current_dir(m.path("m/v0/d"))
        .spawn()
        .unwrap();
    check_busy("a working directory inside");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();

    // Once nothing holds it, umount works and waits for the server.
    let out = m.umount();
    assert_success(&out, &["umount", p(&m.mp)]);
    assert!(!is_mounted(&m.mp));
    assert!(
        process_gone(pid),
        "umount returned before the server exited"
    );
}

// ----- coherence -----

#[test]
fn cli_changes_show_in_the_mount_while_open_files_keep_reading() {
    let s = TestStore::new();
    let old_data = pseudo_random(2 * 1024 * 1024 + 17, 10);
    let new_data = pseudo_random(1024 * 1024 + 5, 11);
    let src = s.path("src");
    write_file(&src.join("data.bin"), &old_data);
    write_file(&src.join("a.txt"), b"old\n");
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    assert_eq!(names(&m.path("m")), set(["latest", "v0"]));
    assert_eq!(fs::read_link(m.path("m/latest")).unwrap(), Path::new("v0"));
    assert_eq!(errno_of(fs::metadata(m.path("m/v1"))), Some(libc::ENOENT));

    // Files opened now, from v0: one read through a descriptor, one mmapped by Python.
    let mut held = fs::File::open(m.path("m/v0/a.txt")).unwrap();
    let mut mapper = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, os, mmap, hashlib\n\
             fd = os.open(sys.argv[1], os.O_RDONLY)\n\
             mm = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)\n\
             print('ready', hashlib.sha256(mm[:]).hexdigest(), flush=True)\n\
             for line in sys.stdin:\n\
             \x20   data, off = b'', 0\n\
             \x20   while True:\n\
             \x20       chunk = os.pread(fd, 1 << 20, off)\n\
             \x20       if not chunk: break\n\
             \x20       data += chunk; off += len(chunk)\n\
             \x20   print(hashlib.sha256(data).hexdigest(), hashlib.sha256(mm[:]).hexdigest(),\n\
             \x20         os.fstat(fd).st_size, flush=True)",
        )
        .arg(m.path("m/latest/data.bin"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut mapped = BufReader::new(mapper.stdout.take().unwrap());
    let mut line = String::new();
    mapped.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("ready {}", sha256_hex(&old_data)),
        "mmap of m/latest/data.bin"
    );
    let old_hashes = format!("{0} {0} {1}", sha256_hex(&old_data), old_data.len());
    let mut ask = |what: &str| {
        mapper
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"check\n")
            .unwrap();
        let mut l = String::new();
        mapped.read_line(&mut l).unwrap();
        assert_eq!(
            l.trim(),
            old_hashes,
            "the open, mmapped v0 file after {what}: (pread, mmap, size)"
        );
    };

    // A new version.
    write_file(&src.join("data.bin"), &new_data);
    write_file(&src.join("a.txt"), b"new\n");
    assert_eq!(log(&s, "m", &src), "m:v1");
    let took = wait_until(
        "a version logged by the CLI shows in the mount",
        COHERENCE,
        || {
            let listed = names(&m.path("m"));
            let link = fs::read_link(m.path("m/latest")).map_err(|e| e.to_string())?;
            let a = fs::read(m.path("m/latest/a.txt")).map_err(|e| e.to_string())?;
            if listed.contains("v1")
                && link == Path::new("v1")
                && a == b"new\n"
                && m.path("m/v1").is_dir()
            {
                Ok(())
            } else {
                Err(format!(
                    "listing {listed:?}, latest -> {link:?}, latest/a.txt {a:?}"
                ))
            }
        },
    );
    eprintln!("new version visible after {took:?}");
    assert!(
        fs::read(m.path("m/latest/data.bin")).unwrap() == new_data,
        "m/latest/data.bin is v1's"
    );
    ask("a new version");

    // An alias set, then moved.
    s.ok(&["alias", "set", "m:v0", "best"]);
    wait_until(
        "an alias set by the CLI shows in the mount",
        COHERENCE,
        || match fs::read_link(m.path("m/best")) {
            Ok(t) if t == Path::new("v0") && names(&m.path("m")).contains("best") => Ok(()),
            other => Err(format!("m/best: {other:?}")),
        },
    );
    assert_eq!(fs::read(m.path("m/best/a.txt")).unwrap(), b"old\n");
    s.ok(&["alias", "set", "m:v1", "best"]);
    wait_until(
        "an alias moved by the CLI shows in the mount",
        COHERENCE,
        || match (
            fs::read_link(m.path("m/best")),
            fs::read(m.path("m/best/a.txt")),
        ) {
            (Ok(t), Ok(a)) if t == Path::new("v1") && a == b"new\n" => Ok(()),
            other => Err(format!("m/best: {other:?}")),
        },
    );
    ask("an alias moved");

    // A new artifact and a new draft.
    log(&s, "other", &src);
    s.ok(&["draft", "new", "m"]);
    wait_until(
        "a new artifact and a new draft show in the mount",
        COHERENCE,
        || {
            let (root, drafts) = (names(&m.mp), names(&m.path("drafts")));
            if root.contains("other")
                && drafts.contains("m")
                && m.path("other/latest/a.txt").is_file()
            {
                Ok(())
            } else {
                Err(format!("root {root:?}, drafts {drafts:?}"))
            }
        },
    );

    // The old version deleted (and its blobs collected): gone from the mount, while what
    // was opened from it keeps reading the same bytes.
    s.ok(&["delete", "m:v0"]);
    wait_until(
        "a version deleted by the CLI disappears from the mount",
        COHERENCE,
        || {
            let listed = names(&m.path("m"));
            let stat = errno_of(fs::metadata(m.path("m/v0")));
            let file = errno_of(fs::metadata(m.path("m/v0/a.txt")));
            if !listed.contains("v0") && stat == Some(libc::ENOENT) && file == Some(libc::ENOENT) {
                Ok(())
            } else {
                Err(format!(
                    "listing {listed:?}, stat m/v0: {stat:?}, stat m/v0/a.txt: {file:?}"
                ))
            }
        },
    );
    ask("the version was deleted");
    s.ok(&["gc"]);
    ask("gc");
    let mut a = String::new();
    held.read_to_string(&mut a).unwrap();
    assert_eq!(a, "old\n", "a file held open from the deleted version");
    drop(mapper.stdin.take());
    assert!(mapper.wait().unwrap().success());
    assert!(fs::read(m.path("m/latest/data.bin")).unwrap() == new_data);
}

// ----- other ways of mounting -----

#[test]
fn an_unprivileged_user_mounts_through_fusermount3() {
    require_fuse();
    require_fusermount3();
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "a\n"), ("d/b.txt", "bee\n")]);
    let big = pseudo_random(1024 * 1024 + 3, 20);
    write_file(&src.join("d/big.bin"), &big);
    log(&s, "m", &src);
    s.hand_store_to(NOBODY);
    let mp = mountpoint(&s);
    chown_tree(&mp, NOBODY);

    let m = Mounted::new_as(&s, &mp, NOBODY);
    let as_nobody = |program: &str, args: &[&OsStr], cwd: &Path| {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(cwd)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = run_command(cmd);
        assert!(
            out.status.success(),
            "{program} {args:?} as uid {NOBODY} in {}: {}",
            cwd.display(),
            stderr(&out)
        );
        stdout(&out)
    };
    let latest = m.path("m/latest");
    let sums = as_nobody(
        "sha256sum",
        &[os("a.txt"), os("d/b.txt"), os("d/big.bin")],
        &latest,
    );
    let want: String = ["a.txt", "d/b.txt", "d/big.bin"]
        .iter()
        .map(|r| format!("{}  {r}\n", sha256_hex(&fs::read(src.join(r)).unwrap())))
        .collect();
    assert_eq!(sums, want, "sha256sum as the mounting user");
    assert_eq!(as_nobody("cat", &[os("d/b.txt")], &latest), "bee\n");
    assert_eq!(
        as_nobody(
            "stat",
            &[os("-c"), os("%u %g %a %h"), os("a.txt"), os("d")],
            &latest
        ),
        format!("{NOBODY} {NOBODY} 444 1\n{NOBODY} {NOBODY} 555 2\n"),
        "owner, mode and links as the mounting user sees them"
    );
    assert_eq!(as_nobody("ls", &[os("-1A")], &m.mp), "drafts\nm\n");
    // Changes are EROFS for a regular user too, as on a read-only filesystem (the kernel must
    // not answer EACCES from the permission bits first); access(2) follows the bits shown.
    let script = r#"
import errno, os, sys
def code(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
print(code(lambda: os.open("a.txt", os.O_WRONLY)),
      code(lambda: os.open("new.txt", os.O_WRONLY | os.O_CREAT, 0o644)),
      code(lambda: os.mkdir("newdir")),
      code(lambda: os.unlink("a.txt")),
      code(lambda: os.chmod("a.txt", 0o644)),
      os.access("a.txt", os.R_OK), os.access("a.txt", os.W_OK), os.access("a.txt", os.X_OK),
      os.access("d", os.X_OK))
"#;
    assert_eq!(
        as_nobody("python3", &[os("-c"), os(script)], &latest).trim(),
        "EROFS EROFS EROFS EROFS EROFS True False False True",
        "changes and access(2) as the mounting user"
    );
    let log = m.log();
    assert!(
        log.contains("kernel passthrough off"),
        "an unprivileged mount cannot use passthrough and should log so; mount.log:\n{log}"
    );

    let out = m.umount();
    assert_success(&out, &["umount (as nobody)", p(&m.mp)]);
    assert!(
        !is_mounted(&m.mp),
        "still mounted after umount as uid {NOBODY}"
    );
}

#[test]
fn foreground_mount_stays_attached_until_umount() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "fg\n")]);
    log(&s, "m", &src);
    let mut m = Mounted::foreground(&s, &mountpoint(&s));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        m.foreground_running(),
        "mount --foreground returned instead of serving"
    );
    assert_eq!(
        fs::read_to_string(m.path("m/latest/a.txt")).unwrap(),
        "fg\n"
    );
    assert!(
        m.log().contains("kernel passthrough on"),
        "a root mount on this kernel should use passthrough; mount.log:\n{}",
        m.log()
    );
    let out = m.umount();
    assert_success(&out, &["umount", p(&m.mp)]);
    assert!(!is_mounted(&m.mp));
    let status = m.wait_foreground(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(0),
        "mount --foreground after umount: {status}"
    );
}

/// A mount whose server was killed is detected when mounting again, detached, and replaced.
#[test]
fn a_stale_mount_is_replaced_by_the_next_mount() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let mp = mountpoint(&s);
    let first = Mounted::new(&s, &mp);
    let pid = first.server_pid();
    // SAFETY: signalling a process we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match fs::metadata(&mp) {
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => break,
            _ if Instant::now() > deadline => panic!("mount at {} did not go stale", mp.display()),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    std::mem::forget(first); // its server is gone; the new mount's guard unmounts
    let out = s.run(&[OsStr::new("mount"), mp.as_os_str()]);
    assert_success(&out, &["mount over a stale mount"]);
    assert!(
        stderr(&out).contains("stale"),
        "the replacement should be reported: {}",
        stderr(&out)
    );
    let second = Mounted::adopt(&s, &mp);
    assert_eq!(fs::read(second.path("m/latest/a.txt")).unwrap(), b"alpha");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = format!(" {} ", mp.display());
    assert_eq!(
        mounts.lines().filter(|l| l.contains(&here)).count(),
        1,
        "exactly one mount left at {}:\n{mounts}",
        mp.display()
    );
}

/// Names read from an open directory stream, from where it stands to its end.
fn read_stream(dir: *mut libc::DIR) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    loop {
        // SAFETY: `dir` is an open stream; readdir returns null at the end.
        let ent = unsafe { libc::readdir(dir) };
        if ent.is_null() {
            return names;
        }
        // SAFETY: d_name is NUL-terminated within the dirent readdir returned.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        names.insert(name.to_string_lossy().into_owned());
    }
}

/// rewinddir on a directory the CLI changes (the root, an artifact) shows it as it is now.
#[test]
fn rewinddir_shows_what_the_cli_changed() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    for (dir, change, appears) in [
        (
            "",
            vec!["log", "newart", p(&src), "--type", "dataset"],
            "newart",
        ),
        ("m", vec!["alias", "set", "m:v0", "best"], "best"),
    ] {
        let path = std::ffi::CString::new(m.path(dir).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid path; the stream is closed below.
        let stream = unsafe { libc::opendir(path.as_ptr()) };
        assert!(!stream.is_null(), "opendir /{dir}");
        let before = read_stream(stream);
        assert!(
            !before.contains(appears),
            "/{dir} already lists {appears}: {before:?}"
        );
        s.ok(&change);
        let deadline = Instant::now() + Duration::from_millis(1500);
        let after = loop {
            // SAFETY: the stream is open.
            unsafe { libc::rewinddir(stream) };
            let names = read_stream(stream);
            if names.contains(appears) || Instant::now() > deadline {
                break names;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // SAFETY: closing the stream opened above.
        unsafe { libc::closedir(stream) };
        assert!(
            after.contains(appears) && after.is_superset(&before),
            "after rewinddir /{dir} should list {appears} too: {after:?}"
        );
    }
}

/// A draft's file changed by the CLI reads with its new content through the mount.
#[test]
fn a_draft_file_changed_by_the_cli_reads_anew() {
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "first")]);
    log(&s, "m", &src);
    s.ok(&["draft", "new", "m"]);
    let m = Mounted::new(&s, &mountpoint(&s));
    let file = m.path("drafts/m/a.txt");
    assert_eq!(fs::read(&file).unwrap(), b"first");
    let newer = s.tree("newer", &[("a.txt", "second, longer")]);
    s.ok(&["draft", "add", "m", p(&newer.join("a.txt"))]);
    let deadline = Instant::now() + Duration::from_millis(1500);
    loop {
        let got = fs::read(&file).unwrap();
        if got == b"second, longer" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drafts/m/a.txt still reads {:?}",
            String::from_utf8_lossy(&got)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Several `mount`s of one mount point at the same moment: one mounts, the others are refused,
/// and exactly one mount is there afterwards (none stacked on another).
#[test]
fn concurrent_mounts_of_one_mount_point_do_not_stack() {
    require_fuse();
    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "alpha")]);
    log(&s, "m", &src);
    let mp = mountpoint(&s);
    let children: Vec<_> = (0..4)
        .map(|_| {
            s.command(&[OsStr::new("mount"), mp.as_os_str()])
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let guard = if ok > 0 {
        Some(Mounted::adopt(&s, &mp))
    } else {
        None
    };
    assert_eq!(ok, 1, "exactly one mount should succeed: {outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(
            stderr(o).contains("something is mounted there already"),
            "refusal should say so: {}",
            stderr(o)
        );
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let here = format!(" {} ", fs::canonicalize(&mp).unwrap().display());
    assert_eq!(
        mounts.lines().filter(|l| l.contains(&here)).count(),
        1,
        "{mounts}"
    );
    drop(guard);
}

/// Files of a directory too big to hold in memory (over 16,384 entries) get inode slots.
/// Past its limit of those (here 1,000), the server asks the kernel to drop the oldest names,
/// so its memory stays bounded however many files are walked; listings and contents stay
/// exactly right while names come and go.
#[test]
fn walking_more_files_than_the_inode_cache_holds_evicts_and_stays_correct() {
    let s = TestStore::new();
    let src = s.path("src");
    let mut expected = BTreeMap::new();
    for f in 0..17_000 {
        let rel = format!("big/f{f:05}.txt");
        let body = format!("{f}\n");
        write_file(&src.join(&rel), body.as_bytes());
        expected.insert(rel, body);
    }
    for f in 0..500 {
        let rel = format!("small/f{f:03}.txt");
        let body = format!("small {f}\n");
        write_file(&src.join(&rel), body.as_bytes());
        expected.insert(rel, body);
    }
    log(&s, "many", &src);
    let mp = mountpoint(&s);
    let mut cmd = s.command(&[os("mount"), mp.as_os_str()]);
    cmd.env("ARTIFACTFS_MAX_CACHED_ENTRIES", "1000")
        .env("RUST_LOG", "info,artifactfs::mount=debug");
    assert_success(&run_command(cmd), &["mount"]);
    let m = Mounted::adopt(&s, &mp);
    let root = m.path("many/v0");

    let listing = |dir: &Path| tool_ok("ls", &[os("-lRn"), dir.as_os_str()], None);
    let first = listing(&root);
    let mut seen = 0;
    for (rel, body) in &expected {
        assert_eq!(&fs::read_to_string(root.join(rel)).unwrap(), body, "{rel}");
        seen += 1;
    }
    assert_eq!(seen, 17_500);
    // Give the server's eviction thread a round, then walk everything again.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        listing(&root),
        first,
        "a second ls -lR differs from the first"
    );
    for (rel, body) in &expected {
        assert_eq!(&fs::read_to_string(root.join(rel)).unwrap(), body, "{rel}");
    }
    let asked: usize = m
        .log()
        .lines()
        .filter_map(|l| l.split("asking the kernel to drop ").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        asked >= 15_000,
        "walking 17,000 files with room for 1,000 asked the kernel to drop {asked} names"
    );
}

/// Inode numbers as `find`, `du`, `tar` and rsync's hard-link detection rely on them: every
/// path of a version has its own (also where two versions share a subtree), a listing reports
/// the number `stat` does, and a number stays the same while the kernel keeps the name; after
/// the kernel has dropped its names, the numbers are still unique and agree.
#[test]
fn inode_numbers_are_unique_per_path_and_stable() {
    let s = TestStore::new();
    let src = s.path("src");
    for d in 0..3 {
        for f in 0..50 {
            write_file(
                &src.join(format!("d{d}/f{f:02}")),
                format!("{d}{f}").as_bytes(),
            );
        }
    }
    symlink("d0/f00", src.join("link")).unwrap();
    log(&s, "ino", &src);
    write_file(&src.join("d2/f00"), b"changed");
    log(&s, "ino", &src);
    let m = Mounted::new(&s, &mountpoint(&s));
    let script = r#"
import os, sys, json
out = {}
for version in sys.argv[1:]:
    for top, dirs, files in os.walk(version):
        for e in os.scandir(top):
            out[e.path] = [e.inode(), os.lstat(e.path).st_ino]
print(json.dumps(out))
"#;
    let (v0, v1) = (m.path("ino/v0"), m.path("ino/v1"));
    let walk = || -> BTreeMap<String, (u64, u64)> {
        let out = python_ok(script, &[v0.as_os_str(), v1.as_os_str()]);
        serde_json::from_str::<BTreeMap<String, (u64, u64)>>(&out).unwrap()
    };
    let check = |walked: &BTreeMap<String, (u64, u64)>| {
        assert_eq!(walked.len(), 2 * (3 + 3 * 50 + 1), "{walked:?}");
        for (path, (listed, stat)) in walked {
            assert_eq!(listed, stat, "{path}: readdir and stat disagree");
        }
        let distinct: BTreeSet<u64> = walked.values().map(|(_, st)| *st).collect();
        assert_eq!(
            distinct.len(),
            walked.len(),
            "two paths share an inode number"
        );
    };
    let first = walk();
    check(&first);
    assert_eq!(walk(), first, "inode numbers changed between two walks");
    fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
    check(&walk());
}

/// A mount hides what its directory holds, so a mount point with files is refused (naming
/// them) unless `--nonempty` or `-o nonempty` asks for it; `mount` says where it mounted what.
#[test]
fn mounting_over_files_needs_nonempty_and_mount_says_what_it_mounted_where() {
    require_fuse();
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a.txt", "a")]));
    let mp = fs::canonicalize(mountpoint(&s)).unwrap();
    write_file(&mp.join("notes.txt"), b"mine");
    let store = fs::canonicalize(&s.root).unwrap();
    for fg in [false, true] {
        let mut args = vec![os("mount"), mp.as_os_str()];
        if fg {
            args.push(os("--foreground"));
        }
        let err = s.fail(&args);
        assert_eq!(
            err.trim(),
            format!(
                "error: mount point {}: the directory is not empty (notes.txt): the mount would hide its \
                 files until unmounted; use an empty directory, or --nonempty (-o nonempty \
                 with mount -t) to mount over them",
                mp.display()
            )
        );
        assert!(!is_mounted(&mp));
    }
    // Through mount(8)'s helper too, where -o nonempty is the way to ask.
    let helper = s.path("bin/mount.fuse.artifactfs");
    fs::create_dir_all(helper.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(common::BIN, &helper).unwrap();
    let out = run_tool(p(&helper), &[s.root.as_os_str(), mp.as_os_str()], None);
    assert_eq!(out.status.code(), Some(32), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not empty (notes.txt)"));
    assert!(!is_mounted(&mp));
    let out = run_tool(
        p(&helper),
        &[
            s.root.as_os_str(),
            mp.as_os_str(),
            os("-o"),
            os("rw,nonempty"),
        ],
        None,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(fs::read_to_string(m.path("m/v0/a.txt")).unwrap(), "a");
    drop(m);
    assert_eq!(
        fs::read_to_string(mp.join("notes.txt")).unwrap(),
        "mine",
        "back once unmounted"
    );

    let out = s.ok(&[os("mount"), mp.as_os_str(), os("--nonempty")]);
    let m = Mounted::adopt(&s, &mp);
    assert_eq!(
        out,
        format!(
            "mounted store {} at {}; unmount with `artifactfs umount {}`\n",
            store.display(),
            mp.display(),
            mp.display()
        )
    );
    assert!(!m.path("notes.txt").exists(), "hidden while mounted");
    drop(m);
    fs::remove_file(mp.join("notes.txt")).unwrap();
    let v = s.json(&[os("mount"), mp.as_os_str()]);
    let _m = Mounted::adopt(&s, &mp);
    assert_eq!(
        v,
        serde_json::json!({"store": p(&store), "mountpoint": p(&mp)})
    );
}

/// The mount's type is fuse.artifactfs, so the usual tools find it by type.
#[test]
fn the_mount_shows_as_fuse_artifactfs_to_findmnt_and_df() {
    require_fuse();
    let s = TestStore::new();
    log(&s, "m", &s.tree("src", &[("a.txt", "a")]));
    let mp = fs::canonicalize(mountpoint(&s)).unwrap();
    let _m = Mounted::new(&s, &mp);
    let store = fs::canonicalize(&s.root).unwrap();
    assert_eq!(
        mounts_at(&mp),
        [("fuse.artifactfs".to_string(), p(&store).to_string())]
    );
    let found = tool_ok(
        "findmnt",
        &[
            os("-n"),
            os("-t"),
            os("fuse.artifactfs"),
            os("-o"),
            os("TARGET,SOURCE"),
        ],
        None,
    );
    assert!(
        found
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == [p(&mp), p(&store)]),
        "{found}"
    );
    let df = tool_ok(
        "df",
        &[os("-t"), os("fuse.artifactfs"), mp.as_os_str()],
        None,
    );
    assert!(df.lines().any(|l| l.ends_with(p(&mp))), "{df}");
}
