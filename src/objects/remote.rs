//! Blobs by content address over an [`ObjectClient`]: `blobs/ab/abcd…` under the store's
//! prefix holds the bytes whose SHA-256 is `abcd…`, as `blobs/` does in a local store.
//!
//! Uploads ask first whether the content is there (HEAD) and send nothing when it is; large
//! files go in parts, several at a time, read and hashed once more as they are sent so that
//! a file changed meanwhile is never stored under the wrong name. Downloads are hashed as
//! they arrive and refused, with both digests named, unless they match.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::SystemTime;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use super::{Failure, ObjectClient, ObjectError, ObjectInfo, S3Client, S3Config};
use crate::error::{Error, IoContext, Result};
use crate::hash::Digest;

const MIB: u64 = 1 << 20;
/// S3 allows no more parts than this in one upload: larger files get larger parts.
const MAX_PARTS: u64 = 10_000;
/// Where blobs live under the store's prefix.
const BLOBS: &str = "blobs/";

/// How large files are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Files of at least this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// The size of each uploaded part, and of each ranged read of a download.
    pub part_size: u64,
    /// Parts in flight at once, per file.
    pub concurrency: usize,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            multipart_threshold: 64 * MIB,
            part_size: 16 * MIB,
            concurrency: 8,
        }
    }
}

/// The key of a blob, relative to the store's prefix.
pub fn blob_key(digest: &Digest) -> String {
    let hex = digest.to_hex();
    format!("{BLOBS}{}/{hex}", &hex[..2])
}

/// The digest a blob key names, if it is one.
fn key_digest(key: &str) -> Option<Digest> {
    let (fan, hex) = key.strip_prefix(BLOBS)?.split_once('/')?;
    let digest = Digest::from_hex(hex).ok()?;
    (fan == &hex[..2]).then_some(digest)
}

/// What [`RemoteBlobs::put_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uploaded {
    pub digest: Digest,
    pub size: u64,
    /// False when the store already held the content, so nothing was sent.
    pub sent: bool,
}

/// A blob found by [`RemoteBlobs::list`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBlob {
    pub digest: Digest,
    pub size: u64,
    /// When the object was last written: garbage collection spares recent ones, which may
    /// belong to a commit still in flight.
    pub modified: SystemTime,
}

/// The blobs of a shared store.
#[derive(Clone)]
pub struct RemoteBlobs {
    client: Arc<dyn ObjectClient>,
    transfer: Transfer,
}

impl RemoteBlobs {
    pub fn new(client: Arc<dyn ObjectClient>) -> Self {
        RemoteBlobs {
            client,
            transfer: Transfer::default(),
        }
    }

    /// The blobs of the S3 store `config` names, once it has answered (see
    /// [`S3Client::connect`]).
    pub fn connect(config: &S3Config) -> Result<Self> {
        Ok(Self::new(Arc::new(S3Client::connect(config)?)))
    }

    pub fn with_transfer(mut self, transfer: Transfer) -> Self {
        transfer.check();
        self.transfer = transfer;
        self
    }

    pub fn transfer(&self) -> Transfer {
        self.transfer
    }

    pub fn client(&self) -> &Arc<dyn ObjectClient> {
        &self.client
    }

    /// The store, as messages name it.
    pub fn store(&self) -> &str {
        self.client.describe()
    }

    fn failed(&self, what: String, error: ObjectError) -> Error {
        let (failure, why) = match error {
            ObjectError::NotFound => (Failure::Other, "no such object".to_string()),
            ObjectError::Failed { failure, why } => (failure, why),
        };
        Error::ObjectStore {
            store: self.store().to_string(),
            what,
            why,
            failure,
        }
    }

    fn missing(&self, digest: &Digest) -> Error {
        Error::ObjectMissing {
            store: self.store().to_string(),
            digest: *digest,
        }
    }

    fn damaged(&self, digest: &Digest, why: String) -> Error {
        Error::ObjectDamaged {
            store: self.store().to_string(),
            digest: *digest,
            why,
        }
    }

    /// The size of the stored blob, if it is stored.
    pub fn size_of(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.client.head(&blob_key(digest)) {
            Ok(info) => Ok(Some(info.size)),
            Err(ObjectError::NotFound) => Ok(None),
            Err(e) => Err(self.failed(format!("looking for blob {digest}"), e)),
        }
    }

    pub fn exists(&self, digest: &Digest) -> Result<bool> {
        Ok(self.size_of(digest)?.is_some())
    }

    /// Whether the store holds this content whole. An object of another size under the
    /// name is damage, replaced by the upload that follows.
    fn holds(&self, digest: &Digest, size: u64) -> Result<bool> {
        match self.size_of(digest)? {
            Some(stored) if stored == size => Ok(true),
            Some(stored) => {
                log::warn!(
                    "{}: blob {digest} is {stored} bytes, not {size}; uploading it again",
                    self.store()
                );
                Ok(false)
            }
            None => Ok(false),
        }
    }

    /// Uploads the file at `path` under its content address, unless the store holds that
    /// content already. `known` is its digest when the caller has it (the file is then read
    /// once, and still checked against it); otherwise the file is hashed first. When this
    /// returns, the object is complete and visible.
    pub fn put_file(&self, path: &Path, known: Option<Digest>) -> Result<Uploaded> {
        let mut file = File::open(path).at(path)?;
        let len = file.metadata().at(path)?.len();
        if len < self.transfer.multipart_threshold {
            let mut data = Vec::with_capacity(len as usize);
            file.read_to_end(&mut data).at(path)?;
            let digest = Digest::of(&data);
            if known.is_some_and(|k| k != digest) {
                return Err(changed(path));
            }
            return self.put_bytes_as(digest, data, path);
        }
        let digest = match known {
            Some(d) => d,
            None => Digest::of_reader(&mut file).at(path)?.0,
        };
        if self.holds(&digest, len)? {
            return Ok(Uploaded {
                digest,
                size: len,
                sent: false,
            });
        }
        file.seek(SeekFrom::Start(0)).at(path)?;
        self.put_parts(&mut file, path, &digest, len)?;
        Ok(Uploaded {
            digest,
            size: len,
            sent: true,
        })
    }

    /// Uploads `data` under its content address, unless the store holds it already.
    pub fn put_bytes(&self, data: &[u8]) -> Result<Uploaded> {
        self.put_bytes_as(Digest::of(data), data.to_vec(), Path::new("(memory)"))
    }

    fn put_bytes_as(&self, digest: Digest, data: Vec<u8>, source: &Path) -> Result<Uploaded> {
        let size = data.len() as u64;
        if self.holds(&digest, size)? {
            return Ok(Uploaded {
                digest,
                size,
                sent: false,
            });
        }
        self.client
            .put(&blob_key(&digest), Bytes::from(data))
            .map_err(|e| {
                self.failed(
                    format!("uploading blob {digest} from {}", source.display()),
                    e,
                )
            })?;
        Ok(Uploaded {
            digest,
            size,
            sent: true,
        })
    }

    /// A multipart upload of `len` bytes of `file`: this thread reads and hashes the parts in
    /// order while `concurrency` others send them. Any failure, or content that turns out
    /// not to hash to `digest`, aborts the upload, so nothing appears under the key.
    fn put_parts(&self, file: &mut File, path: &Path, digest: &Digest, len: u64) -> Result<()> {
        let key = blob_key(digest);
        let what = || format!("uploading blob {digest} from {}", path.display());
        let upload = self
            .client
            .create_multipart(&key)
            .map_err(|e| self.failed(what(), e))?;
        let part = self
            .transfer
            .part_size
            .max(len.div_ceil(MAX_PARTS).next_multiple_of(MIB));
        let count = len.div_ceil(part) as usize;
        let tags = Mutex::new(vec![None::<String>; count]);
        let first_error = Mutex::new(None::<ObjectError>);
        let stop = AtomicBool::new(false);

        // A rendezvous channel: a part is read only once a sender is free to take it.
        let (to_send, parts) = mpsc::sync_channel::<(usize, Bytes)>(0);
        let parts = Mutex::new(parts);
        let read = std::thread::scope(|scope| {
            for _ in 0..self.transfer.concurrency.min(count) {
                scope.spawn(|| {
                    loop {
                        let next = lock(&parts).recv();
                        let Ok((index, data)) = next else { break };
                        if stop.load(Ordering::Relaxed) {
                            continue;
                        }
                        match self.client.put_part(&key, &upload, index, data) {
                            Ok(tag) => lock(&tags)[index] = Some(tag),
                            Err(e) => {
                                stop.store(true, Ordering::Relaxed);
                                lock(&first_error).get_or_insert(e);
                            }
                        }
                    }
                });
            }
            let mut hasher = Sha256::new();
            let mut result = Ok(());
            for index in 0..count {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let n = part.min(len - index as u64 * part) as usize;
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut buf) {
                    result = Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        changed(path)
                    } else {
                        Error::io(path, e)
                    });
                    break;
                }
                hasher.update(&buf);
                if to_send.send((index, Bytes::from(buf))).is_err() {
                    break;
                }
            }
            drop(to_send);
            result.map(|()| Digest(hasher.finalize().into()))
        });

        let outcome = match (read, lock(&first_error).take()) {
            (_, Some(e)) => Err(self.failed(what(), e)),
            (Err(e), None) => Err(e),
            (Ok(actual), None) if actual != *digest => Err(changed(path)),
            (Ok(_), None) => {
                let tags: Option<Vec<String>> =
                    std::mem::take(&mut *lock(&tags)).into_iter().collect();
                let tags = tags.expect("every part was sent");
                return self
                    .client
                    .complete_multipart(&key, &upload, tags)
                    .map_err(|e| self.failed(what(), e));
            }
        };
        if let Err(e) = self.client.abort_multipart(&key, &upload) {
            log::warn!(
                "{}: could not abort the upload of blob {digest} ({e}); the store keeps its \
                 parts until its own clean-up",
                self.store()
            );
        }
        outcome
    }

    /// Writes blob `digest` to `out` from its current position, hashing it on the way, and
    /// fails unless it is exactly the content its name promises. `size` is what the caller
    /// recorded for it (found out with a HEAD otherwise). Large blobs are read in ranges,
    /// several at a time, and written in order.
    pub fn download(&self, digest: &Digest, size: Option<u64>, out: &mut dyn Write) -> Result<u64> {
        let key = blob_key(digest);
        let size = match size {
            Some(size) => size,
            None => self.size_of(digest)?.ok_or_else(|| self.missing(digest))?,
        };
        let part = self.transfer.part_size;
        let count = size.div_ceil(part).max(1) as usize;
        let mut hasher = Sha256::new();
        let what = || format!("downloading blob {digest}");
        let fetch = |index: usize| -> Result<Bytes> {
            // Ranged even when whole, so the answer tells the object's size; but not when
            // empty, as a range of nothing is one no server can satisfy.
            let range =
                (size > 0).then(|| index as u64 * part..size.min((index as u64 + 1) * part));
            let fetched = self.client.get(&key, range.clone()).map_err(|e| match e {
                ObjectError::NotFound => self.missing(digest),
                e => self.failed(what(), e),
            })?;
            if fetched.object_size != size {
                return Err(self.damaged(
                    digest,
                    format!(
                        "it is {} bytes, not the {size} expected",
                        fetched.object_size
                    ),
                ));
            }
            let expected = range.map_or(size, |r| r.end - r.start);
            if fetched.data.len() as u64 != expected {
                return Err(self.damaged(
                    digest,
                    format!("a read of {expected} bytes returned {}", fetched.data.len()),
                ));
            }
            Ok(fetched.data)
        };
        self.in_order(count, fetch, |data| {
            hasher.update(&data);
            out.write_all(&data)
                .map_err(|e| Error::io(format!("(download of blob {digest})"), e))
        })?;
        let actual = Digest(hasher.finalize().into());
        if actual != *digest {
            return Err(self.damaged(digest, format!("its content hashes to {actual}")));
        }
        Ok(size)
    }

    /// Downloads blob `digest` to `dest`: into a temporary file beside it, checked, flushed,
    /// then renamed into place, so `dest` never holds anything but the verified content.
    pub fn get(&self, digest: &Digest, size: Option<u64>, dest: &Path) -> Result<u64> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .at(dir)?;
        let n = self.download(digest, size, tmp.as_file_mut())?;
        tmp.as_file().sync_data().at(tmp.path())?;
        tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
        Ok(n)
    }

    /// Removes blob `digest` from the store; removing one that is not there succeeds.
    pub fn delete(&self, digest: &Digest) -> Result<()> {
        self.client
            .delete(&blob_key(digest))
            .map_err(|e| self.failed(format!("removing blob {digest}"), e))
    }

    /// Every blob in the store, in key order, a page at a time. Keys under `blobs/` that
    /// are not blob names are skipped.
    pub fn list(&self) -> BlobListing<'_> {
        BlobListing {
            blobs: self,
            objects: self.client.list(BLOBS),
        }
    }

    /// Runs `fetch(0..count)` on up to `concurrency` threads and hands the results to
    /// `consume` in index order, holding at most `concurrency` results at a time.
    fn in_order(
        &self,
        count: usize,
        fetch: impl Fn(usize) -> Result<Bytes> + Sync,
        mut consume: impl FnMut(Bytes) -> Result<()>,
    ) -> Result<()> {
        if count == 1 {
            return consume(fetch(0)?);
        }
        let window = self.transfer.concurrency.max(1);
        let (jobs, job_queue) = mpsc::channel::<usize>();
        let job_queue = Mutex::new(job_queue);
        let (done, results) = mpsc::channel::<(usize, Result<Bytes>)>();
        std::thread::scope(|scope| {
            for _ in 0..window.min(count) {
                let done = done.clone();
                let (job_queue, fetch) = (&job_queue, &fetch);
                scope.spawn(move || {
                    loop {
                        let next = lock(job_queue).recv();
                        let Ok(index) = next else { break };
                        if done.send((index, fetch(index))).is_err() {
                            break;
                        }
                    }
                });
            }
            drop(done);
            let mut sent = 0;
            let mut next = 0;
            let mut held = BTreeMap::new();
            let result = (|| {
                while next < count {
                    while sent < count && sent < next + window {
                        jobs.send(sent).expect("fetchers wait for work");
                        sent += 1;
                    }
                    let (index, data) = results.recv().expect("a fetcher answers each job");
                    held.insert(index, data?);
                    while let Some(data) = held.remove(&next) {
                        consume(data)?;
                        next += 1;
                    }
                }
                Ok(())
            })();
            drop(jobs);
            result
        })
    }
}

impl Transfer {
    fn check(&self) {
        assert!(self.part_size > 0, "part size must be positive");
        assert!(self.concurrency > 0, "concurrency must be positive");
        assert!(
            self.multipart_threshold >= self.part_size,
            "multipart threshold below the part size"
        );
    }
}

fn changed(path: &Path) -> Error {
    Error::invalid(
        path.display().to_string(),
        "changed while it was being uploaded; try again once it is no longer being written",
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The blobs of a store, as [`RemoteBlobs::list`] finds them.
pub struct BlobListing<'a> {
    blobs: &'a RemoteBlobs,
    objects: Box<dyn Iterator<Item = Result<ObjectInfo, ObjectError>> + Send + 'a>,
}

impl Iterator for BlobListing<'_> {
    type Item = Result<StoredBlob>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.objects.next()? {
                Ok(info) => {
                    if let Some(digest) = key_digest(&info.key) {
                        return Some(Ok(StoredBlob {
                            digest,
                            size: info.size,
                            modified: info.modified,
                        }));
                    }
                }
                Err(e) => {
                    return Some(Err(self.blobs.failed("listing blobs".to_string(), e)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_content_addresses_with_a_fan_out() {
        let d = Digest::of(b"abc");
        let key = blob_key(&d);
        assert_eq!(
            key,
            "blobs/ba/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key_digest(&key), Some(d));
        assert_eq!(key_digest(&key.replace("blobs/ba/", "blobs/bb/")), None);
        assert_eq!(key_digest("blobs/ba/not-a-digest"), None);
        assert_eq!(key_digest("other/ba/ba78"), None);
    }
}
