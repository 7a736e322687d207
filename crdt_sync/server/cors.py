"""Cross-origin calls from browser apps on other origins, off unless origins are named.

Tokens travel in the Authorization header, never in cookies a browser would attach by itself,
so allowing an origin lets its pages call the API with a token they hold, nothing more.
Credentialed requests (the admin panel's session cookie) stay same-origin only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:  # `serve` checks the origins before FastAPI is imported (server/front.py)
    from fastapi import FastAPI

ALLOWED_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Client-Id"]
ALLOWED_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def checked_origins(origins: Iterable[str]) -> tuple[str, ...]:
    """`origins` as the browser sends them (`scheme://host[:port]`), or `*` for any.

    Raises:
        ConfigError: one is not an origin (a path, no scheme, a trailing slash), naming it.
    """
    checked = []
    for origin in origins:
        if origin != "*":
            parts = urlsplit(origin)
            if (
                parts.scheme not in ("http", "https")
                or not parts.netloc
                or parts.path
                or parts.query
                or parts.fragment
            ):
                raise ConfigError(
                    f"--cors-origin: expected an origin like https://app.example.com"
                    f" (scheme, host, optional port; no path), got {origin!r}"
                )
        checked.append(origin)
    return tuple(checked)


def allow_cross_origin(app: FastAPI, origins: Iterable[str]) -> None:
    """Answer CORS preflights and mark answers readable by pages on `origins`."""
    from starlette.middleware.cors import CORSMiddleware

    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(checked_origins(origins)),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=["Location"],
        allow_credentials=False,
        max_age=600,
    )
