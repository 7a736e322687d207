"""The browser harness: Debian's Chromium driven by Playwright against a real server.

`admin_browser` gives a signed-out page on a server started on a free port; the test fails
if the page asks anything of another origin (each such request is aborted and recorded) or
throws an uncaught JavaScript error. Never `playwright install`: the browser is the system's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from .conftest import RunningServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000

try:
    from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]


def require_browser() -> None:
    """Skip (or, under CI, fail) when Playwright or the system Chromium is missing."""
    missing = []
    if async_playwright is None:
        missing.append("the playwright package (pip install -e '.[test]')")
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        missing.append("Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    if missing:
        reason = "browser tests need " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@dataclass
class AdminBrowser:
    """A Chromium page next to a running server; `foreign` and `errors` must stay empty."""

    server: RunningServer
    page: Page
    context: BrowserContext
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.server.http + path

    async def sign_in(self, token: str | None = None, then: str = "/admin") -> None:
        """Sign in through the form, as a person would, and wait for the page it leads to."""
        await self.page.goto(self.url(f"/admin/sign-in?next={then}"))
        await self.page.fill("input[name=token]", token or self.server.admin_token)
        async with self.page.expect_navigation():
            await self.page.click("button[type=submit]")

    async def new_page(self) -> Page:
        """Another tab of the same browser (same cookies), watched like the first."""
        page = await self.context.new_page()
        watch(page, self.errors)
        return page


def watch(page: Page, errors: list[str]) -> None:
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}")
            if message.type == "error" and not expected_console_error(message.text)
            else None
        ),
    )


def expected_console_error(text: str) -> bool:
    # Chromium logs every 4xx answer to fetch(); the pages show those to the user on purpose.
    return "Failed to load resource: the server responded with a status of 4" in text


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    require_browser()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def admin_browser_factory(
    browser: Browser,
) -> AsyncIterator[Callable[[RunningServer], Awaitable[AdminBrowser]]]:
    made: list[AdminBrowser] = []

    async def make(server: RunningServer) -> AdminBrowser:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        origin = urlsplit(server.http)

        async def guard(route: Route) -> None:
            target = urlsplit(route.request.url)
            if (target.scheme, target.netloc) != (origin.scheme, origin.netloc) and not (
                target.scheme in ("data", "blob")
            ):
                made_browser.foreign.append(route.request.url)
                await route.abort()
            else:
                await route.continue_()

        await context.route("**/*", guard)
        page = await context.new_page()
        made_browser = AdminBrowser(server, page, context)
        watch(page, made_browser.errors)
        page.on(
            "websocket",
            lambda socket: (
                None
                if urlsplit(socket.url).netloc == origin.netloc
                else made_browser.foreign.append(socket.url)
            ),
        )
        made.append(made_browser)
        return made_browser

    yield make
    for made_browser in made:
        await made_browser.context.close()
    for made_browser in made:
        assert made_browser.foreign == [], "the page asked another origin"
        assert made_browser.errors == [], "the page logged errors"


@pytest.fixture
async def admin_browser(
    server: RunningServer, admin_browser_factory: Callable[[RunningServer], Awaitable[AdminBrowser]]
) -> AdminBrowser:
    return await admin_browser_factory(server)
