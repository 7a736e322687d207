"""Opening PostgreSQL connections and turning psycopg's errors into StoreError (I/O layer)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg

from ...errors import StoreError


def is_postgres_url(location: str) -> bool:
    return location.startswith(("postgresql://", "postgres://"))


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


def store_error(name: str, exc: psycopg.Error) -> StoreError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    error = StoreError(f"{name}: {detail}")
    error.__cause__ = exc
    return error


@asynccontextmanager
async def connection_errors(name: str) -> AsyncIterator[None]:
    """Every psycopg error raised in the block leaves it as a StoreError naming the store."""
    try:
        yield
    except psycopg.Error as exc:
        raise store_error(name, exc) from exc
