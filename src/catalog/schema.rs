//! The catalog schema, as an ordered list of migrations for each engine. SQLite's
//! `PRAGMA user_version`, or PostgreSQL's `artifactfs_schema` table, records how many have
//! run; a catalog with a higher number than this build knows is refused.

/// Migration N brings the schema from version N to N + 1.
pub const MIGRATIONS: &[&str] = &[V1, V2, V3, V4, V5, V6];

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

/// Listings stored in chunks (see `nodes.rs`): a commit that changes one entry of a large
/// directory writes one new chunk and shares the rest with the node it replaces, instead of
/// copying the whole listing.
/// - `chunks`: deduplicated by `hash`. AUTOINCREMENT keeps new chunks' entries at the end of
///   `chunk_entries` even after gc removed the newest ones.
/// - `node_chunks`: a node's chunks keyed by their first name, so the chunk that may hold a
///   name is the one with the greatest `first_name` not above it. An empty directory has none.
///
/// Existing nodes become one chunk each. Their chunk hash is the node's hash behind a zero
/// byte: SQLite has no SHA-256 to compute a real chunk hash, and at 33 bytes it can never
/// equal one (chunk hashes are 32 bytes), so no chunk made later is mistaken for it. (`||`
/// makes text; the CAST makes it a blob again, byte for byte.)
const V3: &str = r#"
CREATE TABLE chunks (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE
);

-- kind: 0 file, 1 directory, 2 symlink
CREATE TABLE chunk_entries (
    chunk    INTEGER NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    name     BLOB NOT NULL,
    kind     INTEGER NOT NULL,
    blob     BLOB,
    size     INTEGER NOT NULL DEFAULT 0,
    mode     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    child    INTEGER REFERENCES nodes(id) DEFERRABLE INITIALLY DEFERRED,
    target   BLOB,
    PRIMARY KEY (chunk, name)
) WITHOUT ROWID;
-- No index on blob, as before: random keys would dirty a page per entry on every commit.
-- The one on child serves the foreign key when gc deletes nodes, and walks up the tree.
CREATE INDEX chunk_entries_child ON chunk_entries(child) WHERE child IS NOT NULL;

CREATE TABLE node_chunks (
    node       INTEGER NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    first_name BLOB NOT NULL,
    chunk      INTEGER NOT NULL REFERENCES chunks(id),
    PRIMARY KEY (node, first_name)
) WITHOUT ROWID;
CREATE INDEX node_chunks_chunk ON node_chunks(chunk);

INSERT INTO chunks (hash)
    SELECT CAST(X'00' || hash AS BLOB) FROM nodes WHERE id IN (SELECT node FROM node_entries) ORDER BY id;
INSERT INTO chunk_entries (chunk, name, kind, blob, size, mode, mtime_ns, child, target)
    SELECT c.id, e.name, e.kind, e.blob, e.size, e.mode, e.mtime_ns, e.child, e.target
      FROM node_entries e
      JOIN nodes n ON n.id = e.node
      JOIN chunks c ON c.hash = CAST(X'00' || n.hash AS BLOB);
INSERT INTO node_chunks (node, first_name, chunk)
    SELECT n.id, (SELECT min(name) FROM node_entries WHERE node = n.id), c.id
      FROM nodes n JOIN chunks c ON c.hash = CAST(X'00' || n.hash AS BLOB);
DROP TABLE node_entries;
"#;

/// References (entries of kinds 5 and 6, content outside the store; see `reference.rs`):
/// `refs` counts them in a node's subtree, so `show` need not walk a version. Stores older
/// than this have none. The new kinds are why older builds must not open such a store.
const V4: &str = r#"
ALTER TABLE nodes ADD COLUMN refs INTEGER NOT NULL DEFAULT 0;
"#;

/// Drafts as local directories (docs/SEMANTICS.md, "Inside a draft"):
/// - `atime_ns`, `ctime_ns`: an entry's access and change times, and the draft directory's own
///   (`root_atime_ns`, `root_ctime_ns`); NULL means its mtime, as for rows made before.
/// - `owner_uid`, `owner_gid`: who a draft made through a mount belongs to (NULL: whoever
///   mounted), and who made an entry in it when not the draft's owner (NULL: the draft's).
///   Versions record no owners.
/// - `copied_ctime_ns`: a staged file copied from its base keeps showing the base's ctime
///   (`ctime_ns`) for as long as its own ctime is still this one, right after the copy:
///   opening a file for writing is no change to it.
/// - `draft_entries_staged`: the names of one staged file, which hard links share and which
///   give it its link count, with what every name of it has alike (covering, so that reading
///   a staged file's attributes never scans its draft); `draft_entries_dirs`: a directory's
///   subdirectories, which its link count counts.
const V5: &str = r#"
ALTER TABLE draft_entries ADD COLUMN atime_ns INTEGER;
ALTER TABLE draft_entries ADD COLUMN ctime_ns INTEGER;
ALTER TABLE drafts ADD COLUMN root_atime_ns INTEGER;
ALTER TABLE drafts ADD COLUMN root_ctime_ns INTEGER;
ALTER TABLE drafts ADD COLUMN owner_uid INTEGER;
ALTER TABLE drafts ADD COLUMN owner_gid INTEGER;
ALTER TABLE draft_entries ADD COLUMN owner_uid INTEGER;
ALTER TABLE draft_entries ADD COLUMN owner_gid INTEGER;
ALTER TABLE draft_entries ADD COLUMN copied_ctime_ns INTEGER;
CREATE INDEX draft_entries_staged ON draft_entries(draft, staged, mode, owner_uid, owner_gid,
    copied_ctime_ns, ctime_ns) WHERE staged IS NOT NULL;
CREATE INDEX draft_entries_dirs ON draft_entries(draft, parent) WHERE kind = 1;
"#;

/// PostgreSQL's migrations. Version 1 is the schema SQLite reached with V5, in PostgreSQL's
/// types: BIGINT for every integer (the queries bind 64-bit values), BYTEA for bytes, text
/// compared byte by byte (`COLLATE "C"`) so that listings sort as SQLite sorts them.
pub const PG_MIGRATIONS: &[&str] = &[PG_V1, PG_V2];

const PG_V1: &str = r#"
CREATE TABLE artifacts (
    id          BIGSERIAL PRIMARY KEY,
    name        TEXT COLLATE "C" NOT NULL UNIQUE,
    type        TEXT COLLATE "C" NOT NULL,
    created_ns  BIGINT NOT NULL,
    next_number BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE nodes (
    id      BIGSERIAL PRIMARY KEY,
    hash    BYTEA NOT NULL UNIQUE,
    digest  BYTEA NOT NULL,
    files   BIGINT NOT NULL,
    bytes   BIGINT NOT NULL,
    subdirs BIGINT NOT NULL,
    refs    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE chunks (
    id   BIGSERIAL PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE
);

CREATE TABLE chunk_entries (
    chunk    BIGINT NOT NULL REFERENCES chunks(id) ON DELETE CASCADE,
    name     BYTEA NOT NULL,
    kind     BIGINT NOT NULL,
    blob     BYTEA,
    size     BIGINT NOT NULL DEFAULT 0,
    mode     BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    child    BIGINT REFERENCES nodes(id) DEFERRABLE INITIALLY DEFERRED,
    target   BYTEA,
    PRIMARY KEY (chunk, name)
);
CREATE INDEX chunk_entries_child ON chunk_entries(child) WHERE child IS NOT NULL;

CREATE TABLE node_chunks (
    node       BIGINT NOT NULL REFERENCES nodes(id) ON DELETE CASCADE,
    first_name BYTEA NOT NULL,
    chunk      BIGINT NOT NULL REFERENCES chunks(id),
    PRIMARY KEY (node, first_name)
);
CREATE INDEX node_chunks_chunk ON node_chunks(chunk);

CREATE TABLE versions (
    id          BIGSERIAL PRIMARY KEY,
    artifact    BIGINT NOT NULL REFERENCES artifacts(id),
    number      BIGINT NOT NULL,
    root        BIGINT NOT NULL REFERENCES nodes(id),
    digest      BYTEA NOT NULL,
    base_number BIGINT,
    description TEXT NOT NULL DEFAULT '',
    metadata    TEXT NOT NULL DEFAULT '{}',
    created_ns  BIGINT NOT NULL,
    UNIQUE (artifact, number)
);
CREATE INDEX versions_root ON versions(root);

CREATE TABLE aliases (
    artifact BIGINT NOT NULL REFERENCES artifacts(id),
    name     TEXT COLLATE "C" NOT NULL,
    version  BIGINT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    PRIMARY KEY (artifact, name)
);
CREATE INDEX aliases_version ON aliases(version);

CREATE TABLE drafts (
    id            BIGSERIAL PRIMARY KEY,
    artifact      TEXT COLLATE "C" NOT NULL,
    dist_id       TEXT COLLATE "C" NOT NULL DEFAULT '',
    type          TEXT COLLATE "C",
    base_number   BIGINT,
    base_root     BIGINT REFERENCES nodes(id),
    created_ns    BIGINT NOT NULL,
    root_mode     BIGINT NOT NULL DEFAULT 493,
    root_mtime_ns BIGINT,
    root_atime_ns BIGINT,
    root_ctime_ns BIGINT,
    owner_uid     BIGINT,
    owner_gid     BIGINT,
    UNIQUE (artifact, dist_id)
);

CREATE TABLE draft_entries (
    draft           BIGINT NOT NULL REFERENCES drafts(id) ON DELETE CASCADE,
    parent          BYTEA NOT NULL,
    name            BYTEA NOT NULL,
    kind            BIGINT NOT NULL,
    blob            BYTEA,
    size            BIGINT NOT NULL DEFAULT 0,
    mode            BIGINT NOT NULL DEFAULT 0,
    mtime_ns        BIGINT NOT NULL DEFAULT 0,
    target          BYTEA,
    opaque          BIGINT NOT NULL DEFAULT 0,
    staged          BIGINT,
    moved           BIGINT REFERENCES nodes(id),
    atime_ns        BIGINT,
    ctime_ns        BIGINT,
    owner_uid       BIGINT,
    owner_gid       BIGINT,
    copied_ctime_ns BIGINT,
    PRIMARY KEY (draft, parent, name)
);
CREATE INDEX draft_entries_staged ON draft_entries(draft, staged, mode, owner_uid, owner_gid,
    copied_ctime_ns, ctime_ns) WHERE staged IS NOT NULL;
CREATE INDEX draft_entries_dirs ON draft_entries(draft, parent) WHERE kind = 1;

CREATE TABLE seals (
    artifact TEXT COLLATE "C" NOT NULL,
    dist_id  TEXT COLLATE "C" NOT NULL,
    number   BIGINT NOT NULL,
    PRIMARY KEY (artifact, dist_id)
);
"#;

/// Runs and lineage (docs/SEMANTICS.md, "Runs and lineage"). Written in the SQL both engines
/// take, with plain INTEGER and TEXT columns, so that a shared catalog holds the same tables.
/// - `runs`: one row per run, keyed by its id. `state` is `running` until the run ends:
///   `finished` (exit status 0), `failed` (another status), `killed` (its command ended by a
///   signal) or `crashed` (the run vanished without ending: see `pid`). `machine` (boot id and
///   PID namespace), `pid` and `pid_start` (its start time in clock ticks after boot) name the
///   process whose life is the run's, where it has one; `heartbeat_ns` is when that process
///   last said it was alive, for readers on other machines.
/// - `run_inputs`, `run_outputs`: the versions a run read and made, by artifact name and
///   number, which are never reused. No foreign key to `versions`: deleting a version keeps
///   its lineage. `made` is 1 for the run whose commit created the version, 0 for one whose
///   commit found the same content already there; `via` says how it was seen.
const V6: &str = r#"
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    run_group    TEXT NOT NULL DEFAULT '',
    job_type     TEXT NOT NULL DEFAULT '',
    config       TEXT NOT NULL DEFAULT '{}',
    command      TEXT NOT NULL DEFAULT '[]',
    host         TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    machine      TEXT NOT NULL DEFAULT '',
    pid          INTEGER,
    pid_start    INTEGER,
    state        TEXT NOT NULL,
    exit_code    INTEGER,
    exit_signal  INTEGER,
    started_ns   INTEGER NOT NULL,
    heartbeat_ns INTEGER,
    ended_ns     INTEGER
);
CREATE INDEX runs_started ON runs(started_ns);
CREATE INDEX runs_group ON runs(run_group);

CREATE TABLE run_inputs (
    run         TEXT NOT NULL REFERENCES runs(id),
    artifact    TEXT NOT NULL,
    number      INTEGER NOT NULL,
    via         TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL,
    PRIMARY KEY (run, artifact, number)
);
CREATE INDEX run_inputs_version ON run_inputs(artifact, number);

CREATE TABLE run_outputs (
    run         TEXT NOT NULL REFERENCES runs(id),
    artifact    TEXT NOT NULL,
    number      INTEGER NOT NULL,
    made        INTEGER NOT NULL,
    via         TEXT NOT NULL,
    recorded_ns INTEGER NOT NULL,
    PRIMARY KEY (run, artifact, number)
);
CREATE INDEX run_outputs_version ON run_outputs(artifact, number);
"#;

/// Runs and lineage (SQLite's V6), with BIGINT for every integer.
const PG_V2: &str = r#"
CREATE TABLE runs (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    run_group    TEXT NOT NULL DEFAULT '',
    job_type     TEXT NOT NULL DEFAULT '',
    config       TEXT NOT NULL DEFAULT '{}',
    command      TEXT NOT NULL DEFAULT '[]',
    host         TEXT NOT NULL,
    user_name    TEXT NOT NULL,
    machine      TEXT NOT NULL DEFAULT '',
    pid          BIGINT,
    pid_start    BIGINT,
    state        TEXT NOT NULL,
    exit_code    BIGINT,
    exit_signal  BIGINT,
    started_ns   BIGINT NOT NULL,
    heartbeat_ns BIGINT,
    ended_ns     BIGINT
);
CREATE INDEX runs_started ON runs(started_ns);
CREATE INDEX runs_group ON runs(run_group);

CREATE TABLE run_inputs (
    run         TEXT NOT NULL REFERENCES runs(id),
    artifact    TEXT NOT NULL,
    number      BIGINT NOT NULL,
    via         TEXT NOT NULL,
    recorded_ns BIGINT NOT NULL,
    PRIMARY KEY (run, artifact, number)
);
CREATE INDEX run_inputs_version ON run_inputs(artifact, number);

CREATE TABLE run_outputs (
    run         TEXT NOT NULL REFERENCES runs(id),
    artifact    TEXT NOT NULL,
    number      BIGINT NOT NULL,
    made        BIGINT NOT NULL,
    via         TEXT NOT NULL,
    recorded_ns BIGINT NOT NULL,
    PRIMARY KEY (run, artifact, number)
);
CREATE INDEX run_outputs_version ON run_outputs(artifact, number);
"#;
