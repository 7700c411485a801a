//! Artifacts, their versions and aliases.

use super::sql::{Db, DbResult, Row};
use crate::params;

use crate::catalog::nodes::NodeId;
use crate::catalog::{absent, now_ns};
use crate::error::{CatalogContext, Result};
use crate::hash::Digest;
use crate::names::{LATEST, Selector, VersionRef, closest};

#[derive(Clone, Debug)]
pub struct ArtifactRow {
    pub id: i64,
    pub name: String,
    pub type_name: String,
    pub created_ns: i64,
}

#[derive(Clone, Debug)]
pub struct VersionRow {
    pub id: i64,
    pub artifact_id: i64,
    pub artifact: String,
    pub number: u64,
    pub root: NodeId,
    pub digest: Digest,
    pub base_number: Option<u64>,
    pub description: String,
    pub metadata: String,
    pub created_ns: i64,
}

impl VersionRow {
    pub fn reference(&self) -> String {
        format!("{}:v{}", self.artifact, self.number)
    }
}

/// What a new version records besides its tree.
#[derive(Clone, Debug, Default)]
pub struct VersionInfo {
    pub base_number: Option<u64>,
    pub description: String,
    pub metadata: String,
}

fn artifact_from_row(r: &Row) -> DbResult<ArtifactRow> {
    Ok(ArtifactRow {
        id: r.get(0)?,
        name: r.get(1)?,
        type_name: r.get(2)?,
        created_ns: r.get(3)?,
    })
}

const VERSION_SELECT: &str = "SELECT v.id, v.artifact, a.name, v.number, v.root, v.digest,
    v.base_number, v.description, v.metadata, v.created_ns
    FROM versions v JOIN artifacts a ON a.id = v.artifact";

fn version_from_row(r: &Row) -> DbResult<VersionRow> {
    let digest: Vec<u8> = r.get(5)?;
    Ok(VersionRow {
        id: r.get(0)?,
        artifact_id: r.get(1)?,
        artifact: r.get(2)?,
        number: r.get::<i64>(3)? as u64,
        root: r.get(4)?,
        digest: Digest::from_slice(&digest).unwrap_or(Digest([0; 32])),
        base_number: r.get::<Option<i64>>(6)?.map(|n| n as u64),
        description: r.get(7)?,
        metadata: r.get(8)?,
        created_ns: r.get(9)?,
    })
}

pub fn artifact(conn: &Db, name: &str) -> Result<Option<ArtifactRow>> {
    conn.query_opt(
        "SELECT id, name, type, created_ns FROM artifacts WHERE name = ?1",
        params![name],
        artifact_from_row,
    )
    .ctx(|| format!("look up artifact {name}"))
}

pub fn require_artifact(conn: &Db, name: &str) -> Result<ArtifactRow> {
    if let Some(a) = artifact(conn, name)? {
        return Ok(a);
    }
    let all = artifacts(conn)?;
    let hint =
        closest(name, all.iter().map(|a| a.name.as_str())).map(|c| format!("did you mean {c}?"));
    Err(absent(conn, format!("artifact {name}"), hint))
}

pub fn artifacts(conn: &Db) -> Result<Vec<ArtifactRow>> {
    conn.query(
        "SELECT id, name, type, created_ns FROM artifacts ORDER BY name",
        params![],
        artifact_from_row,
    )
    .ctx(|| "list artifacts".into())
}

pub fn create_artifact(conn: &Db, name: &str, type_name: &str) -> Result<ArtifactRow> {
    let created_ns = now_ns();
    let id = conn
        .query_one(
            "INSERT INTO artifacts (name, type, created_ns) VALUES (?1, ?2, ?3) RETURNING id",
            params![name, type_name, created_ns],
            |r| r.get(0),
        )
        .ctx(|| format!("create artifact {name}"))?;
    Ok(ArtifactRow {
        id,
        name: name.to_string(),
        type_name: type_name.to_string(),
        created_ns,
    })
}

pub fn by_number(conn: &Db, artifact_id: i64, number: u64) -> Result<Option<VersionRow>> {
    conn.query_opt(
        &format!("{VERSION_SELECT} WHERE v.artifact = ?1 AND v.number = ?2"),
        params![artifact_id, number as i64],
        version_from_row,
    )
    .ctx(|| format!("look up version v{number}"))
}

pub fn by_alias(conn: &Db, artifact_id: i64, alias: &str) -> Result<Option<VersionRow>> {
    conn.query_opt(&format!(
        "{VERSION_SELECT} JOIN aliases al ON al.version = v.id WHERE al.artifact = ?1 AND al.name = ?2"
    ), params![artifact_id, alias], version_from_row)
    .ctx(|| format!("look up alias {alias}"))
}

pub fn latest(conn: &Db, artifact_id: i64) -> Result<Option<VersionRow>> {
    by_alias(conn, artifact_id, LATEST)
}

/// Finds the version a reference names, with an error that says which part does not exist.
pub fn resolve(conn: &Db, r: &VersionRef) -> Result<VersionRow> {
    let art = require_artifact(conn, r.artifact.as_str())?;
    let found = match &r.selector {
        Selector::Number(n) => by_number(conn, art.id, *n)?,
        Selector::Alias(a) => by_alias(conn, art.id, a.as_str())?,
    };
    if let Some(v) = found {
        return Ok(v);
    }
    let name = &r.artifact;
    Err(match &r.selector {
        Selector::Alias(a) if a.as_str() == LATEST => absent(
            conn,
            r.to_string(),
            Some(format!("every version of {name} was deleted")),
        ),
        Selector::Alias(a) => {
            let aliases = aliases_of_artifact(conn, art.id)?;
            let hint = closest(a.as_str(), aliases.iter().map(|(n, _)| n.as_str()))
                .map(|c| format!("did you mean {name}:{c}?"));
            absent(conn, format!("alias {r}"), hint)
        }
        Selector::Number(_) => {
            let newest = latest(conn, art.id)?.map(|v| v.reference());
            let hint = newest.map(|n| format!("the newest version of {name} is {n}"));
            absent(conn, format!("version {r}"), hint)
        }
    })
}

pub fn versions(conn: &Db, artifact_id: i64) -> Result<Vec<VersionRow>> {
    conn.query(
        &format!("{VERSION_SELECT} WHERE v.artifact = ?1 ORDER BY v.number"),
        params![artifact_id],
        version_from_row,
    )
    .ctx(|| "list versions".into())
}

pub fn aliases_of(conn: &Db, version_id: i64) -> Result<Vec<String>> {
    conn.query(
        "SELECT name FROM aliases WHERE version = ?1 ORDER BY name != 'latest', name",
        params![version_id],
        |r| r.get(0),
    )
    .ctx(|| "list aliases".into())
}

/// Every alias of an artifact with the number of the version it names, by alias name.
pub fn aliases_of_artifact(conn: &Db, artifact_id: i64) -> Result<Vec<(String, u64)>> {
    conn.query(
        "SELECT al.name, v.number FROM aliases al JOIN versions v ON v.id = al.version
             WHERE al.artifact = ?1 ORDER BY al.name",
        params![artifact_id],
        |r| Ok((r.get(0)?, r.get::<i64>(1)? as u64)),
    )
    .ctx(|| "list aliases".into())
}

/// Points `alias` at a version, moving it from wherever it was.
pub fn set_alias(conn: &Db, artifact_id: i64, alias: &str, version_id: i64) -> Result<()> {
    conn.execute(
        "INSERT INTO aliases (artifact, name, version) VALUES (?1, ?2, ?3)
         ON CONFLICT (artifact, name) DO UPDATE SET version = excluded.version",
        params![artifact_id, alias, version_id],
    )
    .ctx(|| format!("set alias {alias}"))?;
    Ok(())
}

/// Removes an alias; returns the number of the version it named, if it existed.
pub fn remove_alias(conn: &Db, artifact_id: i64, alias: &str) -> Result<Option<u64>> {
    let named: Option<i64> = conn
        .query_opt(
            "SELECT v.number FROM aliases a JOIN versions v ON v.id = a.version
              WHERE a.artifact = ?1 AND a.name = ?2",
            params![artifact_id, alias],
            |r| r.get(0),
        )
        .ctx(|| format!("find alias {alias}"))?;
    conn.execute(
        "DELETE FROM aliases WHERE artifact = ?1 AND name = ?2",
        params![artifact_id, alias],
    )
    .ctx(|| format!("remove alias {alias}"))?;
    Ok(named.map(|n| n as u64))
}

/// Records a new version with the next number and moves `latest` to it. The caller holds the
/// write transaction, so concurrent committers get consecutive numbers.
pub fn insert(
    conn: &Db,
    art: &ArtifactRow,
    root: NodeId,
    digest: &Digest,
    info: &VersionInfo,
) -> Result<VersionRow> {
    let number: i64 = conn
        .query_one("UPDATE artifacts SET next_number = next_number + 1 WHERE id = ?1 RETURNING next_number - 1", params![art.id], |r| r.get(0))
        .ctx(|| format!("allocate a version number of {}", art.name))?;
    let created_ns = now_ns();
    let id = conn
        .query_one(
            "INSERT INTO versions (artifact, number, root, digest, base_number, description, metadata, created_ns)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
            params![
                art.id,
                number,
                root,
                &digest.0[..],
                info.base_number,
                &info.description,
                &info.metadata,
                created_ns
            ],
            |r| r.get(0),
        )
        .ctx(|| format!("record {}:v{number}", art.name))?;
    set_alias(conn, art.id, LATEST, id)?;
    Ok(VersionRow {
        id,
        artifact_id: art.id,
        artifact: art.name.clone(),
        number: number as u64,
        root,
        digest: *digest,
        base_number: info.base_number,
        description: info.description.clone(),
        metadata: info.metadata.clone(),
        created_ns,
    })
}

/// Removes a version; `latest` falls back to the newest remaining one.
pub fn delete(conn: &Db, version: &VersionRow) -> Result<()> {
    conn.execute("DELETE FROM versions WHERE id = ?1", params![version.id])
        .ctx(|| format!("delete {}", version.reference()))?;
    let newest: Option<i64> = conn
        .query_opt(
            "SELECT id FROM versions WHERE artifact = ?1 ORDER BY number DESC LIMIT 1",
            params![version.artifact_id],
            |r| r.get(0),
        )
        .ctx(|| format!("find the newest version of {}", version.artifact))?;
    if let Some(id) = newest {
        set_alias(conn, version.artifact_id, LATEST, id)?;
    }
    Ok(())
}
