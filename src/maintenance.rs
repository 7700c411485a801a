//! `verify` and `gc`: checking every blob against its name, and reclaiming what nothing uses.

use rayon::prelude::*;

use crate::blobs::BlobHealth;
use crate::catalog::nodes;
use crate::catalog::versions;
use crate::error::Result;
use crate::hash::Digest;
use crate::names::VersionRef;
use crate::progress;
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

pub struct VerifyReport {
    pub checked: u64,
    pub damaged: Vec<Damage>,
}

/// Re-hashes every blob of version `r`, or of every version and draft, on all cores.
pub fn verify(store: &Store, r: Option<&VersionRef>) -> Result<VerifyReport> {
    store.catalog.check_integrity(r.is_none())?;
    let conn = store.conn();
    let blobs = match r {
        Some(r) => {
            let v = versions::resolve(conn, r)?;
            nodes::referenced_blobs(conn, Some(&[v.root]))?
        }
        None => nodes::referenced_blobs(conn, None)?,
    };
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
            let mine = users.iter().filter(|(b, _, _)| *b == blob);
            Damage {
                blob,
                health,
                used_by: mine
                    .clone()
                    .filter_map(|(_, r, p)| p.as_ref().map(|p| (r.clone(), p.clone())))
                    .collect(),
                drafts: mine
                    .filter(|(_, _, p)| p.is_none())
                    .map(|(_, r, _)| r.clone())
                    .collect(),
            }
        })
        .collect();
    Ok(VerifyReport {
        checked: blobs.len() as u64,
        damaged,
    })
}

#[derive(Default)]
pub struct GcReport {
    pub nodes_removed: usize,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub staging_removed: usize,
}

/// Removes tree nodes no version or draft reaches, then blobs no node or draft references.
/// Holds the store's lock exclusively, so no writer is between storing a blob and
/// referencing it.
pub fn gc(store: &mut Store) -> Result<GcReport> {
    store.catalog.check_writable()?;
    let _lock = store.gc_lock()?;
    let mut report = GcReport {
        staging_removed: store.blobs.clear_staging()? + store.staging.sweep(store.conn())?,
        ..Default::default()
    };
    report.nodes_removed = store.catalog.write(|tx| nodes::remove_unreachable(tx))?;
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
    let removing = progress::items(unused.len() as u64, "unused blobs removed");
    for d in unused {
        report.bytes_freed += store.blobs.remove(&d)?;
        report.blobs_removed += 1;
        removing.inc(1);
    }
    removing.finish_and_clear();
    Ok(report)
}
