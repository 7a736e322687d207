"""PostgreSQL and Redis for the tests: a fresh schema per test, and skips that fail under CI.

The machine's database `test` is shared by every session: each test gets a schema of its own
(`crdt_sync_<random>`), selected through the URL's `search_path`, and drops it when done.
Without a server a test skips saying why, except under `CI=true`, where it fails: CI starts
both services (.ci/run), so one missing there is a broken build, not a reason to skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import psycopg
import pytest

POSTGRES_URL = os.environ.get(
    "CRDT_SYNC_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("CRDT_SYNC_TEST_REDIS", "redis://127.0.0.1:6379/0")


def unavailable(what: str, why: object) -> None:
    """Skip the test for a missing service, or fail it in CI (where it must be there)."""
    message = f"{what} is not reachable ({why})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must start it (.ci/run)")
    pytest.skip(reason=f"{message}: start it (see .ci/run), or set CI=true to fail instead")


def in_schema(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(f'-csearch_path={schema}')}"


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL whose tables live in a new, empty schema; the schema is dropped afterwards."""
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {POSTGRES_URL}", str(exc).strip().splitlines()[0])
    schema = f"crdt_sync_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield in_schema(POSTGRES_URL, schema)
        finally:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")


def postgres(url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on its own connection, as another program would; its rows, if any."""
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(sql.encode(), params or None)
        return cursor.fetchall() if cursor.description else []
