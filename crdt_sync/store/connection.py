"""The store's one door to aiosqlite: open a connection, run a function on its thread (I/O layer).

Every sqlite3 error that leaves this module is a StoreError naming the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, cast

import aiosqlite

from ..errors import StoreError

P = ParamSpec("P")
T = TypeVar("T")


def store_error(path: Path, exc: sqlite3.Error) -> StoreError:
    """A StoreError for `exc`, with a message for people: what file, what went wrong."""
    if getattr(exc, "sqlite_errorname", "") == "SQLITE_NOTADB":
        error = StoreError(f"{path}: not an SQLite database, so not a crdt-sync store ({exc})")
    elif getattr(exc, "sqlite_errorname", "") == "SQLITE_CANTOPEN" and not path.parent.is_dir():
        error = StoreError(f"{path}: there is no folder {path.parent}; create it first")
    else:
        error = StoreError(f"{path}: {exc}")
    error.__cause__ = exc
    return error


class Connection:
    """One SQLite connection and the aiosqlite thread that owns it.

    Use as an async context manager; `run()` does a whole unit of work in one thread hop.
    """

    def __init__(self, path: Path, *, busy_timeout_ms: int, synchronous: str) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._synchronous = synchronous
        self._connection: aiosqlite.Connection | None = None

    async def __aenter__(self) -> Self:
        # isolation_level=None: no implicit transactions, every BEGIN is ours.
        connection = aiosqlite.connect(self.path, isolation_level=None)
        try:
            self._connection = await connection
        except sqlite3.Error as exc:
            # aiosqlite stops its thread without waiting: its last callback would hit a closed
            # event loop (a thread traceback after our one-line error) if the loop ended first.
            await asyncio.to_thread(connection._thread.join, 5.0)
            raise store_error(self.path, exc) from exc
        try:
            await self.run(_configure, self._busy_timeout_ms, self._synchronous)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except sqlite3.Error as exc:
                raise store_error(self.path, exc) from exc

    async def run(
        self,
        function: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """`function(sqlite3_connection, *args)` on the connection's thread; sqlite errors mapped.

        aiosqlite's public calls cost one thread hop per statement; its `_execute` (there since
        0.17) runs any function on the connection's thread, so a whole transaction is one hop.

        Raises:
            StoreError: the store is closed, or SQLite failed (the sqlite3 error is the cause).
        """
        connection = self._connection
        if connection is None:
            raise StoreError(f"{self.path}: the store is closed")
        execute = cast(Callable[..., Any], connection._execute)
        try:
            return cast(T, await execute(function, connection._conn, *args, **kwargs))
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc


def _configure(db: sqlite3.Connection, busy_timeout_ms: int, synchronous: str) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    db.execute(f"PRAGMA synchronous = {synchronous}")  # checked against SYNCHRONOUS by the store


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """`BEGIN IMMEDIATE` ... `COMMIT`, rolled back if the block raises (on the connection's thread).

    IMMEDIATE takes the write lock at the start, so what the block reads (the last seq, the
    schema version) cannot change under it, whichever process writes the file.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
