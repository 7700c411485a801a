//! `verify` and `gc`: checking every blob against its name, and reclaiming what nothing uses.

use rayon::prelude::*;

use crate::blobs::BlobHealth;
use crate::catalog::nodes;
use crate::catalog::nodes::NodeId;
use crate::catalog::versions;
use crate::error::{Error, Result};
use crate::hash::Digest;
use crate::names::VersionRef;
use crate::progress;
use crate::reference::Reference;
use crate::store::Store;

/// A blob that is missing or whose content no longer matches its name.
pub struct Damage {
    pub blob: Digest,
    pub health: BlobHealth,
    /// (version reference, path) pairs that contain the blob.
    pub used_by: Vec<(String, Vec<u8>)>,
    /// Drafts that reference the blob.
    pub drafts: Vec<String>,
}

/// A referenced file that vanished or no longer has the content recorded for it.
pub struct Drift {
    pub uri: String,
    pub vanished: bool,
    /// What is wrong, in words.
    pub why: String,
    pub used_by: Vec<(String, Vec<u8>)>,
    pub drafts: Vec<String>,
}

pub struct VerifyReport {
    pub checked: u64,
    pub damaged: Vec<Damage>,
    pub references_checked: u64,
    pub drifted: Vec<Drift>,
}

/// Re-hashes every blob of version `r`, or of every version and draft, on all cores.
pub fn verify(store: &Store, r: Option<&VersionRef>) -> Result<VerifyReport> {
    store.catalog.check_integrity(r.is_none())?;
    let conn = store.conn();
    let roots = match r {
        Some(r) => Some(vec![versions::resolve(conn, r)?.root]),
        None => None,
    };
    let blobs = nodes::referenced_blobs(conn, roots.as_deref())?;
    let bar = progress::items(blobs.len() as u64, "blobs checked");
    let blob_store = &store.blobs;
    let bad: Vec<(Digest, BlobHealth)> = blobs
        .par_iter()
        .map(|d| {
            let h = blob_store.check(d);
            bar.inc(1);
            h.map(|h| (*d, h))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .filter(|(_, h)| *h != BlobHealth::Intact)
        .collect();
    bar.finish_and_clear();
    let bad_blobs: Vec<Digest> = bad.iter().map(|(d, _)| *d).collect();
    let users = nodes::blob_users(conn, &bad_blobs)?;
    let damaged = bad
        .into_iter()
        .map(|(blob, health)| {
            let (used_by, drafts) = split_uses(users.iter().filter(|(b, _, _)| *b == blob));
            Damage {
                blob,
                health,
                used_by,
                drafts,
            }
        })
        .collect();
    let (references_checked, drifted) = verify_references(store, roots.as_deref())?;
    Ok(VerifyReport {
        checked: blobs.len() as u64,
        damaged,
        references_checked,
        drifted,
    })
}

/// Uses of one blob or reference, split into (version, path) pairs and draft names.
type Uses = (Vec<(String, Vec<u8>)>, Vec<String>);

fn split_uses<'a, K: 'a>(
    uses: impl Iterator<Item = &'a (K, String, Option<Vec<u8>>)> + Clone,
) -> Uses {
    let used_by = uses
        .clone()
        .filter_map(|(_, r, p)| p.as_ref().map(|p| (r.clone(), p.clone())))
        .collect();
    let drafts = uses
        .filter(|(_, _, p)| p.is_none())
        .map(|(_, r, _)| r.clone())
        .collect();
    (used_by, drafts)
}

/// Re-hashes every referenced file (one without a checksum is only checked to be there).
/// Every recorded state of a file is checked, and only the versions that recorded a state
/// that no longer holds are named.
fn verify_references(store: &Store, roots: Option<&[NodeId]>) -> Result<(u64, Vec<Drift>)> {
    let conn = store.conn();
    let refs = nodes::references(conn, roots)?;
    let bar = progress::items(refs.len() as u64, "references checked");
    let bad: Vec<(Vec<u8>, &Reference, bool, String)> = refs
        .par_iter()
        .filter_map(|(r, mtime_ns)| {
            let checked = match r.checksum {
                true => r.copy_to(*mtime_ns, &mut std::io::sink()).map(drop),
                false => r.open(*mtime_ns).map(drop),
            };
            bar.inc(1);
            let why = match checked {
                Ok(()) => return None,
                Err(Error::ReferenceDrift { why, .. }) => why,
                Err(e) => e.to_string(),
            };
            let vanished = r.path().is_ok_and(|p| !p.exists());
            Some((nodes::reference_key(r, *mtime_ns), r, vanished, why))
        })
        .collect();
    bar.finish_and_clear();
    let keys: Vec<Vec<u8>> = bad.iter().map(|(k, ..)| k.clone()).collect();
    let users = nodes::reference_users(conn, &keys)?;
    // One report per file, with the uses of every state of it that failed (sorted by URI).
    let mut drifted: Vec<Drift> = Vec::new();
    for (key, r, vanished, why) in bad {
        let (used_by, drafts) = split_uses(users.iter().filter(|(k, _, _)| *k == key));
        match drifted.last_mut() {
            Some(d) if d.uri == r.uri => {
                d.used_by.extend(used_by);
                d.drafts.extend(drafts);
            }
            _ => drifted.push(Drift {
                uri: r.uri.clone(),
                vanished,
                why,
                used_by,
                drafts,
            }),
        }
    }
    for d in &mut drifted {
        d.used_by.sort();
        d.used_by.dedup();
        d.drafts.sort();
        d.drafts.dedup();
    }
    Ok((refs.len() as u64, drifted))
}

#[derive(Default)]
pub struct GcReport {
    pub nodes_removed: usize,
    /// Blobs removed: from `blobs/`, or from a shared store's object store.
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub staging_removed: usize,
    /// A shared store's unreferenced objects kept because they are younger than the grace
    /// period, and the files removed from this host's cache.
    pub recent_kept: u64,
    pub cache_removed: u64,
}

/// How old an unreferenced object of a shared store must be before `gc` removes it: an
/// upload still in flight on some host is younger.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes tree nodes no version or draft reaches, then blobs no node or draft references.
/// Holds the store's lock exclusively, so no writer is between storing a blob and
/// referencing it.
///
/// On a shared store the lock is taken on every host's behalf (see
/// `Catalog::hold_blobs`), and objects are removed only once older than `grace`.
pub fn gc(store: &mut Store, grace: std::time::Duration) -> Result<GcReport> {
    store.catalog.check_writable()?;
    let _lock = store.gc_lock()?;
    let mut report = GcReport {
        staging_removed: store.blobs.clear_staging()? + store.staging.sweep(store.conn())?,
        ..Default::default()
    };
    report.nodes_removed = store.catalog.write(nodes::remove_unreachable)?;
    nodes::collect_live_blobs(store.conn())?;
    let mut unused = Vec::new();
    let scanned = progress::counter("blobs scanned");
    store.blobs.for_each_stored(|d| {
        scanned.inc(1);
        if !nodes::blob_in_use(store.catalog.conn(), &d)? {
            unused.push(d);
        }
        Ok(())
    })?;
    scanned.finish_and_clear();
    if let Some(objects) = store.blobs.objects() {
        // Locally, only a cache: what it holds unreferenced is dropped from it.
        for d in &unused {
            store.blobs.remove(d)?;
            report.cache_removed += 1;
        }
        return gc_objects(store, objects, grace, report);
    }
    let removing = progress::items(unused.len() as u64, "unused blobs removed");
    for d in unused {
        report.bytes_freed += store.blobs.remove(&d)?;
        report.blobs_removed += 1;
        removing.inc(1);
    }
    removing.finish_and_clear();
    Ok(report)
}

/// Removes a shared store's objects that nothing references and that are older than
/// `grace`, marking from the catalog as [`gc`] does.
fn gc_objects(
    store: &Store,
    objects: &crate::objects::RemoteBlobs,
    grace: std::time::Duration,
    mut report: GcReport,
) -> Result<GcReport> {
    let now = std::time::SystemTime::now();
    let scanned = progress::counter("objects scanned");
    let mut unused = Vec::new();
    for blob in objects.list() {
        let blob = blob?;
        scanned.inc(1);
        if nodes::blob_in_use(store.conn(), &blob.digest)? {
            continue;
        }
        let age = now.duration_since(blob.modified).unwrap_or_default();
        if age < grace {
            report.recent_kept += 1;
        } else {
            unused.push(blob);
        }
    }
    scanned.finish_and_clear();
    let removing = progress::items(unused.len() as u64, "unused objects removed");
    for blob in unused {
        objects.delete(&blob.digest)?;
        report.bytes_freed += blob.size;
        report.blobs_removed += 1;
        removing.inc(1);
    }
    removing.finish_and_clear();
    Ok(report)
}
