//! The catalog schema, as an ordered list of migrations. `PRAGMA user_version` records how many
//! have run; a catalog with a higher number than this build knows is refused.

/// Migration N brings the schema from version N to N + 1.
pub const MIGRATIONS: &[&str] = &[V1, V2];

const V1: &str = r#"
CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    type        TEXT NOT NULL,
    created_ns  INTEGER NOT NULL,
    -- next version number; only ever grows, so numbers are never reused
    next_number INTEGER NOT NULL DEFAULT 0
);

-- Directory nodes of the shared manifest trees, deduplicated by `hash`
-- (canonical listing with modes and mtimes). `digest` leaves mtimes and
-- permission bits other than the executable bit out: it is what version
-- digests are made of. `files` and `bytes` sum the whole subtree; `subdirs`
-- counts immediate subdirectories (a directory's link count is 2 + subdirs).
-- AUTOINCREMENT: ids are never reused after gc, so a mount that still holds the id of a
-- collected node can never be handed a different directory under the same id.
CREATE TABLE nodes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    hash    BLOB NOT NULL UNIQUE,
    digest  BLOB NOT NULL,
    files   INTEGER NOT NULL,
    bytes   INTEGER NOT NULL,
    subdirs INTEGER NOT NULL
);

-- kind: 0 file, 1 directory, 2 symlink
CREATE TABLE node_entries (
    node     INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    name     BLOB NOT NULL,
    kind     INTEGER NOT NULL,
    blob     BLOB,
    size     INTEGER NOT NULL DEFAULT 0,
    mode     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    child    INTEGER REFERENCES nodes(id) DEFERRABLE INITIALLY DEFERRED,
    target   BLOB,
    PRIMARY KEY (node, name)
) WITHOUT ROWID;
-- No index on blob: with random digests as keys it would dirty a page per
-- entry on every commit. gc and verify scan instead.
CREATE INDEX node_entries_child ON node_entries(child) WHERE child IS NOT NULL;

CREATE TABLE versions (
    id          INTEGER PRIMARY KEY,
    artifact    INTEGER NOT NULL REFERENCES artifacts(id),
    number      INTEGER NOT NULL,
    root        INTEGER NOT NULL REFERENCES nodes(id),
    digest      BLOB NOT NULL,
    base_number INTEGER,
    description TEXT NOT NULL DEFAULT '',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_ns  INTEGER NOT NULL,
    UNIQUE (artifact, number)
);
CREATE INDEX versions_root ON versions(root);

CREATE TABLE aliases (
    artifact INTEGER NOT NULL REFERENCES artifacts(id),
    name     TEXT NOT NULL,
    version  INTEGER NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    PRIMARY KEY (artifact, name)
);
CREATE INDEX aliases_version ON aliases(version);

-- dist_id is '' for an artifact's plain draft. The artifact may not exist yet.
CREATE TABLE drafts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    artifact    TEXT NOT NULL,
    dist_id     TEXT NOT NULL DEFAULT '',
    type        TEXT,
    base_number INTEGER,
    base_root   INTEGER REFERENCES nodes(id),
    created_ns  INTEGER NOT NULL,
    UNIQUE (artifact, dist_id)
);

-- A draft's changes over its base tree, one row per path, keyed by parent
-- directory so a directory's changes are one range scan. Every ancestor of a
-- row has a directory row. kind: 0 file, 1 directory, 2 symlink, 3 removed.
-- opaque: a directory that hides the base directory at the same path.
CREATE TABLE draft_entries (
    draft    INTEGER NOT NULL REFERENCES drafts(id) ON DELETE CASCADE,
    parent   BLOB NOT NULL,
    name     BLOB NOT NULL,
    kind     INTEGER NOT NULL,
    blob     BLOB,
    size     INTEGER NOT NULL DEFAULT 0,
    mode     INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    target   BLOB,
    opaque   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (draft, parent, name)
) WITHOUT ROWID;

-- Finished distributed drafts: the id may not be reused.
CREATE TABLE seals (
    artifact TEXT NOT NULL,
    dist_id  TEXT NOT NULL,
    number   INTEGER NOT NULL,
    PRIMARY KEY (artifact, dist_id)
);
"#;

/// Drafts changed through the mount.
/// - `staged`: files being written. Their bytes live in `staged/<draft>/<staged>` until the
///   commit stores them as blobs: kind 4 rows carry the staged file's number instead of a
///   blob. Size and mtime are the staged file's own, so a write needs no catalog change.
/// - `moved`: a directory renamed within the draft shows the base directory it came from;
///   gc keeps the nodes drafts show this way.
/// - `root_mode`, `root_mtime_ns`: the draft directory's own attributes, which `cp -a`,
///   `rsync -a` and `tar x` set (a version's root has fixed ones).
const V2: &str = r#"
ALTER TABLE draft_entries ADD COLUMN staged INTEGER;
ALTER TABLE draft_entries ADD COLUMN moved INTEGER REFERENCES nodes(id);
ALTER TABLE drafts ADD COLUMN root_mode INTEGER NOT NULL DEFAULT 493;
ALTER TABLE drafts ADD COLUMN root_mtime_ns INTEGER;
"#;
