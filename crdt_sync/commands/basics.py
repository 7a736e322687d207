"""What the commands share that needs no typer: exit codes, the error table, the store chosen.

`serve` starts without importing typer (commands/serving.py), so what it shares with the
other commands lives here; common.py gives it to them with the rest.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path

from ..errors import (
    AddressUnavailable,
    ArchiveError,
    AuthError,
    ConfigError,
    ConnectionFailed,
    CrdtSyncError,
    NameTaken,
    RecordExists,
    RecordNotFound,
    SchemaMismatch,
    SchemaViolation,
    StoreInUse,
    UnknownCollection,
)


class ExitCode(IntEnum):
    """What a script can tell from `$?`; the README's table lists them, in these words."""

    OK = 0
    FAILURE = 1  # anything else: disk trouble, a commit that failed
    USAGE = 2  # bad arguments, a bad document id, an unknown collection (click's code too)
    NOT_FOUND = 3  # no such record, or no such point in its history
    NO_STORE = 4  # the file is missing, not a crdt-sync store, or from a newer crdt-sync
    BAD_ARCHIVE = 5  # not a crdt-sync archive, or a damaged one; nothing was imported
    REFUSED = 6  # the import finished, but the schema refused some documents
    DAMAGED = 7  # check found problems in the store
    CANNOT_LISTEN = 8  # serve: the port is taken or privileged, or the host is not this machine's
    STORE_IN_USE = 9  # serve: another server already serves this store
    UNREACHABLE = 10  # client: the server could not be reached, or the link dropped (retry)
    TOKEN_REFUSED = 11  # client: the server refused the token (unknown, revoked, wrong role)
    SCHEMA_MISMATCH = 12  # not the store's schema (serve: --migrate-schema), or records break it


class StoreUnavailable(CrdtSyncError):
    """The store could not be opened: it is not there, or not a crdt-sync store."""

    code = "no_store"


class BadArgument(CrdtSyncError):
    """An argument the library refused as the caller's mistake (a token's role or name)."""

    code = "bad_argument"


# The one table from errors to exit codes, for every command. Most specific first.
EXIT_CODES: tuple[tuple[type[CrdtSyncError], ExitCode], ...] = (
    (StoreInUse, ExitCode.STORE_IN_USE),
    (StoreUnavailable, ExitCode.NO_STORE),
    (RecordNotFound, ExitCode.NOT_FOUND),
    (SchemaViolation, ExitCode.USAGE),
    (UnknownCollection, ExitCode.USAGE),
    (RecordExists, ExitCode.USAGE),
    (SchemaMismatch, ExitCode.SCHEMA_MISMATCH),
    (ConfigError, ExitCode.USAGE),
    (BadArgument, ExitCode.USAGE),
    (NameTaken, ExitCode.USAGE),
    (ArchiveError, ExitCode.BAD_ARCHIVE),
    (AddressUnavailable, ExitCode.CANNOT_LISTEN),
    (ConnectionFailed, ExitCode.UNREACHABLE),
    (AuthError, ExitCode.TOKEN_REFUSED),
)

DEFAULT_DB = Path("crdt-sync.db")


def exit_code(error: CrdtSyncError) -> ExitCode:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return ExitCode.FAILURE


class _Chosen:
    """The `--store` given before the command (`crdt-sync --store URL status`), set by the
    app's callback: Typer runs commands without a current click context to ask."""

    url: str | None = None


def choose_store(url: str | None) -> None:
    _Chosen.url = url


def chosen_store(db: Path, given: str | None = None) -> str | None:
    """The PostgreSQL URL given to the command (`given`), or as `crdt-sync --store URL ...`
    (or CRDT_SYNC_STORE), if any; `db` is the command's --db.

    Raises:
        ConfigError: it is not a postgresql:// URL, or the command was also given a --db.
    """
    from ..store.opening import is_postgres_url

    url = given if given is not None else _Chosen.url
    if url is None:
        return None
    if not is_postgres_url(url):
        raise ConfigError(f"--store must be a postgresql:// URL, got {url!r}")
    if db != DEFAULT_DB:
        raise ConfigError("give --db (an SQLite file) or --store (PostgreSQL), not both")
    return url
