"""Opening PostgreSQL connections and turning psycopg's errors into StoreError (I/O layer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg

from ...errors import StoreError


def first_line(exc: psycopg.Error) -> str:
    """libpq's message without its hints on further lines: errors are one line (STYLE 7)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def store_error(name: str, exc: psycopg.Error) -> StoreError:
    error = StoreError(f"{name}: {first_line(exc)}")
    error.__cause__ = exc
    return error


@asynccontextmanager
async def connection_errors(name: str) -> AsyncIterator[None]:
    """Every psycopg error raised in the block leaves it as a StoreError naming the store."""
    try:
        yield
    except psycopg.Error as exc:
        raise store_error(name, exc) from exc
