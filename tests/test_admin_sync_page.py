"""The admin panel's sync page in a real browser: clients, refused writes, activity, tokens,
and the operations (disconnect, revoke, compact, check, export)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import websockets
from playwright.async_api import Page, expect
from websockets.exceptions import ConnectionClosed

from crdt_sync.client import SyncState
from crdt_sync.errors import AuthError
from crdt_sync.store.archive import ArchiveReader, verify_archive

from .browser import AdminBrowser
from .client_helpers import replica_on
from .conftest import RunningServer
from .peers import mux_peer
from .rest_helpers import assert_error


async def open_sync_page(browser: AdminBrowser) -> Page:
    page = browser.page
    if not page.url.startswith(browser.url("/admin")) or "sign-in" in page.url:
        await browser.sign_in(then="/admin/sync")
    await page.goto(browser.url("/admin/sync"))
    await expect(page.locator("#sync-status")).to_have_attribute("data-state", "ready")
    await expect(page.locator("#activity-state")).to_have_attribute("data-state", "live")
    return page


async def new_device_token(server: RunningServer, name: str) -> str:
    async with server.client() as admin:
        created = await admin.post("/api/admin/tokens", json={"name": name})
        created.raise_for_status()
        token: str = created.json()["token"]
        return token


async def test_the_sync_page_lists_a_replica_with_its_transport_and_lag_and_refused_writes(
    admin_browser: AdminBrowser, tmp_path: Path
) -> None:
    server = admin_browser.server
    token = await new_device_token(server, "tablet")
    async with server.client() as admin:
        for i in range(3):
            created = await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            created.raise_for_status()
    async with replica_on(server, tmp_path / "tablet.db", token) as tablet, tablet.live():
        await tablet.wait_synced(10)
        page = await open_sync_page(admin_browser)
        row = page.locator("#clients tbody tr[data-token=tablet]")
        await expect(row.locator("td.transport")).to_have_text("/ws")
        await expect(row.locator("td.behind")).to_have_text("0")
        await expect(row.locator("td").nth(3)).to_have_text(tablet.replica_id)
        cursor = await page.locator("#fig-cursor").text_content()
        await expect(row.locator("td").nth(5)).to_have_text(cursor or "?")

        # A refused write from another device shows up without a reload, with its reason.
        async with mux_peer(server.ws("/ws"), client="kiosk") as kiosk:
            await kiosk.edit("deals/d2", title="Small", stage="sold")
            refused = page.locator("#refusals tbody tr", has_text="deals/d2")
            await expect(refused.locator("td.origin")).to_have_text("kiosk")
            await expect(refused.locator("td.reason")).to_contain_text("schema_violation")
            await expect(refused.locator("td.reason")).to_contain_text("stage")
            await expect(refused.locator("td.values")).to_contain_text('"stage":"sold"')
        await expect(page.locator("#fig-refused")).to_have_text("1")
        activity = page.locator("#activity li.activity-refusal")
        await expect(activity).to_contain_text("deals/d2")

        # The activity log filters by record.
        await tablet.update("contacts", "c1", {"phone": "555"})
        await expect(page.locator("#activity li", has_text="contacts/c1")).to_have_count(1)
        await page.fill("#activity-filters input[name=record]", "deals/d2")
        await page.click("#activity-filters button[type=submit]")
        entries = page.locator("#activity li")
        await expect(entries.first).to_contain_text("deals/d2")
        assert await page.locator("#activity li", has_text="contacts/c1").count() == 0
        texts = await entries.all_text_contents()
        assert texts and all("deals/d2" in text for text in texts)


async def test_revoking_a_replicas_token_from_the_page_closes_its_socket_and_refuses_it(
    admin_browser: AdminBrowser, tmp_path: Path
) -> None:
    server = admin_browser.server
    token = await new_device_token(server, "tablet")
    async with replica_on(server, tmp_path / "tablet.db", token) as tablet, tablet.live():
        await tablet.wait_synced(10)
        page = await open_sync_page(admin_browser)
        await expect(page.locator("#clients tbody tr[data-token=tablet]")).to_have_count(1)
        await page.locator("#tokens tbody tr[data-name=tablet] button", has_text="Revoke").click()
        await expect(page.locator("#sync-status")).to_have_text("Revoked tablet: 1 socket closed.")
        status = await tablet.wait_status(lambda s: s.state is SyncState.ERROR, 10)
        assert "4401" in (status.last_error or "")
        await expect(page.locator("#clients tbody tr[data-token=tablet]")).to_have_count(0)
        revoked = page.locator("#tokens tbody tr[data-name=tablet]")
        await expect(revoked).to_have_class("revoked")
        await expect(revoked.locator("button")).to_have_count(0)
    async with server.client(token) as tablet_rest:
        assert_error(await tablet_rest.get("/api/sync/initial"), 401, "unauthorized")
    again = replica_on(server, tmp_path / "tablet.db", token)
    async with again:
        try:
            await again.sync()
        except AuthError:
            pass
        else:
            raise AssertionError("a replica with a revoked token synced")


async def test_a_token_created_in_the_page_is_shown_once_copied_and_works(
    admin_browser: AdminBrowser,
) -> None:
    server = admin_browser.server
    await admin_browser.context.grant_permissions(
        ["clipboard-read", "clipboard-write"], origin=server.http
    )
    page = await open_sync_page(admin_browser)
    await page.fill("#new-token input[name=name]", "kiosk")
    await page.click("#new-token button[type=submit]")
    shown = page.locator("#created-value")
    await expect(shown).to_have_text(re.compile(r"\S+"))
    token = await shown.text_content() or ""
    await page.click("#copy-token")
    await expect(page.locator("#copy-state")).to_have_text("copied")
    assert await page.evaluate("navigator.clipboard.readText()") == token
    await expect(page.locator("#tokens tbody tr[data-name=kiosk] td").nth(1)).to_have_text("device")
    async with server.client(token) as kiosk:
        assert (await kiosk.get("/api/sync/initial")).status_code == 200
    # Shown once: a reload lists the token but not its secret.
    await page.reload()
    await expect(page.locator("#sync-status")).to_have_attribute("data-state", "ready")
    assert token not in await page.content()
    # A bad name gets the server's message next to the form, and nothing is made.
    await page.fill("#new-token input[name=name]", "kiosk")
    await page.click("#new-token button[type=submit]")
    await expect(page.locator("#new-token-problem")).to_contain_text("kiosk")
    await expect(page.locator("#tokens tbody tr[data-name=kiosk]")).to_have_count(1)


async def test_disconnect_compact_check_and_export_from_the_page(
    admin_browser: AdminBrowser, tmp_path: Path
) -> None:
    server = admin_browser.server
    async with server.client() as admin:
        for i in range(3):
            created = await admin.post("/api/contacts", json={"id": f"c{i}", "name": "A"})
            created.raise_for_status()
            for phone in ("1", "2"):
                patched = await admin.patch(f"/api/contacts/c{i}", json={"phone": phone})
                patched.raise_for_status()
    page = await open_sync_page(admin_browser)
    await expect(page.locator("#fig-debt")).to_have_text("6")

    async with websockets.connect(server.ws("/yjs/contacts/c1")) as socket:
        row = page.locator("#clients tbody tr", has_text="/yjs")
        await row.locator("button", has_text="Disconnect").click()
        try:
            await asyncio.wait_for(socket.wait_closed(), 5)
        except ConnectionClosed:
            pass
        assert socket.close_code == 1001
        await expect(page.locator("#clients tbody tr", has_text="/yjs")).to_have_count(0)

    await page.click("#compact button[type=submit]")
    await expect(page.locator("#compact-state")).to_contain_text("compacted 3 records")
    await expect(page.locator("#compact-progress")).to_have_attribute("value", "3")
    await expect(page.locator("#fig-debt")).to_have_text("0")
    await page.fill("#compact input[name=doc]", "contacts/nobody")
    await page.click("#compact button[type=submit]")
    await expect(page.locator("#compact-state")).to_contain_text("no such record")

    await page.click("#run-check")
    await expect(page.locator("#check-state")).to_contain_text("ok: 3 records, 3 log rows")

    async with page.expect_download() as downloading:
        await page.click("#export")
    download = await downloading.value
    archive = tmp_path / "export.cbor"
    await download.save_as(archive)
    assert verify_archive(archive).documents == 3
    with ArchiveReader(archive) as reader:
        phones = {d.doc_id: d.view["phone"] for d in reader.documents()}
    assert phones == {f"contacts/c{i}": "2" for i in range(3)}
    async with server.client() as admin:
        assert (await admin.get("/health")).status_code == 200


async def test_the_sync_page_needs_a_session(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        page = await client.get("/admin/sync")
    assert page.status_code == 303 and page.headers["location"].startswith("/admin/sign-in")
