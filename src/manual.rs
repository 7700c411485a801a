//! The man pages: what clap knows of each command (synopsis, arguments, options, subcommands)
//! and what it does not — examples, the environment, the files of a store, the mount's layout
//! and how to commit through it.

use std::fs;
use std::path::Path;

use clap_mangen::Man;
use roff::{Roff, bold, roman};

use crate::error::{IoContext, Result};

/// Examples of each page, by the command's words after `artifactfs`: what each does, then the
/// command line.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "",
        &[
            (
                "Make a store and log a directory as the first version of mnist:",
                "artifactfs init && artifactfs log mnist data/",
            ),
            (
                "Mount the store and train on the latest version in place:",
                "mkdir -p ~/art && artifactfs mount ~/art && python train.py --data ~/art/mnist/latest/",
            ),
            (
                "Stage a change through the mount and commit it:",
                "mkdir ~/art/drafts/mnist && cp new.csv ~/art/drafts/mnist/ && echo commit > ~/art/drafts/mnist/.commit",
            ),
        ],
    ),
    (
        "init",
        &[
            (
                "Make the store $ARTIFACTFS_STORE (or the default) names:",
                "artifactfs init",
            ),
            (
                "Make a store in a directory of its own:",
                "artifactfs init /srv/artifacts",
            ),
            (
                "Make this host's side of a store shared through PostgreSQL and S3:",
                "artifactfs init ~/team-store --catalog postgres://art@db.internal/artifacts --objects s3://ml-artifacts/team",
            ),
        ],
    ),
    (
        "copy-store",
        &[(
            "Move an embedded store into a shared one, numbers and aliases as they were:",
            "artifactfs copy-store ~/.local/share/artifactfs ~/team-store",
        )],
    ),
    (
        "log",
        &[
            (
                "Log a directory's contents as the next version of mnist:",
                "artifactfs log mnist data/",
            ),
            (
                "A model, with an alias, a description and metadata:",
                "artifactfs log resnet ckpt/ --type model --alias best --description \"epoch 10\" --metadata '{\"acc\": 0.93}'",
            ),
            (
                "Record files on NFS without copying them:",
                "artifactfs log imagenet --reference file:///nfs/imagenet",
            ),
            (
                "Two directories that both hold labels.csv: keep the second one's:",
                "artifactfs log mnist a/ b/ --overwrite",
            ),
        ],
    ),
    (
        "draft",
        &[(
            "Change one file of mnist:latest:",
            "artifactfs draft new mnist && artifactfs draft add mnist labels.csv && artifactfs draft commit mnist",
        )],
    ),
    (
        "draft new",
        &[
            (
                "A draft of mnist from its latest version:",
                "artifactfs draft new mnist",
            ),
            (
                "From an older version:",
                "artifactfs draft new mnist --from mnist:v2",
            ),
        ],
    ),
    (
        "draft add",
        &[(
            "Add a directory's contents under extra/:",
            "artifactfs draft add mnist new-images/ --as extra",
        )],
    ),
    (
        "draft rm",
        &[(
            "Remove a file and a whole directory:",
            "artifactfs draft rm mnist labels.csv old-shard/",
        )],
    ),
    (
        "draft status",
        &[(
            "What the draft changes against its base:",
            "artifactfs draft status mnist",
        )],
    ),
    (
        "draft list",
        &[(
            "Every draft, with its base and number of changes:",
            "artifactfs draft list",
        )],
    ),
    (
        "draft discard",
        &[("Throw the draft away:", "artifactfs draft discard mnist")],
    ),
    (
        "draft commit",
        &[(
            "Commit, moving the alias prod to the new version:",
            "artifactfs draft commit mnist --alias prod",
        )],
    ),
    (
        "upsert",
        &[(
            "From each worker of a distributed job, its own shard:",
            "artifactfs upsert shards part-3/ --distributed-id run-42",
        )],
    ),
    (
        "finish",
        &[(
            "Once, when every worker is done:",
            "artifactfs finish shards --distributed-id run-42",
        )],
    ),
    (
        "list",
        &[
            ("The artifacts of the store:", "artifactfs list"),
            (
                "The versions of mnist, with their aliases:",
                "artifactfs list mnist",
            ),
        ],
    ),
    (
        "show",
        &[(
            "A version's digest, size, aliases and metadata:",
            "artifactfs show mnist:best",
        )],
    ),
    (
        "ls",
        &[(
            "The files of a version under a directory, with sizes and digests:",
            "artifactfs ls --long mnist:v3 images/",
        )],
    ),
    (
        "cat",
        &[(
            "One file of a version:",
            "artifactfs cat mnist:v3 labels.csv | head",
        )],
    ),
    (
        "diff",
        &[(
            "What changed from v0 to the latest version:",
            "artifactfs diff mnist:v0 mnist",
        )],
    ),
    (
        "get",
        &[
            (
                "Write a version out:",
                "artifactfs get mnist:best ./checkout",
            ),
            (
                "Turn an existing checkout into exactly v2:",
                "artifactfs get mnist:v2 ./checkout --delete",
            ),
        ],
    ),
    (
        "alias",
        &[(
            "Move best to v3, then remove it again:",
            "artifactfs alias set mnist:v3 best && artifactfs alias rm mnist:v3 best",
        )],
    ),
    (
        "alias set",
        &[(
            "Point best at v3 (moving it from wherever it was):",
            "artifactfs alias set mnist:v3 best",
        )],
    ),
    (
        "alias rm",
        &[
            (
                "Remove best from v3 (refused if it names another version):",
                "artifactfs alias rm mnist:v3 best",
            ),
            (
                "Remove best from whichever version has it:",
                "artifactfs alias rm mnist best",
            ),
        ],
    ),
    (
        "delete",
        &[(
            "Delete a version no alias but latest names:",
            "artifactfs delete mnist:v0",
        )],
    ),
    (
        "verify",
        &[(
            "Re-hash every blob of one version:",
            "artifactfs verify mnist:v3",
        )],
    ),
    (
        "gc",
        &[
            (
                "Free the space of deleted versions and discarded drafts:",
                "artifactfs gc",
            ),
            (
                "On a shared store, take even objects uploaded in the last hour:",
                "artifactfs --store ~/team-store gc --grace 0",
            ),
        ],
    ),
    (
        "run",
        &[
            (
                "Train as a run: what it reads through the mount and commits is recorded:",
                "artifactfs run --name train --job-type train --config '{\"lr\": 0.01}' -- python train.py --data ~/art/mnist/latest/",
            ),
            (
                "Workers of one group fill one distributed version (the group is the id):",
                "artifactfs run --group shard-7 -- sh -c 'artifactfs upsert shards part/ && artifactfs finish shards'",
            ),
        ],
    ),
    (
        "run show",
        &[(
            "A run, with the versions it read and made:",
            "artifactfs run show 3k9x0qzt",
        )],
    ),
    (
        "run begin",
        &[(
            "A SLURM job as one run; its tasks inherit ARTIFACTFS_RUN:",
            "export ARTIFACTFS_RUN=$(artifactfs run begin --name train --pid $$); srun python train.py; artifactfs run end --exit-code $?",
        )],
    ),
    (
        "run end",
        &[
            (
                "End the run named by $ARTIFACTFS_RUN with the job's status:",
                "artifactfs run end --exit-code 0",
            ),
            (
                "Mark a run whose job was lost as crashed:",
                "artifactfs run end 3k9x0qzt --crashed",
            ),
        ],
    ),
    ("runs", &[("Every run, oldest first:", "artifactfs runs")]),
    (
        "lineage",
        &[
            (
                "Where a model came from and what used it, as text:",
                "artifactfs lineage resnet:best",
            ),
            (
                "As a picture (needs Graphviz: apt install graphviz):",
                "artifactfs lineage resnet:best --svg lineage.svg",
            ),
        ],
    ),
    (
        "mount",
        &[
            (
                "Mount the store, read a version, unmount:",
                "mkdir -p ~/art && artifactfs mount ~/art && ls ~/art/mnist/latest/ && artifactfs umount ~/art",
            ),
            (
                "The same through mount(8):",
                "mount -t fuse.artifactfs /srv/artifacts /mnt/artifacts",
            ),
        ],
    ),
    (
        "umount",
        &[(
            "Unmount and wait for the server to finish:",
            "artifactfs umount ~/art",
        )],
    ),
    (
        "doctor",
        &[("What is wrong, with a fix for each:", "artifactfs doctor")],
    ),
    (
        "completions",
        &[(
            "Bash completion for your user:",
            "mkdir -p ~/.local/share/bash-completion/completions && artifactfs completions bash > ~/.local/share/bash-completion/completions/artifactfs",
        )],
    ),
    (
        "man",
        &[(
            "Install these pages for your user:",
            "artifactfs man ~/.local/share/man/man1 && MANPATH=~/.local/share/man: man artifactfs",
        )],
    ),
];

const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "ARTIFACTFS_STORE",
        "The store directory when --store is not given.",
    ),
    (
        "XDG_DATA_HOME",
        "Without either, the store is $XDG_DATA_HOME/artifactfs, else ~/.local/share/artifactfs.",
    ),
    (
        "RUST_LOG",
        "How much to log (error, warn, info, debug): to standard error, and for the mount server to STORE/mount.log.",
    ),
    (
        "ARTIFACTFS_RUN",
        "The run a process belongs to (set by artifactfs run): log, draft commit, finish and .commit record their versions as its outputs, get, cat and reads through a mount as its inputs.",
    ),
    (
        "ARTIFACTFS_RUN_GROUP",
        "The group of that run, set by artifactfs run --group for the command it runs.",
    ),
    (
        "ARTIFACTFS_MAX_CACHED_ENTRIES",
        "For mount: how many inodes of version files the server keeps before asking the kernel to drop some (default 100000).",
    ),
];

const FILES: &[(&str, &str)] = &[
    (
        "STORE/catalog.db",
        "SQLite, in WAL mode: artifacts, versions, aliases, trees, drafts, runs and lineage.",
    ),
    (
        "STORE/blobs/",
        "File contents, named by their SHA-256, read-only, stored once.",
    ),
    (
        "STORE/staging/, STORE/staged/",
        "Content being written, and drafts' files written through a mount.",
    ),
    (
        "STORE/mount.log",
        "What the mount server logs: the reason for an errno a mount returned.",
    ),
    (
        "/sbin/mount.fuse.artifactfs",
        "The helper mount(8) runs for mount -t fuse.artifactfs and /etc/fstab lines.",
    ),
];

const MOUNT_LAYOUT: &str = "MOUNTPOINT/
  NAME/            one directory per artifact
    vN/            each version: read-only, immutable
    ALIAS -> vN    each alias, latest included, as a symlink
  drafts/          the only writable area
    NAME/          a draft of NAME (mkdir makes one from NAME:latest)
      .commit      the control file: write to commit
    NAME@ID/       a distributed draft, filled by many writers";

const COMMIT_PROTOCOL: &[&str] = &[
    "Each draft directory has a control file, .commit, hidden from listings. Writing the word \
     commit to it commits the draft; a JSON object sets more: {\"type\": \"model\", \"aliases\": \
     [\"best\"], \"description\": \"...\", \"metadata\": {...}}. The write returns once the new \
     version is durable; the draft directory is then gone and NAME/latest names the version.",
    "A refused request fails the write (or the close) with an errno: EBUSY while a file of the \
     draft is open for writing, EINVAL for a request that is neither commit nor such an object, \
     EEXIST for a type other than the artifact's. Reading back the descriptor that wrote the \
     request gives what it came to: NAME:vN, NAME:vN (unchanged), or error: and the reason. \
     Reading .commit afresh shows the draft's status, headed by the reason the last request was \
     refused; every refusal is also in STORE/mount.log.",
    "From Python, write the request inside a with block, so that an error raised when the file \
     is closed reaches you: with open(\"drafts/mnist/.commit\", \"r+\") as f: \
     f.write(\"commit\"); f.flush(); print(f.read()). From a shell: exec 3<> \
     drafts/mnist/.commit && echo commit >&3 && cat <&3.",
];

/// Writes `artifactfs.1` and a page for every command into `dir`.
pub fn write_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).at(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    write_page(&cmd, "", dir)
}

fn write_page(cmd: &clap::Command, words: &str, dir: &Path) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let words = format!("{words} {}", sub.get_name());
        write_page(sub, words.trim_start(), dir)?;
    }
    let man = Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut out = Vec::new();
    render(&man, cmd, words, &mut out).at(&path)?;
    fs::write(&path, out).at(&path)
}

fn render(man: &Man, cmd: &clap::Command, words: &str, w: &mut Vec<u8>) -> std::io::Result<()> {
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(w)?;
    }
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    let mut roff = Roff::new();
    let examples = EXAMPLES.iter().find(|(k, _)| *k == words).map(|(_, e)| *e);
    if let Some(examples) = examples {
        roff.control("SH", ["EXAMPLES"]);
        for (what, line) in examples {
            roff.control("TP", []).text([roman(*what)]);
            roff.control("EX", [])
                .text([roman(*line)])
                .control("EE", []);
        }
    }
    if words.is_empty() || words == "mount" {
        roff.control("SH", ["THE MOUNT"]);
        roff.control("EX", []);
        for line in MOUNT_LAYOUT.lines() {
            roff.text([roman(line)]);
        }
        roff.control("EE", []);
        roff.control("SH", ["COMMITTING THROUGH THE MOUNT"]);
        for para in COMMIT_PROTOCOL {
            roff.control("PP", []).text([roman(*para)]);
        }
    }
    roff.control("SH", ["ENVIRONMENT"]);
    for (name, what) in ENVIRONMENT {
        roff.control("TP", [])
            .text([bold(*name)])
            .text([roman(*what)]);
    }
    roff.control("SH", ["FILES"]);
    for (name, what) in FILES {
        roff.control("TP", [])
            .text([bold(*name)])
            .text([roman(*what)]);
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "artifactfs(1), artifactfs-mount(1), mount(8), fusermount3(1); docs/SEMANTICS.md, \
         docs/JSON.md and docs/MOUNTING.md in the source.",
    )]);
    roff.to_writer(w)?;
    if words.is_empty() {
        man.render_version_section(w)?;
    }
    Ok(())
}
