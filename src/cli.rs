//! The command line, as clap derive types. Value parsers reject bad names before any command
//! runs, quoting the value and the rule it breaks.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::names::{
    AliasName, AliasOwner, ArtifactName, DistributedId, DraftName, RunId, TypeName, VersionRef,
};
use crate::runs::RunName;

/// Versioned datasets and models: a local artifact store you can mount.
#[derive(Parser, Debug)]
#[command(name = "artifactfs", version, about)]
pub struct Cli {
    /// Store directory [default: $ARTIFACTFS_STORE, else $XDG_DATA_HOME/artifactfs, else
    /// ~/.local/share/artifactfs]
    #[arg(long, global = true, value_name = "DIR")]
    pub store: Option<PathBuf>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bars and no warnings; results and errors are still printed
    #[arg(long, short, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Parses the command line; a mistyped command gets the closest one as a tip, as clap gives
/// for close spellings (and also for swapped letters: `lgo` -> `log`).
pub fn parse(args: Vec<std::ffi::OsString>) -> Cli {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let is_run = command_word(&args) == Some("run");
    let mut err = match Cli::try_parse_from(args) {
        Ok(cli) => return cli,
        Err(e) => e,
    };
    // `artifactfs run python train.py`: the command goes after `--`.
    if is_run && err.kind() == ErrorKind::UnknownArgument {
        err.insert(
            ContextKind::Suggested,
            ContextValue::StyledStrs(vec![
                "put the command to run after `--`: artifactfs run [OPTIONS] -- CMD ARGS...".into(),
            ]),
        );
    }
    let typed = match err.get(ContextKind::InvalidSubcommand) {
        Some(ContextValue::String(t)) if err.kind() == ErrorKind::InvalidSubcommand => t.clone(),
        _ => err.exit(),
    };
    if err.get(ContextKind::SuggestedSubcommand).is_none() {
        let cmd = Cli::command();
        let names: Vec<&str> = cmd
            .get_subcommands()
            .flat_map(|c| std::iter::once(c).chain(c.get_subcommands()))
            .map(|c| c.get_name())
            .collect();
        if let Some(close) = crate::names::closest(&typed, names) {
            err.insert(
                ContextKind::SuggestedSubcommand,
                ContextValue::Strings(vec![close.to_string()]),
            );
        }
    }
    err.exit()
}

/// The command word of a command line: its first argument that is neither an option nor
/// the value of `--store`.
fn command_word(args: &[std::ffi::OsString]) -> Option<&str> {
    let mut words = args.iter().skip(1).map(|a| a.to_str());
    while let Some(w) = words.next() {
        match w? {
            "--store" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
    None
}

#[derive(Args, Debug, Clone, Default)]
pub struct CommitArgs {
    /// Alias to put on the new version (repeatable); moves it from any other version
    #[arg(long = "alias", value_name = "ALIAS")]
    pub aliases: Vec<AliasName>,
    /// Free-text description of the version
    #[arg(long)]
    pub description: Option<String>,
    /// A JSON object stored with the version, like '{"epochs": 3}'
    #[arg(long, value_name = "JSON")]
    pub metadata: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Log PATHs as the whole new version of NAME (a directory adds its contents)
    Log {
        /// The artifact to log a version of (created on its first version)
        name: ArtifactName,
        /// Files and directories that form the version (a directory adds its contents)
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// When two inputs give the same path, keep the one named last instead of refusing
        #[arg(long)]
        overwrite: bool,
        /// Artifact type, fixed when the artifact is created (dataset, model, …)
        /// [default: the artifact's type; dataset for a new artifact]
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// Stage a new version step by step
    #[command(subcommand)]
    Draft(DraftCommand),
    /// Add PATHs to the distributed draft NAME@ID, creating it if needed
    Upsert {
        /// The artifact the distributed draft will be a version of
        name: ArtifactName,
        /// Files and directories to add to the draft (a directory adds its contents)
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// When two inputs give the same path, keep the one named last instead of refusing
        #[arg(long)]
        overwrite: bool,
        /// Artifact type, fixed when the artifact is created (dataset, model, …)
        /// [default: the draft's or the artifact's type; dataset for a new artifact]
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        /// The id all writers of one distributed version share (W&B's distributed_id)
        /// [default: the group of the run in $ARTIFACTFS_RUN]
        #[arg(long, value_name = "ID")]
        distributed_id: Option<DistributedId>,
    },
    /// Add any last PATHs to NAME@ID and commit it; the id is sealed afterwards
    Finish {
        /// The artifact the distributed draft becomes a version of
        name: ArtifactName,
        /// Last files and directories to add before committing (optional)
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// When two inputs give the same path, keep the one named last instead of refusing
        #[arg(long)]
        overwrite: bool,
        /// Artifact type, fixed when the artifact is created (dataset, model, …)
        /// [default: the draft's or the artifact's type; dataset for a new artifact]
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        /// The id all writers of one distributed version share (W&B's distributed_id)
        /// [default: the group of the run in $ARTIFACTFS_RUN]
        #[arg(long, value_name = "ID")]
        distributed_id: Option<DistributedId>,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// List artifacts, or the versions of NAME with their aliases
    List {
        /// An artifact whose versions to list [default: list the artifacts]
        name: Option<ArtifactName>,
    },
    /// Show a version: digest, size, file count, aliases, metadata
    Show {
        /// A version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest (not a --reference URI)
        #[arg(value_name = "REF")]
        reference: VersionRef,
    },
    /// List every file path of a version under PREFIX
    Ls {
        /// A version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest (not a --reference URI)
        #[arg(value_name = "REF")]
        reference: VersionRef,
        /// A directory (or file) of the version to list under [default: all of it]
        prefix: Option<std::ffi::OsString>,
        /// Each entry's type (file, symlink, reference), size and SHA-256, and a reference's
        /// URI or a symlink's target
        #[arg(short, long)]
        long: bool,
    },
    /// Write one file of a version to standard output
    Cat {
        /// A version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest (not a --reference URI)
        #[arg(value_name = "REF")]
        reference: VersionRef,
        /// The file's path in the version
        path: std::ffi::OsString,
    },
    /// Files added (A), removed (D) and modified (M) from the first version to the second
    Diff {
        /// The version to compare from: NAME:vN, NAME:ALIAS, or NAME for NAME:latest
        #[arg(value_name = "REF")]
        from: VersionRef,
        /// The version to compare to, in the same form
        #[arg(value_name = "REF")]
        to: VersionRef,
    },
    /// Write a version out into directory DEST (new or empty, unless --delete or --merge)
    Get {
        /// A version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest (not a --reference URI)
        #[arg(value_name = "REF")]
        reference: VersionRef,
        /// The directory to write the version into (created if missing)
        dest: PathBuf,
        /// DEST may hold files: make it exactly the version, removing what the version does
        /// not have (as rsync --delete does)
        #[arg(long, conflicts_with = "merge")]
        delete: bool,
        /// DEST may hold files: write the version over them and keep those it does not have
        #[arg(long)]
        merge: bool,
    },
    /// Set or remove aliases
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Delete a version (refused while an alias other than latest names it)
    Delete {
        /// A version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest (not a --reference URI)
        #[arg(value_name = "REF")]
        reference: VersionRef,
    },
    /// Re-hash stored blobs and report any that are missing or damaged
    Verify {
        /// Check only this version's blobs and references: NAME:vN, NAME:ALIAS, or NAME
        /// [default: every blob and reference of the store]
        #[arg(value_name = "REF")]
        reference: Option<VersionRef>,
    },
    /// Remove blobs that no version and no draft references
    Gc {
        /// On a shared store, keep unreferenced objects younger than this (an upload in
        /// flight on another host is): 90s, 30m, 1h, 2d [default: 1h]
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        grace: Option<std::time::Duration>,
    },
    /// Run CMD as a run: record it, with what it reads and makes, and exit with its status
    /// (also: run show, run begin, run end)
    Run(RunArgs),
    /// List runs, oldest first
    Runs,
    /// Show the runs and versions upstream and downstream of a version
    Lineage {
        /// A version: NAME:vN (also a deleted one), NAME:ALIAS, or NAME for NAME:latest
        #[arg(value_name = "REF")]
        reference: VersionRef,
        /// How many runs deep to go upstream and downstream
        #[arg(long, value_name = "N", default_value_t = crate::lineage::DEFAULT_DEPTH)]
        depth: u32,
        /// Print the graph in Graphviz's DOT language instead
        #[arg(long)]
        dot: bool,
        /// Also draw the graph into FILE as SVG (needs Graphviz)
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Also draw the graph into FILE as PNG (needs Graphviz)
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
    },
    /// Mount the store at MOUNTPOINT: versions as read-only directories, drafts under drafts/
    Mount {
        /// An empty directory to mount the store on
        mountpoint: PathBuf,
        /// Stay attached and serve until unmounted (for systemd and tests)
        #[arg(long)]
        foreground: bool,
        /// Mount even if MOUNTPOINT holds files, hiding them until unmounted
        #[arg(long)]
        nonempty: bool,
        /// Versions only, no drafts/: files open without asking the server, for training
        /// and browsing hosts
        #[arg(long)]
        read_only: bool,
    },
    /// Unmount MOUNTPOINT and wait for its server to finish
    Umount {
        /// Where the store is mounted
        mountpoint: PathBuf,
    },
    /// Create a store in DIR (the store directory by default), or find the one there; other
    /// commands that add versions create it on first use, in a new or empty directory only
    Init {
        /// Directory to make the store in [default: the store directory]; for a shared
        /// store, this host's side of it: its config, the cache of blobs, drafts' files
        dir: Option<PathBuf>,
        /// Make DIR the local side of a shared store whose catalog is this PostgreSQL
        /// database (postgres://USER@HOST:PORT/DB; libpq's PG* variables fill in the rest)
        #[arg(long, value_name = "URL", requires = "objects")]
        catalog: Option<String>,
        /// The shared store's blobs: an S3-compatible bucket and prefix (s3://BUCKET/PREFIX;
        /// credentials and endpoint from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
        /// AWS_ENDPOINT_URL, AWS_REGION)
        #[arg(long, value_name = "URL", requires = "catalog")]
        objects: Option<String>,
        /// How much of this host's disk the cache of the shared store's blobs may take, least
        /// recently used first out [default: 10G]
        #[arg(long, value_name = "SIZE", requires = "catalog",
              value_parser = crate::store_config::parse_size)]
        cache_size: Option<u64>,
    },
    /// Copy the embedded store SRC into DEST (a new store, or one made with `init --catalog`
    /// for sharing), with version numbers, aliases, metadata and drafts as they were
    CopyStore {
        /// The store to copy (left as it was): an embedded store, or a shared store's side on
        /// this host, whose every blob is then downloaded
        src: PathBuf,
        /// The store to copy into: missing, empty, or a store with no artifacts or drafts yet
        dest: PathBuf,
    },
    /// Check the store and this machine: sizes, schema, mounts, kernel passthrough, and
    /// anything wrong with a fix for it (exit status 3 if something is)
    Doctor,
    /// Print a completion script for SHELL (bash: save it as
    /// /usr/share/bash-completion/completions/artifactfs)
    Completions {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
    /// Write man pages, artifactfs.1 and one per command (artifactfs-log.1, …), into DIR
    Man {
        /// The directory to write the pages into (created if missing), such as
        /// ~/.local/share/man/man1
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum DraftCommand {
    /// Start a draft: of NAME from its latest version, or of NAME@ID (empty) for distributed writers
    New {
        /// The draft: NAME, or NAME@ID for a distributed draft
        draft: DraftName,
        /// Artifact type for the commit (must match an existing artifact's)
        /// [default: the artifact's type; dataset for a new artifact]
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        /// Start from this version of the same artifact: NAME:vN, NAME:ALIAS or NAME
        #[arg(long, value_name = "REF", conflicts_with = "empty")]
        from: Option<VersionRef>,
        /// Start with no files
        #[arg(long)]
        empty: bool,
    },
    /// Add files or directory contents to a draft (re-adding a path replaces it)
    Add {
        /// The draft: NAME, or NAME@ID
        draft: DraftName,
        /// Files and directories to add (a directory adds its contents)
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// When two inputs give the same path, keep the one named last instead of refusing
        #[arg(long)]
        overwrite: bool,
        /// Destination in the draft: the file's path for one file, else a directory prefix
        #[arg(long = "as", value_name = "DEST")]
        dest: Option<String>,
    },
    /// Remove files, or everything under a directory path, from a draft
    Rm {
        /// The draft: NAME, or NAME@ID
        draft: DraftName,
        /// Paths in the draft to remove (a directory's path removes everything under it)
        #[arg(required = true)]
        paths: Vec<std::ffi::OsString>,
    },
    /// What the draft adds, modifies and removes against its base
    Status {
        /// The draft: NAME, or NAME@ID
        draft: DraftName,
    },
    /// List drafts
    List,
    /// Throw a draft away
    Discard {
        /// The draft: NAME, or NAME@ID
        draft: DraftName,
    },
    /// Commit a draft as the next version
    Commit {
        /// The draft: NAME, or NAME@ID (a distributed id is sealed once committed)
        draft: DraftName,
        /// Type for a new artifact (must match an existing one)
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        #[command(flatten)]
        commit: CommitArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum AliasCommand {
    /// Point ALIAS at the version REF names, moving it if it is elsewhere
    Set {
        /// The version: NAME:vN, NAME:ALIAS, or NAME for NAME:latest
        #[arg(value_name = "REF")]
        reference: VersionRef,
        /// The alias to set (not latest, which follows the newest version by itself)
        alias: AliasName,
    },
    /// Remove ALIAS, as set: from the version REF (NAME:vN, NAME:ALIAS), or from whichever
    /// version of NAME it names
    Rm {
        /// The version the alias is on (NAME:vN, NAME:ALIAS; refused if it is elsewhere), or
        /// a bare NAME for wherever it is
        #[arg(value_name = "REF")]
        owner: AliasOwner,
        /// The alias to remove
        alias: AliasName,
    },
}

/// `run`: a command to run as a run, or one of the subcommands.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct RunArgs {
    #[command(subcommand)]
    pub action: Option<RunCommand>,
    #[command(flatten)]
    pub spec: RunSpecArgs,
    /// The command to run and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,
}

/// What a new run records about itself.
#[derive(Args, Debug, Clone, Default)]
pub struct RunSpecArgs {
    /// The run's id [default: 8 random characters]; letters, digits, '.', '_' and '-'
    #[arg(long, value_name = "ID")]
    pub id: Option<RunId>,
    /// A name to show for the run, any text [default: the command's file names]
    #[arg(long, value_name = "NAME")]
    pub name: Option<RunName>,
    /// A group of runs (W&B's group); also the default distributed id of upsert and finish
    #[arg(long, value_name = "GROUP")]
    pub group: Option<DistributedId>,
    /// The kind of work (train, eval, preprocess, …)
    #[arg(long = "job-type", value_name = "TYPE")]
    pub job_type: Option<TypeName>,
    /// A JSON object of settings, like '{"lr": 0.01}'
    #[arg(long, value_name = "JSON")]
    pub config: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RunCommand {
    /// Show a run with the versions it read and made
    Show {
        /// The run's id
        id: RunId,
    },
    /// Record a run for processes started otherwise (SLURM, torchrun); prints its id, to
    /// pass on as ARTIFACTFS_RUN
    Begin {
        #[command(flatten)]
        spec: RunSpecArgs,
        /// The run lives as long as process PID of this machine (such as the job's shell,
        /// $$); without it, until `run end`
        #[arg(long, value_name = "PID")]
        pid: Option<u32>,
    },
    /// Record the end of a run begun with `run begin`
    End {
        /// The run's id [default: $ARTIFACTFS_RUN]
        id: Option<RunId>,
        /// The job's exit status: 0 marks the run finished, anything else failed
        #[arg(
            long,
            value_name = "N",
            default_value_t = 0,
            conflicts_with = "crashed"
        )]
        exit_code: i32,
        /// Mark the run crashed (its job was lost or killed)
        #[arg(long)]
        crashed: bool,
    },
}

/// Content recorded where it lives instead of copied into the store.
#[derive(Args, Debug, Clone)]
pub struct ReferenceArgs {
    /// Record data where it lives, by URI (file:///abs/path), instead of copying it in: a file
    /// as one entry, a directory as one per file below it, versioned by SHA-256, size and
    /// mtime (repeatable; W&B's add_reference; not a version REF)
    #[arg(long = "reference", value_name = "URI")]
    pub references: Vec<String>,
    /// Record references by URI alone: nothing is hashed, and reads are not checked
    #[arg(long, requires = "references")]
    pub no_checksum: bool,
    /// Refuse a directory reference holding more files than N
    #[arg(
        long,
        value_name = "N",
        default_value_t = crate::reference::DEFAULT_MAX_OBJECTS,
        requires = "references"
    )]
    pub max_objects: u64,
}

/// A duration as `gc --grace` takes it: a number of seconds, or one with a unit (s, m, h, d).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{text:?}: expected a number with s, m, h or d (90s, 1h)"
            ));
        }
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number with s, m, h or d (90s, 1h)"))?;
    Ok(std::time::Duration::from_secs(n.saturating_mul(scale)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument and option of every command has a description in --help and the
    /// man pages.
    #[test]
    fn every_argument_is_described() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && !["help", "version"].contains(&id) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                check(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        check(&Cli::command(), "artifactfs", &mut missing);
        assert!(missing.is_empty(), "not described: {missing:#?}");
    }
}
