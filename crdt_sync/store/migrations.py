"""The store's schema as an ordered list of migrations, and the check that a file is ours (I/O).

Rule: a migration is never edited once released; a change to the schema is a new entry at the
end of MIGRATIONS. `schema_version` holds one row, the version of the last migration applied.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from ..errors import StoreError
from .connection import write_transaction


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "update log, records, idempotency keys, tokens",
        (
            # The log: one row per update, seq is the global order. A compacted document keeps
            # one snapshot row at the seq of the last update it folded (is_snapshot = 1).
            """CREATE TABLE updates (
                seq INTEGER PRIMARY KEY,
                doc_id TEXT NOT NULL,
                collection TEXT NOT NULL,
                data BLOB NOT NULL,
                origin TEXT NOT NULL,
                at REAL NOT NULL,
                is_snapshot INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX updates_by_doc ON updates (doc_id, seq)",
            "CREATE INDEX updates_by_collection ON updates (collection, seq)",
            # One row per document: its JSON view and where it last changed, so that
            # "what changed since cursor C" is a range scan of records_by_last_seq.
            """CREATE TABLE records (
                doc_id TEXT PRIMARY KEY,
                collection TEXT NOT NULL,
                record_id TEXT NOT NULL,
                view TEXT NOT NULL,
                is_deleted INTEGER NOT NULL,
                first_seq INTEGER NOT NULL,
                last_seq INTEGER NOT NULL,
                created_by TEXT NOT NULL,
                updated_at REAL NOT NULL,
                size INTEGER NOT NULL
            )""",
            "CREATE INDEX records_by_last_seq ON records (last_seq)",
            "CREATE INDEX records_by_collection ON records (collection, last_seq)",
            """CREATE TABLE idempotency (
                key TEXT PRIMARY KEY,
                answer BLOB NOT NULL,
                at REAL NOT NULL
            )""",
            "CREATE INDEX idempotency_by_at ON idempotency (at)",
            """CREATE TABLE tokens (
                name TEXT PRIMARY KEY,
                role TEXT NOT NULL,
                token_hash TEXT NOT NULL UNIQUE,
                created_at REAL NOT NULL,
                revoked_at REAL
            )""",
        ),
    ),
    Migration(
        2,
        "drop updates_by_collection: it cost a quarter of every append",
        (
            # Filtering the log by collection walks the primary key from the cursor instead:
            # a catch-up reads every change since its cursor once, which it pages through anyway.
            "DROP INDEX IF EXISTS updates_by_collection",
        ),
    ),
    Migration(
        3,
        "chain each document's log rows (prev_seq) instead of indexing them by doc_id",
        (
            # See chains.py: the (doc_id, seq) index made every group commit write up to one
            # index page per document in it. The chain is built from that index, then it goes.
            "ALTER TABLE updates ADD COLUMN prev_seq INTEGER",
            """UPDATE updates SET prev_seq = (
                SELECT MAX(earlier.seq) FROM updates AS earlier
                WHERE earlier.doc_id = updates.doc_id AND earlier.seq < updates.seq
            )""",
            "DROP INDEX updates_by_doc",
        ),
    ),
    Migration(
        4,
        "drop records_by_last_seq: records_by_collection serves every changes_since",
        (
            # Every append moved the record in both indexes on last_seq. A pull over all
            # collections now merges one range of records_by_collection per collection.
            "DROP INDEX IF EXISTS records_by_last_seq",
        ),
    ),
    Migration(
        5,
        "tokens.last_used_at; store_meta, holding the schema the store is served with",
        (
            # Written at most once a minute per token (auth.authenticate), not per request.
            "ALTER TABLE tokens ADD COLUMN last_used_at REAL",
            # key 'schema': the canonical JSON of the schema (schema.schema_to_json) that
            # `serve` runs with; every command reads it, and another one needs a migration.
            "CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        ),
    ),
    Migration(
        6,
        "updates.door and updates.token: how a write came in, and with which token",
        (
            # A record's history says who made each change and how (ids.Origin); rows from
            # before keep '' (not known).
            "ALTER TABLE updates ADD COLUMN door TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE updates ADD COLUMN token TEXT NOT NULL DEFAULT ''",
        ),
    ),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def prepare(db: sqlite3.Connection, path: str) -> int:
    """Check that `db` is a crdt-sync store (or empty), switch it to WAL, migrate it.

    Runs on the connection's thread. Returns the schema version now in the file.

    Raises:
        StoreError: the file is an SQLite database of something else, or has a newer schema.
        sqlite3.Error: the file is not SQLite at all, or cannot be read or written.
    """
    version = _identify(db, path)  # before WAL: never change the journal mode of a foreign file
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise StoreError(f"{path}: cannot use write-ahead logging (journal mode is {mode!r})")
    if version == SCHEMA_VERSION:
        return version
    with write_transaction(db):
        version = _identify(db, path)  # again, under the write lock: another process may race
        for migration in MIGRATIONS:
            if migration.version > version:
                _apply(db, migration)
                version = migration.version
    return version


def _identify(db: sqlite3.Connection, path: str) -> int:
    """The schema version of the file: 0 for an empty database; refuse what is not ours."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "schema_version" not in tables:
        raise StoreError(
            f"{path}: not a crdt-sync store (an SQLite database without a schema_version table,"
            f" it has {', '.join(sorted(tables)[:5])})"
        )
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    version = int(row[0] or 0)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: the store has schema version {version}, newer than version"
            f" {SCHEMA_VERSION} that this crdt-sync knows; upgrade crdt-sync to open it"
        )
    return version


def _apply(db: sqlite3.Connection, migration: Migration) -> None:
    if migration.version == 1:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version (version) VALUES (0)")
    for statement in migration.statements:
        db.execute(statement)
    db.execute("UPDATE schema_version SET version = ?", (migration.version,))
