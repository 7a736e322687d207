"""The admin panel's record pages in a real browser: tables, forms, live changes, history."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from playwright.async_api import Locator, Page, expect

from crdt_sync.schema import schema_from_tree

from .browser import AdminBrowser
from .client_helpers import field_is, replica_on
from .conftest import RunningServer, wait_for


async def open_table(browser: AdminBrowser, path: str) -> Page:
    page = browser.page
    await page.goto(browser.url(path))
    await expect(page.locator("#records")).to_have_attribute("data-loaded", "true")
    await expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")
    return page


async def open_record(browser: AdminBrowser, path: str) -> Page:
    page = browser.page
    await page.goto(browser.url(path))
    await expect(page.locator("#record-form")).to_have_attribute("data-loaded", "true")
    return page


def ids(page: Page) -> Locator:
    return page.locator("#records tbody tr td[data-field=id]")


async def test_a_contact_made_in_the_page_reaches_a_replica_whose_edit_shows_live(
    admin_browser: AdminBrowser, tmp_path: Path
) -> None:
    server = admin_browser.server
    await admin_browser.sign_in(then="/admin/contacts")
    page = await open_table(admin_browser, "/admin/contacts")
    async with (
        replica_on(server, tmp_path / "phone.db", server.device_token) as phone,
        phone.live(),
    ):
        await phone.wait_synced(10)
        await page.click("text=New record")
        await page.fill("input[name=id]", "lin")
        await page.fill("input[name=name]", "Lin Wu")
        await page.fill("input[name=email]", "lin@example.com")
        async with page.expect_navigation():
            await page.click("button:has-text('Create')")
        assert page.url == admin_browser.url("/admin/contacts/lin")
        await wait_for(lambda: field_is(phone, "contacts/lin", "email", "lin@example.com"))

        await open_table(admin_browser, "/admin/contacts")
        await phone.update("contacts", "lin", {"company": "Wu & Co"})
        row = page.locator("#records tr[data-id=lin]")
        await expect(row.locator("td[data-field=company]")).to_have_text("Wu & Co")
        await phone.create("contacts", {"name": "Mo Saleh"}, id="mo")
        await expect(page.locator("#records tr[data-id=mo] td[data-field=name]")).to_have_text(
            "Mo Saleh"
        )


async def test_an_open_form_shows_another_writers_change_as_it_lands(
    admin_browser: AdminBrowser,
) -> None:
    server = admin_browser.server
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "phone": "1"})
        await admin_browser.sign_in()
        page = await open_record(admin_browser, "/admin/contacts/ada")
        await expect(page.locator("#feed-status")).to_have_attribute("data-state", "live")
        await page.fill("input[name=phone]", "mine")  # being edited: kept
        await admin.patch("/api/contacts/ada", json={"email": "ada@x.org", "phone": "2"})
        await expect(page.locator("input[name=email]")).to_have_value("ada@x.org")
        await expect(page.locator("input[name=phone]")).to_have_value("mine")
        await expect(page.locator(".remote-change[data-for=phone]")).to_contain_text('"2"')


async def test_a_bad_value_shows_the_schemas_message_next_to_the_field_and_writes_nothing(
    admin_browser: AdminBrowser,
) -> None:
    await admin_browser.sign_in()
    page = await open_record(admin_browser, "/admin/deals/-/new")
    await page.fill("input[name=id]", "big")
    await page.fill("input[name=title]", "Big one")
    await page.fill("input[name=amount]", "ten")
    await page.click("button:has-text('Create')")
    message = page.locator(".field-error[data-for=amount]")
    await expect(message).to_have_text("deals/big: amount must be a finite number, got 'ten'")
    assert page.url == admin_browser.url("/admin/deals/-/new")
    async with admin_browser.server.client() as admin:
        assert (await admin.get("/api/deals/big")).status_code == 404
        cursor = (await admin.get("/api/sync/status")).json()["cursor"]
    # A required field left empty: the schema's message, next to it.
    page = await open_record(admin_browser, "/admin/contacts/-/new")
    await page.click("button:has-text('Create')")
    await expect(page.locator(".field-error[data-for=name]")).to_contain_text("name")
    async with admin_browser.server.client() as admin:
        assert (await admin.get("/api/sync/status")).json()["cursor"] == cursor


async def test_hostile_html_in_a_record_renders_as_text(admin_browser: AdminBrowser) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    async with admin_browser.server.client() as admin:
        made = await admin.post("/api/contacts", json={"id": "evil", "name": hostile})
        assert made.status_code == 201
    dialogs: list[str] = []
    admin_browser.page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    await admin_browser.sign_in()
    page = await open_table(admin_browser, "/admin/contacts")
    await expect(page.locator("#records tr[data-id=evil] td[data-field=name]")).to_have_text(
        hostile
    )
    page = await open_record(admin_browser, "/admin/contacts/evil")
    await expect(page.locator("input[name=name]")).to_have_value(hostile)
    await expect(page.locator("#title")).to_have_text(hostile)
    assert await page.locator("img[src=x]").count() == 0
    assert dialogs == []


async def test_the_table_searches_sorts_filters_and_pages(admin_browser: AdminBrowser) -> None:
    async with admin_browser.server.client() as admin:
        for n in range(30):
            body = {"id": f"t{n:02}", "title": f"Task {n:02}", "done": n % 3 == 0}
            assert (await admin.post("/api/tasks", json=body)).status_code == 201
    await admin_browser.sign_in()
    page = await open_table(admin_browser, "/admin/tasks")
    await expect(ids(page)).to_have_count(25)
    await page.click("#next")
    await expect(ids(page)).to_have_text([f"t{n}" for n in range(25, 30)])
    await page.click("#previous")
    await expect(ids(page)).to_have_count(25)

    await page.click("th a[data-sort=title]")
    await page.click("th a[data-sort=title]")  # descending
    await expect(ids(page).first).to_have_text("t29")

    await page.select_option("select[name=done]", "true")
    await expect(ids(page)).to_have_count(10)
    await page.fill("input[name=q]", "Task 1")
    await page.click("button:has-text('Apply')")
    await expect(ids(page)).to_have_text(["t18", "t15", "t12"])
    assert "done=true" in page.url and "q=Task+1" in page.url


async def test_references_are_links_and_pickers(admin_browser: AdminBrowser) -> None:
    async with admin_browser.server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada Lovelace"})
        await admin.post("/api/contacts", json={"id": "alan", "name": "Alan Turing"})
        await admin.post("/api/deals", json={"id": "eng", "title": "Engine", "contact_id": "ada"})
    await admin_browser.sign_in()
    page = await open_table(admin_browser, "/admin/deals")
    link = page.locator("#records tr[data-id=eng] td[data-field=contact_id] a")
    assert await link.get_attribute("href") == "/admin/contacts/ada"
    page = await open_record(admin_browser, "/admin/deals/eng")
    assert await page.get_attribute(".reference-link[data-for=contact_id]", "href") == (
        "/admin/contacts/ada"
    )
    await page.fill("input[name=contact_id]", "Turing")
    await expect(page.locator("#pick-contact_id option")).to_have_count(1)
    assert await page.get_attribute("#pick-contact_id option", "value") == "alan"
    await page.fill("input[name=contact_id]", "alan")
    await page.click("button:has-text('Save')")
    await expect(page.locator("#saved")).to_have_text("Saved.")
    async with admin_browser.server.client() as admin:
        assert (await admin.get("/api/deals/eng")).json()["contact_id"] == "alan"


async def test_deleted_records_are_shown_and_restored_as_a_copy(
    admin_browser: AdminBrowser,
) -> None:
    async with admin_browser.server.client() as admin:
        await admin.post("/api/contacts", json={"id": "gone", "name": "Gone", "email": "g@x.org"})
    await admin_browser.sign_in()
    page = await open_record(admin_browser, "/admin/contacts/gone")
    async with page.expect_navigation():
        await page.click("#delete")
    await open_table(admin_browser, "/admin/contacts?deleted=true")
    row = page.locator("#records tr[data-id=gone]")
    await expect(row).to_have_class("deleted")
    async with page.expect_navigation():
        await row.locator("button:has-text('Restore as')").click()
    assert page.url == admin_browser.url("/admin/contacts/gone-restored")
    await expect(page.locator("input[name=email]")).to_have_value("g@x.org")


async def test_history_shows_each_change_and_restores_an_earlier_value_to_every_device(
    admin_browser: AdminBrowser, tmp_path: Path
) -> None:
    server = admin_browser.server
    async with server.client() as admin:
        await admin.post("/api/contacts", json={"id": "ada", "name": "Ada", "phone": "111"})
    async with (
        replica_on(server, tmp_path / "phone.db", server.device_token) as phone,
        phone.live(),
    ):
        await phone.wait_synced(10)
        await phone.update("contacts", "ada", {"phone": "999"})
        await wait_for(lambda: field_is(server, "contacts/ada", "phone", "999"))
        await admin_browser.sign_in()
        page = await open_record(admin_browser, "/admin/contacts/ada")
        rows = page.locator("#history tbody tr")
        await expect(rows).to_have_count(2)
        newest = rows.first
        # Who: the origin the log holds, here the replica's own id (its /ws hello), the token
        # it connected with, and the door.
        await expect(newest.locator("td").nth(2)).to_have_text(
            f"{phone.replica_id} (token phone) via /ws"
        )
        change = newest.locator("li[data-field=phone]")
        await expect(change).to_contain_text('"111" → "999"')
        oldest = rows.last
        await oldest.locator("button.view-at").click()
        await expect(page.locator("#at-record")).to_contain_text("111")
        await oldest.locator("li[data-field=phone] button.restore-field").click()
        await expect(page.locator("input[name=phone]")).to_have_value("111")
        await expect(rows).to_have_count(3)
        await expect(rows.first.locator("td").nth(2)).to_have_text("admin via admin panel")
        await wait_for(lambda: field_is(phone, "contacts/ada", "phone", "111"))


async def test_a_schema_files_collections_get_their_own_pages(
    server_factory: Callable[..., Awaitable[RunningServer]],
    admin_browser_factory: Callable[[RunningServer], Awaitable[AdminBrowser]],
) -> None:
    schema = schema_from_tree(
        {
            "collections": {
                "products": {
                    "title": "label",
                    "fields": {
                        "label": {"kind": "string", "required": True},
                        "size": {"kind": "enum", "choices": ["s", "m", "l"]},
                        "in_stock": "bool",
                    },
                }
            }
        }
    )
    browser = await admin_browser_factory(await server_factory(schema=schema))
    await browser.sign_in()
    page = browser.page
    # A schema file adds its collections to the CRM's (unless it says `replace = true`).
    assert page.url == browser.url("/admin/contacts")
    await expect(page.locator("nav a")).to_have_text(
        ["contacts", "deals", "tasks", "products", "Sync"]
    )
    await page.click("nav a:has-text('products')")
    await page.wait_for_url(browser.url("/admin/products"))
    await page.click("text=New record")
    await page.fill("input[name=label]", "Mug")
    await page.select_option("select[name=size]", "m")
    await page.select_option("select[name=in_stock]", "true")
    async with page.expect_navigation():
        await page.click("button:has-text('Create')")
    await open_table(browser, "/admin/products?size=m")
    await expect(page.locator("#records tbody td[data-field=label]")).to_have_text(["Mug"])
    await expect(page.locator("#records tbody td[data-field=in_stock]")).to_have_text(["yes"])
