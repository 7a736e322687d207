"""The layout of a replica file, as ordered migrations, and the check that a file is one (I/O).

Rule: a migration is never edited once released; a change is a new entry at the end. This is
the replica's own versioning (`replica_version`), independent of the server store's
`schema_version`: a replica file and a server store are different things and refuse each other.
"""

from __future__ import annotations

import secrets
import sqlite3

from ..errors import StoreError
from ..store.connection import write_transaction

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # One row per record document: its merged state and its flat JSON view.
        """CREATE TABLE documents (
            doc_id TEXT PRIMARY KEY,
            collection TEXT NOT NULL,
            record_id TEXT NOT NULL,
            state BLOB NOT NULL,
            view TEXT NOT NULL,
            is_deleted INTEGER NOT NULL,
            updated_at REAL NOT NULL
        )""",
        "CREATE INDEX documents_by_collection ON documents (collection, record_id)",
        # The offline queue. AUTOINCREMENT: a cseq is never reused, even after a dequeue, so a
        # write resent after a reconnect keeps the number the server may have seen.
        """CREATE TABLE queue (
            cseq INTEGER PRIMARY KEY AUTOINCREMENT,
            doc_id TEXT NOT NULL,
            data BLOB NOT NULL,
            intent TEXT NOT NULL,
            status TEXT NOT NULL,
            code TEXT,
            reason TEXT,
            created_at REAL NOT NULL,
            settled_at REAL
        )""",
        "CREATE INDEX queue_by_doc ON queue (doc_id, status, cseq)",
        "CREATE INDEX queue_by_status ON queue (status, cseq)",
        # replica_id (the hello's client name), cursor, last_sync_at.
        "CREATE TABLE replica_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ),
)

REPLICA_VERSION = len(MIGRATIONS)


def prepare(db: sqlite3.Connection, path: str) -> int:
    """Check that `db` is a replica file (or empty), switch it to WAL, migrate it.

    Raises:
        StoreError: another kind of SQLite file (a server store included), or a newer layout.
    """
    version = _identify(db, path)
    (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode != "wal":
        raise StoreError(f"{path}: cannot use write-ahead logging (journal mode is {mode!r})")
    if version == REPLICA_VERSION:
        return version
    with write_transaction(db):
        version = _identify(db, path)  # again under the write lock: another process may race
        if version == 0:
            db.execute("CREATE TABLE replica_version (version INTEGER NOT NULL)")
            db.execute("INSERT INTO replica_version (version) VALUES (0)")
        for number, statements in enumerate(MIGRATIONS, start=1):
            if number > version:
                for statement in statements:
                    db.execute(statement)
        if version == 0:
            db.execute(
                "INSERT INTO replica_meta (key, value) VALUES ('replica_id', ?)",
                (f"replica-{secrets.token_hex(8)}",),
            )
        db.execute("UPDATE replica_version SET version = ?", (REPLICA_VERSION,))
    return REPLICA_VERSION


def _identify(db: sqlite3.Connection, path: str) -> int:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return 0
    if "replica_version" not in tables:
        what = "a crdt-sync server store" if "schema_version" in tables else "an SQLite database"
        raise StoreError(
            f"{path}: not a crdt-sync replica ({what}, tables {', '.join(sorted(tables)[:5])})"
        )
    (version,) = db.execute("SELECT MAX(version) FROM replica_version").fetchone()
    if int(version or 0) > REPLICA_VERSION:
        raise StoreError(
            f"{path}: the replica file has layout version {version}, newer than version "
            f"{REPLICA_VERSION} that this crdt-sync knows; upgrade crdt-sync to open it"
        )
    return int(version or 0)
