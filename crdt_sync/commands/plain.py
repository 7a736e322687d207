"""Plain-text helpers for the commands that print lines, not tables (serve, token, client).

The same convention as every command (`common.py`): one line on stderr (`error: ...`) and the
exit code the README's table gives the error, never a traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

from ..errors import CrdtSyncError
from ..schema import Schema
from .basics import ExitCode, exit_code
from .common import Output, load_schema_option

T = TypeVar("T")

_PLAIN = Output(as_json=False)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    _PLAIN.fail(message, code)


def run(work: Callable[[], Awaitable[T]]) -> T:
    """Run async library work; a CrdtSyncError becomes one line on stderr and its exit code.

    Ctrl-C is left to the caller (`client watch` ends quietly on it).
    """
    try:
        return asyncio.run(_awaited(work))
    except CrdtSyncError as exc:
        _PLAIN.fail(exc.message, exit_code(exc), error_code=exc.code)


async def _awaited(work: Callable[[], Awaitable[T]]) -> T:
    return await work()


def run_checked(work: Callable[[], T]) -> T:
    """`work()`, synchronous; a CrdtSyncError becomes one line on stderr and its exit code."""
    return _PLAIN.call(work)


def schema_from(path: Path | None) -> Schema:
    return load_schema_option(path, _PLAIN)
