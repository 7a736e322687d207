"""A consistent copy of a live store: SQLite's online backup API, then a check of the copy (I/O).

Rule: the copy is the store as of one read transaction, opened before the first page is copied
and held to the last, so it holds every write committed before the backup began and nothing
half-done. Copying in steps (with progress) inside that transaction is safe: the backup reads
the snapshot, not the file as it changes, so writers (this process's or another's) neither
restart it nor wait for it. What a held read transaction costs is checkpoints: the WAL cannot
be folded back past it, so it grows while a backup runs.

The copy is written beside DEST under a temporary name, opened and checked (`checks.check`:
SQLite's quick_check, every log row in its record's chain), synced, and only then renamed to
DEST: DEST appears whole and checked, or not at all.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..ids import Seq
from . import checks
from .reads import cursor

STEP_PAGES = 1024  # 4 MiB of 4 KiB pages between progress reports
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    cursor: Seq  # the last seq the copy holds: every write acked before the backup began
    pages: int
    steps: int  # how many steps of `step_pages` the copy took (writers went on between them)
    bytes: int
    check: checks.CheckReport


class BackupDamaged(StoreError):
    """The copy was made but did not pass the store check; it was removed."""

    code = "backup_damaged"

    def __init__(self, message: str, report: checks.CheckReport) -> None:
        super().__init__(message)
        self.report = report


def partial_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PARTIAL_SUFFIX)


def check_destination(source: Path, dest: Path, *, replace: bool) -> None:
    """Refuse a DEST the backup may not write, before anything is read or written.

    Raises:
        StoreError: DEST is the store itself, a directory, exists (without `replace`), or its
            directory does not exist.
    """
    if dest.is_dir():
        raise StoreError(f"{dest} is a directory; name the backup file, as in {dest}/crm.db")
    if not dest.parent.is_dir():
        raise StoreError(f"{dest.parent} does not exist; create it first")
    if dest.exists() and source.exists() and os.path.samefile(source, dest):
        raise StoreError(f"{dest} is the store itself; back it up to another file")
    if dest.exists() and not replace:
        raise StoreError(f"{dest} exists; pass --force to replace it")


# What follows runs on a connection's thread.


def copy_and_check(
    source: sqlite3.Connection,
    dest: Path,
    progress: Callable[[int, int], None] | None,
    step_pages: int = STEP_PAGES,
) -> BackupReport:
    """Copy the store `source` is connected to into `dest`, check the copy, then name it `dest`.

    Raises:
        BackupDamaged: the copy failed the store check (it was removed; DEST is untouched).
        sqlite3.Error: reading the store or writing the copy failed (nothing left behind).
    """
    partial = partial_path(dest)
    _remove(partial)  # left by a backup that was killed: never part of any store
    try:
        snapshot_cursor, pages, steps = _copy(source, partial, progress, step_pages)
        report = _check(partial)
        if not report.is_ok:
            raise BackupDamaged(
                f"the copy at {partial} failed the store check ({_problems(report)}); removed it,"
                f" {dest} is untouched; run `crdt-sync check` on the store itself",
                report,
            )
        size = partial.stat().st_size
        _sync(partial)
        os.replace(partial, dest)
        _sync(dest.parent)
    except BaseException:
        _remove(partial)
        raise
    return BackupReport(dest, snapshot_cursor, pages, steps, size, report)


def _copy(
    source: sqlite3.Connection,
    partial: Path,
    progress: Callable[[int, int], None] | None,
    step_pages: int,
) -> tuple[Seq, int, int]:
    pages = steps = 0

    def step(status: int, remaining: int, total: int) -> None:
        nonlocal pages, steps
        pages, steps = total, steps + 1
        if progress is not None:
            progress(total - remaining, total)

    source.execute("BEGIN")  # one read transaction: the snapshot the whole copy is taken from
    try:
        snapshot_cursor = cursor(source)  # the first read fixes the snapshot
        target = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(target, pages=step_pages, progress=step)
            # The copy is a WAL file like its source: fold its WAL in, so the file alone is it.
            target.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            target.close()
    finally:
        source.execute("COMMIT")
    return snapshot_cursor, pages, steps


def _check(path: Path) -> checks.CheckReport:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA query_only = ON")
        return checks.check(db)
    finally:
        db.close()


def _problems(report: checks.CheckReport) -> str:
    counts = {
        "sqlite": len(report.sqlite),
        "broken links": report.broken_links.count,
        "bad heads": report.bad_heads.count,
        "forks": report.forks.count,
        "orphans": report.orphans.count,
    }
    return ", ".join(f"{name}: {count}" for name, count in counts.items() if count)


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
