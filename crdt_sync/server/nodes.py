"""One node of several: its commits announced on the bus, others' news followed in the log.

The store already hands this node's listeners every update another node committed, in seq
order, whenever it looks (`Store.follow`, and within every append); the bus only makes it
look at once instead of at the next tick of the follow timer (app.py). So a lost message, a
node killed between its commit and its announcement, or Redis down, delays delivery by at
most `Settings.follow_interval`, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
from collections.abc import AsyncIterator, Sequence

from ..bus import CommitBus, NewsFollower, open_bus
from ..errors import ConfigError
from ..store.base import Committed, Store


def node_name() -> str:
    """Tells this node's announcements from the others' (host, process, and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@contextlib.asynccontextmanager
async def commit_news(store: Store, bus_url: str | None) -> AsyncIterator[CommitBus | None]:
    """Without a bus URL, nothing (one node, or nodes that only poll); with one, the bus.

    Raises:
        ConfigError: a bus without a store that several nodes share (PostgreSQL).
    """
    if bus_url is None:
        yield None
        return
    identity = getattr(store, "identity", None)
    if not identity:
        raise ConfigError("--bus needs a store that nodes share: --store postgresql://...")
    stream = f"crdt-sync:{identity}:commits"
    async with open_bus(bus_url, stream=stream, node=node_name()) as bus:

        def announce(batch: Sequence[Committed]) -> None:
            own = [committed.seq for committed in batch if not committed.foreign]
            if own:
                bus.announce(own[-1])

        store.add_commit_listener(announce)
        follower = NewsFollower(store.follow)
        bus.on_news(follower.news)
        task = asyncio.create_task(follower.run(), name="crdt-sync following news")
        try:
            yield bus
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
