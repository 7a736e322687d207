"""One node of several: its commits announced on the bus, others' news followed in the log,
and its heartbeat row in the shared store, which `/api/sync/status` lists.

The store already hands this node's listeners every update another node committed, in seq
order, whenever it looks (`Store.follow`, and within every append); the bus only makes it
look at once instead of at the next tick of the follow timer (app.py). So a lost message, a
node killed between its commit and its announcement, or Redis down, delays delivery by at
most `Settings.follow_interval`, and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from ..bus import CommitBus, NewsFollower, open_bus
from ..errors import ConfigError, CrdtSyncError
from ..store.base import Committed, NodeRoster, NodeRow, Store

LOG = logging.getLogger(__name__)


def node_name() -> str:
    """Tells this node's announcements from the others' (host, process, and a random part)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class ThisNode:
    """This server process as the deployment's roster knows it."""

    address: str = ""  # where it serves, http://host:port ("" when embedded)
    id: str = field(default_factory=node_name)
    started_at: float = field(default_factory=time.time)


def is_alive(row: NodeRow, interval: float) -> bool:
    """A node is taken for alive until it missed about three heartbeats."""
    return row.age <= 3 * interval + 1.0


@contextlib.asynccontextmanager
async def heartbeat(
    store: Store, node: ThisNode, connections: Callable[[], int], interval: float
) -> AsyncIterator[None]:
    """On a shared store: a row for this node, refreshed every `interval` seconds, removed
    when the node stops cleanly (one killed stays, shown not alive, for an hour)."""
    if not isinstance(store, NodeRoster):
        yield
        return
    roster: NodeRoster = store

    async def beat() -> None:
        await roster.beat_node(node.id, node.address, node.started_at, connections())

    async def beat_or_warn() -> None:
        # Only the roster depends on it: a failed beat must not stop the node serving.
        try:
            await beat()
        except CrdtSyncError as exc:
            LOG.warning("node heartbeat failed; retrying: %s", exc)

    async def beating() -> None:
        while True:
            await asyncio.sleep(interval)
            await beat_or_warn()

    await beat_or_warn()  # listed before the first request is served
    task = asyncio.create_task(beating(), name="crdt-sync node heartbeat")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(CrdtSyncError):
            await roster.leave_node(node.id)


@contextlib.asynccontextmanager
async def commit_news(
    store: Store, bus_url: str | None, node: ThisNode | None = None
) -> AsyncIterator[CommitBus | None]:
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
    name = node.id if node is not None else node_name()
    async with open_bus(bus_url, stream=stream, node=name) as bus:

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
