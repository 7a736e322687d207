"""Signing in to the admin panel: admin tokens only, an HttpOnly SameSite=Strict cookie, CSRF
on every write made with it, and a session that ends with sign-out or the token's revocation."""

from __future__ import annotations

import httpx

from crdt_sync.server.admin.sessions import CSRF_HEADER, SESSION_COOKIE
from crdt_sync.store import SQLiteStore

from .browser import AdminBrowser
from .conftest import RunningServer
from .rest_helpers import assert_error


async def session_cookie(browser: AdminBrowser) -> dict[str, object]:
    cookies = [c for c in await browser.context.cookies() if c["name"] == SESSION_COOKIE]
    assert len(cookies) == 1
    return dict(cookies[0])


def cookie_client(server: RunningServer, session_id: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.http, cookies={SESSION_COOKIE: session_id}, timeout=10.0
    )


async def test_root_leads_to_the_panel_and_the_panel_to_sign_in(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        root = await client.get("/")
        assert root.status_code == 307 and root.headers["location"] == "/admin"
        panel = await client.get("/admin")
        assert panel.status_code == 303
        assert panel.headers["location"].startswith("/admin/sign-in")


async def test_an_admin_signs_in_with_a_token_and_gets_a_strict_httponly_cookie(
    admin_browser: AdminBrowser,
) -> None:
    await admin_browser.sign_in()
    page = admin_browser.page
    assert page.url == admin_browser.url("/admin/contacts")
    assert await page.locator("nav a", has_text="Sync").count() == 1
    assert await page.locator(".who strong").text_content() == "admin"
    cookie = await session_cookie(admin_browser)
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    # Scripts cannot read it.
    assert SESSION_COOKIE not in await page.evaluate("document.cookie")


async def test_a_device_token_cannot_sign_in(admin_browser: AdminBrowser) -> None:
    await admin_browser.sign_in(admin_browser.server.device_token)
    page = admin_browser.page
    assert page.url.startswith(admin_browser.url("/admin/sign-in"))
    assert "device token" in (await page.locator(".problem").text_content() or "")
    assert [c for c in await admin_browser.context.cookies() if c["name"] == SESSION_COOKIE] == []


async def test_a_wrong_token_is_refused_with_a_message(admin_browser: AdminBrowser) -> None:
    await admin_browser.sign_in("cs_not-a-token")
    assert await admin_browser.page.locator(".problem").text_content() == (
        "Unknown or revoked token."
    )


async def test_sign_out_ends_the_session_for_good(admin_browser: AdminBrowser) -> None:
    await admin_browser.sign_in()
    session_id = str((await session_cookie(admin_browser))["value"])
    page = admin_browser.page
    async with page.expect_navigation():
        await page.click("text=Sign out")
    assert page.url == admin_browser.url("/admin/sign-in")
    await page.goto(admin_browser.url("/admin/deals"))
    assert page.url.startswith(admin_browser.url("/admin/sign-in?next="))
    # The old cookie, replayed, opens nothing.
    async with cookie_client(admin_browser.server, session_id) as replay:
        assert_error(await replay.get("/api/contacts"), 401, "unauthorized")


async def test_a_revoked_tokens_session_ends_at_once(admin_browser: AdminBrowser) -> None:
    server = admin_browser.server
    async with server.client() as admin:
        made = await admin.post("/api/admin/tokens", json={"name": "office", "role": "admin"})
        assert made.status_code == 201
        await admin_browser.sign_in(made.json()["token"])
        session_id = str((await session_cookie(admin_browser))["value"])
        async with cookie_client(server, session_id) as panel:
            assert (await panel.get("/api/contacts")).status_code == 200
            assert (await admin.delete("/api/admin/tokens/office")).status_code == 200
            assert_error(await panel.get("/api/contacts"), 401, "unauthorized")
    await admin_browser.page.goto(admin_browser.url("/admin/contacts"))
    assert admin_browser.page.url.startswith(admin_browser.url("/admin/sign-in"))


async def test_a_token_revoked_by_another_process_ends_the_session_too(
    admin_browser: AdminBrowser,
) -> None:
    server = admin_browser.server
    await admin_browser.sign_in()
    session_id = str((await session_cookie(admin_browser))["value"])
    async with SQLiteStore(server.db_path) as store:  # as `crdt-sync token revoke` does
        assert await store.revoke_token("admin")
    async with cookie_client(server, session_id) as panel:
        assert_error(await panel.get("/api/contacts"), 401, "unauthorized")


async def test_writes_with_the_cookie_need_the_csrf_token(admin_browser: AdminBrowser) -> None:
    server = admin_browser.server
    await admin_browser.sign_in()
    session_id = str((await session_cookie(admin_browser))["value"])
    csrf = await admin_browser.page.get_attribute("meta[name=csrf-token]", "content")
    assert csrf
    async with cookie_client(server, session_id) as panel:
        body = {"id": "eve", "name": "Eve"}
        assert_error(await panel.post("/api/contacts", json=body), 403, "forbidden")
        wrong = await panel.post("/api/contacts", json=body, headers={CSRF_HEADER: "x" + csrf})
        assert_error(wrong, 403, "forbidden")
        assert_error(await panel.get("/api/contacts/eve"), 404, "record_not_found")
        made = await panel.post("/api/contacts", json=body, headers={CSRF_HEADER: csrf})
        assert made.status_code == 201, made.text
    async with server.client() as admin:
        assert (await admin.get("/api/contacts/eve")).json()["name"] == "Eve"


async def test_the_sign_in_form_needs_its_own_csrf_token(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        forged = await client.post("/admin/sign-in", data={"token": server.admin_token})
        assert forged.status_code == 403
        assert SESSION_COOKIE not in forged.cookies


async def test_the_harness_catches_a_request_to_another_origin(
    admin_browser: AdminBrowser,
) -> None:
    """The guard every admin page test relies on really sees foreign requests (on a blank
    page: the panel's own Content-Security-Policy would stop the request before the guard)."""
    page = admin_browser.page
    await page.set_content('<img src="http://198.51.100.7/x.png">')
    await page.wait_for_load_state("load")
    assert admin_browser.foreign == ["http://198.51.100.7/x.png"]
    admin_browser.foreign.clear()  # seen: the fixture's final checks pass
    admin_browser.errors.clear()  # Chromium logs the aborted load


async def test_the_panels_pages_allow_nothing_from_another_origin(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        policy = (await client.get("/admin/sign-in")).headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "http" not in policy and "unsafe-inline" not in policy


async def test_the_sign_in_and_sign_out_forms_are_in_the_openapi_document(
    server: RunningServer,
) -> None:
    async with server.client() as admin:
        paths = (await admin.get("/openapi.json")).json()["paths"]
    for path in ("/admin/sign-in", "/admin/sign-out"):
        body = paths[path]["post"]["requestBody"]["content"]
        assert "csrf" in body["application/x-www-form-urlencoded"]["schema"]["properties"]
