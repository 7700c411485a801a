//! The command line, as clap derive types. Value parsers reject bad names before any command
//! runs, quoting the value and the rule it breaks.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::names::{AliasName, ArtifactName, DistributedId, DraftName, TypeName, VersionRef};

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
        name: ArtifactName,
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// Artifact type, fixed when the artifact is created (dataset, model, …)
        #[arg(long = "type", value_name = "TYPE")]
        type_name: TypeName,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// Stage a new version step by step
    #[command(subcommand)]
    Draft(DraftCommand),
    /// Add PATHs to the distributed draft NAME@ID, creating it if needed
    Upsert {
        name: ArtifactName,
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        #[arg(long = "type", value_name = "TYPE")]
        type_name: TypeName,
        #[arg(long)]
        distributed_id: DistributedId,
    },
    /// Add any last PATHs to NAME@ID and commit it; the id is sealed afterwards
    Finish {
        name: ArtifactName,
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        #[arg(long = "type", value_name = "TYPE")]
        type_name: TypeName,
        #[arg(long)]
        distributed_id: DistributedId,
        #[command(flatten)]
        commit: CommitArgs,
    },
    /// List artifacts, or the versions of NAME with their aliases
    List { name: Option<ArtifactName> },
    /// Show a version: digest, size, file count, aliases, metadata
    Show { reference: VersionRef },
    /// List every file path of a version under PREFIX
    Ls {
        reference: VersionRef,
        prefix: Option<std::ffi::OsString>,
        /// Each entry's type (file, symlink, reference), size and SHA-256, and a reference's
        /// URI or a symlink's target
        #[arg(short, long)]
        long: bool,
    },
    /// Write one file of a version to standard output
    Cat {
        reference: VersionRef,
        path: std::ffi::OsString,
    },
    /// Files added (A), removed (D) and modified (M) from the first version to the second
    Diff { from: VersionRef, to: VersionRef },
    /// Write a version out into directory DEST
    Get {
        reference: VersionRef,
        dest: PathBuf,
    },
    /// Set or remove aliases
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Delete a version (refused while an alias other than latest names it)
    Delete { reference: VersionRef },
    /// Re-hash stored blobs and report any that are missing or damaged
    Verify { reference: Option<VersionRef> },
    /// Remove blobs that no version and no draft references
    Gc,
    /// Mount the store at MOUNTPOINT: versions as read-only directories, drafts under drafts/
    Mount {
        mountpoint: PathBuf,
        /// Stay attached and serve until unmounted (for systemd and tests)
        #[arg(long)]
        foreground: bool,
        /// Versions only, no drafts/: files open without asking the server, for training
        /// and browsing hosts
        #[arg(long)]
        read_only: bool,
    },
    /// Unmount MOUNTPOINT and wait for its server to finish
    Umount { mountpoint: PathBuf },
    /// Check the store and this machine: sizes, schema, mounts, kernel passthrough, and
    /// anything wrong with a fix for it (exit status 3 if something is)
    Doctor,
    /// Print a completion script for SHELL (bash: save it as
    /// /usr/share/bash-completion/completions/artifactfs)
    Completions { shell: clap_complete::Shell },
    /// Write man pages, artifactfs.1 and one per command (artifactfs-log.1, …), into DIR
    Man { dir: PathBuf },
}

#[derive(Subcommand, Debug)]
pub enum DraftCommand {
    /// Start a draft: of NAME from its latest version, or of NAME@ID (empty) for distributed writers
    New {
        draft: DraftName,
        #[arg(long = "type", value_name = "TYPE")]
        type_name: Option<TypeName>,
        /// Start from this version of the same artifact
        #[arg(long, value_name = "REF", conflicts_with = "empty")]
        from: Option<VersionRef>,
        /// Start with no files
        #[arg(long)]
        empty: bool,
    },
    /// Add files or directory contents to a draft (re-adding a path replaces it)
    Add {
        draft: DraftName,
        #[arg(required_unless_present = "references")]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        references: ReferenceArgs,
        /// Destination in the draft: the file's path for one file, else a directory prefix
        #[arg(long = "as", value_name = "DEST")]
        dest: Option<String>,
    },
    /// Remove files, or everything under a directory path, from a draft
    Rm {
        draft: DraftName,
        #[arg(required = true)]
        paths: Vec<std::ffi::OsString>,
    },
    /// What the draft adds, modifies and removes against its base
    Status { draft: DraftName },
    /// List drafts
    List,
    /// Throw a draft away
    Discard { draft: DraftName },
    /// Commit a draft as the next version
    Commit {
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
        reference: VersionRef,
        alias: AliasName,
    },
    /// Remove ALIAS from artifact NAME
    Rm {
        name: ArtifactName,
        alias: AliasName,
    },
}

/// Content recorded where it lives instead of copied into the store.
#[derive(Args, Debug, Clone)]
pub struct ReferenceArgs {
    /// Record file:///abs/path without copying it: a file as one entry, a directory as one per
    /// file below it, versioned by SHA-256, size and mtime (repeatable)
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
