//! Runs one parsed command against the store and prints its result, as text or JSON.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use serde_json::{Value, json};

use crate::catalog::rfc3339 as time;
use crate::catalog::runs::RunRow;
use crate::cli::{
    AliasCommand, Cli, Command, CommitArgs, DraftCommand, ReferenceArgs, RunArgs, RunCommand,
    RunSpecArgs,
};
use crate::commit::{CommitOptions, Outcome, RunOutput, parse_metadata};
use crate::error::{Error, IoContext, Result};
use crate::ingest::{self, Inputs};
use crate::maintenance;
use crate::materialize::{self, Existing};
use crate::names::{DistributedId, DraftName, TypeName, VersionRef};
use crate::query::{self, VersionSummary, change_code};
use crate::reference::OffLimits;
use crate::store::{DraftBase, Store};
use crate::store_dir::{self, Location};
use crate::tree::{Change, Item, TreeEntry};

/// Exit status of a check that ran and found something wrong: `verify` damaged blobs,
/// `doctor` a problem.
pub const EXIT_DAMAGED: u8 = 3;

/// Logs go to standard error, except for the mount server, which logs to a file in the store
/// (it runs in the background). `RUST_LOG` sets the level.
fn init_logging(command: &Command, store: &std::path::Path) {
    let mut builder = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(
        if matches!(command, Command::Mount { .. }) {
            "info"
        } else {
            "warn"
        },
    ));
    // The store exists by now: `mount` refuses to run without one. Its log is not made
    // beside a damaged config, which `mount` is about to refuse.
    if let Command::Mount { .. } = command
        && crate::store_config::read(store).is_ok()
        && let Ok(f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(store.join(crate::mount::LOG_FILE))
    {
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let _ = builder.try_init();
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let mut catalog = None;
    execute(cli, &mut catalog).map_err(|e| match &catalog {
        Some(path) => name_damage(path, e),
        None => e,
    })
}

/// A query that met a damaged page says so naming the catalog, as a failed write does:
/// reads (`ls`, `cat`, `diff`) may be the first to touch a damaged page, and the queries only
/// know what they were doing.
fn name_damage(catalog: &std::path::Path, e: Error) -> Error {
    match e {
        Error::Catalog { context, source }
            if source.failure() == crate::catalog::sql::Failure::Corrupt =>
        {
            Error::Corrupt {
                what: format!("catalog {}", catalog.display()),
                why: format!("{context}: {source}"),
            }
        }
        other => other,
    }
}

/// Runs the command; `catalog` is set to the catalog's path once the store is open.
fn execute(cli: Cli, catalog: &mut Option<PathBuf>) -> Result<ExitCode> {
    crate::progress::set_quiet(cli.quiet);
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(*shell, &mut cmd, "artifactfs", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Man { dir } => {
            crate::manual::write_pages(Cli::command(), dir)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let location = Location::find(cli.store.clone())?;
    // Only commands that make something create a store; the rest need one.
    match &cli.command {
        Command::Log { .. }
        | Command::Draft(DraftCommand::New { .. })
        | Command::Upsert { .. }
        | Command::Finish { .. }
        | Command::Run(RunArgs {
            action: None | Some(RunCommand::Begin { .. }),
            ..
        }) => location.prepare()?,
        Command::Init { .. }
        | Command::Doctor
        | Command::Umount { .. }
        | Command::CopyStore { .. } => {}
        _ => location.require()?,
    }
    let dir = location.path;
    init_logging(&cli.command, &dir);
    if let Command::Init {
        dir: given,
        catalog,
        objects,
        cache_size,
    } = &cli.command
    {
        let dir = &std::path::absolute(given.as_ref().unwrap_or(&dir)).at(&dir)?;
        let shared = match (catalog, objects) {
            (Some(catalog), Some(objects)) => Some(crate::store_config::Shared {
                catalog: catalog.clone(),
                objects: objects.clone(),
                cache_size: cache_size.unwrap_or(crate::store_config::DEFAULT_CACHE),
            }),
            _ => None,
        };
        let done = store_dir::init(dir, shared.as_ref())?;
        let shown = dir.display();
        out_of(&cli).print(
            json!({"store": json_path(dir.as_os_str().as_encoded_bytes()), "existed": !done.created}),
            || match (done.created, done.others) {
                _ if done.repaired => {
                    format!("wrote the damaged config of store {shown} again")
                }
                (false, _) => format!("{shown} is already a store; nothing changed"),
                (true, 0) => format!("created store {shown}"),
                (true, n) => format!(
                    "created store {shown} beside the {} already there, left as {}",
                    plural(n as u64, "entry", "entries"),
                    if n == 1 { "it was" } else { "they were" }
                ),
            },
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::CopyStore { src, dest } = &cli.command {
        return copy_store(&cli, src, dest);
    }
    if let Command::Doctor = cli.command {
        let report = crate::doctor::examine(&dir);
        print_doctor(&report, cli.json)?;
        return Ok(if report.has_problems() {
            ExitCode::from(EXIT_DAMAGED)
        } else {
            ExitCode::SUCCESS
        });
    }
    match &cli.command {
        Command::Mount {
            mountpoint,
            foreground,
            nonempty,
            read_only,
        } => {
            let opts = crate::mount::Options {
                foreground: *foreground,
                nonempty: *nonempty,
                read_only: *read_only,
            };
            let out = out_of(&cli);
            crate::mount::mount(&dir, mountpoint, opts, &mut |at| {
                let _ = out.print(
                    json!({"store": json_path(dir.as_os_str().as_encoded_bytes()),
                        "mountpoint": json_path(at.as_os_str().as_encoded_bytes())}),
                    || {
                        format!(
                            "mounted store {} at {}; unmount with `artifactfs umount {}`",
                            dir.display(),
                            at.display(),
                            at.display()
                        )
                    },
                );
            })?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Umount { mountpoint } => {
            crate::mount::umount(mountpoint)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let mut store = Store::open(&dir)?;
    *catalog = Some(store.catalog.path().to_path_buf());
    // Commands that read versions block `gc` until they are done with them.
    let _reading = match &cli.command {
        Command::Ls { .. }
        | Command::Cat { .. }
        | Command::Diff { .. }
        | Command::Get { .. }
        | Command::Verify { .. } => Some(store.shared_lock()?),
        _ => None,
    };
    let out = out_of(&cli);
    // The run this command belongs to, for the commands that record inputs and outputs.
    let current = match &cli.command {
        Command::Log { .. }
        | Command::Draft(DraftCommand::Commit { .. })
        | Command::Upsert { .. }
        | Command::Finish { .. }
        | Command::Get { .. }
        | Command::Cat { .. } => crate::runs::current(store.conn(), cli.quiet || cli.json)?,
        _ => None,
    };
    match cli.command {
        Command::Log {
            name,
            paths,
            references,
            overwrite,
            type_name,
            commit,
        } => {
            let mut opts = commit_options(type_name, &commit)?;
            opts.run = output_of(current.as_ref(), "log");
            let inputs = inputs(&store, paths, &references, overwrite)?;
            let outcome = store.log(&name, &inputs, &opts)?;
            out.outcome(&store, &outcome, &opts, None)?;
        }
        Command::Draft(cmd) => draft(&mut store, &out, cmd, current.as_ref())?,
        Command::Upsert {
            name,
            paths,
            references,
            overwrite,
            type_name,
            distributed_id,
        } => {
            let draft = DraftName {
                artifact: name,
                id: Some(distributed_id_of(distributed_id, current.as_ref())?),
            };
            let inputs = inputs(&store, paths, &references, overwrite)?;
            let (n, replaced) = store.upsert(&draft, &inputs, type_name.as_ref())?;
            let replaced: Vec<String> = replaced.iter().map(|p| json_path(p)).collect();
            out.print(
                json!({"draft": draft.to_string(), "files": n, "replaced": replaced}),
                || {
                    let mut text = format!(
                        "added {} to draft {draft}",
                        plural(n as u64, "file", "files")
                    );
                    if !replaced.is_empty() {
                        text.push_str(&format!(
                            "\nreplaced what an earlier writer had added at {}: {}",
                            plural(replaced.len() as u64, "path", "paths"),
                            replaced.join(", ")
                        ));
                    }
                    text
                },
            )?;
        }
        Command::Finish {
            name,
            paths,
            references,
            overwrite,
            type_name,
            distributed_id,
            commit,
        } => {
            let draft = DraftName {
                artifact: name,
                id: Some(distributed_id_of(distributed_id, current.as_ref())?),
            };
            let mut opts = commit_options(type_name, &commit)?;
            opts.run = output_of(current.as_ref(), "finish");
            let inputs = inputs(&store, paths, &references, overwrite)?;
            let (outcome, replaced) = store.finish(&draft, &inputs, &opts)?;
            let replaced: Vec<String> = replaced.iter().map(|p| json_path(p)).collect();
            out.outcome(&store, &outcome, &opts, Some(&replaced))?;
        }
        Command::List { name: None } => {
            let list = query::artifacts(store.conn())?;
            let rows: Vec<Value> = list
                .iter()
                .map(|a| {
                    json!({"artifact": a.name, "type": a.type_name, "versions": a.versions,
                        "latest": a.latest.map(|n| format!("{}:v{n}", a.name)),
                        "created": time(a.created_ns)})
                })
                .collect();
            out.print(Value::Array(rows), || {
                if list.is_empty() {
                    return format!("no artifacts in store {} yet", store.root().display());
                }
                let rows = list.iter().map(|a| {
                    let latest = a.latest.map_or("-".into(), |n| format!("v{n}"));
                    vec![
                        a.name.clone(),
                        a.type_name.clone(),
                        a.versions.to_string(),
                        latest,
                    ]
                });
                table(&["ARTIFACT", "TYPE", "VERSIONS", "LATEST"], rows)
            })?;
        }
        Command::List { name: Some(name) } => {
            let (type_name, list) = query::versions(store.conn(), &name)?;
            let rows: Vec<Value> = list.iter().map(|v| version_json(&type_name, v)).collect();
            out.print(Value::Array(rows), || {
                if list.is_empty() {
                    return format!("{name} has no versions left: every one was deleted");
                }
                let rows = list.iter().map(|v| {
                    vec![
                        format!("v{}", v.version.number),
                        time(v.version.created_ns),
                        v.files.to_string(),
                        indicatif::HumanBytes(v.bytes).to_string(),
                        v.aliases.join(", "),
                    ]
                });
                table(&["VERSION", "CREATED", "FILES", "SIZE", "ALIASES"], rows)
            })?;
        }
        Command::Show { reference } => {
            let (type_name, v) = query::show(store.conn(), &reference)?;
            let made_by = crate::catalog::runs::maker_of(
                store.conn(),
                &v.version.artifact,
                v.version.number,
            )?;
            let mut value = version_json(&type_name, &v);
            value["run"] = json!(made_by);
            out.print(value, || {
                let mut text = show_text(&type_name, &v);
                if let Some(run) = &made_by {
                    text.push_str(&format!("\nrun: {run} (made it)"));
                }
                text
            })?;
        }
        Command::Ls {
            reference,
            prefix,
            long,
        } => {
            let mut stdout = io::stdout().lock();
            let prefix = prefix.as_ref().map(|p| p.as_encoded_bytes());
            // The JSON array is written a path at a time, as the text is, so that listing a
            // version of any size holds none of it in memory.
            let mut first = true;
            query::ls(store.conn(), &reference, prefix, &mut |p, e| {
                if !out.json {
                    return match long {
                        true => write_line(&mut stdout, long_line(p, e).as_bytes()),
                        false => write_line(&mut stdout, p),
                    };
                }
                let item = match long {
                    true => long_json(p, e),
                    false => Value::String(json_path(p)),
                }
                .to_string();
                let sep = if first { "[\n  " } else { ",\n  " };
                first = false;
                write_raw(&mut stdout, format!("{sep}{item}").as_bytes())
            })?;
            if out.json {
                write_line(&mut stdout, if first { b"[]" } else { b"\n]" })?;
            }
        }
        Command::Cat { reference, path } => {
            // The version is resolved once: what is read and what is recorded are one.
            let v = crate::catalog::versions::resolve(store.conn(), &reference)?;
            let pinned: VersionRef = v.reference().parse()?;
            let mut stdout = io::stdout().lock();
            let path = path.as_encoded_bytes();
            query::cat(store.conn(), &store.blobs, &pinned, path, &mut stdout)?;
            let _ = stdout.flush();
            if let Some(run) = &current {
                crate::runs::note_input(&mut store.catalog, run, &v.artifact, v.number, "cat");
            }
        }
        Command::Diff { from, to } => {
            let changes = query::diff(store.conn(), &from, &to)?;
            out.changes(&changes)?;
        }
        Command::Get {
            reference,
            dest,
            delete,
            merge,
        } => {
            let existing = match (delete, merge) {
                (true, _) => Existing::Delete,
                (_, true) => Existing::Merge,
                _ => Existing::Refuse,
            };
            let report = materialize::get(&store, &reference, &dest, existing)?;
            if let Some(run) = &current {
                let v = &report.version;
                crate::runs::note_input(&mut store.catalog, run, &v.artifact, v.number, "get");
            }
            let r = report.version.reference();
            let (removed, kept) = match existing {
                Existing::Delete => (report.extra, 0),
                _ => (0, report.extra),
            };
            out.print(
                json!({"ref": r, "dest": json_path(dest.as_os_str().as_encoded_bytes()),
                    "files": report.files, "reflinked": report.reflinked,
                    "extra_removed": removed, "extra_kept": kept}),
                || {
                    let files = plural(report.files, "file", "files");
                    let extra = match (removed, kept) {
                        (0, 0) => String::new(),
                        (n, 0) => format!(
                            "; removed {} the version does not have",
                            plural(n, "file", "files")
                        ),
                        (_, n) => format!(
                            "; kept {} the version does not have",
                            plural(n, "file", "files")
                        ),
                    };
                    format!("{r} -> {} ({files}{extra})", dest.display())
                },
            )?;
        }
        Command::Alias(AliasCommand::Set { reference, alias }) => {
            let v = store.alias_set(&reference, &alias)?;
            let r = v.reference();
            out.print(
                json!({"artifact": v.artifact, "alias": alias.as_str(), "ref": r}),
                || format!("{}:{alias} -> {r}", v.artifact),
            )?;
        }
        Command::Alias(AliasCommand::Rm { owner, alias }) => {
            let name = &owner.artifact;
            let number = store.alias_rm(name, &alias, owner.version.as_ref())?;
            let r = format!("{name}:v{number}");
            out.print(
                json!({"artifact": name.as_str(), "alias": alias.as_str(), "ref": r}),
                || format!("removed alias {name}:{alias} from {r}"),
            )?;
        }
        Command::Delete { reference } => {
            let v = store.delete(&reference)?;
            let r = v.reference();
            out.print(json!({"deleted": r}), || format!("deleted {r}"))?;
        }
        Command::Verify { reference } => {
            let report = maintenance::verify(&store, reference.as_ref())?;
            return verify_output(&out, &report);
        }
        Command::Run(args) => return run_command(&mut store, &out, args),
        Command::Runs => {
            let dead = crate::runs::settle(&mut store.catalog)?;
            let list: Vec<RunRow> = crate::catalog::runs::list(store.conn())?
                .into_iter()
                .map(|r| crate::runs::settled(r, &dead))
                .collect();
            let mut rows = Vec::new();
            let mut lines = Vec::new();
            for r in &list {
                let (i, o) = crate::catalog::runs::counts(store.conn(), &r.id)?;
                let mut value = run_json(r);
                value["input_count"] = json!(i);
                value["output_count"] = json!(o);
                rows.push(value);
                lines.push(vec![
                    r.id.clone(),
                    r.name.clone(),
                    dash(&r.group),
                    dash(&r.job_type),
                    r.state.clone(),
                    time(r.started_ns),
                    duration(r),
                    i.to_string(),
                    o.to_string(),
                ]);
            }
            out.print(Value::Array(rows), || {
                if list.is_empty() {
                    return "no runs".into();
                }
                let header = [
                    "RUN", "NAME", "GROUP", "JOB TYPE", "STATE", "STARTED", "DURATION", "INPUTS",
                    "OUTPUTS",
                ];
                table(&header, lines.into_iter())
            })?;
        }
        Command::Lineage {
            reference,
            depth,
            dot,
            svg,
            png,
        } => {
            let dead = crate::runs::settle(&mut store.catalog)?;
            let root = lineage_root(store.conn(), &reference)?;
            let graph = crate::lineage::build(store.conn(), root, depth, &dead)?;
            let drawing = crate::lineage::to_dot(&graph);
            for (format, dest) in [("svg", &svg), ("png", &png)] {
                if let Some(dest) = dest {
                    crate::lineage::render(&drawing, format, dest)?;
                }
            }
            if dot {
                write_raw(&mut io::stdout().lock(), drawing.as_bytes())?;
            } else {
                out.print(crate::lineage::to_json(&graph), || {
                    crate::lineage::to_text(&graph)
                })?;
            }
        }
        Command::Mount { .. }
        | Command::Umount { .. }
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Init { .. }
        | Command::CopyStore { .. }
        | Command::Doctor => unreachable!("handled above"),
        Command::Gc { grace } => {
            let r = maintenance::gc(&mut store, grace.unwrap_or(maintenance::DEFAULT_GRACE))?;
            let shared = store.shared().is_some();
            out.print(
                json!({"blobs_removed": r.blobs_removed, "bytes_freed": r.bytes_freed,
                    "nodes_removed": r.nodes_removed, "staging_removed": r.staging_removed,
                    "recent_kept": r.recent_kept, "cache_removed": r.cache_removed}),
                || {
                    let mut text = format!(
                        "removed {} ({}), {} and {}",
                        plural(r.blobs_removed, "blob", "blobs"),
                        plural(r.bytes_freed, "byte", "bytes"),
                        plural(r.nodes_removed as u64, "tree node", "tree nodes"),
                        plural(r.staging_removed as u64, "staging file", "staging files")
                    );
                    if shared {
                        text += &format!(
                            "; kept {} younger than the grace period; dropped {} from this \
                             host's cache",
                            plural(r.recent_kept, "unreferenced object", "unreferenced objects"),
                            plural(r.cache_removed, "blob", "blobs")
                        );
                    }
                    text
                },
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn draft(
    store: &mut Store,
    out: &Output,
    cmd: DraftCommand,
    current: Option<&RunRow>,
) -> Result<()> {
    match cmd {
        DraftCommand::New {
            draft,
            type_name,
            from,
            empty,
        } => {
            let base = match (from, empty) {
                (Some(r), _) => DraftBase::From(r),
                (None, true) => DraftBase::Empty,
                (None, false) => DraftBase::Default,
            };
            let d = store.draft_new(&draft, type_name.as_ref(), base)?;
            let base = d.base_number.map(|n| format!("{}:v{n}", d.artifact));
            out.print(
                json!({"draft": draft.to_string(), "base": base}),
                || match &base {
                    Some(b) => format!("draft {draft} created from {b}"),
                    None => format!("draft {draft} created empty"),
                },
            )
        }
        DraftCommand::Add {
            draft,
            paths,
            references,
            overwrite,
            dest,
        } => {
            let inputs = inputs(store, paths, &references, overwrite)?;
            let n = store.draft_add(&draft, &inputs, dest.as_deref())?;
            out.print(json!({"draft": draft.to_string(), "files": n}), || {
                format!(
                    "added {} to draft {draft}",
                    plural(n as u64, "file", "files")
                )
            })
        }
        DraftCommand::Rm { draft, paths } => {
            let paths: Vec<&[u8]> = paths.iter().map(|p| p.as_encoded_bytes()).collect();
            store.draft_rm(&draft, &paths)?;
            let shown: Vec<String> = paths.iter().map(|p| json_path(p)).collect();
            out.print(
                json!({"draft": draft.to_string(), "removed": shown}),
                || format!("removed {} from draft {draft}", shown.join(", ")),
            )
        }
        DraftCommand::Status { draft } => {
            let st = query::draft_status(&mut store.catalog, &store.staging, &draft)?;
            let base = st
                .draft
                .base_number
                .map(|n| format!("{}:v{n}", st.draft.artifact));
            let latest = st.latest.map(|n| format!("{}:v{n}", st.draft.artifact));
            let (a, m, d) = split_changes(&st.changes);
            if st.stale() && !out.json && !out.quiet {
                eprintln!(
                    "warning: draft {draft} is based on {}, which is no longer latest ({}); committing still makes a new version from the draft's contents",
                    base.as_deref().unwrap_or("-"),
                    latest.as_deref().unwrap_or("none")
                );
            }
            out.print(
                json!({"draft": draft.to_string(), "base": base, "latest": latest, "stale": st.stale(),
                    "type": st.draft.type_name, "added": a, "modified": m, "removed": d}),
                || st.text(),
            )
        }
        DraftCommand::List => {
            let list = query::drafts(store.conn())?;
            let rows: Vec<Value> = list
                .iter()
                .map(|(d, n)| {
                    json!({"draft": d.display_name(), "artifact": d.artifact,
                        "distributed_id": (!d.dist_id.is_empty()).then_some(&d.dist_id),
                        "base": d.base_number.map(|n| format!("{}:v{n}", d.artifact)),
                        "changes": n, "created": time(d.created_ns)})
                })
                .collect();
            out.print(Value::Array(rows), || {
                if list.is_empty() {
                    return "no drafts".into();
                }
                let rows = list.iter().map(|(d, n)| {
                    let base = d
                        .base_number
                        .map_or("(empty)".into(), |b| format!("{}:v{b}", d.artifact));
                    vec![d.display_name(), base, n.to_string()]
                });
                table(&["DRAFT", "BASE", "CHANGES"], rows)
            })
        }
        DraftCommand::Discard { draft } => {
            store.draft_discard(&draft)?;
            out.print(json!({"discarded": draft.to_string()}), || {
                format!("discarded draft {draft}")
            })
        }
        DraftCommand::Commit {
            draft,
            type_name,
            commit,
        } => {
            let mut opts = commit_options(type_name, &commit)?;
            opts.run = output_of(current, "commit");
            let outcome = store.draft_commit(&draft, &opts)?;
            out.outcome(store, &outcome, &opts, None)
        }
    }
}

fn commit_options(type_name: Option<TypeName>, c: &CommitArgs) -> Result<CommitOptions> {
    Ok(CommitOptions {
        type_name,
        aliases: c.aliases.clone(),
        description: c.description.clone(),
        metadata: c.metadata.as_deref().map(parse_metadata).transpose()?,
        run: None,
    })
}

/// A commit made inside `run` is its output.
fn output_of(run: Option<&RunRow>, via: &'static str) -> Option<RunOutput> {
    run.map(|r| RunOutput {
        run: r.id.clone(),
        via,
    })
}

/// The distributed id of `upsert` and `finish`: the one given, else the group of the run
/// they are part of (as W&B defaults it).
fn distributed_id_of(given: Option<DistributedId>, run: Option<&RunRow>) -> Result<DistributedId> {
    if let Some(id) = given {
        return Ok(id);
    }
    match run {
        Some(r) if !r.group.is_empty() => DistributedId::new(&r.group),
        Some(r) => Err(Error::invalid(
            "--distributed-id",
            format!(
                "is needed: run {} (ARTIFACTFS_RUN) has no group to default it to",
                r.id
            ),
        )),
        None => Err(Error::invalid(
            "--distributed-id",
            "is needed outside a run with a group (`artifactfs run --group G -- …`)",
        )),
    }
}

/// The version a lineage starts from: one that exists, or a deleted one that runs read or
/// made (by number: `NAME:vN`).
fn lineage_root(conn: &crate::catalog::Db, r: &VersionRef) -> Result<crate::lineage::VersionNode> {
    use crate::catalog::runs;
    use crate::catalog::versions;
    let e = match versions::resolve(conn, r) {
        Ok(v) => {
            let art = versions::require_artifact(conn, &v.artifact)?;
            return Ok(crate::lineage::VersionNode {
                artifact: v.artifact,
                number: v.number,
                type_name: Some(art.type_name),
                deleted: false,
            });
        }
        Err(e) => e,
    };
    let crate::names::Selector::Number(n) = r.selector else {
        return Err(e);
    };
    let name = r.artifact.as_str();
    let recorded = !runs::producers_of(conn, name, n)?.is_empty()
        || !runs::consumers_of(conn, name, n)?.is_empty();
    if !recorded {
        return Err(e);
    }
    Ok(crate::lineage::VersionNode {
        artifact: name.to_string(),
        number: n,
        type_name: versions::artifact(conn, name)?.map(|a| a.type_name),
        deleted: true,
    })
}

/// `run`: runs a command as a run, or one of `run show`, `run begin`, `run end`.
fn run_command(store: &mut Store, out: &Output, args: RunArgs) -> Result<ExitCode> {
    use crate::catalog::runs;
    match args.action {
        None => {
            let spec = run_spec(&args.spec, args.command)?;
            let root = store.root().to_path_buf();
            crate::runs::execute(&mut store.catalog, &root, &spec)
        }
        Some(RunCommand::Show { id }) => {
            let dead = crate::runs::settle(&mut store.catalog)?;
            let run = crate::runs::settled(crate::runs::require(store.conn(), id.as_str())?, &dead);
            let inputs = runs::inputs_of(store.conn(), &run.id)?;
            let outputs = runs::outputs_of(store.conn(), &run.id)?;
            let mut value = run_json(&run);
            value["inputs"] = inputs
                .iter()
                .map(|l| json!({"ref": l.reference(), "via": l.via, "exists": !l.deleted}))
                .collect();
            value["outputs"] = outputs
                .iter()
                .map(|l| {
                    json!({"ref": l.reference(), "via": l.via, "exists": !l.deleted,
                        "unchanged": !l.made})
                })
                .collect();
            out.print(value, || run_text(&run, &inputs, &outputs))?;
            Ok(ExitCode::SUCCESS)
        }
        Some(RunCommand::Begin { spec, pid }) => {
            let spec = run_spec(&spec, Vec::new())?;
            let run = crate::runs::begin(&mut store.catalog, &spec, pid)?;
            out.print(run_json(&run), || run.id.clone())?;
            Ok(ExitCode::SUCCESS)
        }
        Some(RunCommand::End {
            id,
            exit_code,
            crashed,
        }) => {
            let id = match id {
                Some(id) => id.to_string(),
                None => std::env::var(crate::runs::ENV_RUN)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        Error::invalid(
                            "run end",
                            "name the run: give its id, or set ARTIFACTFS_RUN",
                        )
                    })?,
            };
            let how = match crashed {
                true => crate::runs::EndAs::Crashed,
                false => crate::runs::EndAs::Exit(exit_code),
            };
            let run = crate::runs::end(&mut store.catalog, &id, how)?;
            out.print(run_json(&run), || {
                format!("run {} {}", run.id, crate::runs::describe_end(&run))
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_spec(args: &RunSpecArgs, command: Vec<std::ffi::OsString>) -> Result<crate::runs::Spec> {
    Ok(crate::runs::Spec {
        id: args.id.clone(),
        name: args.name.clone(),
        group: args.group.clone(),
        job_type: args.job_type.clone(),
        config: args
            .config
            .as_deref()
            .map(crate::runs::parse_config)
            .transpose()?,
        command,
    })
}

fn dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

/// How long a run took, or has been running: `3.2s`, `4m12s`, `2h05m`.
fn duration(r: &RunRow) -> String {
    let end = r.ended_ns.unwrap_or_else(crate::catalog::now_ns);
    let secs = (end.saturating_sub(r.started_ns)).max(0) as f64 / 1e9;
    match secs {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3600.0 => format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64),
        s => format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        ),
    }
}

/// A run as JSON (docs/JSON.md, "The run object").
fn run_json(r: &RunRow) -> Value {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let config: Value = serde_json::from_str(&r.config).unwrap_or_else(|_| json!({}));
    let command: Value = serde_json::from_str(&r.command).unwrap_or_else(|_| json!([]));
    json!({
        "run": r.id, "name": r.name, "group": opt(&r.group), "job_type": opt(&r.job_type),
        "config": config, "command": command, "host": r.host, "user": r.user, "pid": r.pid,
        "state": r.state, "exit_code": r.exit_code, "signal": r.exit_signal,
        "started": time(r.started_ns), "ended": r.ended_ns.map(time),
    })
}

fn run_text(
    r: &RunRow,
    inputs: &[crate::catalog::runs::Link],
    outputs: &[crate::catalog::runs::Link],
) -> String {
    let command: Vec<String> = serde_json::from_str(&r.command).unwrap_or_default();
    let mut s = format!("run {}\nname: {}", r.id, r.name);
    if !r.group.is_empty() {
        s.push_str(&format!("\ngroup: {}", r.group));
    }
    if !r.job_type.is_empty() {
        s.push_str(&format!("\njob type: {}", r.job_type));
    }
    if r.config != "{}" {
        s.push_str(&format!("\nconfig: {}", r.config));
    }
    if !command.is_empty() {
        s.push_str(&format!("\ncommand: {}", command.join(" ")));
    }
    s.push_str(&format!("\nhost: {}\nuser: {}", r.host, r.user));
    let state = match r.is_running() {
        true => r.state.clone(),
        false => crate::runs::describe_end(r),
    };
    s.push_str(&format!(
        "\nstate: {state}\nstarted: {}",
        time(r.started_ns)
    ));
    if let Some(end) = r.ended_ns {
        s.push_str(&format!("\nended: {} ({})", time(end), duration(r)));
    }
    let deleted = |l: &crate::catalog::runs::Link| if l.deleted { " [deleted]" } else { "" };
    s.push_str(&format!("\ninputs: {}", inputs.len()));
    for l in inputs {
        s.push_str(&format!(
            "\n  {} (by {}){}",
            l.reference(),
            l.via,
            deleted(l)
        ));
    }
    s.push_str(&format!("\noutputs: {}", outputs.len()));
    for l in outputs {
        let how = if l.made { "" } else { ", unchanged" };
        s.push_str(&format!(
            "\n  {} (by {}{how}){}",
            l.reference(),
            l.via,
            deleted(l)
        ));
    }
    s
}

fn out_of(cli: &Cli) -> Output {
    Output {
        json: cli.json,
        quiet: cli.quiet,
    }
}

/// Rows under a header, in columns two spaces apart; no line ends in white space.
fn table(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let mut widths = vec![0; header.len()];
    for row in &all {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    all.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `1 file`, `2 files`: a count with its noun.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

struct Output {
    json: bool,
    /// No warnings (`--quiet`).
    quiet: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text()` (if not empty) as text.
    fn print(&self, value: Value, text: impl FnOnce() -> String) -> Result<()> {
        let s = if self.json {
            serde_json::to_string_pretty(&value).expect("JSON values serialize")
        } else {
            text()
        };
        if !s.is_empty() {
            write_line(&mut io::stdout().lock(), s.as_bytes())?;
        }
        Ok(())
    }

    /// The version a commit made or found. An unchanged commit sets its aliases on the
    /// version found but leaves its description and metadata alone: say which were dropped.
    /// Prints the version a commit made; `replaced` (from `finish`) lists the paths where
    /// its own files replaced what a worker had upserted.
    fn outcome(
        &self,
        store: &Store,
        outcome: &Outcome,
        opts: &CommitOptions,
        replaced: Option<&[String]>,
    ) -> Result<()> {
        let r = outcome.version().reference();
        let (type_name, summary) = query::show(store.conn(), &r.parse()?)?;
        let mut value = version_json(&type_name, &summary);
        let given = [
            ("description", opts.description.is_some()),
            ("metadata", opts.metadata.is_some()),
        ];
        let not_applied: Vec<&str> = match outcome.is_unchanged() {
            true => given.iter().filter(|(_, g)| *g).map(|(k, _)| *k).collect(),
            false => Vec::new(),
        };
        value["unchanged"] = Value::Bool(outcome.is_unchanged());
        value["not_applied"] = json!(not_applied);
        if let Some(replaced) = replaced {
            value["replaced"] = json!(replaced);
        }
        self.print(value, || {
            let flags: Vec<String> = not_applied.iter().map(|k| format!("--{k}")).collect();
            let line = match (outcome.is_unchanged(), flags.len()) {
                (false, _) => r,
                (true, 0) => format!("{r} (unchanged)"),
                (true, n) => format!(
                    "{r} (unchanged; {} {} not applied: {r} keeps its own)",
                    flags.join(" and "),
                    if n == 1 { "was" } else { "were" }
                ),
            };
            match replaced {
                Some(paths) if !paths.is_empty() => format!(
                    "{line}\nreplaced what a worker had upserted at {}: {}",
                    plural(paths.len() as u64, "path", "paths"),
                    paths.join(", ")
                ),
                _ => line,
            }
        })
    }

    fn changes(&self, changes: &[(Change, Vec<u8>)]) -> Result<()> {
        let (a, m, d) = split_changes(changes);
        if self.json {
            return self.print(
                json!({"added": a, "modified": m, "removed": d}),
                String::new,
            );
        }
        let mut stdout = io::stdout().lock();
        for (c, p) in changes {
            let mut line = format!("{} ", change_code(*c)).into_bytes();
            line.extend_from_slice(p);
            write_line(&mut stdout, &line)?;
        }
        Ok(())
    }
}

/// `ls --long` of one entry: `TYPE SIZE SHA256 PATH`, then ` -> URI` or ` -> TARGET`; `-` where
/// there is no digest (a symlink, a reference without checksum).
fn long_line(path: &[u8], e: &TreeEntry) -> String {
    let path = String::from_utf8_lossy(path);
    match &e.item {
        Item::File { blob, size } => format!("file {size} {blob} {path}"),
        Item::Symlink { target } => {
            let t = String::from_utf8_lossy(target);
            format!("symlink {} - {path} -> {t}", target.len())
        }
        Item::Reference(r) => {
            let digest = if r.checksum {
                r.digest.to_hex()
            } else {
                "-".into()
            };
            format!("reference {} {digest} {path} -> {}", r.size, r.uri)
        }
        Item::Dir { .. } => format!("dir 0 - {path}"),
    }
}

fn long_json(path: &[u8], e: &TreeEntry) -> Value {
    let (kind, size, sha256, target, uri) = match &e.item {
        Item::File { blob, size } => ("file", *size, Some(blob.to_hex()), None, None),
        Item::Symlink { target } => (
            "symlink",
            target.len() as u64,
            None,
            Some(json_path(target)),
            None,
        ),
        Item::Reference(r) => (
            "reference",
            r.size,
            r.checksum.then(|| r.digest.to_hex()),
            None,
            Some(r.uri.clone()),
        ),
        Item::Dir { .. } => ("dir", 0, None, None, None),
    };
    json!({"path": json_path(path), "type": kind, "size": size, "sha256": sha256,
        "target": target, "uri": uri})
}

/// What `log` and `draft add` were given to add.
fn inputs(
    store: &Store,
    paths: Vec<PathBuf>,
    refs: &ReferenceArgs,
    overwrite: bool,
) -> Result<Inputs> {
    if refs.references.is_empty() {
        return Ok(Inputs {
            overwrite,
            ..Inputs::paths(&paths)
        });
    }
    let off_limits = OffLimits::of(store.root())?;
    Ok(Inputs {
        overwrite,
        paths,
        references: ingest::references(&refs.references, &off_limits)?,
        checksum: !refs.no_checksum,
        max_objects: refs.max_objects,
        off_limits: Some(off_limits),
    })
}

fn verify_output(out: &Output, report: &maintenance::VerifyReport) -> Result<ExitCode> {
    use crate::blobs::BlobHealth;
    let describe = |h: &BlobHealth| match h {
        BlobHealth::Intact => "intact".to_string(),
        BlobHealth::Missing => "missing".to_string(),
        BlobHealth::Mismatch { actual } => format!("corrupted (content hashes to {actual})"),
        BlobHealth::Damaged { why } => format!("corrupted ({why})"),
    };
    if out.json {
        let damaged: Vec<Value> = report
            .damaged
            .iter()
            .map(|d| {
                let (problem, actual) = match &d.health {
                    BlobHealth::Mismatch { actual } => ("corrupted", Some(actual.to_hex())),
                    BlobHealth::Missing => ("missing", None),
                    BlobHealth::Intact => ("intact", None),
                    BlobHealth::Damaged { .. } => ("corrupted", None),
                };
                json!({"blob": d.blob.to_hex(), "problem": problem, "actual": actual,
                    "used_by": d.used_by.iter().map(|(r, p)| json!({"ref": r, "path": json_path(p)})).collect::<Vec<_>>(),
                    "drafts": d.drafts})
            })
            .collect();
        let drifted: Vec<Value> = report
            .drifted
            .iter()
            .map(|d| {
                json!({"uri": d.uri, "problem": if d.vanished { "vanished" } else { "changed" },
                    "why": d.why,
                    "used_by": d.used_by.iter().map(|(r, p)| json!({"ref": r, "path": json_path(p)})).collect::<Vec<_>>(),
                    "drafts": d.drafts})
            })
            .collect();
        out.print(
            json!({"checked": report.checked, "damaged": damaged,
                "references_checked": report.references_checked, "drifted": drifted}),
            String::new,
        )?;
    } else {
        let users = |used_by: &[(String, Vec<u8>)], drafts: &[String]| -> String {
            let users: Vec<String> = used_by
                .iter()
                .map(|(r, p)| format!("{r} ({})", String::from_utf8_lossy(p)))
                .chain(drafts.iter().map(|name| format!("draft {name}")))
                .collect();
            users.join(", ")
        };
        for d in &report.damaged {
            let (health, users) = (describe(&d.health), users(&d.used_by, &d.drafts));
            eprintln!("blob {} is {health}; used by {users}", d.blob);
        }
        for d in &report.drifted {
            let users = users(&d.used_by, &d.drafts);
            eprintln!("reference {} {}; used by {users}", d.uri, d.why);
        }
        println!(
            "checked {}: {} damaged",
            plural(report.checked, "blob", "blobs"),
            report.damaged.len()
        );
        if report.references_checked > 0 {
            println!(
                "checked {}: {} changed or vanished",
                plural(report.references_checked, "reference", "references"),
                report.drifted.len()
            );
        }
    }
    Ok(if report.damaged.is_empty() && report.drifted.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DAMAGED)
    })
}

/// A path for JSON, which holds only Unicode: bytes that are not UTF-8 are written as
/// `\xNN`, so that names differing only there stay apart (a UTF-8 name that spells out
/// `\xNN` itself looks the same; it is left as it is).
fn json_path(p: &[u8]) -> String {
    let mut s = String::with_capacity(p.len());
    for chunk in p.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

fn split_changes(changes: &[(Change, Vec<u8>)]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut a, mut m, mut d) = (Vec::new(), Vec::new(), Vec::new());
    for (c, p) in changes {
        let p = json_path(p);
        match c {
            Change::Added => a.push(p),
            Change::Modified => m.push(p),
            Change::Removed => d.push(p),
        }
    }
    (a, m, d)
}

fn version_json(type_name: &str, v: &VersionSummary) -> Value {
    let meta: Value = serde_json::from_str(&v.version.metadata).unwrap_or(Value::Null);
    json!({
        "ref": v.version.reference(),
        "artifact": v.version.artifact,
        "version": format!("v{}", v.version.number),
        "type": type_name,
        "digest": v.version.digest.to_hex(),
        "files": v.files,
        "size": v.bytes,
        "references": v.references,
        "aliases": v.aliases,
        "description": v.version.description,
        "metadata": meta,
        "created": time(v.version.created_ns),
        "base": v.version.base_number.map(|n| format!("{}:v{n}", v.version.artifact)),
    })
}

fn show_text(type_name: &str, v: &VersionSummary) -> String {
    let mut s = format!(
        "{}\ntype: {type_name}\ndigest: {}\nfiles: {}\nsize: {} bytes\naliases: {}\ncreated: {}",
        v.version.reference(),
        v.version.digest,
        v.files,
        v.bytes,
        v.aliases.join(", "),
        time(v.version.created_ns)
    );
    if let Some(b) = v.version.base_number {
        s.push_str(&format!("\nbase: {}:v{b}", v.version.artifact));
    }
    if v.references > 0 {
        s.push_str(&format!(
            "\nreferences: {} (files whose content stays outside the store)",
            v.references
        ));
    }
    if !v.version.description.is_empty() {
        s.push_str(&format!("\ndescription: {}", v.version.description));
    }
    if v.version.metadata != "{}" {
        s.push_str(&format!("\nmetadata: {}", v.version.metadata));
    }
    s
}

/// Writes raw bytes and a newline; a closed pipe (`| head`) ends output quietly.
fn write_line(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    write_raw(out, bytes)?;
    write_raw(out, b"\n")
}

/// Writes raw bytes; a closed pipe (`| head`) ends output quietly.
fn write_raw(out: &mut impl Write, bytes: &[u8]) -> Result<()> {
    match out.write_all(bytes) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::io("standard output", e)),
        _ => Ok(()),
    }
}

fn print_doctor(r: &crate::doctor::Report, json: bool) -> Result<()> {
    use crate::doctor::Severity;
    use indicatif::HumanBytes;
    if json {
        let findings: Vec<Value> = r
            .findings
            .iter()
            .map(|f| {
                json!({"severity": match f.severity { Severity::Problem => "problem", Severity::Warning => "warning" },
                       "what": f.what, "why": f.why, "fix": f.fix})
            })
            .collect();
        let mounts: Vec<Value> = r
            .mounts
            .iter()
            .map(|m| {
                json!({"mountpoint": m.mountpoint, "answering": m.answering,
                       "server_pid": m.server_pid, "passthrough": m.passthrough})
            })
            .collect();
        let v = json!({
            "store": r.store.display().to_string(), "exists": r.exists,
            "schema": r.schema, "supported_schema": r.supported_schema,
            "catalog_bytes": r.catalog_bytes, "blob_count": r.blobs, "blob_bytes": r.blob_bytes,
            "free_bytes": r.free_bytes, "artifact_count": r.artifacts, "draft_count": r.drafts,
            "shared": r.shared.as_ref().map(|s| json!({"catalog": s.catalog, "objects": s.objects,
                "cache_size": s.cache_size})),
            "mounts": mounts, "findings": findings,
        });
        println!("{v}");
        return Ok(());
    }
    let mut out = vec![format!("store: {}", r.store.display())];
    if r.exists {
        let schema = r.schema.map_or("unknown".into(), |s| s.to_string());
        match &r.shared {
            Some(sh) => {
                out.push(format!(
                    "  catalog: {}, schema {schema} (this build reads up to {})",
                    sh.catalog, r.supported_schema
                ));
                out.push(format!("  objects: {}", sh.objects));
                out.push(format!(
                    "  cache: {} blobs ({}) of at most {}",
                    r.blobs,
                    HumanBytes(r.blob_bytes),
                    HumanBytes(sh.cache_size)
                ));
            }
            None => {
                out.push(format!(
                    "  catalog: {}, schema {schema} (this build reads up to {})",
                    HumanBytes(r.catalog_bytes),
                    r.supported_schema
                ));
                out.push(format!(
                    "  blobs: {} ({})",
                    r.blobs,
                    HumanBytes(r.blob_bytes)
                ));
            }
        }
        if let (Some(a), Some(d)) = (r.artifacts, r.drafts) {
            out.push(format!("  artifacts: {a}, drafts: {d}"));
        }
        if let Some(free) = r.free_bytes {
            out.push(format!("  free on its filesystem: {}", HumanBytes(free)));
        }
    }
    if r.mounts.is_empty() {
        out.push("mounts: none".into());
    } else {
        out.push("mounts:".into());
        for m in &r.mounts {
            out.push(if m.answering {
                format!(
                    "  {} (server pid {}, kernel passthrough {})",
                    m.mountpoint,
                    m.server_pid.map_or("unknown".into(), |p| p.to_string()),
                    m.passthrough.as_deref().unwrap_or("unknown")
                )
            } else {
                format!("  {} (not answering)", m.mountpoint)
            });
        }
    }
    if r.findings.is_empty() {
        out.push("nothing wrong found".into());
    }
    for f in &r.findings {
        let level = match f.severity {
            Severity::Problem => "problem",
            Severity::Warning => "warning",
        };
        out.push(format!("{level}: {}: {}\n  fix: {}", f.what, f.why, f.fix));
    }
    println!("{}", out.join("\n"));
    Ok(())
}

fn copy_store(cli: &Cli, src: &Path, dest: &Path) -> Result<ExitCode> {
    let at = |path: &Path| -> Result<store_dir::Location> {
        Ok(store_dir::Location {
            path: std::path::absolute(path).at(path)?,
            origin: store_dir::Origin::Flag,
        })
    };
    let (src, dest) = (at(src)?, at(dest)?);
    src.require()?;
    dest.prepare()?;
    let mut from = Store::open(&src.path)?;
    let mut into = Store::open(&dest.path)?;
    let copied = crate::copy_store::copy_store(&mut from, &mut into)?;
    out_of(cli).print(
        json!({"blobs": copied.blobs, "artifacts": copied.artifacts, "versions": copied.versions,
            "drafts": copied.drafts, "staged_files": copied.staged, "rows": copied.rows}),
        || {
            format!(
                "copied {}, {}, {} and {} ({}) into {}",
                plural(copied.artifacts, "artifact", "artifacts"),
                plural(copied.versions, "version", "versions"),
                plural(copied.drafts, "draft", "drafts"),
                plural(copied.blobs, "blob", "blobs"),
                plural(copied.staged, "staged file", "staged files"),
                dest.path.display()
            )
        },
    )?;
    Ok(ExitCode::SUCCESS)
}
