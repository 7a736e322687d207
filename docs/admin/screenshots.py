"""Take the admin panel's screenshots in this folder: `python docs/admin/screenshots.py`.

Starts a server on a demo store in a temporary folder and drives Debian's Chromium through
each page (Playwright, `pip install -e '.[test]'`). Re-run it when a page changes.
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

import httpx
import uvicorn
from playwright.async_api import Page, async_playwright

from crdt_sync.schema import DEFAULT_SCHEMA
from crdt_sync.server.app import Settings, create_app
from crdt_sync.server.bootstrap import prepare_store

HERE = Path(__file__).parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "demo.db"
        token = await prepare_store(db, DEFAULT_SCHEMA, demo=True)
        assert token is not None
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(create_app(Settings(db_path=db)), log_level="warning")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.05)
        try:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=base, headers=headers) as api:
                for patch in ({"stage": "won", "amount": 15000}, {"notes": "Board meets Friday."}):
                    (await api.patch("/api/deals/engine", json=patch)).raise_for_status()
            await shoot(base, token)
        finally:
            server.should_exit = True
            await serving


async def shoot(base: str, token: str) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        page = await browser.new_page(viewport={"width": 1200, "height": 760})
        await page.goto(f"{base}/admin/sign-in")
        await page.screenshot(path=HERE / "sign-in.png")
        await page.fill("input[name=token]", token)
        async with page.expect_navigation():
            await page.click("button[type=submit]")
        await settle(page, f"{base}/admin/contacts", "#records[data-loaded=true]")
        await page.screenshot(path=HERE / "records.png")
        await settle(page, f"{base}/admin/deals/engine", "#history tbody tr")
        await page.screenshot(path=HERE / "record.png", full_page=True)
        await settle(page, f"{base}/admin/sync", "#sync-status[data-state=ready]")
        await page.wait_for_timeout(2500)  # a chart sample or two
        await page.screenshot(path=HERE / "sync.png", full_page=True)
        await browser.close()


async def settle(page: Page, url: str, selector: str) -> None:
    await page.goto(url)
    await page.wait_for_selector(selector)
    await page.wait_for_timeout(300)  # let the feed's status and fonts settle for the picture


if __name__ == "__main__":
    asyncio.run(main())
