"""The writes the engine refused lately: a bounded ring, for the admin's sync page (engine layer).

Counters say how many writes were refused; an admin also needs to see *which*: the record, who
sent it, why, and what it tried to set. The ring keeps the last `capacity` refusals, each with
a number that only grows, so a reader asks for "what came after the one I saw last".

Working out what a refused CRDT update tried to set means applying it to a copy of the record,
which costs what the record holds: it is done for at most `values_per_second` refusals a
second, so a client flooding the server with bad updates cannot make refusals expensive.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, Text

from .errors import CrdtSyncError, DocumentError
from .record import RECORD_ROOT

MAX_VALUE_CHARS = 200  # a refused value is shown cut to this many characters
MAX_VALUES_UPDATE_BYTES = 64 << 10  # bigger refused updates are not decoded for their values


@dataclass(frozen=True, slots=True)
class Refusal:
    """One refused write."""

    number: int  # 1, 2, ... in the order refusals happened
    at: float  # unix seconds
    doc_id: str  # "" when the write named no usable record
    origin: str  # who sent it: a client id or a token name
    code: str  # the error's stable code ("schema_violation")
    reason: str  # the error's message, for people
    values: dict[str, Any] | None  # what it tried to set; None when unknown


Listener = Callable[[Refusal], None]


class RefusalLog:
    """The last `capacity` refusals, oldest first; listeners hear of each as it happens."""

    def __init__(
        self,
        capacity: int = 500,
        *,
        values_per_second: int = 20,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ring: deque[Refusal] = deque(maxlen=capacity)
        self._count = 0
        self._clock = clock
        self._values_per_second = values_per_second
        self._budget_second = 0
        self._budget_used = 0
        self.listeners: list[Listener] = []

    @property
    def count(self) -> int:
        """Refusals noted since start (the ring holds only the last ones)."""
        return self._count

    def note(
        self,
        error: CrdtSyncError,
        doc_id: str,
        origin: str,
        *,
        patch: Mapping[str, Any] | None = None,
        update: bytes | None = None,
        document: Doc[Any] | None = None,
        values: Mapping[str, Any] | None = None,
    ) -> Refusal:
        """Remember a refused write: its `values`, a field `patch`, or an `update` to `document`.

        `document` is the record as it is without the update (a refusal leaves no trace).
        """
        now = self._clock()
        shown: dict[str, Any] | None = None
        given = values if values is not None else patch
        if given is not None:
            shown = {str(name): _shown(value) for name, value in given.items()}
        elif update is not None and document is not None and self._may_decode(now, update):
            shown = tried_values(document, update)
        if isinstance(error, DocumentError) and error.doc_id:
            doc_id = error.doc_id
        self._count += 1
        refusal = Refusal(self._count, now, doc_id, origin, error.code, error.message, shown)
        self._ring.append(refusal)
        for listener in self.listeners:
            listener(refusal)
        return refusal

    def recent(self, *, after: int = 0, limit: int = 100) -> list[Refusal]:
        """Refusals numbered above `after`, newest first, at most `limit`."""
        found: list[Refusal] = []
        for refusal in reversed(self._ring):
            if refusal.number <= after or len(found) >= limit:
                break
            found.append(refusal)
        return found

    def _may_decode(self, now: float, update: bytes) -> bool:
        if len(update) > MAX_VALUES_UPDATE_BYTES:
            return False
        second = int(now)
        if second != self._budget_second:
            self._budget_second, self._budget_used = second, 0
        if self._budget_used >= self._values_per_second:
            return False
        self._budget_used += 1
        return True


def tried_values(document: Doc[Any], update: bytes) -> dict[str, Any] | None:
    """The fields `update` would change in `document`, with the values it would give them.

    Worked out on a copy; None when the update does not apply (it is not a Yjs update, or it
    depends on changes the record has not seen). A field it would remove shows as None.
    """
    copy: Doc[Any] = Doc()
    try:
        copy.apply_update(document.get_update())
        before = _fields(copy)
        copy.apply_update(update)
    except ValueError:
        return None
    after = _fields(copy)
    return {
        name: after.get(name)
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    }


def _fields(document: Doc[Any]) -> dict[str, Any]:
    fields = document.get(RECORD_ROOT, type=Map)
    return {str(name): _shown(value) for name, value in fields.items()}


def _shown(value: Any) -> Any:
    """A value as JSON can carry it, long ones cut: for people to look at, not to restore."""
    if isinstance(value, Text):
        value = str(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):  # JSON has no NaN or infinity
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[: MAX_VALUE_CHARS - 3] + "..."
