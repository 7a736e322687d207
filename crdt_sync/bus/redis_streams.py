"""The commit bus on a Redis stream (I/O layer): XADD to announce, a blocking XREAD to hear.

One stream per store (its name holds the store's identity, so nodes of different stores
sharing a Redis never hear each other), capped at about STREAM_LENGTH entries: a node only
needs news from now on, never the history (that is in the store). While Redis is down,
announcements are dropped and the reader retries every RETRY seconds; each outage is logged
once when it starts and once when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Self, cast

import redis.asyncio as redis
from redis.exceptions import RedisError

from ..ids import Seq
from .base import News

LOG = logging.getLogger(__name__)

STREAM_LENGTH = 10_000
BLOCK_MS = 1000  # one XREAD waits this long for news, then asks again
RETRY = 0.5  # seconds between attempts while Redis is unreachable


class RedisBus:
    """Use as `async with RedisBus(url, stream=..., node=...) as bus:`."""

    def __init__(self, url: str, *, stream: str, node: str) -> None:
        self._url = url
        self._stream = stream
        self._node = node
        self._listeners: list[News] = []
        self._latest = Seq(0)  # the newest seq to announce
        self._announced = Seq(0)
        self._to_announce = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.statistics = {"announced": 0, "heard": 0, "failures": 0}

    async def __aenter__(self) -> Self:
        # A blocking XREAD holds its connection: the reader and the announcer have one each.
        self._reading = redis.from_url(self._url, socket_timeout=BLOCK_MS / 1000 + 5)
        self._writing = redis.from_url(self._url, socket_timeout=5, socket_connect_timeout=2)
        self._tasks = [
            asyncio.create_task(self._read(), name="crdt-sync bus reader"),
            asyncio.create_task(self._announce(), name="crdt-sync bus announcer"),
        ]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._reading.aclose()
        await self._writing.aclose()

    def announce(self, seq: Seq) -> None:
        if seq > self._latest:
            self._latest = seq
            self._to_announce.set()

    def on_news(self, listener: News) -> None:
        self._listeners.append(listener)

    async def _announce(self) -> None:
        is_down = False
        while True:
            await self._to_announce.wait()
            self._to_announce.clear()
            seq = self._latest
            if seq <= self._announced:
                continue
            try:
                await self._writing.xadd(
                    self._stream,
                    {"seq": str(seq), "node": self._node},
                    maxlen=STREAM_LENGTH,
                    approximate=True,
                )
            except (RedisError, OSError) as exc:
                self.statistics["failures"] += 1
                if not is_down:
                    LOG.warning("bus: cannot announce commits (%s); nodes will poll the log", exc)
                is_down = True
                continue  # a hint lost: the others find the commit in the log anyway
            if is_down:
                LOG.warning("bus: announcing again")
                is_down = False
            self._announced = seq
            self.statistics["announced"] += 1

    async def _read(self) -> None:
        last_id = "$"  # news from now on
        is_down = False
        while True:
            try:
                answer = cast(
                    list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None,
                    await self._reading.xread({self._stream: last_id}, block=BLOCK_MS),
                )
            except (RedisError, OSError) as exc:
                self.statistics["failures"] += 1
                if not is_down:
                    LOG.warning("bus: cannot hear other nodes (%s); polling the log", exc)
                is_down = True
                await asyncio.sleep(RETRY)
                continue
            if is_down:
                LOG.warning("bus: hearing other nodes again")
                is_down = False
                self._tell(Seq(0))  # whatever was committed meanwhile: look now
            for _stream, entries in answer or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    node = fields.get(b"node", b"").decode()
                    if node == self._node:
                        continue
                    self.statistics["heard"] += 1
                    self._tell(Seq(int(fields.get(b"seq", b"0"))))

    def _tell(self, seq: Seq) -> None:
        for listener in self._listeners:
            try:
                listener(seq)
            except Exception:  # a listener's bug must not stop the bus
                LOG.exception("bus listener %r failed", listener)
