"""Which store a location names: an SQLite file, or a PostgreSQL URL (I/O layer).

PostgreSQL support is an extra (`crdt-sync[postgres]`): psycopg is imported only when a URL
asks for it, so the embedded default neither needs it nor pays for importing it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore


def is_postgres_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


def store_at(
    location: str | os.PathLike[str],
    *,
    synchronous: str = "FULL",
    lock_timeout: float = 15.0,
    idle_timeout: float = 5.0,
) -> SQLiteStore | PostgresStore:
    """The store for `location` (not yet entered): `postgresql://…` is PostgreSQL, else a file.

    `synchronous` is SQLite's; PostgreSQL's durability is the server's `synchronous_commit`.
    `lock_timeout` and `idle_timeout` (seconds) are PostgreSQL's (PostgresStore's
    `lock_timeout_ms` and `idle_timeout_ms`): how long a commit waits for the seq lock, and
    how long a node's transaction may idle before the server ends it and frees the lock.

    Raises:
        ConfigError: a PostgreSQL URL, but psycopg is not installed.
    """
    if isinstance(location, str) and is_postgres_url(location):
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise ConfigError(
                f"{redacted(location)}: a PostgreSQL store needs psycopg:"
                " pip install 'crdt-sync[postgres]'"
            ) from exc
        return PostgresStore(
            location,
            lock_timeout_ms=round(lock_timeout * 1000),
            idle_timeout_ms=round(idle_timeout * 1000),
        )
    return SQLiteStore(Path(location), synchronous=synchronous)


def redacted(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


def describe(location: str | os.PathLike[str]) -> str:
    """The location for messages: a file as is, a URL without its password."""
    return redacted(location) if isinstance(location, str) else str(location)
