"""A record's history says who made each change: the device or token, the token it used, and
the door it came in by (/yjs, /ws, REST, the admin panel), in the API, the panel and the CLI."""

from __future__ import annotations

import httpx
from pycrdt import Map

from .clis import run_async
from .conftest import RunningServer, wait_for
from .peers import mux_peer, record_of, yjs_peer
from .rest_helpers import device
from .test_admin_feed import sign_in

DOC = "contacts/doors"


async def test_every_door_is_named_in_the_history_with_its_token(server: RunningServer) -> None:
    async with server.client() as admin:
        created = await admin.post("/api/contacts", json={"id": "doors", "name": "Ada"})
        assert created.status_code == 201, created.text
    async with device(server, client_id="ann-phone") as phone:
        pushed = await phone.post(
            "/api/sync/outgoing",
            json={
                "changes": {"contacts": {"updated": [{"id": "doors", "company": "Rest"}]}},
                "lastPulledAt": None,
            },
        )
        assert pushed.status_code == 200, pushed.text
    async with mux_peer(server.ws("/ws", server.device_token), client="bob-tablet") as bob:
        await bob.wait_ack(await bob.edit(DOC, phone="+33 1"))
    async with yjs_peer(server.ws(f"/yjs/{DOC}", server.device_token)) as yjs:
        yjs.get("record", type=Map)["email"] = "ada@example.org"
        async with server.client() as admin:
            await wait_for(lambda: _email_stored(admin))  # the /yjs write committed
        assert record_of(yjs)["company"] == "Rest"
    async with httpx.AsyncClient(base_url=server.http, timeout=10.0) as browser:
        csrf = await sign_in(browser, server)
        edited = await browser.patch(
            "/api/contacts/doors", json={"notes": "met"}, headers={"X-CSRF-Token": csrf}
        )
        assert edited.status_code == 200, edited.text

    async with server.client() as admin:
        steps = (await admin.get("/api/contacts/doors/history")).json()
    who = [(s["origin"], s["token"], s["door"]) for s in steps]
    assert who == [
        ("admin", "admin", "rest"),
        ("ann-phone", "phone", "rest"),
        ("bob-tablet", "phone", "ws"),
        ("phone", "phone", "yjs"),
        ("admin", "admin", "admin"),
    ]
    ran = await run_async("docs", "history", DOC, "--db", str(server.db_path), "--json")
    assert ran.exit_code == 0, ran.stderr
    assert [(s["origin"], s["token"], s["door"]) for s in ran.json()] == who
    table = await run_async("docs", "history", DOC, "--db", str(server.db_path))
    assert "ws (token phone)" in table.stdout and "yjs" in table.stdout


async def _email_stored(admin: httpx.AsyncClient) -> bool:
    answer = await admin.get("/api/contacts/doors")
    return answer.status_code == 200 and answer.json().get("email") == "ada@example.org"
