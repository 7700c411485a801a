//! The S3 client: `object_store`'s Amazon S3 store behind [`ObjectClient`], with a runtime of
//! its own so callers block, and configuration from `s3://BUCKET/PREFIX` plus the places AWS
//! tools look (environment, then the shared credentials and config files).

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig,
};

use super::{Failure, Fetched, ObjectClient, ObjectError, ObjectInfo};
use crate::error::{Error, Result};

/// How long an abort of a failed upload may take: it is a courtesy, not worth another full
/// round of retries against a store that just failed.
const ABORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the blobs are and how to reach them.
#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Keys start with this, followed by `/` (empty: the bucket's root).
    pub prefix: String,
    /// `http(s)://host[:port]` of an S3-compatible server; AWS itself when `None`.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Plain http to a host other than this one (always allowed for 127.0.0.1/localhost).
    pub allow_http: bool,
    /// How long transient failures (refused connections, timeouts, 5xx) of one request are
    /// retried, with exponential backoff, before it fails.
    pub retry_for: Duration,
    /// The longest one request may take, body included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "…"),
            )
            .field("session_token", &self.session_token.as_ref().map(|_| "…"))
            .field("allow_http", &self.allow_http)
            .field("retry_for", &self.retry_for)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl S3Config {
    /// The store at `s3://BUCKET[/PREFIX]`, with default settings and no credentials yet.
    pub fn new(url: &str) -> Result<Self> {
        let (bucket, prefix) = parse_url(url)?;
        Ok(S3Config {
            bucket,
            prefix,
            endpoint: None,
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            retry_for: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// The store at `url`, configured from this process's environment and the AWS profile
    /// files.
    pub fn from_env(url: &str) -> Result<Self> {
        Self::from_lookup(url, &|name| std::env::var(name).ok())
    }

    /// The store at `url`, configured from the variables `env` returns:
    /// - endpoint: `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, else the profile's `endpoint_url`;
    /// - region: `AWS_REGION`, `AWS_DEFAULT_REGION`, else the profile's, else `us-east-1`;
    /// - credentials: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    ///   `AWS_SESSION_TOKEN`), else the profile's in the shared credentials file, else in
    ///   the config file;
    /// - the profile: `AWS_PROFILE`, else `default`; the files: `AWS_SHARED_CREDENTIALS_FILE`
    ///   and `AWS_CONFIG_FILE`, else `~/.aws/credentials` and `~/.aws/config`;
    /// - `AWS_ALLOW_HTTP=true` allows plain http to hosts other than this one.
    pub fn from_lookup(url: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::new(url)?;
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        let named_profile = var("AWS_PROFILE");
        let profile_name = named_profile.clone().unwrap_or_else(|| "default".into());
        let home = var("HOME").map(PathBuf::from);
        let file = |override_var: &str, default: &str| {
            var(override_var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(".aws").join(default)))
        };
        let credentials_file = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
        let config_file = file("AWS_CONFIG_FILE", "config");
        let from_credentials = credentials_file
            .as_deref()
            .map(|p| profile::read(p, &profile_name, false))
            .transpose()?
            .flatten();
        let from_config = config_file
            .as_deref()
            .map(|p| profile::read(p, &profile_name, true))
            .transpose()?
            .flatten();
        if let Some(name) = &named_profile
            && from_credentials.is_none()
            && from_config.is_none()
        {
            let files: Vec<String> = [&credentials_file, &config_file]
                .into_iter()
                .flatten()
                .map(|p| p.display().to_string())
                .collect();
            return Err(Error::invalid(
                format!("AWS profile {name:?}"),
                format!("not found in {}", files.join(" or ")),
            ));
        }
        let from_profile = |key: &str| {
            [&from_credentials, &from_config]
                .into_iter()
                .flatten()
                .find_map(|p| p.get(key).cloned())
        };

        config.endpoint = var("AWS_ENDPOINT_URL_S3")
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .or_else(|| from_profile("endpoint_url"));
        if let Some(region) = var("AWS_REGION")
            .or_else(|| var("AWS_DEFAULT_REGION"))
            .or_else(|| from_profile("region"))
        {
            config.region = region;
        }
        match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                config.access_key_id = Some(id);
                config.secret_access_key = Some(secret);
                config.session_token = var("AWS_SESSION_TOKEN");
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::invalid(
                    "AWS credentials in the environment",
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together",
                ));
            }
            (None, None) => {
                config.access_key_id = from_profile("aws_access_key_id");
                config.secret_access_key = from_profile("aws_secret_access_key");
                config.session_token = from_profile("aws_session_token");
            }
        }
        config.allow_http = var("AWS_ALLOW_HTTP").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        Ok(config)
    }

    /// `s3://BUCKET/PREFIX`, as given.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The store as messages name it: its URL, and the endpoint unless it is AWS's.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(endpoint) => format!("{} at {endpoint}", self.url()),
            None => format!("{} (AWS, region {})", self.url(), self.region),
        }
    }

    /// Refuses settings that cannot work, before any request is made.
    fn check(&self) -> Result<()> {
        let invalid = |why: String| Error::invalid(format!("object store {}", self.url()), why);
        if let Some(endpoint) = &self.endpoint {
            let Some((scheme, host)) = endpoint_host(endpoint) else {
                return Err(invalid(format!(
                    "endpoint {endpoint:?} is not an http:// or https:// URL"
                )));
            };
            if scheme == "http" && !self.allow_http && !is_loopback(&host) {
                return Err(invalid(format!(
                    "endpoint {endpoint} uses plain http to another host; use https, or set \
                     AWS_ALLOW_HTTP=true to allow it"
                )));
            }
        }
        if self.access_key_id.is_none() || self.secret_access_key.is_none() {
            return Err(invalid(
                "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or \
                 aws_access_key_id and aws_secret_access_key for the AWS profile in \
                 ~/.aws/credentials"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Splits `s3://BUCKET[/PREFIX]` into the bucket and the prefix (no slashes at its ends).
fn parse_url(url: &str) -> Result<(String, String)> {
    let invalid = |why: &str| Error::invalid(format!("object store URL {url:?}"), why);
    let Some(rest) = url.strip_prefix("s3://") else {
        return Err(invalid("expected s3://BUCKET/PREFIX"));
    };
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(invalid("no bucket named: expected s3://BUCKET/PREFIX"));
    }
    if bucket.len() < 3 || bucket.len() > 63 {
        return Err(invalid("a bucket name has 3 to 63 characters"));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '.'))
    {
        return Err(invalid(&format!(
            "a bucket name has lowercase letters, digits, '-' and '.' only, not {c:?}"
        )));
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|part| part == "." || part == "..")
        || prefix.contains("//")
        || prefix.chars().any(|c| c.is_control())
    {
        return Err(invalid(
            "the prefix must be plain path components, without '.', '..', empty parts or control characters",
        ));
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

/// The scheme and host of an http(s) URL.
fn endpoint_host(endpoint: &str) -> Option<(&'static str, String)> {
    let (scheme, rest) = if let Some(rest) = endpoint.strip_prefix("http://") {
        ("http", rest)
    } else {
        ("https", endpoint.strip_prefix("https://")?)
    };
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?.to_string()
    } else {
        authority.split(':').next().unwrap_or("").to_string()
    };
    (!host.is_empty()).then_some((scheme, host))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The few keys the shared store reads from the AWS profile files.
mod profile {
    use std::collections::HashMap;
    use std::path::Path;

    use crate::error::{IoContext, Result};

    /// The keys of profile `name` in the file at `path`, if the file and profile exist. In
    /// the config file other profiles than `default` are headed `[profile NAME]`.
    pub fn read(path: &Path, name: &str, config: bool) -> Result<Option<HashMap<String, String>>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).at(path),
        };
        let wanted = |header: &str| {
            let header = header.trim();
            if config && name != "default" {
                header.strip_prefix("profile").is_some_and(|rest| {
                    rest.starts_with(char::is_whitespace) && rest.trim() == name
                })
            } else {
                header == name
                    || (config && header.strip_prefix("profile ").map(str::trim) == Some(name))
            }
        };
        let mut found: Option<HashMap<String, String>> = None;
        let mut inside = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                inside = wanted(header);
                if inside {
                    found.get_or_insert_with(HashMap::new);
                }
                continue;
            }
            if inside && let Some((key, value)) = line.split_once('=') {
                found
                    .get_or_insert_with(HashMap::new)
                    .insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        Ok(found)
    }
}

/// An S3 bucket (or an S3-compatible server's) under a prefix.
pub struct S3Client {
    store: AmazonS3,
    runtime: tokio::runtime::Runtime,
    /// Every key is this followed by the key given.
    prefix: String,
    describe: String,
    access_key_id: String,
}

impl S3Client {
    /// A client for the store `config` names, checked by listing one page of its prefix:
    /// a wrong endpoint, refused credentials or a missing bucket are reported here, each by
    /// name.
    pub fn connect(config: &S3Config) -> Result<Self> {
        let client = Self::open(config)?;
        client.probe()?;
        Ok(client)
    }

    /// A client for the store `config` names, without any request yet.
    pub fn open(config: &S3Config) -> Result<Self> {
        config.check()?;
        let endpoint_is_loopback = config
            .endpoint
            .as_deref()
            .and_then(endpoint_host)
            .is_some_and(|(_, host)| is_loopback(&host));
        let endpoint_is_https = config
            .endpoint
            .as_deref()
            .is_none_or(|e| e.starts_with("https://"));
        let options = ClientOptions::new()
            .with_allow_http(config.allow_http || endpoint_is_loopback)
            .with_timeout(config.request_timeout)
            .with_connect_timeout(config.connect_timeout);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(4),
                base: 2.0,
            },
            // Time, not a count, bounds the retries.
            max_retries: usize::MAX,
            retry_timeout: config.retry_for,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_client_options(options)
            .with_retry(retry)
            // Over TLS the bytes are protected already: hashing every payload once more to
            // sign it only costs CPU. Over plain http the signature covers the payload.
            .with_unsigned_payload(endpoint_is_https);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder
                .with_access_key_id(id)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &config.session_token {
            builder = builder.with_token(token);
        }
        let store = builder
            .build()
            .map_err(|e| Error::invalid(format!("object store {}", config.url()), e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("artifactfs-objects")
            .enable_all()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        Ok(S3Client {
            store,
            runtime,
            prefix: if config.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", config.prefix)
            },
            describe: config.describe(),
            access_key_id: config.access_key_id.clone().unwrap_or_default(),
        })
    }

    /// Lists one page under the prefix, to learn whether the store can be used at all.
    pub fn probe(&self) -> Result<()> {
        let prefix = ObjectPath::from(self.prefix.trim_end_matches('/'));
        let prefix = (!self.prefix.is_empty()).then_some(&prefix);
        let started = Instant::now();
        self.run(self.store.list_with_delimiter(prefix))
            .map(|_| ())
            .map_err(|e| {
                let e = match self.classify(e, started) {
                    // Listing a bucket that is there finds nothing rather than failing.
                    ObjectError::NotFound => ObjectError::failed(
                        Failure::NoBucket,
                        "the bucket does not exist".to_string(),
                    ),
                    other => other,
                };
                let ObjectError::Failed { failure, why } = e else {
                    unreachable!("mapped above")
                };
                Error::ObjectStore {
                    store: self.describe.clone(),
                    what: "checking the bucket".into(),
                    why,
                    failure,
                }
            })
    }

    fn run<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    fn path(&self, key: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{key}", self.prefix))
    }

    fn info(&self, meta: object_store::ObjectMeta) -> ObjectInfo {
        let location = meta.location.to_string();
        ObjectInfo {
            key: location
                .strip_prefix(&self.prefix)
                .unwrap_or(&location)
                .to_string(),
            size: meta.size,
            modified: SystemTime::from(meta.last_modified),
        }
    }

    /// What went wrong, in words a user can act on: the deepest cause, the S3 error code
    /// and message when the server sent one, and how long retries went on.
    fn classify(&self, error: object_store::Error, started: Instant) -> ObjectError {
        use object_store::Error as E;
        let denied = match &error {
            E::NotFound { .. } => return ObjectError::NotFound,
            E::PermissionDenied { .. } | E::Unauthenticated { .. } => true,
            _ => false,
        };
        let mut transport = false;
        let mut deepest = error.to_string();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = source {
            if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
                use object_store::client::HttpErrorKind as K;
                transport |= matches!(
                    http.kind(),
                    K::Connect | K::Request | K::Timeout | K::Interrupted
                );
            }
            deepest = e.to_string();
            source = e.source();
        }
        let server = server_error(&error.to_string());
        // Some requests report refusals as generic errors: the status tells.
        let denied = denied || server.as_ref().is_some_and(|(s, _)| *s == 401 || *s == 403);
        if denied {
            let detail = server.map(|(_, d)| d).unwrap_or(deepest);
            return ObjectError::failed(
                Failure::Denied,
                format!(
                    "the credentials (access key {}) were refused: {detail}",
                    self.access_key_id
                ),
            );
        }
        if let Some((status, detail)) = server {
            if detail.contains("NoSuchBucket") {
                return ObjectError::failed(Failure::NoBucket, "the bucket does not exist");
            }
            let failure = if status >= 500 {
                Failure::Unavailable
            } else {
                Failure::Other
            };
            let mut why = format!("the server answered {detail}");
            if failure == Failure::Unavailable {
                why.push_str(&retried(started));
            }
            return ObjectError::failed(failure, why);
        }
        if transport {
            return ObjectError::failed(
                Failure::Unavailable,
                format!("cannot reach the server: {deepest}{}", retried(started)),
            );
        }
        ObjectError::failed(Failure::Other, error.to_string())
    }
}

fn retried(started: Instant) -> String {
    format!(
        " (gave up after {:.1} s of retries)",
        started.elapsed().as_secs_f64()
    )
}

/// The HTTP status and `CODE: message` of an S3 error response quoted in `text`.
fn server_error(text: &str) -> Option<(u16, String)> {
    let after = text.split("non-2xx status code: ").nth(1)?;
    let status: u16 = after.get(..3)?.parse().ok()?;
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = text.find(&open)? + open.len();
        let end = start + text[start..].find(&close)?;
        Some(text[start..end].to_string())
    };
    let status_line = after.split(':').next().unwrap_or("").trim().to_string();
    let detail = match (tag("Code"), tag("Message")) {
        (Some(code), Some(message)) if !message.is_empty() => {
            format!("{status_line}: {code}: {message}")
        }
        (Some(code), _) => format!("{status_line}: {code}"),
        _ => status_line,
    };
    Some((status, detail))
}

impl ObjectClient for S3Client {
    fn describe(&self) -> &str {
        &self.describe
    }

    fn head(&self, key: &str) -> Result<ObjectInfo, ObjectError> {
        let started = Instant::now();
        self.run(self.store.head(&self.path(key)))
            .map(|meta| self.info(meta))
            .map_err(|e| self.classify(e, started))
    }

    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        let started = Instant::now();
        self.run(self.store.put(&self.path(key), data.into()))
            .map(|_| ())
            .map_err(|e| self.classify(e, started))
    }

    fn create_multipart(&self, key: &str) -> Result<String, ObjectError> {
        let started = Instant::now();
        self.run(self.store.create_multipart(&self.path(key)))
            .map_err(|e| self.classify(e, started))
    }

    fn put_part(
        &self,
        key: &str,
        upload: &str,
        index: usize,
        data: Bytes,
    ) -> Result<String, ObjectError> {
        let started = Instant::now();
        let id = upload.to_string();
        self.run(
            self.store
                .put_part(&self.path(key), &id, index, data.into()),
        )
        .map(|part| part.content_id)
        .map_err(|e| self.classify(e, started))
    }

    fn complete_multipart(
        &self,
        key: &str,
        upload: &str,
        parts: Vec<String>,
    ) -> Result<(), ObjectError> {
        let started = Instant::now();
        let parts = parts
            .into_iter()
            .map(|content_id| PartId { content_id })
            .collect();
        let id = upload.to_string();
        self.run(self.store.complete_multipart(&self.path(key), &id, parts))
            .map(|_| ())
            .map_err(|e| self.classify(e, started))
    }

    fn abort_multipart(&self, key: &str, upload: &str) -> Result<(), ObjectError> {
        let started = Instant::now();
        let id = upload.to_string();
        let path = self.path(key);
        match self.run(async {
            tokio::time::timeout(ABORT_TIMEOUT, self.store.abort_multipart(&path, &id)).await
        }) {
            Ok(result) => result.map_err(|e| self.classify(e, started)),
            Err(_) => Err(ObjectError::failed(
                Failure::Unavailable,
                format!("no answer within {} s", ABORT_TIMEOUT.as_secs()),
            )),
        }
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Fetched, ObjectError> {
        let started = Instant::now();
        let options = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let path = self.path(key);
        self.run(async {
            let result = self.store.get_opts(&path, options).await?;
            let object_size = result.meta.size;
            let data = result.bytes().await?;
            Ok(Fetched { data, object_size })
        })
        .map_err(|e| self.classify(e, started))
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let started = Instant::now();
        match self.run(self.store.delete(&self.path(key))) {
            Ok(()) => Ok(()),
            Err(e) => match self.classify(e, started) {
                ObjectError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    fn list<'a>(
        &'a self,
        prefix: &str,
    ) -> Box<dyn Iterator<Item = Result<ObjectInfo, ObjectError>> + Send + 'a> {
        // object_store lists whole path segments: list the directory the prefix is in and
        // keep the keys that start with it.
        let full = format!("{}{prefix}", self.prefix);
        let dir = match full.rfind('/') {
            Some(i) => &full[..i],
            None => "",
        };
        let dir_path = ObjectPath::from(dir);
        let _context = self.runtime.enter();
        let stream = self.store.list((!dir.is_empty()).then_some(&dir_path));
        Box::new(Listing {
            client: self,
            stream,
            wanted: full,
            done: false,
        })
    }
}

struct Listing<'a> {
    client: &'a S3Client,
    stream:
        futures_util::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>>,
    wanted: String,
    done: bool,
}

impl Iterator for Listing<'_> {
    type Item = Result<ObjectInfo, ObjectError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let started = Instant::now();
            match self.client.run(self.stream.next()) {
                None => self.done = true,
                Some(Ok(meta)) => {
                    if meta.location.as_ref().starts_with(&self.wanted) {
                        return Some(Ok(self.client.info(meta)));
                    }
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(match self.client.classify(e, started) {
                        ObjectError::NotFound => {
                            ObjectError::failed(Failure::NoBucket, "the bucket does not exist")
                        }
                        other => other,
                    }));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let c = S3Config::new("s3://data-bucket/teams/vision/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("data-bucket", "teams/vision")
        );
        assert_eq!(c.url(), "s3://data-bucket/teams/vision");
        let c = S3Config::new("s3://data-bucket").unwrap();
        assert_eq!(c.prefix, "");
        for bad in [
            "http://bucket/x",
            "s3://",
            "s3:///prefix",
            "s3://ab",
            "s3://Upper/x",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
        ] {
            let e = S3Config::new(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn environment_comes_before_profiles() {
        let dir = tempfile::tempdir().unwrap();
        let aws = dir.path().join(".aws");
        std::fs::create_dir(&aws).unwrap();
        std::fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = FILEKEY\naws_secret_access_key = filesecret\n\n\
             [other]\naws_access_key_id=OTHERKEY\naws_secret_access_key=othersecret\n",
        )
        .unwrap();
        std::fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-3\n\n[profile other]\nregion = ap-south-1\n\
             endpoint_url = http://127.0.0.1:9000\n",
        )
        .unwrap();
        let home = dir.path().to_str().unwrap();

        let c = S3Config::from_lookup("s3://bkt/p", &lookup(&[("HOME", home)])).unwrap();
        assert_eq!(c.access_key_id.as_deref(), Some("FILEKEY"));
        assert_eq!(c.secret_access_key.as_deref(), Some("filesecret"));
        assert_eq!(c.region, "eu-west-3");
        assert_eq!(c.endpoint, None);

        let c = S3Config::from_lookup(
            "s3://bkt/p",
            &lookup(&[("HOME", home), ("AWS_PROFILE", "other")]),
        )
        .unwrap();
        assert_eq!(c.access_key_id.as_deref(), Some("OTHERKEY"));
        assert_eq!(c.region, "ap-south-1");
        assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));

        let c = S3Config::from_lookup(
            "s3://bkt/p",
            &lookup(&[
                ("HOME", home),
                ("AWS_PROFILE", "other"),
                ("AWS_ACCESS_KEY_ID", "ENVKEY"),
                ("AWS_SECRET_ACCESS_KEY", "envsecret"),
                ("AWS_REGION", "us-west-2"),
                ("AWS_ENDPOINT_URL", "http://localhost:1234"),
            ]),
        )
        .unwrap();
        assert_eq!(c.access_key_id.as_deref(), Some("ENVKEY"));
        assert_eq!(c.secret_access_key.as_deref(), Some("envsecret"));
        assert_eq!(c.region, "us-west-2");
        assert_eq!(c.endpoint.as_deref(), Some("http://localhost:1234"));

        let e = S3Config::from_lookup(
            "s3://bkt/p",
            &lookup(&[("HOME", home), ("AWS_PROFILE", "missing")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("\"missing\"") && e.contains("credentials"),
            "{e}"
        );

        let e = S3Config::from_lookup("s3://bkt/p", &lookup(&[("AWS_ACCESS_KEY_ID", "K")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY"), "{e}");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_before_any_request() {
        let mut c = S3Config::new("s3://bkt/p").unwrap();
        c.access_key_id = Some("K".into());
        c.secret_access_key = Some("S".into());
        c.endpoint = Some("http://storage.example:9000".into());
        let e = S3Client::open(&c).err().unwrap().to_string();
        assert!(
            e.contains("plain http") && e.contains("AWS_ALLOW_HTTP"),
            "{e}"
        );
        c.endpoint = Some("ftp://storage.example".into());
        let e = S3Client::open(&c).err().unwrap().to_string();
        assert!(e.contains("ftp://storage.example"), "{e}");
        for ok in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
        ] {
            c.endpoint = Some(ok.into());
            assert!(S3Client::open(&c).is_ok(), "{ok}");
        }
        c.access_key_id = None;
        let e = S3Client::open(&c).err().unwrap().to_string();
        assert!(e.contains("no credentials"), "{e}");
    }

    #[test]
    fn server_errors_are_read_from_the_response() {
        let text = "Generic S3 error: Error performing GET http://x in 1ms - Server returned \
                    non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Error>\
                    <Code>InvalidAccessKeyId</Code><Message>no such key</Message></Error>";
        assert_eq!(
            server_error(text),
            Some((
                403,
                "403 Forbidden: InvalidAccessKeyId: no such key".to_string()
            ))
        );
        assert_eq!(server_error("Connection refused"), None);
    }
}
