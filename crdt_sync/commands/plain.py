"""Plain-text helpers for the commands that print lines, not tables (serve, token, client).

Errors are one line on stderr (`error: ...`) and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import typer

from ..errors import CrdtSyncError
from ..schema import DEFAULT_SCHEMA, Schema, load_schema

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run async library work; a CrdtSyncError becomes one line on stderr and exit 1."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except CrdtSyncError as exc:
        fail(exc.message)


def schema_from(path: Path | None) -> Schema:
    if path is None:
        return DEFAULT_SCHEMA
    try:
        return load_schema(path)
    except CrdtSyncError as exc:
        fail(exc.message)
