"""What the server did lately, for the sync page: activity log and counter rates (server layer).

`ActivityLog` is a bounded ring of events (committed updates, refused writes, connections
opened and closed, tokens, store operations), each numbered, so a reader resumes after the
last one it saw; readers that wait for news share one `asyncio.Event` per round rather than
a queue each, so a busy store costs a reader what it reads, not what was written.

`Rates` samples the server's own counters once a second into a ring of the last ten minutes,
so charts show updates/s, connections and refusals without any outside service.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..refusals import Refusal
from ..store.base import Committed

if TYPE_CHECKING:
    from .live import Connection, Hub
    from .telemetry import Telemetry

KINDS = ("update", "refusal", "connect", "disconnect", "token", "operation")


@dataclass(frozen=True, slots=True)
class Activity:
    number: int  # 1, 2, ... in the order things happened
    at: float  # unix seconds
    kind: str  # one of KINDS
    doc: str | None  # the record, when it is about one
    device: str | None  # who: an origin (client id or token name)
    summary: str  # one line for people
    seq: int | None = None  # an update's seq
    token: str | None = None  # the token's name, for connections (a /ws client names itself
    # only after connecting, so its connect event has the token name alone)


@dataclass(frozen=True, slots=True)
class ActivityFilter:
    doc: str | None = None
    device: str | None = None
    kinds: frozenset[str] = frozenset()

    def matches(self, activity: Activity) -> bool:
        return (
            (self.doc is None or activity.doc == self.doc)
            and (self.device is None or self.device in (activity.device, activity.token))
            and (not self.kinds or activity.kind in self.kinds)
        )


class ActivityLog:
    """The last `capacity` events, oldest first."""

    def __init__(self, capacity: int = 5000, clock: Callable[[], float] = time.time) -> None:
        self._ring: deque[Activity] = deque(maxlen=capacity)
        self._count = 0
        self._clock = clock
        self._news: asyncio.Event | None = None

    @property
    def last(self) -> int:
        """The number of the newest event (0 before any)."""
        return self._count

    @property
    def first(self) -> int:
        """The number of the oldest event still held (last + 1 when empty)."""
        return self._ring[0].number if self._ring else self._count + 1

    def note(
        self,
        kind: str,
        summary: str,
        *,
        doc: str | None = None,
        device: str | None = None,
        seq: int | None = None,
        token: str | None = None,
    ) -> None:
        self._count += 1
        self._ring.append(
            Activity(self._count, self._clock(), kind, doc, device, summary, seq, token)
        )
        self._wake()

    def on_commit(self, batch: Sequence[Committed]) -> None:
        """A store commit listener: one `update` event per committed update."""
        now = self._clock()
        for committed in batch:
            if not committed.update or committed.update == b"\x00\x00":
                continue  # a view repair: no change anyone made
            self._count += 1
            self._ring.append(
                Activity(
                    self._count,
                    now,
                    "update",
                    committed.doc_id,
                    committed.origin,
                    f"{len(committed.update)} bytes" + (" (another process)" * committed.foreign),
                    int(committed.seq),
                )
            )
        self._wake()

    def on_refusal(self, refusal: Refusal) -> None:
        summary = f"{refusal.code}: {refusal.reason}"
        self.note("refusal", summary, doc=refusal.doc_id or None, device=refusal.origin)

    def on_connection(self, event: str, connection: Connection) -> None:
        """Hub listener: `event` is "connect" or "disconnect"."""
        who = connection.client_id or connection.principal.name
        self.note(
            event,
            f"{connection.principal.name} on /{connection.endpoint} ({connection.id})",
            device=who,
            token=connection.principal.name,
        )

    def after(
        self, number: int, chosen: ActivityFilter, *, limit: int
    ) -> tuple[list[Activity], int]:
        """Events numbered above `number` that match, oldest first, at most `limit`; and the
        number to ask after next time (the last event looked at, matching or not).

        Walks back from the newest, so a reader that keeps up costs what is new.
        """
        newer: list[Activity] = []
        for activity in reversed(self._ring):
            if activity.number <= number:
                break
            newer.append(activity)
        newer.reverse()
        found: list[Activity] = []
        for activity in newer:
            if chosen.matches(activity):
                found.append(activity)
                if len(found) >= limit:
                    return found, activity.number
        return found, max(number, self._count)

    def newest(self, chosen: ActivityFilter, *, limit: int) -> list[Activity]:
        """The newest `limit` events that match, oldest first."""
        found: list[Activity] = []
        for activity in reversed(self._ring):
            if chosen.matches(activity):
                found.append(activity)
                if len(found) >= limit:
                    break
        found.reverse()
        return found

    async def wait_after(
        self, number: int, timeout: float, stop: asyncio.Event | None = None
    ) -> bool:
        """Wait until an event numbered above `number` exists (True), `timeout` seconds pass
        or `stop` is set (False then, unless news came meanwhile)."""
        if self._count > number:
            return True
        if self._news is None:
            self._news = asyncio.Event()
        waits = [asyncio.ensure_future(self._news.wait())]
        if stop is not None:
            waits.append(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._count > number

    def _wake(self) -> None:
        if self._news is not None:
            self._news.set()
            self._news = None  # the next waiters get a fresh event


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    updates: int  # writes committed since the previous sample (a rate is this / elapsed)
    updates_per_s: float
    refusals_per_s: float
    connections: dict[str, int]  # open websockets by endpoint
    rest_requests_per_s: float  # pulls and pushes


@dataclass(slots=True)
class Rates:
    """Counter rates, one sample a second, the last `capacity` seconds."""

    capacity: int = 600
    samples: deque[Sample] = field(default_factory=deque)
    _last: tuple[float, int, int, int] | None = None

    def sample(self, hub: Hub, telemetry: Telemetry, now: float | None = None) -> None:
        now = time.time() if now is None else now
        counters = hub.engine.counters
        writes = counters["writes"]
        refused = sum(n for key, n in counters.items() if key.startswith("refused:"))
        requests = sum(telemetry.pulls.values()) + telemetry.pushes
        connections: dict[str, int] = {}
        for connection in hub.connections:
            connections[connection.endpoint] = connections.get(connection.endpoint, 0) + 1
        if self._last is not None:
            then, last_writes, last_refused, last_requests = self._last
            elapsed = max(now - then, 1e-6)
            self.samples.append(
                Sample(
                    now,
                    writes - last_writes,
                    (writes - last_writes) / elapsed,
                    (refused - last_refused) / elapsed,
                    connections,
                    (requests - last_requests) / elapsed,
                )
            )
            while len(self.samples) > self.capacity:
                self.samples.popleft()
        self._last = (now, writes, refused, requests)

    def since(self, seconds: float, now: float | None = None) -> list[Sample]:
        now = time.time() if now is None else now
        return [s for s in self.samples if s.at >= now - seconds]
