"""y-protocols awareness updates: decoded and checked before any relay, and who owns what (pure).

An awareness update (y-protocols ``awareness.js``, ``encodeAwarenessUpdate``) is

    varUint count, count x (varUint client id, varUint clock, varString JSON state)

where the state is ``JSON.stringify`` of an object, or ``null`` for "this client left". A stock
client decodes it with lib0 (a client id or clock past 2**53 - 1 throws, bad UTF-8 throws: its
TextDecoder is fatal) and ``JSON.parse``; one update it cannot decode makes y-websocket throw in
its message handler and Node exit. So the server decodes every update the way those clients do
and refuses, never relays, one that fails (`decode_awareness_update`).

Rule (ownership). A y-websocket client sends its own state, and also re-broadcasts every state
it learns (its ``update`` handler encodes every changed client, local or not, and its timeout
sends a ``null`` for a peer it has not heard from in 30 s, at that peer's clock, which removes it
everywhere). So naming another client id is normal, not an attack, and must not close anyone;
but relaying it would let any peer overwrite or remove another's presence. An `AwarenessRoom`
gives each client id to the first connection that sends a state for it, until that connection
leaves; what other connections say about that id is dropped (y-protocols' own
``modifyAwarenessUpdate`` exists for servers that re-encode so, "to ensure that clients can't
hijack somebody else's identity"). A connection owns at most `MAX_OWNED_CLIENTS` ids.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ProtocolError
from ..yupdate import Lib0Reader, MalformedUpdate
from .ysync import var_uint

__all__ = [
    "MAX_OWNED_CLIENTS",
    "MAX_STATES_PER_UPDATE",
    "MAX_STATE_BYTES",
    "AwarenessRoom",
    "AwarenessState",
    "decode_awareness_update",
    "encode_awareness_update",
]

MAX_STATE_BYTES = 8 << 10  # one client's presence: a name, a colour, a cursor or two
MAX_STATES_PER_UPDATE = 1024  # a joiner re-broadcasts the whole room's states in one update
MAX_OWNED_CLIENTS = 4  # a stock client (one provider per connection) owns exactly one

Sender = TypeVar("Sender", bound=Hashable)


@dataclass(frozen=True, slots=True)
class AwarenessState:
    """One entry of an awareness update; `state` is the JSON text as the client sent it."""

    client: int
    clock: int
    state: str
    is_removal: bool  # the JSON is null: the client left

    @classmethod
    def removal(cls, client: int, clock: int) -> AwarenessState:
        return cls(client, clock, "null", True)


def decode_awareness_update(data: bytes) -> tuple[AwarenessState, ...]:
    """Every entry of an awareness update, if every stock y-protocols client decodes it.

    Raises:
        ProtocolError: truncated, trailing bytes, a client id or clock past 2**53 - 1, a state
            that is not UTF-8, not JSON (NaN and Infinity included), neither an object nor null,
            over `MAX_STATE_BYTES`, or more than `MAX_STATES_PER_UPDATE` entries.
    """
    reader = Lib0Reader(bytes(data))
    try:
        count = reader.var_uint("number of states")
        if count > MAX_STATES_PER_UPDATE:
            raise reader.error(f"{count} states, over the limit of {MAX_STATES_PER_UPDATE}")
        states = tuple(_read_state(reader) for _ in range(count))
        if reader.position != len(reader.data):
            raise reader.error(f"{len(reader.data) - reader.position} bytes after the last state")
    except MalformedUpdate as exc:
        raise ProtocolError(f"awareness update: {exc}") from None
    return states


def encode_awareness_update(states: Iterable[AwarenessState]) -> bytes:
    """The inverse of `decode_awareness_update` (``encodeAwarenessUpdate``'s layout)."""
    entries = list(states)
    out = bytearray(var_uint(len(entries)))
    for entry in entries:
        text = entry.state.encode("utf-8")
        out += var_uint(entry.client) + var_uint(entry.clock) + var_uint(len(text)) + text
    return bytes(out)


class AwarenessRoom(Generic[Sender]):
    """The awareness of one document's peers: each client id's owner and last state.

    Calling contract: `receive` every decoded update a connection sends and relay what it
    returns (nothing if empty); `leave` when the connection closes and relay the removals it
    returns; `states` for a joiner or a query-awareness.
    """

    def __init__(self) -> None:
        self._owners: dict[int, Sender] = {}
        self._states: dict[int, AwarenessState] = {}

    def __bool__(self) -> bool:
        return bool(self._owners)

    def receive(
        self, sender: Sender, states: Iterable[AwarenessState]
    ) -> tuple[AwarenessState, ...]:
        """What of `states` to relay: the sender's own, newest clock wins (see Rule above).

        Raises:
            ProtocolError: the sender would own more than `MAX_OWNED_CLIENTS` client ids.
        """
        relayed: list[AwarenessState] = []
        for entry in states:
            owner = self._owners.get(entry.client)
            if owner is None:
                if entry.is_removal:
                    continue  # nobody here holds that state: an echo of a removal
                self._claim(sender, entry.client)
            elif owner != sender:
                continue  # another connection's client: an echo, or an attempt to impersonate
            known = self._states.get(entry.client)
            if known is not None and entry.clock < known.clock:
                continue  # stale: every receiver would ignore it too
            self._states[entry.client] = entry
            relayed.append(entry)
        return tuple(relayed)

    def leave(self, sender: Sender) -> tuple[AwarenessState, ...]:
        """Forget `sender`'s client ids; the removals to relay for those still present.

        The clock goes up by one, as y-protocols' ``removeAwarenessStates`` does for its own
        state, so every receiver drops the state.
        """
        owned = [client for client, owner in self._owners.items() if owner == sender]
        removals = []
        for client in owned:
            del self._owners[client]
            last = self._states.pop(client)
            if not last.is_removal:
                removals.append(AwarenessState.removal(client, last.clock + 1))
        return tuple(removals)

    def states(self) -> tuple[AwarenessState, ...]:
        """Every present state (removals left out), for a peer that joins or asks."""
        return tuple(s for s in self._states.values() if not s.is_removal)

    def _claim(self, sender: Sender, client: int) -> None:
        owned = sum(1 for owner in self._owners.values() if owner == sender)
        if owned >= MAX_OWNED_CLIENTS:
            raise ProtocolError(
                f"awareness update: a connection may carry the states of at most "
                f"{MAX_OWNED_CLIENTS} client ids; client {client} would be one more"
            )
        self._owners[client] = sender


def _read_state(reader: Lib0Reader) -> AwarenessState:
    client = reader.var_uint("client id")
    clock = reader.var_uint("clock")
    length = reader.var_uint("length of the state")
    if length > MAX_STATE_BYTES:
        raise reader.error(
            f"the state of client {client} is {length} bytes, over the limit of {MAX_STATE_BYTES}"
        )
    left = len(reader.data) - reader.position
    if length > left:
        raise reader.error(f"truncated: a state of {length} bytes, only {left} left")
    raw = reader.data[reader.position : reader.position + length]
    reader.position += length
    try:
        text = raw.decode("utf-8")  # lib0's TextDecoder is fatal: bad UTF-8 throws
        value = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise reader.error(f"the state of client {client} is not JSON: {raw[:40]!r}") from None
    if value is not None and not isinstance(value, dict):
        raise reader.error(f"the state of client {client} is neither an object nor null")
    return AwarenessState(client, clock, text, value is None)


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # json.loads takes NaN and Infinity, JSON.parse not
