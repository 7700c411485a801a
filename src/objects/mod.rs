//! Blobs in an object store that many hosts share, and the verified local cache each host
//! reads them through.
//!
//! Three layers, each usable on its own:
//! - [`ObjectClient`]: the few requests the shared store needs (head, put, multipart upload,
//!   ranged get, delete, list), blocking, with keys relative to the store's prefix.
//!   [`S3Client`] is the real one; tests wrap a client to add failures or count requests.
//! - [`RemoteBlobs`]: blobs by content address (`PREFIX/blobs/ab/abcd…`) over any client.
//!   Uploads skip content already there and go in parallel parts for large files; downloads
//!   are checked against the SHA-256 the key names before anyone may use them.
//! - [`BlobCache`]: a directory in exactly the `blobs/` layout of a local store, holding only
//!   verified content, bounded in size, least recently used first, never removing a file
//!   that some process has open.
//!
//! Everything here is blocking: the S3 client keeps a small runtime of its own, so callers
//! are ordinary threads.

mod cache;
mod remote;
mod s3;

use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;

pub use cache::{BlobCache, CachedBlob, Eviction};
pub use remote::{BlobListing, RemoteBlobs, StoredBlob, Transfer, Uploaded, blob_key};
pub use s3::{S3Client, S3Config};

/// What kind of failure an object store reported, for the errno and for callers that decide
/// whether to try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Not reachable, timing out, or failing with server errors, past the retries allowed.
    Unavailable,
    /// The credentials were refused, or do not allow the request.
    Denied,
    /// The bucket does not exist.
    NoBucket,
    /// Anything else the store refused.
    Other,
}

/// Why a request of an [`ObjectClient`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectError {
    /// Nothing is stored under the key.
    NotFound,
    /// Any other failure, of the kind given, with its cause in words.
    Failed { failure: Failure, why: String },
}

impl ObjectError {
    pub fn failed(failure: Failure, why: impl Into<String>) -> Self {
        ObjectError::Failed {
            failure,
            why: why.into(),
        }
    }
}

impl std::fmt::Display for ObjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectError::NotFound => f.write_str("no such object"),
            ObjectError::Failed { why, .. } => f.write_str(why),
        }
    }
}

/// One stored object: its key (relative to the store's prefix), size and last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    pub modified: SystemTime,
}

/// The bytes of one get, and the size of the whole object they were taken from.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub data: Bytes,
    pub object_size: u64,
}

/// The requests the shared store makes of an object store. Keys are relative to the store's
/// prefix. Every call blocks until it is done; a client retries transient failures itself,
/// within the bounds it was configured with, and reports what is left.
pub trait ObjectClient: Send + Sync {
    /// Names the store in messages: bucket, prefix and endpoint.
    fn describe(&self) -> &str;

    /// The object's size and last change; [`ObjectError::NotFound`] when there is none.
    fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError>;

    /// Stores `data` under `key` in one request: the object appears whole or not at all.
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError>;

    /// Starts a multipart upload to `key`; returns its id.
    fn create_multipart(&self, key: &str) -> Result<String, ObjectError>;

    /// Uploads part `index` (from 0) of an upload; returns the tag that completing needs.
    /// Parts may be sent concurrently and in any order.
    fn put_part(
        &self,
        key: &str,
        upload: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, ObjectError>;

    /// Makes the object out of the parts, given in index order. Until then nothing is
    /// visible under `key`.
    fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<String>,
    ) -> Result<(), ObjectError>;

    /// Gives up an upload and the parts it holds.
    fn abort_multipart(&self, key: &str, upload: &str) -> Result<(), ObjectError>;

    /// The object's bytes, or the given range of them.
    fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Fetched, ObjectError>;

    /// Removes the object; removing one that is not there succeeds.
    fn delete(&self, key: &str) -> Result<(), ObjectError>;

    /// Every object whose key starts with `prefix`, in key order, fetched page by page as
    /// the iterator is consumed.
    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Box<dyn Iterator<Item = Result<ObjectInfo, ObjectError>> + Send + 'a>;
}
