"""Tokens and roles: who may connect, and to what (server layer).

Tokens are random and high-entropy, so a plain SHA-256 is enough to store them: a stolen
database does not reveal a usable token, and lookup stays one indexed query.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from ..errors import AuthError, Forbidden
from ..store.base import Store

TOKEN_PREFIX = "cs_"
LAST_USED_RESOLUTION = 60.0  # seconds


class Role(StrEnum):
    ADMIN = "admin"  # everything
    DEVICE = "device"  # sync: /ws, /yjs, /api/sync/*, reading /api/docs


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    token_hash: str

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require_admin(self, what: str) -> None:
        if not self.is_admin:
            raise Forbidden(
                f"{what} needs an admin token; token {self.name!r} is a {self.role} token"
            )


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


async def create_token(store: Store, *, name: str, role: str) -> str:
    """Make, store (hashed) and return a new token; the plain token is never stored."""
    try:
        parsed = Role(role)
    except ValueError:
        raise AuthError(f"role must be admin or device, got {role!r}") from None
    if not name or len(name) > 128 or not name.isprintable():
        raise AuthError("a token name is 1-128 printable characters")
    token = new_token()
    await store.add_token(name, parsed.value, hash_token(token))
    return token


async def authenticate(store: Store, token: str | None) -> Principal:
    """The principal a token stands for. Raises AuthError for no token or an unknown one."""
    if not token:
        raise AuthError(
            "missing token: send 'Authorization: Bearer <token>'"
            " (websockets /ws and /yjs may pass ?token=<token> instead)"
        )
    token_hash = hash_token(token)
    row = await store.find_token(token_hash)
    if row is None:
        raise AuthError("unknown or revoked token")
    # To the minute: `token list` shows when a token was last used without a write per request.
    if row.last_used_at is None or time.time() - row.last_used_at >= LAST_USED_RESOLUTION:
        await store.touch_token(token_hash)
    return Principal(row.name, Role(row.role), token_hash)


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
