"""Where a test's clients come in: one server, or three nodes of a PostgreSQL deployment.

Interop tests take `doors` instead of `server`: the writes of admins and live peers enter at
`doors.a`, the clients under test (WatermelonDB apps, stock Yjs clients) use `doors.b` and
`doors.c`. With one server the three are the same in-process server on SQLite; with three
nodes each is a `crdt-sync serve --store postgresql://... --bus redis://...` process, so every
change a client sees was committed by another node and reached it through the log.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from crdt_sync.server.auth import create_token
from crdt_sync.store.postgres import PostgresStore

from .conftest import RunningServer
from .nodes import spawn_node
from .services import REDIS_URL, postgres_schema, unavailable


@dataclass(frozen=True)
class Doors:
    a: RunningServer  # admins' REST writes, live Python peers
    b: RunningServer  # the client under test
    c: RunningServer  # a second client under test

    @property
    def is_one_server(self) -> bool:
        return self.a is self.b is self.c


def require_redis() -> None:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)


@pytest.fixture(params=["one server", "three nodes"])
async def doors(
    request: pytest.FixtureRequest,
    server_factory: Callable[..., Awaitable[RunningServer]],
    tmp_path: Path,
) -> AsyncIterator[Doors]:
    if request.param == "one server":
        server = await server_factory()
        yield Doors(server, server, server)
        return
    require_redis()
    with postgres_schema() as url:
        async with PostgresStore(url, readers=1) as store:
            admin = await create_token(store, name="admin", role="admin")
            device = await create_token(store, name="phone", role="device")
        # The stream is named by the store's identity: this deployment's alone on the shared
        # Redis. Nodes start one after another: together they would only wait on each other.
        nodes = []
        try:
            for index in range(3):
                log = tmp_path / f"node{index}.log"
                nodes.append(await asyncio.to_thread(spawn_node, url, log, bus_url=REDIS_URL))
            a, b, c = (
                RunningServer(node.port, tmp_path / "none.db", admin, device, None, None, url)
                for node in nodes
            )
            yield Doors(a, b, c)
        finally:
            for node in nodes:
                node.kill()
