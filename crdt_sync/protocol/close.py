"""Websocket close codes of both endpoints, with what a client should do about each (pure)."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CloseCode", "close_reason"]


class CloseCode(IntEnum):
    """Close codes crdt-sync sends on ``/ws`` and ``/yjs/...``; docs/PROTOCOL.md has the table."""

    NORMAL = 1000  # the client said bye, or the server is done with it: do not reconnect
    GOING_AWAY = 1001  # server shutdown or restart: reconnect (with backoff)
    POLICY_VIOLATION = 1008  # refused by policy (e.g. origin): do not retry unchanged
    MESSAGE_TOO_BIG = 1009  # a frame over the size limit: reconnect, never resend that frame
    INTERNAL_ERROR = 1011  # a server bug: reconnect with backoff
    TRY_AGAIN_LATER = 1013  # overloaded, admission control, reconnect storm: backoff + jitter
    BAD_REQUEST = 4400  # the client broke the protocol: do not retry unchanged
    UNAUTHORIZED = 4401  # missing, wrong or revoked token: stop, get a new token
    FORBIDDEN = 4403  # the token's role may not do this: stop
    SLOW_CONSUMER = 4408  # the outgoing queue overflowed: reconnect with the cursor, nothing lost
    DOCUMENT_TOO_LARGE = 4413  # a document passed the size limit: do not resend that write
    # /yjs: a write was refused and could not be undone on the client's copy (an unknown
    # root, nested or undecodable content, over a size limit): drop the copy, sync afresh.
    REFUSED_WRITE = 4422

    @property
    def should_reconnect(self) -> bool:
        """True for the codes after which reconnecting (with backoff) is the right move."""
        return self in _RECONNECT


_RECONNECT = frozenset(
    {
        CloseCode.GOING_AWAY,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.SLOW_CONSUMER,
    }
)


MAX_CLOSE_REASON = 123  # RFC 6455 5.5: a control frame's payload is 125 bytes, 2 for the code


def close_reason(message: str) -> str:
    """`message` cut to fit a close frame (123 UTF-8 bytes), on a character boundary."""
    encoded = message.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON:
        return message
    return encoded[: MAX_CLOSE_REASON - 3].decode("utf-8", errors="ignore") + "..."
