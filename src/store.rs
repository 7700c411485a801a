//! The store directory and the operations that change it. Each operation stores new content
//! as durable blobs first, then records everything in one catalog transaction.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use crate::catalog::Db;

use crate::blobs::BlobStore;
use crate::catalog::drafts::Change;
use crate::catalog::drafts::{self, DraftRow, LOG_DRAFT_ID, Meta};
use crate::catalog::nodes::{self, NodeId};
use crate::catalog::versions::{self, VersionRow};
use crate::catalog::{Backend, Catalog};
use crate::commit::{self, CommitOptions, Outcome};
use crate::draft;
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;
use crate::ingest::{self, Inputs, Stored};
use crate::names::{AliasName, ArtifactName, DraftName, LATEST, TypeName, VersionRef, closest};
use crate::staging::{StagedDigest, Staging};
use crate::store_config::{self, Shared};
use rayon::prelude::*;

/// Files walked, stored and made durable together when adding paths to a draft.
const INGEST_CHUNK: usize = 10_000;

pub struct Store {
    root: PathBuf,
    pub catalog: Catalog,
    pub blobs: BlobStore,
    pub staging: Staging,
    /// Where the catalog lives, for opening more connections to it (a mount's pool).
    backend: Backend,
    /// What `root/config` says, for a shared store.
    shared: Option<Shared>,
}

/// A hold on the store's blobs (see [`Store::shared_lock`]), released when dropped.
pub struct StoreLock(
    #[allow(dead_code)] Option<File>,
    #[allow(dead_code)] Option<crate::catalog::BlobsHold>,
);

/// Where a new draft starts from.
#[derive(Clone, Debug)]
pub enum DraftBase {
    /// The artifact's latest version for a plain draft; empty for a distributed one.
    Default,
    Empty,
    From(VersionRef),
}

impl Store {
    /// Opens the store at `root`, creating it on first use.
    pub fn open(root: &Path) -> Result<Self> {
        // Several processes may create a new store at once: creating what exists is fine.
        if let Err(e) = fs::create_dir_all(root) {
            if root.exists() && !root.is_dir() {
                return Err(Error::invalid(
                    format!("store {}", root.display()),
                    "it is not a directory",
                ));
            }
            return Err(Error::io(root, e));
        }
        let root = &std::path::absolute(root).at(root)?;
        let shared = store_config::read(root)?;
        // A shared store's catalog is reached first: a database that is refused (of another
        // schema, or another application's) leaves this directory as it was.
        let shared_catalog = match &shared {
            Some(sh) => {
                let backend = Backend::Postgres {
                    url: sh.catalog.clone(),
                    store: root.to_path_buf(),
                };
                Some((Catalog::open_backend(&backend)?, backend))
            }
            None => None,
        };
        let blobs = match &shared {
            Some(sh) => {
                // Reached on first use: commands that only read the catalog need no bucket.
                let config = crate::objects::S3Config::from_env(&sh.objects)?;
                let client = crate::objects::S3Client::open(&config)?;
                let objects = crate::objects::RemoteBlobs::new(std::sync::Arc::new(client));
                BlobStore::open_shared(root, objects, sh.cache_size)?
            }
            None => {
                refuse_lost_catalog(root)?;
                BlobStore::open(root)?
            }
        };
        if let Some((catalog, backend)) = shared_catalog {
            return Ok(Store {
                root: root.to_path_buf(),
                catalog,
                blobs,
                staging: open_staging(root)?,
                backend,
                shared,
            });
        }
        let db = root.join("catalog.db");
        let staging = open_staging(root)?;
        let catalog = Catalog::open(&db)?;
        Ok(Store {
            root: root.to_path_buf(),
            catalog,
            blobs,
            staging,
            backend: Backend::Sqlite(db),
            shared: None,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// What the store's config says, if it is a shared store.
    pub fn shared(&self) -> Option<&Shared> {
        self.shared.as_ref()
    }

    pub fn conn(&self) -> &Db {
        self.catalog.conn()
    }

    /// Held while blobs are written and until the catalog references them, so that `gc`
    /// (which takes the lock exclusively) never collects a blob about to be referenced; and
    /// by commands that read a version through, so it cannot be collected under them.
    pub fn shared_lock(&self) -> Result<StoreLock> {
        self.lock(false)
    }

    pub fn gc_lock(&self) -> Result<StoreLock> {
        self.lock(true)
    }

    /// The store's lock file, and on a shared store the lock on its blobs that every host
    /// takes (see [`Catalog::hold_blobs`]).
    fn lock(&self, exclusive: bool) -> Result<StoreLock> {
        Ok(StoreLock(
            lock_store(&self.root, exclusive)?,
            self.catalog.hold_blobs(exclusive)?,
        ))
    }

    /// Stores the contents of `paths` as blobs, then, in one transaction, records them in the
    /// draft that `open` finds or creates and runs `then`. A first walk checks every path (and,
    /// with `rehearse`, tries the recording with placeholder contents in a rolled-back
    /// transaction), so that what can be refused is refused before any content is copied. If
    /// the transaction fails anyway, the blobs this call added are removed again: a refused
    /// command leaves the store as it was.
    ///
    /// Memory does not grow with the number of files: paths are walked in chunks, each chunk
    /// stored and made durable before the next, and what is to be recorded waits in a spool
    /// file.
    fn ingest_into<T>(
        &mut self,
        inputs: &Inputs,
        how: Ingest,
        open: impl Fn(&Db) -> Result<DraftRow>,
        then: impl FnOnce(&Db, &DraftRow, usize, Vec<Vec<u8>>) -> Result<T>,
    ) -> Result<T> {
        self.catalog.check_writable()?;
        let Ingest {
            dest,
            previous,
            rehearse,
            track_replaced,
        } = how;
        let dest = dest.map(ingest::parse_dest).transpose()?;
        let dest = dest.as_deref();
        let mut total = 0;
        let mut collisions = ingest::Collisions::of(inputs)?;
        let mut check = |tx: Option<(&Db, &DraftRow)>| {
            ingest::scan(inputs, dest, INGEST_CHUNK, &mut |chunk| {
                total += ingest::bytes_of(&chunk);
                if let Some(c) = collisions.as_mut() {
                    c.check(&chunk)?;
                }
                match tx {
                    Some((tx, d)) => {
                        let placeholders = chunk.iter().map(ingest::placeholder).collect();
                        record(tx, d, placeholders, None).map(|_| ())
                    }
                    None => Ok(()),
                }
            })
        };
        if rehearse {
            self.catalog.dry_run(|tx| check(Some((tx, &open(tx)?))))?;
        } else {
            check(None)?;
        }
        let lock = self.shared_lock()?;
        let bar = crate::progress::bytes(total);
        let mut spool = ingest::Spool::new(self.blobs.staging_dir())?;
        let mut added = ingest::Added::new(self.blobs.staging_dir())?;
        let stored = ingest::scan(inputs, dest, INGEST_CHUNK, &mut |mut chunk| {
            ingest::hint(self.catalog.conn(), previous, &mut chunk)?;
            let batch = self.blobs.batch();
            let stored = ingest::store(&batch, chunk, &bar);
            // Blobs placed before a failure are still to be removed below.
            added.push(&batch.finish()?)?;
            stored?.iter().try_for_each(|s| spool.push(s))
        });
        bar.finish_and_clear();
        let result = stored.and_then(|()| {
            self.catalog.write(|tx| {
                let d = open(tx)?;
                let mut n = 0;
                let mut replaced = track_replaced.then(Vec::new);
                spool.replay(INGEST_CHUNK, &mut |chunk| {
                    n += record(tx, &d, chunk, replaced.as_mut())?;
                    Ok(())
                })?;
                then(tx, &d, n, replaced.unwrap_or_default())
            })
        });
        drop(lock);
        if result.is_err() && !added.is_empty() {
            remove_unreferenced_each(&self.catalog, &self.blobs, &self.root, &mut |remove| {
                added.replay(INGEST_CHUNK, remove)
            });
        }
        result
    }

    /// `log`: the given paths form the whole new version.
    pub fn log(
        &mut self,
        name: &ArtifactName,
        inputs: &Inputs,
        opts: &CommitOptions,
    ) -> Result<Outcome> {
        check_type(self.conn(), name, opts.type_name.as_ref())?;
        let previous = latest_root(self.conn(), name)?;
        // A fresh draft: only the paths themselves could clash, which is rare enough not to
        // rehearse for.
        self.ingest_into(
            inputs,
            Ingest {
                dest: None,
                previous,
                rehearse: false,
                track_replaced: false,
            },
            |tx| drafts::create(tx, name.as_str(), LOG_DRAFT_ID, None, None),
            |tx, d, _, _| commit::commit(tx, d, opts),
        )
    }

    pub fn draft_new(
        &mut self,
        name: &DraftName,
        type_name: Option<&TypeName>,
        base: DraftBase,
    ) -> Result<DraftRow> {
        self.catalog
            .write(|tx| new_draft(tx, name, type_name, base))
    }

    pub fn draft_add(
        &mut self,
        name: &DraftName,
        inputs: &Inputs,
        dest: Option<&str>,
    ) -> Result<usize> {
        let previous = require_draft(self.conn(), name)?.base_root;
        self.ingest_into(
            inputs,
            Ingest {
                dest,
                previous,
                rehearse: true,
                track_replaced: false,
            },
            |tx| require_draft(tx, name),
            |_, _, n, _| Ok(n),
        )
    }

    pub fn draft_rm(&mut self, name: &DraftName, paths: &[&[u8]]) -> Result<()> {
        self.catalog.write(|tx| {
            let d = require_draft(tx, name)?;
            for p in paths {
                let end = p.iter().rposition(|b| *b != b'/').map_or(0, |i| i + 1);
                draft::remove(tx, &d, &p[..end])?;
                draft::touch_dir(tx, &d, draft::parent_of(&p[..end]))?;
            }
            Ok(())
        })
    }

    pub fn draft_discard(&mut self, name: &DraftName) -> Result<()> {
        let d = self.catalog.write(|tx| {
            let d = require_draft(tx, name)?;
            drafts::delete(tx, d.id)?;
            Ok(d)
        })?;
        self.staging.remove_draft(d.id);
        Ok(())
    }

    pub fn draft_commit(&mut self, name: &DraftName, opts: &CommitOptions) -> Result<Outcome> {
        commit_draft(
            &mut self.catalog,
            &self.blobs,
            &self.staging,
            &self.root,
            name,
            opts,
            &|_, _| None,
        )
    }

    /// `upsert`: adds files to the distributed draft `name`, creating it if needed. Safe to
    /// run from many processes at once: each adds its files in its own transaction, and the
    /// later of two that add one path wins. Returns how many files it added, and the paths
    /// where it replaced other content that an earlier writer had added.
    pub fn upsert(
        &mut self,
        name: &DraftName,
        inputs: &Inputs,
        type_name: Option<&TypeName>,
    ) -> Result<(usize, Vec<Vec<u8>>)> {
        let previous = latest_root(self.conn(), &name.artifact)?;
        self.ingest_into(
            inputs,
            Ingest {
                dest: None,
                previous,
                rehearse: true,
                track_replaced: true,
            },
            |tx| open_distributed(tx, name, type_name),
            |_, _, n, replaced| Ok((n, replaced)),
        )
    }

    /// `finish`: adds any last files and commits the distributed draft, sealing its id.
    /// Returns the outcome, and the paths where its files replaced what a worker had upserted.
    pub fn finish(
        &mut self,
        name: &DraftName,
        inputs: &Inputs,
        opts: &CommitOptions,
    ) -> Result<(Outcome, Vec<Vec<u8>>)> {
        // With no files of its own, finish commits what was upserted; it must not create an
        // empty draft (a mistyped id would otherwise become an empty version).
        let open = |tx: &Db| {
            if inputs.is_empty()
                && drafts::get(tx, name.artifact.as_str(), name.id_key())?.is_none()
            {
                refuse_sealed(tx, name)?;
                return Err(Error::refused(
                    format!("finish {name}"),
                    "nothing was upserted to this distributed id and no files were given",
                ));
            }
            open_distributed(tx, name, opts.type_name.as_ref())
        };
        // Workers may have filled the draft through a mount: their files are stored first,
        // as `draft commit` stores them, and nobody writes more until the version is sealed.
        let existing = drafts::get(self.conn(), name.artifact.as_str(), name.id_key())?;
        let _writers = match &existing {
            Some(d) => {
                self.catalog.check_writable()?;
                Some(store_staged(
                    &mut self.catalog,
                    &self.blobs,
                    &self.staging,
                    &self.root,
                    d,
                    &|_, _| None,
                )?)
            }
            None => None,
        };
        let how = Ingest {
            dest: None,
            previous: latest_root(self.conn(), &name.artifact)?,
            rehearse: true,
            track_replaced: true,
        };
        let outcome = self.ingest_into(inputs, how, open, |tx, d, _, replaced| {
            Ok((commit::commit(tx, d, opts)?, replaced))
        })?;
        if let Some(d) = existing {
            self.staging.remove_draft(d.id);
        }
        Ok(outcome)
    }

    pub fn alias_set(&mut self, r: &VersionRef, alias: &AliasName) -> Result<VersionRow> {
        refuse_latest(alias, "set")?;
        self.catalog.write(|tx| {
            let v = versions::resolve(tx, r)?;
            versions::set_alias(tx, v.artifact_id, alias.as_str(), v.id)?;
            Ok(v)
        })
    }

    /// Removes an alias (from version `on` only, if given); returns the number of the
    /// version it named.
    pub fn alias_rm(
        &mut self,
        name: &ArtifactName,
        alias: &AliasName,
        on: Option<&VersionRef>,
    ) -> Result<u64> {
        refuse_latest(alias, "removed")?;
        self.catalog.write(|tx| {
            let art = versions::require_artifact(tx, name.as_str())?;
            if let Some(on) = on {
                let want = versions::resolve(tx, on)?;
                let now = versions::by_alias(tx, art.id, alias.as_str())?;
                if let Some(now) = now.filter(|v| v.id != want.id) {
                    return Err(Error::invalid(
                        format!("alias rm {on} {alias}"),
                        format!(
                            "alias {alias} names {}, not {}; nothing was removed",
                            now.reference(),
                            want.reference()
                        ),
                    ));
                }
            }
            if let Some(n) = versions::remove_alias(tx, art.id, alias.as_str())? {
                return Ok(n);
            }
            let aliases = versions::aliases_of_artifact(tx, art.id)?;
            let hint = closest(alias.as_str(), aliases.iter().map(|(a, _)| a.as_str()))
                .map(|c| format!("did you mean {name}:{c}?"));
            Err(crate::catalog::absent(
                tx,
                format!("alias {name}:{alias}"),
                hint,
            ))
        })
    }

    /// Deletes a version unless an alias other than `latest` still names it.
    pub fn delete(&mut self, r: &VersionRef) -> Result<VersionRow> {
        self.catalog.write(|tx| {
            let v = versions::resolve(tx, r)?;
            let held: Vec<String> =
                versions::aliases_of(tx, v.id)?.into_iter().filter(|a| a != LATEST).collect();
            if !held.is_empty() {
                return Err(Error::refused(
                    format!("delete {}", v.reference()),
                    format!(
                        "aliases still point at it: {}; move or remove them first (artifactfs alias rm)",
                        held.join(", ")
                    ),
                ));
            }
            versions::delete(tx, &v)?;
            Ok(v)
        })
    }
}

/// statvfs(3) of the filesystem that holds `path`.
pub fn filesystem_of(path: &Path) -> Result<libc::statvfs> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(path.display().to_string(), "contains a NUL byte"))?;
    // SAFETY: statvfs fills the zeroed struct; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(st)
}

/// Locks the store: shared by writers of blobs and readers of versions, exclusive by gc.
/// A reader of a store it may not write locks through a read-only descriptor, or not at all
/// if no writer ever made the lock file.
pub fn lock_store(root: &Path, exclusive: bool) -> Result<Option<File>> {
    let path = root.join("lock");
    let opened = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path);
    let f = match opened {
        Err(e)
            if !exclusive
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EROFS | libc::EACCES | libc::EPERM)
                ) =>
        {
            match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
        other => other.at(&path)?,
    };
    if exclusive { f.lock() } else { f.lock_shared() }.at(&path)?;
    Ok(Some(f))
}

/// On a shared store, publishes every staged file of this host (see `Fs::publish_written`),
/// as a mount does when it starts: one left by a mount that stopped before the file was
/// closed is then seen by the other hosts as it is. Returns how many were published.
pub fn publish_staged_here(store: &mut Store) -> Result<usize> {
    let mut published = 0;
    for d in drafts::list(store.conn())? {
        let mut rows = drafts::staged(store.conn(), d.id)?;
        rows.sort_unstable_by_key(|r| r.id);
        rows.dedup_by_key(|r| r.id);
        for r in rows {
            let path = store.staging.path(d.id, r.id);
            let Ok(meta) = store.staging.meta(&d, r.id) else {
                continue;
            };
            let (blob, size) = store.blobs.publish(&path)?;
            store
                .catalog
                .write(|tx| drafts::publish_staged(tx, d.id, r.id, &blob, size, meta.mtime_ns))?;
            published += 1;
        }
    }
    Ok(published)
}

/// Commits draft `name`, by the command line or through the mount: its files written
/// through a mount are stored first (see [`store_staged`]), then one transaction seals the
/// version.
pub fn commit_draft(
    catalog: &mut Catalog,
    blobs: &BlobStore,
    staging: &Staging,
    store_root: &Path,
    name: &DraftName,
    opts: &CommitOptions,
    known: Known,
) -> Result<Outcome> {
    catalog.check_writable()?;
    let d = require_draft(catalog.conn(), name)?;
    commit::effective_type(catalog.conn(), &d, opts.type_name.as_ref())?;
    let _writers = store_staged(catalog, blobs, staging, store_root, &d, known)?;
    let outcome = catalog.write(|tx| {
        let now = require_draft(tx, name)?;
        commit::commit(tx, &now, opts)
    })?;
    staging.remove_draft(d.id);
    Ok(outcome)
}

/// What a mount found staged files (by draft and number) to hold, if anything: see `fs/digests.rs`.
pub type Known<'a> = &'a (dyn Fn(i64, i64) -> Option<StagedDigest> + Sync);

/// Stores the files of draft `d` written through a mount as blobs (hashed in parallel, linked
/// into `blobs/` without copying) and records them as such in their own transaction, so a
/// commit refused afterwards (a conflicting type) leaves a draft that is whole. A file whose
/// digest is `known` and which is still the file that was hashed is not read again. Returns
/// the draft's commit lock, which keeps every writer out until the caller has sealed the
/// version.
fn store_staged(
    catalog: &mut Catalog,
    blobs: &BlobStore,
    staging: &Staging,
    store_root: &Path,
    d: &DraftRow,
    known: Known,
) -> Result<crate::staging::DraftLock> {
    let writers = staging.lock_for_commit(catalog.conn(), d)?;
    let mut rows = drafts::staged(catalog.conn(), d.id)?;
    // Hard links name one staged file twice.
    rows.sort_unstable_by_key(|r| r.id);
    rows.dedup_by_key(|r| r.id);
    if rows.is_empty() {
        return Ok(writers);
    }
    // On a shared store, files written through another host's mount are taken as they were
    // last closed there, already uploaded; one never closed is still being written.
    let (here, elsewhere): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|r| blobs.objects().is_none() || staging.path(d.id, r.id).exists());
    let mut published = Vec::new();
    for r in elsewhere {
        let Some((blob, size)) = r.published else {
            let path = crate::tree::join(&r.parent, &r.name);
            return Err(Error::Busy(format!(
                "{} in {} is being written through a mount on another host and was never \
                 closed there; commit once it is, or remove it from the draft",
                String::from_utf8_lossy(&path),
                d.label()
            )));
        };
        published.push((r.id, blob, size, r.mtime_ns));
    }
    let lock = (lock_store(store_root, false)?, catalog.hold_blobs(false)?);
    let batch = blobs.batch();
    let reused = std::sync::atomic::AtomicUsize::new(0);
    let mut stored = here
        .par_iter()
        .map(|r| {
            let (meta, stamp) = staging.meta_and_stamp(d, r.id)?;
            let reuse = known(d.id, r.id)
                .filter(|k| k.stamp == stamp)
                .map(|k| (k.digest, k.size));
            if reuse.is_some() {
                reused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let (blob, size) = batch.add_by_link(&staging.path(d.id, r.id), meta.size, reuse)?;
            Ok((r.id, blob, size, meta.mtime_ns))
        })
        .collect::<Result<Vec<_>>>()?;
    let reused = reused.into_inner();
    if reused > 0 {
        log::info!(
            "{}: {reused} of {} staged files stored by the digests taken when they were written",
            d.label(),
            here.len()
        );
    }
    let added = batch.finish()?;
    stored.extend(published);
    let staged: Vec<i64> = here.iter().map(|r| r.id).collect();
    let recorded = catalog.write(|tx| {
        if drafts::by_id(tx, d.id)?.is_none() {
            return Err(Error::not_found(d.label()));
        }
        for (id, blob, size, mtime_ns) in &stored {
            drafts::store_staged(tx, d.id, *id, blob, *size, *mtime_ns)?;
        }
        Ok(())
    });
    drop(lock);
    if let Err(e) = recorded {
        remove_unreferenced(catalog, blobs, store_root, &added);
        return Err(e);
    }
    staging.remove(d, &staged);
    Ok(writers)
}

/// Removes one chunk of the blobs a failed operation stored.
type RemoveChunk<'a> = &'a mut dyn FnMut(&[Digest]) -> Result<()>;

/// Removes those of `added` (blobs a failed operation stored) that nothing references, so a
/// refused command leaves the store as it was.
fn remove_unreferenced(catalog: &Catalog, blobs: &BlobStore, root: &Path, added: &[Digest]) {
    if added.is_empty() {
        return;
    }
    remove_unreferenced_each(catalog, blobs, root, &mut |remove| remove(added));
}

/// The same for blobs handed over in chunks: `chunks` calls `remove` with each. Needs the
/// store lock exclusively, so no other writer is about to reference them, but does not wait
/// for it (a `get` may hold it shared for hours): whatever cannot be removed now is left to
/// `gc`.
fn remove_unreferenced_each(
    catalog: &Catalog,
    blobs: &BlobStore,
    root: &Path,
    chunks: &mut dyn FnMut(RemoveChunk) -> Result<()>,
) {
    let path = root.join("lock");
    let lock = File::open(&path)
        .at(&path)
        .and_then(|f| match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
        });
    let removed = lock.and_then(|lock| {
        if lock.is_none() {
            return Err(Error::Busy(format!("store {}", root.display())));
        }
        nodes::collect_live_blobs(catalog.conn())?;
        chunks(&mut |added| {
            for b in added {
                if !nodes::blob_in_use(catalog.conn(), b)? {
                    blobs.remove(b)?;
                }
            }
            Ok(())
        })
    });
    if let Err(e) = removed {
        log::warn!("could not remove the blobs of a failed operation ({e}); gc will");
    }
}

/// How [`Store::ingest_into`] stores and records its inputs.
struct Ingest<'a> {
    /// Where in the draft they go (`draft add --as`).
    dest: Option<&'a str>,
    /// The root of the version whose files they likely repeat (see [`ingest::hint`]).
    previous: Option<NodeId>,
    /// Whether to try the recording first, with placeholder contents, in a transaction that
    /// is rolled back, so what can be refused is refused before any content is copied.
    rehearse: bool,
    /// Whether to collect the paths whose entries are replaced.
    track_replaced: bool,
}

/// The root of `name`'s latest version, which files being stored likely repeat.
fn latest_root(conn: &Db, name: &ArtifactName) -> Result<Option<NodeId>> {
    Ok(match versions::artifact(conn, name.as_str())? {
        Some(a) => versions::latest(conn, a.id)?.map(|v| v.root),
        None => None,
    })
}

fn check_writable(dir: &Path) -> Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::invalid(dir.display().to_string(), "contains a NUL byte"))?;
    // SAFETY: `c` is a valid NUL-terminated path for the duration of the call.
    let rc = unsafe { libc::faccessat(libc::AT_FDCWD, c.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if rc != 0 {
        return Err(Error::io(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Starts draft `name` (inside the caller's write transaction).
pub fn new_draft(
    tx: &Db,
    name: &DraftName,
    type_name: Option<&TypeName>,
    base: DraftBase,
) -> Result<DraftRow> {
    refuse_sealed(tx, name)?;
    check_type(tx, &name.artifact, type_name)?;
    if drafts::get(tx, name.artifact.as_str(), name.id_key())?.is_some() {
        return Err(Error::AlreadyExists(format!("draft {name}")));
    }
    let base = match base {
        DraftBase::Empty => None,
        DraftBase::Default if name.id.is_some() => None,
        DraftBase::Default => match versions::artifact(tx, name.artifact.as_str())? {
            Some(a) => versions::latest(tx, a.id)?,
            None => None,
        },
        DraftBase::From(r) => {
            if r.artifact != name.artifact {
                return Err(Error::invalid(
                    format!("--from {r}"),
                    format!(
                        "a draft of {} can only start from a version of {}",
                        name.artifact, name.artifact
                    ),
                ));
            }
            Some(versions::resolve(tx, &r)?)
        }
    };
    drafts::create(
        tx,
        name.artifact.as_str(),
        name.id_key(),
        type_name.map(|t| t.as_str()),
        base.map(|v| (v.number, v.root)),
    )
}

/// Records stored sources in draft `d`. Returns how many files and symlinks were recorded;
/// adds to `replaced` the paths where the draft had recorded other content before.
fn record(
    tx: &Db,
    d: &DraftRow,
    stored: Vec<Stored>,
    mut replaced: Option<&mut Vec<Vec<u8>>>,
) -> Result<usize> {
    let mut files = 0;
    for s in stored {
        match s.change {
            Change::Dir { .. } => {
                draft::put_dir(tx, d, &s.dest, Meta::recorded(s.mode, s.mtime_ns))?
            }
            change => {
                if let Some(replaced) = replaced.as_mut() {
                    let (parent, name) = match s.dest.iter().rposition(|b| *b == b'/') {
                        Some(i) => (&s.dest[..i], &s.dest[i + 1..]),
                        None => (&b""[..], &s.dest[..]),
                    };
                    let before = drafts::entry(tx, d.id, parent, name)?.map(|e| e.change);
                    let leaf = |c: &Change| !matches!(c, Change::Dir { .. } | Change::Removed);
                    if before.is_some_and(|b| leaf(&b) && b != change) {
                        replaced.push(s.dest.clone());
                    }
                }
                draft::put_leaf(tx, d, &s.dest, change, Meta::recorded(s.mode, s.mtime_ns))?;
                files += 1;
            }
        }
    }
    Ok(files)
}

pub fn require_draft(conn: &Db, name: &DraftName) -> Result<DraftRow> {
    if let Some(d) = drafts::get(conn, name.artifact.as_str(), name.id_key())? {
        return Ok(d);
    }
    refuse_sealed(conn, name)?;
    let names: Vec<String> = drafts::list(conn)?
        .iter()
        .map(|d| d.display_name())
        .collect();
    let hint = match closest(&name.to_string(), names.iter().map(|n| n.as_str())) {
        Some(c) => format!("did you mean {c}?"),
        None => format!("create it with `artifactfs draft new {name}`"),
    };
    Err(crate::catalog::absent(
        conn,
        format!("draft {name}"),
        Some(hint),
    ))
}

/// Finds or starts the distributed draft `name`. Without a type, the draft keeps the one it
/// has (or none: the commit then takes the artifact's, or `dataset`).
/// Refuses an embedded store whose catalog was lost, before anything is made in it.
fn refuse_lost_catalog(root: &Path) -> Result<()> {
    let db = root.join("catalog.db");
    // SQLite takes a missing or empty file for a new database; next to stored content it
    // is a catalog that was lost, and using it would hide every version (and let gc
    // collect their blobs). A new catalog's first transactions live in its write-ahead
    // log until a checkpoint, so while another process fills a new store the file is
    // empty and the log is not.
    // The last connection to close copies the log into the file, then removes the log:
    // so the log is looked at first, and a catalog that looks lost is looked at again a
    // few times before it is called so, in case another process was between the two.
    let wal = root.join("catalog.db-wal");
    let mut lost = None;
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let logged = fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
        let size = fs::metadata(&db).map(|m| m.len()).ok();
        lost = (size.is_none_or(|n| n == 0)
            && !logged
            && crate::blobs::holds_blobs(&root.join("blobs"))?)
        .then_some(size);
        if lost.is_none() {
            break;
        }
    }
    if let Some(size) = lost {
        let state = match size {
            None => "missing",
            Some(_) => "empty (0 bytes)",
        };
        return Err(Error::Corrupt {
            what: format!("catalog {}", db.display()),
            why: format!(
                "it is {state} while blobs/ holds content, so it was lost or truncated; \
                 restore it from a backup (nothing was changed)"
            ),
        });
    }
    Ok(())
}

/// The store's staging directories. A store we may not write is opened for reading;
/// otherwise fail up front, naming the directory, rather than halfway through an operation.
fn open_staging(root: &Path) -> Result<Staging> {
    let staging = Staging::open(root)?;
    if crate::catalog::read_only_cause(root).is_none() {
        for dir in [
            root.join("blobs"),
            root.join("staging"),
            root.join("staged"),
        ] {
            check_writable(&dir)?;
        }
    }
    Ok(staging)
}

fn open_distributed(tx: &Db, name: &DraftName, type_name: Option<&TypeName>) -> Result<DraftRow> {
    refuse_sealed(tx, name)?;
    check_type(tx, &name.artifact, type_name)?;
    let existing = drafts::get(tx, name.artifact.as_str(), name.id_key())?;
    let Some(type_name) = type_name else {
        return match existing {
            Some(d) => Ok(d),
            None => drafts::create(tx, name.artifact.as_str(), name.id_key(), None, None),
        };
    };
    match existing {
        Some(d) => {
            if d.type_name
                .as_deref()
                .is_some_and(|t| t != type_name.as_str())
            {
                return Err(Error::TypeConflict {
                    what: format!("draft {name}"),
                    existing: d.type_name.unwrap_or_default(),
                    requested: type_name.to_string(),
                });
            }
            if d.type_name.is_none() {
                drafts::set_type(tx, d.id, type_name.as_str())?;
            }
            Ok(d)
        }
        None => drafts::create(
            tx,
            name.artifact.as_str(),
            name.id_key(),
            Some(type_name.as_str()),
            None,
        ),
    }
}

fn refuse_sealed(conn: &Db, name: &DraftName) -> Result<()> {
    if let Some(id) = &name.id
        && let Some(n) = drafts::sealed(conn, name.artifact.as_str(), id.as_str())?
    {
        return Err(Error::Sealed {
            draft: name.to_string(),
            version: format!("{}:v{n}", name.artifact),
        });
    }
    Ok(())
}

fn check_type(conn: &Db, name: &ArtifactName, type_name: Option<&TypeName>) -> Result<()> {
    if let (Some(t), Some(a)) = (type_name, versions::artifact(conn, name.as_str())?)
        && a.type_name != t.as_str()
    {
        return Err(Error::TypeConflict {
            what: format!("artifact {}", a.name),
            existing: a.type_name,
            requested: t.to_string(),
        });
    }
    Ok(())
}

fn refuse_latest(alias: &AliasName, verb: &str) -> Result<()> {
    if alias.as_str() == LATEST {
        return Err(Error::refused(
            "alias latest",
            format!("is maintained automatically and cannot be {verb} by hand"),
        ));
    }
    Ok(())
}
