"""Is this file a crdt-sync store? Checked read-only, before anything opens it (I/O layer).

Opening a store creates and initialises a missing or empty file, which is right for `serve`
and wrong for a command that only looks: a typo in `--db` must not leave an empty store behind.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import StoreError

SQLITE_HEADER = b"SQLite format 3\x00"


def require_store(path: Path) -> None:
    """Return if `path` is an existing crdt-sync store; change nothing either way.

    Raises:
        StoreError: nothing is there, or it is a directory, an empty file, not SQLite, or an
            SQLite database of something else. The message says which.
    """
    if not path.exists():
        raise StoreError(
            f"no store at {path} (nothing there; `crdt-sync serve --db {path}` makes one)"
        )
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a crdt-sync store")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it ({exc.strerror})") from exc
    if not header:
        raise StoreError(f"{path} is an empty file, not a crdt-sync store")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: not an SQLite database, so not a crdt-sync store")
    tables = _tables(path)
    if "schema_version" not in tables:
        found = f"it has {', '.join(sorted(tables)[:5])}" if tables else "it has no tables"
        raise StoreError(f"{path}: not a crdt-sync store (an SQLite database, but {found})")


def _tables(path: Path) -> set[str]:
    # mode=ro: never create, migrate or change the journal mode of a file we only look at.
    uri = f"{path.absolute().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True)
        try:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot read it as SQLite ({exc})") from exc
    return {name for (name,) in rows}
