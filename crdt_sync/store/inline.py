"""Small reads on the event loop's own thread, each within a time budget (SQLite store).

A join reads two small things: the token, and the record's log rows. On the reading
connection's thread each read cost ~115 us of CPU (the hand-off: a future, a queue, a thread
woken, the interpreter passed back and forth, the loop woken through its self-pipe) for ~8 us
of SQLite work (benchmarks/README.md, live_bench (c)). Here the same read runs where it is
asked for, on a connection of its own, and gives up rather than hold the loop:

- SQLite calls a progress handler every PROGRESS_STEPS virtual-machine steps; once the read
  has run longer than BUDGET it returns nonzero, SQLite interrupts the statement, and `run`
  answers INTERRUPTED: the caller reads again on the reading thread (a record with a long
  chain of rows, a cold page cache);
- busy_timeout is 0: a read that would wait for a lock (a WAL recovery, a checkpoint's
  restart) is INTERRUPTED at once instead of waiting on the loop.

Each statement is its own read transaction, so what it sees is every commit that ended before
it began: what the reading thread would see.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .connection import store_error

T = TypeVar("T")

BUDGET = 0.001  # seconds one read may hold the event loop
PROGRESS_STEPS = 1000  # SQLite virtual-machine steps between looks at the clock


class Interrupted(enum.Enum):
    """`run`'s answer for a read it gave up: read again on the reading thread."""

    INTERRUPTED = "interrupted"


class InlineReads:
    """A read-only connection used on the event loop's thread, within `budget` a read."""

    def __init__(self, path: Path, *, budget: float = BUDGET) -> None:
        self.path = path
        self.budget = budget
        self.answered = 0  # reads answered here
        self.interrupted = 0  # reads given back to the reading thread
        self._deadline = 0.0
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        try:
            # Opened on the loop's thread and used only while that loop runs it.
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA busy_timeout = 0")
            db.execute("PRAGMA query_only = ON")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc
        db.set_progress_handler(self._over_budget, PROGRESS_STEPS)
        self._db = db

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def run(self, function: Callable[..., T], *args: object) -> T | Interrupted:
        """`function(connection, *args)` now, or INTERRUPTED if it ran past the budget, had
        to wait for a lock, or the connection is closed.

        Raises:
            StoreError: SQLite failed otherwise (a damaged file, say).
        """
        db = self._db
        if db is None:
            return Interrupted.INTERRUPTED
        self._deadline = time.perf_counter() + self.budget
        try:
            result = function(db, *args)
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorname in ("SQLITE_INTERRUPT", "SQLITE_BUSY", "SQLITE_LOCKED"):
                self.interrupted += 1
                return Interrupted.INTERRUPTED
            raise store_error(self.path, exc) from exc
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc
        self.answered += 1
        return result

    def _over_budget(self) -> int:
        return 1 if time.perf_counter() > self._deadline else 0
