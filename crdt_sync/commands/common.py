"""What every command shares: options, exit codes, opening the store, one-line errors, output.

Rule: a command prints its result on stdout (a table for people, JSON with `--json`) and
everything else on stderr: progress bars, notes, and errors, which are one line each
(`error: ...`, or `{"error": {"code", "message"}}` with `--json`) and never a traceback.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from ..errors import CrdtSyncError, StoreError
from ..schema import DEFAULT_SCHEMA, Schema, load_schema
from .basics import (
    ExitCode,
    StoreUnavailable,
    chosen_store,
    exit_code,
)

if TYPE_CHECKING:
    from rich.console import Console

    from ..store import SQLiteStore
    from ..store.postgres import PostgresStore

T = TypeVar("T")


DbOption = Annotated[
    Path, typer.Option("--db", envvar="CRDT_SYNC_DB", help="The store's SQLite file.")
]
StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="CRDT_SYNC_STORE",
        help="A PostgreSQL store, postgresql://user@host:port/database (instead of --db).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
SchemaOption = Annotated[
    Path | None,
    typer.Option("--schema", help="The schema file the server runs with (TOML or JSON)."),
]


PIPED_WIDTH = 1_000


class Output:
    """Where a command's words go: stdout for results, stderr for the rest."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    # Made when first used: `serve` starts without importing rich (server/front.py).
    @functools.cached_property
    def out(self) -> Console:
        from rich.console import Console

        out = Console(highlight=False)
        if not out.is_terminal:
            # Piped or redirected: no screen to fit, so a table takes its natural width rather
            # than rich's default 80 columns, which cut ids and titles short ("Ada Lov...").
            out = Console(highlight=False, width=PIPED_WIDTH)
        return out

    @functools.cached_property
    def err(self) -> Console:
        from rich.console import Console

        return Console(stderr=True, highlight=False)

    def json(self, value: object) -> None:
        sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")

    def say(self, message: str) -> None:
        """A result in one sentence, on stdout; never wrapped, so scripts can grep it."""
        self.out.print(message, soft_wrap=True)

    def note(self, message: str) -> None:
        if not self.as_json:
            self.err.print(message, soft_wrap=True)

    def fail(self, message: str, code: ExitCode, *, error_code: str = "error") -> NoReturn:
        if self.as_json:
            error = {"error": {"code": error_code, "message": message}}
            sys.stderr.write(json.dumps(error, ensure_ascii=False) + "\n")
        else:
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        raise typer.Exit(int(code))

    def run(self, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run async library work; a CrdtSyncError becomes one line on stderr and its exit code."""
        try:
            return asyncio.run(work())
        except CrdtSyncError as exc:
            self.fail(exc.message, exit_code(exc), error_code=exc.code)
        except KeyboardInterrupt:
            self.fail("interrupted", ExitCode.FAILURE, error_code="interrupted")

    def call(self, work: Callable[[], T]) -> T:
        """`work()`, synchronous; a CrdtSyncError becomes one line on stderr and its exit code."""
        try:
            return work()
        except CrdtSyncError as exc:
            self.fail(exc.message, exit_code(exc), error_code=exc.code)

    @contextmanager
    def progress(
        self, description: str, *, unit_bytes: bool = False
    ) -> Iterator[Callable[[int, int], None]]:
        """A progress bar on a terminal's stderr (not with --json); yields `update(done, total)`."""
        from rich.progress import (  # only export and import draw one
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TaskProgressColumn() if unit_bytes else MofNCompleteColumn(),
            TimeRemainingColumn(),
        ]
        disabled = self.as_json or not self.err.is_terminal
        with Progress(*columns, console=self.err, disable=disabled, transient=False) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            yield update


@asynccontextmanager
async def open_store(
    db: Path, *, must_exist: bool = True
) -> AsyncIterator[SQLiteStore | PostgresStore]:
    """The store at `db`, or the PostgreSQL store chosen with `--store`; with `must_exist`, a
    missing or foreign file is refused untouched.

    Raises:
        StoreUnavailable: missing, not a crdt-sync store, a newer schema, or unreachable.
    """
    # Here, not at the top: every command module imports this one at CLI start-up.
    from ..store.files import require_store
    from ..store.opening import store_at

    url = chosen_store(db)
    try:
        if url is None and must_exist:
            require_store(db)
        store = store_at(url if url is not None else db)
        await store.__aenter__()
    except StoreError as exc:
        raise StoreUnavailable(exc.message) from exc
    try:
        yield store
    finally:
        await store.close()


def load_schema_option(path: Path | None, output: Output) -> Schema:
    if path is None:
        return DEFAULT_SCHEMA
    try:
        return load_schema(path)
    except CrdtSyncError as exc:
        output.fail(exc.message, ExitCode.USAGE, error_code=exc.code)


def iso_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def local_time(at: float) -> str:
    return datetime.fromtimestamp(at).astimezone().strftime("%Y-%m-%d %H:%M:%S")
