//! `--json` output against its documentation. The examples of docs/JSON.md are replayed in
//! order on a new store: each command's real output must equal its example (times and reflink
//! counts aside) and have exactly the keys, with the types, that the page's tables give. Also:
//! the exit statuses of docs/SEMANTICS.md, errors under `--json`, paths that are not UTF-8,
//! and `ls --json` at any length.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;

use common::*;
use serde_json::{Value, json};

const JSON_DOC: &str = include_str!("../docs/JSON.md");
const SEMANTICS: &str = include_str!("../docs/SEMANTICS.md");
const README: &str = include_str!("../README.md");

/// The heading of the section whose table every version-printing command shares, and the
/// link by which a section says it prints such a version.
const VERSION_SECTION: &str = "The version object";
const VERSION_LINK: &str = "](#the-version-object)";

/// Every command that prints JSON; each must have an example on the page.
const JSON_COMMANDS: &[&str] = &[
    "init",
    "log",
    "draft new",
    "draft add",
    "draft rm",
    "draft status",
    "draft list",
    "draft discard",
    "draft commit",
    "upsert",
    "finish",
    "list",
    "list NAME",
    "show",
    "ls",
    "diff",
    "get",
    "alias set",
    "alias rm",
    "delete",
    "verify",
    "gc",
    "run begin",
    "run end",
    "runs",
    "run show",
    "lineage",
];

const TYPES: &[&str] = &[
    "string",
    "integer",
    "boolean",
    "object",
    "array of strings",
    "array of objects",
];

/// A heading of docs/JSON.md and what follows it up to the next heading.
#[derive(Default)]
struct Section {
    heading: String,
    text: String,
    examples: Vec<Example>,
    table: Vec<Row>,
}

/// A ```sh block holding one `artifactfs --json …` command, and the ```json block after it.
struct Example {
    command: String,
    output: Value,
}

/// A row of a key table: `| `key` | type | null? | meaning |`.
#[derive(Clone)]
struct Row {
    key: String,
    ty: String,
    nullable: bool,
}

fn parse_doc(doc: &str) -> Vec<Section> {
    let mut sections = vec![Section::default()];
    let mut lines = doc.lines();
    // The command of the ```sh block just closed, while only blank lines follow it.
    let mut pending: Option<String> = None;
    while let Some(line) = lines.next() {
        if let Some(lang) = line.strip_prefix("```") {
            let lang = lang.trim().to_string();
            let body: Vec<&str> = lines
                .by_ref()
                .take_while(|l| !l.starts_with("```"))
                .collect();
            let sec = sections.last_mut().unwrap();
            match lang.as_str() {
                "sh" => {
                    pending = match body.as_slice() {
                        [cmd] if cmd.starts_with("artifactfs --json ") => Some(cmd.to_string()),
                        _ => None,
                    };
                    continue;
                }
                "json" => {
                    let command = pending.take().unwrap_or_else(|| {
                        panic!(
                            "docs/JSON.md, section {:?}: a ```json block must follow a ```sh \
                             block holding the one command that prints it",
                            sec.heading
                        )
                    });
                    let output = serde_json::from_str(&body.join("\n")).unwrap_or_else(|e| {
                        panic!("docs/JSON.md: the example of `{command}` is not JSON: {e}")
                    });
                    sec.examples.push(Example { command, output });
                }
                _ => {}
            }
            pending = None;
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        pending = None;
        if line.starts_with("## ") || line.starts_with("### ") {
            sections.push(Section {
                heading: line.trim_start_matches('#').trim().to_string(),
                ..Section::default()
            });
            continue;
        }
        let sec = sections.last_mut().unwrap();
        sec.text.push_str(line);
        sec.text.push('\n');
        if line.starts_with("| `") {
            sec.table.push(parse_row(line));
        }
    }
    sections
}

fn parse_row(line: &str) -> Row {
    let cells: Vec<&str> = line.split('|').map(str::trim).collect();
    assert!(
        cells.len() >= 6,
        "docs/JSON.md: a key row needs 4 cells: {line}"
    );
    let ty = cells[2].to_string();
    assert!(
        TYPES.contains(&ty.as_str()),
        "docs/JSON.md: unknown type {ty:?} in {line} (one of {TYPES:?})"
    );
    let nullable = match cells[3] {
        "yes" => true,
        "no" => false,
        other => panic!("docs/JSON.md: null? must be yes or no, not {other:?}: {line}"),
    };
    Row {
        key: cells[1].trim_matches('`').to_string(),
        ty,
        nullable,
    }
}

/// Splits a command line as a shell would for these examples: words, '…' and "…".
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = None;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.get_or_insert_default().push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.get_or_insert_default();
            }
            None if c.is_whitespace() => words.extend(word.take()),
            None => word.get_or_insert_default().push(c),
        }
    }
    assert!(quote.is_none(), "unclosed quote in {line}");
    words.extend(word);
    words
}

/// The command an example runs, as JSON_COMMANDS names it.
fn label(args: &[String]) -> String {
    match args[0].as_str() {
        "draft" | "alias" | "run" => format!("{} {}", args[0], args[1]),
        "list" if args.len() > 1 => "list NAME".into(),
        other => other.into(),
    }
}

/// What the session of docs/JSON.md does between its examples, keyed by the example it
/// prepares: the files the page says were written, and the damaged blob before `verify`.
fn prepare(s: &TestStore, command: &str) -> bool {
    match command {
        "artifactfs --json log mnist data --type dataset --alias best --description \"first cut\" --metadata '{\"source\": \"scan\"}'" =>
        {
            s.tree(
                "data",
                &[
                    ("labels.csv", "id,label\n0,cat\n1,dog\n"),
                    ("images/0.png", "img-0\n"),
                    ("images/1.png", "img-1\n"),
                ],
            );
        }
        "artifactfs --json draft add mnist notes.txt labels.csv" => {
            s.file("notes.txt", "remember the cats\n");
            s.file("labels.csv", "id,label\n0,cat\n1,cat\n");
        }
        "artifactfs --json upsert shards part-0 --type dataset --distributed-id run-7" => {
            s.tree("part-0", &[("a.png", "img-1\n"), ("b.png", "img-3\n")]);
        }
        "artifactfs --json finish shards part-1 --type dataset --distributed-id run-7" => {
            s.tree("part-1", &[("c.png", "img-4\n")]);
        }
        "artifactfs --json verify" => damage_blob(s, b"img-1\n", b"img-X\n"),
        // The run's job, between `run begin` and `run end`.
        "artifactfs --json run end train-1 --exit-code 0" => {
            s.file("train-data/weights.txt", "w = 0.42\n");
            for args in [
                &["cat", "mnist:v1", "labels.csv"][..],
                &["log", "model", "train-data", "--type", "model"],
            ] {
                let mut cmd = s.command(args);
                cmd.env("ARTIFACTFS_RUN", "train-1");
                assert_success(&run_command(cmd), args);
            }
        }
        _ => return false,
    }
    true
}

/// Overwrites the blob holding `content` with `with`, behind the store's back.
fn damage_blob(s: &TestStore, content: &[u8], with: &[u8]) {
    let blob = s.blob_path_of(content);
    set_mode(&blob, 0o644);
    fs::write(&blob, with).unwrap();
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Object(_) => "object",
        Value::Array(a) if a.is_empty() => "array",
        Value::Array(a) if a.iter().all(Value::is_string) => "array of strings",
        Value::Array(a) if a.iter().all(Value::is_object) => "array of objects",
        Value::Array(_) => "array of mixed values",
    }
}

/// Whether `v` is of the type `row` documents (an empty array fits any array type).
fn fits(v: &Value, row: &Row) -> bool {
    match type_of(v) {
        "null" => row.nullable,
        "array" => row.ty.starts_with("array of "),
        t => t == row.ty,
    }
}

fn is_time(v: &Value) -> bool {
    v.as_str().is_some_and(|t| {
        t.len() == "2025-06-02T09:14:07Z".len()
            && t.ends_with('Z')
            && humantime::parse_rfc3339(t).is_ok()
    })
}

/// Every key of `v` as a path (`damaged[].used_by[].ref`), with each value found there.
/// Arrays of objects are entered; other objects (`metadata`) are values.
fn key_paths(v: &Value, prefix: &str, out: &mut BTreeMap<String, Vec<Value>>) {
    match v {
        Value::Array(items) => {
            for item in items.iter().filter(|i| i.is_object()) {
                key_paths(item, prefix, out);
            }
        }
        Value::Object(map) => {
            for (k, val) in map {
                let path = format!("{prefix}{k}");
                out.entry(path.clone()).or_default().push(val.clone());
                if val.is_array() {
                    key_paths(val, &format!("{path}[]."), out);
                }
            }
        }
        _ => {}
    }
}

/// Differences between a documented example and the real output: the same keys, types and
/// values, except that `created` is any RFC 3339 time and `reflinked` any count.
fn compare(doc: &Value, real: &Value, at: &str, key: &str, diffs: &mut Vec<String>) {
    match key {
        "created" => {
            if !is_time(doc) || !is_time(real) {
                diffs.push(format!(
                    "{at}: documented {doc}, printed {real}: not both times"
                ));
            }
            return;
        }
        // The store's directory is the test's own.
        "store" if at == "$.store" => {
            if !doc.as_str().is_some_and(|d| d.starts_with('/'))
                || !real.as_str().is_some_and(|r| r.starts_with('/'))
            {
                diffs.push(format!(
                    "{at}: documented {doc}, printed {real}: not both absolute paths"
                ));
            }
            return;
        }
        // Runs: when they ran, and where and by whom, are the machine's.
        "started" | "ended" if !(doc.is_null() && real.is_null()) => {
            if !is_time(doc) || !is_time(real) {
                diffs.push(format!(
                    "{at}: documented {doc}, printed {real}: not both times"
                ));
            }
            return;
        }
        "host" | "user" => {
            if !doc.is_string() || !real.is_string() {
                diffs.push(format!(
                    "{at}: documented {doc}, printed {real}: not both strings"
                ));
            }
            return;
        }
        "reflinked" => {
            if !doc.is_u64() || !real.is_u64() {
                diffs.push(format!(
                    "{at}: documented {doc}, printed {real}: not both counts"
                ));
            }
            return;
        }
        _ => {}
    }
    match (doc, real) {
        (Value::Object(d), Value::Object(r)) => {
            let (dk, rk): (BTreeSet<_>, BTreeSet<_>) = (d.keys().collect(), r.keys().collect());
            if dk != rk {
                diffs.push(format!("{at}: documented keys {dk:?}, printed {rk:?}"));
            }
            for (k, dv) in d {
                if let Some(rv) = r.get(k) {
                    compare(dv, rv, &format!("{at}.{k}"), k, diffs);
                }
            }
        }
        (Value::Array(d), Value::Array(r)) if d.len() == r.len() => {
            for (i, (dv, rv)) in d.iter().zip(r).enumerate() {
                compare(dv, rv, &format!("{at}[{i}]"), key, diffs);
            }
        }
        _ if doc != real => diffs.push(format!("{at}: documented {doc}, printed {real}")),
        _ => {}
    }
}

/// The keys a section documents for its examples: its table, plus the version object's when
/// it says it prints versions.
fn documented_keys(sec: &Section, version_rows: &[Row]) -> BTreeMap<String, Row> {
    let mut rows: Vec<Row> = sec.table.clone();
    if sec.text.contains(VERSION_LINK) {
        rows.extend(version_rows.iter().cloned());
    }
    let mut keys = BTreeMap::new();
    for r in rows {
        let key = r.key.clone();
        assert!(
            keys.insert(key.clone(), r).is_none(),
            "docs/JSON.md, section {:?}: key {key} documented twice",
            sec.heading
        );
    }
    keys
}

#[test]
fn every_example_in_json_md_is_what_the_command_prints() {
    let sections = parse_doc(JSON_DOC);
    let version_rows = sections
        .iter()
        .find(|s| s.heading == VERSION_SECTION)
        .unwrap_or_else(|| panic!("docs/JSON.md has no section {VERSION_SECTION:?}"))
        .table
        .clone();
    assert!(
        !version_rows.is_empty(),
        "the version object has no key table"
    );

    let s = TestStore::new();
    let mut covered = BTreeSet::new();
    let mut prepared = 0;
    let mut failures = Vec::new();
    // Each key's name (its last part) and the types it was printed with, across commands.
    let mut types_by_name: BTreeMap<String, BTreeSet<&'static str>> = BTreeMap::new();
    for sec in &sections {
        assert!(
            !sec.examples.is_empty() || sec.table.is_empty() || sec.heading == VERSION_SECTION,
            "docs/JSON.md, section {:?}: a key table with no example to check it against",
            sec.heading
        );
        let keys = documented_keys(sec, &version_rows);
        for ex in &sec.examples {
            if prepare(&s, &ex.command) {
                prepared += 1;
            }
            let words = shell_words(&ex.command);
            let args = &words[1..];
            covered.insert(label(&args[1..]));
            let out = s.run(args);
            let real: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "`{}` printed invalid JSON ({e}); status {}:\n{}\n{}",
                    ex.command,
                    out.status,
                    stdout(&out),
                    stderr(&out)
                )
            });
            let damaged = real["damaged"].as_array().is_some_and(|d| !d.is_empty());
            let status = if damaged { 3 } else { 0 };
            assert_eq!(
                out.status.code(),
                Some(status),
                "`{}`: {}",
                ex.command,
                stderr(&out)
            );
            assert_eq!(
                stderr(&out),
                "",
                "`{}`: --json prints nothing on standard error",
                ex.command
            );

            let mut diffs = Vec::new();
            compare(&ex.output, &real, "$", "", &mut diffs);
            let mut printed = BTreeMap::new();
            key_paths(&real, "", &mut printed);
            for (path, values) in &printed {
                match keys.get(path) {
                    None => diffs.push(format!("{path}: printed but not in the key table")),
                    Some(row) => {
                        for v in values.iter().filter(|v| !fits(v, row)) {
                            diffs.push(format!(
                                "{path}: documented as {}{}, printed {v}",
                                row.ty,
                                if row.nullable { " or null" } else { "" }
                            ));
                        }
                    }
                }
                let name = path.rsplit('.').next().unwrap().to_string();
                let types = types_by_name.entry(name).or_default();
                types.extend(
                    values
                        .iter()
                        .map(type_of)
                        .filter(|t| *t != "null" && *t != "array"),
                );
            }
            for path in keys.keys().filter(|k| !printed.contains_key(*k)) {
                diffs.push(format!("{path}: in the key table but not printed"));
            }
            if real.is_array() && !real.as_array().unwrap().iter().all(Value::is_object) {
                assert!(
                    keys.is_empty(),
                    "`{}` prints an array of values, which has no keys",
                    ex.command
                );
                assert_eq!(type_of(&real), "array of strings", "`{}`", ex.command);
            }
            if !diffs.is_empty() {
                failures.push(format!("`{}`:\n  {}", ex.command, diffs.join("\n  ")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "docs/JSON.md does not match the output:\n{}",
        failures.join("\n")
    );
    assert_eq!(prepared, 6, "every preparation step found its example");
    let missing: Vec<_> = JSON_COMMANDS
        .iter()
        .filter(|c| !covered.contains(**c))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/JSON.md has no example of {missing:?}"
    );
    for (name, types) in &types_by_name {
        assert!(
            types.len() <= 1,
            "key {name} is printed with different types: {types:?}"
        );
    }
}

#[test]
fn a_key_has_one_type_in_every_table() {
    let mut types: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for sec in parse_doc(JSON_DOC) {
        for row in sec.table {
            let name = row.key.rsplit('.').next().unwrap().to_string();
            types.entry(name).or_default().insert(row.ty);
        }
    }
    assert!(types.len() > 30, "found only {} key names", types.len());
    for (name, t) in types {
        assert_eq!(t.len(), 1, "key {name} is documented with types {t:?}");
    }
}

#[test]
fn the_docs_link_json_md_and_one_exit_status_table() {
    assert!(
        README.contains("(docs/JSON.md)"),
        "README links docs/JSON.md"
    );
    let queries = SEMANTICS
        .split("\n## ")
        .find(|s| s.starts_with("Queries"))
        .unwrap();
    assert!(
        queries.contains("(JSON.md)"),
        "SEMANTICS Queries links JSON.md"
    );
    assert!(SEMANTICS.contains("\n## Exit status\n"));
    assert!(JSON_DOC.contains("(SEMANTICS.md#exit-status)"));
    assert!(
        !JSON_DOC.contains("| 0 |"),
        "exit statuses are tabled in SEMANTICS.md only"
    );
}

/// The statuses docs/SEMANTICS.md tables.
fn documented_statuses() -> BTreeSet<i32> {
    let section = SEMANTICS
        .split("\n## ")
        .find(|s| s.starts_with("Exit status"))
        .unwrap();
    section
        .lines()
        .filter_map(|l| l.strip_prefix("| "))
        .filter_map(|l| l.split(" |").next()?.trim().parse().ok())
        .collect()
}

#[test]
fn every_exit_status_in_the_table_is_the_one_returned() {
    assert_eq!(documented_statuses(), BTreeSet::from([0, 1, 2, 3]));
    let s = TestStore::new();
    s.init();

    // 0: success, with and without --json, and --help / --version.
    let out = s.run(&["--json", "list"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        json!([])
    );
    assert_eq!(s.run(&["list"]).status.code(), Some(0));
    assert_eq!(s.run(&["--help"]).status.code(), Some(0));
    assert_eq!(s.run(&["--version"]).status.code(), Some(0));

    // 1: the command failed.
    let d = s.tree("d", &[("a.txt", "alpha\n"), ("b.txt", "bravo\n")]);
    log(&s, "m", &d);
    for args in [
        &["show", "m:v9"][..],
        &["show", "nothing"],
        &["alias", "rm", "m", "prod"],
        &["draft", "status", "m"],
        &["cat", "m", "missing.txt"],
    ] {
        assert_eq!(s.run(args).status.code(), Some(1), "{args:?}");
    }

    // 2: the command line is malformed.
    for args in [
        &["show", "bad name"][..],
        &["alias", "set", "m:v0", "v3"],
        &["list", "--frobnicate"],
        &["frobnicate"],
        &[],
    ] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }

    // 3: verify found damage; with --json the report is still printed.
    assert_eq!(s.run(&["verify"]).status.code(), Some(0));
    damage_blob(&s, b"alpha\n", b"omega\n");
    for args in [&["verify"][..], &["verify", "m:v0"], &["--json", "verify"]] {
        assert_eq!(s.run(args).status.code(), Some(3), "{args:?}");
    }
    let v: Value = serde_json::from_slice(&s.run(&["--json", "verify"]).stdout).unwrap();
    assert_eq!(v["damaged"][0]["problem"], "corrupted");
    assert_eq!(v["damaged"][0]["actual"], sha256_hex(b"omega\n"));
    fs::remove_file(s.blob_path_of(b"alpha\n")).unwrap();
    let out = s.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["damaged"][0]["problem"], "missing");
    assert_eq!(v["damaged"][0]["actual"], Value::Null);
}

#[test]
fn errors_under_json_are_text_on_stderr_and_nothing_on_stdout() {
    let s = TestStore::new();
    let d = s.tree("d", &[("a.txt", "alpha\n")]);
    log(&s, "m", &d);
    for (args, status, names) in [
        (&["--json", "show", "m:v9"][..], 1, "v9"),
        (&["show", "m:v9", "--json"], 1, "v9"),
        (&["--json", "ls", "m", "nowhere"], 1, "nowhere"),
        (&["--json", "delete", "ghost"], 1, "ghost"),
        (&["--json", "draft", "commit", "m"], 1, "draft m"),
        (&["--json", "show", "bad name"], 2, "bad name"),
    ] {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(status), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed {}", stdout(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(names), "{args:?} names {names}: {err}");
    }
}

#[test]
fn paths_that_are_not_utf8_are_written_with_escapes() {
    let s = TestStore::new();
    let d = s.tree("d", &[("ok.txt", "fine\n"), ("café.txt", "utf-8\n")]);
    let latin1 = OsStr::from_bytes(b"caf\xe9.txt");
    write_file(&d.join(latin1), b"latin-1\n");
    log(&s, "m", &d);

    let ls = s.json(&["ls", "m"]);
    // In byte order: UTF-8 é is c3 a9, before the Latin-1 byte e9.
    assert_eq!(ls, json!(["café.txt", "caf\\xe9.txt", "ok.txt"]));
    let text = s.run(&["ls", "m"]).stdout;
    assert!(
        text.windows(9).any(|w| w == b"caf\xe9.txt\n"),
        "text output keeps the raw bytes"
    );

    s.ok(&["draft", "new", "m"]);
    let rm = s.json(&[
        OsStr::new("draft"),
        OsStr::new("rm"),
        OsStr::new("m"),
        latin1,
    ]);
    assert_eq!(rm, json!({"draft": "m", "removed": ["caf\\xe9.txt"]}));
    assert_eq!(
        s.json(&["draft", "status", "m"])["removed"],
        json!(["caf\\xe9.txt"])
    );
    s.ok(&["draft", "commit", "m"]);
    assert_eq!(
        s.json(&["diff", "m:v0", "m:v1"]),
        json!({"added": [], "modified": [], "removed": ["caf\\xe9.txt"]})
    );

    let dest = OsStr::from_bytes(b"out\xff");
    let get = s.json(&[OsStr::new("get"), OsStr::new("m:v0"), dest]);
    assert_eq!(get["dest"], "out\\xff");
    assert_eq!(get["files"], 3);

    damage_blob(&s, b"latin-1\n", b"damaged\n");
    let out = s.run(&["--json", "verify"]);
    assert_eq!(out.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["damaged"][0]["used_by"],
        json!([{"ref": "m:v0", "path": "caf\\xe9.txt"}])
    );
}

#[test]
fn ls_json_is_one_array_whatever_its_length() {
    let s = TestStore::new();
    let d = s.tree("d", &[("one/x.txt", "x\n")]);
    fs::create_dir_all(d.join("empty")).unwrap();
    for i in 0..300 {
        write_file(
            &d.join(format!("many/f{i:03}.txt")),
            format!("{i}\n").as_bytes(),
        );
    }
    log(&s, "m", &d);
    assert_eq!(s.json(&["ls", "m", "empty"]), json!([]));
    assert_eq!(s.json(&["ls", "m", "one"]), json!(["one/x.txt"]));
    assert_eq!(s.json(&["ls", "m", "one/x.txt"]), json!(["one/x.txt"]));
    for prefix in ["many", ""] {
        let text = s.ok(&["ls", "m", prefix]);
        let lines: Vec<Value> = text.lines().map(|l| json!(l)).collect();
        assert_eq!(
            s.json(&["ls", "m", prefix]),
            Value::Array(lines),
            "{prefix:?}"
        );
    }
    assert_eq!(s.json(&["ls", "m"]).as_array().unwrap().len(), 301);
}
