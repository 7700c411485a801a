//! The object-store layer of the shared store, against a real S3-compatible server (s3s-fs)
//! that each test starts on 127.0.0.1: blobs round-trip under their content addresses,
//! content already there is not sent again, damage and absence are caught and named, a
//! server crash during an upload is survived or reported with nothing half-written, the
//! cache evicts least recently used files but never an open one, and bad settings are named.

mod common;

use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime};

use artifactfs::blobs::BlobStore;
use artifactfs::error::Error;
use artifactfs::hash::Digest;
use artifactfs::objects::{
    BlobCache, Failure, Fetched, ObjectClient, ObjectError, ObjectInfo, RemoteBlobs, S3Client,
    Transfer, blob_key,
};
use bytes::Bytes;
use common::noise;
use common::services::S3Server;

const MIB: usize = 1 << 20;

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, data).unwrap();
    path
}

/// Requests seen, by kind.
#[derive(Default)]
struct Counts {
    head: AtomicUsize,
    put: AtomicUsize,
    create: AtomicUsize,
    part: AtomicUsize,
    complete: AtomicUsize,
    abort: AtomicUsize,
    get: AtomicUsize,
}

fn n(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

type PartHook = Box<dyn Fn(usize) -> Option<ObjectError> + Send + Sync>;

/// A client around the real one that counts requests, and may run a hook before each part
/// is sent (to fail it, or to time a crash of the server).
struct Watched {
    inner: Arc<dyn ObjectClient>,
    counts: Arc<Counts>,
    before_part: Option<PartHook>,
}

impl Watched {
    fn new(inner: Arc<dyn ObjectClient>) -> (Self, Arc<Counts>) {
        let counts = Arc::new(Counts::default());
        let me = Watched {
            inner,
            counts: counts.clone(),
            before_part: None,
        };
        (me, counts)
    }
}

impl ObjectClient for Watched {
    fn describe(&self) -> &str {
        self.inner.describe()
    }
    fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        self.counts.head.fetch_add(1, Ordering::SeqCst);
        self.inner.head(key)
    }
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        self.counts.put.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, data)
    }
    fn create_multipart(&self, key: &str) -> Result<String, ObjectError> {
        self.counts.create.fetch_add(1, Ordering::SeqCst);
        self.inner.create_multipart(key)
    }
    fn put_part(
        &self,
        key: &str,
        upload: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, ObjectError> {
        self.counts.part.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.before_part.as_ref().and_then(|hook| hook(index)) {
            return Err(e);
        }
        self.inner.put_part(key, upload, index, data)
    }
    fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<String>,
    ) -> Result<(), ObjectError> {
        self.counts.complete.fetch_add(1, Ordering::SeqCst);
        self.inner.complete_multipart(key, upload, parts)
    }
    fn abort_multipart(&self, key: &str, upload: &str) -> Result<(), ObjectError> {
        self.counts.abort.fetch_add(1, Ordering::SeqCst);
        self.inner.abort_multipart(key, upload)
    }
    fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Fetched, ObjectError> {
        self.counts.get.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key, range)
    }
    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.inner.delete(key)
    }
    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Box<dyn Iterator<Item = Result<ObjectInfo, ObjectError>> + Send + 'a> {
        self.inner.list(prefix)
    }
}

/// A server with one bucket, and a connected client for it.
struct Fixture {
    server: S3Server,
    bucket: &'static str,
    url: String,
    s3: Arc<dyn ObjectClient>,
    tmp: tempfile::TempDir,
}

impl Fixture {
    fn new(bucket: &'static str) -> Self {
        Self::with_retry(bucket, Duration::from_secs(30))
    }

    fn with_retry(bucket: &'static str, retry_for: Duration) -> Self {
        let server = S3Server::start();
        let url = server.bucket_url(bucket);
        let mut config = server.config(&url);
        config.retry_for = retry_for;
        let s3 = Arc::new(S3Client::connect(&config).unwrap());
        Fixture {
            server,
            bucket,
            url,
            s3,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn remote(&self) -> RemoteBlobs {
        RemoteBlobs::new(self.s3.clone())
    }

    fn watched(&self) -> (Watched, Arc<Counts>) {
        Watched::new(self.s3.clone())
    }

    /// A remote sending 8 MiB parts, two at a time, that says on the receiver when part
    /// `index` is about to be sent.
    fn signalling_at_part(&self, index: usize) -> (RemoteBlobs, Arc<Counts>, mpsc::Receiver<()>) {
        let (mut watched, counts) = self.watched();
        let (signal, reached) = mpsc::channel();
        let signal = Mutex::new(signal);
        watched.before_part = Some(Box::new(move |i| {
            if i == index {
                let _ = signal.lock().unwrap().send(());
            }
            None
        }));
        let transfer = Transfer {
            multipart_threshold: 8 * MIB as u64,
            part_size: 8 * MIB as u64,
            concurrency: 2,
        };
        let remote = RemoteBlobs::new(Arc::new(watched)).with_transfer(transfer);
        (remote, counts, reached)
    }

    /// The file in which the server keeps blob `digest`.
    fn object_file(&self, digest: &Digest) -> PathBuf {
        self.server
            .object_file(self.bucket, &format!("store/{}", blob_key(digest)))
    }

    fn cache(&self, limit: u64) -> BlobCache {
        BlobCache::open(&self.tmp.path().join("cache"), limit).unwrap()
    }

    /// Multipart uploads the server holds parts of (its `.upload_id-*` files).
    fn unfinished_uploads(&self) -> usize {
        fs::read_dir(self.server.data_dir())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".upload_id-"))
            .count()
    }
}

fn read_blob(file: &fs::File) -> Vec<u8> {
    let mut data = Vec::new();
    (&*file).read_to_end(&mut data).unwrap();
    data
}

/// Whether some other open file holds a lock on `path`.
fn locked_elsewhere(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let file = fs::File::open(path).unwrap();
    // SAFETY: the descriptor is valid for the duration of the call.
    let taken = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !taken
}

fn staged_files(cache: &BlobCache) -> usize {
    fs::read_dir(cache.root().join("staging")).unwrap().count()
}

#[test]
fn a_small_blob_round_trips_under_its_content_address() {
    let fx = Fixture::new("small");
    let remote = fx.remote();
    let data = noise(1, 100_000);
    let src = write(fx.tmp.path(), "small.bin", &data);
    let up = remote.put_file(&src, None).unwrap();
    assert_eq!(up.digest, Digest::of(&data));
    assert_eq!((up.size, up.sent), (data.len() as u64, true));
    // The server holds exactly these bytes under PREFIX/blobs/ab/abcd….
    let key = blob_key(&up.digest);
    let hex = up.digest.to_hex();
    assert_eq!(key, format!("blobs/{}/{hex}", &hex[..2]));
    assert_eq!(fs::read(fx.object_file(&up.digest)).unwrap(), data);
    assert!(remote.exists(&up.digest).unwrap());
    assert!(!remote.exists(&Digest::of(b"never stored")).unwrap());

    let dest = fx.tmp.path().join("copy.bin");
    assert_eq!(
        remote.get(&up.digest, None, &dest).unwrap(),
        data.len() as u64
    );
    assert_eq!(fs::read(&dest).unwrap(), data);

    // An empty file is a blob like any other.
    let empty = write(fx.tmp.path(), "empty", b"");
    let up = remote.put_file(&empty, None).unwrap();
    let cache = fx.cache(1 << 30);
    let blob = cache.fetch(&remote, &up.digest, Some(0)).unwrap();
    assert_eq!(blob.size(), 0);
}

#[test]
fn a_large_blob_goes_up_in_parallel_parts_and_comes_down_in_ranges() {
    let fx = Fixture::new("large");
    let (watched, counts) = fx.watched();
    let remote = RemoteBlobs::new(Arc::new(watched));
    assert_eq!(remote.transfer(), Transfer::default());
    // Past the 64 MiB threshold: 16 MiB parts, the last one short.
    let data = noise(2, 70 * MIB + 123);
    let src = write(fx.tmp.path(), "large.bin", &data);
    let up = remote.put_file(&src, None).unwrap();
    assert!(up.sent);
    assert_eq!(
        (
            n(&counts.put),
            n(&counts.create),
            n(&counts.part),
            n(&counts.complete)
        ),
        (0, 1, 5, 1)
    );
    assert_eq!(fs::read(fx.object_file(&up.digest)).unwrap(), data);
    assert_eq!(fx.unfinished_uploads(), 0);

    let cache = fx.cache(1 << 30);
    let blob = cache
        .fetch(&remote, &up.digest, Some(data.len() as u64))
        .unwrap();
    assert_eq!(n(&counts.get), 5, "one ranged read per part");
    assert_eq!(read_blob(blob.file()), data);
    assert_eq!(blob.path(), cache.path(&up.digest));
    // Cached: no second download.
    drop(blob);
    let again = cache.fetch(&remote, &up.digest, None).unwrap();
    assert_eq!(n(&counts.get), 5);
    assert_eq!(again.size(), data.len() as u64);
}

#[test]
fn content_already_there_is_not_sent_again() {
    let fx = Fixture::new("dedup");
    let (watched, counts) = fx.watched();
    let transfer = Transfer {
        multipart_threshold: 8 * MIB as u64,
        part_size: 5 * MIB as u64,
        concurrency: 2,
    };
    let remote = RemoteBlobs::new(Arc::new(watched)).with_transfer(transfer);
    let small = write(fx.tmp.path(), "small", &noise(3, 1000));
    let large = write(fx.tmp.path(), "large", &noise(4, 12 * MIB));
    let first: Vec<_> = [&small, &large]
        .iter()
        .map(|p| remote.put_file(p, None).unwrap())
        .collect();
    assert!(first.iter().all(|u| u.sent));
    let stamps: Vec<SystemTime> = first
        .iter()
        .map(|u| {
            fs::metadata(fx.object_file(&u.digest))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect();
    let sent = (n(&counts.put), n(&counts.part), n(&counts.head));
    assert_eq!(sent, (1, 3, 2));

    std::thread::sleep(Duration::from_millis(20));
    // A copy of the same content, from another file and with the digest known.
    let large_copy = write(fx.tmp.path(), "large-copy", &fs::read(&large).unwrap());
    let again = [
        remote.put_file(&small, None).unwrap(),
        remote.put_file(&large_copy, Some(first[1].digest)).unwrap(),
        remote.put_bytes(&fs::read(&small).unwrap()).unwrap(),
    ];
    assert!(again.iter().all(|u| !u.sent));
    assert_eq!(
        (n(&counts.put), n(&counts.part), n(&counts.head)),
        (1, 3, 5)
    );
    for (u, stamp) in first.iter().zip(&stamps) {
        let now = fs::metadata(fx.object_file(&u.digest))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(now, *stamp, "the object was not written again");
    }

    // An object of the wrong size under the name is damage, and is replaced.
    fs::write(fx.object_file(&first[0].digest), b"short").unwrap();
    assert!(remote.put_file(&small, None).unwrap().sent);
    assert_eq!(
        fs::read(fx.object_file(&first[0].digest)).unwrap(),
        fs::read(&small).unwrap()
    );
}

#[test]
fn a_file_that_changes_while_it_is_uploaded_is_not_stored_under_the_old_name() {
    let fx = Fixture::new("changing");
    let transfer = Transfer {
        multipart_threshold: 8 * MIB as u64,
        part_size: 5 * MIB as u64,
        concurrency: 2,
    };
    let remote = fx.remote().with_transfer(transfer);
    let data = noise(5, 12 * MIB);
    let src = write(fx.tmp.path(), "moving", &data);
    // The caller's digest is of other content: what is read does not match it.
    let claimed = Digest::of(b"what the file held before");
    let e = remote.put_file(&src, Some(claimed)).unwrap_err();
    assert!(
        e.to_string()
            .contains("changed while it was being uploaded"),
        "{e}"
    );
    assert!(!remote.exists(&claimed).unwrap());
    assert!(!fx.object_file(&claimed).exists());
    assert_eq!(fx.unfinished_uploads(), 0, "the upload was aborted");
}

#[test]
fn a_download_damaged_in_the_bucket_is_refused_and_never_cached() {
    let fx = Fixture::new("damage");
    let transfer = Transfer {
        multipart_threshold: 8 * MIB as u64,
        part_size: 5 * MIB as u64,
        concurrency: 3,
    };
    let remote = fx.remote().with_transfer(transfer);
    let cache = fx.cache(1 << 30);
    for (i, len) in [(0u64, 4096usize), (1, 12 * MIB)] {
        let data = noise(10 + i, len);
        let src = write(fx.tmp.path(), &format!("f{i}"), &data);
        let digest = remote.put_file(&src, None).unwrap().digest;
        // Garbage of the same length, in the middle of the object.
        let mut bad = data.clone();
        bad[len / 2..len / 2 + 16].copy_from_slice(b"garbage!garbage!");
        fs::write(fx.object_file(&digest), &bad).unwrap();
        let actual = Digest::of(&bad);
        let e = cache.fetch(&remote, &digest, Some(len as u64)).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::ObjectDamaged { .. }), "{msg}");
        assert!(
            msg.contains(&digest.to_hex()) && msg.contains(&actual.to_hex()),
            "names the blob and what it hashes to: {msg}"
        );
        assert!(msg.contains(&fx.url), "names the store: {msg}");
        assert_eq!(e.errno(), libc::EIO);
        assert!(!cache.path(&digest).exists());
        assert_eq!(staged_files(&cache), 0);
        let dest = fx.tmp.path().join(format!("got{i}"));
        assert!(remote.get(&digest, None, &dest).is_err());
        assert!(!dest.exists());

        // Cut short, the object's size gives it away before its hash does.
        fs::write(fx.object_file(&digest), &data[..len - 1]).unwrap();
        let e = cache.fetch(&remote, &digest, Some(len as u64)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("{} bytes, not the {len} expected", len - 1)),
            "{msg}"
        );
        assert!(!cache.path(&digest).exists());

        // Put right again, it is fetched.
        fs::write(fx.object_file(&digest), &data).unwrap();
        let blob = cache.fetch(&remote, &digest, Some(len as u64)).unwrap();
        assert_eq!(read_blob(blob.file()), data);
    }
}

#[test]
fn a_missing_object_is_named() {
    let fx = Fixture::new("missing");
    let remote = fx.remote();
    let cache = fx.cache(1 << 30);
    let digest = Digest::of(b"never uploaded");
    for size in [None, Some(14)] {
        let e = cache.fetch(&remote, &digest, size).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::ObjectMissing { .. }), "{msg}");
        assert_eq!(
            msg,
            format!(
                "blob {digest} is missing from object store {} at {}",
                fx.url,
                fx.server.endpoint()
            )
        );
        assert_eq!(e.errno(), libc::EIO);
        assert!(!cache.path(&digest).exists());
    }
    assert_eq!(staged_files(&cache), 0);
    // Deleting what is not there is no error.
    remote.delete(&digest).unwrap();
}

#[test]
fn blobs_are_listed_with_size_and_time_and_can_be_deleted() {
    let fx = Fixture::new("listing");
    let remote = fx.remote();
    let mut stored = Vec::new();
    for i in 0..3 {
        let data = noise(20 + i as u64, 1000 + i);
        stored.push(remote.put_bytes(&data).unwrap());
    }
    // More than a page of objects (1000), written straight into the server's directory, one
    // of them old; and names under blobs/ that are not blobs, which the listing skips.
    let old = SystemTime::now() - Duration::from_secs(7200);
    for i in 0..1100u32 {
        let digest = Digest::of(&i.to_le_bytes());
        let path = fx.object_file(&digest);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, i.to_le_bytes()).unwrap();
        if i == 7 {
            fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    let blobs_dir = fx.server.object_file(fx.bucket, "store/blobs");
    fs::create_dir_all(blobs_dir.join("zz")).unwrap();
    fs::write(blobs_dir.join("zz/not-a-blob"), b"x").unwrap();
    fs::write(blobs_dir.join("README"), b"x").unwrap();

    let listed: Vec<_> = remote.list().map(|b| b.unwrap()).collect();
    assert_eq!(listed.len(), 1103);
    let mut keys: Vec<String> = listed.iter().map(|b| blob_key(&b.digest)).collect();
    let sorted = {
        let mut k = keys.clone();
        k.sort();
        k
    };
    assert_eq!(keys, sorted, "in key order");
    keys.dedup();
    assert_eq!(keys.len(), 1103, "no key twice across pages");
    let now = SystemTime::now();
    for up in &stored {
        let b = listed.iter().find(|b| b.digest == up.digest).unwrap();
        assert_eq!(b.size, up.size);
        let age = now.duration_since(b.modified).unwrap_or_default();
        assert!(age < Duration::from_secs(120), "{age:?}");
    }
    let aged = listed
        .iter()
        .find(|b| b.digest == Digest::of(&7u32.to_le_bytes()))
        .unwrap();
    let age = now.duration_since(aged.modified).unwrap();
    assert!(age > Duration::from_secs(7000), "{age:?}");

    remote.delete(&stored[0].digest).unwrap();
    assert!(!remote.exists(&stored[0].digest).unwrap());
    assert!(remote.exists(&stored[1].digest).unwrap());
    assert_eq!(remote.list().count(), 1102);
}

/// A server killed while the parts of an upload are in flight, and started again a second
/// later: the retries carry the upload through.
#[test]
fn an_upload_cut_off_by_a_server_crash_completes_once_the_server_is_back() {
    let fx = Fixture::new("crash");
    let (remote, counts, reached) = fx.signalling_at_part(2);
    let data = noise(30, 96 * MIB);
    let src = write(fx.tmp.path(), "big", &data);
    let digest = Digest::of(&data);
    let mut server = fx.server;
    let uploaded = std::thread::scope(|s| {
        let upload = s.spawn(|| remote.put_file(&src, Some(digest)));
        reached.recv_timeout(Duration::from_secs(60)).unwrap();
        server.kill();
        // While the server is down, nothing is under the key.
        let object = server.object_file("crash", &format!("store/{}", blob_key(&digest)));
        assert!(!object.exists());
        std::thread::sleep(Duration::from_secs(1));
        server.start_again();
        upload.join().unwrap()
    });
    let uploaded = uploaded.unwrap();
    assert!(uploaded.sent);
    assert_eq!(n(&counts.complete), 1);
    assert_eq!(n(&counts.abort), 0);
    let object = server.object_file("crash", &format!("store/{}", blob_key(&digest)));
    assert_eq!(Digest::of(&fs::read(object).unwrap()), digest);
}

/// A server that stays down longer than the retries last: the upload fails with an error
/// naming the store and the cause, nothing appears under the key, and the same upload
/// succeeds once the server is back.
#[test]
fn an_upload_that_outlasts_its_retries_fails_cleanly() {
    let fx = Fixture::with_retry("outage", Duration::from_secs(2));
    let (remote, counts, reached) = fx.signalling_at_part(1);
    let data = noise(31, 64 * MIB);
    let src = write(fx.tmp.path(), "big", &data);
    let digest = Digest::of(&data);
    let key = format!("store/{}", blob_key(&digest));
    let mut server = fx.server;
    let started = Instant::now();
    let result = std::thread::scope(|s| {
        let upload = s.spawn(|| remote.put_file(&src, None));
        reached.recv_timeout(Duration::from_secs(60)).unwrap();
        server.kill();
        upload.join().unwrap()
    });
    let took = started.elapsed();
    let e = result.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::ObjectStore {
                failure: Failure::Unavailable,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&fx.url) && msg.contains(&server.endpoint()),
        "{msg}"
    );
    assert!(
        msg.contains(&digest.to_hex()) && msg.contains("cannot reach"),
        "{msg}"
    );
    assert!(
        took < Duration::from_secs(20),
        "gave up in bounded time: {took:?}"
    );
    assert_eq!(n(&counts.complete), 0);
    assert_eq!(n(&counts.abort), 1);

    server.start_again();
    assert!(!server.object_file("outage", &key).exists());
    let probe = RemoteBlobs::new(fx.s3.clone());
    assert!(!probe.exists(&digest).unwrap());
    let up = probe.put_file(&src, None).unwrap();
    assert!(up.sent);
    assert_eq!(fs::read(server.object_file("outage", &key)).unwrap(), data);
}

#[test]
fn a_failing_part_aborts_the_whole_upload() {
    let fx = Fixture::new("failing");
    let (mut watched, counts) = fx.watched();
    watched.before_part = Some(Box::new(|index| {
        (index == 2).then(|| ObjectError::failed(Failure::Other, "the part was refused (injected)"))
    }));
    let transfer = Transfer {
        multipart_threshold: 8 * MIB as u64,
        part_size: 5 * MIB as u64,
        concurrency: 2,
    };
    let remote = RemoteBlobs::new(Arc::new(watched)).with_transfer(transfer);
    let data = noise(40, 30 * MIB);
    let src = write(fx.tmp.path(), "parts", &data);
    let e = remote.put_file(&src, None).unwrap_err();
    let digest = Digest::of(&data);
    assert_eq!(
        e.to_string(),
        format!(
            "object store {} at {}: uploading blob {digest} from {}: the part was refused \
             (injected)",
            fx.url,
            fx.server.endpoint(),
            src.display()
        )
    );
    assert_eq!(n(&counts.abort), 1);
    assert_eq!(n(&counts.complete), 0);
    assert!(!fx.remote().exists(&digest).unwrap());
    assert!(!fx.object_file(&digest).exists());
    assert_eq!(
        fx.unfinished_uploads(),
        0,
        "the aborted upload's parts are gone"
    );
}

#[test]
fn the_cache_evicts_least_recently_used_blobs_but_never_an_open_one() {
    let fx = Fixture::new("evict");
    let remote = fx.remote();
    let digests: Vec<Digest> = (0..6)
        .map(|i| remote.put_bytes(&noise(50 + i, 400_000)).unwrap().digest)
        .collect();
    // Room for 4 of them: an eviction brings it back to 3 (nine tenths of 1.6 MB).
    let cache = fx.cache(1_600_000);
    let pause = || std::thread::sleep(Duration::from_millis(10));
    let held = cache.fetch(&remote, &digests[0], Some(400_000)).unwrap();
    pause();
    for d in &digests[1..4] {
        drop(cache.fetch(&remote, d, Some(400_000)).unwrap());
        pause();
    }
    assert_eq!(cache.usage().unwrap(), 1_600_000);
    // 1 is used again; 0 stays open.
    drop(cache.open_blob(&digests[1]).unwrap().unwrap());
    pause();
    drop(cache.fetch(&remote, &digests[4], Some(400_000)).unwrap());
    // Over: 0 is the least recently used but open, 2 and 3 are next (1 was used again).
    let present = |i: usize| cache.path(&digests[i]).exists();
    assert_eq!(
        (0..5).map(present).collect::<Vec<_>>(),
        [true, true, false, false, true]
    );
    assert_eq!(cache.usage().unwrap(), 1_200_000);

    // A blob open in another process is just as safe: flock(1) holds it the way a reader
    // of the cache does.
    let mut other = Command::new("flock")
        .args(["--shared", "--close"])
        .arg(cache.path(&digests[1]))
        .arg("cat")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run flock(1) from util-linux");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !locked_elsewhere(&cache.path(&digests[1])) {
        assert!(Instant::now() < deadline, "flock(1) did not take its lock");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(held);
    pause();
    // Fetching 5 fills the cache, fetching 2 again puts it over.
    drop(cache.fetch(&remote, &digests[5], Some(400_000)).unwrap());
    pause();
    drop(cache.fetch(&remote, &digests[2], Some(400_000)).unwrap());
    // Over: 0 (closed now) and 1 (open elsewhere) are the oldest; 0 goes, then 4.
    assert_eq!(
        (0..6).map(present).collect::<Vec<_>>(),
        [false, true, true, false, false, true]
    );
    let report = cache.evict().unwrap();
    assert_eq!(report.removed, 0, "not over its size: nothing to do");
    // flock(1) lets go when its command ends.
    drop(other.stdin.take());
    assert!(other.wait().unwrap().success());
    // Forced over its size again, 1 goes first now that nothing holds it.
    drop(cache.fetch(&remote, &digests[3], Some(400_000)).unwrap());
    drop(cache.fetch(&remote, &digests[0], Some(400_000)).unwrap());
    assert!(!present(1));
    assert!(present(0) && present(3));
}

#[test]
fn concurrent_fetches_of_one_blob_download_it_once() {
    let fx = Fixture::new("together");
    let (watched, counts) = fx.watched();
    let remote = RemoteBlobs::new(Arc::new(watched));
    let data = noise(60, 3 * MIB);
    let digest = remote.put_bytes(&data).unwrap().digest;
    let cache = fx.cache(1 << 30);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    cache
                        .fetch(&remote, &digest, Some(data.len() as u64))
                        .unwrap()
                })
            })
            .collect();
        for r in readers {
            assert_eq!(read_blob(r.join().unwrap().file()), data);
        }
    });
    assert_eq!(n(&counts.get), 1);
}

#[test]
fn the_local_store_reads_the_cache_unchanged() {
    let fx = Fixture::new("layout");
    let remote = fx.remote();
    let data = noise(70, 5000);
    let src = write(fx.tmp.path(), "f", &data);
    let up = remote.put_file(&src, None).unwrap();
    let cache = fx.cache(1 << 30);
    drop(cache.fetch(&remote, &up.digest, None).unwrap());
    // A file written here and uploaded may enter the cache too, checked as it is copied.
    let other = write(fx.tmp.path(), "g", b"written on this host");
    let local = remote.put_file(&other, None).unwrap();
    drop(cache.insert_file(&other, &local.digest).unwrap());

    let store = BlobStore::open(cache.root()).unwrap();
    for (digest, expected) in [
        (up.digest, data.clone()),
        (local.digest, b"written on this host".to_vec()),
    ] {
        let file = store
            .open_content(&digest, expected.len() as u64, || "f".into())
            .unwrap();
        assert_eq!(read_blob(&file), expected);
    }
}

#[test]
fn bad_settings_are_named() {
    let server = S3Server::start();
    let url = server.bucket_url("present");

    // Nothing listens there: refused connections, retried for the time allowed.
    let mut config = server.config(&url);
    let port = common::services::free_port();
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    config.retry_for = Duration::from_secs(1);
    let started = Instant::now();
    let e = S3Client::connect(&config).err().unwrap();
    let msg = e.to_string();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains(&url),
        "{msg}"
    );
    assert!(
        msg.contains("cannot reach the server") && msg.contains("gave up after"),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");

    // Credentials the server does not know, or a wrong secret.
    for (id, secret) in [
        ("nobody-knows-me", S3Server::SECRET_KEY),
        (S3Server::ACCESS_KEY, "wrong"),
    ] {
        let mut config = server.config(&url);
        config.access_key_id = Some(id.into());
        config.secret_access_key = Some(secret.into());
        let e = S3Client::connect(&config).err().unwrap();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                Error::ObjectStore {
                    failure: Failure::Denied,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("the credentials (access key {id}) were refused")),
            "{msg}"
        );
        assert!(!msg.contains(secret), "never shows the secret: {msg}");
        assert_eq!(e.errno(), libc::EACCES);
    }

    // A bucket that does not exist.
    let config = server.config("s3://absent-bucket/store");
    let e = S3Client::connect(&config).err().unwrap();
    assert_eq!(
        e.to_string(),
        format!(
            "object store s3://absent-bucket/store at {}: checking the bucket: the bucket does \
             not exist",
            server.endpoint()
        )
    );

    // URLs that are not of an S3 store.
    for bad in ["https://present/store", "s3://", "s3://UPPER/x"] {
        let e = artifactfs::objects::S3Config::new(bad).unwrap_err();
        assert!(e.to_string().contains(bad), "{e}");
        assert_eq!(e.errno(), libc::EINVAL);
    }
}

/// Upload and download of 1 GiB against `cp` of the same file (run by hand:
/// `cargo test --release --test objects -- --ignored --nocapture`).
#[test]
#[ignore]
fn throughput_of_a_gib() {
    let fx = Fixture::new("throughput");
    let remote = fx.remote();
    let data = noise(99, 1 << 30);
    let src = write(fx.tmp.path(), "gib", &data);
    let digest = Digest::of(&data);
    drop(data);
    let rate = |took: Duration| (1u64 << 30) as f64 / took.as_secs_f64() / 1e6;
    let t = Instant::now();
    let out = Command::new("cp")
        .arg(&src)
        .arg(fx.tmp.path().join("copy"))
        .status()
        .unwrap();
    assert!(out.success());
    let cp = t.elapsed();
    // The cache flushes what it downloads before naming it: compare with a flushed copy too.
    let t = Instant::now();
    let copy = fx.tmp.path().join("copy2");
    let out = Command::new("cp").arg(&src).arg(&copy).status().unwrap();
    assert!(out.success());
    fs::File::open(&copy).unwrap().sync_all().unwrap();
    let cp_sync = t.elapsed();
    let t = Instant::now();
    remote.put_file(&src, Some(digest)).unwrap();
    let up = t.elapsed();
    let t = Instant::now();
    remote
        .download(&digest, Some(1 << 30), &mut std::io::sink())
        .unwrap();
    let sink = t.elapsed();
    let cache = fx.cache(4 << 30);
    let t = Instant::now();
    drop(cache.fetch(&remote, &digest, Some(1 << 30)).unwrap());
    let down = t.elapsed();
    println!(
        "1 GiB: cp {:.0} MB/s (flushed: {:.0} MB/s), upload {:.0} MB/s, verified download \
         into the cache {:.0} MB/s (to nowhere: {:.0} MB/s)",
        rate(cp),
        rate(cp_sync),
        rate(up),
        rate(down),
        rate(sink)
    );
}
