"""A connection's budget of refused writes: past it, the connection's reader waits.

Every refused write costs the server the check (and, on the live doors, a compensation and
a commit) before it is known to be refused; a client that keeps sending bad writes would
take that time from everyone else. So each connection may be refused `burst` writes at
once and `rate` a second after that; past the budget its reader stops reading until the
budget refills, which slows that one client down (TCP backpressure) without closing it: a
form that sends a bad value a keystroke is a user typing, not an attack.
"""

from __future__ import annotations

import asyncio
import time


class RefusalBudget:
    """A token bucket of refusals; `spend()` after each refusal, `wait_for_budget()` before
    reading the next write."""

    __slots__ = ("_early", "_tokens", "_updated", "burst", "rate", "waits")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self.waits = 0  # how many times the reader waited: for statistics and tests
        self._early = 0  # compensated refusals spent at their check, not yet answered

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        return self._tokens

    @property
    def is_short(self) -> bool:
        """True while refusals of late have not been earned back (the bucket is not full)."""
        return self._refill() < self.burst

    def spend_at_check(self, refusals: int) -> None:
        """Refusals known when the writes were checked (before commit): spent now."""
        self._early += max(0, refusals)
        self.spend(refusals)

    def spend_at_answer(self) -> None:
        """A compensated refusal answered: spent now unless it was at its check (a write
        that waited for its record to load is checked later, in another task)."""
        if self._early:
            self._early -= 1
        else:
            self.spend()

    def spend(self, refusals: int = 1) -> None:
        if refusals <= 0:
            return
        self._refill()
        # Below zero for writes that were in flight when the budget ran out, but not below
        # -burst: a pause never lasts longer than (burst + 1) / rate.
        self._tokens = max(-float(self.burst), self._tokens - refusals)

    async def wait_for_budget(self) -> None:
        """Return at once while refusals are within budget; else wait until it refills."""
        tokens = self._refill()
        if tokens >= 1.0:
            return
        self.waits += 1
        await asyncio.sleep((1.0 - tokens) / self.rate)
        self._refill()
