"""The admin panel (server layer): pages at /admin, rendered from the REST views, shipped in
the wheel with their static assets; every action the pages take is a documented REST call.

    sessions.py   sign-in sessions: an admin token exchanged for an HttpOnly cookie
    pages.py      the HTML pages: sign in/out, records, a record, sync
    feed.py       GET /api/admin/feed: records as they change (SSE)
    record_api.py a record's history, restores, merged text edits
    templates/    Jinja2 templates (autoescaped), static/  CSS and plain JS, no bundle

This package's `__init__` imports nothing: `server.access` needs `sessions` and the pages
need `server.access`, so an eager import here would make the two import each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from ...schema import Schema


def install(app: FastAPI, schema: Schema) -> None:
    """Add the panel's pages, static files, sessions and feeds to `app` (see pages.install)."""
    from .pages import install as install_pages

    install_pages(app, schema)
