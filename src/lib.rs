//! artifactfs: versioned datasets and models in a local content-addressed store.
//!
//! The core (catalog, blob store, drafts, commit) has no knowledge of FUSE; the command line
//! and the filesystem are thin layers over [`store::Store`] and [`query`].

pub mod app;
pub mod blobs;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod commit;
pub mod copy_store;
pub mod doctor;
pub mod draft;
pub mod error;
pub mod faults;
pub mod fs;
pub mod fuse;
pub mod hash;
pub mod ingest;
pub mod lineage;
pub mod maintenance;
pub mod manual;
pub mod materialize;
pub mod mount;
pub mod mount_helper;
pub mod mounts;
pub mod names;
pub mod objects;
pub mod progress;
pub mod query;
pub mod reference;
pub mod runs;
pub mod staging;
pub mod store;
pub mod store_config;
pub mod store_dir;
pub mod tree;
