"""The admin panel's HTML pages and its sign-in (server layer).

Pages are rendered by Jinja2 with autoescaping, so a record's value is never spliced into
HTML by hand; the scripts they load read and write through the REST API with the session
cookie (and its CSRF token), as a script with a token would. Every page answers with a
Content-Security-Policy that allows nothing from another origin and no inline script.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.staticfiles import StaticFiles

from ...errors import AuthError
from ...schema import Schema
from ..access import current_session, sessions
from ..activity import KINDS as ACTIVITY_KINDS
from ..auth import authenticate
from .feed import Feeds
from .sessions import SESSION_COOKIE, Session, Sessions

HERE = Path(__file__).parent
SIGN_IN_COOKIE = "crdt_sync_sign_in"  # the sign-in form's CSRF token, before any session
MAX_FORM_BYTES = 8192
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

environment = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def install(app: FastAPI, schema: Schema) -> None:
    """Add the panel's pages, its static files and its session table to `app`."""
    app.state.admin_sessions = Sessions()
    app.state.admin_feeds = Feeds()
    app.mount("/admin/static", StaticFiles(directory=HERE / "static"), name="admin-static")
    pages = Pages(schema)
    for path, endpoint, methods in (
        ("/", pages.root, ["GET"]),
        ("/admin", pages.home, ["GET"]),
        ("/admin/sign-in", pages.sign_in_form, ["GET"]),
        ("/admin/sync", pages.sync, ["GET"]),
        ("/admin/{collection}", pages.records, ["GET"]),
        # "-" is no record id's whole path segment: "new" may be one.
        ("/admin/{collection}/-/new", pages.new_record, ["GET"]),
        ("/admin/{collection}/{record_id}", pages.record, ["GET"]),
    ):
        app.add_api_route(path, endpoint, methods=methods, include_in_schema=False)
    # The two form posts are part of the API a script could use too: documented.
    for path, endpoint, summary, fields in (
        ("/admin/sign-in", pages.sign_in, "Sign in with an admin token", ("token", "csrf", "next")),
        ("/admin/sign-out", pages.sign_out, "End the session", ("csrf",)),
    ):
        app.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            tags=["admin: panel"],
            summary=summary,
            response_class=RedirectResponse,
            status_code=303,
            openapi_extra=form_body(fields),
        )


class Pages:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def render(
        self, name: str, session: Session | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        html = environment.get_template(name).render(
            session=session, collections=list(self.schema.collections), **context
        )
        return HTMLResponse(html, status_code=status, headers=page_headers())

    async def root(self, request: Request) -> Response:
        return RedirectResponse("/admin", status_code=307)

    async def home(self, request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_sign_in(request)
        return RedirectResponse(f"/admin/{next(iter(self.schema.collections))}", status_code=303)

    async def sign_in_form(self, request: Request) -> Response:
        return self.sign_in_page(request, None, 200)

    def sign_in_page(self, request: Request, problem: str | None, status: int) -> Response:
        form_token = secrets.token_urlsafe(32)
        response = self.render(
            "sign_in.html",
            None,
            status,
            problem=problem,
            form_token=form_token,
            next=safe_next(request.query_params.get("next")),
        )
        set_cookie(response, request, SIGN_IN_COOKIE, form_token, max_age=3600)
        return response

    async def sign_in(self, request: Request) -> Response:
        form = await read_form(request)
        expected = request.cookies.get(SIGN_IN_COOKIE)
        if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
            return self.sign_in_page(request, "The form expired: please sign in again.", 403)
        try:
            who = await authenticate(request.app.state.store, form.get("token", "").strip())
        except AuthError:
            return self.sign_in_page(request, "Unknown or revoked token.", 401)
        if not who.is_admin:
            problem = f"Token {who.name!r} is a device token: only an admin token can sign in."
            return self.sign_in_page(request, problem, 403)
        session = sessions(request).start(who.token_hash, who.name)
        response = RedirectResponse(safe_next(form.get("next")), status_code=303)
        set_cookie(response, request, SESSION_COOKIE, session.id, max_age=None)
        response.delete_cookie(SIGN_IN_COOKIE, path="/admin")
        return response

    async def sign_out(self, request: Request) -> Response:
        form = await read_form(request)
        session = current_session(request)
        if session is not None and session.is_csrf(form.get("csrf")):
            sessions(request).end(session)
        elif session is not None:
            return self.render("sign_in.html", None, 403, problem="Sign-out refused: bad form.")
        response = RedirectResponse("/admin/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def sync(self, request: Request) -> Response:
        session = await signed_in(request)
        if session is None:
            return to_sign_in(request)
        return self.render("sync.html", session, page="sync", activity_kinds=ACTIVITY_KINDS)

    async def records(self, request: Request, collection: str) -> Response:
        return await self._collection_page(request, "records.html", collection)

    async def new_record(self, request: Request, collection: str) -> Response:
        return await self.record(request, collection, None)

    async def record(self, request: Request, collection: str, record_id: str | None) -> Response:
        return await self._collection_page(request, "record.html", collection, record_id=record_id)

    async def _collection_page(
        self, request: Request, template: str, collection: str, **context: Any
    ) -> Response:
        """A page of one collection, driven by its schema; 404 for a collection it lacks."""
        session = await signed_in(request)
        if session is None:
            return to_sign_in(request)
        if collection not in self.schema.collections:
            return self.render("missing.html", session, 404, what=f"collection {collection!r}")
        return self.render(
            template,
            session,
            page=collection,
            collection=collection,
            schema=self.describe(collection),
            **context,
        )

    def describe(self, name: str) -> dict[str, Any]:
        """What the page's script needs of the schema (a JSON island, not code)."""
        collection = self.schema.collections[name]
        return {
            "collection": name,
            "title_field": collection.title_field,
            "fields": [
                {
                    "name": field.name,
                    "kind": field.kind.value,
                    "required": field.required,
                    "choices": list(field.choices),
                    "target": field.target,
                }
                for field in collection.fields.values()
            ],
            "titles": {n: c.title_field for n, c in self.schema.collections.items()},
        }


def form_body(fields: tuple[str, ...]) -> dict[str, Any]:
    schema = {"type": "object", "properties": {name: {"type": "string"} for name in fields}}
    content = {"application/x-www-form-urlencoded": {"schema": schema}}
    return {"requestBody": {"required": True, "content": content}}


async def signed_in(request: Request) -> Session | None:
    """The request's live session, or None (no cookie, ended, or its token was revoked)."""
    session = current_session(request)
    if session is None:
        return None
    if await request.app.state.store.find_token(session.token_hash) is None:
        sessions(request).end(session)
        return None
    return session


def to_sign_in(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/admin/sign-in?next={quote(target)}", status_code=303)


def safe_next(target: str | None) -> str:
    """Only a path of this panel: never an open redirect to another site."""
    if target and target.startswith("/admin") and not target.startswith("//"):
        return target
    return "/admin"


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (sign in/out): the first value of each key."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    parsed = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=16)
    return {key: values[0] for key, values in parsed.items()}


def set_cookie(
    response: Response, request: Request, name: str, value: str, *, max_age: int | None
) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/admin" if name == SIGN_IN_COOKIE else "/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def page_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
