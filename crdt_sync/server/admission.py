"""Admission control for websocket connections: a cap, and a token bucket for storms.

Stock y-websocket clients all come back within 2.5 s of a restart, without jitter. Letting
them in at a bounded rate keeps the server answering; the rest are closed with 1013 (try
again later) and retry on their own backoff.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import LimitExceeded


@dataclass(slots=True)
class Admission:
    max_connections: int = 10_000
    rate: float = 2000.0  # new connections admitted per second, sustained (see app.Settings)
    burst: float = 1000.0
    open: int = 0
    refused: int = 0
    _tokens: float = field(default=-1.0)
    _stamp: float = field(default_factory=time.monotonic)

    def admit(self) -> None:
        """Count a new connection in, or raise LimitExceeded (close it with 1013)."""
        now = time.monotonic()
        if self._tokens < 0:
            self._tokens = self.burst
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self.open >= self.max_connections:
            self.refused += 1
            raise LimitExceeded(f"server is full ({self.max_connections} connections); retry later")
        if self._tokens < 1:
            self.refused += 1
            raise LimitExceeded("too many new connections at once; retry with backoff")
        self._tokens -= 1
        self.open += 1

    def release(self) -> None:
        self.open -= 1
