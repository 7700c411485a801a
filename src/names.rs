//! Validated names. Anything built from user input goes through these constructors, so the rest
//! of the crate can assume names are safe to use as directory names and catalog keys.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

pub const MAX_NAME_LEN: usize = 128;
pub const LATEST: &str = "latest";

/// Checks the shared name rule: 1–128 characters of `A-Z a-z 0-9 . _ -`, no leading dot.
fn check_name(kind: &'static str, value: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidName {
        kind,
        value: value.to_string(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("must not be empty".into()));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(bad(format!(
            "is {} characters long; the limit is {MAX_NAME_LEN}",
            value.chars().count()
        )));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(bad(format!(
            "contains {c:?}; only letters, digits, '.', '_' and '-' are allowed"
        )));
    }
    if value.starts_with('.') {
        return Err(bad("must not start with '.'".into()));
    }
    Ok(())
}

/// `v` followed by digits only: the form of version numbers.
fn is_version_form(value: &str) -> bool {
    value.len() > 1 && value.starts_with('v') && value[1..].bytes().all(|b| b.is_ascii_digit())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String);

        impl $ty {
            pub fn new(value: &str) -> Result<Self> {
                check_name($kind, value)?;
                let extra: fn(&str) -> Option<String> = $extra;
                if let Some(reason) = extra(value) {
                    return Err(Error::InvalidName { kind: $kind, value: value.to_string(), reason });
                }
                Ok($ty(value.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                $ty::new(s)
            }
        }
    };
}

name_type!(
    /// The name of an artifact (`mnist`). `drafts` is reserved for the mount's draft area.
    ArtifactName,
    "artifact name",
    |v| (v == "drafts").then(|| "is reserved for the mount's drafts/ directory".to_string())
);

name_type!(
    /// A movable alias (`latest`, `best`). `v<digits>` is reserved for version numbers.
    AliasName,
    "alias",
    |v| is_version_form(v).then(|| "has the form of a version number (vN), which is reserved".to_string())
);

name_type!(
    /// An artifact type (`dataset`, `model`).
    TypeName,
    "type",
    |_| None
);

name_type!(
    /// The id shared by the writers of a distributed draft (`NAME@ID`).
    DistributedId,
    "distributed id",
    |_| None
);

name_type!(
    /// A run's id (`ARTIFACTFS_RUN`): made up by `run` and `run begin`, or given with `--id`.
    RunId,
    "run id",
    |_| None
);

/// The candidate closest to `want`, if one is close enough to be a typo of it (`mnsit` for
/// `mnist`, `bset` for `best`): for "did you mean" hints.
pub fn closest<'a>(want: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (want.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != want)
        .map(|c| (strsim::damerau_levenshtein(want, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Which version of an artifact a reference selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Number(u64),
    Alias(AliasName),
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Number(n) => write!(f, "v{n}"),
            Selector::Alias(a) => write!(f, "{a}"),
        }
    }
}

/// `NAME:ALIAS`, `NAME:vN`, or a bare `NAME` meaning `NAME:latest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionRef {
    pub artifact: ArtifactName,
    pub selector: Selector,
}

impl VersionRef {
    pub fn number(artifact: ArtifactName, number: u64) -> Self {
        VersionRef {
            artifact,
            selector: Selector::Number(number),
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.artifact, self.selector)
    }
}

impl FromStr for VersionRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, sel) = s.split_once(':').unwrap_or((s, LATEST));
        let artifact = ArtifactName::new(name)?;
        let selector = if is_version_form(sel) {
            let n = sel[1..].parse().map_err(|_| Error::InvalidName {
                kind: "version",
                value: sel.to_string(),
                reason: "version number is too large".into(),
            })?;
            Selector::Number(n)
        } else {
            Selector::Alias(AliasName::new(sel)?)
        };
        Ok(VersionRef { artifact, selector })
    }
}

/// What `alias rm` takes first: a bare `NAME` (the alias is removed from whichever version
/// it names), or a version as `alias set` takes it (`NAME:vN`, `NAME:ALIAS`), which the alias
/// must name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AliasOwner {
    pub artifact: ArtifactName,
    pub version: Option<VersionRef>,
}

impl FromStr for AliasOwner {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if s.contains(':') {
            let r: VersionRef = s.parse()?;
            return Ok(AliasOwner {
                artifact: r.artifact.clone(),
                version: Some(r),
            });
        }
        Ok(AliasOwner {
            artifact: ArtifactName::new(s)?,
            version: None,
        })
    }
}

/// A draft: `NAME` (the artifact's one plain draft) or `NAME@ID` (a distributed draft).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DraftName {
    pub artifact: ArtifactName,
    pub id: Option<DistributedId>,
}

impl DraftName {
    /// The catalog key for the distributed id: empty for the plain draft.
    pub fn id_key(&self) -> &str {
        self.id.as_ref().map_or("", |id| id.as_str())
    }
}

impl fmt::Display for DraftName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}@{}", self.artifact, id),
            None => write!(f, "{}", self.artifact),
        }
    }
}

impl FromStr for DraftName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, id) = match s.split_once('@') {
            Some((n, id)) => (n, Some(DistributedId::new(id)?)),
            None => (s, None),
        };
        Ok(DraftName {
            artifact: ArtifactName::new(name)?,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        assert!(ArtifactName::new("mnist-v2_final.1").is_ok());
        for bad in [
            "",
            ".hidden",
            "a/b",
            "a:b",
            "a b",
            "drafts",
            &"x".repeat(129),
        ] {
            assert!(ArtifactName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ArtifactName::new(&"x".repeat(128)).is_ok());
        assert!(AliasName::new("v3").is_err());
        assert!(AliasName::new("v").is_ok());
        assert!(AliasName::new("v3a").is_ok());
    }

    #[test]
    fn refs_parse() {
        let r: VersionRef = "mnist".parse().unwrap();
        assert_eq!(r.to_string(), "mnist:latest");
        let r: VersionRef = "mnist:v12".parse().unwrap();
        assert_eq!(r.selector, Selector::Number(12));
        assert!("mnist:a/b".parse::<VersionRef>().is_err());
        let d: DraftName = "mnist@run-1".parse().unwrap();
        assert_eq!(d.id_key(), "run-1");
        assert!("mnist@".parse::<DraftName>().is_err());
    }

    #[test]
    fn close_names_are_suggested_and_far_ones_not() {
        let names = ["mnist", "cifar10", "best", "latest"];
        assert_eq!(closest("mnsit", names), Some("mnist"));
        assert_eq!(closest("bset", names), Some("best"));
        assert_eq!(closest("lates", names), Some("latest"));
        assert_eq!(closest("imagenet", names), None);
        assert_eq!(
            closest("mnist", names),
            None,
            "the name itself is no suggestion"
        );
    }

    #[test]
    fn error_names_the_character() {
        let e = ArtifactName::new("a:b").unwrap_err().to_string();
        assert!(e.contains("':'"), "{e}");
    }
}
