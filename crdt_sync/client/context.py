"""What a replica's transports share: its local file, its status, who it is (client layer)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from .local import LocalStore
from .status import StatusBoard, SyncState


@dataclass(eq=False)
class SyncContext:
    local: LocalStore
    board: StatusBoard
    replica_id: str
    collections: tuple[str, ...]
    # Set by every local change (and by a transport after work that may free more to send);
    # the pushing task clears it before it looks at the queue, so no change is missed.
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def refresh(self) -> None:
        """Bring pending/rejected/cursor in the status up to date with the file."""
        summary = await self.local.summary()
        self.board.update(pending=summary.pending, rejected=summary.rejected, cursor=summary.cursor)

    async def cursor(self) -> int:
        return await self.local.cursor()

    async def mark_synced(self) -> None:
        """A complete pass: caught up and the queue settled."""
        now = time.time()
        await self.local.mark_synced(now)
        await self.refresh()
        self.board.update(state=SyncState.SYNCED, last_sync_at=now, last_error=None)
