//! The semantic tests of versions, drafts, distributed drafts and runs, run again against a shared
//! store: PostgreSQL as the catalog and an S3-compatible server for the blobs. The files are
//! compiled in as they are; their `TestStore::new()` gives, in this target, a shared store of
//! its own (a database and a bucket on a PostgreSQL cluster and an s3s-fs server that this
//! process starts once for each file included; see tests/common). The few tests about the embedded store's own files
//! ask for an embedded store and run as they do in their own targets.
//!
//! Any other test file can be run the same way, unchanged: `ARTIFACTFS_TEST_SHARED=1 cargo
//! test --test NAME` (tests that look at catalog.db or blobs/ directly then fail, as they
//! should: a shared store has neither).

// Each file brings its own `mod common`: the helpers are compiled once per file here.
#![allow(clippy::duplicate_mod)]

#[path = "versions.rs"]
mod versions;

#[path = "drafts.rs"]
mod drafts;

#[path = "distributed.rs"]
mod distributed;

#[path = "runs.rs"]
mod runs;

mod common;

/// In this target, a test's `TestStore::new()` is a shared store (PostgreSQL and S3), so the
/// files above really run against one; `TestStore::embedded()` stays embedded.
#[test]
fn stores_made_here_are_shared() {
    let s = common::TestStore::new();
    assert!(
        s.shared.is_some(),
        "TestStore::new() is not shared in on_postgres"
    );
    assert!(s.root.join("config").exists(), "init wrote no config");
    assert!(!s.root.join("catalog.db").exists());
    assert!(common::TestStore::embedded().shared.is_none());
}
