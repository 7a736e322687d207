"""Sync status a user can watch: state, pending and rejected changes, last sync, last error.

`StatusBoard` holds the current `SyncStatus` (a property) and hands every change to each
watcher's own bounded queue (an async stream), so a slow watcher never holds the replica up:
when its queue is full it loses the oldest change, never the latest.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

WATCHER_QUEUE = 256


class SyncState(StrEnum):
    OFFLINE = "offline"  # not connected: never tried, between attempts, or after leaving
    CONNECTING = "connecting"  # opening a connection
    SYNCING = "syncing"  # connected: catching up or pushing the queue
    SYNCED = "synced"  # caught up and the queue is settled
    ERROR = "error"  # the last attempt failed; `last_error` says why


class Transport(StrEnum):
    WEBSOCKET = "websocket"
    REST = "rest"


@dataclass(frozen=True, slots=True)
class SyncStatus:
    state: SyncState = SyncState.OFFLINE
    pending: int = 0  # local changes not yet acknowledged by the server
    rejected: int = 0  # changes the server refused (with its reason), kept for the user
    last_sync_at: float | None = None  # unix time of the last complete sync
    last_error: str | None = None
    transport: Transport | None = None  # how the replica is (or was last) connected
    cursor: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "pending": self.pending,
            "rejected": self.rejected,
            "last_sync_at": self.last_sync_at,
            "last_error": self.last_error,
            "transport": None if self.transport is None else self.transport.value,
            "cursor": self.cursor,
        }


class StatusBoard:
    def __init__(self, initial: SyncStatus) -> None:
        self._status = initial
        self._watchers: set[asyncio.Queue[SyncStatus | None]] = set()  # None: stopped
        self._stopped: Exception | None = None

    @property
    def status(self) -> SyncStatus:
        return self._status

    def update(self, **changes: Any) -> SyncStatus:
        """Change some fields; watchers hear of it only if something actually changed."""
        status = dataclasses.replace(self._status, **changes)
        if status != self._status:
            self._status = status
            for queue in self._watchers:
                if queue.full():
                    queue.get_nowait()
                queue.put_nowait(status)
        return status

    def stop(self, error: Exception) -> None:
        """Syncing stopped for good (the server refused the token, say): every watcher's
        stream raises `error` after the statuses before it, and so does a new one, until
        `resume()`."""
        self._stopped = error
        for queue in self._watchers:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(None)

    def resume(self) -> None:
        self._stopped = None

    async def changes(self) -> AsyncIterator[SyncStatus]:
        """The current status, then every change, until the consumer stops iterating.

        Raises what `stop()` was given, once the statuses before it were read.
        """
        queue: asyncio.Queue[SyncStatus | None] = asyncio.Queue(WATCHER_QUEUE)
        queue.put_nowait(self._status)
        if self._stopped is not None:
            queue.put_nowait(None)
        self._watchers.add(queue)
        try:
            while True:
                status = await queue.get()
                if status is None:
                    if self._stopped is not None:
                        raise self._stopped
                    continue  # resumed meanwhile: keep watching
                yield status
        finally:
            self._watchers.discard(queue)
