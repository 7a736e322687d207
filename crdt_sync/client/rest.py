"""The replica's REST fallback over `/api/sync/*` (client layer). Filled in below."""

from __future__ import annotations

from .context import SyncContext


class RestLink:
    def __init__(self, context: SyncContext, server: str, token: str, *, live: bool,
                 interval: float = 5.0, until: float = 0.0) -> None:
        self.context = context
        self.reached_live = False

    async def run(self) -> None:
        raise NotImplementedError("REST fallback: issue 5 step 5")
