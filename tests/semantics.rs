//! docs/SEMANTICS.md, "Operations by area" and "Operations by another user": the tables of what
//! each filesystem operation does in each area of the mount, for root (who mounted) and for an
//! unprivileged user, are read out of the document and every cell is checked against a real
//! mount. An operation or area a table names that this file cannot perform, or one it can
//! that the table lacks, fails the test, so the document and the test cannot drift apart.
//! Every mismatching cell is reported at once. Mounted for real; this test fails, never skips.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};

use common::mount::*;
use common::*;

/// The subsections holding the tables, each with the user its cells run as (None: root, who
/// mounted), and the section they belong in.
const TABLES: &[(&str, Option<u32>)] = &[
    ("### Operations by area", None),
    ("### Operations by another user", Some(NOBODY)),
];
const SECTION: &str = "## The mount";

/// Each area the table may have as a column: its header, its path in the mount, and whether
/// operations that make a name make it inside (a directory) or at the path itself.
const AREAS: &[(&str, &str, bool)] = &[
    ("`/`", "", true),
    ("`mnist/`", "mnist", true),
    ("`mnist/latest`", "mnist/latest", false),
    ("`mnist/v0/`", "mnist/v0", true),
    ("`mnist/v0/a.txt`", "mnist/v0/a.txt", false),
    ("`drafts/`", "drafts", true),
    ("`drafts/mnist/`", "drafts/mnist", true),
    ("`drafts/mnist/a.txt`", "drafts/mnist/a.txt", false),
    ("`drafts/mnist/.commit`", "drafts/mnist/.commit", false),
];

/// Each operation the table may have as a row, as Python run with: `p` the area's path,
/// `is_dir`, `made` (`p/new` in a directory, else `p`), `beside` (`new` next to `p`),
/// `DRAFT_FILE` (`drafts/mnist/a.txt`), `OTHER` (another draft) and `OTHER_FILE` (a file in it),
/// and the helpers `with_fd(path, flags, f)` and `access(path, mode)` (see RUNNER).
const OPERATIONS: &[(&str, &str)] = &[
    ("stat", "os.lstat(p)"),
    ("readdir", "os.listdir(p)"),
    ("readlink", "os.readlink(p)"),
    ("open for reading", "os.close(os.open(p, os.O_RDONLY))"),
    (
        "read",
        "with_fd(p, os.O_RDONLY, lambda fd: os.read(fd, 4096))",
    ),
    ("open for writing", "os.close(os.open(p, os.O_WRONLY))"),
    (
        "write",
        "with_fd(p, os.O_WRONLY, lambda fd: os.write(fd, b'x\\n'))",
    ),
    (
        "create a file",
        "os.close(os.open(made, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))",
    ),
    ("mkdir", "os.mkdir(made)"),
    ("rmdir", "os.rmdir(p)"),
    ("unlink", "os.unlink(p)"),
    ("rename", "os.rename(p, beside)"),
    (
        "rename into",
        "os.rename(OTHER_FILE, os.path.join(p, 'b.txt') if is_dir else p)",
    ),
    ("rename out", "os.rename(p, os.path.join(OTHER, 'moved'))"),
    ("symlink", "os.symlink('a.txt', made)"),
    (
        "hard link",
        "os.link(DRAFT_FILE, made) if is_dir else os.link(p, beside)",
    ),
    ("mkfifo", "os.mkfifo(made)"),
    ("mknod of a file", "os.mknod(made, 0o644 | stat.S_IFREG)"),
    ("chmod", "os.chmod(p, 0o700)"),
    (
        "chown to the owner",
        "os.chown(p, os.getuid(), os.getgid(), follow_symlinks=False)",
    ),
    (
        "chown to another user",
        "os.chown(p, 1000, 1000, follow_symlinks=False)",
    ),
    ("set times", "os.utime(p, ns=(1, 1), follow_symlinks=False)"),
    ("truncate to 0", "os.truncate(p, 0)"),
    ("truncate to 5", "os.truncate(p, 5)"),
    (
        "getxattr of a missing name",
        "os.getxattr(p, 'user.missing', follow_symlinks=False)",
    ),
    (
        "setxattr",
        "os.setxattr(p, 'user.test', b'1', follow_symlinks=False)",
    ),
    (
        "removexattr",
        "os.removexattr(p, 'user.test', follow_symlinks=False)",
    ),
    ("listxattr", "os.listxattr(p, follow_symlinks=False)"),
    (
        "fallocate",
        "with_fd(p, os.O_RDWR, lambda fd: os.posix_fallocate(fd, 0, 4096))",
    ),
    ("statfs", "os.statvfs(p)"),
    ("access for writing", "access(p, os.W_OK)"),
];

/// Runs every cell in one Python process: before each, the drafts are put back as they were
/// (through the mount, as root: emptied, removed, made again), so no cell sees another's
/// changes. A cell with a `uid` runs in a child process as that user (and group). Prints one
/// result per cell, 0 for success or the errno.
const RUNNER: &str = r#"
import ctypes, json, os, shutil, stat, sys

mp, cells_path = sys.argv[1], sys.argv[2]
libc = ctypes.CDLL(None, use_errno=True)
DRAFTS = os.path.join(mp, 'drafts')
DRAFT_FILE = os.path.join(DRAFTS, 'mnist', 'a.txt')
OTHER = os.path.join(DRAFTS, 'other')
OTHER_FILE = os.path.join(OTHER, 'b.txt')

def with_fd(path, flags, f):
    fd = os.open(path, flags)
    try:
        f(fd)
    finally:
        os.close(fd)

def access(path, mode):
    if libc.access(os.fsencode(path), mode) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)

def reset():
    for draft in os.listdir(DRAFTS):
        top = os.path.join(DRAFTS, draft)
        for name in os.listdir(top):
            q = os.path.join(top, name)
            if os.path.isdir(q) and not os.path.islink(q):
                shutil.rmtree(q)
            else:
                os.unlink(q)
        os.rmdir(top)
    os.mkdir(os.path.join(DRAFTS, 'mnist'))
    os.mkdir(OTHER)
    with open(OTHER_FILE, 'w') as f:
        f.write('b\n')

with open(cells_path) as f:
    cells = json.load(f)
results = []
for cell in cells:
    reset()
    p, is_dir = cell['path'], cell['dir']
    env = {
        'os': os, 'stat': stat, 'with_fd': with_fd, 'access': access,
        'p': p, 'is_dir': is_dir,
        'made': os.path.join(p, 'new') if is_dir else p,
        'beside': os.path.join(os.path.dirname(p), 'new'),
        'DRAFT_FILE': DRAFT_FILE, 'OTHER': OTHER, 'OTHER_FILE': OTHER_FILE,
    }
    uid = cell.get('uid')
    if uid is None:
        try:
            exec(cell['code'], env)
            results.append(0)
        except OSError as e:
            results.append(e.errno)
        continue
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            exec(cell['code'], env)
        except OSError as e:
            code = e.errno
        except BaseException:
            code = 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append(os.waitstatus_to_exitcode(status))
reset()
print(json.dumps(results))
"#;

/// The errno names a cell may hold.
const ERRNOS: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("ENOENT", libc::ENOENT),
    ("EIO", libc::EIO),
    ("EBADF", libc::EBADF),
    ("EACCES", libc::EACCES),
    ("EBUSY", libc::EBUSY),
    ("EEXIST", libc::EEXIST),
    ("EXDEV", libc::EXDEV),
    ("ENOTDIR", libc::ENOTDIR),
    ("EISDIR", libc::EISDIR),
    ("EINVAL", libc::EINVAL),
    ("ETXTBSY", libc::ETXTBSY),
    ("EFBIG", libc::EFBIG),
    ("ENOSPC", libc::ENOSPC),
    ("EROFS", libc::EROFS),
    ("EMLINK", libc::EMLINK),
    ("ERANGE", libc::ERANGE),
    ("ENAMETOOLONG", libc::ENAMETOOLONG),
    ("ENOSYS", libc::ENOSYS),
    ("ENOTEMPTY", libc::ENOTEMPTY),
    ("ELOOP", libc::ELOOP),
    ("ENODATA", libc::ENODATA),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("ENOTTY", libc::ENOTTY),
    ("ENOTCONN", libc::ENOTCONN),
];

fn errno_name(e: i32) -> String {
    if e == 0 {
        return "ok".into();
    }
    ERRNOS
        .iter()
        .find(|(_, v)| *v == e)
        .map(|(n, _)| n.to_string())
        .unwrap_or_else(|| format!("errno {e}"))
}

/// One row of the table: the operation and, per area, the documented outcome (0 for `ok`).
struct Row {
    operation: String,
    cells: Vec<i32>,
}

/// The table under `heading`: its areas and rows. Every problem (a malformed table, an unknown
/// operation, area or errno, an operation or area of this file that the table lacks) is
/// collected, and the test fails listing them all.
fn parse_table(doc: &str, heading: &str) -> (Vec<String>, Vec<Row>) {
    let lines: Vec<&str> = doc.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_end() == heading)
        .unwrap_or_else(|| panic!("docs/SEMANTICS.md has no subsection {heading:?}"));
    let section = lines[..at]
        .iter()
        .rev()
        .find(|l| l.starts_with("## "))
        .map(|l| l.trim_end());
    assert_eq!(
        section,
        Some(SECTION),
        "{heading:?} should be inside {SECTION:?}"
    );
    let table: Vec<&str> = lines[at + 1..]
        .iter()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .copied()
        .collect();
    assert!(
        table.len() > 2,
        "no table (a header, a separator and rows) under {heading:?}"
    );
    let split = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };

    let mut problems = Vec::new();
    let header = split(table[0]);
    if header[0] != "operation" {
        problems.push(format!(
            "the first header cell should be \"operation\", not {:?}",
            header[0]
        ));
    }
    let areas: Vec<String> = header[1..].to_vec();
    for a in &areas {
        if !AREAS.iter().any(|(h, _, _)| h == a) {
            problems.push(format!(
                "area {a:?}: this test does not know where that is (add it to AREAS)"
            ));
        }
    }
    for (h, _, _) in AREAS {
        if !areas.iter().any(|a| a == h) {
            problems.push(format!("area {h:?} is missing from the table"));
        }
    }
    if !split(table[1])
        .iter()
        .all(|c| !c.is_empty() && c.chars().all(|ch| ch == '-' || ch == ':'))
    {
        problems.push(format!(
            "the second line should separate the header: {:?}",
            table[1]
        ));
    }

    let mut rows = Vec::new();
    let mut seen = BTreeSet::new();
    for line in &table[2..] {
        let cells = split(line);
        let operation = cells[0].clone();
        if !seen.insert(operation.clone()) {
            problems.push(format!("operation {operation:?} has two rows"));
        }
        if !OPERATIONS.iter().any(|(o, _)| *o == operation) {
            problems.push(format!(
                "operation {operation:?}: this test has no code for it (add it to OPERATIONS)"
            ));
        }
        if cells.len() != header.len() {
            problems.push(format!(
                "operation {operation:?} has {} cells for {} columns",
                cells.len(),
                header.len()
            ));
            continue;
        }
        let mut expected = Vec::new();
        for (area, cell) in areas.iter().zip(&cells[1..]) {
            // The outcome is the cell's first word; a note or footnote mark may follow.
            let word: String = cell
                .replace('`', "")
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            match word.as_str() {
                "ok" => expected.push(0),
                w => match ERRNOS.iter().find(|(n, _)| *n == w) {
                    Some((_, e)) => expected.push(*e),
                    None => {
                        problems.push(format!(
                            "{operation} on {area}: {cell:?} is neither ok nor a known errno name"
                        ));
                        expected.push(-1);
                    }
                },
            }
        }
        rows.push(Row {
            operation,
            cells: expected,
        });
    }
    for (o, _) in OPERATIONS {
        if !seen.contains(*o) {
            problems.push(format!("operation {o:?} is missing from the table"));
        }
    }
    assert!(
        problems.is_empty(),
        "the table under {heading:?} in docs/SEMANTICS.md and tests/semantics.rs disagree:\n{}",
        problems.join("\n")
    );
    (areas, rows)
}

fn mountpoint(s: &TestStore) -> PathBuf {
    let mp = s.path("mnt");
    fs::create_dir_all(&mp).unwrap();
    mp
}

#[test]
fn every_cell_of_the_operations_tables_is_what_the_mount_does() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/SEMANTICS.md");
    let doc = fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", doc_path.display()));
    let tables: Vec<_> = TABLES
        .iter()
        .map(|(heading, uid)| (*heading, *uid, parse_table(&doc, heading)))
        .collect();

    let s = TestStore::new();
    let src = s.tree("src", &[("a.txt", "a\n")]);
    log(&s, "mnist", &src);
    s.open_scratch_to_others();
    let m = Mounted::new(&s, &mountpoint(&s));

    let area = |header: &str| AREAS.iter().find(|(h, _, _)| *h == header).unwrap();
    let mut cells = Vec::new();
    for (_, uid, (areas, rows)) in &tables {
        for row in rows {
            let code = OPERATIONS
                .iter()
                .find(|(o, _)| *o == row.operation)
                .unwrap()
                .1;
            for header in areas {
                let (_, rel, dir) = area(header);
                cells.push(serde_json::json!({
                    "path": m.path(rel),
                    "dir": dir,
                    "code": code,
                    "uid": uid,
                }));
            }
        }
    }
    let cells_file = s.path("cells.json");
    fs::write(&cells_file, serde_json::Value::Array(cells).to_string()).unwrap();
    let out = python_ok(RUNNER, &[m.mp.as_os_str(), OsStr::new(&cells_file)]);
    let actual: Vec<i32> = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("the runner printed no list of results ({e}):\n{out}"));
    let total: usize = tables.iter().map(|(_, _, (a, r))| a.len() * r.len()).sum();
    assert_eq!(actual.len(), total, "results per cell");

    let mut wrong = Vec::new();
    let mut next = actual.into_iter();
    for (heading, _, (areas, rows)) in &tables {
        for row in rows {
            for (a, header) in areas.iter().enumerate() {
                let (want, got) = (row.cells[a], next.next().expect("counted above"));
                if want != got {
                    wrong.push(format!(
                        "{:<30} {:<28} {:<24} documented {:<10} actual {}",
                        heading.trim_start_matches("### "),
                        row.operation,
                        header,
                        errno_name(want),
                        errno_name(got)
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {total} cells of the tables in docs/SEMANTICS.md differ from the mount:\n{}\n\
         mount.log:\n{}",
        wrong.len(),
        wrong.join("\n"),
        tail(&m.log(), 2000)
    );

    // Nothing outside drafts/ changed along the way.
    assert_eq!(versions(&s, "mnist"), ["v0"]);
    assert_eq!(fs::read(m.path("mnist/v0/a.txt")).unwrap(), b"a\n");
    assert_eq!(
        fs::read_link(m.path("mnist/latest")).unwrap(),
        Path::new("v0")
    );
}
