"""The commit bus: nodes announce "I committed up to seq S"; the others look in the store.

Rule: the bus carries no updates, only the news that some were committed. A node that hears
it reads the log after the last seq it knows (`Store.follow`), in seq order, so a lost or late
message, a duplicate, or a bus that is down only delays delivery: the log is the truth, and a
node also follows it on a timer while the bus is silent.

A bus is an async context manager with two calls; `RedisBus` (redis_streams.py) is the one
there is, NATS JetStream would be another of the same shape.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from ..errors import ConfigError
from ..ids import Seq

LOG = logging.getLogger(__name__)

News = Callable[[Seq], None]


class CommitBus(AbstractAsyncContextManager["CommitBus"], Protocol):
    def announce(self, seq: Seq) -> None:
        """Tell the other nodes that this one committed up to `seq` (queued, never blocks)."""
        ...

    def on_news(self, listener: News) -> None:
        """Call `listener(seq)` on the event loop when another node announces a commit."""
        ...


def is_bus_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def open_bus(url: str, *, stream: str, node: str) -> CommitBus:
    """The bus at `url` (not yet entered): Redis Streams for redis:// URLs.

    Raises:
        ConfigError: not a bus URL this crdt-sync knows, or the redis package is missing.
    """
    if not is_bus_url(url):
        raise ConfigError(f"--bus must be a redis:// URL, got {url.split('@')[-1]!r}")
    try:
        from .redis_streams import RedisBus
    except ImportError as exc:
        raise ConfigError("a Redis bus needs redis-py: pip install 'crdt-sync[redis]'") from exc
    return RedisBus(url, stream=stream, node=node)


class NewsFollower:
    """Turns news from the bus into `follow()` calls: one at a time, and one more if news came
    while it ran, so a burst of announcements costs a read or two, not one per message."""

    def __init__(self, follow: Callable[[], Awaitable[object]]) -> None:
        self._follow = follow
        self._wake = asyncio.Event()

    def news(self, seq: Seq) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled. A failed follow is logged; the next news or the timer retries."""
        from ..errors import CrdtSyncError

        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._follow()
            except CrdtSyncError as exc:
                LOG.warning("following the log after news from the bus failed: %s", exc)
