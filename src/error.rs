//! One error type for the whole crate. Every variant names the object it is about and the
//! cause, and [`Error::errno`] is the single table that turns errors into errnos for the mount.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest name of one path component, as on Linux filesystems.
pub const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        value: String,
        reason: String,
    },

    #[error("{what}: {why}")]
    InvalidInput { what: String, why: String },

    #[error("{0} does not exist")]
    NotFound(String),

    /// A named object of a store that is not there: the store searched, and what to do (a
    /// name close to the one given, or the command that makes it), if anything.
    #[error("{what} does not exist in store {store}{}", hint.as_deref().map(|h| format!("; {h}")).unwrap_or_default())]
    Absent {
        what: String,
        store: String,
        hint: Option<String>,
    },

    /// No store where one is needed, or a directory that may not become one unasked.
    #[error("no artifactfs store at {}: {why}", path.display())]
    NoStore { path: PathBuf, why: String },

    #[error("{0} already exists")]
    AlreadyExists(String),

    #[error("{0} is not a directory")]
    NotADirectory(String),

    #[error("{0} is a directory")]
    IsADirectory(String),

    #[error("{0} is read-only: committed versions never change; stage changes under drafts/")]
    ReadOnly(String),

    /// Busy with something else for now: try again later (EBUSY).
    #[error("{0}")]
    Busy(String),

    /// Larger than a limit of ours (EFBIG).
    #[error("{what} is larger than the limit of {limit} bytes")]
    TooLarge { what: String, limit: usize },

    #[error("{0}: a name is longer than {NAME_MAX} bytes")]
    NameTooLong(String),

    #[error("{0} is not empty")]
    NotEmpty(String),

    #[error("{0}: permission denied")]
    PermissionDenied(String),

    #[error("{0} has no extended attribute {1}")]
    NoAttribute(String, String),

    #[error(
        "{0}: extended attribute {1} is not supported (only user.artifactfs.* are kept, read-only)"
    )]
    AttributeUnsupported(String, String),

    #[error("{what} has type {existing}, not {requested}")]
    TypeConflict {
        what: String,
        existing: String,
        requested: String,
    },

    #[error("draft {draft} was already finished as {version}; start a new distributed id")]
    Sealed { draft: String, version: String },

    #[error("{what}: {why}")]
    Refused { what: String, why: String },

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("catalog: {context}: {source}")]
    Catalog {
        context: String,
        #[source]
        source: crate::catalog::sql::DbError,
    },

    #[error("{}: written by a newer artifactfs (schema {found}, this build knows up to {supported}); upgrade artifactfs", path.display())]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    #[error("store {} is read-only: {why}; only commands that read work", path.display())]
    StoreReadOnly { path: PathBuf, why: String },

    #[error("{what} is damaged: {why}")]
    Corrupt { what: String, why: String },

    /// A referenced file that no longer is what the version recorded (EIO).
    #[error("reference {uri} {why}")]
    ReferenceDrift { uri: String, why: String },

    /// A blob the object store should hold and does not (EIO).
    #[error("blob {digest} is missing from object store {store}")]
    ObjectMissing {
        store: String,
        digest: crate::hash::Digest,
    },

    /// A blob whose bytes in the object store are not the ones its name promises (EIO).
    #[error("blob {digest} in object store {store} is damaged: {why}")]
    ObjectDamaged {
        store: String,
        digest: crate::hash::Digest,
        why: String,
    },

    /// The object store could not do what was asked: unreachable past the retries allowed,
    /// credentials refused, no such bucket, or a failure of its own.
    #[error("object store {store}: {what}: {why}")]
    ObjectStore {
        store: String,
        what: String,
        why: String,
        failure: crate::objects::Failure,
    },
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn invalid(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::InvalidInput {
            what: what.into(),
            why: why.into(),
        }
    }

    pub fn refused(what: impl Into<String>, why: impl Into<String>) -> Self {
        Error::Refused {
            what: what.into(),
            why: why.into(),
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    /// The errno a local filesystem would return for this failure.
    pub fn errno(&self) -> i32 {
        match self {
            Error::InvalidName { .. } | Error::InvalidInput { .. } => libc::EINVAL,
            Error::NotFound(_) | Error::Absent { .. } | Error::NoStore { .. } => libc::ENOENT,
            Error::AlreadyExists(_) | Error::TypeConflict { .. } | Error::Sealed { .. } => {
                libc::EEXIST
            }
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::IsADirectory(_) => libc::EISDIR,
            Error::ReadOnly(_) | Error::StoreReadOnly { .. } => libc::EROFS,
            Error::PermissionDenied(_) => libc::EACCES,
            Error::NotEmpty(_) => libc::ENOTEMPTY,
            Error::Busy(_) => libc::EBUSY,
            Error::NameTooLong(_) => libc::ENAMETOOLONG,
            Error::TooLarge { .. } => libc::EFBIG,
            Error::NoAttribute(..) => libc::ENODATA,
            Error::AttributeUnsupported(..) => libc::EOPNOTSUPP,
            Error::Refused { .. } => libc::EPERM,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            Error::Catalog { source, .. } => {
                use crate::catalog::sql::Failure;
                match source.failure() {
                    Failure::Busy => libc::EBUSY,
                    Failure::Full => libc::ENOSPC,
                    Failure::ReadOnly => libc::EROFS,
                    Failure::Duplicate => libc::EEXIST,
                    Failure::Unreachable | Failure::Corrupt | Failure::Other => libc::EIO,
                }
            }
            Error::NewerSchema { .. }
            | Error::Corrupt { .. }
            | Error::ReferenceDrift { .. }
            | Error::ObjectMissing { .. }
            | Error::ObjectDamaged { .. } => libc::EIO,
            Error::ObjectStore { failure, .. } => {
                use crate::objects::Failure;
                match failure {
                    Failure::Denied => libc::EACCES,
                    Failure::NoBucket | Failure::Unavailable | Failure::Other => libc::EIO,
                }
            }
        }
    }
}

/// Attaches "what was being done" to catalog errors at the call site.
pub trait CatalogContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> CatalogContext<T> for crate::catalog::sql::DbResult<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Catalog {
            context: context(),
            source,
        })
    }
}

/// Attaches the path to I/O errors at the call site.
pub trait IoContext<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
