"""The admin panel ships whole in the wheel, and its pages refuse bad input plainly."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import httpx

import crdt_sync

from .conftest import RunningServer

PACKAGE = Path(crdt_sync.__file__).parent
ROOT = PACKAGE.parent


def test_every_file_of_the_admin_panel_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["crdt_sync"]
    admin = PACKAGE / "server" / "admin"
    assets = [
        path.relative_to(PACKAGE).as_posix()
        for path in admin.rglob("*")
        if path.is_file() and path.suffix != ".py" and "__pycache__" not in path.parts
    ]
    assert any(a.startswith("server/admin/static/") for a in assets)
    assert any(a.startswith("server/admin/templates/") for a in assets)
    assert [a for a in assets if not any(fnmatch(a, p) for p in patterns)] == []


def test_each_server_module_imports_on_its_own() -> None:
    """`server.access` and the admin panel need each other: any import order must work."""
    for module in ("access", "rest", "admin.feed", "admin.pages", "admin.record_api", "app"):
        done = subprocess.run(
            [sys.executable, "-c", f"import crdt_sync.server.{module}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"crdt_sync.server.{module}: {done.stderr[-500:]}"


async def test_pages_answer_bad_requests_plainly_and_the_server_stays_up(
    server: RunningServer,
) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        huge = await client.post("/admin/sign-in", content=b"token=" + b"x" * 100_000)
        assert huge.status_code == 403 and "expired" in huge.text
        garbage = await client.post(
            "/admin/sign-in", content=b"\xff\xfe%%%&&==", headers={"content-type": "text/plain"}
        )
        assert garbage.status_code == 403
        redirect = await client.get("/admin/sign-in?next=https://evil.example/")
        assert 'value="/admin"' in redirect.text and "evil.example" not in redirect.text
        assert (await client.get("/health")).status_code == 200
    async with server.client() as admin:
        assert (await admin.get("/api/contacts")).json()["items"] == []


async def test_an_unknown_collections_page_is_a_404_page(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.http) as client:
        form = await client.get("/admin/sign-in")
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        await client.post("/admin/sign-in", data={"csrf": token[1], "token": server.admin_token})
        missing = await client.get("/admin/nope")
        assert missing.status_code == 404 and "collection &#39;nope&#39;" in missing.text
