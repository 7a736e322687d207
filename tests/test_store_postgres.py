"""The PostgreSQL store's own rules: seqs become visible as a prefix, whatever commits first.

The rest of its behaviour is the Store's, tested on both backends in test_store.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import StoreError
from crdt_sync.ids import DocId, Origin
from crdt_sync.store.postgres import PostgresStore, redacted
from crdt_sync.store.postgres.schema import SCHEMA_VERSION

from .services import postgres, postgres_schema

# Every row inserted into a table with this trigger waits, inside its transaction, for the
# seconds its origin names ("delay-0.013"): a commit that is slow after taking its seq.
DELAY_TRIGGER = """
    CREATE FUNCTION delay_commit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.origin LIKE 'delay-%' THEN
            PERFORM pg_sleep(substr(NEW.origin, 7)::float);
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER delay_commit BEFORE INSERT ON {table}
        FOR EACH ROW EXECUTE FUNCTION delay_commit();
"""
# What a naive store does: a BIGSERIAL column, its value taken when the row is inserted.
NAIVE_LOG = "CREATE TABLE naive_log (seq bigserial PRIMARY KEY, origin text NOT NULL)"

Write = Callable[[float], Awaitable[None]]


@pytest.fixture
def url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


def empty_update() -> bytes:
    return b"\x00\x00"


async def tail_while_writing(url: str, table: str, writes: list[Awaitable[None]]) -> set[int]:
    """Run `writes` at once while a reader tails `table` by `seq > cursor`, as every cursor
    of crdt-sync does; returns the seqs it skipped (committed, but below a cursor it passed)."""
    seen: set[int] = set()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
        cursor = 0

        async def read() -> None:
            nonlocal cursor
            rows = await (
                await db.execute(f"SELECT seq FROM {table} WHERE seq > %s ORDER BY seq", (cursor,))
            ).fetchall()
            seen.update(seq for (seq,) in rows)
            if rows:
                cursor = rows[-1][0]

        writing = asyncio.gather(*writes)
        while not writing.done():
            await read()
            await asyncio.sleep(0.001)
        await writing
        await read()
        every = {seq for (seq,) in await (await db.execute(f"SELECT seq FROM {table}")).fetchall()}
    return every - seen


async def store_writes(url: str, nodes: int, delays: list[list[float]]) -> set[int]:
    """`nodes` stores on one schema, each appending with the given delays before commit."""
    stores = [PostgresStore(url, readers=1) for _ in range(nodes)]
    try:
        for store in stores:
            await store.__aenter__()
        postgres(url, DELAY_TRIGGER.format(table="updates"))
        writes = [
            stores[node % nodes].append(
                DocId(f"contacts/{node}-{n}"),
                empty_update(),
                view={},
                is_deleted=False,
                origin=Origin(f"delay-{delay:.4f}"),
            )
            for node, node_delays in enumerate(delays)
            for n, delay in enumerate(node_delays)
        ]
        return await tail_while_writing(url, "updates", writes)
    finally:
        for store in stores:
            await store.close()


async def naive_writes(url: str, slow: float, fast: int) -> set[int]:
    """One slow write takes the first seq; `fast` others take later seqs and commit first."""
    postgres(url, NAIVE_LOG)
    postgres(url, DELAY_TRIGGER.format(table="naive_log"))

    async def write(delay: float) -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            await db.execute("INSERT INTO naive_log (origin) VALUES (%s)", (f"delay-{delay:.4f}",))

    async def schedule() -> None:
        first = asyncio.create_task(write(slow))
        # The column default (nextval) is taken before the BEFORE INSERT trigger sleeps.
        while postgres(url, "SELECT is_called FROM naive_log_seq_seq") != [(True,)]:
            await asyncio.sleep(0.005)
        await asyncio.gather(first, *(write(0.0) for _ in range(fast)))

    return await tail_while_writing(url, "naive_log", [schedule()])


delays_per_node = st.lists(
    st.lists(st.floats(0.0, 0.03), min_size=1, max_size=6), min_size=2, max_size=3
)


@settings(max_examples=12, deadline=None)
@given(delays_per_node)
def test_a_tailer_only_ever_sees_a_prefix_of_the_log_whatever_the_commit_delays(
    delays: list[list[float]],
) -> None:
    """Several nodes commit with random delays after taking their seqs; a reader of
    `seq > cursor` never passes a row that commits later with a smaller seq."""
    with postgres_schema() as url:
        skipped = asyncio.run(store_writes(url, len(delays), delays))
    assert skipped == set()


def test_the_same_tailer_skips_rows_of_a_plain_bigserial_log(url: str) -> None:
    """What the seq lock prevents: seq 1 is taken first but commits last, and the reader,
    having seen 2, never reads 1."""
    skipped = asyncio.run(naive_writes(url, slow=0.5, fast=2))
    assert skipped == {1}


def test_the_seq_lock_makes_a_later_seq_wait_for_the_slow_commit_before_it(url: str) -> None:
    """The same schedule on the store: the first commit is slow, the others wait for it."""
    skipped = asyncio.run(store_writes(url, 3, [[0.4], [0.0], [0.0]]))
    assert skipped == set()


async def test_an_unreachable_database_is_a_store_error_without_the_password() -> None:
    url = "postgresql://crdt:s3cret@127.0.0.1:1/nowhere"
    with pytest.raises(StoreError, match=r"^postgresql://crdt:\*\*\*@127.0.0.1:1/nowhere: ") as e:
        async with PostgresStore(url):
            pass
    assert "s3cret" not in e.value.message
    assert redacted(url) == "postgresql://crdt:***@127.0.0.1:1/nowhere"


async def test_a_schema_of_another_program_is_refused_and_left_unchanged(url: str) -> None:
    postgres(url, "CREATE TABLE invoices (id integer PRIMARY KEY)")
    with pytest.raises(StoreError, match="not a crdt-sync store.*invoices"):
        async with PostgresStore(url):
            pass
    tables = postgres(
        url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    assert tables == [("invoices",)]


async def test_nodes_starting_together_create_the_schema_once(url: str) -> None:
    stores = [PostgresStore(url, readers=1) for _ in range(3)]
    await asyncio.gather(*(store.__aenter__() for store in stores))
    try:
        assert {store.schema_version for store in stores} == {SCHEMA_VERSION}
        assert postgres(url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
        assert len({store.identity for store in stores}) == 1
    finally:
        for store in stores:
            await store.close()


async def test_a_retried_push_on_another_node_waits_for_the_first_and_is_refused(url: str) -> None:
    """An idempotency key is unique across nodes: the second try waits, then finds it used."""
    from crdt_sync.store import Append

    async with PostgresStore(url) as one, PostgresStore(url) as two:
        batch = [Append(DocId("contacts/1"), empty_update(), {}, False, Origin("phone"))]
        results = await asyncio.gather(
            one.append_many(batch, idempotency_key="k", answer=lambda seqs: b"one"),
            two.append_many(batch, idempotency_key="k", answer=lambda seqs: b"two"),
            return_exceptions=True,
        )
        failures = [r for r in results if isinstance(r, StoreError)]
        assert len(failures) == 1 and "already used" in failures[0].message
        assert await two.cursor() == 1
        assert await two.recall("k") in (b"one", b"two")


async def test_an_idempotency_key_with_a_nul_is_kept_and_recalled(url: str) -> None:
    """The server scopes keys by token with a NUL, which PostgreSQL text cannot hold."""
    from crdt_sync.store import Append

    async with PostgresStore(url) as store:
        batch = [Append(DocId("contacts/1"), empty_update(), {}, False, Origin("phone"))]
        await store.append_many(batch, idempotency_key="phone\x00k", answer=lambda s: b"first")
        assert await store.recall("phone\x00k") == b"first"
        assert await store.recall("phone\\0k") is None  # escaped one to one: no collision
