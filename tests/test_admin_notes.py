"""Notes edited at once in the admin page and by a stock Yjs client both survive."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from .browser import AdminBrowser
from .test_node_client import node, node_client  # noqa: F401 - `node` is a fixture

pytestmark = pytest.mark.node


async def test_the_page_and_a_stock_yjs_client_editing_the_same_notes_both_keep_their_text(
    admin_browser: AdminBrowser,
    node: str,  # noqa: F811
) -> None:
    server = admin_browser.server
    async with server.client() as admin:
        made = await admin.post(
            "/api/contacts", json={"id": "ada", "name": "Ada", "notes": "Met at the fair."}
        )
        assert made.status_code == 201
    async with node_client(node, server, "contacts/ada") as yjs:
        await admin_browser.sign_in()
        page = admin_browser.page
        await page.goto(admin_browser.url("/admin/contacts/ada"))
        await expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")
        notes = page.locator("textarea[name=notes]")
        await expect(notes).to_have_value("Met at the fair.")
        await notes.fill("Met at the fair. Wants a demo in March.")
        # Meanwhile, on the device: a word typed at the start of the same text.
        await yjs.edit({"insert": "notes", "index": 0, "text": "Ada: "})
        await expect(page.locator(".remote-change[data-for=notes]")).to_contain_text("merges")
        await page.click("button:has-text('Save')")
        merged = "Ada: Met at the fair. Wants a demo in March."
        await expect(notes).to_have_value(merged)
        await yjs.wait(lambda: yjs.record.get("notes") == merged)
        async with server.client() as admin:
            assert (await admin.get("/api/contacts/ada")).json()["notes"] == merged
