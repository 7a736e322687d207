"""Admin panel sessions: an admin token exchanged for a cookie (server layer).

A session holds only the token's hash. Every request made with the cookie looks the token up
again (one indexed query, as a bearer token costs), so a revoked token's session ends on its
next request, and its open change feeds are closed at once by `end_token`. Sessions live in
the server's memory: a restart signs everybody out, which is the safe way to forget them.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ...store.base import Store

SESSION_COOKIE = "crdt_sync_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(eq=False)
class Session:
    id: str
    token_hash: str
    name: str
    csrf: str
    expires_at: float
    # Called when the session ends (sign out, revocation): open change feeds stop.
    on_end: list[Callable[[], None]] = field(default_factory=list)

    def is_csrf(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value, self.csrf)


class Sessions:
    """The server's open admin sessions, by id."""

    def __init__(self, lifetime: float = SESSION_SECONDS) -> None:
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}

    def start(self, token_hash: str, name: str) -> Session:
        session = Session(
            secrets.token_urlsafe(32),
            token_hash,
            name,
            secrets.token_urlsafe(32),
            time.time() + self.lifetime,
        )
        self._by_id[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._by_id.get(session_id)
        if session is not None and session.expires_at < time.time():
            self.end(session)
            return None
        return session

    def end(self, session: Session) -> None:
        self._by_id.pop(session.id, None)
        callbacks, session.on_end = session.on_end, []
        for callback in callbacks:
            callback()

    def end_token(self, token_hash: str) -> int:
        """End every session of one token (it was revoked); how many ended."""
        chosen = [s for s in self._by_id.values() if s.token_hash == token_hash]
        for session in chosen:
            self.end(session)
        return len(chosen)

    async def end_revoked(self, store: Store) -> int:
        """End the sessions whose token was revoked (by the API or the CLI); how many ended."""
        ended = 0
        for token_hash in {s.token_hash for s in self._by_id.values()}:
            if await store.find_token(token_hash) is None:
                ended += self.end_token(token_hash)
        return ended
