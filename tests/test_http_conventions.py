"""HTTP as the ecosystem expects it: a bearer scheme in OpenAPI, /docs without a CDN, CORS when
asked for, a 401 that says where tokens go, and no token in any log line."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import websockets

from .browser import AdminBrowser
from .clis import run
from .conftest import RunningServer, free_socket, make_tokens


async def test_openapi_declares_the_bearer_scheme_on_every_route_that_needs_a_token(
    server: RunningServer,
) -> None:
    async with server.client(token="") as http:
        document = (await http.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            # The panel's own form posts go by its session cookie (docs/REST.md), not a token.
            panel = "admin: panel" in operation.get("tags", [])
            needs_token = path not in ("/health", "/ready") and not panel
            assert (operation.get("security") == [{"token": []}]) is needs_token, (method, path)


async def test_docs_and_redoc_load_only_local_assets(server: RunningServer) -> None:
    async with server.client(token="") as http:
        for page in ("/docs", "/redoc"):
            html = (await http.get(page)).text
            urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
            assert urls and all(url.startswith("/") for url in urls), (page, urls)
            assert "cdn." not in html and "fonts.googleapis" not in html
            for url in urls:
                asset = await http.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url


async def test_swagger_authorize_and_try_it_out_work_in_a_real_browser(
    admin_browser: AdminBrowser,
) -> None:
    """The CDN-free page renders, "Authorize" takes a token, "Try it out" gets a 200."""
    page = admin_browser.page
    await page.goto(admin_browser.url("/docs"))
    await page.wait_for_selector(".swagger-ui .info .title")
    await page.click("button.authorize")
    await page.fill(".modal-ux input", admin_browser.server.device_token)
    await page.click(".modal-ux button.authorize")
    await page.click(".modal-ux button.btn-done")
    status = page.locator(".opblock").filter(has_text="/api/sync/status").first
    await status.locator(".opblock-summary").click()
    await status.locator("button.try-out__btn").click()
    await status.locator("button.execute").click()
    code = status.locator(".live-responses-table tr.response .response-col_status").first
    await code.wait_for()
    assert (await code.inner_text()).strip() == "200"


async def test_cors_is_off_by_default_and_answers_only_the_named_origins(
    server_factory: Callable[..., Awaitable[RunningServer]], tmp_path: Path
) -> None:
    preflight = {
        "Origin": "https://app.example.com",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    closed = await server_factory(tmp_path / "closed.db")
    async with closed.client(token="") as http:
        answer = await http.options("/api/sync/initial", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    opened = await server_factory(tmp_path / "open.db", cors_origins=("https://app.example.com",))
    async with opened.client(token="") as http:
        answer = await http.options("/api/sync/initial", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        pulled = await http.get(
            "/api/sync/initial",
            headers={
                "Origin": "https://app.example.com",
                "Authorization": f"Bearer {opened.device_token}",
            },
        )
        assert pulled.status_code == 200
        assert pulled.headers["access-control-allow-origin"] == "https://app.example.com"
        other = await http.options(
            "/api/sync/initial", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/", "ftp://x"])
def test_a_bad_cors_origin_is_one_line_exit_2(tmp_path: Path, origin: str) -> None:
    ran = run("serve", "--db", str(tmp_path / "crm.db"), "--port", "0", "--cors-origin", origin)
    ran.assert_one_line_error(2, "--cors-origin: expected an origin")
    assert list(tmp_path.iterdir()) == []


async def test_the_401_says_where_each_kind_of_token_goes(server: RunningServer) -> None:
    async with server.client(token="") as http:
        answer = await http.get("/api/sync/status")
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert "Authorization: Bearer <token>" in message and "?token=<token>" in message
    assert "websockets" in message


async def test_tokens_in_urls_never_reach_the_server_log(tmp_path: Path) -> None:
    db, log = tmp_path / "crm.db", tmp_path / "serve.log"
    _, device = await make_tokens(db)
    with free_socket() as sock:
        port = sock.getsockname()[1]
    with log.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "crdt_sync", "serve", "--db", str(db), "--port", str(port)),
            stdout=err,  # uvicorn writes its access log to stdout
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 30
        while "serving" not in log.read_text():
            assert process.returncode is None and time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws?token={device}"):
            pass
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            await http.get(f"/api/sync/status?token={device}&x=1")  # refused, and logged
            await http.get("/health")  # a later line: the log has caught up with the two above
        while "/health" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 15)
    text = log.read_text()
    assert device not in text
    assert "/ws?token=***" in text and "/api/sync/status?token=***&x=1" in text
