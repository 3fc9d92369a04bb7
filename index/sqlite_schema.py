"""The SQLite schema (the source of truth) and how connections are opened.

Durability: WAL with `synchronous=FULL` fsyncs the WAL on every commit, so a commit that returned
survives `kill -9` and power loss; NORMAL would only survive a process crash. The cost is one fsync
per transaction, which is why bulk ingest commits large batches.

Ids: `vectors.vec_id` is the FAISS id. AUTOINCREMENT guarantees an id is never reused after a delete,
so an old snapshot can never map a removed vector's id onto a different vector.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from index.errors import StoreError

SCHEMA_VERSION = "1"

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    case_pk    INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id    TEXT NOT NULL UNIQUE,
    patient_id TEXT NOT NULL,
    study_time TEXT,
    study_ts   REAL,            -- study_time as UTC epoch seconds, for range filters
    labels     TEXT NOT NULL,   -- JSON list, as given
    metadata   TEXT NOT NULL    -- JSON object str -> str
);
CREATE INDEX IF NOT EXISTS cases_patient ON cases(patient_id);
CREATE INDEX IF NOT EXISTS cases_time ON cases(study_ts);
CREATE TABLE IF NOT EXISTS case_labels (
    label   TEXT NOT NULL,
    case_pk INTEGER NOT NULL,
    PRIMARY KEY (label, case_pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS case_labels_case ON case_labels(case_pk);
CREATE TABLE IF NOT EXISTS case_metadata (
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    case_pk INTEGER NOT NULL,
    PRIMARY KEY (key, value, case_pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS case_metadata_case ON case_metadata(case_pk);
CREATE TABLE IF NOT EXISTS vectors (
    vec_id        INTEGER PRIMARY KEY AUTOINCREMENT,
    case_pk       INTEGER NOT NULL,
    modality      TEXT NOT NULL,
    model_version TEXT NOT NULL,
    vector        BLOB NOT NULL,  -- float32 little-endian [dim]
    UNIQUE (case_pk, modality)
);
CREATE INDEX IF NOT EXISTS vectors_modality ON vectors(modality, model_version, vec_id);
-- covering index for filtered search: case -> its vector id without reading the blob pages
CREATE INDEX IF NOT EXISTS vectors_by_case ON vectors(case_pk, modality, model_version);
-- covering index for hydrating hits: vec_id -> case_pk. The table's own rows carry the 1 KB vector
-- blob (~3 rows per 4 KB page), so a lookup by vec_id reads one cold page per hit; this index packs
-- ~260 ids per page and stays in the page cache (3.1 MB per 200k vectors built in one pass).
-- Queries name it (INDEXED BY): the planner otherwise prefers the rowid.
CREATE INDEX IF NOT EXISTS vectors_case_of ON vectors(vec_id, case_pk);
CREATE TABLE IF NOT EXISTS raw_inputs (
    case_pk    INTEGER NOT NULL,
    modality   TEXT NOT NULL,
    media_type TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (case_pk, modality)
);
-- Every removed vector id, so a FAISS snapshot can be caught up instead of rebuilt.
-- Pruned up to the oldest sound snapshot's mark by CaseStore.snapshot().
CREATE TABLE IF NOT EXISTS vector_removals (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    vec_id   INTEGER NOT NULL,
    modality TEXT NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit `BEGIN IMMEDIATE` ... `COMMIT`)."""
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA cache_size=-65536")  # KiB: 64 MiB of page cache per connection
    return conn


def create_schema(conn: sqlite3.Connection, dim: int) -> None:
    """Create the tables if missing and pin the vector dimension; a store never changes dim."""
    conn.executescript(DDL)
    row = conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()
    if row is None:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('dim', ?)", (str(dim),))
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
        conn.execute("COMMIT")
        row = conn.execute("SELECT value FROM meta WHERE key='dim'").fetchone()
    if int(row[0]) != dim:
        raise StoreError(
            f"the store at {path_of(conn)} holds {row[0]}-d vectors but was opened with dim={dim}; "
            "open it with the model it was built for, or use a new --data-dir"
        )


def path_of(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2]


def next_id(conn: sqlite3.Connection, table: str) -> int:
    """The first never-used AUTOINCREMENT id of `table`; the caller holds the write transaction.

    Rows inserted with explicit ids advance sqlite_sequence, so ids stay unique forever."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name=?", (table,)).fetchone()
    return (row[0] if row else 0) + 1
