"""The admin panel (server layer): pages at /admin, rendered from the REST views, shipped in
the wheel with their static assets; every action the pages take is a documented REST call.

    sessions.py   sign-in sessions: an admin token exchanged for an HttpOnly cookie
    pages.py      the HTML pages: sign in/out, records, a record, sync
    templates/    Jinja2 templates (autoescaped), static/  CSS and plain JS, no bundle
"""

from __future__ import annotations

from .pages import install

__all__ = ["install"]
