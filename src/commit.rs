//! Sealing a draft into a version. Blobs are already durable when a draft references them, so
//! a commit is one catalog transaction: build the tree, compare digests, allocate the number,
//! record version and aliases, drop the draft. It happens entirely or not at all.

use crate::catalog::Db;

use crate::catalog::drafts::{self, DraftRow};
use crate::catalog::runs;
use crate::catalog::versions::{self, VersionInfo, VersionRow};
use crate::draft;
use crate::error::{Error, Result};
use crate::names::{AliasName, LATEST, TypeName};

pub const DEFAULT_TYPE: &str = "dataset";
/// Metadata is stored in the catalog; bound it so one version cannot bloat every query.
pub const MAX_METADATA_BYTES: usize = 1 << 20;

#[derive(Clone, Debug, Default)]
pub struct CommitOptions {
    pub type_name: Option<TypeName>,
    pub aliases: Vec<AliasName>,
    pub description: Option<String>,
    /// A JSON object, already validated by [`parse_metadata`].
    pub metadata: Option<String>,
    /// The run the version is an output of, if the commit is made inside one.
    pub run: Option<RunOutput>,
}

/// The run a commit is an output of, and what made it: `log`, `commit` (`draft commit`),
/// `finish`, `.commit` (through a mount).
#[derive(Clone, Debug)]
pub struct RunOutput {
    pub run: String,
    pub via: &'static str,
}

#[derive(Clone, Debug)]
pub enum Outcome {
    Created(VersionRow),
    /// The draft's content equals this existing version; nothing new was recorded.
    Unchanged(VersionRow),
}

impl Outcome {
    pub fn version(&self) -> &VersionRow {
        match self {
            Outcome::Created(v) | Outcome::Unchanged(v) => v,
        }
    }

    pub fn is_unchanged(&self) -> bool {
        matches!(self, Outcome::Unchanged(_))
    }
}

/// Checks that metadata is a JSON object of reasonable size, and returns it in compact form.
pub fn parse_metadata(text: &str) -> Result<String> {
    if text.len() > MAX_METADATA_BYTES {
        return Err(Error::invalid(
            "metadata",
            format!("is {} bytes; the limit is {MAX_METADATA_BYTES}", text.len()),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| Error::invalid("metadata", format!("is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(
            "metadata",
            "must be a JSON object, like {\"epochs\": 3}",
        ));
    }
    Ok(value.to_string())
}

/// The type a commit will use, refusing one that conflicts with the artifact's.
pub fn effective_type(conn: &Db, d: &DraftRow, requested: Option<&TypeName>) -> Result<String> {
    if let (Some(r), Some(t)) = (requested, &d.type_name)
        && r.as_str() != t
    {
        return Err(Error::TypeConflict {
            what: d.label(),
            existing: t.clone(),
            requested: r.to_string(),
        });
    }
    let wanted = requested
        .map(|t| t.to_string())
        .or_else(|| d.type_name.clone());
    match (versions::artifact(conn, &d.artifact)?, wanted) {
        (Some(a), Some(w)) if a.type_name != w => Err(Error::TypeConflict {
            what: format!("artifact {}", a.name),
            existing: a.type_name,
            requested: w,
        }),
        (Some(a), _) => Ok(a.type_name),
        (None, w) => Ok(w.unwrap_or_else(|| DEFAULT_TYPE.to_string())),
    }
}

/// Commits draft `d` inside the caller's write transaction.
pub fn commit(conn: &Db, d: &DraftRow, opts: &CommitOptions) -> Result<Outcome> {
    let type_name = effective_type(conn, d, opts.type_name.as_ref())?;
    // Staged files were stored as blobs before this transaction, under the draft's commit
    // lock, so none can remain.
    let root = draft::build_tree(conn, d, &|id| {
        let path = drafts::staged(conn, d.id)?
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| crate::tree::join(&s.parent, &s.name))
            .unwrap_or_default();
        Err(Error::Busy(format!(
            "{}: {} was written through a mount during the commit; commit again",
            d.label(),
            String::from_utf8_lossy(&path)
        )))
    })?;
    let art = match versions::artifact(conn, &d.artifact)? {
        Some(a) => a,
        None => versions::create_artifact(conn, &d.artifact, &type_name)?,
    };
    // Unchanged means equal to the base (incremental) or to latest (from scratch).
    let same_as = match d.base_number {
        Some(n) => versions::by_number(conn, art.id, n)?,
        None => versions::latest(conn, art.id)?,
    };
    let outcome = match same_as {
        Some(v) if v.digest == root.digest => Outcome::Unchanged(v),
        _ => {
            let info = VersionInfo {
                base_number: d.base_number,
                description: opts.description.clone().unwrap_or_default(),
                metadata: opts.metadata.clone().unwrap_or_else(|| "{}".into()),
            };
            Outcome::Created(versions::insert(conn, &art, root.id, &root.digest, &info)?)
        }
    };
    let version = outcome.version();
    for alias in &opts.aliases {
        if alias.as_str() != LATEST {
            versions::set_alias(conn, art.id, alias.as_str(), version.id)?;
        }
    }
    if d.is_distributed() {
        drafts::seal(conn, &d.artifact, &d.dist_id, version.number)?;
    }
    if let Some(r) = &opts.run {
        let made = !outcome.is_unchanged();
        let now = crate::catalog::now_ns();
        runs::record_output(conn, &r.run, &art.name, version.number, made, r.via, now)?;
    }
    drafts::delete(conn, d.id)?;
    Ok(outcome)
}
