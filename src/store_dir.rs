//! Where the store is, and whether a directory is one. Only commands that make something
//! (`log`, `draft new`, `upsert`, `finish`) and `init` create a store; every other command,
//! `mount` among them, needs one that exists, and says where it looked when there is none.
//! No command turns a directory that holds other files into a store unless `init` is asked to.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::store_config::Shared;

/// The names a store holds. A directory holding only these is a store being made (by another
/// process, say), not someone else's files.
const STORE_NAMES: &[&str] = &[
    "config",
    "catalog.db",
    "catalog.db-wal",
    "catalog.db-shm",
    "catalog.db-journal",
    "blobs",
    "staging",
    "staged",
    "lock",
    "mount.log",
];

/// How many names of a foreign directory an error quotes.
const SHOWN: usize = 3;

/// The store directory, and what chose it.
#[derive(Clone, Debug)]
pub struct Location {
    pub path: PathBuf,
    /// `--store`, `$ARTIFACTFS_STORE`, `$XDG_DATA_HOME` or the default under `$HOME`.
    pub origin: Origin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Env,
    XdgDataHome,
    Home,
}

impl Location {
    /// `--store`, else `$ARTIFACTFS_STORE`, else the XDG data directory.
    pub fn find(flag: Option<PathBuf>) -> Result<Self> {
        let from_env = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        let found = flag
            .map(|p| (p, Origin::Flag))
            .or_else(|| from_env("ARTIFACTFS_STORE").map(|p| (p, Origin::Env)))
            .or_else(|| {
                from_env("XDG_DATA_HOME").map(|d| (d.join("artifactfs"), Origin::XdgDataHome))
            })
            .or_else(|| {
                from_env("HOME").map(|h| (h.join(".local/share/artifactfs"), Origin::Home))
            });
        let (path, origin) = found.ok_or_else(|| {
            Error::invalid(
                "store",
                "no --store given and neither $ARTIFACTFS_STORE nor $HOME is set",
            )
        })?;
        // Errors name the directory looked at, wherever the command was run from.
        let path = std::path::absolute(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Location { path, origin })
    }

    /// Fails unless a store is there: for commands that read or change what exists.
    pub fn require(&self) -> Result<()> {
        let init = format!("`artifactfs init {}`", self.path.display());
        match State::of(&self.path)? {
            State::Store => Ok(()),
            state @ (State::Missing | State::Empty) => Err(self.no_store(
                &state,
                format!("create one with {init}, or log a first version into it"),
            )),
            state @ State::Foreign(..) => Err(self.no_store(
                &state,
                format!(
                    "point --store or $ARTIFACTFS_STORE at a store, or run {init} to make one here"
                ),
            )),
            state @ State::NotADirectory => Err(self.no_store(
                &state,
                "point --store or $ARTIFACTFS_STORE at a store".to_string(),
            )),
        }
    }

    /// Fails if a store may not be made there without asking: for commands that create one
    /// on first use. A missing or empty directory is fine (the store is made in it).
    pub fn prepare(&self) -> Result<()> {
        match State::of(&self.path)? {
            State::Missing | State::Empty | State::Store => Ok(()),
            state @ State::Foreign(..) => Err(self.no_store(
                &state,
                format!(
                    "a store is made only in a new or empty directory unless asked: use \
                     another directory, or run `artifactfs init {}` to make one here anyway",
                    self.path.display()
                ),
            )),
            state @ State::NotADirectory => {
                Err(self.no_store(&state, "use another path".to_string()))
            }
        }
    }

    fn no_store(&self, state: &State, fix: String) -> Error {
        let named = match self.origin {
            Origin::Flag => String::new(),
            Origin::Env => "$ARTIFACTFS_STORE names it, and ".into(),
            Origin::XdgDataHome => "it is the default under $XDG_DATA_HOME, and ".into(),
            Origin::Home => "it is the default location, and ".into(),
        };
        Error::NoStore {
            path: self.path.clone(),
            why: format!("{named}{}; {fix}", state.describe()),
        }
    }
}

/// What a directory is, as far as being a store goes.
#[derive(Debug)]
pub enum State {
    Missing,
    Empty,
    /// A store, or one being made: it has a catalog or blobs, or holds only a store's names.
    Store,
    /// A directory of other files: how many, and the first few names in order.
    Foreign(usize, Vec<String>),
    NotADirectory,
}

impl State {
    pub fn of(dir: &Path) -> Result<Self> {
        let meta = match fs::metadata(dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::Missing),
            Err(e) => return Err(Error::io(dir, e)),
        };
        if !meta.is_dir() {
            return Ok(State::NotADirectory);
        }
        if dir.join("catalog.db").exists()
            || dir.join("blobs").is_dir()
            || crate::store_config::path(dir).is_file()
        {
            return Ok(State::Store);
        }
        let (mut any, mut count, mut first) = (false, 0, Vec::new());
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
            any = true;
            let name = name.to_string_lossy().into_owned();
            if !STORE_NAMES.contains(&name.as_str()) {
                count += 1;
                first.push(name);
                first.sort();
                first.truncate(SHOWN);
            }
        }
        Ok(match (any, count) {
            (false, _) => State::Empty,
            (true, 0) => State::Store,
            (true, n) => State::Foreign(n, first),
        })
    }

    fn describe(&self) -> String {
        match self {
            State::Missing => "the directory does not exist".into(),
            State::Empty => "the directory is empty".into(),
            State::Store => "it is a store".into(),
            State::NotADirectory => "it is not a directory".into(),
            State::Foreign(count, first) => {
                let mut shown: Vec<&str> = first.iter().map(|s| s.as_str()).collect();
                if *count > first.len() {
                    shown.push("…");
                }
                format!(
                    "the directory holds other files ({}) and no catalog.db",
                    shown.join(", ")
                )
            }
        }
    }
}

/// What `init` did.
pub struct Init {
    /// False when a store was already there.
    pub created: bool,
    /// Entries of other kinds the directory already held, left as they were.
    pub others: usize,
    /// A shared store's side whose damaged config was written again.
    pub repaired: bool,
}

/// `artifactfs init DIR`: makes a store in `dir` (created if missing), or finds one there. A
/// directory holding other files becomes a store too, since the user asked for it here; the
/// files are left alone and the result says how many there were.
pub fn init(dir: &Path, shared: Option<&Shared>) -> Result<Init> {
    let state = State::of(dir)?;
    let (created, others) = match state {
        State::Store => (false, 0),
        State::Missing | State::Empty => (true, 0),
        State::Foreign(count, _) => (true, count),
        State::NotADirectory => {
            return Err(Error::NoStore {
                path: dir.to_path_buf(),
                why: "it is not a directory; use another path".into(),
            });
        }
    };
    if let Some(shared) = shared {
        return init_shared(dir, shared, &state).map(|made| Init {
            created: made == Made::New,
            others,
            repaired: made == Made::Repaired,
        });
    }
    drop(crate::store::Store::open(dir)?);
    Ok(Init {
        created,
        others,
        repaired: false,
    })
}

/// What `init_shared` did to the directory.
#[derive(PartialEq, Eq)]
enum Made {
    New,
    Existed,
    Repaired,
}

/// Makes `dir` this host's side of the shared store `shared` describes: the bucket and then
/// the catalog are reached (the catalog given its schema, in an empty database) before
/// anything is written here, so a wrong URL, credential or database leaves `dir` as it was.
/// A side whose config is damaged (and which is no embedded store) gets it written again.
fn init_shared(dir: &Path, shared: &Shared, state: &State) -> Result<Made> {
    crate::store_config::check_catalog_url(&shared.catalog)?;
    crate::store_config::check_objects_url(&shared.objects)?;
    let mut done = Made::New;
    if let State::Store = state {
        let what = format!("store {}", dir.display());
        match crate::store_config::read(dir) {
            Ok(Some(existing)) if existing == *shared => return Ok(Made::Existed),
            Ok(Some(existing)) => {
                return Err(Error::refused(
                    what,
                    format!(
                        "it is already the local side of a shared store (catalog {}, objects \
                         {}); use another directory",
                        crate::catalog::postgres::redact(&existing.catalog),
                        existing.objects
                    ),
                ));
            }
            Ok(None) => {
                return Err(Error::refused(
                    what,
                    "it is an embedded store; copy it into the shared store with `artifactfs \
                     copy-store`, and make the shared store's local side in another directory",
                ));
            }
            // A side whose config was damaged: written again below, once the servers answer.
            Err(Error::Corrupt { .. }) if !dir.join("catalog.db").exists() => {
                done = Made::Repaired;
            }
            Err(e) => return Err(e),
        }
    }
    // The bucket answers, with these credentials, before anything is written: the database
    // is given its schema only then, so a wrong bucket or key leaves an empty one empty.
    crate::objects::S3Client::connect(&crate::objects::S3Config::from_env(&shared.objects)?)?;
    drop(crate::catalog::Catalog::open_postgres(
        &shared.catalog,
        dir,
    )?);
    let made = matches!(state, State::Missing);
    let result = fs::create_dir_all(dir)
        .map_err(|e| Error::io(dir, e))
        .and_then(|()| crate::store_config::write(dir, shared))
        .and_then(|()| crate::store::Store::open(dir).map(drop));
    if result.is_err() && made {
        let _ = fs::remove_dir_all(dir);
    }
    result.map(|()| done)
}
