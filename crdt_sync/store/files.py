"""Is this file a crdt-sync store? Checked read-only, before anything opens it (I/O layer).

Opening a store creates and initialises a missing or empty file, which is right for `serve`
and wrong for a command that only looks: a typo in `--db` must not leave an empty store behind.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import StoreError, StoreInUse

SQLITE_HEADER = b"SQLite format 3\x00"


def require_store(path: Path) -> None:
    """Return if `path` is an existing crdt-sync store; change nothing either way.

    Raises:
        StoreError: nothing is there, or it is a directory, an empty file, not SQLite, or an
            SQLite database of something else (a client replica, say). The message says which.
    """
    hint = f"`crdt-sync serve --db {path}` makes one"
    tables = _sqlite_tables(path, "store", "crdt-sync store", hint)
    if "schema_version" in tables:
        return
    if "replica_version" in tables:
        raise StoreError(
            f"{path} is a crdt-sync client replica, not a server store"
            f" (`crdt-sync client status --db {path}` reads it)"
        )
    found = f"it has {', '.join(sorted(tables)[:5])}" if tables else "it has no tables"
    raise StoreError(f"{path}: not a crdt-sync store (an SQLite database, but {found})")


def require_replica(path: Path) -> None:
    """Return if `path` is an existing client replica file; change nothing either way.

    Raises:
        StoreError: as `require_store`, for a replica; a server store is named as one.
    """
    hint = f"`crdt-sync client add|sync --db {path}` makes one"
    tables = _sqlite_tables(path, "replica", "crdt-sync replica", hint)
    if "replica_version" in tables:
        return
    if "schema_version" in tables:
        raise StoreError(
            f"{path} is a crdt-sync server store, not a client replica"
            f" (`crdt-sync status --db {path}` reads it)"
        )
    found = f"it has {', '.join(sorted(tables)[:5])}" if tables else "it has no tables"
    raise StoreError(f"{path}: not a crdt-sync replica (an SQLite database, but {found})")


def _sqlite_tables(path: Path, short: str, what: str, hint: str) -> set[str]:
    if not path.exists():
        if not path.parent.is_dir():
            raise StoreError(f"no {short} at {path} (there is no folder {path.parent})")
        raise StoreError(f"no {short} at {path} (nothing there; {hint})")
    if path.is_dir():
        raise StoreError(f"{path} is a directory, not a {what}")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"{path}: cannot read it ({exc.strerror})") from exc
    if not header:
        raise StoreError(f"{path} is an empty file, not a {what}")
    if header != SQLITE_HEADER:
        raise StoreError(f"{path}: not an SQLite database, so not a {what}")
    return _tables(path)


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


@contextmanager
def hold_for_serving(path: Path) -> Iterator[None]:
    """Keep every other server off the store at `path` while the block runs.

    Two servers on one file would each fan out only their own writes, so peers of one would
    never hear of the other's until a reconnect. The lock is `flock` on the store file itself:
    the kernel drops it when the process dies, however it dies, and it leaves no file behind.
    It is independent of SQLite's own (fcntl) locks, so readers, `import` and `compact` from
    other processes are not affected. The descriptor stays open until the block ends, after the
    server closed its SQLite connections (closing an extra descriptor of a file SQLite has open
    would drop SQLite's locks on it).

    Raises:
        StoreInUse: another process holds it.
        StoreError: the file cannot be opened (a missing folder, no permission).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StoreError(_cannot_open(path, exc)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreInUse(
                f"{path} is already being served by another crdt-sync server;"
                " stop it first, or serve another --db"
            ) from None
        yield
    finally:
        os.close(fd)


def _cannot_open(path: Path, exc: OSError) -> str:
    if not path.parent.is_dir():
        return f"{path}: there is no folder {path.parent}; create it first"
    return f"{path}: cannot open it ({exc.strerror})"
