"""Capped exponential backoff with jitter, for reconnecting (pure: randomness comes in).

The delay before attempt n (from 0) is drawn uniformly from [cap_n / 2, cap_n] with
cap_n = min(maximum, initial * factor**n): it grows fast, never passes `maximum`, and the random
half spreads a crowd of replicas that lost the server at the same moment ("equal jitter", AWS
Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    uniform: Callable[[float, float], float] = field(default=random.uniform)
    attempts: int = 0

    def next_delay(self) -> float:
        """The seconds to wait before the next attempt; each call counts one failed attempt."""
        ceiling = min(self.maximum, self.initial * self.factor ** min(self.attempts, 64))
        self.attempts += 1
        return self.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """After a success: the next failure starts from `initial` again."""
        self.attempts = 0
